//! Log output: stderr by default, or the local syslog (`--syslog`) in RFC
//! 3164 form through the `syslog` crate, one message per event with the
//! event's level mapped to a syslog severity.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// The default syslog socket.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

type SharedLogger = Arc<Mutex<Logger<LoggerBackend, Formatter3164>>>;

/// Hands tracing a writer per event that sends the formatted line to syslog.
#[derive(Clone)]
struct SyslogWriter {
    logger: SharedLogger,
}

/// One event's text, sent when tracing is done writing it.
struct SyslogLine {
    logger: SharedLogger,
    level: Level,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        let mut logger = self.logger.lock().unwrap_or_else(|e| e.into_inner());
        // A lost log line must never stop the daemon.
        let _ = match self.level {
            Level::ERROR => logger.err(text),
            Level::WARN => logger.warning(text),
            Level::INFO => logger.info(text),
            _ => logger.debug(text),
        };
    }
}

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            logger: self.logger.clone(),
            level: Level::INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        SyslogLine {
            logger: self.logger.clone(),
            level: *meta.level(),
            buf: Vec::new(),
        }
    }
}

/// Sets up logging. With `syslog`, messages go to the datagram socket at
/// `socket`; if it cannot be opened, logging falls back to stderr with a
/// warning.
pub fn init(debug: bool, syslog: Option<&Path>) {
    let default = if debug { "debug" } else { "info" };
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
    };
    if let Some(socket) = syslog {
        let formatter = Formatter3164 {
            facility: Facility::LOG_DAEMON,
            hostname: None,
            process: "lovebeat".into(),
            pid: std::process::id(),
        };
        match syslog::unix_custom(formatter, socket) {
            Ok(logger) => {
                tracing_subscriber::fmt()
                    .with_env_filter(filter())
                    .with_writer(SyslogWriter {
                        logger: Arc::new(Mutex::new(logger)),
                    })
                    .with_ansi(false)
                    .without_time()
                    .with_level(false)
                    .with_target(false)
                    .init();
                return;
            }
            Err(e) => {
                init_stderr(filter());
                tracing::warn!(
                    "cannot log to syslog at {}: {e}; logging to stderr",
                    socket.display()
                );
                return;
            }
        }
    }
    init_stderr(filter());
}

fn init_stderr(filter: tracing_subscriber::EnvFilter) {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

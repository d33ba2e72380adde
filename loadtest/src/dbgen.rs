//! Writes lovebeat databases (1.x format) of any size for the load figures.

use std::io::{BufWriter, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

/// `n` services named `<prefix>.<i>`, with `timeout_ms`, stored as OK,
/// each with `history` intervals of about a minute.
pub fn write(
    path: &Path,
    prefix: &str,
    n: usize,
    timeout_ms: i64,
    history: usize,
    last_beat: i64,
) -> anyhow::Result<()> {
    let f = std::fs::File::create(path)?;
    let mut gz = GzEncoder::new(BufWriter::new(f), Compression::fast());
    services(&mut gz, prefix, n, timeout_ms, history, last_beat)?;
    gz.finish()?.flush()?;
    Ok(())
}

/// `expiring` services `exp.<i>` with `timeout_ms` and `fill` services
/// `fill.<i>` with an hour's, all stored as OK without history: a table
/// in which a share expires at once.
pub fn write_mixed(
    path: &Path,
    expiring: usize,
    timeout_ms: i64,
    fill: usize,
    last_beat: i64,
) -> anyhow::Result<()> {
    let f = std::fs::File::create(path)?;
    let mut gz = GzEncoder::new(BufWriter::new(f), Compression::fast());
    services(&mut gz, "exp", expiring, timeout_ms, 0, last_beat)?;
    services(&mut gz, "fill", fill, 3_600_000, 0, last_beat)?;
    gz.finish()?.flush()?;
    Ok(())
}

/// Writes the `SERV` lines of `write`.
fn services(
    gz: &mut impl Write,
    prefix: &str,
    n: usize,
    timeout_ms: i64,
    history: usize,
    last_beat: i64,
) -> anyhow::Result<()> {
    let mut hist = String::new();
    for j in 0..history {
        if j > 0 {
            hist.push(',');
        }
        hist.push_str(&(59_000 + (j * 37) % 2000).to_string());
    }
    for i in 0..n {
        write!(
            gz,
            "SERV\t{{\"name\":\"{prefix}.{i:07}\",\"last_beat\":{last_beat},"
        )?;
        if history > 0 {
            write!(gz, "\"beat_history\":[{hist}],")?;
        }
        writeln!(
            gz,
            "\"timeout\":{timeout_ms},\"state\":\"ok\",\"muted_since\":0,\"last_state_change\":{last_beat}}}"
        )?;
    }
    Ok(())
}

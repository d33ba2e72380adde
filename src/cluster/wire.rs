//! The cluster's wire format (docs/CLUSTER.md, "Wire format"): the names
//! of the stream, subjects and buckets in NATS, the hash that places a
//! service in a partition, and the encoding of the commands on the
//! stream. Every node of a cluster must agree on all of it, whatever its
//! version: a change here is a new `VERSION`, never an edit.

use std::sync::Arc;

use crate::engine::{Change, FailReport, Schedule, Timeout};

/// The stream of commands, one subject per partition.
pub const STREAM: &str = "LOVEBEAT_CMDS";
/// The prefix of the command subjects: partition `p` is `lovebeat.cmd.<p>`.
pub const SUBJECT_PREFIX: &str = "lovebeat.cmd.";
/// The bucket of cluster-wide settings fixed at creation (`partitions`,
/// `lease_ms`, `format`).
pub const META_BUCKET: &str = "lovebeat-meta";
/// The bucket of ownership leases: key `p.<p>`, value the owner's node
/// name, `max_age` the lease time; an entry's revision is its fencing
/// token.
pub const LEASE_BUCKET: &str = "lovebeat-leases";
/// The bucket of live nodes: key the node name, `max_age` the lease time.
pub const NODE_BUCKET: &str = "lovebeat-nodes";
/// The bucket of partition snapshots: key `p.<p>`.
pub const SNAPSHOT_BUCKET: &str = "lovebeat-snapshots";
/// The prefix of the core NATS subjects (not in any stream) on which the
/// owner of partition `p` answers reads of its services:
/// `lovebeat.read.<p>` (docs/CLUSTER.md, "Reads on every node").
pub const READ_PREFIX: &str = "lovebeat.read.";
/// The prefix of the core NATS subjects on which the owner of partition
/// `p` answers pages of its list of services: `lovebeat.list.<p>`.
pub const LIST_PREFIX: &str = "lovebeat.list.";
/// The prefix of the core NATS subjects on which the owner of partition
/// `p` answers how many of its services are OK and ERROR (`/api/status`):
/// `lovebeat.status.<p>`.
pub const STATUS_PREFIX: &str = "lovebeat.status.";
/// The bucket of alarm aggregates (docs/CLUSTER.md, "Alarms across
/// partitions"): key `p.<p>`, the failed members per alarm of partition
/// `p`, written by its owner; key `incidents`, the alerter's record of
/// every alarm's state, incident and what its receivers last heard.
pub const ALARMS_BUCKET: &str = "lovebeat-alarms";
/// The key, in the alarms bucket, of the alerter's record.
pub const INCIDENTS_KEY: &str = "incidents";
/// The key, in the lease bucket, of the alerter's lease: one node alerts.
pub const ALERTER_KEY: &str = "alerter";
/// The command encoding's version: the first byte of every message.
pub const VERSION: u8 = 1;

/// The subject of partition `p`.
pub fn subject(p: u32) -> String {
    format!("{SUBJECT_PREFIX}{p}")
}

/// The read subject of partition `p`.
pub fn read_subject(p: u32) -> String {
    format!("{READ_PREFIX}{p}")
}

/// The list subject of partition `p`.
pub fn list_subject(p: u32) -> String {
    format!("{LIST_PREFIX}{p}")
}

/// The status subject of partition `p`.
pub fn status_subject(p: u32) -> String {
    format!("{STATUS_PREFIX}{p}")
}

/// The lease (and snapshot) key of partition `p`.
pub fn partition_key(p: u32) -> String {
    format!("p.{p}")
}

/// FNV-1a, 64 bits, of `bytes`: the standard offset basis and prime.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of a service: FNV-1a 64 of its name's UTF-8 bytes, modulo
/// the partition count (at least 1).
pub fn partition_of(name: &str, partitions: u32) -> u32 {
    (fnv1a64(name.as_bytes()) % u64::from(partitions.max(1))) as u32
}

/// What a command does to its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A beat, timeout, run start or failure: [`Change`].
    Change(Change),
    /// Mute, until a time (ms) or with no end.
    Mute(Option<i64>),
    /// Unmute.
    Unmute,
    /// Delete the service.
    Delete,
}

/// One command: what the receiving node was asked, and when by its clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// When the receiving node took it (ms since the epoch): the owner
    /// applies it at this time, so a replay keeps the beat's own time.
    pub ts: i64,
    /// The service.
    pub name: String,
    /// What to do.
    pub op: Op,
}

/// Why a message cannot be read; the owner skips it and counts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A version this node does not know (a newer node wrote it).
    #[error("command format version {0} is not known (this node reads {VERSION})")]
    Version(u8),
    /// The message ends inside a command.
    #[error("command message cut short")]
    Short,
    /// A kind byte or flag that means nothing.
    #[error("unknown command kind {0}")]
    Kind(u8),
    /// Text that is not UTF-8.
    #[error("command text is not UTF-8")]
    Utf8,
    /// A schedule that does not parse.
    #[error("bad schedule in a command: {0}")]
    Schedule(String),
    /// A timeout number no timeout has.
    #[error("bad timeout {0} in a command")]
    Timeout(i64),
}

const KIND_CHANGE: u8 = 1;
const KIND_MUTE: u8 = 2;
const KIND_UNMUTE: u8 = 3;
const KIND_DELETE: u8 = 4;

const F_BEAT: u8 = 1;
const F_START: u8 = 2;
const F_TIMEOUT: u8 = 4;
const F_MAX_RUNTIME: u8 = 8;
const F_FAIL: u8 = 16;
const F_EXIT_CODE: u8 = 32;
const F_ALL: u8 = 63;

/// The schedule timeout's wire number (a schedule's text follows it).
const WIRE_SCHEDULE: i64 = -3;

/// Starts a message: its version byte.
pub fn begin(out: &mut Vec<u8>) {
    out.push(VERSION);
}

/// Appends one command to a message begun with [`begin`]. Names longer
/// than 65 535 bytes cannot be services, and a failure's output is
/// already cut to the engine's limit, far under 4 GiB.
pub fn encode(out: &mut Vec<u8>, cmd: &Command) {
    let kind = match cmd.op {
        Op::Change(_) => KIND_CHANGE,
        Op::Mute(_) => KIND_MUTE,
        Op::Unmute => KIND_UNMUTE,
        Op::Delete => KIND_DELETE,
    };
    out.push(kind);
    out.extend_from_slice(&cmd.ts.to_le_bytes());
    put_str16(out, &cmd.name);
    match &cmd.op {
        Op::Change(c) => {
            let mut flags = 0;
            if c.beat {
                flags |= F_BEAT;
            }
            if c.start {
                flags |= F_START;
            }
            if c.timeout.is_some() {
                flags |= F_TIMEOUT;
            }
            if c.max_runtime.is_some() {
                flags |= F_MAX_RUNTIME;
            }
            if let Some(f) = &c.fail {
                flags |= F_FAIL;
                if f.exit_code.is_some() {
                    flags |= F_EXIT_CODE;
                }
            }
            out.push(flags);
            if let Some(t) = &c.timeout {
                out.extend_from_slice(&t.wire().to_le_bytes());
                if let Timeout::Schedule(s) = t {
                    put_str16(out, &s.expr);
                    put_str16(out, s.tz.name());
                    out.extend_from_slice(&s.grace_ms.to_le_bytes());
                }
            }
            if let Some(m) = c.max_runtime {
                out.extend_from_slice(&m.to_le_bytes());
            }
            if let Some(f) = &c.fail {
                if let Some(code) = f.exit_code {
                    out.extend_from_slice(&code.to_le_bytes());
                }
                let len = u32::try_from(f.output.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&f.output.as_bytes()[..len as usize]);
            }
        }
        Op::Mute(until) => out.extend_from_slice(&until.unwrap_or(-1).to_le_bytes()),
        Op::Unmute | Op::Delete => {}
    }
}

/// Appends a string of at most 65 535 bytes, cut at a character boundary.
fn put_str16(out: &mut Vec<u8>, s: &str) {
    let mut n = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..n]);
}

/// Reads every command of a message, calling `each` in order. Stops at the
/// first error: what was read before it stands.
pub fn decode(msg: &[u8], mut each: impl FnMut(Command)) -> Result<(), WireError> {
    let mut r = Reader(msg);
    let v = r.u8()?;
    if v != VERSION {
        return Err(WireError::Version(v));
    }
    while !r.0.is_empty() {
        let kind = r.u8()?;
        let ts = r.i64()?;
        let name = r.str16()?.to_string();
        let op = match kind {
            KIND_CHANGE => Op::Change(read_change(&mut r)?),
            KIND_MUTE => Op::Mute(Some(r.i64()?).filter(|u| *u >= 0)),
            KIND_UNMUTE => Op::Unmute,
            KIND_DELETE => Op::Delete,
            k => return Err(WireError::Kind(k)),
        };
        each(Command { ts, name, op });
    }
    Ok(())
}

/// The body of a [`KIND_CHANGE`] command.
fn read_change(r: &mut Reader<'_>) -> Result<Change, WireError> {
    let flags = r.u8()?;
    if flags & !F_ALL != 0 {
        return Err(WireError::Kind(flags));
    }
    let mut c = Change {
        beat: flags & F_BEAT != 0,
        start: flags & F_START != 0,
        ..Change::default()
    };
    if flags & F_TIMEOUT != 0 {
        let wire = r.i64()?;
        c.timeout = Some(if wire == WIRE_SCHEDULE {
            let expr = r.str16()?;
            let tz = r.str16()?;
            let grace = r.i64()?;
            let s =
                Schedule::parse(expr, tz, grace).map_err(|e| WireError::Schedule(e.to_string()))?;
            Timeout::Schedule(Arc::new(s))
        } else {
            Timeout::from_wire(wire).ok_or(WireError::Timeout(wire))?
        });
    }
    if flags & F_MAX_RUNTIME != 0 {
        c.max_runtime = Some(r.i64()? as u64);
    }
    if flags & F_FAIL != 0 {
        let exit_code = if flags & F_EXIT_CODE != 0 {
            Some(r.i32()?)
        } else {
            None
        };
        let len = r.u32()? as usize;
        let output = std::str::from_utf8(r.take(len)?)
            .map_err(|_| WireError::Utf8)?
            .to_string();
        c.fail = Some(FailReport { exit_code, output });
    }
    Ok(c)
}

/// A cursor over a message that never reads past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Short);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.take(N)?.try_into().map_err(|_| WireError::Short)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn str16(&mut self) -> Result<&'a str, WireError> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash is FNV-1a 64 as published (its test vectors), so a node
    /// written in any language places a name where this one does.
    #[test]
    fn the_hash_is_fnv1a_64() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            partition_of("foobar", 16),
            (0x8594_4171_f739_67e8u64 % 16) as u32
        );
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(partition_of("anything", 0), 0, "no division by zero");
    }

    fn cmd(name: &str, op: Op) -> Command {
        Command {
            ts: 1_700_000_000_123,
            name: name.into(),
            op,
        }
    }

    /// Every kind of command comes back as it went, in order, several to
    /// a message.
    #[test]
    fn commands_round_trip() {
        let schedule = Schedule::parse("*/5 * * * *", "Europe/Oslo", 60_000).expect("valid");
        let cmds = vec![
            cmd("a", Op::Change(Change::beat())),
            cmd("b.é", Op::Change(Change::timeout(Timeout::After(30_000)))),
            cmd(
                "c",
                Op::Change(Change::timeout(Timeout::Schedule(Arc::new(schedule)))),
            ),
            cmd(
                "d",
                Op::Change(Change {
                    start: true,
                    max_runtime: Some(5_000),
                    fail: Some(FailReport {
                        exit_code: Some(-2),
                        output: "boom\n".into(),
                    }),
                    beat: true,
                    timeout: Some(Timeout::Auto),
                }),
            ),
            cmd("e", Op::Mute(Some(1_700_000_100_000))),
            cmd("f", Op::Mute(None)),
            cmd("g", Op::Unmute),
            cmd("h", Op::Delete),
        ];
        let mut msg = Vec::new();
        begin(&mut msg);
        for c in &cmds {
            encode(&mut msg, c);
        }
        let mut back = Vec::new();
        decode(&msg, |c| back.push(c)).expect("decodes");
        assert_eq!(back, cmds);
    }

    /// A message of another version, cut anywhere, or with garbage is an
    /// error and never a panic; what came before the damage is kept.
    #[test]
    fn hostile_messages_are_errors() {
        let mut msg = Vec::new();
        begin(&mut msg);
        encode(&mut msg, &cmd("a", Op::Change(Change::beat())));
        let one = msg.len();
        encode(&mut msg, &cmd("b", Op::Mute(None)));
        for cut in 0..msg.len() {
            let mut n = 0;
            let r = decode(&msg[..cut], |_| n += 1);
            if cut == 1 {
                assert_eq!((r, n), (Ok(()), 0), "a message of no commands");
            } else if cut == one {
                assert_eq!((r, n), (Ok(()), 1));
            } else {
                assert!(r.is_err(), "cut at {cut}");
                assert_eq!(n, usize::from(cut > one), "cut at {cut}");
            }
        }
        assert_eq!(decode(&[2, 1, 2], |_| {}), Err(WireError::Version(2)));
        let mut bad = vec![VERSION, 9];
        bad.extend_from_slice(&[0; 10]);
        assert_eq!(decode(&bad, |_| {}), Err(WireError::Kind(9)));
        let mut rng = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut m = vec![VERSION];
            for _ in 0..(rng % 64) {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                m.push((rng >> 33) as u8);
            }
            let _ = decode(&m, |_| {});
        }
    }
}

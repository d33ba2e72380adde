//! Reads on every node (docs/CLUSTER.md, "Reads on every node"): a
//! service lives in its partition's owner's engine, so a node asked for
//! one it does not hold asks the owner over core NATS request/reply, on
//! `lovebeat.read.<p>`, which only the owner of `p` listens to while its
//! lease holds.
//!
//! A request is one byte of flags (1: the beat history too, as
//! `?details=1`) and the name's UTF-8 bytes; the answer is JSON,
//! `{"service": <the service as GET /api/services/<name> shows it>}`, or
//! `{}` when the owner holds no such service.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::lease::LeaseClock;
use super::{wire, Shared};

/// How long a node waits for an owner's answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The request flag asking for the beat history.
const DETAILS: u8 = 1;

/// Why a read could not be answered by the partition's owner.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Nobody listens on the partition's subject: it is between owners
    /// (a handover), or NATS cannot be reached.
    #[error("partition {0} has no owner that answers right now (a handover, or NATS unreachable)")]
    NoOwner(u32),
    /// The owner did not answer within [`READ_TIMEOUT`].
    #[error("the owner of partition {0} did not answer in time")]
    Timeout(u32),
    /// The answer was not what an owner sends (another version).
    #[error("the owner of partition {0} answered something unreadable")]
    Unreadable(u32),
}

/// Asks partition `p`'s owner for service `name`: `Ok(None)` when it holds
/// no such service.
pub async fn service(
    client: &async_nats::Client,
    p: u32,
    name: &str,
    details: bool,
) -> Result<Option<serde_json::Value>, ReadError> {
    let mut payload = Vec::with_capacity(name.len() + 1);
    payload.push(if details { DETAILS } else { 0 });
    payload.extend_from_slice(name.as_bytes());
    let asked = client.request(wire::read_subject(p), payload.into());
    let answer = match tokio::time::timeout(READ_TIMEOUT, asked).await {
        Err(_) => return Err(ReadError::Timeout(p)),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            return Err(ReadError::Timeout(p))
        }
        Ok(Err(_)) => return Err(ReadError::NoOwner(p)),
        Ok(Ok(m)) => m,
    };
    let mut v: serde_json::Value =
        serde_json::from_slice(&answer.payload).map_err(|_| ReadError::Unreadable(p))?;
    if !v.is_object() {
        return Err(ReadError::Unreadable(p));
    }
    Ok(v.get_mut("service").map(serde_json::Value::take))
}

/// Answers reads of partition `p`'s services while this node owns it:
/// until `stop`, and never once the lease has lapsed by this node's
/// clock (a deposed owner stays silent, so the new owner answers).
pub async fn serve(shared: Arc<Shared>, p: u32, clock: Arc<LeaseClock>, stop: CancellationToken) {
    let mut requests = match shared.client.subscribe(wire::read_subject(p)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("partition {p}: cannot answer reads from other nodes: {e}");
            return;
        }
    };
    loop {
        let req = tokio::select! {
            r = requests.next() => r,
            _ = stop.cancelled() => break,
        };
        let Some(req) = req else { break };
        if !clock.valid() {
            break;
        }
        let Some(reply) = req.reply else { continue };
        let (flags, name) = match req.payload.split_first() {
            Some((f, n)) => (*f, n),
            None => continue,
        };
        let answer = std::str::from_utf8(name)
            .ok()
            .filter(|n| wire::partition_of(n, shared.partitions) == p)
            .and_then(|n| shared.engine.service(n, flags & DETAILS != 0))
            .map_or_else(
                || serde_json::json!({}),
                |s| serde_json::json!({ "service": s }),
            );
        let _ = shared
            .client
            .publish(reply, answer.to_string().into())
            .await;
    }
    let _ = requests.unsubscribe().await;
}

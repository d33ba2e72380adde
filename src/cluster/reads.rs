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
//!
//! The list of services (`GET /api/services`) is asked a page at a time
//! of each partition's owner on `lovebeat.list.<p>`: the request is the
//! last name of the previous page (empty for the first), the answer
//! `{"services": [...], "next": <the last name, or null at the end>}`,
//! the services in name order, at most [`PAGE`] of them and about
//! [`PAGE_BYTES`], so an answer stays well within NATS's 1 MiB payload.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::lease::LeaseClock;
use super::{wire, Shared};
use crate::engine::Engine;

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

/// Services in one page of a partition's list, at most.
pub const PAGE: usize = 200;

/// Bytes of services after which a page ends (a job's output may make a
/// service large).
pub const PAGE_BYTES: usize = 256 * 1024;

/// One page of partition `p`'s services after `after` (`""`: from the
/// start), from its owner: the services as JSON, and the name to ask the
/// next page after (`None`: that was the last).
pub async fn page(
    client: &async_nats::Client,
    p: u32,
    after: &str,
) -> Result<(Vec<serde_json::Value>, Option<String>), ReadError> {
    let mut v = ask(client, p, wire::list_subject(p), after.as_bytes().to_vec()).await?;
    let services = match v.get_mut("services").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(a)) => a,
        _ => return Err(ReadError::Unreadable(p)),
    };
    let next = match v.get("next") {
        Some(serde_json::Value::String(n)) if n.as_str() > after => Some(n.clone()),
        // A next name not after this one would never end.
        Some(serde_json::Value::String(_)) => return Err(ReadError::Unreadable(p)),
        _ => None,
    };
    Ok((services, next))
}

/// The page of partition `p` (of `partitions`) of `engine`'s services
/// after `after`, as [`page`] reads it.
fn list_page(engine: &Engine, partitions: u32, p: u32, after: &str) -> serde_json::Value {
    let mut names: Vec<_> = engine
        .names()
        .into_iter()
        .filter(|n| {
            let n: &str = n;
            n > after && !crate::engine::is_internal(n) && wire::partition_of(n, partitions) == p
        })
        .collect();
    names.sort_unstable();
    let mut services = Vec::new();
    let mut bytes = 0;
    let mut next = None;
    for (i, n) in names.iter().enumerate() {
        if let Some(s) = engine.service(n, false) {
            let v = serde_json::to_value(s).unwrap_or_default();
            bytes += v.to_string().len();
            services.push(v);
        }
        if (services.len() >= PAGE || bytes >= PAGE_BYTES) && i + 1 < names.len() {
            next = Some(n.to_string());
            break;
        }
    }
    serde_json::json!({
        "services": services,
        "next": next,
    })
}

/// Sends `payload` on `subject` (partition `p`'s) and reads the owner's
/// JSON answer, an object.
async fn ask(
    client: &async_nats::Client,
    p: u32,
    subject: String,
    payload: Vec<u8>,
) -> Result<serde_json::Value, ReadError> {
    let asked = client.request(subject, payload.into());
    let answer = match tokio::time::timeout(READ_TIMEOUT, asked).await {
        Err(_) => return Err(ReadError::Timeout(p)),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
            return Err(ReadError::Timeout(p))
        }
        Ok(Err(_)) => return Err(ReadError::NoOwner(p)),
        Ok(Ok(m)) => m,
    };
    match serde_json::from_slice::<serde_json::Value>(&answer.payload) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(ReadError::Unreadable(p)),
    }
}

/// `(num_ok, num_error)` over partition `p`'s services, from its owner,
/// counted as `/api/status` counts (a muted service is OK, a new one
/// neither).
pub async fn status(client: &async_nats::Client, p: u32) -> Result<(i64, i64), ReadError> {
    let v = ask(client, p, wire::status_subject(p), Vec::new()).await?;
    match (v["num_ok"].as_i64(), v["num_error"].as_i64()) {
        (Some(ok), Some(error)) => Ok((ok, error)),
        _ => Err(ReadError::Unreadable(p)),
    }
}

/// What [`status`] reads: partition `p`'s counts in `engine`.
fn partition_status(engine: &Engine, partitions: u32, p: u32) -> serde_json::Value {
    use crate::engine::State;
    let (mut ok, mut error) = (0i64, 0i64);
    engine.for_each_service(|name, svc| {
        if crate::engine::is_internal(name) || wire::partition_of(name, partitions) != p {
            return;
        }
        match svc.state {
            State::Ok | State::Muted => ok += 1,
            State::Error => error += 1,
            State::New => {}
        }
    });
    serde_json::json!({ "num_ok": ok, "num_error": error })
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
    let mut v = ask(client, p, wire::read_subject(p), payload).await?;
    Ok(v.get_mut("service").map(serde_json::Value::take))
}

/// Answers reads of partition `p`'s services while this node owns it:
/// until `stop`, and never once the lease has lapsed by this node's
/// clock (a deposed owner stays silent, so the new owner answers).
pub async fn serve(shared: Arc<Shared>, p: u32, clock: Arc<LeaseClock>, stop: CancellationToken) {
    let subscribed = async {
        let one = shared.client.subscribe(wire::read_subject(p)).await?;
        let list = shared.client.subscribe(wire::list_subject(p)).await?;
        let status = shared.client.subscribe(wire::status_subject(p)).await?;
        Ok::<_, async_nats::SubscribeError>((one, list, status))
    };
    let (mut requests, mut lists, mut statuses) = match subscribed.await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("partition {p}: cannot answer reads from other nodes: {e}");
            return;
        }
    };
    loop {
        let (req, kind) = tokio::select! {
            r = requests.next() => (r, Asked::Service),
            r = lists.next() => (r, Asked::List),
            r = statuses.next() => (r, Asked::Status),
            _ = stop.cancelled() => break,
        };
        let Some(req) = req else { break };
        if !clock.valid() {
            break;
        }
        let Some(reply) = req.reply else { continue };
        let answer = match kind {
            Asked::Service => one_service(&shared.engine, shared.partitions, p, &req.payload),
            Asked::List => list_page(
                &shared.engine,
                shared.partitions,
                p,
                &String::from_utf8_lossy(&req.payload),
            ),
            Asked::Status => partition_status(&shared.engine, shared.partitions, p),
        };
        let _ = shared
            .client
            .publish(reply, answer.to_string().into())
            .await;
    }
    let _ = requests.unsubscribe().await;
    let _ = lists.unsubscribe().await;
    let _ = statuses.unsubscribe().await;
}

/// The answer to a read of one service of partition `p`: the request's
/// flags byte then the name; `{}` for a name that is not there (or not
/// of this partition, or not UTF-8, or an empty request).
fn one_service(engine: &Engine, partitions: u32, p: u32, payload: &[u8]) -> serde_json::Value {
    let Some((flags, name)) = payload.split_first() else {
        return serde_json::json!({});
    };
    std::str::from_utf8(name)
        .ok()
        .filter(|n| wire::partition_of(n, partitions) == p)
        .and_then(|n| engine.service(n, flags & DETAILS != 0))
        .map_or_else(
            || serde_json::json!({}),
            |s| serde_json::json!({ "service": s }),
        )
}

/// Which subject a request came on.
enum Asked {
    Service,
    List,
    Status,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    #[test]
    fn a_read_of_a_name_not_here_or_not_text_is_an_empty_answer() {
        let e = Engine::new(EngineConfig::default(), 1_000);
        e.beat("web.1", 1_000).expect("beat");
        let p = wire::partition_of("web.1", 4);
        let v = one_service(&e, 4, p, b"\0web.1");
        assert_eq!(v["service"]["name"], "web.1", "{v}");
        assert!(v["service"].get("beat_history").is_none());
        let v = one_service(&e, 4, p, b"\x01web.1");
        assert!(v["service"].get("beat_history").is_some(), "{v}");
        for hostile in [&b""[..], b"\0", b"\0\xff\xfe", b"\0web.2"] {
            assert_eq!(one_service(&e, 4, p, hostile), serde_json::json!({}));
        }
        // Another partition's name is not answered for.
        assert_eq!(
            one_service(&e, 4, (p + 1) % 4, b"\0web.1"),
            serde_json::json!({})
        );
    }

    #[test]
    fn a_partitions_status_counts_its_own_services_only() {
        let e = Engine::new(EngineConfig::default(), 1_000);
        let partitions = 4;
        let (mut ok, mut error) = (0, 0);
        for i in 0..200 {
            let n = format!("s.{i}");
            let fail = i % 3 == 0;
            if fail {
                e.change(
                    &n,
                    crate::engine::Change::timeout(crate::engine::Timeout::Always),
                    1_000,
                )
                .expect("change");
            } else {
                e.beat(&n, 1_000).expect("beat");
            }
            if wire::partition_of(&n, partitions) == 2 {
                if fail {
                    error += 1
                } else {
                    ok += 1
                }
            }
        }
        e.beat("lovebeat.self.x", 1_000).ok();
        let v = partition_status(&e, partitions, 2);
        assert_eq!(v["num_ok"].as_i64(), Some(ok), "{v}");
        assert_eq!(v["num_error"].as_i64(), Some(error), "{v}");
    }

    #[test]
    fn a_partitions_list_comes_in_bounded_pages_each_service_once() {
        let e = Engine::new(EngineConfig::default(), 1_000);
        let partitions = 4;
        let mut want: Vec<String> = Vec::new();
        for i in 0..3000 {
            let n = format!("svc.{i:04}");
            e.beat(&n, 1_000).expect("beat");
            if wire::partition_of(&n, partitions) == 1 {
                want.push(n);
            }
        }
        e.beat("lovebeat.self.x", 1_000).ok();
        assert!(want.len() > 2 * PAGE, "{}", want.len());
        let mut got: Vec<String> = Vec::new();
        let mut after = String::new();
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages < 10, "the pages never end");
            let v = list_page(&e, partitions, 1, &after);
            let services = v["services"].as_array().expect("services");
            assert!(services.len() <= PAGE);
            got.extend(
                services
                    .iter()
                    .map(|s| s["name"].as_str().unwrap_or("").to_string()),
            );
            match v["next"].as_str() {
                Some(n) => after = n.to_string(),
                None => break,
            }
        }
        want.sort();
        assert_eq!(got, want, "each service of the partition once, in order");
        assert_eq!(pages, want.len().div_ceil(PAGE));
    }
}

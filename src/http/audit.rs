//! What the API records in the history's audit trail (README, "History"):
//! each change a request made, with who made it ([`Identity`], from the
//! key check in `auth.rs`), once the change was made.

use hyper::{Method, Response};

use super::auth::Identity;
use super::router::Endpoint;
use super::{AppState, Body};
use crate::clock::now_ms;
use crate::engine::{Change, Timeout};
use crate::history::audit::Entry;
use crate::history::HistoryState;

/// The name a change made, when it is not in the request's path (a
/// maintenance window made by `POST /api/maintenance` is named in its
/// body): its handler puts this in the answer's extensions.
#[derive(Debug, Clone)]
pub(super) struct Target(pub(super) String);

/// Who a request is, and where its changes are recorded.
pub(super) struct Audit<'a> {
    state: &'a AppState,
    who: Identity,
}

impl<'a> Audit<'a> {
    /// The audit of one request by `who`.
    pub(super) fn new(state: &'a AppState, who: Identity) -> Audit<'a> {
        Audit { state, who }
    }

    /// Records `action` on `target`, if the history is kept.
    pub(super) fn record(&self, action: &'static str, target: &str, detail: Option<String>) {
        if let HistoryState::On(h) = &self.state.history {
            h.audit(Entry {
                ts: now_ms(),
                who: self.who.to_string(),
                action,
                target: target.to_string(),
                detail,
            });
        }
    }

    /// Records what a beat request with settings did: created the service
    /// (`created`), or set its timeout, schedule or `max_runtime`. A plain
    /// beat of a known service changes nothing worth a row.
    pub(super) fn change(&self, name: &str, change: &Change, created: bool) {
        let detail = settings(change);
        if created {
            self.record("service.create", name, detail);
        } else if detail.is_some() {
            self.record("service.timeout", name, detail);
        }
    }

    /// Records what a request to `endpoint` did, once it answered `r`
    /// (only a success changed anything): deletes, mutes, a job signal
    /// that created its service, an alert test.
    pub(super) fn answered(
        &self,
        endpoint: Endpoint,
        method: &Method,
        name: &str,
        snooze: bool,
        created: bool,
        r: &Response<Body>,
    ) {
        if !r.status().is_success() || super::auth::is_read_only(method) {
            return;
        }
        let action = match endpoint {
            Endpoint::Service if method == Method::DELETE => "service.delete",
            Endpoint::Mute if snooze => "service.snooze",
            Endpoint::Mute => "service.mute",
            Endpoint::Unmute => "service.unmute",
            Endpoint::Start | Endpoint::Fail | Endpoint::Exit if created => "service.create",
            Endpoint::Alarm if method == Method::DELETE => "alarm.delete",
            Endpoint::AlertTest => "alert.test",
            Endpoint::Maintenance if method == Method::POST => "maintenance.create",
            Endpoint::MaintenanceWindow if method == Method::DELETE => "maintenance.delete",
            _ => return,
        };
        let name = r
            .extensions()
            .get::<Target>()
            .map_or(name, |t| t.0.as_str());
        self.record(action, name, None);
    }
}

/// The settings a change sets, as the audit shows them
/// (`timeout=30000`, `schedule=0 3 * * * tz=UTC grace=300000`,
/// `max_runtime=60000`), `None` when it sets none.
fn settings(change: &Change) -> Option<String> {
    let mut parts = Vec::new();
    match &change.timeout {
        Some(Timeout::Schedule(s)) => parts.push(format!(
            "schedule={} tz={} grace={}",
            s.expr,
            s.tz.name(),
            s.grace_ms
        )),
        Some(t) => parts.push(format!("timeout={}", t.wire())),
        None => {}
    }
    if let Some(m) = change.max_runtime {
        parts.push(format!("max_runtime={m}"));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

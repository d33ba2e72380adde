//! How a service is shown: the object of the API, of events and of the
//! database, with its job fields when it is a job.

use super::*;

impl Service {
    /// The externally visible object (README, "HTTP API").
    pub fn view(&self, name: &Name, details: bool) -> ServiceView {
        let history: Vec<u32> = self.intervals().collect();
        ServiceView {
            name: name.clone(),
            last_beat: self.last_beat,
            timeout: self.timeout,
            state: self.state,
            muted_since: self.muted_since,
            last_state_change: self.last_state_change,
            in_alarms: self.alarms.to_vec(),
            analysis: auto::analyze(&history),
            effective_timeout: self.learned(),
            learned_timeouts: (details && self.timeout == TIMEOUT_AUTO)
                .then(|| self.learned_timeouts(&history)),
            beat_history: details.then_some(history),
            job: self.job.as_deref().map(|e| Box::new(JobView::new(e))),
        }
    }
}

/// A service as the API, events and the database show it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    /// The service name.
    pub name: Name,
    /// Last accepted beat, ms, or -1.
    pub last_beat: i64,
    /// Timeout in ms or a special value (-1 none, -2 auto, 0 tripwire, -3
    /// schedule).
    pub timeout: i64,
    /// Current state.
    pub state: State,
    /// When muting began, 0 when not muted.
    pub muted_since: i64,
    /// Time of the latest state change.
    pub last_state_change: i64,
    /// Alarms the service belongs to, sorted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub in_alarms: Vec<Arc<str>>,
    /// Spread of the intervals, with at least 10 of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<BeatAnalysis>,
    /// The intervals, oldest first; only when details were asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beat_history: Option<Vec<u32>>,
    /// The learned timeout of an auto service with at least one interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective_timeout: Option<i64>,
    /// For an auto service, with details: the timeout in force for each
    /// interval of `beat_history` (learned from the ones before it; `null`
    /// for the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_timeouts: Option<Vec<Option<i64>>>,
    /// The job fields of README, "Cron jobs and scripts" that are in use, inline in the object.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub job: Option<Box<JobView>>,
}

/// The job fields of a service object (README, "Cron jobs and
/// scripts"); each is left out while unused.
#[derive(Debug, Clone, Serialize, Default)]
pub struct JobView {
    /// The cron expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Its zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// Grace after a fire time, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace: Option<i64>,
    /// The current deadline of a scheduled service, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_deadline: Option<i64>,
    /// A start with no beat or fail after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    /// When the latest run started, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// Run times, ms, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_history: Option<Vec<u32>>,
    /// The latest failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<JobFailure>,
    /// Longest allowed run, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_runtime: Option<i64>,
    /// End of a snooze, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<i64>,
}

impl JobView {
    fn new(e: &JobExt) -> JobView {
        let sched = e.schedule.as_deref();
        JobView {
            schedule: sched.map(|s| s.expr.clone()),
            tz: sched.map(|s| s.tz.name().to_string()),
            grace: sched.map(|s| s.grace_ms),
            next_deadline: sched.map(|_| e.next_deadline),
            running: (e.started_at > 0).then_some(e.running),
            started_at: (e.started_at > 0).then_some(e.started_at),
            run_history: (!e.run_history.is_empty())
                .then(|| e.run_history.iter().copied().collect()),
            last_failure: e.last_failure.clone(),
            max_runtime: e.max_runtime,
            muted_until: (e.muted_until > 0).then_some(e.muted_until),
        }
    }
}

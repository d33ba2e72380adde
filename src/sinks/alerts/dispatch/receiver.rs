//! The receivers: each alerter of each alert, with its queue of
//! messages, its batch (if it groups) and its deliveries under way, and
//! how a delivery is started as a task that reports back when it ends.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::grouping::Grouping;
use super::slots::{Load, Queues};
use super::NoticeId;
use crate::sinks::alerts::alerter::Alerter;
use crate::sinks::alerts::delivery::{Senders, Undelivered};
use crate::sinks::alerts::Notice;

/// Jobs looked at, from the front of a receiver's queue, for one whose
/// alarm has no message in flight.
const SCAN: usize = 256;

/// One message for one receiver: a change, or a group of them.
pub(super) struct Job {
    pub(super) notices: Vec<Arc<Notice>>,
    /// The tracked changes it carries (reminders are not tracked).
    pub(super) ids: Vec<NoticeId>,
}

/// One channel of one alert.
pub(super) struct Receiver {
    pub(super) alert: Arc<str>,
    pub(super) channel: Arc<dyn Alerter>,
    /// Messages waiting for a delivery slot.
    pub(super) queue: VecDeque<Job>,
    /// Messages being delivered.
    pub(super) running: usize,
    /// Alarms with a message in flight here (receivers that send per
    /// change keep each alarm's order).
    pub(super) busy: HashSet<Arc<str>>,
    /// Its batch, for the receivers that group.
    pub(super) group: Grouping,
    /// Its last message failed for good.
    pub(super) failing: bool,
    /// Alarms with a reminder waiting or in flight here: the next reminder
    /// is skipped while one is, so a receiver that fails for hours holds
    /// one reminder per alarm, not one per `repeat`.
    pub(super) reminding: HashSet<Arc<str>>,
}

impl Receiver {
    /// `channel` of alert `alert`, idle, grouping within `interval` if it
    /// groups.
    pub(super) fn new(
        alert: &str,
        channel: Arc<dyn Alerter>,
        interval: std::time::Duration,
    ) -> Receiver {
        Receiver {
            alert: alert.into(),
            channel,
            queue: VecDeque::new(),
            running: 0,
            busy: HashSet::new(),
            group: Grouping::new(interval),
            failing: false,
            reminding: HashSet::new(),
        }
    }
}

/// What a delivery task reports when it ends.
pub(super) struct Done {
    pub(super) receiver: usize,
    pub(super) job: Job,
    pub(super) result: Result<(), Undelivered>,
}

/// The receivers as the slots see them, and what starting a delivery
/// takes: the dispatcher's parts that [`Slots::fill`] may touch.
pub(super) struct Starter<'a> {
    pub(super) receivers: &'a mut [Receiver],
    /// Deliveries one receiver that sends per change may have under way,
    /// per pool ([`Slots::share`]).
    pub(super) share: [usize; 2],
    pub(super) senders: &'a Arc<Senders>,
    pub(super) done: &'a mpsc::UnboundedSender<Done>,
    pub(super) tasks: &'a TaskTracker,
}

impl Queues for Starter<'_> {
    fn len(&self) -> usize {
        self.receivers.len()
    }

    fn load(&self, idx: usize) -> Load {
        let r = &self.receivers[idx];
        let pool = r.channel.pool();
        Load {
            pool,
            // A receiver that groups sends one message at a time.
            cap: if r.channel.groups() {
                1
            } else {
                self.share[pool as usize]
            },
            running: r.running,
            waiting: !r.queue.is_empty(),
        }
    }

    fn start(&mut self, idx: usize) -> bool {
        let r = &mut self.receivers[idx];
        let pos = if r.channel.groups() {
            Some(0)
        } else {
            r.queue.iter().take(SCAN).position(|j| {
                j.notices
                    .first()
                    .is_some_and(|n| !r.busy.contains(&n.alarm.name))
            })
        };
        let Some(job) = pos.and_then(|pos| r.queue.remove(pos)) else {
            return false;
        };
        if !r.channel.groups() {
            if let Some(n) = job.notices.first() {
                r.busy.insert(n.alarm.name.clone());
            }
        }
        r.running += 1;
        let (senders, channel, done) = (self.senders.clone(), r.channel.clone(), self.done.clone());
        self.tasks.spawn(async move {
            use futures_util::FutureExt;
            // An alerter that panics still gives its slot, its alarm and
            // its change back: a task that never says it is done would
            // hold them for good.
            let result =
                std::panic::AssertUnwindSafe(senders.deliver(channel.as_ref(), &job.notices))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| {
                        Err(Undelivered {
                            reason: format!("{} alerter failed unexpectedly", channel.kind()),
                        })
                    });
            let _ = done.send(Done {
                receiver: idx,
                job,
                result,
            });
        });
        true
    }
}

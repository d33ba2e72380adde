//! Grouping: a receiver that groups (mail, Slack, the chats and pushes)
//! sends the first change after a quiet `group_interval` at once, and the
//! changes of the next `group_interval` together in one message, so a
//! mass outage is one message, not a flood.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::time::delay_queue;

use super::NoticeId;
use crate::sinks::alerts::Notice;

/// One grouping receiver's batch of changes and its timer.
pub(super) struct Grouping {
    /// The receiver's `group_interval`: no two of its messages are made
    /// closer together than this, unless the first goes after a quiet
    /// interval.
    pub(super) interval: Duration,
    /// Changes waiting for the next message, oldest first (with the id
    /// the delivery report needs, none for reminders). Non-empty only
    /// between a change that could not go at once and the next flush.
    pub(super) pending: Vec<(Arc<Notice>, Option<NoticeId>)>,
    /// When the last message was made; `None` before the first. The next
    /// flush is never before `last_sent + interval`.
    pub(super) last_sent: Option<Instant>,
    /// The armed flush timer: at most one, and only while `pending` holds
    /// changes (a message under way arms it when it ends instead).
    pub(super) flush: Option<delay_queue::Key>,
}

impl Grouping {
    /// An empty batch for a receiver whose `group_interval` is `interval`.
    pub(super) fn new(interval: Duration) -> Grouping {
        Grouping {
            interval,
            pending: Vec::new(),
            last_sent: None,
            flush: None,
        }
    }

    /// True when a change arriving `now` goes at once: nothing waits or
    /// is armed, the receiver is `idle` (nothing queued or under way), and
    /// its last message is at least an interval old.
    pub(super) fn sends_at_once(&self, now: Instant, idle: bool) -> bool {
        self.pending.is_empty()
            && self.flush.is_none()
            && idle
            && self.last_sent.is_none_or(|t| now >= t + self.interval)
    }

    /// When the waiting changes should go, seen from `now`: an interval
    /// after the last message (at once if that has passed); `None` when
    /// nothing waits or a flush is already armed.
    pub(super) fn flush_at(&self, now: Instant) -> Option<Instant> {
        if self.flush.is_some() || self.pending.is_empty() {
            return None;
        }
        Some(self.last_sent.map_or(now, |t| t + self.interval).max(now))
    }

    /// Takes the waiting changes as one message made `now`, with the ids
    /// of the tracked ones; `None` when nothing waits.
    pub(super) fn take(&mut self, now: Instant) -> Option<(Vec<Arc<Notice>>, Vec<NoticeId>)> {
        if self.pending.is_empty() {
            return None;
        }
        let (notices, ids): (Vec<Arc<Notice>>, Vec<Option<NoticeId>>) =
            std::mem::take(&mut self.pending).into_iter().unzip();
        self.last_sent = Some(now);
        Some((notices, ids.into_iter().flatten().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::alerts::tests::notice;

    #[tokio::test(start_paused = true)]
    async fn a_group_closes_at_group_interval() {
        let secs = Duration::from_secs;
        let mut g = Grouping::new(secs(10));
        let t0 = Instant::now();
        // The first change goes at once, and starts the interval.
        assert!(g.sends_at_once(t0, true));
        g.last_sent = Some(t0);
        // One 3 s later waits: its message is due when the interval ends.
        tokio::time::advance(secs(3)).await;
        assert!(!g.sends_at_once(Instant::now(), true));
        g.pending.push((Arc::new(notice(0, None)), Some(1)));
        assert_eq!(g.flush_at(Instant::now()), Some(t0 + secs(10)));
        // More changes join it; the flush is not moved.
        tokio::time::advance(secs(6)).await;
        g.pending.push((Arc::new(notice(0, None)), None));
        assert_eq!(g.flush_at(Instant::now()), Some(t0 + secs(10)));
        // At 10 s the group is one message of both, and the next interval
        // runs from it.
        tokio::time::advance(secs(1)).await;
        let (notices, ids) = g.take(Instant::now()).expect("a group");
        assert_eq!((notices.len(), ids), (2, vec![1]));
        assert!(!g.sends_at_once(t0 + secs(15), true));
        assert!(g.sends_at_once(t0 + secs(20), true));
        // A busy receiver groups even after a quiet interval.
        assert!(!g.sends_at_once(t0 + secs(60), false));
        // A change waiting long after the last message goes at once.
        g.pending.push((Arc::new(notice(0, None)), None));
        tokio::time::advance(secs(60)).await;
        assert_eq!(g.flush_at(Instant::now()), Some(Instant::now()));
    }
}

//! How the pagers (PagerDuty, Opsgenie) turn a notice into "open" and
//! "close" of an incident they know by a key, so that what one notice
//! opens a later one closes, across restarts and flapping.
//!
//! The key is `lovebeat-<alarm>-<incident>`: the incident number is kept
//! in the database, so after a restart the recovery of an incident that
//! was paged before it carries the same key, and an announcement resent
//! after a restart (its delivery was cut short) is deduplicated by the
//! service instead of opening a second incident.
//!
//! A notice that opens an incident (an ERROR, or the start of flapping)
//! first closes the one its receivers were last told is open, if that is
//! another ([`Notice::open_incident`]): an alarm that failed, recovered and
//! failed again before its alert was out, or one that starts flapping in
//! a later incident, leaves nothing open behind it. A notice that closes
//! (a recovery, or settling in OK) closes the open one. So a flapping
//! episode is one open and one close of the same key, and every incident
//! opened is closed when the alarm is OK again.

use super::{Flapping, Notice};
use crate::engine::State;

/// What a pager is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Open (or, with the same key, update) an incident.
    Open,
    /// Close it.
    Close,
}

/// The longest key: PagerDuty takes 255 characters, Opsgenie 512.
const MAX_KEY: usize = 255;

/// `lovebeat-<alarm>-<incident>`, within [`MAX_KEY`] bytes: a name too
/// long for it is cut (at a character boundary) and ends in `~` and 16
/// hex digits of its SHA-256, so two long names that start alike never
/// share a key (one's recovery would resolve the other's page).
pub(super) fn key(alarm: &str, incident: u64) -> String {
    use sha2::Digest;
    let suffix = format!("-{incident}");
    let room = MAX_KEY - "lovebeat-".len() - suffix.len();
    if alarm.len() <= room {
        return format!("lovebeat-{alarm}{suffix}");
    }
    let digest = sha2::Sha256::digest(alarm.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut end = room - 1 - hash.len();
    while !alarm.is_char_boundary(end) {
        end -= 1;
    }
    format!("lovebeat-{}~{hash}{suffix}", &alarm[..end])
}

/// The `Idempotency-Key` header of the webhooks (README, "Alerts"):
/// `lovebeat-<alarm>-<incident>-<state>`, so a receiver can drop a
/// notice it already took. Delivery is at least once (a retry after a
/// lost answer, or a cluster's alerter dying mid-delivery), and the key
/// is what makes a repeat harmless. Notices that are not the change
/// itself say what they are after it (`-repeat-<n>`, `-flapping`,
/// `-settled`, `-test-<ms>`), so a reminder or a test is never taken for
/// a repeat of the change. The alarm's name keeps its visible ASCII
/// letters; other bytes (and `%`) are written `%XX`, since a header
/// value is ASCII, and the name is cut as in [`key`].
pub(super) fn idempotency_key(n: &Notice) -> String {
    let mut alarm = String::with_capacity(n.alarm.name.len());
    for b in n.alarm.name.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            alarm.push(char::from(b));
        } else {
            alarm.push_str(&format!("%{b:02X}"));
        }
    }
    let mut out = key(&alarm, n.alarm.incident_nbr);
    out.push('-');
    out.push_str(n.alarm.state.as_str());
    if n.test {
        out.push_str(&format!("-test-{}", n.ts));
    } else if n.repeat > 0 {
        out.push_str(&format!("-repeat-{}", n.repeat));
    }
    match n.flapping {
        Some(Flapping::Started { .. }) => out.push_str("-flapping"),
        Some(Flapping::Stopped) => out.push_str("-settled"),
        None => {}
    }
    out
}

/// The pager actions a notice stands for, in order, each with the
/// incident number its key is made of.
pub(super) fn actions(n: &Notice) -> Vec<(Action, u64)> {
    let current = n.alarm.incident_nbr;
    if n.test {
        // A test opens its incident; the test sends its close a little
        // later, as a notice of its own in OK, with retries (see
        // `test_send`): nobody is left on call for it.
        return match n.alarm.state {
            State::Error => vec![(Action::Open, current)],
            _ => vec![(Action::Close, current)],
        };
    }
    let opens =
        n.alarm.state == State::Error || matches!(n.flapping, Some(Flapping::Started { .. }));
    match (opens, n.open_incident) {
        (true, Some(open)) if open != current => {
            vec![(Action::Close, open), (Action::Open, current)]
        }
        (true, _) => vec![(Action::Open, current)],
        (false, Some(open)) => vec![(Action::Close, open)],
        (false, None) => vec![(Action::Close, current)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::alerts::tests::notice;

    #[test]
    fn what_is_opened_is_closed_once_even_across_flapping() {
        // Paged in incident 1; it starts flapping in incident 3.
        let mut start = notice(0, None);
        start.alarm.incident_nbr = 3;
        start.alarm.state = State::Ok;
        start.flapping = Some(Flapping::Started { changes: 6 });
        start.open_incident = Some(1);
        assert_eq!(actions(&start), [(Action::Close, 1), (Action::Open, 3)]);
        // It settles OK in incident 9: the flapping incident is closed.
        let mut settled = notice(0, None);
        settled.alarm.incident_nbr = 9;
        settled.alarm.state = State::Ok;
        settled.flapping = Some(Flapping::Stopped);
        settled.open_incident = Some(3);
        assert_eq!(actions(&settled), [(Action::Close, 3)]);
        // Settled in ERROR: the flapping incident gives way to incident 9,
        // which its recovery closes.
        settled.alarm.state = State::Error;
        assert_eq!(actions(&settled), [(Action::Close, 3), (Action::Open, 9)]);
        let mut recovery = notice(0, None);
        recovery.alarm.incident_nbr = 9;
        recovery.alarm.state = State::Ok;
        recovery.open_incident = Some(9);
        assert_eq!(actions(&recovery), [(Action::Close, 9)]);
        // A reminder updates what is open.
        let mut reminder = notice(2, None);
        reminder.open_incident = Some(7);
        assert_eq!(actions(&reminder), [(Action::Open, 7)]);
    }

    #[test]
    fn idempotency_keys_name_the_change_and_are_header_values() {
        let mut n = notice(0, None);
        n.alarm.name = "web".into();
        n.alarm.incident_nbr = 4;
        n.alarm.state = State::Error;
        assert_eq!(idempotency_key(&n), "lovebeat-web-4-error");
        n.alarm.state = State::Ok;
        assert_eq!(idempotency_key(&n), "lovebeat-web-4-ok");
        n.repeat = 2;
        assert_eq!(idempotency_key(&n), "lovebeat-web-4-ok-repeat-2");
        n.repeat = 0;
        n.flapping = Some(Flapping::Started { changes: 6 });
        assert_eq!(idempotency_key(&n), "lovebeat-web-4-ok-flapping");
        n.flapping = Some(Flapping::Stopped);
        assert_eq!(idempotency_key(&n), "lovebeat-web-4-ok-settled");
        n.flapping = None;
        n.test = true;
        n.ts = 17;
        assert_eq!(idempotency_key(&n), "lovebeat-web-4-ok-test-17");
        n.test = false;
        n.alarm.name = "caf\u{e9} 50%\r\n".into();
        let k = idempotency_key(&n);
        assert_eq!(k, "lovebeat-caf%C3%A9%2050%25%0D%0A-4-ok");
        assert!(reqwest::header::HeaderValue::from_str(&k).is_ok());
        n.alarm.name = "\u{e9}".repeat(300).into();
        let k = idempotency_key(&n);
        assert!(k.len() <= MAX_KEY + 3, "{}", k.len());
        assert!(reqwest::header::HeaderValue::from_str(&k).is_ok());
    }

    #[test]
    fn keys_are_bounded_and_keep_their_incident() {
        assert_eq!(key("web", 4), "lovebeat-web-4");
        let long = "é".repeat(300);
        let k = key(&long, 12);
        assert!(k.len() <= MAX_KEY && k.ends_with("-12"), "{k}");
        assert_eq!(k, key(&long, 12), "the same name, the same key");
        // Names alike in all the room a key has still get two keys.
        let (a, b) = (
            format!("{}a", "x".repeat(240)),
            format!("{}b", "x".repeat(240)),
        );
        assert_ne!(key(&a, 1), key(&b, 1));
        assert!(key(&a, 1).len() <= MAX_KEY);
        let exact = "y".repeat(MAX_KEY - "lovebeat-".len() - 2);
        assert_eq!(
            key(&exact, 1),
            format!("lovebeat-{exact}-1"),
            "uncut when it fits"
        );
    }
}

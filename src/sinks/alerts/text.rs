//! What the alerters say, before each service's own formatting and
//! escaping: the wording every alerter shares (a notice's headline, its
//! sentence, a group's lines, how a job failed, cutting to a length), and
//! the plain message the chats and pushes build on: a title, a few lines,
//! the job's output apart (each shows it as code), for one change or a
//! group of them.

use super::{failed_list, Flapping, Notice};
use crate::engine::State;

/// Changes listed in one grouped message at most; the rest are counted
/// (chats cut long messages: Telegram at 4096 characters).
pub(super) const GROUP_LINES: usize = 30;

/// A message in plain text.
#[derive(Debug, Clone)]
pub(super) struct Plain {
    /// One line: "web is in ERROR", or "3 alarm changes".
    pub(super) title: String,
    /// What changed, the failed services, how the job failed.
    pub(super) text: String,
    /// The job's output, if it sent any (one change only).
    pub(super) output: Option<String>,
    /// True when any change is to ERROR (a red message).
    pub(super) error: bool,
    /// The link to the alarm (one change only).
    pub(super) url: Option<String>,
}

/// The message for one change or a group.
pub(super) fn plain(group: &[&Notice]) -> Plain {
    match group {
        [n] => {
            let mut text = sentence(n);
            text.push('.');
            let failed = failed_list(&n.alarm);
            if n.alarm.state == State::Error && !failed.is_empty() {
                text.push_str(&format!("\nFailed services: {failed}"));
            }
            if let Some(f) = &n.failure {
                text.push('\n');
                text.push_str(&failure_line(f));
            }
            Plain {
                title: headline(n),
                text,
                output: n
                    .failure
                    .as_ref()
                    .map(|f| f.output.clone())
                    .filter(|o| !o.is_empty()),
                error: n.alarm.state == State::Error,
                url: n.url.clone(),
            }
        }
        _ => {
            let mut lines: Vec<String> = group
                .iter()
                .take(GROUP_LINES)
                .map(|n| change_line(n))
                .collect();
            lines.extend(more_changes(group.len(), GROUP_LINES));
            Plain {
                title: format!("{} alarm changes", group.len()),
                text: lines.join("\n"),
                output: None,
                error: group.iter().any(|n| n.alarm.state == State::Error),
                url: None,
            }
        }
    }
}

/// "… and N more changes" for a group of `total` of which `listed` were
/// named, if any were left out.
pub(super) fn more_changes(total: usize, listed: usize) -> Option<String> {
    (total > listed).then(|| format!("… and {} more changes", total - listed))
}

/// [`plain`] with the job's output (its last `max` characters) after the
/// text and a blank line: how services that take one plain text (ntfy,
/// Pushover, Gotify) show it. `output` is then `None`.
pub(super) fn plain_with_output(group: &[&Notice], max: usize) -> Plain {
    let mut p = plain(group);
    if let Some(out) = p.output.take() {
        p.text.push_str("\n\n");
        p.text.push_str(&tail(&out, max));
    }
    p
}

/// Job output made safe inside a Markdown code fence: no two backticks
/// stay adjacent, so it cannot close the fence and format what follows.
pub(super) fn in_fence(output: &str) -> String {
    let mut out = String::with_capacity(output.len());
    let mut prev = '\0';
    for c in output.chars() {
        if c == '`' && prev == '`' {
            out.push('\u{200b}');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// The last `max` characters of a job's output (its end says why it
/// failed), marked when cut.
pub(super) fn tail(output: &str, max: usize) -> String {
    let count = output.chars().count();
    if count <= max {
        return output.to_string();
    }
    let skip = count - max.saturating_sub(1);
    format!("…{}", output.chars().skip(skip).collect::<String>())
}

/// A transaction or de-duplication id for a message: the same for every
/// attempt of the same message, different for another.
pub(super) fn message_id(group: &[&Notice]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for n in group {
        n.alarm.name.hash(&mut h);
        n.alarm.incident_nbr.hash(&mut h);
        n.alarm.state.as_str().hash(&mut h);
        n.ts.hash(&mut h);
        n.repeat.hash(&mut h);
    }
    format!("lovebeat-{:016x}", h.finish())
}

/// ` (reminder n)` for a repeated alert, else nothing.
pub(super) fn reminder(n: &Notice) -> String {
    if n.repeat > 0 {
        format!(" (reminder {})", n.repeat)
    } else {
        String::new()
    }
}

/// When a maintenance notice's occurrence ends, as UTC text.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// The sentence of a maintenance notice.
fn maintenance_sentence(m: &super::MaintenanceNote) -> String {
    let alarms = if m.alarms.is_empty() {
        "its alarms".to_string()
    } else {
        format!(
            "alarms {}",
            m.alarms
                .iter()
                .take(GROUP_LINES)
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut out = if m.opened {
        format!(
            "Maintenance window '{}' has started, until {}: {alarms} send no alert meanwhile",
            m.window,
            utc(m.until)
        )
    } else {
        format!(
            "Maintenance window '{}' has ended: {alarms} alert again",
            m.window
        )
    };
    if !m.comment.is_empty() {
        out.push_str(&format!(" ({})", cut(&m.comment, 200)));
    }
    out
}

/// The first sentence about one notice.
pub(super) fn sentence(n: &Notice) -> String {
    if let Some(m) = &n.maintenance {
        return maintenance_sentence(m);
    }
    if n.test {
        return format!(
            "This is a test of lovebeat's alert '{}', sent on request: nothing failed",
            n.alarm.name
        );
    }
    match n.flapping {
        Some(Flapping::Started { changes }) => format!(
            "The alarm '{}' is flapping: it changed state {changes} times within the flapping window. \
             Its changes are not announced one by one until it settles; it is '{}' now.",
            n.alarm.name,
            n.alarm.state.as_upper()
        ),
        Some(Flapping::Stopped) => format!(
            "The alarm '{}' stopped flapping: it is '{}' (it was '{}' when last announced).",
            n.alarm.name,
            n.alarm.state.as_upper(),
            n.previous.as_upper()
        ),
        None => format!(
            "The status for alarm '{}' has changed from '{}' to '{}'",
            n.alarm.name,
            n.previous.as_upper(),
            n.alarm.state.as_upper()
        ),
    }
}

/// One line of a group: the alarm, its incident and its change.
pub(super) fn change_line(n: &Notice) -> String {
    if let Some(m) = &n.maintenance {
        return maintenance_headline(m);
    }
    let flapping = match n.flapping {
        Some(Flapping::Started { .. }) => " (flapping)",
        Some(Flapping::Stopped) => " (stopped flapping)",
        None => "",
    };
    format!(
        "'{}' (incident {}): {} -> {}{flapping}{}",
        n.alarm.name,
        n.alarm.incident_nbr,
        n.previous.as_upper(),
        n.alarm.state.as_upper(),
        reminder(n)
    )
}

/// One line saying how the job failed.
pub(super) fn failure_line(f: &crate::engine::JobFailure) -> String {
    match (&f.reason, f.exit_code) {
        (Some(r), _) => format!("The job failed: {r}."),
        (None, Some(c)) => format!("The job failed with exit code {c}."),
        (None, None) => "The job reported a failure.".to_string(),
    }
}

/// A one-line title for a notice: what pagers and chats show first.
pub(super) fn headline(n: &Notice) -> String {
    let title = bare_headline(n);
    if n.test {
        format!("[TEST] {title}")
    } else {
        title
    }
}

fn maintenance_headline(m: &super::MaintenanceNote) -> String {
    if m.opened {
        format!("maintenance '{}' started", m.window)
    } else {
        format!("maintenance '{}' ended", m.window)
    }
}

fn bare_headline(n: &Notice) -> String {
    if let Some(m) = &n.maintenance {
        return maintenance_headline(m);
    }
    let name = &n.alarm.name;
    let reminder = reminder(n);
    match n.flapping {
        Some(Flapping::Started { .. }) => format!("{name} is flapping"),
        Some(Flapping::Stopped) => {
            format!("{name} stopped flapping: {}", n.alarm.state.as_upper())
        }
        None if n.alarm.state == State::Error => format!("{name} is in ERROR{reminder}"),
        None => format!("{name} has recovered"),
    }
}

/// `text` cut to at most `max` characters, with an ellipsis when cut.
pub(super) fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::alerts::tests::{failed_job, notice};

    #[test]
    fn one_change_says_what_failed_and_a_group_counts_what_it_leaves_out() {
        let f = failed_job(Some(2), "boom");
        let n = notice(0, Some(f));
        let p = plain(&[&n]);
        assert_eq!(p.title, "jobs is in ERROR");
        assert!(p.text.contains("Failed services: job.etl"), "{}", p.text);
        assert!(p.text.contains("exit code 2"), "{}", p.text);
        assert_eq!(p.output.as_deref(), Some("boom"));
        let many: Vec<_> = (0..40).map(|_| notice(0, None)).collect();
        let refs: Vec<&Notice> = many.iter().collect();
        let g = plain(&refs);
        assert_eq!(g.title, "40 alarm changes");
        assert!(g.text.ends_with("… and 10 more changes"), "{}", g.text);
        assert_eq!(in_fence("a```b"), "a`\u{200b}`\u{200b}`b");
        assert_eq!(tail("abcdef", 4), "…def");
    }
}

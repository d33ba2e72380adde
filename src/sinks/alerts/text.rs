//! What the chat and push alerters say, before each service's own
//! formatting and escaping: a title, a few lines, the job's output apart
//! (each shows it as code), for one change or a group of them.

use super::{failed_list, incident, Notice};
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
            let mut text = super::mail::sentence(n);
            text.push('.');
            let failed = failed_list(&n.alarm);
            if n.alarm.state == State::Error && !failed.is_empty() {
                text.push_str(&format!("\nFailed services: {failed}"));
            }
            if let Some(f) = &n.failure {
                text.push('\n');
                text.push_str(&super::mail::failure_line(f));
            }
            Plain {
                title: incident::headline(n),
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
                .map(|n| super::mail::change_line(n))
                .collect();
            if group.len() > GROUP_LINES {
                lines.push(format!("… and {} more changes", group.len() - GROUP_LINES));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::JobFailure;
    use crate::sinks::alerts::tests::notice;

    #[test]
    fn one_change_says_what_failed_and_a_group_counts_what_it_leaves_out() {
        let f = JobFailure {
            ts: 1,
            exit_code: Some(2),
            output: "boom".into(),
            reason: None,
        };
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

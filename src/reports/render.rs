//! A report as people and spreadsheets read it: plain text (the mail's
//! text part and `lovebeat report`), CSV (`/api/reports?format=csv`) and
//! a simple HTML table (the mail's HTML part). Every figure comes from the
//! [`Report`]; nothing here computes one.

use super::period::{self, Period};
use super::{Delta, Entry, PeriodFigures, Report};
use crate::escape::{html_text, one_line};

/// The CSV header: the period's figures, then the period before's.
pub const CSV_HEADER: &str = "alarm,since,until,uptime,uptime_raw,incidents,down_ms,longest_down_ms,mttr_ms,maintenance_ms,muted_ms,unknown_ms,up_ms,recoveries,previous_since,previous_until,previous_uptime,previous_uptime_raw,previous_incidents,previous_down_ms,previous_longest_down_ms,previous_mttr_ms,previous_maintenance_ms\r\n";

/// `ms` as `1d 2h 3m 4.567s` (`0s` for none).
pub fn duration(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    let (d, h, m) = (ms / 86_400_000, ms / 3_600_000 % 24, ms / 60_000 % 60);
    let (s, frac) = (ms / 1000 % 60, ms % 1000);
    let mut parts = Vec::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m")] {
        if n > 0 {
            parts.push(format!("{n}{unit}"));
        }
    }
    if frac > 0 {
        let f = format!("{frac:03}");
        parts.push(format!("{s}.{}s", f.trim_end_matches('0')));
    } else if s > 0 || parts.is_empty() {
        parts.push(format!("{s}s"));
    }
    format!("{sign}{}", parts.join(" "))
}

fn signed_duration(ms: i64) -> String {
    if ms >= 0 {
        format!("+{}", duration(ms))
    } else {
        duration(ms)
    }
}

fn percent(f: Option<f64>) -> String {
    f.map_or_else(|| "-".into(), |f| format!("{:.4} %", f * 100.0))
}

fn points(f: Option<f64>) -> String {
    f.map_or_else(|| "-".into(), |f| format!("{:+.4} pp", f * 100.0))
}

/// `ms` in `tz` as `2026-11-01 00:00 CET`.
fn time(tz: &chrono_tz::Tz, ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.with_timezone(tz).format("%Y-%m-%d %H:%M %Z").to_string(),
    )
}

fn zone(report: &Report) -> chrono_tz::Tz {
    report.tz.parse().unwrap_or(chrono_tz::UTC)
}

/// The period's name: `2026-11` or `2026-W48` for a calendar one, else
/// its two ends.
pub fn title(report: &Report) -> String {
    let tz = zone(report);
    let p = Period {
        since: report.since,
        until: report.until,
    };
    match report.every {
        Some(e) => format!("{} ({})", period::label(e, &tz, p), report.tz),
        None => format!("{} to {}", time(&tz, p.since), time(&tz, p.until)),
    }
}

/// The mail's subject.
pub fn subject(report: &Report) -> String {
    one_line(&format!(
        "[LOVEBEAT] Uptime report {}: {}",
        report.name.as_deref().unwrap_or(""),
        title(report)
    ))
}

/// The report as plain text: a block per alarm, each figure with its
/// change against the period before.
pub fn text(report: &Report) -> String {
    let tz = zone(report);
    let mut out = match &report.name {
        Some(n) => format!("Uptime report {}: {}\n", one_line(n), title(report)),
        None => format!("Uptime report: {}\n", title(report)),
    };
    out.push_str(&format!(
        "From {} to {},\nagainst {} to {}.\n",
        time(&tz, report.since),
        time(&tz, report.until),
        time(&tz, report.previous_since),
        time(&tz, report.previous_until)
    ));
    for e in &report.alarms {
        out.push_str(&format!("\nalarm {}", one_line(&e.alarm)));
        if e.deleted_at.is_some() {
            out.push_str(" (deleted)");
        }
        out.push('\n');
        let (Some(p), Some(d)) = (&e.period, &e.delta) else {
            out.push_str("  no history\n");
            continue;
        };
        for (label, now, change) in rows(p, d) {
            out.push_str(&format!("  {label:<13}{now:<18}({change})\n"));
        }
    }
    out
}

/// The figures' rows: label, the period's value, its change.
fn rows(p: &PeriodFigures, d: &Delta) -> Vec<(&'static str, String, String)> {
    vec![
        ("uptime", percent(p.uptime), points(d.uptime)),
        ("uptime (raw)", percent(p.uptime_raw), points(d.uptime_raw)),
        (
            "incidents",
            p.incidents.to_string(),
            format!("{:+}", d.incidents),
        ),
        ("downtime", duration(p.down_ms), signed_duration(d.down_ms)),
        (
            "longest",
            duration(p.longest_down_ms),
            signed_duration(d.longest_down_ms),
        ),
        (
            "MTTR",
            p.mttr_ms.map_or_else(|| "-".into(), duration),
            d.mttr_ms.map_or_else(|| "-".into(), signed_duration),
        ),
        (
            "maintenance",
            duration(p.maintenance_ms),
            signed_duration(d.maintenance_ms),
        ),
    ]
}

/// The report as a small HTML page: one table, a row per alarm, each
/// cell the period's value over its change. Every name is escaped.
pub fn html(report: &Report) -> String {
    let heads = [
        "alarm",
        "uptime",
        "uptime (raw)",
        "incidents",
        "downtime",
        "longest",
        "MTTR",
        "maintenance",
    ];
    let mut out = String::from("<!DOCTYPE html>\n<html><body>\n");
    out.push_str(&format!("<h2>{}</h2>\n", html_text(&text_title(report))));
    let tz = zone(report);
    out.push_str(&format!(
        "<p>From {} to {}, against {} to {}.</p>\n",
        html_text(&time(&tz, report.since)),
        html_text(&time(&tz, report.until)),
        html_text(&time(&tz, report.previous_since)),
        html_text(&time(&tz, report.previous_until))
    ));
    out.push_str("<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n<tr>");
    for h in heads {
        out.push_str(&format!("<th>{h}</th>"));
    }
    out.push_str("</tr>\n");
    for e in &report.alarms {
        out.push_str(&format!("<tr><td>{}</td>\n", html_text(&e.alarm)));
        match (&e.period, &e.delta) {
            (Some(p), Some(d)) => {
                for (_, now, change) in rows(p, d) {
                    out.push_str(&format!(
                        "<td>{}<br>\n<small>{}</small></td>\n",
                        html_text(&now),
                        html_text(&change)
                    ));
                }
            }
            _ => out.push_str(&format!(
                "<td colspan=\"{}\">no history</td>",
                heads.len() - 1
            )),
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

fn text_title(report: &Report) -> String {
    match &report.name {
        Some(n) => format!("Uptime report {}: {}", one_line(n), title(report)),
        None => format!("Uptime report: {}", title(report)),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// One CSV line (CRLF-terminated, as [`CSV_HEADER`]) per alarm; an alarm
/// the history never knew has empty figures.
pub fn csv_line(out: &mut Vec<u8>, e: &Entry, report: &Report) {
    crate::history::export::csv_field(out, &e.alarm);
    let mut fields: Vec<String> = vec![report.since.to_string(), report.until.to_string()];
    match &e.period {
        Some(p) => fields.extend([
            opt(p.uptime),
            opt(p.uptime_raw),
            p.incidents.to_string(),
            p.down_ms.to_string(),
            p.longest_down_ms.to_string(),
            opt(p.mttr_ms),
            p.maintenance_ms.to_string(),
            p.muted_ms.to_string(),
            p.unknown_ms.to_string(),
            p.up_ms.to_string(),
            p.recoveries.to_string(),
        ]),
        None => fields.extend(std::iter::repeat_n(String::new(), 11)),
    }
    fields.extend([
        report.previous_since.to_string(),
        report.previous_until.to_string(),
    ]);
    match &e.previous {
        Some(p) => fields.extend([
            opt(p.uptime),
            opt(p.uptime_raw),
            p.incidents.to_string(),
            p.down_ms.to_string(),
            p.longest_down_ms.to_string(),
            opt(p.mttr_ms),
            p.maintenance_ms.to_string(),
        ]),
        None => fields.extend(std::iter::repeat_n(String::new(), 7)),
    }
    for f in fields {
        out.push(b',');
        out.extend_from_slice(f.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The whole report as CSV, header first.
pub fn csv(report: &Report) -> Vec<u8> {
    let mut out = CSV_HEADER.as_bytes().to_vec();
    for e in &report.alarms {
        csv_line(&mut out, e, report);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(500), "0.5s");
        assert_eq!(duration(3_723_456), "1h 2m 3.456s");
        assert_eq!(duration(86_400_000 + 60_000), "1d 1m");
        assert_eq!(duration(-90_000), "-1m 30s");
        assert_eq!(signed_duration(0), "+0s");
        assert_eq!(duration(i64::MIN).chars().next(), Some('-'));
    }

    #[test]
    fn csv_has_one_column_per_header_field_and_quotes_names() {
        let report = Report {
            name: None,
            since: 10,
            until: 20,
            previous_since: 0,
            previous_until: 10,
            tz: "UTC".into(),
            every: None,
            now: 30,
            alarms: vec![Entry {
                alarm: "a,b".into(),
                deleted_at: None,
                period: None,
                previous: None,
                delta: None,
            }],
        };
        let text = String::from_utf8(csv(&report)).unwrap_or_default();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines.len(), 3, "{text}");
        let header_fields = CSV_HEADER.trim_end().split(',').count();
        // The name is one quoted field.
        assert!(lines[1].starts_with("\"a,b\",10,20,"), "{text}");
        assert_eq!(lines[1].split(',').count(), header_fields + 1, "{text}");
    }
}

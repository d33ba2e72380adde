//! `curve`: the scenarios of `run` at growing numbers of services, so a
//! reader sees how each cost grows (issue 32, item 1): flat where it
//! should be flat, linear where it must be. Writes `curve.md` (the table:
//! a row per figure, a column per size), `curve.csv` and an SVG plot per
//! figure, services on a log scale.

use std::io::Write;
use std::path::Path;

use crate::plot::{chart, Series};
use crate::run::{self, Row, Scale};

/// The scenarios a curve runs: those whose figure depends on the size of
/// the table.
pub const SCENARIOS: &[&str] = &[
    "udp-beat",
    "tcp",
    "udp-create",
    "memory",
    "idle",
    "list",
    "expiry",
    "save",
];

/// The number at the start of a row's value ("1 234 567", "12 ms",
/// "0.25 % of a core"); NaN when there is none.
pub fn leading_number(value: &str) -> f64 {
    let digits: String = value
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | ' '))
        .filter(|c| *c != ' ')
        .collect();
    digits.parse().unwrap_or(f64::NAN)
}

/// One figure across the sizes.
struct Figure {
    /// `<scenario>-<k>`: the k-th row of its scenario.
    key: String,
    /// What it measures, as the largest size's row says it.
    title: String,
    /// The unit after the number ("ms", "B", ...), if any.
    unit: String,
    /// (services, value as shown) per size.
    values: Vec<(usize, String)>,
}

/// Runs the curve at `sizes` and writes its files into `out`.
pub fn run(bin: &Path, sizes: &[usize], out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let wanted: Vec<String> = SCENARIOS.iter().map(|s| s.to_string()).collect();
    let mut figures: Vec<Figure> = Vec::new();
    for &n in sizes {
        eprintln!("curve: {n} services");
        let rows = run::rows(bin, Scale::curve(n), &wanted)?;
        let mut ordinal: std::collections::HashMap<&str, usize> = Default::default();
        for Row {
            scenario,
            figure,
            value,
            ..
        } in rows
        {
            // The size is the column's: "N" in the figure.
            let figure = figure.replace(&run::num(n as f64), "N");
            let k = ordinal.entry(scenario).or_insert(0);
            let key = format!("{scenario}-{k}");
            *k += 1;
            eprintln!("  {key}: {figure}: {value}");
            let unit = value
                .trim_start_matches(|c: char| c.is_ascii_digit() || matches!(c, '.' | '-' | ' '))
                .to_string();
            match figures.iter_mut().find(|f| f.key == key) {
                Some(f) => {
                    f.title = figure;
                    f.values.push((n, value));
                }
                None => figures.push(Figure {
                    key,
                    title: figure,
                    unit,
                    values: vec![(n, value)],
                }),
            }
        }
        // Written after every size, so a long run that fails late keeps
        // what it measured.
        write_files(&figures, sizes, out)?;
    }
    eprintln!("curve: table in {}", out.join("curve.md").display());
    Ok(())
}

/// `curve.md`, `curve.csv` and `curve-<key>.svg` for the figures so far.
fn write_files(figures: &[Figure], sizes: &[usize], out: &Path) -> anyhow::Result<()> {
    let mut md = std::fs::File::create(out.join("curve.md"))?;
    write!(md, "| figure |")?;
    for n in sizes {
        write!(md, " {} |", run::num(*n as f64))?;
    }
    writeln!(md)?;
    writeln!(md, "|---|{}", "---|".repeat(sizes.len()))?;
    let mut csv = std::fs::File::create(out.join("curve.csv"))?;
    writeln!(csv, "key,services,value,unit")?;
    for f in figures {
        write!(md, "| {} ({}) |", f.title, f.key)?;
        for n in sizes {
            let v = f
                .values
                .iter()
                .find(|(m, _)| m == n)
                .map_or("-", |(_, v)| v.as_str());
            write!(md, " {v} |")?;
        }
        writeln!(md)?;
        for (n, v) in &f.values {
            writeln!(csv, "{},{n},{},{}", f.key, leading_number(v), f.unit.trim())?;
        }
        let points: Vec<(f64, f64)> = f
            .values
            .iter()
            .map(|(n, v)| (*n as f64, leading_number(v)))
            .collect();
        chart(
            &out.join(format!("curve-{}.svg", f.key)),
            &f.title,
            "services",
            if f.unit.trim().is_empty() {
                "value"
            } else {
                f.unit.trim()
            },
            &[Series {
                name: f.key.clone(),
                points,
            }],
            true,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rows_value_gives_its_leading_number() {
        assert_eq!(leading_number("1 234 567"), 1_234_567.0);
        assert_eq!(leading_number("12 ms"), 12.0);
        assert_eq!(leading_number("0.25 % of a core"), 0.25);
        assert_eq!(leading_number("-3 ms"), -3.0);
        assert!(leading_number("wrk not installed").is_nan());
    }
}

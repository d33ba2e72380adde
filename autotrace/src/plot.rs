//! Trade-off curves: false alarms against mean detection delay as each
//! detector's knob is swept, one SVG per family (plotters' SVG backend).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::detectors::Kind;

/// One point of a curve.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Mean detection delay, in mean intervals.
    pub delay: f64,
    /// False alarms per 1000 normal intervals.
    pub false_alarms: f64,
    /// Whether this is the detector's default knob.
    pub default: bool,
}

/// Where a curve with no false alarm is drawn: the plot is logarithmic.
pub const FLOOR: f64 = 0.01;

const COLOURS: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(0, 0, 0),
];

/// Writes one family's curves to `path`.
pub fn trade_off(path: &Path, title: &str, curves: &[(Kind, Vec<Point>)]) -> anyhow::Result<()> {
    let max_delay = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.delay))
        .filter(|d| d.is_finite())
        .fold(1.0f64, f64::max)
        .min(4.0);
    let min_delay = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.delay))
        .filter(|d| d.is_finite())
        .fold(max_delay, f64::min)
        .max(0.0);
    let max_fa = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.false_alarms))
        .fold(1.0f64, f64::max)
        .min(1000.0);
    let root = SVGBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (min_delay * 0.95)..(max_delay * 1.05),
            (FLOOR..(max_fa * 2.0)).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("mean detection delay (mean intervals)")
        .y_desc("false alarms / 1000 intervals")
        .draw()?;
    for (i, (kind, points)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let xy: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.delay.is_finite() && p.delay <= max_delay * 1.05)
            .map(|p| (p.delay, p.false_alarms.max(FLOOR)))
            .collect();
        let width = if *kind == Kind::Ours { 3 } else { 1 };
        chart
            .draw_series(LineSeries::new(xy.clone(), colour.stroke_width(width)))?
            .label(kind.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(width))
            });
        chart.draw_series(xy.iter().map(|&p| Circle::new(p, 2, colour.filled())))?;
        chart.draw_series(
            points
                .iter()
                .filter(|p| p.default && p.delay.is_finite() && p.delay <= max_delay * 1.05)
                .map(|p| {
                    Circle::new(
                        (p.delay, p.false_alarms.max(FLOOR)),
                        6,
                        colour.stroke_width(2),
                    )
                }),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

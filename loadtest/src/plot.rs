//! SVG line charts of the soak's samples and the curves' figures, drawn
//! with `plotters` (its SVG backend only: no fonts or bitmaps to build),
//! so BENCHMARKS.md shows the shape of a run, not just its end points.

use std::path::Path;

use plotters::prelude::*;

/// One line of a chart: its legend and its points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The colours of the lines, in turn.
const COLOURS: [RGBColor; 5] = [BLUE, RED, GREEN, MAGENTA, BLACK];

/// Draws `series` into the SVG file `path`: x along the bottom (on a
/// log scale when `log_x`, as the curves' services grow tenfold), y from
/// 0 up.
pub fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> anyhow::Result<()> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let finite = |v: &f64| v.is_finite();
    let (mut x0, mut x1) = points()
        .map(|p| p.0)
        .filter(finite)
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = points()
        .map(|p| p.1)
        .filter(finite)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let root = SVGBackend::new(path, (800, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let draw_err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("{}: {e}", path.display());
    if log_x {
        let x0 = x0.max(1.0);
        let mut chart = builder
            .build_cartesian_2d((x0..x1.max(x0 * 10.0)).log_scale(), 0.0..y1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(draw_err)?;
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), colour))
                .map_err(draw_err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                .map_err(draw_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
    } else {
        let mut chart = builder
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(draw_err)?;
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts, colour))
                .map_err(draw_err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// The least-squares slope of `points` (y per unit of x); 0 with fewer
/// than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_is_its_gradient_and_of_noise_about_zero() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 7.0)).collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64, if i % 2 == 0 { 100.0 } else { 101.0 }))
            .collect();
        assert!(slope(&flat).abs() < 0.2);
        assert_eq!(slope(&[(1.0, 1.0)]), 0.0);
    }

    #[test]
    fn a_chart_is_an_svg_file_with_its_title() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.svg");
        let s = Series {
            name: "rss".into(),
            points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN)],
        };
        chart(&path, "RSS", "minutes", "MB", &[s], false).expect("linear");
        let text = std::fs::read_to_string(&path).expect("svg");
        assert!(text.starts_with("<svg") && text.contains("RSS"), "{text}");
        let s = Series {
            name: "beats/s".into(),
            points: vec![(10_000.0, 5.0), (100_000.0, 4.0)],
        };
        chart(&path, "curve", "services", "/s", &[s], true).expect("log");
    }
}

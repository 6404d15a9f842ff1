//! Learning curves for people: `progress.png` from a run's `progress.csv` (mean return, approximate KL, clip
//! fraction and entropy against env steps).

use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The curves drawn, as (CSV column, panel title).
const PANELS: [(&str, &str); 4] = [
    ("mean_return", "mean return (moving window of episodes)"),
    ("approx_kl", "approximate KL"),
    ("clip_fraction", "clip fraction"),
    ("entropy", "entropy"),
];

/// Reads `run_dir/progress.csv` and writes `run_dir/progress.png`; returns the PNG's path.
pub fn plot_run(run_dir: &Path) -> Result<PathBuf> {
    let csv_path = run_dir.join("progress.csv");
    let text = std::fs::read_to_string(&csv_path).map_err(Error::io(&csv_path))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| Error::Internal(format!("{}: no column {name}", csv_path.display())))
    };
    let steps_col = column("env_steps")?;
    let cols = PANELS.iter().map(|(c, _)| column(c)).collect::<Result<Vec<_>>>()?;
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let series: Vec<Vec<(f64, f64)>> = cols
        .iter()
        .map(|&c| {
            rows.iter()
                .filter_map(|r| Some((r.get(steps_col)?.parse().ok()?, r.get(c)?.parse().ok()?)))
                .filter(|(x, y): &(f64, f64)| x.is_finite() && y.is_finite())
                .collect()
        })
        .collect();

    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| Error::Internal("cannot load the plot font".into()))?;
    let out = run_dir.join("progress.png");
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(&out, (1200, 800)).into_drawing_area();
        root.fill(&WHITE)?;
        let title = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let root = root.titled(&title, ("sans-serif", 24))?;
        for (area, (points, (_, name))) in root.split_evenly((2, 2)).iter().zip(series.iter().zip(PANELS)) {
            let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
            let (lo, hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.1), h.max(p.1)));
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
            let pad = ((hi - lo) * 0.05).max(1e-9);
            let mut chart = ChartBuilder::on(area)
                .caption(name, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(64)
                .build_cartesian_2d(0.0..x_max, (lo - pad)..(hi + pad))?;
            chart
                .configure_mesh()
                .x_desc("env steps")
                .x_label_formatter(&|x| format!("{:.0}k", x / 1000.0))
                .y_label_formatter(&|y| format!("{y:.3}"))
                .label_style(("sans-serif", 13))
                .draw()?;
            chart.draw_series(LineSeries::new(points.iter().copied(), BLUE.stroke_width(2)))?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| Error::Internal(format!("cannot draw {}: {e}", out.display())))?;
    Ok(out)
}

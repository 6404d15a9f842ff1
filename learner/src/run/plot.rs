//! Learning curves for people: `progress.png` from a run's `progress.csv`, six panels against env steps: mean
//! return with the spread of episode returns, the advantage distribution, entropy, approximate KL, clip fraction
//! and explained variance.
//!
//! Columns are read by header name; a column missing from an older run's CSV, or an empty cell (the returns before
//! the first episode ends), leaves that curve or band out rather than failing.

use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Size of `progress.png` in pixels (width, height).
pub const IMAGE_SIZE: (u32, u32) = (1500, 900);

/// Most ticks on the env-steps axis and on a value axis.
const X_TICKS: usize = 7;
const Y_TICKS: usize = 6;

const FONT: &str = "sans-serif";
const RETURN_LINE: RGBColor = RGBColor(31, 119, 180);
/// Mean return ± the std of the returns (opaque, so a pixel of it is exactly this colour).
const RETURN_BAND: RGBColor = RGBColor(187, 212, 236);
/// Advantages: p05–p95, p25–p75 and the median.
const ADV_OUTER: RGBColor = RGBColor(253, 222, 186);
const ADV_INNER: RGBColor = RGBColor(246, 172, 98);
const ADV_MEDIAN: RGBColor = RGBColor(166, 54, 3);
const ENTROPY_LINE: RGBColor = RGBColor(44, 160, 44);
const KL_LINE: RGBColor = RGBColor(148, 103, 189);
const CLIP_LINE: RGBColor = RGBColor(214, 39, 40);
const EV_LINE: RGBColor = RGBColor(140, 86, 75);
const GRID: RGBColor = RGBColor(228, 228, 228);

/// Reads `run_dir/progress.csv` and writes `run_dir/progress.png` ([`IMAGE_SIZE`] pixels); returns the PNG's path.
///
/// Fails when the CSV cannot be read, has no `env_steps` column, or the PNG cannot be written; any other column may
/// be missing (its panel then says "no data").
pub fn plot_run(run_dir: &Path) -> Result<PathBuf> {
    let csv_path = run_dir.join("progress.csv");
    let text = std::fs::read_to_string(&csv_path).map_err(Error::io(&csv_path))?;
    let table = Table::parse(&text);
    if table.column("env_steps").is_none() {
        return Err(Error::Internal(format!("{}: no column env_steps", csv_path.display())));
    }
    let name = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let title = table.summary().map_or(name.clone(), |s| format!("{name}  ·  {s}"));
    let out = run_dir.join("progress.png");
    register_font()?;
    let drawn = draw(&BitMapBackend::new(&out, IMAGE_SIZE).into_drawing_area(), &title, &table);
    drawn.map_err(|e| Error::Internal(format!("cannot draw {}: {e}", out.display())))?;
    Ok(out)
}

/// Makes the bundled DejaVu Sans the plots' sans-serif font.
fn register_font() -> Result<()> {
    plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| Error::Internal("cannot load the plot font".into()))
}

/// `progress.csv` by column name: each cell a number, `None` where empty or not a finite number.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<Option<f64>>>,
}

impl Table {
    fn parse(text: &str) -> Self {
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let header = lines.next().unwrap_or_default().split(',').map(|h| h.trim().to_string()).collect();
        let rows = lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split(',').map(|c| c.trim().parse::<f64>().ok().filter(|v| v.is_finite())).collect())
            .collect();
        Self { header, rows }
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// (env steps, the `names` columns) of each row where all of them are numbers; empty when a column is missing.
    fn points<const N: usize>(&self, names: [&str; N]) -> Vec<(f64, [f64; N])> {
        let cols: Option<Vec<usize>> = names.iter().map(|n| self.column(n)).collect();
        let (Some(x), Some(cols)) = (self.column("env_steps"), cols) else { return Vec::new() };
        self.rows
            .iter()
            .filter_map(|r| {
                let mut values = [0.0; N];
                for (v, &c) in values.iter_mut().zip(&cols) {
                    *v = (*r.get(c)?)?;
                }
                Some(((*r.get(x)?)?, values))
            })
            .collect()
    }

    /// The last row's env steps, episodes and mean return, for the title ("60160 env steps, 252 episodes, mean
    /// return 401.1"); `None` before the first update.
    fn summary(&self) -> Option<String> {
        let x = self.column("env_steps")?;
        let row = self.rows.iter().rev().find(|r| r.get(x).copied().flatten().is_some())?;
        let cell = |name: &str| self.column(name).and_then(|c| *row.get(c)?);
        let steps = cell("env_steps")?;
        let mut parts = vec![format!("{steps:.0} env steps")];
        if let Some(episodes) = cell("episodes") {
            parts.push(format!("{episodes:.0} episodes"));
        }
        if let Some(ret) = cell("mean_return") {
            parts.push(format!("mean return {ret:.1}"));
        }
        Some(parts.join(", "))
    }

    /// The largest env-steps value (at least 1, so an axis always has a range).
    fn max_steps(&self) -> f64 {
        self.points::<0>([]).iter().map(|p| p.0).fold(1.0, f64::max)
    }
}

/// A shaded band at one update: (env steps, low, high).
type BandPoint = (f64, f64, f64);

/// One panel: shaded bands (drawn first, outer first) and a line on top.
struct Panel {
    title: String,
    /// Each band's (env steps, low, high) points and fill colour.
    bands: Vec<(Vec<BandPoint>, RGBColor)>,
    line: Vec<(f64, f64)>,
    colour: RGBColor,
    /// Limits the value axis never goes beyond (explained variance: values below -1 only squash the useful part).
    clamp: (f64, f64),
}

impl Panel {
    fn line(table: &Table, column: &str, title: &str, colour: RGBColor) -> Self {
        let line = table.points([column]).into_iter().map(|(x, [y])| (x, y)).collect();
        Self { title: title.into(), bands: Vec::new(), line, colour, clamp: (f64::NEG_INFINITY, f64::INFINITY) }
    }

    /// (env steps, low, high) where both columns have numbers.
    fn band(table: &Table, low: &str, high: &str) -> Vec<BandPoint> {
        table.points([low, high]).into_iter().map(|(x, [l, h])| (x, l, h)).collect()
    }

    /// The six panels of `progress.png`, row by row.
    fn all(table: &Table) -> Vec<Self> {
        let mut ret = Self::line(table, "mean_return", "mean return (moving window of episodes)", RETURN_LINE);
        let spread: Vec<_> =
            table.points(["mean_return", "return_std"]).into_iter().map(|(x, [m, s])| (x, m - s, m + s)).collect();
        if !spread.is_empty() {
            ret.title = "mean return ± std of episode returns".into();
            ret.bands.push((spread, RETURN_BAND));
        }
        let mut adv = Self::line(table, "adv_p50", "advantages: median, p25–p75, p05–p95", ADV_MEDIAN);
        adv.bands.push((Self::band(table, "adv_p05", "adv_p95"), ADV_OUTER));
        adv.bands.push((Self::band(table, "adv_p25", "adv_p75"), ADV_INNER));
        let mut ev = Self::line(table, "explained_variance", "explained variance (value function)", EV_LINE);
        ev.clamp = (-1.0, 1.0);
        if ev.line.iter().any(|p| p.1 < ev.clamp.0) {
            ev.title = "explained variance (below -1 drawn at -1)".into();
        }
        vec![
            ret,
            adv,
            Self::line(table, "entropy", "policy entropy", ENTROPY_LINE),
            Self::line(table, "approx_kl", "approximate KL", KL_LINE),
            Self::line(table, "clip_fraction", "clip fraction", CLIP_LINE),
            ev,
        ]
    }

    /// The value axis' range: the data's, padded, within [`Panel::clamp`]; never below 0 for data that never is.
    /// `None` without data.
    fn y_range(&self) -> Option<(f64, f64)> {
        let values =
            self.line.iter().map(|p| p.1).chain(self.bands.iter().flat_map(|b| b.0.iter().flat_map(|p| [p.1, p.2])));
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
        if lo > hi {
            return None;
        }
        let (lo, hi) = (lo.clamp(self.clamp.0, self.clamp.1), hi.clamp(self.clamp.0, self.clamp.1));
        let span = hi - lo;
        let pad = if span > 1e-12 * lo.abs().max(hi.abs()) { span * 0.06 } else { (hi.abs() * 0.1).max(0.1) };
        let low = if lo >= 0.0 { (lo - pad).max(0.0) } else { lo - pad };
        Some((low, hi + pad))
    }
}

/// Draws the title and the six panels of `table` on `root`.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    table: &Table,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 26))?;
    let x_max = table.max_steps();
    let x_ticks = Ticks::new(0.0, x_max, X_TICKS);
    let panels = Panel::all(table);
    let areas = root.split_evenly((2, 3));
    for (i, (area, panel)) in areas.iter().zip(&panels).enumerate() {
        let bottom_row = i >= 3;
        let range = panel.y_range();
        let (y_lo, y_hi) = range.unwrap_or((0.0, 1.0));
        let y_ticks = Ticks::new(y_lo, y_hi, Y_TICKS);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, (FONT, 18))
            .margin(10)
            .margin_right(24)
            .x_label_area_size(if bottom_row { 46 } else { 28 })
            .y_label_area_size(58)
            .build_cartesian_2d(Axis::new(0.0, x_max, &x_ticks), Axis::new(y_lo, y_hi, &y_ticks))?;
        let x_label = |v: &f64| x_ticks.label(*v);
        let y_label = |v: &f64| y_ticks.label(*v);
        let mut mesh = chart.configure_mesh();
        mesh.x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .bold_line_style(GRID.stroke_width(1))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15));
        if bottom_row {
            mesh.x_desc("env steps");
        }
        mesh.draw()?;
        let clamp = |y: f64| y.clamp(y_lo, y_hi);
        for (band, colour) in &panel.bands {
            if band.len() < 2 {
                continue;
            }
            let upper = band.iter().map(|&(x, _, h)| (x, clamp(h)));
            let lower = band.iter().rev().map(|&(x, l, _)| (x, clamp(l)));
            chart
                .draw_series(std::iter::once(Polygon::new(upper.chain(lower).collect::<Vec<_>>(), colour.filled())))?;
        }
        // Segment by segment: plotters fills a wide path as one polygon, which turns hollow at sharp spikes.
        let line: Vec<(f64, f64)> = panel.line.iter().map(|&(x, y)| (x, clamp(y))).collect();
        let style = panel.colour.stroke_width(2);
        chart.draw_series(line.windows(2).map(|w| PathElement::new(w.to_vec(), style)))?;
        if panel.line.len() == 1 {
            chart.draw_series(panel.line.iter().map(|&(x, y)| Circle::new((x, clamp(y)), 3, panel.colour.filled())))?;
        }
        if range.is_none() {
            let (w, h) = area.dim_in_pixel();
            let style = TextStyle::from((FONT, 18).into_font()).color(&RGBColor(120, 120, 120));
            area.draw(&Text::new("no data", (w as i32 / 2 - 30, h as i32 / 2), style))?;
        }
    }
    root.present()
}

/// A plotters axis from `lo` to `hi` with the grid lines and labels at [`Ticks`] (plotters' own f64 axis has no
/// custom ticks together with a label formatter).
struct Axis {
    coord: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Axis {
    fn new(lo: f64, hi: f64, ticks: &Ticks) -> Self {
        Self { coord: (lo..hi).into(), ticks: ticks.values.clone() }
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.coord.map(value, limit)
    }

    /// The ticks for the labelled grid lines; no light lines in between.
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.coord.range()
    }
}

/// Axis ticks at a round spacing (1, 2 or 5 times a power of ten) and their labels, with exactly the decimals the
/// spacing needs: `450` rather than `450.000`, `0.012` for small values, `-1200` for negative ones, `20k` and `1.5M`
/// for large ones, `2e-6` for tiny ones.
#[derive(Debug)]
struct Ticks {
    /// The tick positions, ascending, all within the axis' range.
    values: Vec<f64>,
    /// What a label's number is divided by, its suffix, and its decimals.
    unit: f64,
    suffix: String,
    decimals: usize,
}

impl Ticks {
    /// At most `max_ticks` (at least 2) ticks in `lo..=hi`.
    fn new(lo: f64, hi: f64, max_ticks: usize) -> Self {
        let max_ticks = max_ticks.max(2);
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let span = hi - lo;
        let magnitude = if span > 0.0 && span.is_finite() { span / max_ticks as f64 } else { lo.abs().max(1e-300) };
        let count = |step: f64| (hi / step + 1e-9).floor() - (lo / step - 1e-9).ceil() + 1.0;
        // The first of 1, 2, 5 × 10^k (k from the range's magnitude up) whose ticks fit.
        let mut step = f64::INFINITY;
        let k0 = magnitude.log10().floor() as i32;
        'search: for k in k0..k0 + 4 {
            for m in [1.0, 2.0, 5.0] {
                // m / 10^-k rather than m × 10^k: exact for the negative powers.
                let s = if k < 0 { m / 10f64.powi(-k) } else { m * 10f64.powi(k) };
                if count(s) <= max_ticks as f64 {
                    step = s;
                    break 'search;
                }
            }
        }
        if !step.is_finite() {
            step = span.max(magnitude);
        }
        let first = (lo / step - 1e-9).ceil() as i64;
        let last = (hi / step + 1e-9).floor() as i64;
        let values: Vec<f64> = (first..=last).map(|i| if i == 0 { 0.0 } else { i as f64 * step }).collect();

        let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let (unit, suffix) = if largest >= 1e9 {
            (1e9, "G".to_string())
        } else if largest >= 1e6 {
            (1e6, "M".to_string())
        } else if largest >= 1e4 {
            (1e3, "k".to_string())
        } else if largest > 0.0 && largest < 1e-4 {
            let exponent = largest.log10().floor() as i32;
            (10f64.powi(exponent), format!("e{exponent}"))
        } else {
            (1.0, String::new())
        };
        let decimals = decimals_for(step / unit);
        Self { values, unit, suffix, decimals }
    }

    /// The label of the tick at `value`.
    fn label(&self, value: f64) -> String {
        let scaled = value / self.unit;
        let text = format!("{scaled:.*}", self.decimals);
        if text.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
            return "0".into();
        }
        format!("{text}{}", self.suffix)
    }
}

/// The fewest decimals that tell apart numbers `step` apart (0 for steps of 1 and more).
fn decimals_for(step: f64) -> usize {
    (0..=15)
        .find(|&d| {
            let scaled = step * 10f64.powi(d as i32);
            scaled >= 1.0 - 1e-9 && (scaled - scaled.round()).abs() < 1e-6 * scaled
        })
        .unwrap_or(15)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn labels(lo: f64, hi: f64, max_ticks: usize) -> Vec<String> {
        let t = Ticks::new(lo, hi, max_ticks);
        t.values.iter().map(|&v| t.label(v)).collect()
    }

    #[test]
    fn tick_labels_have_the_decimals_the_spacing_needs() {
        // Returns: whole numbers, no trailing zeros.
        assert_eq!(labels(0.0, 500.0, 6), ["0", "100", "200", "300", "400", "500"]);
        assert_eq!(labels(9.3, 487.0, 6), ["100", "200", "300", "400"]);
        assert_eq!(labels(440.0, 460.0, 6), ["440", "445", "450", "455", "460"]);
        // Negative returns (Acrobot, Pendulum).
        assert_eq!(labels(-500.0, -60.0, 6), ["-500", "-400", "-300", "-200", "-100"]);
        assert_eq!(labels(-1600.0, -150.0, 6), ["-1500", "-1000", "-500"]);
        assert_eq!(labels(-1.3, 1.0, 6), ["-1.0", "-0.5", "0", "0.5", "1.0"]);
        // Small values: as many decimals as the spacing, no more.
        assert_eq!(labels(0.0, 0.025, 6), ["0", "0.005", "0.010", "0.015", "0.020", "0.025"]);
        assert_eq!(labels(0.0031, 0.0132, 6), ["0.004", "0.006", "0.008", "0.010", "0.012"]);
        assert_eq!(labels(0.55, 0.69, 6), ["0.55", "0.60", "0.65"]);
        // Tiny values: scientific.
        assert_eq!(labels(0.0, 3.2e-6, 6), ["0", "1e-6", "2e-6", "3e-6"]);
        assert_eq!(labels(0.0, 2.2e-6, 6), ["0", "0.5e-6", "1.0e-6", "1.5e-6", "2.0e-6"]);
        // Env steps: k and M.
        assert_eq!(labels(0.0, 60_000.0, 7), ["0", "10k", "20k", "30k", "40k", "50k", "60k"]);
        assert_eq!(labels(0.0, 3_000_000.0, 7), ["0", "0.5M", "1.0M", "1.5M", "2.0M", "2.5M", "3.0M"]);
        assert_eq!(labels(0.0, 1500.0, 7), ["0", "500", "1000", "1500"]);
        assert_eq!(labels(10_000.0, 12_000.0, 5), ["10.0k", "10.5k", "11.0k", "11.5k", "12.0k"]);
        // A degenerate range still gets a tick.
        assert_eq!(labels(2.0, 2.0, 6), ["2"]);
    }

    #[test]
    fn ticks_stay_within_the_range_and_the_limit() {
        for (lo, hi) in
            [(0.0, 1.0), (-1234.5, 17.0), (0.00013, 0.0071), (3.0, 1e7), (-2.0e-7, 5.0e-7), (1e5, 1e5 + 3.0)]
        {
            for max in 2..10 {
                let t = Ticks::new(lo, hi, max);
                assert!(!t.values.is_empty() && t.values.len() <= max, "{lo}..{hi} max {max}: {:?}", t.values);
                assert!(t.values.iter().all(|v| *v >= lo - 1e-9 * hi.abs() && *v <= hi + 1e-9 * hi.abs()));
                let labels: Vec<_> = t.values.iter().map(|&v| t.label(v)).collect();
                let mut unique = labels.clone();
                unique.dedup();
                assert_eq!(unique, labels, "{lo}..{hi} max {max}: labels repeat");
            }
        }
    }

    /// A synthetic `progress.csv` of `rows` updates; the first two have no returns yet.
    fn synthetic_csv(rows: usize, with_return_std: bool) -> String {
        let mut columns = crate::run::progress::COLUMNS.to_vec();
        if !with_return_std {
            columns.retain(|c| *c != "return_std");
        }
        let mut text = columns.join(",") + "\n";
        for i in 0..rows {
            let t = i as f64 / rows as f64;
            let row: Vec<String> = columns
                .iter()
                .map(|c| match *c {
                    "env_steps" => format!("{}", (i + 1) * 2048),
                    "mean_return" | "return_std" if i < 2 => String::new(),
                    "mean_return" => format!("{}", -500.0 + 480.0 * t),
                    "return_std" => "60".into(),
                    "approx_kl" => format!("{}", 0.01 + 0.005 * (i as f64).sin()),
                    "clip_fraction" => format!("{}", 0.2 - 0.1 * t),
                    "entropy" => format!("{}", 1.1 - 0.8 * t),
                    "explained_variance" => format!("{}", -3.0 + 3.9 * t),
                    "adv_p05" => "-2.5".into(),
                    "adv_p25" => "-0.8".into(),
                    "adv_p50" => "0.1".into(),
                    "adv_p75" => "0.9".into(),
                    "adv_p95" => "2.4".into(),
                    _ => "1".into(),
                })
                .collect();
            text += &(row.join(",") + "\n");
        }
        text
    }

    /// Renders `csv` into an RGB buffer of [`IMAGE_SIZE`].
    fn render(csv: &str) -> Vec<u8> {
        register_font().unwrap();
        let (w, h) = IMAGE_SIZE;
        let mut buf = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, IMAGE_SIZE).into_drawing_area();
            draw(&root, "test", &Table::parse(csv)).unwrap();
        }
        buf
    }

    /// Pixels of exactly `colour` in the panel at `(row, col)` of the 2×3 grid.
    fn count(buf: &[u8], colour: RGBColor, (row, col): (u32, u32)) -> usize {
        let (w, h) = IMAGE_SIZE;
        let (pw, ph) = (w / 3, h / 2);
        (row * ph..(row + 1) * ph)
            .flat_map(|y| (col * pw..(col + 1) * pw).map(move |x| ((y * w + x) * 3) as usize))
            .filter(|&i| buf[i..i + 3] == [colour.0, colour.1, colour.2])
            .count()
    }

    #[test]
    fn bands_are_shaded_where_there_is_data_for_them() {
        let buf = render(&synthetic_csv(40, true));
        assert!(count(&buf, RETURN_BAND, (0, 0)) > 10_000, "the return band is drawn");
        assert!(count(&buf, ADV_OUTER, (0, 1)) > 5_000, "the p05–p95 band is drawn");
        assert!(count(&buf, ADV_INNER, (0, 1)) > 5_000, "the p25–p75 band is drawn");
        assert!(count(&buf, RETURN_LINE, (0, 0)) > 200, "the mean return line is drawn");

        let buf = render(&synthetic_csv(40, false));
        assert_eq!(count(&buf, RETURN_BAND, (0, 0)), 0, "no band without return_std");
        assert!(count(&buf, RETURN_LINE, (0, 0)) > 200, "the mean return line is still drawn");
    }

    #[test]
    fn missing_columns_and_empty_runs_still_draw() {
        render("env_steps,mean_return\n");
        render("env_steps,entropy\n256,0.69\n");
        render("env_steps,mean_return,return_std\n256,,\n512,,\n");
    }

    /// (width, height) from a PNG's IHDR chunk, after checking the signature.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    #[test]
    fn plot_run_writes_a_png_of_the_expected_size() {
        for with_return_std in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let run_dir = dir.path().join("demo");
            std::fs::create_dir(&run_dir).unwrap();
            std::fs::write(run_dir.join("progress.csv"), synthetic_csv(50, with_return_std)).unwrap();
            let png = plot_run(&run_dir).unwrap();
            assert_eq!(png, run_dir.join("progress.png"));
            assert_eq!(png_size(&std::fs::read(&png).unwrap()), IMAGE_SIZE);
        }
    }

    #[test]
    fn plot_run_needs_env_steps() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("progress.csv"), "mean_return\n1\n").unwrap();
        assert!(plot_run(dir.path()).is_err());
        assert!(plot_run(&dir.path().join("missing")).is_err());
    }
}

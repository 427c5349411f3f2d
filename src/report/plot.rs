//! `report --plot FILE.svg|.png`: each config's mean hashrate against its mean power, the
//! Pareto front as a line, the recommended configs marked and named. Drawn with plotters; the
//! labels use a small subset of DejaVu Sans kept in `assets/fonts` (a host may have no fonts).

use super::{Pick, Report};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

static FONT: &[u8] = include_bytes!("../../assets/fonts/dejavu-sans-subset.ttf");

const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is part of the binary; it parses.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Draws the reports into `path`; SVG or PNG by its extension.
pub fn draw(reports: &[Report], path: &Path) -> anyhow::Result<()> {
    register_font();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let size = (960, 640);
    let drawn = match ext.as_deref() {
        Some("svg") => chart(SVGBackend::new(path, size).into_drawing_area(), reports)
            .map_err(|e| e.to_string()),
        Some("png") => chart(BitMapBackend::new(path, size).into_drawing_area(), reports)
            .map_err(|e| e.to_string()),
        _ => anyhow::bail!(
            "--plot {}: the file name must end in .svg or .png",
            path.display()
        ),
    };
    drawn.map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

fn label(p: &Pick) -> String {
    super::config_label(p.frequency_mhz, p.core_voltage_mv)
}

fn chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    reports: &[Report],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let points: Vec<(f64, f64)> = reports
        .iter()
        .flat_map(|r| &r.configs)
        .filter_map(|c| Some((c.power.mean?, c.hashrate.mean?)))
        .collect();
    let span = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = points
            .iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        if points.is_empty() {
            (0.0, 1.0)
        } else {
            let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.02).max(0.5);
            ((lo - pad).max(0.0), hi + pad)
        }
    };
    let (x0, x1) = span(|p| p.0);
    let (y0, y1) = span(|p| p.1);
    let names: Vec<&str> = reports.iter().map(|r| r.miner.as_str()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Hashrate against power per clock config: {}",
                names.join(", ")
            ),
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc("mean power (W)")
        .y_desc("mean hashrate (GH/s)")
        .x_label_formatter(&|x| format!("{x:.1}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, r) in reports.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mine: Vec<(f64, f64, bool)> = r
            .configs
            .iter()
            .filter_map(|c| Some((c.power.mean?, c.hashrate.mean?, c.pareto)))
            .collect();
        let mut front: Vec<(f64, f64)> = mine.iter().filter(|p| p.2).map(|p| (p.0, p.1)).collect();
        front.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(front, color.stroke_width(2)))?
            .label(format!("{}: Pareto front", r.miner))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(mine.iter().map(|p| {
            Circle::new(
                (p.0, p.1),
                4,
                color.mix(if p.2 { 1.0 } else { 0.45 }).filled(),
            )
        }))?;
        // One label per recommended config, naming every role it has; on the left of the
        // point in the right half of the chart, so it stays inside.
        let rec = &r.recommendations;
        let mut marks: Vec<(&Pick, Vec<&str>)> = Vec::new();
        for (pick, what) in [
            (&rec.best_efficiency, "best efficiency"),
            (&rec.best_hashrate, "best hashrate"),
            (&rec.balanced, "balanced"),
        ] {
            let Some(p) = pick else { continue };
            match marks.iter_mut().find(|(q, _)| label(q) == label(p)) {
                Some((_, roles)) => roles.push(what),
                None => marks.push((p, vec![what])),
            }
        }
        for (p, roles) in marks {
            let prefix = if reports.len() > 1 {
                format!("{}: ", r.miner)
            } else {
                String::new()
            };
            let text = format!("{prefix}{}: {}", roles.join(", "), label(p));
            let right_half = p.power > (x0 + x1) / 2.0;
            let (dx, h) = if right_half {
                (-12, HPos::Right)
            } else {
                (12, HPos::Left)
            };
            let dy = -14 - 16 * i as i32;
            let font = ("sans-serif", 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(h, VPos::Bottom));
            chart.draw_series(std::iter::once(
                EmptyElement::at((p.power, p.hashrate))
                    + Circle::new((0, 0), 8, BLACK.stroke_width(2))
                    + Text::new(text, (dx, dy), font),
            ))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()
}

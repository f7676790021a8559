//! PNG charts (plotters): added latency percentiles against request rate, CPU per
//! request, and memory. Text needs a TrueType font: DejaVu Sans from the system
//! (Debian's `fonts-dejavu-core`) or the file named by `REMORA_BENCH_FONT`.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::{Results, Scenario};
use crate::targets::Target;

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

const REMORA: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const ENVOY: RGBColor = RGBColor(0xd6, 0x27, 0x28);

fn color(t: Target) -> RGBColor {
    match t {
        Target::Envoy => ENVOY,
        _ => REMORA,
    }
}

/// Registers the chart font once; an error says which font is missing.
pub fn font() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let path = std::env::var("REMORA_BENCH_FONT")
            .ok()
            .map(PathBuf::from)
            .or_else(|| FONT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()))
            .ok_or("no TrueType font for the charts: install fonts-dejavu-core or set REMORA_BENCH_FONT")?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{}: not a usable font", path.display()))
    })
    .clone()
}

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("chart: {e:?}")
}

/// Writes `latency.png`, `cpu.png` and `memory.png` into `dir`; returns their paths.
pub fn write_all(r: &Results, dir: &Path) -> Result<Vec<PathBuf>, String> {
    font()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let out = vec![
        dir.join("latency.png"),
        dir.join("cpu.png"),
        dir.join("memory.png"),
    ];
    latency(r, &out[0])?;
    cpu(r, &out[1])?;
    memory(r, &out[2])?;
    Ok(out)
}

/// One line: a target's percentile (`p50`, `p99`, `p99.9`) as (offered rate, added µs).
type Series = (Target, &'static str, Vec<(f64, f64)>);

/// One panel per connection count: added p50/p99/p99.9 against the offered rate.
fn latency(r: &Results, path: &Path) -> Result<(), String> {
    let s = Scenario::Latency;
    let points = r.points(s);
    let mut conns: Vec<f64> = Vec::new();
    for p in &points {
        if let Some(c) = r
            .samples(s, p, Target::Remora)
            .find_map(|x| x.get("connections"))
        {
            if !conns.contains(&c) {
                conns.push(c);
            }
        }
    }
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, conns.len().max(1)));
    for (area, c) in panels.iter().zip(&conns) {
        let mut series: Vec<Series> = Vec::new();
        for t in [Target::Remora, Target::Envoy] {
            for (metric, label) in [("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9")] {
                let mut pts: Vec<(f64, f64)> = points
                    .iter()
                    .filter(|p| r.samples(s, p, t).any(|x| x.get("connections") == Some(*c)))
                    .filter_map(|p| {
                        let rate = r.stat(s, p, t, "target_rps")?.median;
                        let add = r.added(s, p, t, metric)?;
                        Some((rate, add.max(1.0)))
                    })
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                series.push((t, label, pts));
            }
        }
        let xmax = series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        let ymax = series
            .iter()
            .flat_map(|s| s.2.iter().map(|p| p.1))
            .fold(10.0, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("Added latency, HTTP/1.1, {c} connections"),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax * 1.05, (1f64..ymax * 2.0).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("offered rate (requests/s)")
            .y_desc("added latency (µs, log)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(err)?;
        for (t, label, pts) in series {
            let width = match label {
                "p50" => 1,
                "p99" => 3,
                _ => 2,
            };
            let style = ShapeStyle::from(&color(t)).stroke_width(width);
            let dashed = label == "p99.9";
            let name = if dashed {
                format!("{} {label} (dashed)", t.name())
            } else {
                format!("{} {label}", t.name())
            };
            let anno = if dashed {
                chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
            } else {
                chart.draw_series(LineSeries::new(pts.clone(), style))
            }
            .map_err(err)?;
            anno.label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            chart
                .draw_series(
                    pts.iter()
                        .map(|&p| Circle::new(p, width as i32 + 2, color(t).filled())),
                )
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Grouped bars, Remora beside Envoy, one group per label.
fn bars(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    groups: &[(String, [Option<f64>; 2])],
) -> Result<(), String> {
    let ymax = groups
        .iter()
        .flat_map(|g| g.1.iter().flatten().copied())
        .fold(1e-9, f64::max);
    let n = groups.len().max(1);
    let names: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..ymax * 1.2)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (k, t) in [Target::Remora, Target::Envoy].into_iter().enumerate() {
        let bars: Vec<(f64, f64)> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| Some((i as f64, g.1[k]?)))
            .collect();
        let x0 = |i: f64| i - 0.35 + k as f64 * 0.35;
        chart
            .draw_series(bars.iter().map(|&(i, v)| {
                Rectangle::new([(x0(i), 0.0), (x0(i) + 0.33, v)], color(t).filled())
            }))
            .map_err(err)?
            .label(t.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color(t).filled()));
        chart
            .draw_series(bars.iter().map(|&(i, v)| {
                Text::new(
                    if v >= 100.0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.1}")
                    },
                    (x0(i) + 0.06, v + ymax * 0.06),
                    ("sans-serif", 14),
                )
            }))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)
}

fn pair(r: &Results, s: Scenario, p: &str, metric: &str, scale: f64) -> [Option<f64>; 2] {
    [Target::Remora, Target::Envoy].map(|t| r.stat(s, p, t, metric).map(|x| x.median * scale))
}

fn cpu(r: &Results, path: &Path) -> Result<(), String> {
    let mut groups = Vec::new();
    for s in [Scenario::Peak, Scenario::Grpc] {
        for p in r.points(s) {
            let name = p.split(' ').next().unwrap_or_default().to_string();
            groups.push((name, pair(r, s, &p, "cpu_us_per_req", 1.0)));
        }
    }
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    bars(
        &root,
        "CPU per request at peak load (lower is better)",
        "CPU µs per request",
        &groups,
    )?;
    root.present().map_err(err)
}

fn memory(r: &Results, path: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    let idle = vec![(
        "idle".to_string(),
        pair(r, Scenario::Startup, "cold start", "idle_rss_mib", 1.0),
    )];
    bars(&panels[0], "Idle RSS", "MiB", &idle)?;
    let per: Vec<(String, [Option<f64>; 2])> = r
        .points(Scenario::Connections)
        .iter()
        .map(|p| {
            (
                "per idle connection".to_string(),
                pair(
                    r,
                    Scenario::Connections,
                    p,
                    "bytes_per_connection",
                    1.0 / 1024.0,
                ),
            )
        })
        .collect();
    bars(&panels[1], "Memory per idle connection", "KiB", &per)?;
    root.present().map_err(err)
}

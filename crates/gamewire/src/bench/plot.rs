//! SVG plots of a bench (plotters, SVG backend): latency CDF, CPU per million frames, peak RSS.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::ServerResult;

/// The colour of a server, the same in every plot.
fn color(name: &str, index: usize) -> RGBColor {
    match name {
        "gamewire" | "gamewire-uring" => RGBColor(0x1b, 0x9e, 0x77),
        "gamewire-mio" => RGBColor(0x75, 0x70, 0xb3),
        "tokio" => RGBColor(0x3a, 0x6f, 0xc4),
        "blocking" => RGBColor(0xd9, 0x5f, 0x02),
        _ => {
            let (r, g, b) = Palette99::COLORS[index % Palette99::COLORS.len()];
            RGBColor(r, g, b)
        }
    }
}

fn err(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plotting failed: {error}")
}

/// One line per server: x = latency (ms, log scale), y = fraction of samples at or below it.
pub(crate) fn latency_cdf(path: &Path, servers: &[ServerResult], what: &str) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let points = |s: &ServerResult| -> Vec<(f64, f64)> {
        s.latency_cdf.iter().map(|&(us, q)| ((us.max(1) as f64) / 1e3, q)).collect()
    };
    let all: Vec<f64> = servers.iter().flat_map(|s| points(s).into_iter().map(|p| p.0)).collect();
    let low = all.iter().copied().fold(f64::INFINITY, f64::min);
    let high = all.iter().copied().fold(0.0, f64::max);
    let (low, high) = if low.is_finite() && high > 0.0 { (low / 1.5, high * 1.5) } else { (0.01, 100.0) };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{what} latency CDF"), ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d((low..high).log_scale(), 0.0f64..1.0f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("fraction of samples ≤ x")
        .x_label_formatter(&|v| format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_string())
        .draw()
        .map_err(err)?;
    for (index, server) in servers.iter().enumerate() {
        let c = color(&server.name, index);
        chart
            .draw_series(LineSeries::new(points(server), c.stroke_width(2)))
            .map_err(err)?
            .label(server.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// A bar's value, three significant digits or so.
fn short(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// One bar per server.
pub(crate) fn bars(
    path: &Path,
    title: &str,
    unit: &str,
    bars: &[(String, Option<f64>)],
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (700, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let top = bars.iter().filter_map(|b| b.1).fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.2 } else { 1.0 };
    let count = bars.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5..count as f64 - 0.5, 0.0..top)
        .map_err(err)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(count)
        .x_label_formatter(&|v| {
            // Bars stand at 0, 1, 2...: name the whole ticks, leave any other tick blank.
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(unit)
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, (name, value))| {
            let (x, value) = (i as f64, (*value)?);
            Some(Rectangle::new([(x - 0.3, 0.0), (x + 0.3, value)], color(name, i).filled()))
        }))
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
            let label = value.map_or_else(|| "n/a".to_string(), short);
            let y = value.unwrap_or(0.0) + top * 0.01;
            let style =
                ("sans-serif", 16).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
            Text::new(label, (i as f64, y), style)
        }))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Writes the three plots into `dir`.
pub(crate) fn all(dir: &Path, servers: &[ServerResult], echo: bool) -> anyhow::Result<()> {
    latency_cdf(
        &dir.join("latency_cdf.svg"),
        servers,
        if echo { "Echo round-trip" } else { "MOVE delivery" },
    )?;
    let per_frame: Vec<(String, Option<f64>)> =
        servers.iter().map(|s| (s.name.clone(), s.cpu_us_per_frame)).collect();
    let unit = if echo { "CPU seconds per million round trips" } else { "CPU seconds per million frames" };
    bars(
        &dir.join("cpu_per_million_frames.svg"),
        "Server CPU per million delivered frames",
        unit,
        &per_frame,
    )?;
    let rss: Vec<(String, Option<f64>)> =
        servers.iter().map(|s| (s.name.clone(), Some(s.peak_rss_bytes as f64 / (1 << 20) as f64))).collect();
    bars(&dir.join("rss.svg"), "Server peak RSS (VmHWM)", "MiB", &rss)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_svg_files() {
        let dir = std::env::temp_dir().join(format!("gamewire-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = |name: &str, scale: u64| ServerResult {
            name: name.into(),
            cpu_us_per_frame: Some(scale as f64 * 0.7),
            peak_rss_bytes: scale * (3 << 20),
            latency_cdf: vec![
                (100 * scale, 0.0),
                (300 * scale, 0.5),
                (900 * scale, 0.99),
                (2000 * scale, 1.0),
            ],
            ..Default::default()
        };
        let servers = [server("gamewire", 1), server("tokio", 2), server("blocking", 5)];
        all(&dir, &servers, false).unwrap();
        for file in ["latency_cdf.svg", "cpu_per_million_frames.svg", "rss.svg"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            assert!(text.starts_with("<svg") && text.contains("tokio"), "{file}");
        }
        // No data at all still draws (empty plots).
        let empty = [ServerResult { name: "gamewire".into(), ..Default::default() }];
        all(&dir, &empty, true).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

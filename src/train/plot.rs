//! `loss.svg`: train and eval loss per phase, drawn with plotters.

use crate::train::metrics::MetricLine;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

pub fn loss_svg(metrics: &[MetricLine], path: &Path) -> Result<()> {
    if metrics.is_empty() {
        return Ok(());
    }
    let max_step = metrics
        .iter()
        .map(|m| m.global_step)
        .max()
        .unwrap_or(1)
        .max(1);
    let max_loss = metrics
        .iter()
        .map(|m| m.loss)
        .filter(|l| l.is_finite())
        .fold(0.0f64, f64::max)
        .max(0.1);
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("badge training loss", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0u64..max_step, 0.0..max_loss * 1.05)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let mut phases: Vec<&str> = Vec::new();
    for m in metrics {
        if !phases.contains(&m.phase.as_str()) {
            phases.push(&m.phase);
        }
    }
    for (i, phase) in phases.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let train: Vec<(u64, f64)> = metrics
            .iter()
            .filter(|m| &m.phase == phase)
            .map(|m| (m.global_step, m.loss))
            .collect();
        chart
            .draw_series(LineSeries::new(train, color.stroke_width(1)))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{phase} train"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    let mut datasets: Vec<&String> = metrics.iter().flat_map(|m| m.eval.keys()).collect();
    datasets.sort();
    datasets.dedup();
    for (i, d) in datasets.iter().enumerate() {
        let color = Palette99::pick(i + phases.len()).to_rgba();
        let pts: Vec<(u64, f64)> = metrics
            .iter()
            .filter_map(|m| m.eval.get(*d).map(|&l| (m.global_step, l)))
            .filter(|p| p.1.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("eval {d}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

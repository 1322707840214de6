//! `metrics.jsonl`: one JSON line per logged training step, written by the training loop and
//! read back by the loss plot, resumption and the tests.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricLine {
    pub phase: String,
    pub step: usize,
    pub global_step: u64,
    pub loss: f64,
    pub lr: f64,
    pub tokens_per_sec: f64,
    pub grad_norm: f64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eval: BTreeMap<String, f64>,
}

/// Appends one line to `metrics.jsonl` (creating it), so an interrupted run keeps every step
/// it finished.
pub(crate) fn append_metric(path: &Path, m: &MetricLine) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(m)?)?;
    Ok(())
}

/// Reads `metrics.jsonl`, keeping for each (phase, step) the last line written (a resumed run
/// rewrites the steps it lost).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricLine>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by_key: BTreeMap<u64, MetricLine> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let m: MetricLine = serde_json::from_str(line)
            .with_context(|| format!("{}: line {}", path.display(), i + 1))?;
        by_key.insert(m.global_step, m);
    }
    Ok(by_key.into_values().collect())
}

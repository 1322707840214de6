//! A finished run directory, read once: its resolved curriculum, its tokenizer and one
//! checkpoint's weights. `badge train` writes the directory (its layout is [`RunDir`]); every
//! later stage (export, quality, inspect, eval, ask) reads it through a [`Run`], loaded once and
//! passed down.
//! Imports `train`, `data`, `config` and `util`.

use crate::config::ResolvedCurriculum;
use crate::data::tokenizer::BadgeTokenizer;
use crate::train::checkpoint::{self, RunDir};
use crate::train::model::Params;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Weights by parameter name as flat f32 vectors (what the exporters quantize).
pub type FlatParams = BTreeMap<String, Vec<f32>>;

/// The resolved curriculum stored in a run directory.
pub fn run_config(run: &RunDir) -> Result<ResolvedCurriculum> {
    let text = crate::util::read_to_string(&run.config()).with_context(|| {
        format!(
            "{} is not a run directory made by `badge train`",
            run.root.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: corrupt run config", run.config().display()))
}

/// A run directory with its config, tokenizer and one checkpoint in memory.
pub struct Run {
    pub dir: RunDir,
    pub config: ResolvedCurriculum,
    pub tokenizer: BadgeTokenizer,
    /// The checkpoint the weights came from.
    pub checkpoint: PathBuf,
    /// The weights, on the CPU.
    pub params: Params,
}

impl Run {
    /// Reads the run at `root` with the weights of `checkpoint` (default: the final weights).
    pub fn load(root: &Path, checkpoint: Option<&Path>) -> Result<Run> {
        let dir = RunDir::new(root);
        let config = run_config(&dir)?;
        let checkpoint = checkpoint
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.final_weights());
        if !checkpoint.exists() {
            bail!("{} does not exist: the run has not finished (export a phase checkpoint with --checkpoint, or finish it with `badge train --resume {}`)", checkpoint.display(), root.display());
        }
        let params =
            checkpoint::load_params(&checkpoint, &config.model, &candle_core::Device::Cpu)?;
        let tokenizer = BadgeTokenizer::load(&dir.tokenizer())?;
        Ok(Run {
            dir,
            config,
            tokenizer,
            checkpoint,
            params,
        })
    }

    /// The weights as flat f32 vectors by parameter name.
    pub fn flat_weights(&self) -> Result<FlatParams> {
        flatten(&self.params)
    }
}

/// Flattens candle parameters into f32 vectors by name.
pub fn flatten(params: &Params) -> Result<FlatParams> {
    params
        .iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
        .collect()
}

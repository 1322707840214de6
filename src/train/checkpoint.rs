//! Checkpoints: model weights and AdamW moments in one safetensors file (`param.NAME`,
//! `adam_m.NAME`, `adam_v.NAME`), plus a small JSON file saying where training stood. Both are
//! written atomically; the JSON is written last, so it never points at a missing checkpoint.

use crate::train::model::Params;
use crate::train::optim::AdamW;
use crate::util::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use badge_firmware::config::ModelConfig;
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where a run stands: the last completed step of which phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Index of the phase in the curriculum.
    pub phase: usize,
    /// Steps of that phase already done.
    pub step: usize,
    pub optimizer_step: u64,
}

/// Writes weights (and optimizer state when given) to `path`.
pub fn save(path: &Path, params: &Params, opt: Option<&AdamW>) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = params
        .iter()
        .map(|(n, v)| (format!("param.{n}"), v.as_tensor().clone()))
        .collect();
    if let Some(opt) = opt {
        tensors.extend(
            opt.m
                .iter()
                .map(|(n, t)| (format!("adam_m.{n}"), t.clone())),
        );
        tensors.extend(
            opt.v
                .iter()
                .map(|(n, t)| (format!("adam_v.{n}"), t.clone())),
        );
    }
    let mut data = Vec::new();
    for (name, t) in &tensors {
        let shape = t.dims().to_vec();
        let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
        data.push((name.clone(), shape, values));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, shape, values)| {
            let bytes: &[u8] = bytemuck_f32(values);
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    bytes,
                )?,
            ))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, None).context("serialising the checkpoint")?;
    write_atomic(path, &bytes)
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding; the byte view covers exactly the same memory. Safetensors
    // is little-endian, as are all targets this tool supports.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len() * 4) }
}

/// The tensors of a checkpoint file by name.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            bail!(
                "{}: tensor {name} is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(
            name,
            Tensor::from_vec(values, view.shape().to_vec(), device)?,
        );
    }
    Ok(out)
}

/// Loads the weights of `config` from a checkpoint, checking every name and shape.
pub fn load_params(path: &Path, config: &ModelConfig, device: &Device) -> Result<Params> {
    let tensors = read_tensors(path, device)?;
    let mut params = Params::new();
    for (name, shape) in crate::train::model::parameter_shapes(config) {
        let t = tensors.get(&format!("param.{name}")).ok_or_else(|| {
            anyhow!(
                "{}: missing tensor param.{name} (a checkpoint of another model size?)",
                path.display()
            )
        })?;
        if t.dims() != shape.as_slice() {
            bail!(
                "{}: tensor {name} has shape {:?}, the config needs {shape:?}",
                path.display(),
                t.dims()
            );
        }
        params.insert(name, Var::from_tensor(t)?);
    }
    Ok(params)
}

/// Loads weights and optimizer moments.
pub fn load_with_optimizer(
    path: &Path,
    config: &ModelConfig,
    device: &Device,
    optimizer_step: u64,
) -> Result<(Params, AdamW)> {
    let params = load_params(path, config, device)?;
    let tensors = read_tensors(path, device)?;
    let mut opt = AdamW::new(&params)?;
    for name in params.keys() {
        let m = tensors
            .get(&format!("adam_m.{name}"))
            .ok_or_else(|| anyhow!("{}: no optimizer state for {name}", path.display()))?;
        let v = tensors
            .get(&format!("adam_v.{name}"))
            .ok_or_else(|| anyhow!("{}: no optimizer state for {name}", path.display()))?;
        opt.m.insert(name.clone(), m.clone());
        opt.v.insert(name.clone(), v.clone());
    }
    opt.step = optimizer_step;
    Ok((params, opt))
}

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: &Path) -> Self {
        RunDir {
            root: root.to_path_buf(),
        }
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// The rolling checkpoint that `--resume` continues from.
    pub fn latest(&self) -> PathBuf {
        self.checkpoints().join("latest.safetensors")
    }
    pub fn progress(&self) -> PathBuf {
        self.checkpoints().join("progress.json")
    }
    /// The checkpoint at the end of phase `name`.
    pub fn phase_final(&self, name: &str) -> PathBuf {
        self.checkpoints().join(format!("phase-{name}.safetensors"))
    }
    /// The run's final weights (the last phase's final checkpoint).
    pub fn final_weights(&self) -> PathBuf {
        self.checkpoints().join("final.safetensors")
    }
    pub fn tokenizer(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }
    pub fn read_progress(&self) -> Result<Option<Progress>> {
        let p = self.progress();
        if !p.exists() {
            return Ok(None);
        }
        let text = crate::util::read_to_string(&p)?;
        Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{}: corrupt progress file", p.display())
        })?))
    }
    pub fn write_progress(&self, p: &Progress) -> Result<()> {
        write_atomic(
            &self.progress(),
            serde_json::to_string_pretty(p)?.as_bytes(),
        )
    }
}

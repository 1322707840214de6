//! Training: the three-phase curriculum loop in candle, the model, its fused CPU ops, AdamW,
//! checkpoints and the run directory's layout, the metrics file and the loss plot.
//! Imports `data`, `config` and `util`.

pub mod block;
pub mod checkpoint;
pub mod ffn;
pub mod linear;
pub mod matmul;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod optim;
pub mod plot;
pub mod profile;
mod trainer;

pub use trainer::*;

/// The candle device a `--device` name means: cpu, cuda, cuda:N or metal.
pub fn parse_device(s: &str) -> anyhow::Result<candle_core::Device> {
    use anyhow::Context;
    match s {
        "cpu" => Ok(candle_core::Device::Cpu),
        "metal" => {
            candle_core::Device::new_metal(0).context("metal device (build with --features metal)")
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n = s
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse)
                .with_context(|| format!("bad device {s}"))?;
            candle_core::Device::new_cuda(n).context("cuda device (build with --features cuda)")
        }
        other => anyhow::bail!("unknown device `{other}`: use cpu, cuda, cuda:N or metal"),
    }
}

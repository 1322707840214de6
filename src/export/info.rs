//! `badge info`: what a model config costs, in parameters, bytes and badge memory.

use badge_firmware::config::{KvCacheKind, ModelConfig};
use badge_firmware::engine::RunStateSize;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub config: ModelConfig,
    pub parameters: u64,
    pub f32_bytes: u64,
    /// Q8_0 weights (int8 + one f32 scale per group) plus f32 norms, at the chosen group size.
    pub int8_bytes: u64,
    pub group_size: usize,
    pub kv_cache_bytes: usize,
    pub activation_bytes: usize,
    /// Weights (copied to PSRAM) + KV cache + activations.
    pub device_bytes: u64,
}

impl ModelInfo {
    pub fn of(c: &ModelConfig) -> Self {
        let gs =
            badge_firmware::quant::choose_group_size(64, &[c.dim as usize, c.hidden_dim as usize])
                .unwrap_or(1);
        let norms = (2 * c.n_layers as u64 + 1) * c.dim as u64;
        let matrices = c.parameter_count() - norms;
        let int8 = matrices + matrices / gs as u64 * 4 + norms * 4;
        let state = RunStateSize::of(c, gs, KvCacheKind::F32);
        ModelInfo {
            config: *c,
            parameters: c.parameter_count(),
            f32_bytes: c.parameter_count() * 4,
            int8_bytes: int8,
            group_size: gs,
            kv_cache_bytes: state.kv_cache_bytes,
            activation_bytes: state.activation_bytes,
            device_bytes: int8 + state.total() as u64,
        }
    }

    pub fn table(&self) -> String {
        let c = &self.config;
        let mb = |b: u64| format!("{:.2} MB", b as f64 / 1e6);
        format!(
            "model      dim {} · hidden {} · {} layers · {}/{} heads · vocab {} · seq {}\n\
             parameters {}\n\
             f32 size   {}\n\
             int8 size  {} (Q8_0, group size {})\n\
             on device  {} = weights {} + KV cache {} + activations {}\n",
            c.dim,
            c.hidden_dim,
            c.n_layers,
            c.n_heads,
            c.n_kv_heads,
            c.vocab_size,
            c.seq_len,
            group_digits(self.parameters),
            mb(self.f32_bytes),
            mb(self.int8_bytes),
            self.group_size,
            mb(self.device_bytes),
            mb(self.int8_bytes),
            mb(self.kv_cache_bytes as u64),
            mb(self.activation_bytes as u64),
        )
    }
}

/// 5566176 → "5,566,176".
pub fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

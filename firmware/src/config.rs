//! The model's shape and the badge's voice: what the blob header carries.

/// The llama2.c-style transformer shape. Field names match the TOML configs.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "std", serde(deny_unknown_fields))]
pub struct ModelConfig {
    pub dim: u32,
    pub hidden_dim: u32,
    pub n_layers: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub vocab_size: u32,
    pub seq_len: u32,
    #[cfg_attr(feature = "std", serde(default = "default_norm_eps"))]
    pub norm_eps: f32,
    #[cfg_attr(feature = "std", serde(default = "default_rope_theta"))]
    pub rope_theta: f32,
}

/// The largest shape the loader accepts (FORMAT.md, "Limits"). They bound the work and the
/// memory a blob can ask for before anything is allocated: every size derived from them
/// (`n_layers · seq_len · kv_dim · 4` is at most 2^46) fits a u64 with room to spare, and the
/// tensor table of a valid blob has at most `2 + 9 · MAX_LAYERS` entries. Far above any model
/// a badge can hold (the largest shipped config is dim 224, 8 layers, vocab 1024).
pub mod limits {
    pub const MAX_DIM: u32 = 8192;
    pub const MAX_HIDDEN_DIM: u32 = 32768;
    pub const MAX_LAYERS: u32 = 1024;
    /// Also the limit of `n_kv_heads` (which must divide `n_heads`).
    pub const MAX_HEADS: u32 = 1024;
    pub const MAX_VOCAB: u32 = 1 << 18;
    pub const MAX_SEQ_LEN: u32 = 1 << 16;
}

/// The largest value [`ModelConfig::validate`] accepts for an integer field, if it has one.
pub fn field_limit(field: &str) -> Option<u32> {
    use limits::*;
    Some(match field {
        "dim" => MAX_DIM,
        "hidden_dim" => MAX_HIDDEN_DIM,
        "n_layers" => MAX_LAYERS,
        "n_heads" | "n_kv_heads" => MAX_HEADS,
        "vocab_size" => MAX_VOCAB,
        "seq_len" => MAX_SEQ_LEN,
        _ => return None,
    })
}

/// llama2.c's RMSNorm epsilon.
pub const DEFAULT_NORM_EPS: f32 = 1e-5;
/// llama2.c's RoPE base.
pub const DEFAULT_ROPE_THETA: f32 = 10000.0;
#[cfg(feature = "std")]
fn default_norm_eps() -> f32 {
    DEFAULT_NORM_EPS
}
#[cfg(feature = "std")]
fn default_rope_theta() -> f32 {
    DEFAULT_ROPE_THETA
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        (self.dim / self.n_heads) as usize
    }
    /// Width of the key/value projections (grouped-query attention).
    pub fn kv_dim(&self) -> usize {
        self.head_dim() * self.n_kv_heads as usize
    }

    /// Checks the relations the engine relies on; returns the offending field and value.
    pub fn validate(&self) -> Result<(), (&'static str, u32)> {
        let bounded = [
            ("dim", self.dim),
            ("hidden_dim", self.hidden_dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("vocab_size", self.vocab_size),
            ("seq_len", self.seq_len),
        ];
        for (field, v) in bounded {
            if v == 0 || field_limit(field).is_some_and(|max| v > max) {
                return Err((field, v));
            }
        }
        if !self.dim.is_multiple_of(self.n_heads) {
            return Err(("n_heads (must divide dim)", self.n_heads));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(("n_kv_heads (must divide n_heads)", self.n_kv_heads));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err((
                "dim / n_heads (must be even for RoPE)",
                self.dim / self.n_heads,
            ));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(("norm_eps", self.norm_eps.to_bits()));
        }
        if !(self.rope_theta > 1.0 && self.rope_theta.is_finite()) {
            return Err(("rope_theta", self.rope_theta.to_bits()));
        }
        Ok(())
    }

    /// The seven integer fields in the order both file headers store them (the blob's and
    /// llama2.c's): dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len.
    pub fn header_fields(&self) -> [u32; 7] {
        [
            self.dim,
            self.hidden_dim,
            self.n_layers,
            self.n_heads,
            self.n_kv_heads,
            self.vocab_size,
            self.seq_len,
        ]
    }

    /// Number of trainable parameters (the classifier shares the embedding).
    pub fn parameter_count(&self) -> u64 {
        let (d, h, kv) = (
            self.dim as u64,
            self.hidden_dim as u64,
            self.kv_dim() as u64,
        );
        let per_layer = 2 * d + 2 * d * d + 2 * kv * d + 3 * d * h;
        self.vocab_size as u64 * d + self.n_layers as u64 * per_layer + d
    }
}

/// How the engine stores keys and values (chosen at export, stored in the blob).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "lowercase"))]
#[repr(u32)]
pub enum KvCacheKind {
    /// Exact; 4 bytes per value.
    F32 = 0,
    /// IEEE half precision; 2 bytes per value.
    F16 = 1,
    /// int8 with one f32 scale per head row; ~1 byte per value.
    Int8 = 2,
}

impl KvCacheKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::F32),
            1 => Some(Self::F16),
            2 => Some(Self::Int8),
            _ => None,
        }
    }
}

/// The badge's voice: SAM's parameters, which the blob carries (one type for both).
pub use crate::sam::Voice;

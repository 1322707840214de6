//! Board profiles (`configs/boards/*.toml`) and the memory plan: will this model fit?

use crate::util::{read_to_string, relative_to};
use anyhow::{bail, Context, Result};
use badge_firmware::engine::RunStateSize;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The bundled profile, used when no `--board` is given.
pub const DEFAULT_BOARD: &str = "configs/boards/esp32s3-n16r8.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsIn {
    Psram,
    Flash,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct I2sPins {
    pub bclk: u8,
    pub ws: u8,
    pub dout: u8,
    pub sample_rate: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub flash_size: u64,
    pub psram_size: u64,
    pub reserved_psram: u64,
    pub weights_in: WeightsIn,
    pub partition_table: PathBuf,
    pub model_partition: String,
    pub i2s: I2sPins,
}

/// One row of an ESP-IDF partition CSV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionRow {
    pub name: String,
    pub kind: String,
    pub subtype: String,
    pub offset: u64,
    pub size: u64,
    /// The optional sixth column (`encrypted`, `readonly`), as written; empty when absent.
    pub flags: String,
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = if let Some(n) = s.strip_suffix(['K', 'k']) {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix(['M', 'm']) {
        (n, 1024 * 1024)
    } else {
        (s, 1)
    };
    let v = if let Some(h) = num.strip_prefix("0x").or_else(|| num.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()?
    } else {
        num.parse().ok()?
    };
    Some(v * mul)
}

/// Reads a partition CSV with explicit offsets; errors name the file and line.
pub fn read_partitions(path: &Path) -> Result<Vec<PartitionRow>> {
    let text = read_to_string(path)?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 5 {
            bail!(
                "{}: line {}: expected Name, Type, SubType, Offset, Size",
                path.display(),
                i + 1
            );
        }
        let num = |s: &str, what: &str| {
            parse_size(s)
                .with_context(|| format!("{}: line {}: bad {what} `{s}`", path.display(), i + 1))
        };
        rows.push(PartitionRow {
            name: f[0].to_string(),
            kind: f[1].to_string(),
            subtype: f[2].to_string(),
            offset: num(f[3], "offset")?,
            size: num(f[4], "size")?,
            flags: f.get(5).copied().unwrap_or("").to_string(),
        });
    }
    Ok(rows)
}

impl Board {
    pub fn load(path: &Path) -> Result<Self> {
        let mut b: Board = toml::from_str(&read_to_string(path)?)
            .with_context(|| format!("{}: not a valid board profile", path.display()))?;
        b.partition_table = relative_to(path, &b.partition_table);
        Ok(b)
    }

    /// The model partition of the board's table.
    pub fn model_partition(&self) -> Result<PartitionRow> {
        read_partitions(&self.partition_table)?
            .into_iter()
            .find(|p| p.name == self.model_partition)
            .with_context(|| {
                format!(
                    "{}: no partition named `{}`",
                    self.partition_table.display(),
                    self.model_partition
                )
            })
    }
}

/// Where a blob's bytes go on the board, and what is left.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryPlan {
    pub board: String,
    pub blob_bytes: u64,
    /// Bytes of the blob taken by the known answers (trie and fallback line).
    pub answers_bytes: u64,
    pub partition_bytes: u64,
    pub psram_weights: u64,
    pub kv_cache: u64,
    pub activations: u64,
    pub reserved: u64,
    pub psram_total: u64,
    pub psram_headroom: i64,
    pub flash_headroom: i64,
}

impl MemoryPlan {
    /// The plan for a blob of `blob_bytes` whose engine needs `run_state` (see
    /// `RunStateSize::of`).
    pub fn new(board: &Board, blob_bytes: u64, run_state: RunStateSize) -> Result<Self> {
        let (kv_cache, activations) = (
            run_state.kv_cache_bytes as u64,
            run_state.activation_bytes as u64,
        );
        let part = board.model_partition()?;
        let psram_weights = if board.weights_in == WeightsIn::Psram {
            blob_bytes
        } else {
            0
        };
        let used = psram_weights + kv_cache + activations + board.reserved_psram;
        Ok(MemoryPlan {
            board: board.name.clone(),
            blob_bytes,
            answers_bytes: 0,
            partition_bytes: part.size,
            psram_weights,
            kv_cache,
            activations,
            reserved: board.reserved_psram,
            psram_total: board.psram_size,
            psram_headroom: board.psram_size as i64 - used as i64,
            flash_headroom: part.size as i64 - blob_bytes as i64,
        })
    }

    /// `Err` naming what overflows, with what to try instead.
    pub fn check(&self) -> Result<()> {
        if self.flash_headroom < 0 {
            bail!(
                "the blob ({} bytes) does not fit the `model` flash partition ({} bytes) of board {}: use a smaller model or enlarge the partition",
                self.blob_bytes,
                self.partition_bytes,
                self.board
            );
        }
        if self.psram_headroom < 0 {
            bail!(
                "the model needs {} bytes of PSRAM (weights {} + KV cache {} + activations {} + firmware {}) but board {} has {}: \
                 export with --kv-cache f16 or int8, map the weights from flash (weights_in = \"flash\"), or use a smaller model",
                self.psram_total as i64 - self.psram_headroom,
                self.psram_weights,
                self.kv_cache,
                self.activations,
                self.reserved,
                self.board,
                self.psram_total
            );
        }
        Ok(())
    }

    pub fn table(&self) -> String {
        let mb = |b: u64| format!("{:>10} B ({:.2} MB)", b, b as f64 / 1e6);
        format!(
            "memory plan for {}\n  flash: blob {} in partition {}  headroom {} B\n         of which known answers {} B\n  PSRAM: weights {}\n         KV cache {}\n         activations {}\n         firmware {}\n         of {}  headroom {} B\n",
            self.board,
            mb(self.blob_bytes),
            mb(self.partition_bytes),
            self.flash_headroom,
            self.answers_bytes,
            mb(self.psram_weights),
            mb(self.kv_cache),
            mb(self.activations),
            mb(self.reserved),
            mb(self.psram_total),
            self.psram_headroom
        )
    }
}

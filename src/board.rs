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

/// The badge's button: the GPIO it is on, the level that means pressed, and whether the
/// chip's internal pull-up is needed (a button to ground with no resistor on the board).
/// Default: GPIO 0, the BOOT button every ESP32-S3 board has, active low with the pull-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonPin {
    pub gpio: u8,
    #[serde(default = "yes")]
    pub active_low: bool,
    #[serde(default = "yes")]
    pub pull_up: bool,
}

fn yes() -> bool {
    true
}

impl Default for ButtonPin {
    fn default() -> Self {
        ButtonPin {
            gpio: 0,
            active_low: true,
            pull_up: true,
        }
    }
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
    #[serde(default)]
    pub button: ButtonPin,
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
        b.check_pins()
            .with_context(|| format!("{}: bad pin assignment", path.display()))?;
        Ok(b)
    }

    /// Pins exist on the ESP32-S3 (GPIO 0..=48) and are used once.
    fn check_pins(&self) -> Result<()> {
        let pins = [
            ("i2s.bclk", self.i2s.bclk),
            ("i2s.ws", self.i2s.ws),
            ("i2s.dout", self.i2s.dout),
            ("button.gpio", self.button.gpio),
        ];
        for (i, (name, pin)) in pins.iter().enumerate() {
            if *pin > 48 {
                bail!("{name} = {pin}: the ESP32-S3 has GPIO 0 to 48");
            }
            if let Some((other, _)) = pins[..i].iter().find(|(_, p)| p == pin) {
                bail!("{name} = {pin} is also {other}");
            }
        }
        Ok(())
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
            "memory plan for {}\n  flash: blob {} in partition {}  headroom {} B\n  PSRAM: weights {}\n         KV cache {}\n         activations {}\n         firmware {}\n         of {}  headroom {} B\n",
            self.board,
            mb(self.blob_bytes),
            mb(self.partition_bytes),
            self.flash_headroom,
            mb(self.psram_weights),
            mb(self.kv_cache),
            mb(self.activations),
            mb(self.reserved),
            mb(self.psram_total),
            self.psram_headroom
        )
    }
}

#[cfg(test)]
mod button_tests {
    use super::*;

    #[test]
    fn button_pin_defaults_and_checks() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let b = Board::load(&root.join(DEFAULT_BOARD)).unwrap();
        assert_eq!(b.button, ButtonPin::default());
        assert_eq!(
            (b.button.gpio, b.button.active_low, b.button.pull_up),
            (0, true, true)
        );
        let full = std::fs::read_to_string(root.join(DEFAULT_BOARD)).unwrap();
        // The profile without its [button] section (each test writes its own).
        let text = &full[..full
            .find("\n[button]")
            .expect("the default board names its button")];
        let dir = tempfile::tempdir().unwrap();
        let write = |extra: &str| {
            let p = dir.path().join("board.toml");
            std::fs::write(&p, format!("{text}\n{extra}")).unwrap();
            p
        };
        let p = write("[button]\ngpio = 14\nactive_low = false\n");
        let b = Board::load(&p).unwrap();
        assert_eq!(
            (b.button.gpio, b.button.active_low, b.button.pull_up),
            (14, false, true)
        );
        let e = format!(
            "{:#}",
            Board::load(&write("[button]\ngpio = 5\n")).unwrap_err()
        );
        assert!(e.contains("button.gpio = 5 is also i2s.bclk"), "{e}");
        let e = format!(
            "{:#}",
            Board::load(&write("[button]\ngpio = 49\n")).unwrap_err()
        );
        assert!(e.contains("GPIO 0 to 48"), "{e}");
    }
}

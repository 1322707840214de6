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

/// Parses a size as partition CSVs write them: decimal or `0x` hex, optionally followed by `K`
/// (×1024) or `M` (×1024²). `None` when malformed or past u64 (checked, never wrapped).
pub fn parse_size(s: &str) -> Option<u64> {
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
    v.checked_mul(mul)
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

/// The bundled profile's text, for when its file is not at [`DEFAULT_BOARD`] (the binary runs
/// outside the repository).
const BUNDLED_BOARD: &str = include_str!("../../configs/boards/esp32s3-n16r8.toml");

impl Board {
    /// Bytes of PSRAM the model may use on this board (`psram_size - reserved_psram`): the
    /// badge's memory budget, and the host's default limit on a run state.
    pub fn memory_budget(&self) -> u64 {
        self.psram_size.saturating_sub(self.reserved_psram)
    }

    /// Reads a profile. The default profile's relative path is tried from the current
    /// directory first, then from the source tree `badge` was built from, so commands work
    /// from any folder (an owner's `badge init` folder, say); when neither has it (the binary
    /// was copied elsewhere), the bundled copy of the default profile is used.
    pub fn load(path: &Path) -> Result<Self> {
        let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_BOARD);
        let path = if path == Path::new(DEFAULT_BOARD) && !path.exists() {
            if !source_tree.exists() {
                let mut b: Board =
                    toml::from_str(BUNDLED_BOARD).context("the bundled board profile")?;
                b.partition_table = relative_to(path, &b.partition_table);
                return Ok(b);
            }
            source_tree.as_path()
        } else {
            path
        };
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

/// The firmware's Xtensa sizes as `scripts/check-firmware.sh` last measured them (its stage 2,
/// the badge's own `esp32s3` build), compiled in from `firmware/measured-size.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareSize {
    /// `.text` of badge-firmware's own objects, before linking.
    pub text: u64,
    pub rodata: u64,
    pub data: u64,
    pub bss: u64,
    /// Code that must run from RAM (`.rwtext`/`.iram*`).
    pub iram: u64,
    /// `.text + .rodata + .data` of its dependencies and core/alloc/compiler_builtins, whole:
    /// an upper bound of what the linker keeps of them.
    pub libs_flash: u64,
}

/// The app image is estimated as the measured flash bytes times this: the measurement cannot
/// see esp-hal, the runtime or the app descriptor (upstream LLVM cannot link for Xtensa), and
/// the margin stands in for them.
pub const FIRMWARE_MARGIN: f64 = 1.5;

const MEASURED_SIZE: &str = include_str!("../../firmware/measured-size.toml");

impl FirmwareSize {
    /// The compiled-in measurement.
    pub fn measured() -> Result<Self> {
        #[derive(Deserialize)]
        struct File {
            #[allow(dead_code)] // recorded for people; the sizes are what the plan uses
            toolchain: String,
            #[serde(flatten)]
            size: FirmwareSize,
        }
        let f: File = toml::from_str(MEASURED_SIZE)
            .context("firmware/measured-size.toml (compiled in): not a size record")?;
        Ok(f.size)
    }

    /// Flash bytes measured: the crate's code and data plus its dependencies taken whole.
    pub fn flash_measured(&self) -> u64 {
        self.text + self.rodata + self.data + self.libs_flash
    }

    /// The app image estimate: [`Self::flash_measured`] times [`FIRMWARE_MARGIN`].
    pub fn app_estimate(&self) -> u64 {
        (self.flash_measured() as f64 * FIRMWARE_MARGIN).ceil() as u64
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
    /// PSRAM the board profile keeps for the firmware's heap (`reserved_psram`): what
    /// outgrows the internal heap. The firmware's code and statics are not in PSRAM.
    pub reserved: u64,
    pub psram_total: u64,
    pub psram_headroom: i64,
    pub flash_headroom: i64,
    /// The firmware as last measured (`firmware/measured-size.toml`).
    pub firmware: FirmwareSize,
    /// Estimated app image: measured flash bytes × [`FIRMWARE_MARGIN`].
    pub firmware_estimate: u64,
    /// Name and size of the partition the firmware is flashed to (the table's first `app`).
    pub app_partition: String,
    pub app_partition_bytes: u64,
    pub app_headroom: i64,
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
        let app = read_partitions(&board.partition_table)?
            .into_iter()
            .find(|p| p.kind == "app")
            .with_context(|| format!("{}: no app partition", board.partition_table.display()))?;
        let firmware = FirmwareSize::measured()?;
        let firmware_estimate = firmware.app_estimate();
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
            firmware,
            firmware_estimate,
            app_partition_bytes: app.size,
            app_headroom: app.size as i64 - firmware_estimate as i64,
            app_partition: app.name,
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
        if self.app_headroom < 0 {
            bail!(
                "the firmware (estimated {} bytes: measured {} × {FIRMWARE_MARGIN}) does not fit the `{}` app partition ({} bytes) of board {}: enlarge that partition",
                self.firmware_estimate,
                self.firmware.flash_measured(),
                self.app_partition,
                self.app_partition_bytes,
                self.board
            );
        }
        if self.psram_headroom < 0 {
            bail!(
                "the model needs {} bytes of PSRAM (weights {} + KV cache {} + activations {} + firmware heap {}) but board {} has {}: \
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
            "memory plan for {}\n  flash: blob {} in partition {}  headroom {} B\n         of which known answers {} B\n         firmware {} in partition {} ({})  headroom {} B\n         (measured {} B × {FIRMWARE_MARGIN} for esp-hal and the runtime, firmware/measured-size.toml)\n  PSRAM: weights {}\n         KV cache {}\n         activations {}\n         firmware heap {}  (board profile reserved_psram)\n         of {}  headroom {} B\n",
            self.board,
            mb(self.blob_bytes),
            mb(self.partition_bytes),
            self.flash_headroom,
            self.answers_bytes,
            mb(self.firmware_estimate),
            mb(self.app_partition_bytes),
            self.app_partition,
            self.app_headroom,
            self.firmware.flash_measured(),
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

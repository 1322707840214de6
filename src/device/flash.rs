//! Putting a model on the badge: the merged flash image, or the badge itself over a serial port.
//!
//! The image holds the partition table (made from the board's CSV), the blob at the model
//! partition and optionally the bootloader and the app; `badge sim --image` runs it as the
//! badge's flash and a flasher writes it at 0x0. [`flash_serial`] writes the same regions
//! straight into the chip through its ROM serial loader (espflash as a library): compressed,
//! then checked by MD5. Either way the blob is checked (format, CRC, partition size, PSRAM
//! plan) before anything is written, so a bad model is caught on the host rather than by a
//! badge that says "model corrupt".

use crate::config::board::{read_partitions, Board, MemoryPlan};
use crate::util::{write_atomic, AlignedBytes};
use anyhow::{anyhow, bail, Context, Result};
use badge_firmware::engine::RunStateSize;
use badge_firmware::format::Blob;
use badge_firmware::image::{build_image, ImageParts, BOOTLOADER_OFFSET};
use badge_firmware::partition::{self, Partition, PartitionTable, TABLE_OFFSET};
use espflash::connection::Connection;
pub use espflash::connection::{ResetAfterOperation, ResetBeforeOperation};
use espflash::flasher::Flasher;
use espflash::image_format::Segment;
use espflash::target::{Chip, ProgressCallbacks};
use indicatif::{ProgressBar, ProgressStyle};
use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

/// The board's partition table as typed entries (names, types and subtypes resolved).
pub fn partitions(board: &Board) -> Result<Vec<Partition>> {
    let path = &board.partition_table;
    read_partitions(path)?
        .into_iter()
        .map(|r| {
            let ctx = || format!("{}: partition `{}`", path.display(), r.name);
            let kind = partition::parse_type(&r.kind)
                .with_context(|| format!("{}: unknown type `{}`", ctx(), r.kind))?;
            let subtype = partition::parse_subtype(kind, &r.subtype)
                .with_context(|| format!("{}: unknown subtype `{}`", ctx(), r.subtype))?;
            let offset = u32::try_from(r.offset)
                .with_context(|| format!("{}: offset beyond 4 GB", ctx()))?;
            let size =
                u32::try_from(r.size).with_context(|| format!("{}: size beyond 4 GB", ctx()))?;
            let flags = partition::parse_flags(&r.flags)
                .with_context(|| format!("{}: unknown flags `{}`", ctx(), r.flags))?;
            Partition::new(&r.name, kind, subtype, offset, size, flags)
                .map_err(|e| anyhow!("{}: {e}", ctx()))
        })
        .collect()
}

/// The binary partition table (0xC00 bytes, with its MD5 entry) for the board.
pub fn table_bytes(board: &Board) -> Result<Vec<u8>> {
    let parts = partitions(board)?;
    if let Some(p) = parts
        .iter()
        .find(|p| u64::from(p.offset) + u64::from(p.size) > board.flash_size)
    {
        bail!(
            "partition `{}` ends past the {}-byte flash of board {}",
            p.name(),
            board.flash_size,
            board.name
        );
    }
    partition::build(&parts).map_err(|e| anyhow!("{}: {e}", board.partition_table.display()))
}

fn read_optional(path: Option<&Path>) -> Result<Option<Vec<u8>>> {
    path.map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
        .transpose()
}

/// One region of the badge's flash that a flash operation writes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Region {
    /// `bootloader`, `partition table`, `app` or the model partition's label.
    pub name: String,
    pub offset: u32,
    pub len: usize,
}

/// Everything to write, checked: the merged image and where each part lies in it.
#[derive(Debug, Clone)]
pub struct FlashPlan {
    /// The merged image (`FF` between the regions), as [`write_image`] writes it.
    pub image: Vec<u8>,
    /// The written regions, by offset.
    pub regions: Vec<Region>,
}

impl FlashPlan {
    /// The bytes of `r` in the image.
    pub fn bytes(&self, r: &Region) -> &[u8] {
        &self.image[r.offset as usize..r.offset as usize + r.len]
    }
}

/// Checks the blob (format, CRC, memory plan on `board`), builds the partition table and
/// places every part: the checks [`write_image`] and [`flash_serial`] make before they write.
pub fn plan(
    blob: &Path,
    board: &Board,
    app: Option<&Path>,
    bootloader: Option<&Path>,
) -> Result<FlashPlan> {
    let bytes = AlignedBytes::read(blob)?;
    let parsed = Blob::parse(bytes.as_slice()).map_err(|e| anyhow!("{}: {e}", blob.display()))?;
    let state = RunStateSize::of(&parsed.config, parsed.group_size, parsed.kv_cache);
    let plan = MemoryPlan::new(board, bytes.as_slice().len() as u64, state)?;
    plan.check().with_context(|| {
        format!(
            "{} does not fit board {}; nothing was written",
            blob.display(),
            board.name
        )
    })?;
    let table = table_bytes(board)?;
    let mut app = read_optional(app)?;
    let mut bootloader = read_optional(bootloader)?;
    if let Some(elf) = app.as_deref().filter(|a| a.starts_with(b"\x7fELF")) {
        let (boot, image) = app_image_from_elf(elf, board, bootloader.as_deref())?;
        app = Some(image);
        bootloader = Some(boot);
    }
    let parts = ImageParts {
        table: &table,
        bootloader: bootloader.as_deref(),
        app: app.as_deref(),
        model: bytes.as_slice(),
        model_partition: &board.model_partition,
    };
    let image = build_image(&parts).map_err(|e| anyhow!("{e}; nothing was written"))?;

    // build_image accepted the table, so these lookups succeed.
    let parsed_table = PartitionTable::parse(&table).map_err(|e| anyhow!("{e}"))?;
    let model = parsed_table
        .find(&board.model_partition)
        .map_err(|e| anyhow!("{e}"))?;
    let mut regions = Vec::new();
    let mut add = |name: &str, offset: u32, len: usize| {
        regions.push(Region {
            name: name.to_string(),
            offset,
            len,
        })
    };
    if let Some(b) = &bootloader {
        add("bootloader", BOOTLOADER_OFFSET, b.len());
    }
    add("partition table", TABLE_OFFSET, table.len());
    if let (Some(a), Some(p)) = (&app, parsed_table.boot_app()) {
        add("app", p.offset, a.len());
    }
    add(&board.model_partition, model.offset, bytes.as_slice().len());
    regions.sort_by_key(|r| r.offset);
    Ok(FlashPlan { image, regions })
}

/// Turns the firmware's ELF (`cargo +esp build --release` output) into what the ROM boots:
/// espflash's ESP-IDF app image for the board's factory partition, and the second-stage
/// bootloader (`bootloader` when given, else the one espflash ships for the ESP32-S3). The
/// partition table espflash would write is not used: the board's own table is.
fn app_image_from_elf(
    elf: &[u8],
    board: &Board,
    bootloader: Option<&[u8]>,
) -> Result<(Vec<u8>, Vec<u8>)> {
    use espflash::flasher::{FlashData, FlashSettings, FlashSize};
    use espflash::image_format::idf::IdfBootloaderFormat;
    use espflash::target::XtalFrequency;

    let parts = partitions(board)?;
    let factory = parts
        .iter()
        .find(|p| p.is_factory_app())
        .or_else(|| parts.iter().find(|p| p.kind == partition::TYPE_APP))
        .with_context(|| {
            format!(
                "{}: an app was given but the table has no app partition",
                board.partition_table.display()
            )
        })?;
    // espflash only needs the app partition from a table (its CSV reader rejects numeric data
    // subtypes such as the model's 0x40), so it gets a one-line table with just that.
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("app.csv");
    std::fs::write(
        &csv,
        format!(
            "{}, app, factory, {:#x}, {:#x},\n",
            factory.name(),
            factory.offset,
            factory.size
        ),
    )?;
    let boot_path = match bootloader {
        Some(b) => {
            let p = dir.path().join("bootloader.bin");
            std::fs::write(&p, b)?;
            Some(p)
        }
        None => None,
    };
    let size: FlashSize = format!("{}MB", board.flash_size >> 20)
        .parse()
        .map_err(|e| anyhow!("board {}: flash size: {e}", board.name))?;
    let flash_data = FlashData::new(
        FlashSettings::new(None, Some(size), None),
        0,
        None,
        Chip::Esp32s3,
        XtalFrequency::_40Mhz,
    );
    let image = IdfBootloaderFormat::new(
        elf,
        &flash_data,
        Some(&csv),
        boot_path.as_deref(),
        Some(TABLE_OFFSET),
        None,
    )
    .map_err(|e| anyhow!("converting the app ELF: {e}"))?;
    let (mut boot, mut app) = (None, None);
    for seg in image.flash_segments() {
        if seg.addr == BOOTLOADER_OFFSET {
            boot = Some(seg.data.into_owned());
        } else if seg.addr == factory.offset {
            app = Some(seg.data.into_owned());
        }
    }
    match (boot, app) {
        (Some(b), Some(a)) => Ok((b, a)),
        _ => bail!("espflash produced no bootloader or app segment from the ELF"),
    }
}

/// Writes the merged image for `blob` on `board` to `out`: bootloader (optional) at 0x0,
/// partition table at 0x8000, app (optional) at the factory partition, blob at the model
/// partition, `FF` between. Nothing is written unless every check passes.
pub fn write_image(
    blob: &Path,
    board: &Board,
    app: Option<&Path>,
    bootloader: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let plan = plan(blob, board, app, bootloader)?;
    write_atomic(out, &plan.image)
}

/// The ROM loader's speed; the link starts at it before the baud rate is raised.
pub const ROM_BAUD: u32 = 115_200;
/// The default flashing speed (esptool's): a 6 MB blob takes about two minutes.
pub const DEFAULT_BAUD: u32 = 460_800;

/// How [`flash_serial`] talks to the badge.
#[derive(Debug, Clone)]
pub struct SerialOptions {
    /// The serial device (`/dev/ttyACM0`, `COM3`); `None` picks the one Espressif USB port.
    pub port: Option<String>,
    /// Speed after connecting (the ROM loader starts at 115200).
    pub baud: u32,
    /// How to put the chip into its serial loader: the DTR/RTS (or USB-Serial-JTAG) sequence
    /// by default; `NoReset` when the chip already waits in download mode.
    pub before: ResetBeforeOperation,
    /// What to do afterwards: a hard reset starts the new firmware.
    pub after: ResetAfterOperation,
    /// Upload espflash's RAM stub first: it takes compressed data and is much faster. Without
    /// it the ROM loader is used directly (uncompressed writes).
    pub use_stub: bool,
    /// Show a progress bar per region.
    pub progress: bool,
}

impl Default for SerialOptions {
    fn default() -> Self {
        SerialOptions {
            port: None,
            baud: DEFAULT_BAUD,
            before: ResetBeforeOperation::DefaultReset,
            after: ResetAfterOperation::HardReset,
            use_stub: true,
            progress: true,
        }
    }
}

/// What [`flash_serial`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlashReport {
    pub port: String,
    /// The chip espflash detected (`esp32s3`).
    pub chip: String,
    /// The flash size the chip reported, in bytes.
    pub flash_size: u32,
    /// Every region written, each verified by MD5 on the chip.
    pub regions: Vec<Region>,
}

/// An indicatif bar per region, fed by espflash's progress callbacks.
struct Bars<'a> {
    regions: &'a [Region],
    bar: Option<ProgressBar>,
    enabled: bool,
}

impl ProgressCallbacks for Bars<'_> {
    fn init(&mut self, addr: u32, total: usize) {
        if !self.enabled {
            return;
        }
        let name = self
            .regions
            .iter()
            .find(|r| r.offset == addr)
            .map_or("data", |r| r.name.as_str());
        let bar = ProgressBar::new(total as u64).with_message(format!("{name} at 0x{addr:X}"));
        bar.set_style(
            ProgressStyle::with_template("{msg:32} [{bar:30}] {pos}/{len} blocks {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        self.bar = Some(bar);
    }
    fn update(&mut self, current: usize) {
        if let Some(b) = &self.bar {
            b.set_position(current as u64);
        }
    }
    fn verifying(&mut self) {
        if let Some(b) = &self.bar {
            b.set_message(format!("{} (verifying MD5)", b.message()));
        }
    }
    fn finish(&mut self, skipped: bool) {
        if let Some(b) = self.bar.take() {
            if skipped {
                b.finish_with_message(format!("{} unchanged, skipped", b.message()));
            } else {
                b.finish();
            }
        }
    }
}

/// Espressif's USB vendor id (the ESP32-S3's USB-Serial-JTAG port, and their dev boards).
const ESPRESSIF_VID: u16 = 0x303A;

/// The port to use and what USB says about it: the reset sequence differs for the S3's own
/// USB-Serial-JTAG port (PID 0x1001) and a USB-UART bridge.
fn resolve_port(port: Option<&str>) -> Result<(String, serialport::UsbPortInfo)> {
    let unknown = || serialport::UsbPortInfo {
        vid: 0,
        pid: 0,
        serial_number: None,
        manufacturer: None,
        product: None,
    };
    // The port list comes from /sys on Linux; a container may lack it.
    let listed = if cfg!(target_os = "linux") && !Path::new("/sys/class/tty").is_dir() {
        Vec::new()
    } else {
        serialport::available_ports().unwrap_or_default()
    };
    let usb = |p: &serialport::SerialPortInfo| match &p.port_type {
        serialport::SerialPortType::UsbPort(info) => Some(info.clone()),
        _ => None,
    };
    match port {
        Some(name) => {
            let info = listed
                .iter()
                .find(|p| p.port_name == name)
                .and_then(usb)
                .unwrap_or_else(unknown);
            Ok((name.to_string(), info))
        }
        None => {
            let esp: Vec<_> = listed
                .iter()
                .filter_map(|p| usb(p).map(|i| (p.port_name.clone(), i)))
                .filter(|(_, i)| i.vid == ESPRESSIF_VID)
                .collect();
            match esp.len() {
                1 => Ok(esp.into_iter().next().expect("one port")),
                0 => bail!(
                    "no Espressif USB serial port found: plug the badge in, or name its port with --port (or write an image with --image)"
                ),
                _ => bail!(
                    "several Espressif serial ports ({}): choose one with --port",
                    esp.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
    }
}

/// Flashes `blob` (and the partition table, and the app and bootloader when given) into the
/// badge on a serial port through the chip's ROM loader, espflash's library doing the
/// protocol. Every check of [`plan`] runs first: a blob that is corrupt, too large for the
/// model partition or for PSRAM is refused before the port is even opened. Each region is
/// written compressed (with the stub) and its MD5 is compared with the chip's afterwards.
pub fn flash_serial(
    blob: &Path,
    board: &Board,
    app: Option<&Path>,
    bootloader: Option<&Path>,
    opts: &SerialOptions,
) -> Result<FlashReport> {
    let plan = plan(blob, board, app, bootloader)?;
    let (port_name, port_info) = resolve_port(opts.port.as_deref())?;
    let serial = serialport::new(&port_name, ROM_BAUD)
        .flow_control(serialport::FlowControl::None)
        .timeout(Duration::from_secs(3))
        .open_native()
        .with_context(|| format!("cannot open serial port {port_name}"))?;
    let connection = Connection::new(serial, port_info, opts.after, opts.before, ROM_BAUD);
    let baud = (opts.baud != ROM_BAUD).then_some(opts.baud);
    let mut flasher = Flasher::connect(
        connection,
        opts.use_stub,
        true,
        false,
        Some(Chip::Esp32s3),
        baud,
    )
    .map_err(|e| anyhow!("{e}"))
    .with_context(|| {
        format!(
            "no ESP32-S3 serial loader answered on {port_name} (hold BOOT while pressing RESET, then retry)"
        )
    })?;
    let chip = flasher.chip();
    let flash_size = flasher
        .device_info()
        .map(|i| i.flash_size.size())
        .map_err(|e| anyhow!("{e}"))?;
    if u64::from(flash_size) < board.flash_size {
        bail!(
            "the chip on {port_name} reports {flash_size} bytes of flash but board {} has {}: wrong --board?",
            board.name,
            board.flash_size
        );
    }
    // Segments padded to whole words with FF, as espflash's write-bin does.
    let segments: Vec<Segment<'_>> = plan
        .regions
        .iter()
        .map(|r| {
            let bytes = plan.bytes(r);
            let data = if bytes.len() % 4 == 0 {
                Cow::Borrowed(bytes)
            } else {
                let mut v = bytes.to_vec();
                v.resize(bytes.len().next_multiple_of(4), 0xFF);
                Cow::Owned(v)
            };
            Segment {
                addr: r.offset,
                data,
            }
        })
        .collect();
    let mut bars = Bars {
        regions: &plan.regions,
        bar: None,
        enabled: opts.progress,
    };
    flasher
        .write_bins_to_flash(&segments, &mut bars)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("flashing over {port_name} failed"))?;
    Ok(FlashReport {
        port: port_name,
        chip: chip.to_string(),
        flash_size,
        regions: plan.regions.clone(),
    })
}

/// `badge flash --from RUN`: exports the run's final checkpoint into `RUN/model.bin`, checked
/// against `board` (the KV cache chosen to fit), and returns its path.
pub fn export_run(run: &Path, board: &Path) -> Result<std::path::PathBuf> {
    let out = run.join("model.bin");
    crate::export::export(&crate::export::ExportOptions {
        run: run.to_path_buf(),
        checkpoint: None,
        out: out.clone(),
        group_size: crate::export::GroupSize::Auto(64),
        format: crate::export::ExportFormat::Blob,
        kv_cache: None,
        max_rel_error: None,
        quality_samples: 0,
        free: false,
        keep_known: None,
        question_match: true,
        board: Some(board.to_path_buf()),
    })?;
    eprintln!("exported {}", out.display());
    Ok(out)
}

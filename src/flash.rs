//! Building the badge's merged flash image on the host.
//!
//! The image holds the partition table (made from the board's CSV), the blob at the model
//! partition and optionally the bootloader and the app; `badge sim --image` runs it as the
//! badge's flash and a flasher writes it at 0x0. The blob is checked (format, CRC, partition
//! size, PSRAM plan) before anything is written, so a bad model is caught on the host rather
//! than by a badge that says "model corrupt".

use crate::board::{read_partitions, Board, MemoryPlan};
use crate::util::{read_to_string, write_atomic, AlignedBytes};
use anyhow::{anyhow, bail, Context, Result};
use badge_firmware::engine::RunState;
use badge_firmware::format::Blob;
use badge_firmware::image::{build_image, ImageParts};
use badge_firmware::partition::{self, Partition};
use std::collections::HashMap;
use std::path::Path;

/// The optional sixth CSV column (`encrypted`, `readonly`) by partition name;
/// `read_partitions` reads the five columns that locate partitions and skips it.
fn csv_flags(path: &Path) -> Result<HashMap<String, u32>> {
    let text = read_to_string(path)?;
    let mut flags = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let col = f.get(5).copied().unwrap_or("");
        let v = partition::parse_flags(col).with_context(|| {
            format!("{}: line {}: unknown flags `{col}`", path.display(), i + 1)
        })?;
        flags.insert(f[0].to_string(), v);
    }
    Ok(flags)
}

/// The board's partition table as typed entries (names, types and subtypes resolved).
pub fn partitions(board: &Board) -> Result<Vec<Partition>> {
    let path = &board.partition_table;
    let flags = csv_flags(path)?;
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
            Partition::new(
                &r.name,
                kind,
                subtype,
                offset,
                size,
                flags.get(&r.name).copied().unwrap_or(0),
            )
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
    let bytes = AlignedBytes::read(blob)?;
    let parsed = Blob::parse(bytes.as_slice()).map_err(|e| anyhow!("{}: {e}", blob.display()))?;
    let state = RunState::new(&parsed.config, parsed.group_size, parsed.kv_cache);
    let plan = MemoryPlan::new(
        board,
        bytes.as_slice().len() as u64,
        state.kv_cache_bytes() as u64,
        state.activation_bytes() as u64,
    )?;
    plan.check().with_context(|| {
        format!(
            "{} does not fit board {}; nothing was written",
            blob.display(),
            board.name
        )
    })?;
    let table = table_bytes(board)?;
    let app = read_optional(app)?;
    let bootloader = read_optional(bootloader)?;
    let parts = ImageParts {
        table: &table,
        bootloader: bootloader.as_deref(),
        app: app.as_deref(),
        model: bytes.as_slice(),
        model_partition: &board.model_partition,
    };
    let image = build_image(&parts).map_err(|e| anyhow!("{e}; nothing was written"))?;
    write_atomic(out, &image)
}

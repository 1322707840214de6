//! The ESP-IDF binary partition table: parsing it on the badge, writing it on the host.
//!
//! The second-stage bootloader reads this table at flash offset 0x8000 to find the app; the
//! badge reads the same table to find the `model` partition, so the blob can live anywhere the
//! CSV says without the firmware hard-coding an address. Writing the table here (instead of
//! shelling out to ESP-IDF's `gen_esp32part.py`) keeps `badge flash` self-contained, and one
//! module doing both directions means the round trip is tested byte for byte.
//!
//! Layout (little-endian): one 32-byte entry per partition — magic `AA 50`, type, subtype,
//! offset u32, size u32, a 16-byte NUL-padded label, flags u32 — then an MD5 entry (`EB EB`,
//! fourteen `FF`, the MD5 of every preceding entry byte), then `FF` up to [`TABLE_MAX_LEN`].
//!
//! Parsing is zero-copy and never panics on malformed input: every way a table can be wrong
//! is a [`PartitionError`], because a badge with a half-written table should say so, not reset.

use md5::{Digest, Md5};

/// Flash offset of the table on every ESP32 chip (the bootloader's compiled-in default).
pub const TABLE_OFFSET: u32 = 0x8000;
/// Bytes reserved for the table (ESP-IDF's limit): 95 entries plus the MD5 entry.
pub const TABLE_MAX_LEN: usize = 0xC00;
/// Flash sector size; the table occupies its own sector, so partitions start at 0x9000 or later.
pub const SECTOR: u32 = 0x1000;
/// One table entry.
pub const ENTRY_SIZE: usize = 32;
/// Bytes of a label (NUL-padded, not necessarily NUL-terminated).
pub const LABEL_LEN: usize = 16;
/// Most partition entries that fit beside the MD5 entry.
pub const MAX_ENTRIES: usize = TABLE_MAX_LEN / ENTRY_SIZE - 1;
/// First two bytes of a partition entry.
pub const ENTRY_MAGIC: [u8; 2] = [0xAA, 0x50];
/// First two bytes of the MD5 entry.
pub const MD5_MAGIC: [u8; 2] = [0xEB, 0xEB];

/// Partition type `app`.
pub const TYPE_APP: u8 = 0x00;
/// Partition type `data`.
pub const TYPE_DATA: u8 = 0x01;
/// App subtype `factory` (what the bootloader boots when there is no OTA data).
pub const SUBTYPE_FACTORY: u8 = 0x00;
/// App partitions must start on a 64 KB boundary: the cache MMU maps code in 64 KB pages.
pub const APP_ALIGN: u32 = 0x10000;
/// Flag bit 0: the partition is encrypted.
pub const FLAG_ENCRYPTED: u32 = 1 << 0;
/// Flag bit 1: the partition is read-only.
pub const FLAG_READONLY: u32 = 1 << 1;

/// One partition entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// Type: [`TYPE_APP`], [`TYPE_DATA`] or a custom 0x40..=0xFE.
    pub kind: u8,
    /// Subtype (meaning depends on the type).
    pub subtype: u8,
    /// Flash offset in bytes.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
    /// NUL-padded label.
    pub label: [u8; LABEL_LEN],
    /// Flag bits ([`FLAG_ENCRYPTED`], [`FLAG_READONLY`]).
    pub flags: u32,
}

impl Partition {
    /// A partition named `name`; errors when the name does not fit the 16-byte label or holds a
    /// NUL (the label could not be read back as the same name).
    pub fn new(
        name: &str,
        kind: u8,
        subtype: u8,
        offset: u32,
        size: u32,
        flags: u32,
    ) -> Result<Self, PartitionError> {
        if name.is_empty() || name.len() > LABEL_LEN || name.bytes().any(|b| b == 0) {
            return Err(PartitionError::BadLabel {
                label: label_bytes(name),
            });
        }
        Ok(Partition {
            kind,
            subtype,
            offset,
            size,
            label: label_bytes(name),
            flags,
        })
    }

    /// The label up to its first NUL ("" when it is not UTF-8).
    pub fn name(&self) -> &str {
        let n = self.label.iter().position(|&b| b == 0).unwrap_or(LABEL_LEN);
        core::str::from_utf8(&self.label[..n]).unwrap_or("")
    }

    /// One past the last byte (u64: offset + size may exceed u32 in a corrupt table).
    pub fn end(&self) -> u64 {
        u64::from(self.offset).saturating_add(u64::from(self.size))
    }

    /// Whether this is the app the bootloader starts (type app, subtype factory).
    pub fn is_factory_app(&self) -> bool {
        self.kind == TYPE_APP && self.subtype == SUBTYPE_FACTORY
    }

    /// Offset alignment the bootloader requires for this partition's type.
    pub fn required_alignment(&self) -> u32 {
        if self.kind == TYPE_APP {
            APP_ALIGN
        } else {
            SECTOR
        }
    }

    fn from_entry(e: &[u8]) -> Self {
        let u32_at = |i: usize| {
            let mut v = [0u8; 4];
            v.copy_from_slice(&e[i..][..4]);
            u32::from_le_bytes(v)
        };
        let mut label = [0u8; LABEL_LEN];
        label.copy_from_slice(&e[12..28]);
        Partition {
            kind: e[2],
            subtype: e[3],
            offset: u32_at(4),
            size: u32_at(8),
            label,
            flags: u32_at(28),
        }
    }

    fn write_entry(&self, e: &mut [u8]) {
        e[..2].copy_from_slice(&ENTRY_MAGIC);
        e[2] = self.kind;
        e[3] = self.subtype;
        e[4..8].copy_from_slice(&self.offset.to_le_bytes());
        e[8..12].copy_from_slice(&self.size.to_le_bytes());
        e[12..28].copy_from_slice(&self.label);
        e[28..32].copy_from_slice(&self.flags.to_le_bytes());
    }
}

/// `name` as a NUL-padded label, truncated to 16 bytes (for error messages and lookups).
fn label_bytes(name: &str) -> [u8; LABEL_LEN] {
    let mut label = [0u8; LABEL_LEN];
    let n = name.len().min(LABEL_LEN);
    label[..n].copy_from_slice(&name.as_bytes()[..n]);
    label
}

/// Shows a label as text, stopping at the first NUL.
struct Label<'a>(&'a [u8; LABEL_LEN]);

impl core::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for &b in self.0.iter().take_while(|&&b| b != 0) {
            let c = if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            };
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// Everything that can be wrong with a partition table (or with rows to build one from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionError {
    /// Entry `index` starts with neither `AA 50`, `EB EB` nor erased flash.
    BadMagic { index: usize, found: [u8; 2] },
    /// The table ended (erased flash or the 0xC00-byte limit) without an MD5 entry.
    MissingMd5 { entries: usize },
    /// The MD5 entry does not match the entries before it (a torn or corrupted write).
    BadMd5 {
        stored: [u8; 16],
        computed: [u8; 16],
    },
    /// No partition carries this label.
    NotFound { label: [u8; LABEL_LEN] },
    /// Partition `index` starts or ends off its required boundary.
    Unaligned {
        index: usize,
        offset: u32,
        size: u32,
        align: u32,
    },
    /// Partitions `first` and `second` share bytes.
    Overlap { first: usize, second: usize },
    /// Partition `index` starts inside the bootloader or the table's own sector.
    OverlapsTable { index: usize, offset: u32 },
    /// Partition `index` is empty or runs past the 4 GB address space.
    BadSize { index: usize, size: u32 },
    /// Two partitions share a label, so `find` would be ambiguous.
    DuplicateLabel { first: usize, second: usize },
    /// A label is empty, longer than 16 bytes or holds a NUL.
    BadLabel { label: [u8; LABEL_LEN] },
    /// More rows than fit in the 0xC00-byte table.
    TooManyEntries { count: usize },
}

impl core::fmt::Display for PartitionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use PartitionError::*;
        match self {
            BadMagic { index, found } => write!(
                f,
                "partition table entry {index} has magic {:02X} {:02X}, expected AA 50 (is the table flashed at 0x8000?)",
                found[0], found[1]
            ),
            MissingMd5 { entries } => write!(f, "partition table has {entries} entries but no MD5 entry"),
            BadMd5 { .. } => write!(f, "partition table MD5 mismatch (the table is corrupt: flash it again)"),
            NotFound { label } => write!(f, "no partition named `{}` in the partition table", Label(label)),
            Unaligned { index, offset, size, align } => write!(
                f,
                "partition {index} (offset 0x{offset:X}, size 0x{size:X}) is not aligned to 0x{align:X}"
            ),
            Overlap { first, second } => write!(f, "partitions {first} and {second} overlap"),
            OverlapsTable { index, offset } => write!(
                f,
                "partition {index} starts at 0x{offset:X}, inside the bootloader or partition table (first usable offset 0x{:X})",
                TABLE_OFFSET + SECTOR
            ),
            BadSize { index, size } => write!(f, "partition {index} has invalid size 0x{size:X}"),
            DuplicateLabel { first, second } => write!(f, "partitions {first} and {second} have the same name"),
            BadLabel { label } => write!(f, "partition name `{}` must be 1 to 16 bytes without NUL", Label(label)),
            TooManyEntries { count } => write!(f, "{count} partitions do not fit the table (at most {MAX_ENTRIES})"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PartitionError {}

/// A parsed, MD5-checked and validated table, borrowing the entry bytes.
#[derive(Debug, Clone, Copy)]
pub struct PartitionTable<'a> {
    entries: &'a [u8],
}

impl<'a> PartitionTable<'a> {
    /// Parses the table region (normally [`TABLE_MAX_LEN`] bytes read at [`TABLE_OFFSET`]).
    ///
    /// Requires the MD5 entry: ESP-IDF can omit it, but the badge would rather refuse a table
    /// it cannot verify than stream a model from a wrong offset. After the MD5 check the
    /// entries are validated (alignment, overlap, duplicate labels) so `find` only ever returns
    /// a region that is safe to read.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PartitionError> {
        let region = &bytes[..bytes.len().min(TABLE_MAX_LEN)];
        let mut count = 0usize;
        let mut entries_end = 0usize;
        for (index, e) in region.chunks_exact(ENTRY_SIZE).enumerate() {
            match [e[0], e[1]] {
                ENTRY_MAGIC => {
                    // At most TABLE_MAX_LEN / ENTRY_SIZE entries: neither sum can wrap.
                    count = count.saturating_add(1);
                    entries_end = entries_end.saturating_add(ENTRY_SIZE);
                }
                MD5_MAGIC => {
                    let entries = &region[..entries_end];
                    let computed = md5(entries);
                    let mut stored = [0u8; 16];
                    stored.copy_from_slice(&e[16..32]);
                    if stored != computed {
                        return Err(PartitionError::BadMd5 { stored, computed });
                    }
                    let table = PartitionTable { entries };
                    validate(table.iter())?;
                    return Ok(table);
                }
                [0xFF, 0xFF] => return Err(PartitionError::MissingMd5 { entries: count }),
                found => return Err(PartitionError::BadMagic { index, found }),
            }
        }
        Err(PartitionError::MissingMd5 { entries: count })
    }

    /// Number of partitions.
    pub fn len(&self) -> usize {
        self.entries.len() / ENTRY_SIZE
    }

    /// Whether the table lists no partition.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The partitions in table order.
    pub fn iter(&self) -> impl Iterator<Item = Partition> + Clone + 'a {
        self.entries
            .chunks_exact(ENTRY_SIZE)
            .map(Partition::from_entry)
    }

    /// The partition labelled `name`.
    pub fn find(&self, name: &str) -> Result<Partition, PartitionError> {
        self.iter()
            .find(|p| p.name() == name)
            .ok_or(PartitionError::NotFound {
                label: label_bytes(name),
            })
    }

    /// The app the bootloader starts: the factory app, else the first app partition.
    pub fn boot_app(&self) -> Option<Partition> {
        self.iter()
            .find(Partition::is_factory_app)
            .or_else(|| self.iter().find(|p| p.kind == TYPE_APP))
    }
}

fn md5(bytes: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(bytes);
    h.finalize().into()
}

/// The rules ESP-IDF's table generator enforces, checked on both parse and build so a table
/// this module wrote always parses, and a table it parsed is safe to use.
fn validate(parts: impl Iterator<Item = Partition> + Clone) -> Result<(), PartitionError> {
    for (i, p) in parts.clone().enumerate() {
        if p.offset < TABLE_OFFSET + SECTOR {
            return Err(PartitionError::OverlapsTable {
                index: i,
                offset: p.offset,
            });
        }
        if p.size == 0 || p.end() > 1 << 32 {
            return Err(PartitionError::BadSize {
                index: i,
                size: p.size,
            });
        }
        let align = p.required_alignment();
        if !p.offset.is_multiple_of(align) || !p.size.is_multiple_of(SECTOR) {
            return Err(PartitionError::Unaligned {
                index: i,
                offset: p.offset,
                size: p.size,
                align,
            });
        }
        for (j, q) in parts.clone().enumerate().take(i) {
            if u64::from(p.offset) < q.end() && u64::from(q.offset) < p.end() {
                return Err(PartitionError::Overlap {
                    first: j,
                    second: i,
                });
            }
            if p.name() == q.name() {
                return Err(PartitionError::DuplicateLabel {
                    first: j,
                    second: i,
                });
            }
        }
    }
    Ok(())
}

/// Parses a CSV type column: `app`, `data` or a number (decimal or `0x` hex).
pub fn parse_type(s: &str) -> Option<u8> {
    match s.trim() {
        "app" => Some(TYPE_APP),
        "data" => Some(TYPE_DATA),
        other => parse_u8(other),
    }
}

/// Parses a CSV subtype column for partition type `kind`: ESP-IDF's names or a number.
pub fn parse_subtype(kind: u8, s: &str) -> Option<u8> {
    let s = s.trim();
    if let Some(n) = parse_u8(s) {
        return Some(n);
    }
    match kind {
        TYPE_APP => match s {
            "factory" => Some(SUBTYPE_FACTORY),
            "test" => Some(0x20),
            _ => {
                let n: u8 = s.strip_prefix("ota_")?.parse().ok()?;
                (n < 16).then_some(0x10 | n)
            }
        },
        TYPE_DATA => match s {
            "ota" => Some(0x00),
            "phy" => Some(0x01),
            "nvs" => Some(0x02),
            "coredump" => Some(0x03),
            "nvs_keys" => Some(0x04),
            "efuse" => Some(0x05),
            "undefined" => Some(0x06),
            "esphttpd" => Some(0x80),
            "fat" => Some(0x81),
            "spiffs" => Some(0x82),
            "littlefs" => Some(0x83),
            _ => None,
        },
        _ => None,
    }
}

/// Parses a CSV flags column: `encrypted` and/or `readonly`, separated by `:` or spaces.
pub fn parse_flags(s: &str) -> Option<u32> {
    let mut flags = 0;
    for word in s.split([':', ' ']).map(str::trim).filter(|w| !w.is_empty()) {
        flags |= match word {
            "encrypted" => FLAG_ENCRYPTED,
            "readonly" => FLAG_READONLY,
            _ => return None,
        };
    }
    Some(flags)
}

fn parse_u8(s: &str) -> Option<u8> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u8::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Writes the binary table for `parts`: entries, the MD5 entry, then `FF` up to
/// [`TABLE_MAX_LEN`] (the whole region, so flashing it also erases a longer stale table).
/// Validates with the same rules as [`PartitionTable::parse`], so what it writes parses.
pub fn build(parts: &[Partition]) -> Result<alloc::vec::Vec<u8>, PartitionError> {
    if parts.len() > MAX_ENTRIES {
        return Err(PartitionError::TooManyEntries { count: parts.len() });
    }
    for p in parts {
        Partition::new(p.name(), p.kind, p.subtype, p.offset, p.size, p.flags)?;
    }
    validate(parts.iter().copied())?;
    let mut out = alloc::vec![0xFFu8; TABLE_MAX_LEN];
    for (p, e) in parts.iter().zip(out.chunks_exact_mut(ENTRY_SIZE)) {
        p.write_entry(e);
    }
    // At most MAX_ENTRIES rows (checked above), so the entries and the MD5 entry fit.
    let n = parts.len().saturating_mul(ENTRY_SIZE);
    let digest = md5(&out[..n]);
    let e = &mut out[n..][..ENTRY_SIZE];
    e[..2].copy_from_slice(&MD5_MAGIC);
    e[16..].copy_from_slice(&digest);
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test fixtures, not untrusted input
mod tests {
    use super::*;

    fn badge_rows() -> [Partition; 4] {
        [
            Partition::new("nvs", TYPE_DATA, 0x02, 0x9000, 0x6000, 0).unwrap(),
            Partition::new("phy_init", TYPE_DATA, 0x01, 0xF000, 0x1000, 0).unwrap(),
            Partition::new("factory", TYPE_APP, SUBTYPE_FACTORY, 0x10000, 0x30_0000, 0).unwrap(),
            Partition::new(
                "model",
                TYPE_DATA,
                0x40,
                0x31_0000,
                0xCF_0000,
                FLAG_READONLY,
            )
            .unwrap(),
        ]
    }

    #[test]
    fn md5_matches_rfc1321_vector() {
        assert_eq!(
            md5(b"message digest"),
            [
                0xf9, 0x6b, 0x69, 0x7d, 0x7c, 0xb7, 0x93, 0x8d, 0x52, 0x5a, 0x2f, 0x31, 0xaa, 0xf1,
                0x61, 0xd0
            ]
        );
    }

    #[test]
    fn partition_round_trip() {
        let rows = badge_rows();
        let bin = build(&rows).unwrap();
        assert_eq!(bin.len(), TABLE_MAX_LEN);
        assert_eq!(&bin[..2], &ENTRY_MAGIC);
        assert_eq!(&bin[4 * 32..4 * 32 + 2], &MD5_MAGIC);
        assert!(bin[4 * 32 + 2..4 * 32 + 16].iter().all(|&b| b == 0xFF));
        assert!(bin[5 * 32..].iter().all(|&b| b == 0xFF));
        let t = PartitionTable::parse(&bin).unwrap();
        assert_eq!(t.len(), 4);
        assert!(t.iter().eq(rows.iter().copied()));
        let m = t.find("model").unwrap();
        assert_eq!(
            (m.offset, m.size, m.name(), m.flags),
            (0x31_0000, 0xCF_0000, "model", FLAG_READONLY)
        );
        assert_eq!(t.boot_app().unwrap().name(), "factory");
    }

    #[test]
    fn partition_entry_layout_is_little_endian() {
        let bin = build(&badge_rows()[2..3]).unwrap();
        assert_eq!(
            &bin[..12],
            &[0xAA, 0x50, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x30, 0x00]
        );
        assert_eq!(&bin[12..28], b"factory\0\0\0\0\0\0\0\0\0");
        assert_eq!(&bin[28..32], &[0, 0, 0, 0]);
    }

    #[test]
    fn partition_parse_accepts_a_short_read() {
        let bin = build(&badge_rows()).unwrap();
        assert_eq!(PartitionTable::parse(&bin[..5 * 32]).unwrap().len(), 4);
        assert_eq!(
            PartitionTable::parse(&bin[..4 * 32]).unwrap_err(),
            PartitionError::MissingMd5 { entries: 4 }
        );
    }

    #[test]
    fn partition_bad_md5() {
        let mut bin = build(&badge_rows()).unwrap();
        bin[8] ^= 1; // the first entry's size
        assert!(matches!(
            PartitionTable::parse(&bin),
            Err(PartitionError::BadMd5 { .. })
        ));
        let mut bin = build(&badge_rows()).unwrap();
        bin[4 * 32 + 31] ^= 0x80; // the stored digest
        assert!(matches!(
            PartitionTable::parse(&bin),
            Err(PartitionError::BadMd5 { .. })
        ));
    }

    #[test]
    fn partition_missing_md5_and_bad_magic() {
        let mut bin = build(&badge_rows()).unwrap();
        bin[4 * 32..5 * 32].fill(0xFF);
        assert_eq!(
            PartitionTable::parse(&bin).unwrap_err(),
            PartitionError::MissingMd5 { entries: 4 }
        );
        let erased = [0xFFu8; TABLE_MAX_LEN];
        assert_eq!(
            PartitionTable::parse(&erased).unwrap_err(),
            PartitionError::MissingMd5 { entries: 0 }
        );
        let mut bin = build(&badge_rows()).unwrap();
        bin[32] = 0x00;
        assert_eq!(
            PartitionTable::parse(&bin).unwrap_err(),
            PartitionError::BadMagic {
                index: 1,
                found: [0x00, 0x50]
            }
        );
        assert_eq!(
            PartitionTable::parse(&[0u8; 32]).unwrap_err(),
            PartitionError::BadMagic {
                index: 0,
                found: [0, 0]
            }
        );
    }

    #[test]
    fn partition_not_found() {
        let rows = badge_rows();
        let bin = build(&rows[..3]).unwrap();
        let err = PartitionTable::parse(&bin)
            .unwrap()
            .find("model")
            .unwrap_err();
        assert_eq!(
            err,
            PartitionError::NotFound {
                label: label_bytes("model")
            }
        );
        assert_eq!(
            alloc::string::ToString::to_string(&err),
            "no partition named `model` in the partition table"
        );
    }

    /// Writes `parts` without validation, as a foreign tool might, with a correct MD5.
    fn raw_table(parts: &[Partition]) -> alloc::vec::Vec<u8> {
        let mut out = alloc::vec![0xFFu8; TABLE_MAX_LEN];
        for (p, e) in parts.iter().zip(out.chunks_exact_mut(ENTRY_SIZE)) {
            p.write_entry(e);
        }
        let n = parts.len() * ENTRY_SIZE;
        let d = md5(&out[..n]);
        out[n..n + 2].copy_from_slice(&MD5_MAGIC);
        out[n + 16..n + 32].copy_from_slice(&d);
        out
    }

    #[test]
    fn partition_overlap_and_alignment() {
        let mut rows = badge_rows();
        rows[3].offset = 0x30_0000; // inside factory
        let want = PartitionError::Overlap {
            first: 2,
            second: 3,
        };
        assert_eq!(build(&rows).unwrap_err(), want);
        assert_eq!(PartitionTable::parse(&raw_table(&rows)).unwrap_err(), want);

        let mut rows = badge_rows();
        rows[2].offset = 0x18000; // app not on a 64 KB boundary
        let want = PartitionError::Unaligned {
            index: 2,
            offset: 0x18000,
            size: 0x30_0000,
            align: APP_ALIGN,
        };
        assert_eq!(build(&rows).unwrap_err(), want);
        assert_eq!(PartitionTable::parse(&raw_table(&rows)).unwrap_err(), want);

        let mut rows = badge_rows();
        rows[0].size = 0x6100; // data size not whole sectors
        assert!(matches!(
            build(&rows),
            Err(PartitionError::Unaligned { index: 0, .. })
        ));

        let mut rows = badge_rows();
        rows[0].offset = 0x8000; // on top of the table itself
        assert_eq!(
            build(&rows).unwrap_err(),
            PartitionError::OverlapsTable {
                index: 0,
                offset: 0x8000
            }
        );

        let mut rows = badge_rows();
        rows[3].size = 0;
        assert_eq!(
            build(&rows).unwrap_err(),
            PartitionError::BadSize { index: 3, size: 0 }
        );
        rows[3].offset = 0xFFFF_0000;
        rows[3].size = 0x2_0000; // past 4 GB
        assert!(matches!(
            build(&rows),
            Err(PartitionError::BadSize { index: 3, .. })
        ));
    }

    #[test]
    fn partition_bad_rows() {
        assert!(matches!(
            Partition::new("a_label_of_17_byt", TYPE_DATA, 0, 0x9000, 0x1000, 0),
            Err(PartitionError::BadLabel { .. })
        ));
        assert!(matches!(
            Partition::new("", TYPE_DATA, 0, 0x9000, 0x1000, 0),
            Err(PartitionError::BadLabel { .. })
        ));
        let mut rows = badge_rows();
        rows[1].label = rows[0].label;
        assert_eq!(
            build(&rows).unwrap_err(),
            PartitionError::DuplicateLabel {
                first: 0,
                second: 1
            }
        );
        let many: alloc::vec::Vec<Partition> = (0..96u32)
            .map(|i| Partition::new("p", TYPE_DATA, 0, 0x10000 + i * SECTOR, SECTOR, 0).unwrap())
            .collect();
        assert_eq!(
            build(&many).unwrap_err(),
            PartitionError::TooManyEntries { count: 96 }
        );
    }

    #[test]
    fn partition_csv_columns() {
        assert_eq!(parse_type("app"), Some(TYPE_APP));
        assert_eq!(parse_type("0x40"), Some(0x40));
        assert_eq!(parse_type("code"), None);
        assert_eq!(parse_subtype(TYPE_DATA, "nvs"), Some(0x02));
        assert_eq!(parse_subtype(TYPE_DATA, "0x40"), Some(0x40));
        assert_eq!(parse_subtype(TYPE_APP, "ota_3"), Some(0x13));
        assert_eq!(parse_subtype(TYPE_APP, "ota_16"), None);
        assert_eq!(parse_subtype(TYPE_APP, "nvs"), None);
        assert_eq!(parse_flags(""), Some(0));
        assert_eq!(
            parse_flags("encrypted:readonly"),
            Some(FLAG_ENCRYPTED | FLAG_READONLY)
        );
        assert_eq!(parse_flags("fast"), None);
    }
}

//! A merged flash image: everything the badge's flash should hold, as one file.
//!
//! One image means one write (`esptool write-flash 0x0 flash.bin`, or `badge sim --image`
//! reading it as the simulated flash), and the simulator sees exactly the bytes the badge
//! would: the same partition table at 0x8000 and the blob at the `model` partition offset.
//! Gaps are `FF` because that is what erased NOR flash reads as, so an image region that was
//! never written looks the same in the simulator as on a freshly erased chip.

use crate::partition::{PartitionError, PartitionTable, TABLE_MAX_LEN, TABLE_OFFSET};
use alloc::vec::Vec;

/// Where the second-stage bootloader goes on the ESP32-S3 (0x1000 on the original ESP32).
pub const BOOTLOADER_OFFSET: u32 = 0x0;

/// What to put in the image.
#[derive(Debug, Clone, Copy)]
pub struct ImageParts<'a> {
    /// The binary partition table (see [`crate::partition::build`]).
    pub table: &'a [u8],
    /// Second-stage bootloader, placed at [`BOOTLOADER_OFFSET`].
    pub bootloader: Option<&'a [u8]>,
    /// Firmware app, placed at the boot app partition (factory, else the first app).
    pub app: Option<&'a [u8]>,
    /// The model blob.
    pub model: &'a [u8],
    /// Label of the partition that receives the blob.
    pub model_partition: &'a str,
}

/// Why an image could not be assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// The table does not parse, or has no model partition.
    Table(PartitionError),
    /// The table is longer than its 0xC00-byte region.
    TableTooLong { len: usize },
    /// The bootloader would overwrite the partition table.
    BootloaderTooLarge { len: usize, max: usize },
    /// An app was given but the table has no app partition.
    NoAppPartition,
    /// A payload is larger than its partition.
    TooLarge {
        what: &'static str,
        len: usize,
        partition: u32,
    },
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImageError::Table(e) => write!(f, "{e}"),
            ImageError::TableTooLong { len } => {
                write!(
                    f,
                    "partition table is {len} bytes, more than the {TABLE_MAX_LEN} reserved for it"
                )
            }
            ImageError::BootloaderTooLarge { len, max } => {
                write!(f, "bootloader is {len} bytes and would overwrite the partition table (at most {max})")
            }
            ImageError::NoAppPartition => write!(
                f,
                "an app was given but the partition table has no app partition"
            ),
            ImageError::TooLarge {
                what,
                len,
                partition,
            } => {
                write!(
                    f,
                    "the {what} ({len} bytes) does not fit its partition ({partition} bytes)"
                )
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ImageError {}

impl From<PartitionError> for ImageError {
    fn from(e: PartitionError) -> Self {
        ImageError::Table(e)
    }
}

/// Assembles the image. It ends at the last byte written (no padding to the flash size: the
/// rest of the chip is left as it is when flashed, and a file of 16 MB of mostly `FF` helps
/// nobody). The model lands at its partition offset however large the gap before it.
pub fn build_image(parts: &ImageParts<'_>) -> Result<Vec<u8>, ImageError> {
    if parts.table.len() > TABLE_MAX_LEN {
        return Err(ImageError::TableTooLong {
            len: parts.table.len(),
        });
    }
    let table = PartitionTable::parse(parts.table)?;
    let model = table.find(parts.model_partition)?;
    fits("model blob", parts.model, model.size)?;
    let mut placed: [(u32, &[u8]); 4] = [
        (TABLE_OFFSET, parts.table),
        (model.offset, parts.model),
        (0, &[]),
        (0, &[]),
    ];
    if let Some(boot) = parts.bootloader {
        let max = (TABLE_OFFSET - BOOTLOADER_OFFSET) as usize;
        if boot.len() > max {
            return Err(ImageError::BootloaderTooLarge {
                len: boot.len(),
                max,
            });
        }
        placed[2] = (BOOTLOADER_OFFSET, boot);
    }
    if let Some(app) = parts.app {
        let p = table.boot_app().ok_or(ImageError::NoAppPartition)?;
        fits("app", app, p.size)?;
        placed[3] = (p.offset, app);
    }
    // Each part fits its partition, and partitions end within 4 GB, but a 32-bit host cannot
    // hold an image reaching that far: the end is computed in u64 and must fit usize.
    let mut end = 0u64;
    for (off, bytes) in &placed {
        end = end.max(u64::from(*off).saturating_add(bytes.len() as u64));
    }
    let end = usize::try_from(end).map_err(|_| ImageError::TooLarge {
        what: "image",
        len: usize::MAX,
        partition: u32::MAX,
    })?;
    let mut image = alloc::vec![0xFFu8; end];
    for (off, bytes) in placed {
        // `off + len <= end`, checked above in u64.
        image[off as usize..][..bytes.len()].copy_from_slice(bytes);
    }
    Ok(image)
}

fn fits(what: &'static str, bytes: &[u8], partition: u32) -> Result<(), ImageError> {
    if bytes.len() as u64 > partition as u64 {
        return Err(ImageError::TooLarge {
            what,
            len: bytes.len(),
            partition,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)] // test fixtures, not untrusted input
mod tests {
    use super::*;
    use crate::partition::{build, Partition, TYPE_APP, TYPE_DATA};

    fn table() -> Vec<u8> {
        build(&[
            Partition::new("factory", TYPE_APP, 0, 0x10000, 0x10000, 0).unwrap(),
            Partition::new("model", TYPE_DATA, 0x40, 0x20000, 0x2000, 0).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn image_places_every_part() {
        let t = table();
        let parts = ImageParts {
            table: &t,
            bootloader: Some(&[1, 2, 3]),
            app: Some(&[4; 100]),
            model: &[5; 0x2000],
            model_partition: "model",
        };
        let img = build_image(&parts).unwrap();
        assert_eq!(img.len(), 0x22000);
        assert_eq!(&img[..3], &[1, 2, 3]);
        assert!(img[3..0x8000].iter().all(|&b| b == 0xFF));
        assert_eq!(&img[0x8000..0x8C00], &t[..]);
        assert_eq!(&img[0x10000..0x10064], &[4; 100]);
        assert!(img[0x10064..0x20000].iter().all(|&b| b == 0xFF));
        assert!(img[0x20000..].iter().all(|&b| b == 5));
    }

    #[test]
    fn image_rejects_what_does_not_fit() {
        let t = table();
        let big = alloc::vec![0u8; 0x2001];
        let mut parts = ImageParts {
            table: &t,
            bootloader: None,
            app: None,
            model: &big,
            model_partition: "model",
        };
        assert_eq!(
            build_image(&parts).unwrap_err(),
            ImageError::TooLarge {
                what: "model blob",
                len: 0x2001,
                partition: 0x2000
            }
        );
        parts.model = &[];
        parts.model_partition = "weights";
        assert!(matches!(
            build_image(&parts),
            Err(ImageError::Table(PartitionError::NotFound { .. }))
        ));
        parts.model_partition = "model";
        let boot = alloc::vec![0u8; 0x8001];
        parts.bootloader = Some(&boot);
        assert!(matches!(
            build_image(&parts),
            Err(ImageError::BootloaderTooLarge { .. })
        ));
    }
}

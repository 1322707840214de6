//! The blob: the one file the badge loads from flash. Layout in `firmware/FORMAT.md`.
//!
//! This module is the only place that knows the byte layout. The host writes blobs with
//! [`BlobWriter`] (feature `std`/alloc) and both the host and the badge read them with
//! [`Blob::parse`], which works zero-copy over a `&[u8]` (a flash mapping or a PSRAM buffer)
//! and returns a typed [`BlobError`] for every malformed input instead of panicking.

use crate::config::{KvCacheKind, ModelConfig, Voice};
use alloc::vec::Vec;

/// The first four bytes of every blob.
pub const MAGIC: [u8; 4] = *b"BDGE";
/// Bumped whenever the layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 2;
/// Fixed header size; everything after it is covered by the CRC.
pub const HEADER_SIZE: usize = 128;
/// Every section and tensor starts on this boundary (PIE vector loads ignore the low 4 bits).
pub const ALIGN: usize = 16;
/// Bytes of one tensor table entry.
pub const TENSOR_ENTRY_SIZE: usize = 32;
/// Bytes of one token index entry.
pub const TOKEN_ENTRY_SIZE: usize = 8;
/// Bytes of one merge entry.
pub const MERGE_ENTRY_SIZE: usize = 16;

/// Which weight a tensor table entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum TensorKind {
    TokenEmbedding = 0,
    AttnNorm = 1,
    Wq = 2,
    Wk = 3,
    Wv = 4,
    Wo = 5,
    FfnNorm = 6,
    W1 = 7,
    W2 = 8,
    W3 = 9,
    FinalNorm = 10,
}

impl TensorKind {
    pub const ALL: [TensorKind; 11] = [
        Self::TokenEmbedding,
        Self::AttnNorm,
        Self::Wq,
        Self::Wk,
        Self::Wv,
        Self::Wo,
        Self::FfnNorm,
        Self::W1,
        Self::W2,
        Self::W3,
        Self::FinalNorm,
    ];
    /// Per-layer kinds, in the order the writer stores them.
    pub const PER_LAYER: [TensorKind; 9] = [
        Self::AttnNorm,
        Self::Wq,
        Self::Wk,
        Self::Wv,
        Self::Wo,
        Self::FfnNorm,
        Self::W1,
        Self::W2,
        Self::W3,
    ];

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v)).copied()
    }

    /// The short name used in reports and checkpoints (`wq`, `attn_norm`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::TokenEmbedding => "tok_embeddings",
            Self::AttnNorm => "attn_norm",
            Self::Wq => "wq",
            Self::Wk => "wk",
            Self::Wv => "wv",
            Self::Wo => "wo",
            Self::FfnNorm => "ffn_norm",
            Self::W1 => "w1",
            Self::W2 => "w2",
            Self::W3 => "w3",
            Self::FinalNorm => "norm",
        }
    }

    pub fn is_per_layer(self) -> bool {
        !matches!(self, Self::TokenEmbedding | Self::FinalNorm)
    }

    /// Norm weights stay f32; every matrix is Q8_0.
    pub fn is_norm(self) -> bool {
        matches!(self, Self::AttnNorm | Self::FfnNorm | Self::FinalNorm)
    }

    /// `(rows, cols)` of this tensor for a config; norms are one row of `dim`.
    pub fn shape(self, c: &ModelConfig) -> (usize, usize) {
        let (dim, hidden, kv_dim) = (c.dim as usize, c.hidden_dim as usize, c.kv_dim());
        match self {
            Self::TokenEmbedding => (c.vocab_size as usize, dim),
            Self::AttnNorm | Self::FfnNorm | Self::FinalNorm => (1, dim),
            Self::Wq | Self::Wo => (dim, dim),
            Self::Wk | Self::Wv => (kv_dim, dim),
            Self::W1 | Self::W3 => (hidden, dim),
            Self::W2 => (dim, hidden),
        }
    }
}

/// How a tensor's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DType {
    F32 = 0,
    Q8_0 = 1,
}

/// What kind of token a vocabulary entry is, so the badge needs no string parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenKind {
    /// Ordinary text piece; `▁` stands for a space.
    Normal = 0,
    /// `<0xXX>` byte-fallback token; the byte is stored beside it.
    Byte = 1,
    /// `<unk>`, `<s>`, `</s>`: never printed.
    Control = 2,
}

/// Everything that can be wrong with a blob. Each variant names what was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobError {
    TooShort {
        len: usize,
    },
    BadMagic {
        found: [u8; 4],
    },
    UnsupportedVersion {
        found: u32,
        supported: u32,
    },
    BadHeaderSize {
        found: u32,
    },
    LengthMismatch {
        header: u32,
        actual: usize,
    },
    CrcMismatch {
        stored: u32,
        computed: u32,
    },
    Misaligned {
        what: &'static str,
        offset: usize,
    },
    OutOfBounds {
        what: &'static str,
        offset: usize,
        len: usize,
        blob_len: usize,
    },
    BadConfig {
        field: &'static str,
        value: u32,
    },
    BadGroupSize {
        group_size: u32,
    },
    BadKvCache {
        value: u32,
    },
    BadTensor {
        index: usize,
        reason: &'static str,
    },
    MissingTensor {
        kind: TensorKind,
        layer: u32,
    },
    DuplicateTensor {
        kind: TensorKind,
        layer: u32,
    },
    WrongShape {
        kind: TensorKind,
        layer: u32,
        expected: (usize, usize),
        found: (usize, usize),
    },
    BadTokenizer {
        reason: &'static str,
    },
    BadTemplate {
        reason: &'static str,
    },
    BadAnswers {
        reason: &'static str,
    },
}

impl core::fmt::Display for BlobError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use BlobError::*;
        match self {
            TooShort { len } => write!(f, "blob is {len} bytes, shorter than the {HEADER_SIZE}-byte header"),
            BadMagic { found } => write!(f, "not a badge model blob (magic {found:02x?}, expected \"BDGE\")"),
            UnsupportedVersion { found, supported } => write!(f, "blob format version {found}, this build reads version {supported}: re-export the model with this version of badge"),
            BadHeaderSize { found } => write!(f, "header size field is {found}, expected {HEADER_SIZE}"),
            LengthMismatch { header, actual } => write!(f, "header says the blob is {header} bytes but {actual} are present (truncated or padded)"),
            CrcMismatch { stored, computed } => write!(f, "CRC32 mismatch: stored {stored:08x}, computed {computed:08x} (the blob is corrupt)"),
            Misaligned { what, offset } => write!(f, "{what} at offset {offset} is not {ALIGN}-byte aligned"),
            OutOfBounds { what, offset, len, blob_len } => write!(f, "{what} ({len} bytes at offset {offset}) runs past the end of the {blob_len}-byte blob"),
            BadConfig { field, value } => write!(f, "model config field `{field}` has invalid value {value}"),
            BadGroupSize { group_size } => write!(f, "group size {group_size} is not a power of two dividing dim and hidden_dim"),
            BadKvCache { value } => write!(f, "unknown KV cache kind {value}"),
            BadTensor { index, reason } => write!(f, "tensor table entry {index}: {reason}"),
            MissingTensor { kind, layer } => write!(f, "tensor {} of layer {layer} is missing", kind.name()),
            DuplicateTensor { kind, layer } => write!(f, "tensor {} of layer {layer} appears twice", kind.name()),
            WrongShape { kind, layer, expected, found } => write!(f, "tensor {} of layer {layer} has shape {found:?}, the config needs {expected:?}", kind.name()),
            BadTokenizer { reason } => write!(f, "tokenizer section: {reason}"),
            BadTemplate { reason } => write!(f, "prompt template: {reason}"),
            BadAnswers { reason } => write!(f, "answers section: {reason}"),
        }
    }
}

/// A tensor's values, borrowed from the blob.
#[derive(Debug, Clone, Copy)]
pub enum TensorData<'a> {
    F32(&'a [f32]),
    Q8 { q: &'a [i8], scales: &'a [f32] },
}

/// One entry of the tensor table, with its data borrowed from the blob.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub kind: TensorKind,
    pub layer: u32,
    pub rows: usize,
    pub cols: usize,
    /// Offset of the values within the blob (for reports and the memory plan).
    pub offset: usize,
    pub data: TensorData<'a>,
}

impl TensorView<'_> {
    /// Bytes this tensor occupies in the blob (values plus scales).
    pub fn byte_len(&self) -> usize {
        match self.data {
            TensorData::F32(v) => v.len() * 4,
            TensorData::Q8 { q, scales } => q.len() + scales.len() * 4,
        }
    }
}

/// The tokenizer section, borrowed from the blob.
#[derive(Debug, Clone, Copy)]
pub struct TokenizerSection<'a> {
    pub(crate) index: &'a [u8],
    pub(crate) merges: &'a [u8],
    pub(crate) sorted: &'a [u8],
    pub(crate) strings: &'a [u8],
    pub n_tokens: usize,
    pub n_merges: usize,
    /// Every numeric character is a word of its own (as the host's `Digits` pre-tokenizer).
    pub split_digits: bool,
}

/// Tokenizer section flag: numeric characters are split into words of their own.
pub const TOKENIZER_SPLIT_DIGITS: u32 = 1;

impl<'a> TokenizerSection<'a> {
    /// The raw vocabulary string of token `id` (with `▁` for spaces; `<0xXX>` for bytes).
    pub fn piece(&self, id: u32) -> &'a [u8] {
        let e = &self.index[id as usize * TOKEN_ENTRY_SIZE..][..TOKEN_ENTRY_SIZE];
        let off = read_u32(e, 0) as usize;
        let len = usize::from(read_u16(e, 4));
        &self.strings[off..off + len]
    }
    pub fn kind(&self, id: u32) -> TokenKind {
        match self.index[id as usize * TOKEN_ENTRY_SIZE + 6] {
            1 => TokenKind::Byte,
            2 => TokenKind::Control,
            _ => TokenKind::Normal,
        }
    }
    /// The byte a `Byte` token stands for.
    pub fn byte(&self, id: u32) -> u8 {
        self.index[id as usize * TOKEN_ENTRY_SIZE + 7]
    }
    /// The `i`-th merge entry in (left, right) order: `(left, right, result, rank)`.
    pub fn merge(&self, i: usize) -> (u32, u32, u32, u32) {
        let e = &self.merges[i * MERGE_ENTRY_SIZE..][..MERGE_ENTRY_SIZE];
        (
            read_u32(e, 0),
            read_u32(e, 4),
            read_u32(e, 8),
            read_u32(e, 12),
        )
    }
    /// The `i`-th token id in byte-wise order of the pieces.
    pub fn sorted_id(&self, i: usize) -> u32 {
        read_u32(self.sorted, i * 4)
    }
}

/// A validated blob. Borrowing it costs nothing: all views point into the original bytes.
#[derive(Debug, Clone)]
pub struct Blob<'a> {
    pub bytes: &'a [u8],
    pub config: ModelConfig,
    pub group_size: usize,
    pub kv_cache: KvCacheKind,
    pub voice: Voice,
    pub bos_id: u32,
    pub eos_id: u32,
    pub crc32: u32,
    pub tokenizer: TokenizerSection<'a>,
    pub template: &'a str,
    /// The known answers and the fallback line (None: the blob only generates freely).
    pub answers: Option<crate::answers::AnswerSet<'a>>,
    tensor_table: &'a [u8],
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn read_f32(b: &[u8], at: usize) -> f32 {
    f32::from_bits(read_u32(b, at))
}

/// Bounds-checked sub-slice: `what` names the region in the error.
fn region<'a>(
    bytes: &'a [u8],
    what: &'static str,
    offset: usize,
    len: usize,
) -> Result<&'a [u8], BlobError> {
    match offset.checked_add(len) {
        Some(end) if end <= bytes.len() => Ok(&bytes[offset..end]),
        _ => Err(BlobError::OutOfBounds {
            what,
            offset,
            len,
            blob_len: bytes.len(),
        }),
    }
}

fn aligned_region<'a>(
    bytes: &'a [u8],
    what: &'static str,
    offset: usize,
    len: usize,
) -> Result<&'a [u8], BlobError> {
    if !offset.is_multiple_of(ALIGN) {
        return Err(BlobError::Misaligned { what, offset });
    }
    region(bytes, what, offset, len)
}

#[cfg(target_endian = "big")]
compile_error!("the blob stores little-endian f32 values and is read in place: big-endian targets are not supported");

/// Reinterprets 4-aligned little-endian bytes as f32s without copying.
fn as_f32(bytes: &[u8]) -> &[f32] {
    // SAFETY: callers pass regions whose offset is 16-aligned within a blob whose base is
    // 16-aligned (checked in `Blob::parse`), every bit pattern is a valid f32, the length is
    // rounded down to whole values, and the target is little-endian (compile_error above).
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), bytes.len() / 4) }
}

fn as_i8(bytes: &[u8]) -> &[i8] {
    // SAFETY: i8 and u8 have the same size, alignment and validity.
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
}

/// Header field offsets (see FORMAT.md).
mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const HEADER_SIZE: usize = 8;
    pub const TOTAL_LEN: usize = 12;
    pub const CRC: usize = 16;
    pub const CONFIG: usize = 20; // 7 × u32, then norm_eps f32 @48, rope_theta f32 @52
    pub const NORM_EPS: usize = 48;
    pub const ROPE_THETA: usize = 52;
    pub const GROUP_SIZE: usize = 56;
    pub const KV_CACHE: usize = 60;
    pub const VOICE: usize = 64; // speed, pitch, mouth, throat: 4 × u8
    pub const BOS: usize = 68;
    pub const EOS: usize = 72;
    pub const TOKENIZER: usize = 76; // offset u32, len u32
    pub const TEMPLATE: usize = 84; // offset u32, len u32
    pub const TENSORS: usize = 92; // offset u32, count u32
    pub const ANSWERS: usize = 120; // offset u32, len u32 (0, 0: none)
}

/// Computes the CRC32 (IEEE) of a byte slice (the badge computes the same one while copying
/// the blob from flash, with `crc32fast::Hasher`, see `app.rs`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

impl<'a> Blob<'a> {
    /// Reads the header fields needed before the whole blob is in memory: the total length and
    /// the CRC (so a loader can stream-check the CRC while copying from flash).
    pub fn peek_header(bytes: &[u8]) -> Result<(u32, u32), BlobError> {
        if bytes.len() < HEADER_SIZE {
            return Err(BlobError::TooShort { len: bytes.len() });
        }
        Self::check_ident(bytes)?;
        Ok((read_u32(bytes, hdr::TOTAL_LEN), read_u32(bytes, hdr::CRC)))
    }

    fn check_ident(bytes: &[u8]) -> Result<(), BlobError> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(BlobError::BadMagic { found: magic });
        }
        let version = read_u32(bytes, hdr::VERSION);
        if version != FORMAT_VERSION {
            return Err(BlobError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let header_size = read_u32(bytes, hdr::HEADER_SIZE);
        if header_size as usize != HEADER_SIZE {
            return Err(BlobError::BadHeaderSize { found: header_size });
        }
        Ok(())
    }

    /// Validates everything and returns zero-copy views. `bytes` must start 16-byte aligned.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BlobError> {
        Self::parse_inner(bytes, true)
    }

    /// Like [`Blob::parse`] but trusts a CRC the caller already verified while streaming.
    pub fn parse_crc_checked(bytes: &'a [u8]) -> Result<Self, BlobError> {
        Self::parse_inner(bytes, false)
    }

    fn parse_inner(bytes: &'a [u8], check_crc: bool) -> Result<Self, BlobError> {
        if bytes.len() < HEADER_SIZE {
            return Err(BlobError::TooShort { len: bytes.len() });
        }
        Self::check_ident(bytes)?;
        if !(bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(BlobError::Misaligned {
                what: "blob start in memory",
                offset: 0,
            });
        }
        let total = read_u32(bytes, hdr::TOTAL_LEN);
        if total as usize != bytes.len() {
            return Err(BlobError::LengthMismatch {
                header: total,
                actual: bytes.len(),
            });
        }
        let stored_crc = read_u32(bytes, hdr::CRC);
        if check_crc {
            let computed = crc32(&bytes[HEADER_SIZE..]);
            if computed != stored_crc {
                return Err(BlobError::CrcMismatch {
                    stored: stored_crc,
                    computed,
                });
            }
        }
        let config = read_config(bytes)?;
        let group_size = read_u32(bytes, hdr::GROUP_SIZE);
        let gs = group_size as usize;
        if gs == 0
            || !gs.is_power_of_two()
            || !(config.dim as usize).is_multiple_of(gs)
            || !(config.hidden_dim as usize).is_multiple_of(gs)
        {
            return Err(BlobError::BadGroupSize { group_size });
        }
        let kv_raw = read_u32(bytes, hdr::KV_CACHE);
        let kv_cache =
            KvCacheKind::from_u32(kv_raw).ok_or(BlobError::BadKvCache { value: kv_raw })?;
        let v = &bytes[hdr::VOICE..hdr::VOICE + 4];
        let voice = Voice {
            speed: v[0],
            pitch: v[1],
            mouth: v[2],
            throat: v[3],
        };
        let bos_id = read_u32(bytes, hdr::BOS);
        let eos_id = read_u32(bytes, hdr::EOS);
        for (field, id) in [("bos_id", bos_id), ("eos_id", eos_id)] {
            if id >= config.vocab_size {
                return Err(BlobError::BadConfig { field, value: id });
            }
        }

        let tokenizer = parse_tokenizer(bytes, &config)?;
        let (t_off, t_len) = (
            read_u32(bytes, hdr::TEMPLATE) as usize,
            read_u32(bytes, hdr::TEMPLATE + 4) as usize,
        );
        let template =
            core::str::from_utf8(aligned_region(bytes, "prompt template", t_off, t_len)?).map_err(
                |_| BlobError::BadTemplate {
                    reason: "not UTF-8",
                },
            )?;
        crate::template::PromptTemplate::parse(template)
            .map_err(|reason| BlobError::BadTemplate { reason })?;

        let answers = parse_answers(bytes, &config, bos_id, eos_id)?;

        let tt_off = read_u32(bytes, hdr::TENSORS) as usize;
        let tt_count = read_u32(bytes, hdr::TENSORS + 4) as usize;
        let table_len = tt_count
            .checked_mul(TENSOR_ENTRY_SIZE)
            .ok_or(BlobError::BadTensor {
                index: 0,
                reason: "tensor count overflows",
            })?;
        let tensor_table = aligned_region(bytes, "tensor table", tt_off, table_len)?;
        let blob = Blob {
            bytes,
            config,
            group_size: gs,
            kv_cache,
            voice,
            bos_id,
            eos_id,
            crc32: stored_crc,
            tokenizer,
            template,
            answers,
            tensor_table,
        };
        blob.check_tensors()?;
        Ok(blob)
    }

    /// Number of tensor table entries.
    pub fn tensor_count(&self) -> usize {
        self.tensor_table.len() / TENSOR_ENTRY_SIZE
    }

    /// Tensor table entry `i` (already validated by `parse`).
    pub fn tensor_at(&self, i: usize) -> Result<TensorView<'a>, BlobError> {
        let e = &self.tensor_table[i * TENSOR_ENTRY_SIZE..][..TENSOR_ENTRY_SIZE];
        let bad = |reason| BlobError::BadTensor { index: i, reason };
        let kind = TensorKind::from_u8(e[0]).ok_or(bad("unknown tensor kind"))?;
        let layer = u32::from(read_u16(e, 2));
        let rows = read_u32(e, 4) as usize;
        let cols = read_u32(e, 8) as usize;
        let offset = read_u32(e, 12) as usize;
        let numel = rows.checked_mul(cols).ok_or(bad("rows × cols overflows"))?;
        let data = match e[1] {
            0 => {
                let raw = aligned_region(self.bytes, "f32 tensor data", offset, numel * 4)?;
                TensorData::F32(as_f32(raw))
            }
            1 => {
                let q = aligned_region(self.bytes, "int8 tensor data", offset, numel)?;
                let s_off = read_u32(e, 16) as usize;
                if !cols.is_multiple_of(self.group_size) {
                    return Err(bad("row length is not a multiple of the group size"));
                }
                let s = aligned_region(
                    self.bytes,
                    "tensor scales",
                    s_off,
                    numel / self.group_size * 4,
                )?;
                TensorData::Q8 {
                    q: as_i8(q),
                    scales: as_f32(s),
                }
            }
            _ => return Err(bad("unknown dtype")),
        };
        Ok(TensorView {
            kind,
            layer,
            rows,
            cols,
            offset,
            data,
        })
    }

    /// Every tensor the config needs is present exactly once, with the right shape and dtype.
    fn check_tensors(&self) -> Result<(), BlobError> {
        let n_layers = self.config.n_layers;
        for i in 0..self.tensor_count() {
            let t = self.tensor_at(i)?;
            if t.kind.is_per_layer() && t.layer >= n_layers
                || !t.kind.is_per_layer() && t.layer != 0
            {
                return Err(BlobError::BadTensor {
                    index: i,
                    reason: "layer index out of range",
                });
            }
            let expected = t.kind.shape(&self.config);
            if (t.rows, t.cols) != expected {
                return Err(BlobError::WrongShape {
                    kind: t.kind,
                    layer: t.layer,
                    expected,
                    found: (t.rows, t.cols),
                });
            }
            let is_f32 = matches!(t.data, TensorData::F32(_));
            if is_f32 != t.kind.is_norm() {
                return Err(BlobError::BadTensor {
                    index: i,
                    reason: "norms must be f32 and matrices Q8_0",
                });
            }
            for j in 0..i {
                let u = self.tensor_at(j)?;
                if u.kind == t.kind && u.layer == t.layer {
                    return Err(BlobError::DuplicateTensor {
                        kind: t.kind,
                        layer: t.layer,
                    });
                }
            }
        }
        for kind in TensorKind::ALL {
            let layers = if kind.is_per_layer() { n_layers } else { 1 };
            for layer in 0..layers {
                self.find(kind, layer)?;
            }
        }
        Ok(())
    }

    /// The tensor of `kind` in `layer` (0 for the global ones).
    pub fn find(&self, kind: TensorKind, layer: u32) -> Result<TensorView<'a>, BlobError> {
        for i in 0..self.tensor_count() {
            let e = &self.tensor_table[i * TENSOR_ENTRY_SIZE..];
            if e[0] == kind as u8 && u32::from(read_u16(e, 2)) == layer {
                return self.tensor_at(i);
            }
        }
        Err(BlobError::MissingTensor { kind, layer })
    }
}

fn read_config(b: &[u8]) -> Result<ModelConfig, BlobError> {
    let f = |i: usize| read_u32(b, hdr::CONFIG + 4 * i);
    let c = ModelConfig {
        dim: f(0),
        hidden_dim: f(1),
        n_layers: f(2),
        n_heads: f(3),
        n_kv_heads: f(4),
        vocab_size: f(5),
        seq_len: f(6),
        norm_eps: read_f32(b, hdr::NORM_EPS),
        rope_theta: read_f32(b, hdr::ROPE_THETA),
    };
    c.validate()
        .map_err(|(field, value)| BlobError::BadConfig { field, value })?;
    Ok(c)
}

/// The optional answers section (offset and length 0 when absent), validated by
/// [`crate::answers::AnswerSet::parse`].
fn parse_answers<'a>(
    bytes: &'a [u8],
    config: &ModelConfig,
    bos_id: u32,
    eos_id: u32,
) -> Result<Option<crate::answers::AnswerSet<'a>>, BlobError> {
    let off = read_u32(bytes, hdr::ANSWERS) as usize;
    let len = read_u32(bytes, hdr::ANSWERS + 4) as usize;
    if off == 0 && len == 0 {
        return Ok(None);
    }
    let sec = aligned_region(bytes, "answers section", off, len)?;
    crate::answers::AnswerSet::parse(sec, config.vocab_size, bos_id, eos_id)
        .map(Some)
        .map_err(|e| BlobError::BadAnswers { reason: e.0 })
}

fn parse_tokenizer<'a>(
    bytes: &'a [u8],
    config: &ModelConfig,
) -> Result<TokenizerSection<'a>, BlobError> {
    let bad = |reason| BlobError::BadTokenizer { reason };
    let off = read_u32(bytes, hdr::TOKENIZER) as usize;
    let len = read_u32(bytes, hdr::TOKENIZER + 4) as usize;
    let sec = aligned_region(bytes, "tokenizer section", off, len)?;
    if sec.len() < 16 {
        return Err(bad("section shorter than its 16-byte header"));
    }
    let n_tokens = read_u32(sec, 0) as usize;
    let n_merges = read_u32(sec, 4) as usize;
    if n_tokens != config.vocab_size as usize {
        return Err(bad("token count differs from the model's vocab_size"));
    }
    let index_len = n_tokens * TOKEN_ENTRY_SIZE;
    let merges_len = n_merges
        .checked_mul(MERGE_ENTRY_SIZE)
        .ok_or(bad("merge count overflows"))?;
    let sorted_len = n_tokens * 4;
    let strings_off = 16 + index_len + merges_len + sorted_len;
    if strings_off > sec.len() {
        return Err(bad(
            "token index, merges or sorted index run past the section",
        ));
    }
    let flags = read_u32(sec, 12);
    if flags & !TOKENIZER_SPLIT_DIGITS != 0 {
        return Err(bad("unknown tokenizer flags"));
    }
    let t = TokenizerSection {
        split_digits: flags & TOKENIZER_SPLIT_DIGITS != 0,
        index: &sec[16..16 + index_len],
        merges: &sec[16 + index_len..16 + index_len + merges_len],
        sorted: &sec[16 + index_len + merges_len..strings_off],
        strings: &sec[strings_off..],
        n_tokens,
        n_merges,
    };
    for id in 0..n_tokens {
        let e = &t.index[id * TOKEN_ENTRY_SIZE..][..TOKEN_ENTRY_SIZE];
        let (o, l) = (read_u32(e, 0) as usize, usize::from(read_u16(e, 4)));
        if o + l > t.strings.len() {
            return Err(bad("a token's string runs past the string table"));
        }
        if e[6] > 2 {
            return Err(bad("unknown token kind"));
        }
        if (t.sorted_id(id) as usize) >= n_tokens {
            return Err(bad("sorted index names a token that does not exist"));
        }
    }
    for i in 1..n_tokens {
        if t.piece(t.sorted_id(i - 1)) >= t.piece(t.sorted_id(i)) {
            return Err(bad("sorted index is not strictly ordered"));
        }
    }
    let mut prev = None;
    for i in 0..n_merges {
        let (l, r, res, _rank) = t.merge(i);
        if l as usize >= n_tokens || r as usize >= n_tokens || res as usize >= n_tokens {
            return Err(bad("a merge names a token that does not exist"));
        }
        if prev.is_some_and(|p| p >= (l, r)) {
            return Err(bad("merges are not sorted by (left, right)"));
        }
        prev = Some((l, r));
    }
    Ok(t)
}

/// The tokenizer as the writer receives it: pieces in id order and merges in rank order.
#[derive(Debug, Clone, Default)]
pub struct TokenizerSpec {
    /// `(piece, kind, byte)` per token id.
    pub tokens: Vec<(alloc::string::String, TokenKind, u8)>,
    /// `(left, right, result)` ids, highest priority first (rank = index).
    pub merges: Vec<(u32, u32, u32)>,
    /// Numeric characters are words of their own.
    pub split_digits: bool,
}

/// An owned tensor for the writer.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub kind: TensorKind,
    pub layer: u32,
    pub rows: usize,
    pub cols: usize,
    pub values: OwnedTensorData,
}

#[derive(Debug, Clone)]
pub enum OwnedTensorData {
    F32(Vec<f32>),
    Q8 { q: Vec<i8>, scales: Vec<f32> },
}

/// Everything a blob holds, before serialisation.
#[derive(Debug, Clone)]
pub struct BlobSpec {
    pub config: ModelConfig,
    pub group_size: u32,
    pub kv_cache: KvCacheKind,
    pub voice: Voice,
    pub bos_id: u32,
    pub eos_id: u32,
    pub tokenizer: TokenizerSpec,
    pub template: alloc::string::String,
    /// The known answers (None: open generation only).
    pub answers: Option<crate::answers::AnswersSpec>,
    pub tensors: Vec<TensorSpec>,
}

/// Serialises a [`BlobSpec`]. Deterministic: the same spec gives the same bytes.
pub struct BlobWriter {
    out: Vec<u8>,
}

impl BlobWriter {
    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(ALIGN) {
            self.out.push(0);
        }
    }
    fn put_u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn patch_u32(&mut self, at: usize, v: u32) {
        self.out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn u32_of(v: usize) -> u32 {
        u32::try_from(v).expect("blob larger than 4 GiB")
    }

    /// Writes the blob. Panics only on programmer errors (a spec the loader would reject is
    /// caught by the round-trip test suite, not here).
    pub fn write(spec: &BlobSpec) -> Vec<u8> {
        let mut w = BlobWriter { out: Vec::new() };
        w.out.resize(HEADER_SIZE, 0);
        w.out[hdr::MAGIC..hdr::MAGIC + 4].copy_from_slice(&MAGIC);
        w.patch_u32(hdr::VERSION, FORMAT_VERSION);
        w.patch_u32(hdr::HEADER_SIZE, HEADER_SIZE as u32);
        let c = &spec.config;
        for (i, v) in c.header_fields().into_iter().enumerate() {
            w.patch_u32(hdr::CONFIG + 4 * i, v);
        }
        w.patch_u32(hdr::NORM_EPS, c.norm_eps.to_bits());
        w.patch_u32(hdr::ROPE_THETA, c.rope_theta.to_bits());
        w.patch_u32(hdr::GROUP_SIZE, spec.group_size);
        w.patch_u32(hdr::KV_CACHE, spec.kv_cache as u32);
        let v = spec.voice;
        w.out[hdr::VOICE..hdr::VOICE + 4].copy_from_slice(&[v.speed, v.pitch, v.mouth, v.throat]);
        w.patch_u32(hdr::BOS, spec.bos_id);
        w.patch_u32(hdr::EOS, spec.eos_id);

        // Tokenizer section.
        let tok_off = w.out.len();
        w.write_tokenizer(&spec.tokenizer);
        let tok_len = w.out.len() - tok_off;
        w.patch_u32(hdr::TOKENIZER, Self::u32_of(tok_off));
        w.patch_u32(hdr::TOKENIZER + 4, Self::u32_of(tok_len));
        w.pad();

        // Prompt template.
        let tpl_off = w.out.len();
        w.out.extend_from_slice(spec.template.as_bytes());
        w.patch_u32(hdr::TEMPLATE, Self::u32_of(tpl_off));
        w.patch_u32(hdr::TEMPLATE + 4, Self::u32_of(spec.template.len()));
        w.pad();

        // Known answers.
        if let Some(a) = &spec.answers {
            let off = w.out.len();
            let bytes = crate::answers::write_answers(a);
            w.out.extend_from_slice(&bytes);
            w.patch_u32(hdr::ANSWERS, Self::u32_of(off));
            w.patch_u32(hdr::ANSWERS + 4, Self::u32_of(bytes.len()));
            w.pad();
        }

        // Tensor table, then the data it points to.
        let table_off = w.out.len();
        w.patch_u32(hdr::TENSORS, Self::u32_of(table_off));
        w.patch_u32(hdr::TENSORS + 4, Self::u32_of(spec.tensors.len()));
        w.out
            .resize(table_off + spec.tensors.len() * TENSOR_ENTRY_SIZE, 0);
        w.pad();
        for (i, t) in spec.tensors.iter().enumerate() {
            let e = table_off + i * TENSOR_ENTRY_SIZE;
            w.out[e] = t.kind as u8;
            w.out[e + 2..e + 4].copy_from_slice(&(t.layer as u16).to_le_bytes());
            w.patch_u32(e + 4, Self::u32_of(t.rows));
            w.patch_u32(e + 8, Self::u32_of(t.cols));
            let data_off = w.out.len();
            w.patch_u32(e + 12, Self::u32_of(data_off));
            match &t.values {
                OwnedTensorData::F32(v) => {
                    w.out[e + 1] = DType::F32 as u8;
                    v.iter()
                        .for_each(|x| w.out.extend_from_slice(&x.to_le_bytes()));
                    w.pad();
                }
                OwnedTensorData::Q8 { q, scales } => {
                    w.out[e + 1] = DType::Q8_0 as u8;
                    w.out.extend(q.iter().map(|&x| x as u8));
                    w.pad();
                    let s_off = w.out.len();
                    w.patch_u32(e + 16, Self::u32_of(s_off));
                    scales
                        .iter()
                        .for_each(|x| w.out.extend_from_slice(&x.to_le_bytes()));
                    w.pad();
                }
            }
        }
        let total = w.out.len();
        w.patch_u32(hdr::TOTAL_LEN, Self::u32_of(total));
        let crc = crc32(&w.out[HEADER_SIZE..]);
        w.patch_u32(hdr::CRC, crc);
        w.out
    }

    fn write_tokenizer(&mut self, t: &TokenizerSpec) {
        let n = t.tokens.len();
        self.put_u32(Self::u32_of(n));
        self.put_u32(Self::u32_of(t.merges.len()));
        let max_len = t.tokens.iter().map(|p| p.0.len()).max().unwrap_or(0);
        self.put_u32(Self::u32_of(max_len));
        self.put_u32(if t.split_digits {
            TOKENIZER_SPLIT_DIGITS
        } else {
            0
        });
        let mut string_off = 0u32;
        for (piece, kind, byte) in &t.tokens {
            self.put_u32(string_off);
            self.out
                .extend_from_slice(&(piece.len() as u16).to_le_bytes());
            self.out.push(*kind as u8);
            self.out.push(*byte);
            string_off += Self::u32_of(piece.len());
        }
        let mut merges: Vec<(u32, u32, u32, u32)> = t
            .merges
            .iter()
            .enumerate()
            .map(|(rank, &(l, r, res))| (l, r, res, rank as u32))
            .collect();
        merges.sort_unstable();
        for (l, r, res, rank) in merges {
            for v in [l, r, res, rank] {
                self.put_u32(v);
            }
        }
        let mut sorted: Vec<u32> = (0..Self::u32_of(n)).collect();
        sorted.sort_by(|&a, &b| {
            t.tokens[a as usize]
                .0
                .as_bytes()
                .cmp(t.tokens[b as usize].0.as_bytes())
        });
        for id in sorted {
            self.put_u32(id);
        }
        for (piece, _, _) in &t.tokens {
            self.out.extend_from_slice(piece.as_bytes());
        }
    }
}

//! The blob: the one file the badge loads from flash. Layout in `firmware/FORMAT.md`.
//!
//! This module is the only place that knows the byte layout. The host writes blobs with
//! [`BlobWriter`] (feature `std`/alloc) and both the host and the badge read them with
//! [`Blob::parse`], which works zero-copy over a `&[u8]` (a flash mapping or a PSRAM buffer)
//! and returns a typed [`BlobError`] for every malformed input instead of panicking.

use crate::config::{KvCacheKind, ModelConfig, Voice};
use crate::prompts::{Prompts, PromptsSpec};
use alloc::vec::Vec;

/// The first four bytes of every blob.
pub const MAGIC: [u8; 4] = *b"BDGE";
/// Bumped whenever the layout changes incompatibly (2: the button prompts and answers sections;
/// 3: question words; 4: the question match).
pub const FORMAT_VERSION: u32 = 4;
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
    /// A size computed from header fields does not fit the address space (32 bits on the
    /// badge) or exceeds the memory the caller allows.
    TooLarge {
        what: &'static str,
        bytes: u64,
        limit: u64,
    },
    /// The allocator could not provide a buffer the blob needs.
    OutOfMemory {
        what: &'static str,
        bytes: u64,
    },
    /// The button prompts section is malformed.
    BadPrompts {
        reason: &'static str,
    },
    /// The answers section is malformed.
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
            BadConfig { field, value } => match crate::config::field_limit(field) {
                Some(max) => write!(f, "model config field `{field}` has invalid value {value} (allowed: 1 to {max})"),
                None => write!(f, "model config field `{field}` has invalid value {value}"),
            },
            BadGroupSize { group_size } => write!(f, "group size {group_size} is not a power of two dividing dim and hidden_dim"),
            BadKvCache { value } => write!(f, "unknown KV cache kind {value}"),
            BadTensor { index, reason } => write!(f, "tensor table entry {index}: {reason}"),
            MissingTensor { kind, layer } => write!(f, "tensor {} of layer {layer} is missing", kind.name()),
            DuplicateTensor { kind, layer } => write!(f, "tensor {} of layer {layer} appears twice", kind.name()),
            WrongShape { kind, layer, expected, found } => write!(f, "tensor {} of layer {layer} has shape {found:?}, the config needs {expected:?}", kind.name()),
            BadTokenizer { reason } => write!(f, "tokenizer section: {reason}"),
            BadTemplate { reason } => write!(f, "prompt template: {reason}"),
            TooLarge { what, bytes, limit } => write!(f, "the {what} needs {bytes} bytes, more than the {limit} allowed"),
            OutOfMemory { what, bytes } => write!(f, "could not allocate the {what} (run state of {bytes} bytes): not enough memory"),
            BadPrompts { reason } => write!(f, "button prompts section: {reason}"),
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
            TensorData::F32(v) => core::mem::size_of_val(v),
            // Both are slices of one blob, so the sum fits the address space.
            TensorData::Q8 { q, scales } => q.len().saturating_add(core::mem::size_of_val(scales)),
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

/// Entry `i` of a table of `size`-byte entries; `None` past its end. No multiplication that
/// could wrap: the chunk iterator checks the position itself.
fn entry(table: &[u8], size: usize, i: usize) -> Option<&[u8]> {
    table.chunks_exact(size).nth(i)
}

/// The token index entry of `id`: (string offset, length, kind byte, byte value).
fn token_entry(index: &[u8], id: usize) -> Option<(usize, usize, u8, u8)> {
    let e = entry(index, TOKEN_ENTRY_SIZE, id)?;
    Some((
        usize_of(read_u32(e, 0)),
        usize::from(read_u16(e, 4)),
        e[6],
        e[7],
    ))
}

/// A u32 from the blob as usize. Lossless on the 32- and 64-bit targets this crate supports.
fn usize_of(v: u32) -> usize {
    const { assert!(usize::BITS >= 32) };
    v as usize
}

/// Token accessors take ids the caller has checked against `n_tokens` (the tokenizer and the
/// sampler only produce such ids); an id past the vocabulary reads as an empty control token
/// rather than panicking.
impl<'a> TokenizerSection<'a> {
    /// The raw vocabulary string of token `id` (with `▁` for spaces; `<0xXX>` for bytes).
    pub fn piece(&self, id: u32) -> &'a [u8] {
        token_entry(self.index, usize_of(id))
            .and_then(|(off, len, _, _)| self.strings.get(off..)?.get(..len))
            .unwrap_or(&[])
    }
    pub fn kind(&self, id: u32) -> TokenKind {
        match token_entry(self.index, usize_of(id)).map(|e| e.2) {
            Some(0) => TokenKind::Normal,
            Some(1) => TokenKind::Byte,
            _ => TokenKind::Control,
        }
    }
    /// The byte a `Byte` token stands for.
    pub fn byte(&self, id: u32) -> u8 {
        token_entry(self.index, usize_of(id)).map_or(0, |e| e.3)
    }
    /// The `i`-th merge entry in (left, right) order: `(left, right, result, rank)`; past the
    /// end, an entry naming no token.
    pub fn merge(&self, i: usize) -> (u32, u32, u32, u32) {
        match entry(self.merges, MERGE_ENTRY_SIZE, i) {
            Some(e) => (
                read_u32(e, 0),
                read_u32(e, 4),
                read_u32(e, 8),
                read_u32(e, 12),
            ),
            None => (u32::MAX, u32::MAX, u32::MAX, u32::MAX),
        }
    }
    /// The `i`-th token id in byte-wise order of the pieces (`u32::MAX` past the end).
    pub fn sorted_id(&self, i: usize) -> u32 {
        entry(self.sorted, 4, i).map_or(u32::MAX, |e| read_u32(e, 0))
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
    /// What a button press asks (introduction, "ask me about" list).
    pub prompts: Prompts<'a>,
    /// The known answers and the fallback line (None: the blob only generates freely).
    pub answers: Option<crate::answers::AnswerSet<'a>>,
    tensor_table: &'a [u8],
    /// Tensor table entry of every (kind, layer), at [`tensor_slot`]: built once while parsing,
    /// so each lookup is O(1) and validation is linear in the number of tensors.
    slots: Vec<u32>,
}

/// Reads a little-endian u32 at `at`; callers pass offsets inside `b`.
fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..][..4]);
    u32::from_le_bytes(v)
}
fn read_u16(b: &[u8], at: usize) -> u16 {
    let mut v = [0u8; 2];
    v.copy_from_slice(&b[at..][..2]);
    u16::from_le_bytes(v)
}

/// Where (kind, layer) sits in [`Blob::slots`]: the two global tensors first, then nine per
/// layer. `None` for a layer the config does not have.
fn tensor_slot(kind: TensorKind, layer: u32, n_layers: u32) -> Option<usize> {
    match kind {
        TensorKind::TokenEmbedding => (layer == 0).then_some(0),
        TensorKind::FinalNorm => (layer == 0).then_some(1),
        _ if layer >= n_layers => None,
        // Per-layer kinds are 1..=9 (see `TensorKind::PER_LAYER`).
        _ => usize_of(layer)
            .checked_mul(TensorKind::PER_LAYER.len())?
            .checked_add(usize::from(kind as u8))?
            .checked_add(1),
    }
}

/// Number of tensors a config needs: `2 + 9 · n_layers`.
fn tensor_slot_count(n_layers: u32) -> Option<usize> {
    usize_of(n_layers)
        .checked_mul(TensorKind::PER_LAYER.len())?
        .checked_add(2)
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
    pub const PROMPTS: usize = 100; // offset u32, len u32 (format version 2)
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

        let (p_off, p_len) = (
            usize_of(read_u32(bytes, hdr::PROMPTS)),
            usize_of(read_u32(bytes, hdr::PROMPTS + 4)),
        );
        let prompts = Prompts::parse(aligned_region(bytes, "button prompts", p_off, p_len)?)
            .map_err(|reason| BlobError::BadPrompts { reason })?;

        let answers = parse_answers(bytes, &config, bos_id, eos_id)?;

        let tt_off = usize_of(read_u32(bytes, hdr::TENSORS));
        let tt_count = usize_of(read_u32(bytes, hdr::TENSORS + 4));
        let table_len = tt_count
            .checked_mul(TENSOR_ENTRY_SIZE)
            .ok_or(BlobError::BadTensor {
                index: 0,
                reason: "tensor count overflows",
            })?;
        let tensor_table = aligned_region(bytes, "tensor table", tt_off, table_len)?;
        let mut blob = Blob {
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
            prompts,
            answers,
            tensor_table,
            slots: Vec::new(),
        };
        blob.slots = blob.check_tensors()?;
        Ok(blob)
    }

    /// Number of tensor table entries.
    pub fn tensor_count(&self) -> usize {
        self.tensor_table.len() / TENSOR_ENTRY_SIZE
    }

    /// Tensor table entry `i`, its bounds checked against the blob.
    pub fn tensor_at(&self, i: usize) -> Result<TensorView<'a>, BlobError> {
        let bad = |reason| BlobError::BadTensor { index: i, reason };
        let e = entry(self.tensor_table, TENSOR_ENTRY_SIZE, i).ok_or(bad("no such entry"))?;
        let kind = TensorKind::from_u8(e[0]).ok_or(bad("unknown tensor kind"))?;
        let layer = u32::from(read_u16(e, 2));
        let rows = usize_of(read_u32(e, 4));
        let cols = usize_of(read_u32(e, 8));
        let offset = usize_of(read_u32(e, 12));
        let numel = rows.checked_mul(cols).ok_or(bad("rows × cols overflows"))?;
        let data = match e[1] {
            0 => {
                let len = numel.checked_mul(4).ok_or(bad("f32 data size overflows"))?;
                let raw = aligned_region(self.bytes, "f32 tensor data", offset, len)?;
                TensorData::F32(as_f32(raw))
            }
            1 => {
                let q = aligned_region(self.bytes, "int8 tensor data", offset, numel)?;
                let s_off = usize_of(read_u32(e, 16));
                if !cols.is_multiple_of(self.group_size) {
                    return Err(bad("row length is not a multiple of the group size"));
                }
                let scales_len = numel
                    .checked_div(self.group_size)
                    .and_then(|groups| groups.checked_mul(4))
                    .ok_or(bad("scale size overflows"))?;
                let s = aligned_region(self.bytes, "tensor scales", s_off, scales_len)?;
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
    /// One pass over the table, filling the slot of each (kind, layer): linear in the number
    /// of entries, which the table's bounds check already limits to a 32nd of the blob.
    fn check_tensors(&self) -> Result<Vec<u32>, BlobError> {
        let n_layers = self.config.n_layers;
        let n_slots = tensor_slot_count(n_layers).ok_or(BlobError::BadConfig {
            field: "n_layers",
            value: n_layers,
        })?;
        let mut slots = alloc::vec![u32::MAX; n_slots];
        for i in 0..self.tensor_count() {
            let t = self.tensor_at(i)?;
            let bad = |reason| BlobError::BadTensor { index: i, reason };
            let slot = tensor_slot(t.kind, t.layer, n_layers)
                .and_then(|k| slots.get_mut(k))
                .ok_or(bad("layer index out of range"))?;
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
                return Err(bad("norms must be f32 and matrices Q8_0"));
            }
            if *slot != u32::MAX {
                return Err(BlobError::DuplicateTensor {
                    kind: t.kind,
                    layer: t.layer,
                });
            }
            *slot = u32::try_from(i).map_err(|_| bad("tensor count overflows"))?;
        }
        for kind in TensorKind::ALL {
            let layers = if kind.is_per_layer() { n_layers } else { 1 };
            for layer in 0..layers {
                let filled = tensor_slot(kind, layer, n_layers)
                    .and_then(|k| slots.get(k))
                    .is_some_and(|&e| e != u32::MAX);
                if !filled {
                    return Err(BlobError::MissingTensor { kind, layer });
                }
            }
        }
        Ok(slots)
    }

    /// The tensor of `kind` in `layer` (0 for the global ones): one index lookup.
    pub fn find(&self, kind: TensorKind, layer: u32) -> Result<TensorView<'a>, BlobError> {
        match tensor_slot(kind, layer, self.config.n_layers).and_then(|k| self.slots.get(k)) {
            Some(&i) if i != u32::MAX => self.tensor_at(usize_of(i)),
            _ => Err(BlobError::MissingTensor { kind, layer }),
        }
    }
}

fn read_config(b: &[u8]) -> Result<ModelConfig, BlobError> {
    let mut f = [0u32; 7];
    for (v, bytes) in f
        .iter_mut()
        .zip(b[hdr::CONFIG..hdr::NORM_EPS].chunks_exact(4))
    {
        *v = read_u32(bytes, 0);
    }
    let c = ModelConfig {
        dim: f[0],
        hidden_dim: f[1],
        n_layers: f[2],
        n_heads: f[3],
        n_kv_heads: f[4],
        vocab_size: f[5],
        seq_len: f[6],
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
    let off = usize_of(read_u32(bytes, hdr::TOKENIZER));
    let len = usize_of(read_u32(bytes, hdr::TOKENIZER + 4));
    let sec = aligned_region(bytes, "tokenizer section", off, len)?;
    if sec.len() < 16 {
        return Err(bad("section shorter than its 16-byte header"));
    }
    let n_tokens = usize_of(read_u32(sec, 0));
    let n_merges = usize_of(read_u32(sec, 4));
    let max_len = usize_of(read_u32(sec, 8));
    if n_tokens != usize_of(config.vocab_size) {
        return Err(bad("token count differs from the model's vocab_size"));
    }
    // Each part is cut off the front of what remains, so no offset is ever summed: a count
    // too large for the section (or for a 32-bit address space) cannot wrap past a check.
    let past = || bad("token index, merges or sorted index run past the section");
    let take = |rest: &'a [u8], n: usize, size: usize| -> Result<(&'a [u8], &'a [u8]), BlobError> {
        let len = n.checked_mul(size).ok_or_else(past)?;
        if len > rest.len() {
            return Err(past());
        }
        Ok(rest.split_at(len))
    };
    let rest = &sec[16..];
    let (index, rest) = take(rest, n_tokens, TOKEN_ENTRY_SIZE)?;
    let (merges, rest) = take(rest, n_merges, MERGE_ENTRY_SIZE)?;
    let (sorted, strings) = take(rest, n_tokens, 4)?;
    let flags = read_u32(sec, 12);
    if flags & !TOKENIZER_SPLIT_DIGITS != 0 {
        return Err(bad("unknown tokenizer flags"));
    }
    let t = TokenizerSection {
        split_digits: flags & TOKENIZER_SPLIT_DIGITS != 0,
        index,
        merges,
        sorted,
        strings,
        n_tokens,
        n_merges,
    };
    // The pieces lie end to end in id order, exactly covering the strings: each byte belongs
    // to one piece, so the ordering check below reads every byte at most twice (overlapping
    // pieces could make it quadratic).
    let mut next = 0usize;
    for id in 0..n_tokens {
        let (o, l, kind, _) = token_entry(index, id).ok_or_else(past)?;
        if o != next || l > max_len {
            return Err(bad(
                "token strings must follow each other in id order, each at most the longest length",
            ));
        }
        next = o
            .checked_add(l)
            .filter(|&end| end <= strings.len())
            .ok_or(bad("a token's string runs past the string table"))?;
        if kind > 2 {
            return Err(bad("unknown token kind"));
        }
        if usize_of(t.sorted_id(id)) >= n_tokens {
            return Err(bad("sorted index names a token that does not exist"));
        }
    }
    if next != strings.len() {
        return Err(bad("bytes after the last token's string"));
    }
    for i in 1..n_tokens {
        if t.piece(t.sorted_id(i.saturating_sub(1))) >= t.piece(t.sorted_id(i)) {
            return Err(bad("sorted index is not strictly ordered"));
        }
    }
    let mut prev = None;
    for i in 0..n_merges {
        let (l, r, res, _rank) = t.merge(i);
        if [l, r, res].iter().any(|&id| usize_of(id) >= n_tokens) {
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
    pub prompts: PromptsSpec,
    /// The known answers (None: open generation only).
    pub answers: Option<crate::answers::AnswersSpec>,
    pub tensors: Vec<TensorSpec>,
}

/// Serialises a [`BlobSpec`]. Deterministic: the same spec gives the same bytes.
pub struct BlobWriter {
    out: Vec<u8>,
}

// The writer lays out an in-memory spec on the host: its sums are of lengths of vectors that
// exist, and any size that could not be stored in a u32 field stops at `u32_of`. Untrusted
// bytes only ever meet the checked reader above.
#[allow(clippy::arithmetic_side_effects)]
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

        // Button prompts.
        let prompts = spec.prompts.to_bytes();
        w.patch_u32(hdr::PROMPTS, Self::u32_of(w.out.len()));
        w.patch_u32(hdr::PROMPTS + 4, Self::u32_of(prompts.len()));
        w.out.extend_from_slice(&prompts);
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

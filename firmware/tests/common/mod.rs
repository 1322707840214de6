//! Blobs built by hand for the firmware's own tests (and the fuzz targets' seeds): a complete,
//! valid model of any shape with pseudo-random weights, and patches that break one field and
//! keep the CRC right, so each test reaches the check it is about.
#![allow(dead_code)] // each test file uses its own subset

use badge_firmware::config::{KvCacheKind, ModelConfig, DEFAULT_NORM_EPS, DEFAULT_ROPE_THETA};
use badge_firmware::format::{
    crc32, BlobSpec, BlobWriter, OwnedTensorData, TensorKind, TensorSpec, TokenKind, TokenizerSpec,
    HEADER_SIZE,
};
use badge_firmware::quant;
use badge_firmware::sam::Voice;

/// A model shape with the defaults of the exporter for the float fields.
pub fn config(
    dim: u32,
    hidden_dim: u32,
    n_layers: u32,
    n_heads: u32,
    vocab_size: u32,
    seq_len: u32,
) -> ModelConfig {
    ModelConfig {
        dim,
        hidden_dim,
        n_layers,
        n_heads,
        n_kv_heads: n_heads,
        vocab_size,
        seq_len,
        norm_eps: DEFAULT_NORM_EPS,
        rope_theta: DEFAULT_ROPE_THETA,
    }
}

/// xorshift64*: deterministic values without a dependency.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-scale, scale).
    pub fn value(&mut self, scale: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
}

/// A vocabulary of `n` tokens: `<unk>`, `<s>`, `</s>`, the 26 letters and `▁`, then `▁a`,
/// `▁b`, ... and numbered pieces, with a few merges (`▁` + letter).
pub fn tokenizer(n: usize) -> TokenizerSpec {
    let mut tokens: Vec<(String, TokenKind, u8)> = ["<unk>", "<s>", "</s>"]
        .iter()
        .map(|s| (s.to_string(), TokenKind::Control, 0))
        .collect();
    let letters: Vec<String> = ('a'..='z').map(String::from).collect();
    for l in &letters {
        tokens.push((l.clone(), TokenKind::Normal, 0));
    }
    tokens.push(("\u{2581}".to_string(), TokenKind::Normal, 0));
    let space = tokens.len() as u32 - 1;
    let mut merges = Vec::new();
    for (i, l) in letters.iter().enumerate() {
        tokens.push((format!("\u{2581}{l}"), TokenKind::Normal, 0));
        merges.push((space, 3 + i as u32, tokens.len() as u32 - 1));
    }
    let mut k = 0;
    while tokens.len() < n {
        tokens.push((format!("p{k}"), TokenKind::Normal, 0));
        k += 1;
    }
    tokens.truncate(n);
    merges.retain(|&(l, r, res)| [l, r, res].iter().all(|&id| (id as usize) < n));
    TokenizerSpec {
        tokens,
        merges,
        split_digits: false,
    }
}

/// Every tensor of `c`, in the writer's order, with pseudo-random weights.
pub fn tensors(c: &ModelConfig, group_size: usize, seed: u64) -> Vec<TensorSpec> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    let mut add = |kind: TensorKind, layer: u32, rng: &mut Rng| {
        let (rows, cols) = kind.shape(c);
        let x: Vec<f32> = (0..rows * cols)
            .map(|_| {
                if kind.is_norm() {
                    1.0 + rng.value(0.1)
                } else {
                    rng.value(0.5)
                }
            })
            .collect();
        let values = if kind.is_norm() {
            OwnedTensorData::F32(x)
        } else {
            let mut q = vec![0i8; x.len()];
            let mut scales = vec![0f32; x.len() / group_size];
            quant::quantize(&x, group_size, &mut q, &mut scales);
            OwnedTensorData::Q8 { q, scales }
        };
        out.push(TensorSpec {
            kind,
            layer,
            rows,
            cols,
            values,
        });
    };
    add(TensorKind::TokenEmbedding, 0, &mut rng);
    for layer in 0..c.n_layers {
        for kind in TensorKind::PER_LAYER {
            add(kind, layer, &mut rng);
        }
    }
    add(TensorKind::FinalNorm, 0, &mut rng);
    out
}

/// A complete, valid blob spec.
pub fn spec(c: ModelConfig, group_size: u32, kv: KvCacheKind, seed: u64) -> BlobSpec {
    BlobSpec {
        config: c,
        group_size,
        kv_cache: kv,
        voice: Voice::default(),
        bos_id: 1,
        eos_id: 2,
        tokenizer: tokenizer(c.vocab_size as usize),
        template: "Q: {question}\nA: {answer}".to_string(),
        tensors: tensors(&c, group_size as usize, seed),
        prompts: Default::default(),
        answers: None,
    }
}

/// The blob of [`spec`]: dim 32, hidden 64, 2 layers, 4 heads, vocab 64, context 32.
pub fn small_blob(kv: KvCacheKind) -> Vec<u8> {
    BlobWriter::write(&spec(config(32, 64, 2, 4, 64, 32), 16, kv, 7))
}

/// A copy of `bytes` in 16-byte-aligned memory (the loader requires it), as u128 blocks.
pub struct Aligned {
    blocks: Vec<u128>,
    len: usize,
}
impl Aligned {
    pub fn new(bytes: &[u8]) -> Self {
        let mut blocks = vec![0u128; bytes.len().div_ceil(16)];
        // SAFETY: the blocks hold at least bytes.len() bytes; u8 has no alignment needs.
        let dst = unsafe {
            core::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), bytes.len())
        };
        dst.copy_from_slice(bytes);
        Aligned {
            blocks,
            len: bytes.len(),
        }
    }
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: as in `new`.
        unsafe { core::slice::from_raw_parts(self.blocks.as_ptr().cast::<u8>(), self.len) }
    }
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Overwrites a little-endian u32 at `at` and recomputes the CRC, so the loader gets past it.
pub fn patch_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    fix_crc(b);
}

pub fn fix_crc(b: &mut [u8]) {
    let crc = crc32(&b[HEADER_SIZE..]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
}

/// Header offsets used by the tests (FORMAT.md).
pub const HDR_CONFIG: usize = 20;
pub const HDR_TOKENIZER: usize = 76;
pub const HDR_TENSORS: usize = 92;

use badge_firmware::app::embedded_storage::nor_flash::{
    ErrorType, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Flash over a byte vector (what `badge sim` does with an image file).
pub struct VecFlash(pub Vec<u8>);

#[derive(Debug)]
pub struct FlashOutOfBounds;
impl NorFlashError for FlashOutOfBounds {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::OutOfBounds
    }
}
impl ErrorType for VecFlash {
    type Error = FlashOutOfBounds;
}
impl ReadNorFlash for VecFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashOutOfBounds> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| self.0.get(o..)?.get(..bytes.len()))
            .ok_or(FlashOutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.0.len()
    }
}

/// Model partition of the badge's table (firmware/partitions.csv): offset and size.
pub const MODEL_OFFSET: u32 = 0x31_0000;
pub const MODEL_SIZE: u32 = 0xCF_0000;

/// A flash image with the badge's partition table whose `model` partition holds `blob`.
pub fn flash_with(blob: &[u8]) -> VecFlash {
    flash_at(MODEL_OFFSET, blob)
}

/// A flash image whose table has one `model` partition at `offset` (a multiple of 4 KB from
/// 0x9000), as large as the badge's, holding `blob`; the image ends where the blob does.
pub fn flash_at(offset: u32, blob: &[u8]) -> VecFlash {
    use badge_firmware::partition::{build, Partition, TYPE_DATA};
    let table =
        build(&[Partition::new("model", TYPE_DATA, 0x40, offset, MODEL_SIZE, 0).unwrap()]).unwrap();
    let mut img = vec![0xFFu8; offset as usize + blob.len()];
    img[0x8000..0x8000 + table.len()].copy_from_slice(&table);
    img[offset as usize..].copy_from_slice(blob);
    VecFlash(img)
}

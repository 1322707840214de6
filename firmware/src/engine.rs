//! The int8 forward pass, written once for the badge and the host.
//!
//! One token at one position in, logits out, in the manner of llama2.c's `runq.c`: RMSNorm,
//! Q8_0 matmuls (activations quantized per group at run time, integer dot products per group,
//! one multiply by both scales per group), interleaved RoPE, grouped-query attention over the
//! KV cache, SwiGLU, and the classifier that shares the token embedding. Weights are read in
//! place from the blob; the run state is allocated once.
//!
//! Every result is defined by one fixed sequence of f32 operations, whatever the machine:
//! matmul rows sum their groups in order (see [`crate::kernel::q8_matvec`]), the other
//! reductions (RMSNorm, attention scores, softmax) sum eight interleaved lanes and then reduce
//! them pairwise, `e^x` is computed here in plain arithmetic (`exp`) rather than by a
//! platform's maths library, and Rust never fuses a multiply and an add on its own. So the host
//! (with or without AVX2, with one or two workers) and the badge compute the same bits.

use crate::buffers::AlignedBuf;
use crate::config::{KvCacheKind, ModelConfig};
use crate::format::{Blob, BlobError, TensorData, TensorKind};
use crate::kernel::{dot_i8, q8_matvec_with, Kernel};
use crate::quant::quantize;
use crate::workers::Workers;
use alloc::vec::Vec;

/// A Q8_0 matrix borrowed from the blob: `rows × cols` int8 values, row-major, and one scale
/// per group of `group_size` values.
#[derive(Debug, Clone, Copy)]
pub struct QMatrix<'a> {
    pub q: &'a [i8],
    pub scales: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub group_size: usize,
}

impl<'a> QMatrix<'a> {
    fn from_blob(blob: &Blob<'a>, kind: TensorKind, layer: u32) -> Result<Self, BlobError> {
        let t = blob.find(kind, layer)?;
        match t.data {
            TensorData::Q8 { q, scales } => Ok(QMatrix {
                q,
                scales,
                rows: t.rows,
                cols: t.cols,
                group_size: blob.group_size,
            }),
            TensorData::F32(_) => Err(BlobError::BadTensor {
                index: 0,
                reason: "expected a Q8_0 matrix",
            }),
        }
    }

    /// `Σ_g (Σ_j w[row, g·GS + j] · xq[g·GS + j]) · w_scale[row, g] · x_scale[g]`.
    #[inline]
    pub fn row_dot(&self, row: usize, xq: &[i8], xs: &[f32]) -> f32 {
        let gs = self.group_size;
        let groups = self.cols / gs;
        let wq = &self.q[row * self.cols..][..self.cols];
        let ws = &self.scales[row * groups..][..groups];
        let mut sum = 0.0f32;
        for g in 0..groups {
            let acc = dot_i8(&wq[g * gs..][..gs], &xq[g * gs..][..gs]);
            sum += acc as f32 * ws[g] * xs[g];
        }
        sum
    }

    /// Rows `first_row..first_row + out.len()` times the quantized input, into `out` (the same
    /// values as [`QMatrix::row_dot`] row by row, bit for bit, with either kernel).
    #[inline]
    pub fn matvec_rows(
        &self,
        kernel: Kernel,
        first_row: usize,
        xq: &[i8],
        xs: &[f32],
        out: &mut [f32],
    ) {
        let groups = self.cols / self.group_size;
        q8_matvec_with(
            kernel,
            &self.q[first_row * self.cols..][..out.len() * self.cols],
            &self.scales[first_row * groups..][..out.len() * groups],
            self.cols,
            self.group_size,
            xq,
            xs,
            out,
        );
    }

    /// Row `row` dequantized into `out` (token embedding lookups).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        crate::quant::dequantize(
            &self.q[row * self.cols..][..self.cols],
            &self.scales[row * self.cols / self.group_size..][..self.cols / self.group_size],
            self.group_size,
            out,
        );
    }
}

fn norm_from_blob<'a>(
    blob: &Blob<'a>,
    kind: TensorKind,
    layer: u32,
) -> Result<&'a [f32], BlobError> {
    match blob.find(kind, layer)?.data {
        TensorData::F32(v) => Ok(v),
        TensorData::Q8 { .. } => Err(BlobError::BadTensor {
            index: 0,
            reason: "expected an f32 norm weight",
        }),
    }
}

/// One transformer block's weights.
#[derive(Debug, Clone, Copy)]
pub struct LayerWeights<'a> {
    pub attn_norm: &'a [f32],
    pub wq: QMatrix<'a>,
    pub wk: QMatrix<'a>,
    pub wv: QMatrix<'a>,
    pub wo: QMatrix<'a>,
    pub ffn_norm: &'a [f32],
    pub w1: QMatrix<'a>,
    pub w2: QMatrix<'a>,
    pub w3: QMatrix<'a>,
}

/// All weights, as views into the blob.
#[derive(Debug, Clone)]
pub struct Weights<'a> {
    pub config: ModelConfig,
    pub group_size: usize,
    pub token_embedding: QMatrix<'a>,
    pub layers: Vec<LayerWeights<'a>>,
    pub final_norm: &'a [f32],
}

impl<'a> Weights<'a> {
    pub fn from_blob(blob: &Blob<'a>) -> Result<Self, BlobError> {
        let mut layers = Vec::with_capacity(blob.config.n_layers as usize);
        for l in 0..blob.config.n_layers {
            let m = |k| QMatrix::from_blob(blob, k, l);
            layers.push(LayerWeights {
                attn_norm: norm_from_blob(blob, TensorKind::AttnNorm, l)?,
                wq: m(TensorKind::Wq)?,
                wk: m(TensorKind::Wk)?,
                wv: m(TensorKind::Wv)?,
                wo: m(TensorKind::Wo)?,
                ffn_norm: norm_from_blob(blob, TensorKind::FfnNorm, l)?,
                w1: m(TensorKind::W1)?,
                w2: m(TensorKind::W2)?,
                w3: m(TensorKind::W3)?,
            });
        }
        Ok(Weights {
            config: blob.config,
            group_size: blob.group_size,
            token_embedding: QMatrix::from_blob(blob, TensorKind::TokenEmbedding, 0)?,
            layers,
            final_norm: norm_from_blob(blob, TensorKind::FinalNorm, 0)?,
        })
    }
}

/// The key/value cache in the representation chosen at export.
enum KvStore {
    F32(AlignedBuf<f32>),
    F16(AlignedBuf<u16>),
    /// int8 values plus one scale per (layer, position, kv head) row.
    Int8(AlignedBuf<i8>, AlignedBuf<f32>),
}

/// Keys and values of every layer and position: `[layer][pos][kv_dim]`, for K and for V.
struct KvCache {
    keys: KvStore,
    values: KvStore,
    kv_dim: usize,
    head_dim: usize,
    seq_len: usize,
}

impl KvStore {
    /// `None` when `n` values do not fit the address space or cannot be allocated.
    fn new(kind: KvCacheKind, n: usize, head_dim: usize) -> Option<Self> {
        Some(match kind {
            KvCacheKind::F32 => Self::F32(AlignedBuf::try_zeroed(n)?),
            KvCacheKind::F16 => Self::F16(AlignedBuf::try_zeroed(n)?),
            KvCacheKind::Int8 => Self::Int8(
                AlignedBuf::try_zeroed(n)?,
                AlignedBuf::try_zeroed(n / head_dim)?,
            ),
        })
    }
    fn byte_size(&self) -> usize {
        match self {
            Self::F32(b) => b.byte_size(),
            Self::F16(b) => b.byte_size(),
            Self::Int8(q, s) => q.byte_size() + s.byte_size(),
        }
    }
    /// Stores one head row (`head_dim` values) starting at element `at`.
    fn store(&mut self, at: usize, head_dim: usize, row: &[f32]) {
        match self {
            Self::F32(b) => b[at..at + row.len()].copy_from_slice(row),
            Self::F16(b) => {
                for (d, &x) in b[at..at + row.len()].iter_mut().zip(row) {
                    *d = crate::half::f32_to_f16(x);
                }
            }
            Self::Int8(q, s) => {
                s[at / head_dim] = crate::quant::quantize_group(row, &mut q[at..at + row.len()]);
            }
        }
    }
    /// `out[d] = Σ_t (w[t] · scale_t) · v_t[d]`, summed in position order from 0, over the
    /// head rows at `base + t · stride` (`t < w.len()`). The output is built in slices of
    /// eight (then four, then one) values, each accumulated over all positions in registers:
    /// one vector operation per position and slice, no store per position.
    #[inline(always)]
    fn weighted_sum(
        &self,
        base: usize,
        stride: usize,
        head_dim: usize,
        w: &[f32],
        out: &mut [f32],
    ) {
        let mut d = 0;
        while d + 8 <= head_dim {
            self.weighted_slice::<8>(base + d, stride, head_dim, w, &mut out[d..d + 8]);
            d += 8;
        }
        if d + 4 <= head_dim {
            self.weighted_slice::<4>(base + d, stride, head_dim, w, &mut out[d..d + 4]);
            d += 4;
        }
        while d < head_dim {
            self.weighted_slice::<1>(base + d, stride, head_dim, w, &mut out[d..d + 1]);
            d += 1;
        }
    }

    /// [`KvStore::weighted_sum`] for `N` consecutive values starting at element `at`.
    #[inline(always)]
    fn weighted_slice<const N: usize>(
        &self,
        at: usize,
        stride: usize,
        head_dim: usize,
        w: &[f32],
        out: &mut [f32],
    ) {
        let mut acc = [0.0f32; N];
        match self {
            Self::F32(b) => {
                for (t, &wt) in w.iter().enumerate() {
                    let v = &b[at + t * stride..][..N];
                    for i in 0..N {
                        acc[i] += wt * v[i];
                    }
                }
            }
            Self::F16(b) => {
                // Zeros and normal numbers decode branch-free; if any other value turns up,
                // the slice is summed again with the general conversion.
                let mut rare = 0u32;
                for (t, &wt) in w.iter().enumerate() {
                    let h = &b[at + t * stride..][..N];
                    for i in 0..N {
                        let (x, bad) = f16_to_f32_flagged(h[i]);
                        acc[i] += wt * x;
                        rare |= bad;
                    }
                }
                if rare != 0 {
                    acc = [0.0f32; N];
                    for (t, &wt) in w.iter().enumerate() {
                        let h = &b[at + t * stride..][..N];
                        for i in 0..N {
                            acc[i] += wt * crate::half::f16_to_f32(h[i]);
                        }
                    }
                }
            }
            Self::Int8(q, s) => {
                for (t, &wt) in w.iter().enumerate() {
                    let i0 = at + t * stride;
                    let ws = wt * s[i0 / head_dim];
                    let v = &q[i0..i0 + N];
                    for i in 0..N {
                        acc[i] += ws * f32::from(v[i]);
                    }
                }
            }
        }
        out.copy_from_slice(&acc);
    }

    /// The stored head row at `at` as f32: borrowed when stored as f32, else decoded into
    /// `scratch` (int8 rows come back unscaled, with their scale as the second value).
    #[inline(always)]
    fn row<'s>(&'s self, at: usize, head_dim: usize, scratch: &'s mut [f32]) -> (&'s [f32], f32) {
        match self {
            Self::F32(b) => (&b[at..at + head_dim], 1.0),
            Self::F16(b) => {
                let row = &b[at..at + head_dim];
                let mut rare = 0u32;
                for (d, &h) in scratch.iter_mut().zip(row) {
                    let (v, bad) = f16_to_f32_flagged(h);
                    *d = v;
                    rare |= bad;
                }
                if rare != 0 {
                    for (d, &h) in scratch.iter_mut().zip(row) {
                        *d = crate::half::f16_to_f32(h);
                    }
                }
                (&scratch[..head_dim], 1.0)
            }
            Self::Int8(q, s) => {
                for (d, &v) in scratch.iter_mut().zip(&q[at..at + head_dim]) {
                    *d = f32::from(v);
                }
                (&scratch[..head_dim], s[at / head_dim])
            }
        }
    }
}

/// [`crate::half::f16_to_f32`] for zeros and normal numbers, branch-free (so rows decode in
/// vector registers); the flag is 1 for subnormals, infinities and NaN, whose rows the caller
/// decodes again with the exact general function. (An integer flag, because LLVM vectorises an
/// integer OR-reduction but not a boolean one.)
#[inline(always)]
fn f16_to_f32_flagged(h: u16) -> (f32, u32) {
    let h = u32::from(h);
    let em = h & 0x7fff;
    // Normal numbers have an exponent field in 1..=30, i.e. em - 0x400 < 0x7800 (unsigned).
    let normal = em.wrapping_sub(0x0400) < 0x7800;
    // Rebias the exponent from 15 to 127: (127 - 15) << 23 = 0x3800_0000.
    let bits = if normal { (em << 13) + 0x3800_0000 } else { 0 };
    let bad = u32::from(!normal & (em != 0));
    (f32::from_bits(((h & 0x8000) << 16) | bits), bad)
}

/// Dot product in eight interleaved f32 lanes (lane `i % 8` sums products `i`), then a fixed
/// pairwise reduction: the same operations in the same order on every target, and free for
/// LLVM to vectorise (a single sequential sum could not be).
#[inline(always)]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += x * y;
    }
    reduce8(acc)
}

/// The fixed pairwise reduction of eight lanes used by every lane sum.
#[inline(always)]
fn reduce8(acc: [f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

impl KvCache {
    fn offset(&self, layer: usize, pos: usize, kv_head: usize) -> usize {
        (layer * self.seq_len + pos) * self.kv_dim + kv_head * self.head_dim
    }

    /// One query head `q` over positions `0..att.len()` of layer `layer`, KV head `kv_head`:
    /// `att[t] = (q·k_t) · k_scale_t · scale` (the lane order of [`dot_f32`]), softmax, then
    /// `out = Σ_t (att[t] · v_scale_t) · v_t` in position order (see
    /// [`KvStore::weighted_sum`]).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn attend(
        &self,
        layer: usize,
        kv_head: usize,
        q: &[f32],
        scale: f32,
        att: &mut [f32],
        out: &mut [f32],
        scratch: &mut [f32],
    ) {
        let hd = self.head_dim;
        for (t, a) in att.iter_mut().enumerate() {
            let (k, ks) = self.keys.row(self.offset(layer, t, kv_head), hd, scratch);
            *a = dot_f32(q, k) * ks * scale;
        }
        softmax(att);
        self.values
            .weighted_sum(self.offset(layer, 0, kv_head), self.kv_dim, hd, att, out);
    }
}

/// The bytes the run state will take, computed without allocating anything: the badge checks
/// its memory budget with this before it allocates, and the memory plan reports it.
/// [`RunState::byte_size`] of an allocated state is exactly [`RunStateSize::total`].
///
/// Computed in u64 from the header's fields, so nothing wraps on the 32-bit badge: a size
/// that does not fit `usize` saturates to `usize::MAX`, which no memory budget admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStateSize {
    pub activation_bytes: usize,
    pub kv_cache_bytes: usize,
}

#[deny(clippy::arithmetic_side_effects)]
impl RunStateSize {
    pub fn of(c: &ModelConfig, group_size: usize, kv_kind: KvCacheKind) -> Self {
        let u = |v: usize| v as u64;
        // Every buffer is rounded up to whole 16-byte blocks, as `AlignedBuf` allocates them.
        let padded = |elems: u64, elem_size: u64| {
            elems
                .saturating_mul(elem_size)
                .div_ceil(16)
                .saturating_mul(16)
        };
        let (dim, hidden, kv_dim, hd) = (
            u64::from(c.dim),
            u64::from(c.hidden_dim),
            u(c.kv_dim()),
            u(c.head_dim()),
        );
        let seq = u64::from(c.seq_len);
        let widest = dim.max(hidden);
        let f32_buffers = [
            dim,
            dim,
            dim.saturating_add(kv_dim.saturating_mul(2)),
            hidden.saturating_mul(2),
            u64::from(c.n_heads).saturating_mul(seq),
            u64::from(c.vocab_size),
            widest.checked_div(u(group_size)).unwrap_or(0),
            hd / 2,
            hd,
            hd,
        ];
        let activation_bytes = f32_buffers.iter().fold(padded(widest, 1), |sum, &n| {
            sum.saturating_add(padded(n, 4))
        });
        let n = u64::from(c.n_layers)
            .saturating_mul(seq)
            .saturating_mul(kv_dim);
        let one_store = match kv_kind {
            KvCacheKind::F32 => padded(n, 4),
            KvCacheKind::F16 => padded(n, 2),
            KvCacheKind::Int8 => {
                padded(n, 1).saturating_add(padded(n.checked_div(hd).unwrap_or(0), 4))
            }
        };
        let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        RunStateSize {
            activation_bytes: to_usize(activation_bytes),
            kv_cache_bytes: to_usize(one_store.saturating_mul(2)),
        }
    }

    /// Both parts together (saturating: `usize::MAX` means "does not fit").
    pub fn total(&self) -> usize {
        self.activation_bytes.saturating_add(self.kv_cache_bytes)
    }
}

/// Activation buffers, quantized activations, KV cache and logits: allocated once from the
/// config, each 16-byte aligned.
pub struct RunState {
    x: AlignedBuf<f32>,
    xb: AlignedBuf<f32>,
    /// q, k and v side by side, so one worker hand-off computes all three projections.
    qkv: AlignedBuf<f32>,
    /// w1·x and w3·x side by side (one hand-off), then silu(w1·x) ⊙ w3·x in the first half.
    h13: AlignedBuf<f32>,
    att: AlignedBuf<f32>,
    logits: AlignedBuf<f32>,
    xq: AlignedBuf<i8>,
    xs: AlignedBuf<f32>,
    /// RoPE: `θ^(-2i/head_dim)` per pair (computed once), and cos/sin of the current position
    /// per pair (computed once per token, shared by every head and layer).
    rope_freq: AlignedBuf<f32>,
    rope_cos_sin: AlignedBuf<f32>,
    /// One K or V head row decoded to f32 (f16 and int8 caches).
    kv_row: AlignedBuf<f32>,
    kv: KvCache,
}

impl RunState {
    /// Allocates the run state of a valid config (see [`RunState::try_new`]).
    ///
    /// # Panics
    /// When the state does not fit the address space or cannot be allocated.
    pub fn new(c: &ModelConfig, group_size: usize, kv_kind: KvCacheKind) -> Self {
        match Self::try_new(c, group_size, kv_kind) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Allocates the run state, refusing one whose size ([`RunStateSize`], computed without
    /// wrapping) does not fit the address space, and reporting an allocation failure as an
    /// error instead of aborting. Once the total fits, every buffer's length does too.
    pub fn try_new(
        c: &ModelConfig,
        group_size: usize,
        kv_kind: KvCacheKind,
    ) -> Result<Self, BlobError> {
        let total = RunStateSize::of(c, group_size, kv_kind).total();
        if total > isize::MAX as usize {
            return Err(BlobError::TooLarge {
                what: "run state",
                bytes: total as u64,
                limit: isize::MAX as u64,
            });
        }
        let (dim, hidden, kv_dim) = (c.dim as usize, c.hidden_dim as usize, c.kv_dim());
        let seq = c.seq_len as usize;
        let cache_len = c.n_layers as usize * seq * kv_dim;
        let hd = c.head_dim();
        let oom = BlobError::OutOfMemory {
            what: "KV cache",
            bytes: total as u64,
        };
        let keys = KvStore::new(kv_kind, cache_len, hd).ok_or(oom.clone())?;
        let values = KvStore::new(kv_kind, cache_len, hd).ok_or(oom)?;
        let mut rope_freq = AlignedBuf::zeroed(hd / 2);
        for (i, f) in rope_freq.iter_mut().enumerate() {
            *f = 1.0 / libm::powf(c.rope_theta, (2 * i) as f32 / hd as f32);
        }
        Ok(RunState {
            x: AlignedBuf::zeroed(dim),
            xb: AlignedBuf::zeroed(dim),
            qkv: AlignedBuf::zeroed(dim + 2 * kv_dim),
            h13: AlignedBuf::zeroed(2 * hidden),
            att: AlignedBuf::zeroed(c.n_heads as usize * seq),
            logits: AlignedBuf::zeroed(c.vocab_size as usize),
            xq: AlignedBuf::zeroed(dim.max(hidden)),
            xs: AlignedBuf::zeroed(dim.max(hidden) / group_size),
            rope_freq,
            rope_cos_sin: AlignedBuf::zeroed(hd),
            kv_row: AlignedBuf::zeroed(hd),
            kv: KvCache {
                keys,
                values,
                kv_dim,
                head_dim: hd,
                seq_len: seq,
            },
        })
    }

    /// Exact bytes of all run-state buffers (what the memory plan reserves).
    pub fn byte_size(&self) -> usize {
        self.activation_bytes() + self.kv_cache_bytes()
    }
    pub fn kv_cache_bytes(&self) -> usize {
        self.kv.keys.byte_size() + self.kv.values.byte_size()
    }
    pub fn activation_bytes(&self) -> usize {
        self.x.byte_size()
            + self.xb.byte_size()
            + self.qkv.byte_size()
            + self.h13.byte_size()
            + self.att.byte_size()
            + self.logits.byte_size()
            + self.xq.byte_size()
            + self.xs.byte_size()
            + self.rope_freq.byte_size()
            + self.rope_cos_sin.byte_size()
            + self.kv_row.byte_size()
    }
}

#[inline(always)]
fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let ss = dot_f32(x, x) / x.len() as f32;
    let inv = 1.0 / libm::sqrtf(ss + eps);
    for ((o, &xi), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (xi * inv);
    }
}

/// `e^x` to within 1.5 units in the last place, branch-free in plain f32 arithmetic (so LLVM
/// can vectorise it, and the host and the badge compute the same bits): `x = n·ln 2 + r` with
/// `|r| ≤ ln 2 / 2` (ln 2 split in two so that `n·ln2_hi` is exact), a degree-7 Taylor
/// polynomial for `e^r` (truncation error below 1e-8 relative), then `· 2^⌊n/2⌋ · 2^(n−⌊n/2⌋)`,
/// two exact power-of-two scalings that stay normal for every `n` the clamp allows.
///
/// Results below the smallest normal float (x < −87.3) are flushed to 0, so no subnormal is
/// ever produced (an FPU that flushes them would otherwise disagree); x > 88.72 overflows to
/// infinity; NaN stays NaN.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // 0x3f317200: the top bits of ln 2, n·LN2_HI exact
    const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 − LN2_HI
                                        // Round to nearest (even) with the 1.5·2^23 trick: |x·log2 e| < 2^22.
    const SHIFTER: f32 = 12_582_912.0;
    let xc = x.clamp(-88.0, 89.0);
    let n = (xc * LOG2_E + SHIFTER) - SHIFTER;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Horner form of Σ_{k ≤ 7} r^k / k!.
    const C: [f32; 8] = [
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    let mut p = C[0];
    for c in &C[1..] {
        p = p * r + c;
    }
    // n ∈ [-127, 129]: both halves lie in [-64, 65], normal powers of two.
    let n = n as i32;
    let (h1, h2) = (n >> 1, n - (n >> 1));
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = p * pow2(h1) * pow2(h2);
    if y < f32::MIN_POSITIVE {
        0.0
    } else {
        y
    }
}

/// Sum in eight interleaved lanes, reduced pairwise (see [`dot_f32`]).
#[inline(always)]
fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let c = x.chunks_exact(8);
    let rest = c.remainder();
    for v in c {
        for i in 0..8 {
            acc[i] += v[i];
        }
    }
    for (a, v) in acc.iter_mut().zip(rest) {
        *a += v;
    }
    reduce8(acc)
}

/// Largest value (−∞ for an empty slice), in eight lanes.
#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let c = x.chunks_exact(8);
    let rest = c.remainder();
    for v in c {
        for i in 0..8 {
            acc[i] = acc[i].max(v[i]);
        }
    }
    for (a, v) in acc.iter_mut().zip(rest) {
        *a = a.max(*v);
    }
    acc.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

#[inline(always)]
fn softmax(x: &mut [f32]) {
    let max = max_lanes(x);
    for v in x.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / sum_lanes(x);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// cos and sin of `pos · freq` for every pair, interleaved, into `cos_sin`.
fn rope_angles(cos_sin: &mut [f32], freq: &[f32], pos: usize) {
    for (cs, &f) in cos_sin.chunks_exact_mut(2).zip(freq) {
        let angle = pos as f32 * f;
        cs[0] = libm::cosf(angle);
        cs[1] = libm::sinf(angle);
    }
}

/// Rotates interleaved pairs `(v[2i], v[2i+1])` of every head by the angles of `cos_sin`
/// (`pos · θ^(-2i/head_dim)`, see [`rope_angles`]).
#[inline(always)]
fn rope(v: &mut [f32], cos_sin: &[f32]) {
    for head in v.chunks_exact_mut(cos_sin.len()) {
        for (pair, cs) in head.chunks_exact_mut(2).zip(cos_sin.chunks_exact(2)) {
            let (c, s) = (cs[0], cs[1]);
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

/// How matmuls are computed. The badge's boot self-test picks it
/// ([`crate::app::boot_self_test`]); every mode gives the same bits when the hardware works.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MatmulMode {
    /// All workers, this build's fast kernel.
    #[default]
    AllWorkers,
    /// The calling core only ([`Workers::run_rows_one`]), the fast kernel: the fallback when
    /// two cores running the kernel at once disagree.
    OneWorker,
    /// The calling core only, the portable scalar kernel, bypassing the workers: the fallback
    /// when the fast kernel is wrong even on one core.
    Portable,
}

impl MatmulMode {
    /// The kernel this mode runs.
    pub fn kernel(self) -> Kernel {
        match self {
            MatmulMode::Portable => Kernel::Portable,
            _ => Kernel::Vector,
        }
    }
}

/// The engine: weights from a blob, run state, and the workers that share matmul rows.
pub struct Engine<'a, W: Workers> {
    pub weights: Weights<'a>,
    pub state: RunState,
    pub workers: W,
    /// How matmuls run; [`MatmulMode::AllWorkers`] unless the boot self-test said otherwise.
    pub mode: MatmulMode,
}

/// One matrix times a quantized input in `mode` (what every matmul of a forward step does).
pub fn matmul<W: Workers>(
    workers: &W,
    mode: MatmulMode,
    m: &QMatrix<'_>,
    xq: &[i8],
    xs: &[f32],
    out: &mut [f32],
) {
    matmul_many(workers, mode, &[m], xq, xs, out);
}

/// Multiplies several matrices by the same quantized input; their outputs are laid side by side
/// in `out`, so the workers split all their rows in one hand-off.
fn matmul_many<W: Workers>(
    workers: &W,
    mode: MatmulMode,
    mats: &[&QMatrix<'_>],
    xq: &[i8],
    xs: &[f32],
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), mats.iter().map(|m| m.rows).sum::<usize>());
    let kernel = mode.kernel();
    let job = |first_row: usize, rows: &mut [f32]| {
        // Walk the matrices whose rows intersect `first_row..first_row + rows.len()`.
        let mut start = 0; // first row of matrix `m` in the combined output
        let mut done = 0; // rows of `rows` filled so far
        for m in mats {
            if done == rows.len() {
                break;
            }
            let at = first_row + done;
            if at < start + m.rows {
                let n = (start + m.rows - at).min(rows.len() - done);
                m.matvec_rows(kernel, at - start, xq, xs, &mut rows[done..done + n]);
                done += n;
            }
            start += m.rows;
        }
        debug_assert_eq!(done, rows.len());
    };
    match mode {
        MatmulMode::AllWorkers => workers.run_rows(out, &job),
        MatmulMode::OneWorker => workers.run_rows_one(out, &job),
        MatmulMode::Portable => job(0, out),
    }
}

/// Why a forward step was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    PositionOutOfRange { pos: usize, seq_len: usize },
    TokenOutOfRange { token: u32, vocab_size: u32 },
}

impl core::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PositionOutOfRange { pos, seq_len } => {
                write!(f, "position {pos} is past the context length {seq_len}")
            }
            Self::TokenOutOfRange { token, vocab_size } => {
                write!(f, "token {token} is outside the vocabulary of {vocab_size}")
            }
        }
    }
}

impl<'a, W: Workers> Engine<'a, W> {
    /// The engine over a blob, its run state allocated if it fits the address space (see
    /// [`Engine::with_memory_limit`] to refuse a smaller size).
    pub fn new(blob: &Blob<'a>, workers: W) -> Result<Self, BlobError> {
        Self::with_memory_limit(blob, workers, usize::MAX)
    }

    /// The engine, refusing a run state of more than `limit` bytes before allocating any of
    /// it, so a blob that claims a huge context is an error and not an allocator abort.
    pub fn with_memory_limit(blob: &Blob<'a>, workers: W, limit: usize) -> Result<Self, BlobError> {
        let bytes = RunStateSize::of(&blob.config, blob.group_size, blob.kv_cache).total();
        if bytes > limit {
            return Err(BlobError::TooLarge {
                what: "run state",
                bytes: bytes as u64,
                limit: limit as u64,
            });
        }
        let weights = Weights::from_blob(blob)?;
        let state = RunState::try_new(&blob.config, blob.group_size, blob.kv_cache)?;
        Ok(Engine {
            weights,
            state,
            workers,
            mode: MatmulMode::default(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.weights.config
    }

    /// Runs token `token` at position `pos` and returns the next-token logits.
    pub fn forward(&mut self, token: u32, pos: usize) -> Result<&[f32], ForwardError> {
        let c = self.weights.config;
        if pos >= c.seq_len as usize {
            return Err(ForwardError::PositionOutOfRange {
                pos,
                seq_len: c.seq_len as usize,
            });
        }
        if token >= c.vocab_size {
            return Err(ForwardError::TokenOutOfRange {
                token,
                vocab_size: c.vocab_size,
            });
        }
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { self.step_avx2(token, pos) };
            return Ok(&self.state.logits);
        }
        self.step(token, pos);
        Ok(&self.state.logits)
    }

    /// [`Engine::step`] compiled with AVX2 enabled: the same source and the same float
    /// operations in the same order (Rust never fuses a multiply and an add on its own), only
    /// wider vectors for the element-wise loops (attention, RMSNorm, SwiGLU, softmax).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[target_feature(enable = "avx2")]
    unsafe fn step_avx2(&mut self, token: u32, pos: usize) {
        self.step(token, pos);
    }

    /// One forward step for a checked token and position; the logits land in the run state.
    #[inline(always)]
    fn step(&mut self, token: u32, pos: usize) {
        let c = self.weights.config;
        let (dim, hidden, kv_dim, hd) = (
            c.dim as usize,
            c.hidden_dim as usize,
            c.kv_dim(),
            c.head_dim(),
        );
        let kv_mul = (c.n_heads / c.n_kv_heads) as usize;
        let gs = self.weights.group_size;
        let mode = self.mode;
        let w = &self.weights;
        let s = &mut self.state;

        w.token_embedding.dequantize_row(token as usize, &mut s.x);
        rope_angles(&mut s.rope_cos_sin, &s.rope_freq, pos);

        for (l, lw) in w.layers.iter().enumerate() {
            // Attention.
            rmsnorm(&mut s.xb, &s.x, lw.attn_norm, c.norm_eps);
            quantize(&s.xb, gs, &mut s.xq[..dim], &mut s.xs[..dim / gs]);
            matmul_many(
                &self.workers,
                mode,
                &[&lw.wq, &lw.wk, &lw.wv],
                &s.xq[..dim],
                &s.xs[..dim / gs],
                &mut s.qkv,
            );
            let (q, kv) = s.qkv.split_at_mut(dim);
            let (k, v) = kv.split_at_mut(kv_dim);
            rope(q, &s.rope_cos_sin);
            rope(k, &s.rope_cos_sin);
            for h in 0..c.n_kv_heads as usize {
                let at = s.kv.offset(l, pos, h);
                s.kv.keys.store(at, hd, &k[h * hd..][..hd]);
                s.kv.values.store(at, hd, &v[h * hd..][..hd]);
            }
            // Grouped-query attention: query head h reads KV head h / kv_mul.
            let scale = 1.0 / libm::sqrtf(hd as f32);
            let seq = c.seq_len as usize;
            for h in 0..c.n_heads as usize {
                let (qh, att, out) = (
                    &q[h * hd..][..hd],
                    &mut s.att[h * seq..][..pos + 1],
                    &mut s.xb[h * hd..][..hd],
                );
                s.kv.attend(l, h / kv_mul, qh, scale, att, out, &mut s.kv_row);
            }
            quantize(&s.xb, gs, &mut s.xq[..dim], &mut s.xs[..dim / gs]);
            matmul_many(
                &self.workers,
                mode,
                &[&lw.wo],
                &s.xq[..dim],
                &s.xs[..dim / gs],
                &mut s.xb,
            );
            s.x.iter_mut().zip(s.xb.iter()).for_each(|(x, d)| *x += d);

            // Feed-forward: w2(silu(w1·x) ⊙ w3·x).
            rmsnorm(&mut s.xb, &s.x, lw.ffn_norm, c.norm_eps);
            quantize(&s.xb, gs, &mut s.xq[..dim], &mut s.xs[..dim / gs]);
            matmul_many(
                &self.workers,
                mode,
                &[&lw.w1, &lw.w3],
                &s.xq[..dim],
                &s.xs[..dim / gs],
                &mut s.h13,
            );
            let (h1, h3) = s.h13.split_at_mut(hidden);
            for (a, &b) in h1.iter_mut().zip(h3.iter()) {
                *a = *a / (1.0 + exp(-*a)) * b;
            }
            quantize(h1, gs, &mut s.xq[..hidden], &mut s.xs[..hidden / gs]);
            matmul_many(
                &self.workers,
                mode,
                &[&lw.w2],
                &s.xq[..hidden],
                &s.xs[..hidden / gs],
                &mut s.xb,
            );
            s.x.iter_mut().zip(s.xb.iter()).for_each(|(x, d)| *x += d);
        }

        rmsnorm(&mut s.xb, &s.x, w.final_norm, c.norm_eps);
        quantize(&s.xb, gs, &mut s.xq[..dim], &mut s.xs[..dim / gs]);
        matmul_many(
            &self.workers,
            mode,
            &[&w.token_embedding],
            &s.xq[..dim],
            &s.xs[..dim / gs],
            &mut s.logits,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_f16_conversion_matches_the_reference_bit_for_bit() {
        let mut flagged = 0;
        for h in 0..=u16::MAX {
            let (v, bad) = f16_to_f32_flagged(h);
            if bad == 0 {
                assert_eq!(
                    v.to_bits(),
                    crate::half::f16_to_f32(h).to_bits(),
                    "{h:#06x}"
                );
            } else {
                flagged += 1;
            }
        }
        // 2·1023 subnormals, 2 infinities, 2·1023 NaNs.
        assert_eq!(flagged, 2 * 1023 + 2 + 2 * 1023);
        let mut kv = KvStore::new(KvCacheKind::F16, 8, 8).unwrap();
        let row = [
            1.5f32,
            -0.0,
            1e-6,
            65504.0,
            -2.0,
            3.0e-5,
            0.0,
            f32::INFINITY,
        ];
        kv.store(0, 8, &row);
        let mut scratch = [0f32; 8];
        let (got, scale) = kv.row(0, 8, &mut scratch);
        assert_eq!(scale, 1.0);
        for (g, &x) in got.iter().zip(&row) {
            let want = crate::half::f16_to_f32(crate::half::f32_to_f16(x));
            assert_eq!(g.to_bits(), want.to_bits(), "{x}");
        }
    }

    #[test]
    fn exp_is_within_one_and_a_half_ulp_of_libm_and_never_subnormal() {
        let mut worst = 0.0f64;
        let mut x = -100.0f32;
        while x < 90.0 {
            let (got, want) = (exp(x), libm::expf(x));
            if want.is_finite() && want >= f32::MIN_POSITIVE {
                let ulp = f64::from(want) * f64::from(f32::EPSILON);
                worst = worst.max((f64::from(got) - f64::from(want)).abs() / ulp);
            } else if want.is_finite() {
                assert_eq!(got, 0.0, "{x}: subnormal results are flushed to zero");
            } else {
                assert_eq!(got, want, "{x}");
            }
            x += 0.000_731;
        }
        assert!(worst <= 1.5, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
    }

    #[test]
    fn lane_dot_covers_every_element() {
        for n in [1usize, 7, 8, 16, 28, 33] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 + 1.0).collect();
            let want: f32 = a.iter().map(|v| v * 2.0).sum();
            assert_eq!(dot_f32(&a, &alloc::vec![2.0; n]), want, "n = {n}");
        }
    }
}

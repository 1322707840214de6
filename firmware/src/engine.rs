//! The int8 forward pass, written once for the badge and the host.
//!
//! One token at one position in, logits out, in the manner of llama2.c's `runq.c`: RMSNorm,
//! Q8_0 matmuls (activations quantized per group at run time, integer dot products per group,
//! one multiply by both scales per group), interleaved RoPE, grouped-query attention over the
//! KV cache, SwiGLU, and the classifier that shares the token embedding. Weights are read in
//! place from the blob; the run state is allocated once.

use crate::buffers::AlignedBuf;
use crate::config::{KvCacheKind, ModelConfig};
use crate::format::{Blob, BlobError, TensorData, TensorKind};
use crate::kernel::{dot_i8, q8_matvec};
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
    /// values as [`QMatrix::row_dot`] row by row, bit for bit).
    #[inline]
    pub fn matvec_rows(&self, first_row: usize, xq: &[i8], xs: &[f32], out: &mut [f32]) {
        let groups = self.cols / self.group_size;
        q8_matvec(
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
    fn new(kind: KvCacheKind, n: usize, head_dim: usize) -> Self {
        match kind {
            KvCacheKind::F32 => Self::F32(AlignedBuf::zeroed(n)),
            KvCacheKind::F16 => Self::F16(AlignedBuf::zeroed(n)),
            KvCacheKind::Int8 => {
                Self::Int8(AlignedBuf::zeroed(n), AlignedBuf::zeroed(n / head_dim))
            }
        }
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
    /// Dot product of `q` with the stored head row at `at`.
    fn dot(&self, at: usize, head_dim: usize, q: &[f32]) -> f32 {
        match self {
            Self::F32(b) => q.iter().zip(&b[at..at + q.len()]).map(|(a, b)| a * b).sum(),
            Self::F16(b) => q
                .iter()
                .zip(&b[at..at + q.len()])
                .map(|(a, &h)| a * crate::half::f16_to_f32(h))
                .sum(),
            Self::Int8(qb, s) => {
                let dot: f32 = q
                    .iter()
                    .zip(&qb[at..at + q.len()])
                    .map(|(a, &v)| a * f32::from(v))
                    .sum();
                dot * s[at / head_dim]
            }
        }
    }
    /// `out += a · row(at)`.
    fn axpy(&self, at: usize, head_dim: usize, a: f32, out: &mut [f32]) {
        let n = out.len();
        match self {
            Self::F32(b) => out
                .iter_mut()
                .zip(&b[at..at + n])
                .for_each(|(o, v)| *o += a * v),
            Self::F16(b) => out
                .iter_mut()
                .zip(&b[at..at + n])
                .for_each(|(o, &h)| *o += a * crate::half::f16_to_f32(h)),
            Self::Int8(qb, s) => {
                let sa = a * s[at / head_dim];
                out.iter_mut()
                    .zip(&qb[at..at + n])
                    .for_each(|(o, &v)| *o += sa * f32::from(v));
            }
        }
    }
}

impl KvCache {
    fn offset(&self, layer: usize, pos: usize, kv_head: usize) -> usize {
        (layer * self.seq_len + pos) * self.kv_dim + kv_head * self.head_dim
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
    kv: KvCache,
}

impl RunState {
    pub fn new(c: &ModelConfig, group_size: usize, kv_kind: KvCacheKind) -> Self {
        let (dim, hidden, kv_dim) = (c.dim as usize, c.hidden_dim as usize, c.kv_dim());
        let seq = c.seq_len as usize;
        let cache_len = c.n_layers as usize * seq * kv_dim;
        RunState {
            x: AlignedBuf::zeroed(dim),
            xb: AlignedBuf::zeroed(dim),
            qkv: AlignedBuf::zeroed(dim + 2 * kv_dim),
            h13: AlignedBuf::zeroed(2 * hidden),
            att: AlignedBuf::zeroed(c.n_heads as usize * seq),
            logits: AlignedBuf::zeroed(c.vocab_size as usize),
            xq: AlignedBuf::zeroed(dim.max(hidden)),
            xs: AlignedBuf::zeroed(dim.max(hidden) / group_size),
            kv: KvCache {
                keys: KvStore::new(kv_kind, cache_len, c.head_dim()),
                values: KvStore::new(kv_kind, cache_len, c.head_dim()),
                kv_dim,
                head_dim: c.head_dim(),
                seq_len: seq,
            },
        }
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
    }
}

fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let ss = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / libm::sqrtf(ss + eps);
    for ((o, &xi), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (xi * inv);
    }
}

fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = libm::expf(*v - max);
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// Rotates interleaved pairs `(v[2i], v[2i+1])` of every head by `pos · θ^(-2i/head_dim)`.
fn rope(v: &mut [f32], pos: usize, head_dim: usize, theta: f32) {
    for head in v.chunks_exact_mut(head_dim) {
        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
            let freq = 1.0 / libm::powf(theta, (2 * i) as f32 / head_dim as f32);
            let angle = pos as f32 * freq;
            let (s, c) = (libm::sinf(angle), libm::cosf(angle));
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

/// The engine: weights from a blob, run state, and the workers that share matmul rows.
pub struct Engine<'a, W: Workers> {
    pub weights: Weights<'a>,
    pub state: RunState,
    pub workers: W,
}

/// Multiplies several matrices by the same quantized input; their outputs are laid side by side
/// in `out`, so the workers split all their rows in one hand-off.
fn matmul_many<W: Workers>(
    workers: &W,
    mats: &[&QMatrix<'_>],
    xq: &[i8],
    xs: &[f32],
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), mats.iter().map(|m| m.rows).sum::<usize>());
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
                m.matvec_rows(at - start, xq, xs, &mut rows[done..done + n]);
                done += n;
            }
            start += m.rows;
        }
        debug_assert_eq!(done, rows.len());
    };
    workers.run_rows(out, &job);
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
    pub fn new(blob: &Blob<'a>, workers: W) -> Result<Self, BlobError> {
        let weights = Weights::from_blob(blob)?;
        let state = RunState::new(&blob.config, blob.group_size, blob.kv_cache);
        Ok(Engine {
            weights,
            state,
            workers,
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
        let (dim, hidden, kv_dim, hd) = (
            c.dim as usize,
            c.hidden_dim as usize,
            c.kv_dim(),
            c.head_dim(),
        );
        let kv_mul = (c.n_heads / c.n_kv_heads) as usize;
        let gs = self.weights.group_size;
        let w = &self.weights;
        let s = &mut self.state;

        w.token_embedding.dequantize_row(token as usize, &mut s.x);

        for (l, lw) in w.layers.iter().enumerate() {
            // Attention.
            rmsnorm(&mut s.xb, &s.x, lw.attn_norm, c.norm_eps);
            quantize(&s.xb, gs, &mut s.xq[..dim], &mut s.xs[..dim / gs]);
            matmul_many(
                &self.workers,
                &[&lw.wq, &lw.wk, &lw.wv],
                &s.xq[..dim],
                &s.xs[..dim / gs],
                &mut s.qkv,
            );
            let (q, kv) = s.qkv.split_at_mut(dim);
            let (k, v) = kv.split_at_mut(kv_dim);
            rope(q, pos, hd, c.rope_theta);
            rope(k, pos, hd, c.rope_theta);
            for h in 0..c.n_kv_heads as usize {
                let at = s.kv.offset(l, pos, h);
                s.kv.keys.store(at, hd, &k[h * hd..][..hd]);
                s.kv.values.store(at, hd, &v[h * hd..][..hd]);
            }
            let scale = 1.0 / libm::sqrtf(hd as f32);
            for h in 0..c.n_heads as usize {
                let qh = &q[h * hd..][..hd];
                let att = &mut s.att[h * c.seq_len as usize..][..pos + 1];
                let kvh = h / kv_mul;
                for (t, a) in att.iter_mut().enumerate() {
                    *a = s.kv.keys.dot(s.kv.offset(l, t, kvh), hd, qh) * scale;
                }
                softmax(att);
                let out = &mut s.xb[h * hd..][..hd];
                out.fill(0.0);
                for (t, &a) in att.iter().enumerate() {
                    s.kv.values.axpy(s.kv.offset(l, t, kvh), hd, a, out);
                }
            }
            quantize(&s.xb, gs, &mut s.xq[..dim], &mut s.xs[..dim / gs]);
            matmul_many(
                &self.workers,
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
                &[&lw.w1, &lw.w3],
                &s.xq[..dim],
                &s.xs[..dim / gs],
                &mut s.h13,
            );
            let (h1, h3) = s.h13.split_at_mut(hidden);
            for (a, &b) in h1.iter_mut().zip(h3.iter()) {
                *a = *a / (1.0 + libm::expf(-*a)) * b;
            }
            quantize(h1, gs, &mut s.xq[..hidden], &mut s.xs[..hidden / gs]);
            matmul_many(
                &self.workers,
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
            &[&w.token_embedding],
            &s.xq[..dim],
            &s.xs[..dim / gs],
            &mut s.logits,
        );
        Ok(&s.logits)
    }
}

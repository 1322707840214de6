//! Fused training ops with hand-written backward passes (candle custom ops, f32, CPU).
//!
//! - [`attention`] / [`attention_qkv`]: interleaved RoPE on q and k, grouped-query heads, causal
//!   mask and `1/sqrt(head_dim)` scaling inside, softmax and the value product, in one op. It
//!   reads the fused `[q | k | v]` projection `(B, T, (H + 2·KV)·head_dim)` as the matrix
//!   product leaves it and writes `(B, T, H·head_dim)`, so no transposes, no repeated key/value
//!   heads, no mask tensor and no `B×H×T×T` score tensor ever exist in the graph. Forward keeps
//!   one log-sum-exp per row; backward recomputes the scores (flash-attention style) and turns
//!   the q/k gradients back with the inverse rotation.
//! - [`rms_norm`], [`swiglu`] / [`swiglu_fused`] (`silu(a)·b`) and [`cross_entropy`] (masked
//!   mean) as single ops, and [`adamw_update`], the fused optimizer step of one parameter.
//! - Kernels are plain Rust written to vectorise, compiled again for AVX-512 and for AVX2 and
//!   picked at run time; work runs on candle's CPU pool. [`tune_threads`] (called first thing by the binaries)
//!   shortens that pool's spin-wait and keeps freed activation buffers in the heap.
//!
//! Every op is deterministic: work is split into fixed units (rows, (batch, kv-head) pairs,
//! fixed blocks of rows for weight gradients) that each write their own output, and partial
//! sums are added in a fixed order, so results do not depend on the thread count or timing.
//! On devices other than the CPU each function falls back to the same computation composed from
//! stock tensor ops (`*_reference`), which the tests also use as the reference.

use crate::train::matmul::{gemm, MatRef};
use crate::train::profile;
use anyhow::Result;
use candle_core::{
    op::BackpropOp, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Storage,
    Tensor, D,
};
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

pub(crate) type CResult<T> = candle_core::Result<T>;

pub(crate) fn err(msg: String) -> candle_core::Error {
    candle_core::Error::Msg(msg)
}

// ---------------------------------------------------------------------------------------------
// Small kernels. Written so that LLVM vectorises them (lane arrays instead of serial sums);
// `simd` runs a closure compiled for AVX2 where the CPU has it.

const LANES: usize = 8;

/// Accumulator width of the reductions: four AVX2 registers, so that four independent add
/// chains hide the add latency.
const WIDE: usize = 32;

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; WIDE];
    let (ca, cb) = (a.chunks_exact(WIDE), b.chunks_exact(WIDE));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..WIDE {
            acc[l] += x[l] * y[l];
        }
    }
    let mut acc8 = [0f32; LANES];
    let (ca, cb) = (ra.chunks_exact(LANES), rb.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc8[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    fold(&acc) + hsum(&acc8) + tail
}

#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; WIDE];
    let ca = a.chunks_exact(WIDE);
    let ra = ca.remainder();
    for x in ca {
        for l in 0..WIDE {
            acc[l] += x[l];
        }
    }
    let mut tail = 0f32;
    for x in ra {
        tail += x;
    }
    fold(&acc) + tail
}

/// Sum of a wide accumulator, in a fixed order.
#[inline(always)]
fn fold(acc: &[f32; WIDE]) -> f32 {
    let mut a8 = [0f32; LANES];
    for c in acc.chunks_exact(LANES) {
        for l in 0..LANES {
            a8[l] += c[l];
        }
    }
    hsum(&a8)
}

/// The largest element (`-inf` for none), over whole vectors of [`SOFTMAX_VECTOR`] lanes: a
/// softmax row padded by [`whole_vectors`] then has no scalar tail (LLVM's own vectorisation of
/// such loops runs several vectors per iteration and leaves up to 63 elements to a scalar loop,
/// which at rows of ~128 entries cost more than the vector body).
#[inline(always)]
fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; SOFTMAX_VECTOR];
    let ca = a.chunks_exact(SOFTMAX_VECTOR);
    let ra = ca.remainder();
    for x in ca {
        for l in 0..SOFTMAX_VECTOR {
            acc[l] = if x[l] > acc[l] { x[l] } else { acc[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in acc.iter().chain(ra) {
        m = if x > m { x } else { m };
    }
    m
}

/// `x ← f(x)` for every element, one vector of [`SOFTMAX_VECTOR`] lanes per step (see [`max`]).
#[inline(always)]
fn map_vectors(a: &mut [f32], f: impl Fn(f32) -> f32) {
    let mut ca = a.chunks_exact_mut(SOFTMAX_VECTOR);
    for x in &mut ca {
        for v in x.iter_mut() {
            *v = f(*v);
        }
    }
    ca.into_remainder().iter_mut().for_each(|x| *x = f(*x));
}

/// Replaces every `x` by `e^(x - m)` and returns their sum, in one pass: the same bits as the
/// exps followed by [`sum`] (its lanes, tail and fold), each step one vector of
/// [`SOFTMAX_VECTOR`] lanes (see [`max`]).
#[inline(always)]
fn exp_shifted_sum(a: &mut [f32], m: f32) -> f32 {
    const HALF: usize = WIDE / 2;
    let mut acc = [0f32; WIDE];
    let (lo, hi) = acc.split_at_mut(HALF);
    let mut ca = a.chunks_exact_mut(WIDE);
    for x in &mut ca {
        let (xl, xh) = x.split_at_mut(HALF);
        for l in 0..HALF {
            xl[l] = exp(xl[l] - m);
            lo[l] += xl[l];
        }
        for l in 0..HALF {
            xh[l] = exp(xh[l] - m);
            hi[l] += xh[l];
        }
    }
    let rest = ca.into_remainder();
    map_vectors(rest, |x| exp(x - m));
    let mut tail = 0f32;
    for &x in rest.iter() {
        tail += x;
    }
    fold(&acc) + tail
}

#[inline(always)]
fn hsum(acc: &[f32; LANES]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `e^x` to about 2 ulp for x in [-87, 88] (clamped outside), branch-free so that loops over
/// it vectorise (Cephes' polynomial on a range reduced by powers of two).
///
/// `2^n` comes from the bits of the rounded sum itself: `x·log2(e) + 1.5·2^23` holds the
/// integer `n` in its low mantissa bits, so `(bits + 127) << 23` is the float `2^n` (the high
/// bits shift out). A float-to-int cast (`n as i32`) gives the same value but saturates, which
/// LLVM does not vectorise: it made every loop over `exp` scalar.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // n + 127 lies in [1, 254] for the clamped x: a normal power of two.
    e * f32::from_bits(t.to_bits().wrapping_add(127) << 23)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Runs kernel `f` on `r`, compiled for AVX-512 or AVX2 when the CPU has them. The kernels
/// are closures marked `#[inline(always)]` (as are the helpers above), so their whole body is
/// inlined into each copy and vectorised for it. Every copy computes bit-identical results: the
/// kernels' sums run over fixed lane arrays (the order is in the source, not the vector width),
/// and Rust never contracts `a·b + c` into an FMA on its own. (FMA via `mul_add` measured no
/// faster here, and would be a slow library call on CPUs without it.)
#[inline(always)]
fn simd<F: Fn(std::ops::Range<usize>)>(f: &F, r: std::ops::Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<F: Fn(std::ops::Range<usize>)>(f: &F, r: std::ops::Range<usize>) {
            f(r)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<F: Fn(std::ops::Range<usize>)>(f: &F, r: std::ops::Range<usize>) {
            f(r)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { avx512(f, r) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked above).
            return unsafe { avx2(f, r) };
        }
    }
    f(r)
}

/// How long (spin iterations) candle's pool workers busy-wait for the next op before parking,
/// unless `CANDLE_BARRIER_POOL_SPIN_LIMIT` says otherwise. candle's default (25,000) keeps a
/// worker spinning through every matrix product, which runs on a different (rayon) pool: on a
/// 2-core machine that steals a core from the product. Measured with `bench-train`.
pub const SPIN_LIMIT: u32 = 500;

/// Sets candle's pool spin limit to [`SPIN_LIMIT`] unless the environment sets one. Takes
/// effect only before candle's CPU pool first runs. It writes the process environment, which
/// is only sound while no other thread exists: call it first thing in `main` (the `badge` and
/// `bench-train` binaries do), never from library code.
pub fn tune_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
            std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", SPIN_LIMIT.to_string());
        }
        keep_freed_memory();
    });
}

/// Training frees and reallocates the same multi-megabyte activation buffers every step. glibc
/// serves blocks that large with fresh `mmap`s (and returns freed heap tops to the system), so
/// every step paid for page faults, zeroing and TLB shootdowns; keep them in the heap instead.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        // SAFETY: plain glibc tuning calls, valid at any time.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 256 << 20);
            mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}

/// Splits `0..n` into chunks run on candle's CPU thread pool (inline when `n` is small).
fn par(n: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    if n <= 1 {
        simd(&f, 0..n);
        return;
    }
    candle_core::utils::barrier_pool().execute_chunked(n, |r| simd(&f, r));
}

/// A raw output buffer written by several threads at disjoint ranges.
struct Out<T = f32>(*mut T);
impl<T> Clone for Out<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Out<T> {}
unsafe impl<T: Send> Send for Out<T> {}
unsafe impl<T: Send> Sync for Out<T> {}
impl<T> Out<T> {
    fn new(v: &mut [T]) -> Self {
        Out(v.as_mut_ptr())
    }
    /// SAFETY: callers write disjoint ranges within the buffer's length.
    #[allow(clippy::mut_from_ref)]
    unsafe fn at(&self, start: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// `a += b`, element by element.
pub(crate) fn add_into(a: &mut [f32], b: &[f32]) {
    for (a, &b) in a.iter_mut().zip(b) {
        *a += b;
    }
}

/// An output buffer not yet written, filled by several threads at disjoint ranges.
#[derive(Clone, Copy)]
struct Unwritten(*mut MaybeUninit<f32>);
unsafe impl Send for Unwritten {}
unsafe impl Sync for Unwritten {}
impl Unwritten {
    /// SAFETY: callers write disjoint ranges within the buffer's length.
    #[allow(clippy::mut_from_ref)]
    unsafe fn at(&self, start: usize, len: usize) -> &mut [MaybeUninit<f32>] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// A vector of `n` values that `fill` writes, without zero-filling it first: for an
/// activation-sized output that fill is one more pass over memory as long as the kernel's own.
///
/// # Safety
///
/// `fill` must write every one of the `n` elements (through [`Unwritten::at`]).
unsafe fn written_vec(n: usize, fill: impl FnOnce(Unwritten)) -> Vec<f32> {
    let mut v = Vec::<f32>::with_capacity(n);
    fill(Unwritten(v.spare_capacity_mut().as_mut_ptr()));
    // SAFETY: the caller's `fill` initialised all n elements (a panic in it leaves len 0).
    unsafe { v.set_len(n) };
    v
}

pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> CResult<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v,
        _ => return Err(err(format!("{what}: expected f32"))),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => Err(err(format!("{what}: input must be contiguous"))),
    }
}

/// Reads a CPU f32 tensor (made contiguous) and runs `f` on its data.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> CResult<R>) -> CResult<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(f32_slice(c, l, "tensor")?),
        _ => Err(err("expected a CPU tensor".into())),
    }
}

/// `shape` with its last dimension replaced by `n`: the output shape of an op that maps each
/// row (a product, a gate) to `n` values.
pub(crate) fn with_last_dim(shape: &Shape, n: usize) -> Shape {
    let mut dims = shape.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Shape::from(dims)
}

pub(crate) fn cpu_tensor(v: Vec<f32>, shape: &Shape) -> Tensor {
    Tensor::from_storage(
        Storage::Cpu(CpuStorage::F32(v)),
        shape.clone(),
        BackpropOp::none(),
        false,
    )
}

pub(crate) fn use_fused(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

// ---------------------------------------------------------------------------------------------
// RoPE tables

/// cos/sin tables of interleaved RoPE, `(seq_len, head_dim/2)`, as tensors and as plain data.
#[derive(Clone)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
    cos_v: Arc<Vec<f32>>,
    sin_v: Arc<Vec<f32>>,
    half: usize,
}

impl RopeTables {
    pub fn new(
        cos: Vec<f32>,
        sin: Vec<f32>,
        seq: usize,
        half: usize,
        dev: &candle_core::Device,
    ) -> Result<Self> {
        Ok(RopeTables {
            cos: Tensor::from_vec(cos.clone(), (seq, half), dev)?,
            sin: Tensor::from_vec(sin.clone(), (seq, half), dev)?,
            cos_v: Arc::new(cos),
            sin_v: Arc::new(sin),
            half,
        })
    }

    /// Rotates one head vector at position `pos` (`inverse`: the transposed rotation).
    ///
    /// Written over exact-size pairs, so that the loop has no bounds checks (indexed `x[2i]`,
    /// `x[2i + 1]` it ran scalar with a check per element).
    #[inline(always)]
    fn rotate(&self, x: &[f32], out: &mut [f32], pos: usize, inverse: bool) {
        let h = self.half;
        let (c, s) = (
            &self.cos_v[pos * h..pos * h + h],
            &self.sin_v[pos * h..pos * h + h],
        );
        let (x, out) = (&x[..2 * h], &mut out[..2 * h]);
        let pairs = out.chunks_exact_mut(2).zip(x.chunks_exact(2));
        for ((o, x), (&c, &s)) in pairs.zip(c.iter().zip(s)) {
            let (a, b) = (x[0], x[1]);
            let s = if inverse { -s } else { s };
            o[0] = a * c - b * s;
            o[1] = a * s + b * c;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// Causal grouped-query self-attention with interleaved RoPE: q `(B, T, H·hd)`, k and v
/// `(B, T, KV·hd)` → `(B, T, H·hd)`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rope: &RopeTables,
    n_heads: usize,
    n_kv_heads: usize,
) -> Result<Tensor> {
    if !use_fused(q) {
        return attention_reference(q, k, v, rope, n_heads, n_kv_heads);
    }
    attention_qkv(&Tensor::cat(&[q, k, v], 2)?, rope, n_heads, n_kv_heads)
}

/// [`attention`] of one fused projection `[q | k | v]`, `(B, T, (H + 2·KV)·hd)`, as the model
/// computes it (one matrix product for all three).
pub fn attention_qkv(
    qkv: &Tensor,
    rope: &RopeTables,
    n_heads: usize,
    n_kv_heads: usize,
) -> Result<Tensor> {
    let (_, t, w) = qkv.dims3()?;
    let hd = w / (n_heads + 2 * n_kv_heads);
    if !use_fused(qkv) {
        let q = qkv.narrow(2, 0, n_heads * hd)?;
        let k = qkv.narrow(2, n_heads * hd, n_kv_heads * hd)?;
        let v = qkv.narrow(2, (n_heads + n_kv_heads) * hd, n_kv_heads * hd)?;
        return attention_reference(&q, &k, &v, rope, n_heads, n_kv_heads);
    }
    let op = Attention::new(rope, n_heads, n_kv_heads, t, w)?;
    Ok(qkv.contiguous()?.apply_op1_arc(Arc::new(Box::new(op)))?)
}

/// The same attention from stock candle ops (the fallback off the CPU, and the tests'
/// reference).
pub fn attention_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rope: &RopeTables,
    n_heads: usize,
    n_kv_heads: usize,
) -> Result<Tensor> {
    let (b, t, qd) = q.dims3()?;
    let hd = qd / n_heads;
    let heads = |y: &Tensor, n: usize| -> Result<Tensor> {
        Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
    };
    let (cos, sin) = (rope.cos.narrow(0, 0, t)?, rope.sin.narrow(0, 0, t)?);
    let qh = candle_nn::rotary_emb::rope_i_slow(&heads(q, n_heads)?, &cos, &sin)?;
    let kh = candle_nn::rotary_emb::rope_i_slow(&heads(k, n_kv_heads)?, &cos, &sin)?;
    let vh = heads(v, n_kv_heads)?;
    let rep = n_heads / n_kv_heads;
    let repeat = |x: Tensor| -> Result<Tensor> {
        if rep == 1 {
            return Ok(x);
        }
        Ok(x.unsqueeze(2)?
            .expand((b, n_kv_heads, rep, t, hd))?
            .reshape((b, n_heads, t, hd))?)
    };
    let (kh, vh) = (repeat(kh)?, repeat(vh)?);
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), q.device())?;
    let att = (qh.matmul(&kh.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(&mask)?;
    let att = candle_nn::ops::softmax(&att, D::Minus1)?;
    Ok(att
        .matmul(&vh)?
        .transpose(1, 2)?
        .reshape((b, t, n_heads * hd))?)
}

/// The fused attention: a candle op, and (for the fused transformer block) its two passes on
/// plain slices.
pub(crate) struct Attention {
    n_heads: usize,
    n_kv: usize,
    hd: usize,
    rope: RopeTables,
    /// Log-sum-exp of each score row, `(B, H, T)`, kept by the forward pass for the backward.
    lse: Mutex<Vec<f32>>,
}

struct AttnDims {
    b: usize,
    t: usize,
    h: usize,
    kv: usize,
    hd: usize,
    rep: usize,
    scale: f32,
    /// Row width of the fused `[q | k | v]` input: `(h + 2·kv)·hd`.
    w: usize,
}

impl AttnDims {
    /// Offsets of query head `h` at (b, i), key/value head `g` at (b, j) in the fused input,
    /// and of output head `h` at (b, i).
    #[inline(always)]
    fn qo(&self, b: usize, i: usize, h: usize) -> usize {
        (b * self.t + i) * self.w + h * self.hd
    }
    #[inline(always)]
    fn ko(&self, b: usize, j: usize, g: usize) -> usize {
        (b * self.t + j) * self.w + (self.h + g) * self.hd
    }
    #[inline(always)]
    fn vo(&self, b: usize, j: usize, g: usize) -> usize {
        (b * self.t + j) * self.w + (self.h + self.kv + g) * self.hd
    }
    #[inline(always)]
    fn yo(&self, b: usize, i: usize, h: usize) -> usize {
        ((b * self.t + i) * self.h + h) * self.hd
    }
}

/// Query rows per tile and head: the attention products run as `(rep·QUERY_TILE × hd)·(hd × n)`
/// matrix products over the first `n` keys (causal: up to the tile's last row), the tile's rows
/// of all `rep` query heads that share a key/value head stacked. That wastes the upper triangle
/// of each diagonal tile (an eighth of the work at T = 256) but runs at matrix product speed
/// instead of one dot product per query row; stacking the heads doubles the products' size
/// (and the depth of the key and value gradients' products) at badge's 2 heads per group.
const QUERY_TILE: usize = 32;

/// The causal softmax works on a score row's first `live` entries (the keys up to the query's
/// own position). Rounded up to whole vectors, with the padding masked to -inf, no row ends in a
/// scalar loop: at badge's sizes rows average 128 entries, and the scalar tails of the max, exp,
/// sum and scale passes took longer than their vector bodies. The padding's `exp` is the
/// smallest normal float (`exp` clamps), which cannot move a sum that holds `e⁰ = 1`; callers
/// zero everything past `live` afterwards. Returns the padded part of the row.
const SOFTMAX_VECTOR: usize = 16;

#[inline(always)]
fn whole_vectors(row: &mut [f32], live: usize) -> &mut [f32] {
    let end = live.next_multiple_of(SOFTMAX_VECTOR).min(row.len());
    row[live..end].fill(f32::NEG_INFINITY);
    &mut row[..end]
}

/// One task's scratch buffers (one task: a batch row and a key/value head).
struct AttnScratch {
    /// Rotated keys `(T, hd)`.
    kr: Vec<f32>,
    /// Rotated, scaled queries of one tile, heads stacked: `(rep·QUERY_TILE, hd)`.
    qs: Vec<f32>,
    /// Scores, then probabilities, of one tile `(rep·QUERY_TILE, n)`.
    p: Vec<f32>,
    /// A tile's output (forward) or query gradient (backward) before it is scattered.
    tile: Vec<f32>,
}

impl AttnScratch {
    fn new(d: &AttnDims) -> Self {
        let rows = d.rep * QUERY_TILE;
        AttnScratch {
            kr: vec![0f32; d.t * d.hd],
            qs: vec![0f32; rows * d.hd],
            p: vec![0f32; rows * d.t],
            tile: vec![0f32; rows * d.hd],
        }
    }
}

impl Attention {
    /// Attention over fused `[q | k | v]` rows of width `w`, sequences of up to `t` positions.
    pub(crate) fn new(
        rope: &RopeTables,
        n_heads: usize,
        n_kv_heads: usize,
        t: usize,
        w: usize,
    ) -> Result<Self> {
        let hd = w / (n_heads + 2 * n_kv_heads).max(1);
        if n_kv_heads == 0
            || t * rope.half > rope.cos_v.len()
            || hd != 2 * rope.half
            || w != (n_heads + 2 * n_kv_heads) * hd
            || !n_heads.is_multiple_of(n_kv_heads)
        {
            anyhow::bail!("attention: shapes do not match the RoPE tables or head counts");
        }
        Ok(Attention {
            n_heads,
            n_kv: n_kv_heads,
            hd,
            rope: rope.clone(),
            lse: Mutex::new(Vec::new()),
        })
    }

    fn dims(&self, b: usize, t: usize, w: usize) -> CResult<AttnDims> {
        if w != (self.n_heads + 2 * self.n_kv) * self.hd {
            return Err(err(format!(
                "attention: bad fused q/k/v shape ({b}, {t}, {w})"
            )));
        }
        Ok(AttnDims {
            b,
            t,
            h: self.n_heads,
            kv: self.n_kv,
            hd: self.hd,
            rep: self.n_heads / self.n_kv,
            scale: 1.0 / (self.hd as f32).sqrt(),
            w: (self.n_heads + 2 * self.n_kv) * self.hd,
        })
    }

    /// The forward pass over `qkv` `(b, t, w)`: the output `(b, t, heads·hd)` and each score
    /// row's log-sum-exp `(b, heads, t)`, which the backward pass needs.
    pub(crate) fn forward_rows(
        &self,
        b: usize,
        t: usize,
        w: usize,
        qkv: &[f32],
    ) -> CResult<(Vec<f32>, Vec<f32>)> {
        let _p = profile::op("attention.fwd");
        let d = self.dims(b, t, w)?;
        if qkv.len() != b * t * w {
            return Err(err("attention: q/k/v does not match its shape".into()));
        }
        let mut out = vec![0f32; d.b * d.t * d.h * d.hd];
        let mut lse = vec![0f32; d.b * d.h * d.t];
        let (po, pl) = (Out::new(&mut out), Out::new(&mut lse));
        let hd = d.hd;
        par(
            d.b * d.kv,
            #[inline(always)]
            |range| {
                let mut s = AttnScratch::new(&d);
                for task in range {
                    let (b, g) = (task / d.kv, task % d.kv);
                    self.rotated_keys(&d, qkv, b, g, &mut s.kr);
                    let v = &qkv[d.vo(b, 0, g)..];
                    for i0 in (0..d.t).step_by(QUERY_TILE) {
                        let rows = QUERY_TILE.min(d.t - i0);
                        let (n, all) = (i0 + rows, d.rep * rows);
                        // Stacked row `row` is query row i of head h.
                        let head_row = |row: usize| (g * d.rep + row / rows, i0 + row % rows);
                        self.stacked_queries(&d, qkv, b, g, i0, rows, &mut s.qs);
                        Self::tile_scores(&d, all, n, &mut s);
                        // Max, then exp and sum in one pass, over whole vectors, in the same
                        // order as `sum` (the same bits). Summing in 16 lanes and scaling the
                        // output rows instead of the scores ran this a further fifth faster at
                        // badge-1m, but moved the probabilities' last bits, and the tiny
                        // demo's held-out answers with them (seed 2: 47 → 36 of 69).
                        for row in 0..all {
                            let (h, i) = head_row(row);
                            let scores = &mut s.p[row * n..(row + 1) * n];
                            let (live, pad) = (i + 1, whole_vectors(scores, i + 1));
                            let m = max(pad);
                            let z = exp_shifted_sum(pad, m);
                            let inv = 1.0 / z;
                            pad.iter_mut().for_each(|x| *x *= inv);
                            scores[live..].fill(0.0);
                            // SAFETY: lse (b, h, i) belongs to this task only.
                            unsafe { pl.at((b * d.h + h) * d.t + i, 1)[0] = m + z.ln() };
                        }
                        gemm(
                            all,
                            hd,
                            n,
                            &mut s.tile,
                            hd,
                            false,
                            MatRef::rows(&s.p, n),
                            MatRef::rows(v, d.w),
                            1,
                        );
                        for row in 0..all {
                            let (h, i) = head_row(row);
                            // SAFETY: output row (b, i, h) belongs to this task only.
                            let o = unsafe { po.at(d.yo(b, i, h), hd) };
                            o.copy_from_slice(&s.tile[row * hd..(row + 1) * hd]);
                        }
                    }
                }
            },
        );
        Ok((out, lse))
    }

    /// The rotated keys of (batch `b`, kv head `g`) into `kr`, `(T, hd)`.
    #[inline(always)]
    fn rotated_keys(&self, d: &AttnDims, k: &[f32], b: usize, g: usize, kr: &mut [f32]) {
        for j in 0..d.t {
            let off = d.ko(b, j, g);
            self.rope.rotate(
                &k[off..off + d.hd],
                &mut kr[j * d.hd..(j + 1) * d.hd],
                j,
                false,
            );
        }
    }

    /// The rotated queries, rows `i0..i0 + rows`, of every query head of kv head `g`, scaled by
    /// `1/sqrt(hd)`, stacked head after head into `qs` (`rep·rows × hd`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn stacked_queries(
        &self,
        d: &AttnDims,
        q: &[f32],
        b: usize,
        g: usize,
        i0: usize,
        rows: usize,
        qs: &mut [f32],
    ) {
        for row in 0..d.rep * rows {
            let (h, i) = (g * d.rep + row / rows, i0 + row % rows);
            let (off, out) = (d.qo(b, i, h), &mut qs[row * d.hd..(row + 1) * d.hd]);
            self.rope.rotate(&q[off..off + d.hd], out, i, false);
            out.iter_mut().for_each(|x| *x *= d.scale);
        }
    }

    /// The tile's scores `qs·krᵀ` over the first `n` keys into `p` (`rows × n`, row stride n).
    #[inline(always)]
    fn tile_scores(d: &AttnDims, rows: usize, n: usize, s: &mut AttnScratch) {
        gemm(
            rows,
            n,
            d.hd,
            &mut s.p,
            n,
            false,
            MatRef::rows(&s.qs, d.hd),
            MatRef::transposed(&s.kr, d.hd),
            1,
        );
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "badge-attention"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (b, t, w) = l1.shape().dims3()?;
        let qkv = f32_slice(s1, l1, "attention q/k/v")?;
        let (out, lse) = self.forward_rows(b, t, w, qkv)?;
        *self.lse.lock().unwrap() = lse;
        Ok((
            CpuStorage::F32(out),
            Shape::from((b, t, self.n_heads * self.hd)),
        ))
    }

    fn bwd(&self, qkv: &Tensor, res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (b, t, w) = qkv.dims3()?;
        let lse = self.lse.lock().unwrap();
        let dqkv = with_f32(qkv, |x| {
            with_f32(res, |y| {
                with_f32(grad, |dy| self.backward_rows(b, t, w, x, y, dy, &lse))
            })
        })?;
        Ok(Some(cpu_tensor(dqkv, qkv.shape())))
    }
}

impl Attention {
    /// The gradient of `qkv` `(b, t, w)` for the output gradient `dy`, given the forward pass's
    /// output `y` and log-sum-exps `lse`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_rows(
        &self,
        b: usize,
        t: usize,
        w: usize,
        qkv: &[f32],
        y: &[f32],
        dy: &[f32],
        lse: &[f32],
    ) -> CResult<Vec<f32>> {
        let _p = profile::op("attention.bwd");
        let d = self.dims(b, t, w)?;
        if lse.len() != d.b * d.h * d.t {
            return Err(err("attention backward without its forward".into()));
        }
        let out_len = d.b * d.t * d.h * d.hd;
        if qkv.len() != b * t * w || y.len() != out_len || dy.len() != out_len {
            return Err(err(
                "attention backward: buffers do not match the shape".into()
            ));
        }
        let mut dqkv = vec![0f32; qkv.len()];
        self.backward(&d, qkv, y, dy, lse, &mut dqkv);
        Ok(dqkv)
    }

    /// Flash-attention style: per tile, recompute `P = exp(S - lse)`, then
    /// `dP = dO·Vᵀ`, `dS = P ⊙ (dP - rowsum(dO ⊙ O))`, `dQ = dS·K`, `dK += dSᵀ·Q`, `dV += Pᵀ·dO`.
    fn backward(
        &self,
        d: &AttnDims,
        qkv: &[f32],
        y: &[f32],
        dy: &[f32],
        lse: &[f32],
        dqkv: &mut [f32],
    ) {
        let po = Out::new(dqkv);
        let (t, hd) = (d.t, d.hd);
        par(
            d.b * d.kv,
            #[inline(always)]
            |range| {
                let mut s = AttnScratch::new(d);
                let stack = d.rep * QUERY_TILE;
                let mut ds = vec![0f32; stack * t];
                // The tile's output gradients, heads stacked like the queries.
                let mut g_o = vec![0f32; stack * hd];
                let (mut dk, mut dv) = (vec![0f32; t * hd], vec![0f32; t * hd]);
                let mut di = vec![0f32; stack];
                for task in range {
                    let (b, g) = (task / d.kv, task % d.kv);
                    self.rotated_keys(d, qkv, b, g, &mut s.kr);
                    let v = &qkv[d.vo(b, 0, g)..];
                    for i0 in (0..t).step_by(QUERY_TILE) {
                        let rows = QUERY_TILE.min(t - i0);
                        let (n, all) = (i0 + rows, d.rep * rows);
                        // Stacked row `row` is query row i of head h.
                        let head_row = |row: usize| (g * d.rep + row / rows, i0 + row % rows);
                        self.stacked_queries(d, qkv, b, g, i0, rows, &mut s.qs);
                        Self::tile_scores(d, all, n, &mut s);
                        for row in 0..all {
                            let (h, i) = head_row(row);
                            let l = lse[(b * d.h + h) * t + i];
                            let scores = &mut s.p[row * n..(row + 1) * n];
                            map_vectors(whole_vectors(scores, i + 1), |x| exp(x - l));
                            scores[i + 1..].fill(0.0);
                            let yo = d.yo(b, i, h);
                            g_o[row * hd..(row + 1) * hd].copy_from_slice(&dy[yo..yo + hd]);
                            di[row] = dot(&dy[yo..yo + hd], &y[yo..yo + hd]);
                        }
                        // dP = dO·Vᵀ, then dS = P (dP - D).
                        gemm(
                            all,
                            n,
                            hd,
                            &mut ds,
                            n,
                            false,
                            MatRef::rows(&g_o, hd),
                            MatRef::transposed(v, d.w),
                            1,
                        );
                        for row in 0..all {
                            let (dsr, pr) = (&mut ds[row * n..(row + 1) * n], &s.p[row * n..]);
                            for (x, &p) in dsr.iter_mut().zip(pr) {
                                *x = p * (*x - di[row]);
                            }
                        }
                        gemm(
                            all,
                            hd,
                            n,
                            &mut s.tile,
                            hd,
                            false,
                            MatRef::rows(&ds, n),
                            MatRef::rows(&s.kr, hd),
                            1,
                        );
                        // Tiles run in order, so the first one covers the fewest keys: it
                        // sets its rows of dk and dv, zeroes the rest, and later tiles add.
                        let first = i0 == 0;
                        gemm(
                            n,
                            hd,
                            all,
                            &mut dk,
                            hd,
                            !first,
                            MatRef::transposed(&ds, n),
                            MatRef::rows(&s.qs, hd),
                            1,
                        );
                        gemm(
                            n,
                            hd,
                            all,
                            &mut dv,
                            hd,
                            !first,
                            MatRef::transposed(&s.p, n),
                            MatRef::rows(&g_o, hd),
                            1,
                        );
                        if first {
                            dk[n * hd..].fill(0.0);
                            dv[n * hd..].fill(0.0);
                        }
                        for row in 0..all {
                            let (h, i) = head_row(row);
                            let dq = &mut s.tile[row * hd..(row + 1) * hd];
                            dq.iter_mut().for_each(|x| *x *= d.scale);
                            // SAFETY: row (b, i, h) of dq belongs to this task only.
                            let out = unsafe { po.at(d.qo(b, i, h), hd) };
                            self.rope.rotate(dq, out, i, true);
                        }
                    }
                    for j in 0..t {
                        // SAFETY: rows (b, j, g) of dk and dv belong to this task only.
                        unsafe {
                            let k_out = po.at(d.ko(b, j, g), hd);
                            self.rope.rotate(&dk[j * hd..(j + 1) * hd], k_out, j, true);
                            po.at(d.vo(b, j, g), hd)
                                .copy_from_slice(&dv[j * hd..(j + 1) * hd]);
                        }
                    }
                }
            },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm

/// `x / sqrt(mean(x²) + eps) · w` over the last dimension.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if !use_fused(x) {
        return rms_norm_reference(x, w, eps);
    }
    let op = RmsNorm { eps: eps as f32 };
    Ok(x.contiguous()?
        .apply_op2_arc(&w.contiguous()?, Arc::new(Box::new(op)))?)
}

pub fn rms_norm_reference(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(w)?)
}

struct RmsNorm {
    eps: f32,
}

/// Rows per block of the weight-gradient partial sums (fixed: the sum order never changes).
const NORM_BLOCK: usize = 64;

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "badge-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "rms_norm x")?;
        let w = f32_slice(s2, l2, "rms_norm w")?;
        if l1.shape().dims().last() != Some(&w.len()) {
            return Err(err(
                "rms_norm: weight does not match the last dimension".into()
            ));
        }
        let out = rms_norm_rows(x, w, self.eps);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(grad, |dy| Ok(rms_norm_rows_backward(x, w, dy, self.eps)))
            })
        })?;
        Ok((
            Some(cpu_tensor(dx, x.shape())),
            Some(cpu_tensor(dw, w.shape())),
        ))
    }
}

/// [`rms_norm`] of every row of `x` (rows of `w.len()` values).
pub(crate) fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let _p = profile::op("rms_norm.fwd");
    let dim = w.len();
    assert!(
        dim > 0 && x.len().is_multiple_of(dim),
        "rms_norm: rows of {dim}"
    );
    let fill = |po: Unwritten| {
        par(
            x.len() / dim,
            #[inline(always)]
            |range| {
                for r in range {
                    let xr = &x[r * dim..(r + 1) * dim];
                    let inv = 1.0 / (dot(xr, xr) / dim as f32 + eps).sqrt();
                    // SAFETY: row r belongs to this chunk only.
                    let o = unsafe { po.at(r * dim, dim) };
                    for ((o, &x), &w) in o.iter_mut().zip(xr).zip(w) {
                        o.write(x * inv * w);
                    }
                }
            },
        )
    };
    // SAFETY: `fill` writes every row.
    unsafe { written_vec(x.len(), fill) }
}

/// The gradients of [`rms_norm_rows`] for the output gradient `dy`: `(dx, dw)`. The weight's
/// gradient sums fixed blocks of rows, then the blocks in order, whatever the thread count.
pub(crate) fn rms_norm_rows_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>) {
    let _p = profile::op("rms_norm.bwd");
    let dim = w.len();
    assert!(
        dim > 0 && x.len().is_multiple_of(dim),
        "rms_norm: rows of {dim}"
    );
    let rows = x.len() / dim;
    let blocks = rows.div_ceil(NORM_BLOCK);
    let mut dw_part = vec![0f32; blocks * dim];
    let pw = Out::new(&mut dw_part);
    let fill = |px: Unwritten| {
        par(
            blocks,
            #[inline(always)]
            |range| {
                let mut gw = vec![0f32; dim];
                for blk in range {
                    // SAFETY: block blk's rows and partial sum belong to this chunk.
                    let part = unsafe { pw.at(blk * dim, dim) };
                    for r in blk * NORM_BLOCK..rows.min((blk + 1) * NORM_BLOCK) {
                        let xr = &x[r * dim..(r + 1) * dim];
                        let gr = &dy[r * dim..(r + 1) * dim];
                        let inv = 1.0 / (dot(xr, xr) / dim as f32 + eps).sqrt();
                        for ((gw, &g), &w) in gw.iter_mut().zip(gr).zip(w) {
                            *gw = g * w;
                        }
                        let c = dot(&gw, xr) * inv * inv * inv / dim as f32;
                        // SAFETY: row r belongs to this chunk only.
                        let o = unsafe { px.at(r * dim, dim) };
                        for i in 0..dim {
                            o[i].write(gw[i] * inv - xr[i] * c);
                            part[i] += gr[i] * xr[i] * inv;
                        }
                    }
                }
            },
        )
    };
    // SAFETY: `fill` writes every row of dx (the blocks cover all rows).
    let dx = unsafe { written_vec(x.len(), fill) };
    let mut dw = vec![0f32; dim];
    for part in dw_part.chunks_exact(dim) {
        add_into(&mut dw, part);
    }
    (dx, dw)
}

// ---------------------------------------------------------------------------------------------
// SwiGLU

/// `silu(a) · b`, element-wise.
pub fn swiglu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !use_fused(a) {
        return swiglu_reference(a, b);
    }
    swiglu_fused(&Tensor::cat(&[a, b], D::Minus1)?)
}

/// [`swiglu`] of one fused projection `[a | b]` (last dimension `2·hidden`) → `hidden`, as the
/// model computes it (one matrix product for `w1` and `w3`).
pub fn swiglu_fused(ab: &Tensor) -> Result<Tensor> {
    let hidden = ab.dim(D::Minus1)? / 2;
    if !use_fused(ab) {
        return swiglu_reference(
            &ab.narrow(D::Minus1, 0, hidden)?,
            &ab.narrow(D::Minus1, hidden, hidden)?,
        );
    }
    Ok(ab.contiguous()?.apply_op1_arc(Arc::new(Box::new(SwiGlu)))?)
}

pub fn swiglu_reference(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((a.silu()? * b)?)
}

struct SwiGlu;

/// Rows per parallel work unit of the element-wise ops.
const ROW_CHUNK: usize = 16;

/// `silu(a)·b` of every row of `ab` (`[a | b]`, rows of width `2h`): rows of width `h`.
pub(crate) fn swiglu_rows(ab: &[f32], h: usize) -> Vec<f32> {
    let w = 2 * h;
    let rows = ab.len() / w.max(1);
    let fill = |po: Unwritten| {
        par(
            rows.div_ceil(ROW_CHUNK),
            #[inline(always)]
            |range| {
                for c in range {
                    for r in c * ROW_CHUNK..rows.min((c + 1) * ROW_CHUNK) {
                        let (a, b) = ab[r * w..(r + 1) * w].split_at(h);
                        // SAFETY: row r belongs to this chunk only.
                        let o = unsafe { po.at(r * h, h) };
                        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                            o.write(a * sigmoid(a) * b);
                        }
                    }
                }
            },
        )
    };
    // SAFETY: `fill` writes every row (the chunks cover all rows).
    unsafe { written_vec(rows * h, fill) }
}

/// The gradient of [`swiglu_rows`] for the output gradient `g` (rows of width `h`): rows of
/// width `2h`, `[da | db]`.
pub(crate) fn swiglu_rows_backward(ab: &[f32], g: &[f32], h: usize) -> Vec<f32> {
    let w = 2 * h;
    let rows = ab.len() / w.max(1);
    let fill = |pd: Unwritten| {
        par(
            rows.div_ceil(ROW_CHUNK),
            #[inline(always)]
            |range| {
                for c in range {
                    for r in c * ROW_CHUNK..rows.min((c + 1) * ROW_CHUNK) {
                        let (a, b) = ab[r * w..(r + 1) * w].split_at(h);
                        let g = &g[r * h..(r + 1) * h];
                        // SAFETY: row r belongs to this chunk only.
                        let (da, db) = unsafe { pd.at(r * w, w) }.split_at_mut(h);
                        for i in 0..h {
                            let (x, y) = (a[i], b[i]);
                            let s = sigmoid(x);
                            da[i].write(g[i] * y * s * (1.0 + x * (1.0 - s)));
                            db[i].write(g[i] * x * s);
                        }
                    }
                }
            },
        )
    };
    // SAFETY: `fill` writes every row (the chunks cover all rows).
    unsafe { written_vec(rows * w, fill) }
}

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "badge-swiglu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> CResult<(CpuStorage, Shape)> {
        let ab = f32_slice(s1, l1, "swiglu input")?;
        let dims = l1.shape().dims();
        let w = *dims.last().unwrap_or(&0);
        if !w.is_multiple_of(2) {
            return Err(err("swiglu: the last dimension must be even".into()));
        }
        let out = swiglu_rows(ab, w / 2);
        Ok((CpuStorage::F32(out), with_last_dim(l1.shape(), w / 2)))
    }

    fn bwd(&self, ab: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let h = ab.dim(D::Minus1)? / 2;
        let dab = with_f32(ab, |ab| {
            with_f32(grad, |g| Ok(swiglu_rows_backward(ab, g, h)))
        })?;
        Ok(Some(cpu_tensor(dab, ab.shape())))
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-entropy

/// Mean negative log-likelihood of `targets` (u32 or i64) over the positions where `mask`
/// (f32) is non-zero, weighted by the mask: logits `(..., V)`, targets and mask `(...)`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?;
    if !use_fused(logits) {
        return cross_entropy_reference(logits, targets, &mask);
    }
    let v = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), v))?;
    let targets = targets.flatten_all()?.to_dtype(DType::U32)?;
    let mask = mask.flatten_all()?;
    let op = CrossEntropy {
        lse: Mutex::new(Vec::new()),
    };
    Ok(logits.contiguous()?.apply_op3_arc(
        &targets.contiguous()?,
        &mask.contiguous()?,
        Arc::new(Box::new(op)),
    )?)
}

pub fn cross_entropy_reference(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let v = logits.dim(D::Minus1)?;
    let logits = logits.reshape(((), v))?;
    let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = lsm
        .gather(&targets.flatten_all()?.unsqueeze(1)?, 1)?
        .squeeze(1)?;
    let mask = mask.flatten_all()?.to_dtype(DType::F32)?;
    let count = mask.sum_all()?.maximum(1f32)?;
    Ok((picked * &mask)?.sum_all()?.neg()?.broadcast_div(&count)?)
}

struct CrossEntropy {
    lse: Mutex<Vec<f32>>,
}

fn u32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> CResult<&'a [u32]> {
    let v = match s {
        CpuStorage::U32(v) => v,
        _ => return Err(err("cross_entropy: targets must be u32".into())),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => Err(err("cross_entropy: targets must be contiguous".into())),
    }
}

impl CustomOp3 for CrossEntropy {
    fn name(&self) -> &'static str {
        "badge-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let _p = profile::op("cross_entropy.fwd");
        let x = f32_slice(s1, l1, "cross_entropy logits")?;
        let tg = u32_slice(s2, l2)?;
        let mask = f32_slice(s3, l3, "cross_entropy mask")?;
        let (n, v) = l1.shape().dims2()?;
        if tg.len() != n || mask.len() != n {
            return Err(err(
                "cross_entropy: targets/mask do not match the logits".into()
            ));
        }
        if let Some(&bad) = tg.iter().find(|&&t| t as usize >= v) {
            return Err(err(format!("cross_entropy: target {bad} out of range")));
        }
        let mut lse = vec![0f32; n];
        let pl = Out::new(&mut lse);
        par(
            n,
            #[inline(always)]
            |range| {
                let mut e = vec![0f32; v];
                for r in range {
                    let row = &x[r * v..(r + 1) * v];
                    let m = max(row);
                    for (e, &x) in e.iter_mut().zip(row) {
                        *e = exp(x - m);
                    }
                    // SAFETY: entry r belongs to this chunk only.
                    unsafe { pl.at(r, 1)[0] = m + sum(&e).ln() };
                }
            },
        );
        let count = mask.iter().map(|&m| f64::from(m)).sum::<f64>().max(1.0);
        let total: f64 = (0..n)
            .map(|r| f64::from(mask[r]) * f64::from(lse[r] - x[r * v + tg[r] as usize]))
            .sum();
        *self.lse.lock().unwrap() = lse;
        Ok((
            CpuStorage::F32(vec![(total / count) as f32]),
            Shape::from(()),
        ))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let _p = profile::op("cross_entropy.bwd");
        let (n, v) = logits.dims2()?;
        let lse = self.lse.lock().unwrap();
        if lse.len() != n {
            return Err(err("cross_entropy backward without its forward".into()));
        }
        let g = grad.to_dtype(DType::F32)?.to_vec0::<f32>()?;
        let tg = targets.to_vec1::<u32>()?;
        let mut dx = vec![0f32; n * v];
        with_f32(mask, |mask| {
            let count = mask.iter().map(|&m| f64::from(m)).sum::<f64>().max(1.0) as f32;
            with_f32(logits, |x| {
                let px = Out::new(&mut dx);
                par(
                    n,
                    #[inline(always)]
                    |range| {
                        for r in range {
                            // SAFETY: row r belongs to this chunk only.
                            let o = unsafe { px.at(r * v, v) };
                            let w = g * mask[r] / count;
                            if w == 0.0 {
                                continue;
                            }
                            let l = lse[r];
                            for (o, &x) in o.iter_mut().zip(&x[r * v..(r + 1) * v]) {
                                *o = w * exp(x - l);
                            }
                            o[tg[r] as usize] -= w;
                        }
                    },
                );
                Ok(())
            })
        })?;
        Ok((Some(cpu_tensor(dx, logits.shape())), None, None))
    }
}

// ---------------------------------------------------------------------------------------------
// AdamW

/// Runs `f` on the data of a CPU f32 tensor (made contiguous first).
pub fn with_f32_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => f(f32_slice(c, l, "tensor")?),
        _ => anyhow::bail!("expected a CPU tensor"),
    }
}

/// Elements per parallel work unit of the AdamW update.
const ADAM_CHUNK: usize = 16384;

/// Constants of one fused AdamW step for one parameter.
#[derive(Debug, Clone, Copy)]
pub struct AdamHyper {
    /// Gradient clipping factor (1 when not clipped).
    pub scale: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Bias corrections `1 - beta^t`.
    pub bc1: f32,
    pub bc2: f32,
    pub eps: f32,
    pub lr: f32,
    /// Weight-decay factor `1 - lr·wd` (1 for no decay).
    pub decay: f32,
}

/// `Σ x²` (each square in f32, as f64), deterministic whatever the thread count: fixed
/// chunks, each summed in f64 lanes, their sums added in order. The gradient norm's one f64
/// add chain over every element was a latency-bound serial pass, a few percent of a step;
/// this is as exact (f32 lanes measured no faster, and moved the clipping scale, and so the
/// tiny demo's held-out answers, by more than the rest of the change).
pub fn sum_of_squares(x: &[f32]) -> f64 {
    const CHUNK: usize = 4096;
    const F64_LANES: usize = 16;
    let chunks = x.len().div_ceil(CHUNK);
    let mut partial = vec![0f64; chunks];
    let out = Out::new(&mut partial);
    par(
        chunks,
        #[inline(always)]
        |range| {
            for c in range {
                let x = &x[c * CHUNK..x.len().min((c + 1) * CHUNK)];
                let mut acc = [0f64; F64_LANES];
                let cx = x.chunks_exact(F64_LANES);
                let mut tail = 0f64;
                for &v in cx.remainder() {
                    tail += f64::from(v * v);
                }
                for v in cx {
                    for l in 0..F64_LANES {
                        acc[l] += f64::from(v[l] * v[l]);
                    }
                }
                // SAFETY: chunk c's slot is written by this range only, and lies in `partial`.
                unsafe { out.at(c, 1)[0] = acc.iter().sum::<f64>() + tail };
            }
        },
    );
    partial.iter().sum()
}

/// One fused AdamW update of a CPU f32 parameter: returns the new weights and moments.
pub fn adamw_update(
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: &AdamHyper,
) -> Result<(Tensor, Tensor, Tensor)> {
    let _p = profile::op("adamw");
    let n = w.elem_count();
    if g.elem_count() != n || m.elem_count() != n || v.elem_count() != n {
        anyhow::bail!("adamw: parameter, gradient and moments differ in size");
    }
    // Not zero-filled: the chunks write every element (three parameter-sized memsets a step).
    let (mut nw, mut nm, mut nv) = (
        Vec::<f32>::with_capacity(n),
        Vec::<f32>::with_capacity(n),
        Vec::<f32>::with_capacity(n),
    );
    with_f32_data(w, |w| {
        with_f32_data(g, |g| {
            with_f32_data(m, |m| {
                with_f32_data(v, |v| {
                    let [pw, pm, pv] = [&mut nw, &mut nm, &mut nv]
                        .map(|o| Unwritten(o.spare_capacity_mut().as_mut_ptr()));
                    par(
                        n.div_ceil(ADAM_CHUNK),
                        #[inline(always)]
                        |range| {
                            for c in range {
                                let (lo, hi) = (c * ADAM_CHUNK, n.min((c + 1) * ADAM_CHUNK));
                                // SAFETY: chunk c belongs to this range only.
                                let (ow, om, ov) = unsafe {
                                    (pw.at(lo, hi - lo), pm.at(lo, hi - lo), pv.at(lo, hi - lo))
                                };
                                for i in 0..hi - lo {
                                    let gi = g[lo + i] * h.scale;
                                    let mi = m[lo + i] * h.beta1 + gi * (1.0 - h.beta1);
                                    let vi = v[lo + i] * h.beta2 + gi * gi * (1.0 - h.beta2);
                                    let upd = (mi / h.bc1) / ((vi / h.bc2).sqrt() + h.eps);
                                    ow[i].write(w[lo + i] * h.decay - upd * h.lr);
                                    om[i].write(mi);
                                    ov[i].write(vi);
                                }
                            }
                        },
                    );
                    // SAFETY: the chunks cover 0..n and each wrote all of its elements.
                    for o in [&mut nw, &mut nm, &mut nv] {
                        unsafe { o.set_len(n) };
                    }
                    Ok(())
                })
            })
        })
    })?;
    let shape = w.shape();
    Ok((
        cpu_tensor(nw, shape),
        cpu_tensor(nm, shape),
        cpu_tensor(nv, shape),
    ))
}

//! The bias-free linear layer `y = x·Wᵀ` as one fused op with a hand-written backward pass.
//!
//! Composed from stock ops, a linear layer is four graph nodes (reshape, transpose, matmul,
//! reshape), and candle's backward pass gives every edge a fresh zero tensor and then adds the
//! incoming gradient to it: for badge-6m's fused `w1|w3` output that is a 25 MB memset and a
//! 75 MB add twice per layer and step, more time than the layer's element-wise ops. As one op
//! the layer has two edges (`x` and `W`), and its backward pass writes `dx = g·W` and
//! `dW = gᵀ·x` straight from the matrix products.
//!
//! The products run on [`crate::train::matmul`] (the kernel candle's own matmul uses, rows
//! split over candle's pool), so results stay deterministic for a given thread count. Off the CPU, or for
//! other dtypes, the layer falls back to stock tensor ops ([`linear_reference`]).

use crate::train::matmul::{pool_threads, product, row_split, transpose, MatRef};
use crate::train::ops::{cpu_tensor, err, f32_slice, with_f32, with_last_dim, CResult};
use crate::train::profile;
use anyhow::Result;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use std::sync::Arc;

/// `x · Wᵀ` over the last dimension of `x` (`(..., in)`), with `W` stored `[out, in]` like
/// `torch.nn.Linear`: `(..., out)`.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let fused = x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32;
    if !fused {
        return linear_reference(x, w);
    }
    Ok(x.contiguous()?
        .apply_op2_arc(&w.contiguous()?, Arc::new(Box::new(Linear)))?)
}

/// The same product from stock tensor ops (the fallback off the CPU, and the tests' reference).
pub fn linear_reference(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (out_dim, in_dim) = w.dims2()?;
    let rows = x.elem_count() / in_dim.max(1);
    let y = x.reshape((rows, in_dim))?.matmul(&w.t()?)?;
    let mut shape = x.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = out_dim;
    }
    Ok(y.reshape(shape)?)
}

struct Linear;

/// `a (m, k) · b (k, n)` into a new contiguous `(m, n)` matrix, on the whole pool (an error,
/// not a panic, when an operand is too small).
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
) -> CResult<Vec<f32>> {
    if a.data.len() < m * k || b.data.len() < k * n {
        return Err(err(format!(
            "linear: operands too small for a {m}x{k} by {k}x{n} product"
        )));
    }
    Ok(product(m, n, k, a, b, pool_threads()))
}

/// `x · Wᵀ` on row-major slices: `x (rows, in)`, `W (out, in)`, giving `(rows, out)`.
pub(crate) fn times_wt(
    x: &[f32],
    w: &[f32],
    rows: usize,
    in_dim: usize,
    out_dim: usize,
) -> CResult<Vec<f32>> {
    matmul(
        rows,
        out_dim,
        in_dim,
        MatRef::rows(x, in_dim),
        MatRef::transposed(w, in_dim),
    )
}

/// The input's gradient of [`times_wt`] for the output gradient `g (rows, out)`: `g · W`.
pub(crate) fn input_grad(
    g: &[f32],
    w: &[f32],
    rows: usize,
    in_dim: usize,
    out_dim: usize,
) -> CResult<Vec<f32>> {
    matmul(
        rows,
        in_dim,
        out_dim,
        MatRef::rows(g, out_dim),
        MatRef::rows(w, in_dim),
    )
}

/// The weight's gradient of [`times_wt`] for the output gradient `g (rows, out)`: `gᵀ · x`,
/// `(out, in)`.
///
/// A weight wider out than in (`w1|w3`, `wq|wk|wv`) gets `dWᵀ = xᵀ · g` and a transpose: the
/// kernel vectorises along its destination's rows, and along the short side these long,
/// thin products (depth: every row of the batch) ran at half the speed of the forward
/// product with the same work (`bench-train --profile`: badge-1m's `w1|w3` gradient took
/// 2.3 times as long as its forward product, 1.2 times after). The transpose is the size of
/// the weight, a small fraction of the product. Not when the short side is too short to
/// share over the threads the long side would use (badge-tiny's 96 at two threads): one
/// thread's product in the good orientation lost to two in the other.
pub(crate) fn weight_grad(
    g: &[f32],
    x: &[f32],
    rows: usize,
    in_dim: usize,
    out_dim: usize,
) -> CResult<Vec<f32>> {
    let threads = pool_threads();
    if out_dim > in_dim && row_split(in_dim, threads) >= row_split(out_dim, threads) {
        let dw_t = matmul(
            in_dim,
            out_dim,
            rows,
            MatRef::transposed(x, in_dim),
            MatRef::rows(g, out_dim),
        )?;
        return Ok(transpose(&dw_t, in_dim, out_dim));
    }
    matmul(
        out_dim,
        in_dim,
        rows,
        MatRef::transposed(g, out_dim),
        MatRef::rows(x, in_dim),
    )
}

/// `(rows, in, out)` of `x (..., in)` and `W (out, in)`.
fn dims(x: &Shape, w: &Shape) -> CResult<(usize, usize, usize)> {
    let (out_dim, in_dim) = w.dims2()?;
    if x.dims().last() != Some(&in_dim) {
        return Err(err(format!(
            "linear: input {x:?} does not end in the weight's input size {in_dim}"
        )));
    }
    Ok((x.elem_count() / in_dim.max(1), in_dim, out_dim))
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "badge-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> CResult<(CpuStorage, Shape)> {
        let _p = profile::op("linear.fwd");
        let (rows, in_dim, out_dim) = dims(l1.shape(), l2.shape())?;
        let x = f32_slice(s1, l1, "input")?;
        let w = f32_slice(s2, l2, "weight")?;
        let y = times_wt(x, w, rows, in_dim, out_dim)?;
        Ok((CpuStorage::F32(y), with_last_dim(l1.shape(), out_dim)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>)> {
        let _p = profile::op("linear.bwd");
        let (rows, in_dim, out_dim) = dims(x.shape(), w.shape())?;
        let (dx, dw) = with_f32(grad, |g| {
            let dx = with_f32(w, |w| input_grad(g, w, rows, in_dim, out_dim))?;
            let dw = with_f32(x, |x| weight_grad(g, x, rows, in_dim, out_dim))?;
            Ok((dx, dw))
        })?;
        Ok((
            Some(cpu_tensor(dx, x.shape())),
            Some(cpu_tensor(dw, w.shape())),
        ))
    }
}

//! The SwiGLU feed-forward block `w2(silu(w1·x) ⊙ w3·x)` as one fused op with a hand-written
//! backward pass.
//!
//! As separate ops (linear, SwiGLU, linear) the block has two activation-sized edges between
//! its ops, `(rows, 2·hidden)` and `(rows, hidden)`, and candle's backward pass zero-fills and
//! then adds into a fresh gradient tensor for each: for badge-6m about 40 MB written and
//! 80 MB read per layer and step that no product needs. As one op the only edges are the
//! input and the two weights; the forward pass keeps its two intermediate activations for the
//! backward pass (the separate ops kept the same tensors alive in the graph).

use crate::train::linear::{input_grad, linear_reference, times_wt, weight_grad};
use crate::train::ops::{
    cpu_tensor, err, f32_slice, swiglu_reference, swiglu_rows, swiglu_rows_backward, with_f32,
    with_last_dim, CResult,
};
use crate::train::profile;
use anyhow::Result;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, D};
use std::sync::{Arc, Mutex};

/// `w2 · (silu(w1·x) ⊙ w3·x)` over the last dimension of `x`, with `w13 = [w1; w3]` stacked
/// `(2·hidden, dim)` and `w2` `(dim_out, hidden)`, all stored `[out, in]`.
pub fn feed_forward(x: &Tensor, w13: &Tensor, w2: &Tensor) -> Result<Tensor> {
    let fused = x.device().is_cpu() && [x, w13, w2].iter().all(|t| t.dtype() == DType::F32);
    if !fused {
        return feed_forward_reference(x, w13, w2);
    }
    let op = FeedForward {
        saved: Mutex::new(None),
    };
    Ok(x.contiguous()?.apply_op3_arc(
        &w13.contiguous()?,
        &w2.contiguous()?,
        Arc::new(Box::new(op)),
    )?)
}

/// The same block from stock tensor ops (the fallback off the CPU, and the tests' reference).
pub fn feed_forward_reference(x: &Tensor, w13: &Tensor, w2: &Tensor) -> Result<Tensor> {
    let ab = linear_reference(x, w13)?;
    let hidden = ab.dim(D::Minus1)? / 2;
    let gate = swiglu_reference(
        &ab.narrow(D::Minus1, 0, hidden)?,
        &ab.narrow(D::Minus1, hidden, hidden)?,
    )?;
    linear_reference(&gate, w2)
}

/// The forward pass's activations, kept for the backward pass.
pub(crate) struct Saved {
    /// `[w1·x | w3·x]`, `(rows, 2·hidden)`.
    ab: Vec<f32>,
    /// `silu(w1·x) ⊙ w3·x`, `(rows, hidden)`.
    gate: Vec<f32>,
}

struct FeedForward {
    saved: Mutex<Option<Saved>>,
}

/// The block's sizes: `x (rows, dim)`, `w13 (2·hidden, dim)`, `w2 (dim_out, hidden)`.
#[derive(Clone, Copy)]
pub(crate) struct FfnDims {
    pub rows: usize,
    pub dim: usize,
    pub hidden: usize,
    pub dim_out: usize,
}

/// The sizes of `x (..., dim)`, `w13 (2·hidden, dim)`, `w2 (dim_out, hidden)`.
fn dims(x: &Shape, w13: &Shape, w2: &Shape) -> CResult<FfnDims> {
    let (h2, dim) = w13.dims2()?;
    let (dim_out, hidden) = w2.dims2()?;
    if x.dims().last() != Some(&dim) || h2 != 2 * hidden {
        return Err(err(format!(
            "feed_forward: shapes do not chain: x {x:?}, w13 {w13:?}, w2 {w2:?}"
        )));
    }
    Ok(FfnDims {
        rows: x.elem_count() / dim.max(1),
        dim,
        hidden,
        dim_out,
    })
}

/// The forward pass on slices: the output `(rows, dim_out)` and what the backward pass needs.
pub(crate) fn forward_rows(
    d: FfnDims,
    x: &[f32],
    w13: &[f32],
    w2: &[f32],
) -> CResult<(Vec<f32>, Saved)> {
    let _p = profile::op("feed_forward.fwd");
    let ab = times_wt(x, w13, d.rows, d.dim, 2 * d.hidden)?;
    let gate = swiglu_rows(&ab, d.hidden);
    let y = times_wt(&gate, w2, d.rows, d.hidden, d.dim_out)?;
    Ok((y, Saved { ab, gate }))
}

/// The backward pass on slices for the output gradient `g`: `(dx, dw13, dw2)`. Each
/// intermediate is freed as soon as it is used.
pub(crate) fn backward_rows(
    d: FfnDims,
    saved: Saved,
    g: &[f32],
    x: &[f32],
    w13: &[f32],
    w2: &[f32],
) -> CResult<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let _p = profile::op("feed_forward.bwd");
    let FfnDims {
        rows,
        dim,
        hidden,
        dim_out,
    } = d;
    let dgate = input_grad(g, w2, rows, hidden, dim_out)?;
    let dw2 = weight_grad(g, &saved.gate, rows, hidden, dim_out)?;
    drop(saved.gate);
    let dab = swiglu_rows_backward(&saved.ab, &dgate, hidden);
    drop(dgate);
    let dw13 = weight_grad(&dab, x, rows, dim, 2 * hidden)?;
    let dx = input_grad(&dab, w13, rows, dim, 2 * hidden)?;
    Ok((dx, dw13, dw2))
}

impl CustomOp3 for FeedForward {
    fn name(&self) -> &'static str {
        "badge-feed-forward"
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
        let dims = dims(l1.shape(), l2.shape(), l3.shape())?;
        let x = f32_slice(s1, l1, "feed_forward x")?;
        let w13 = f32_slice(s2, l2, "feed_forward w13")?;
        let w2 = f32_slice(s3, l3, "feed_forward w2")?;
        let (y, saved) = forward_rows(dims, x, w13, w2)?;
        *self.saved.lock().unwrap() = Some(saved);
        Ok((CpuStorage::F32(y), with_last_dim(l1.shape(), dims.dim_out)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w13: &Tensor,
        w2: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> CResult<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = dims(x.shape(), w13.shape(), w2.shape())?;
        let saved = self
            .saved
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| err("feed_forward backward without its forward".into()))?;
        let (dx, dw13, dw2) = with_f32(x, |x| {
            with_f32(w13, |w13| {
                with_f32(w2, |w2| {
                    with_f32(grad, |g| backward_rows(dims, saved, g, x, w13, w2))
                })
            })
        })?;
        Ok((
            Some(cpu_tensor(dx, x.shape())),
            Some(cpu_tensor(dw13, w13.shape())),
            Some(cpu_tensor(dw2, w2.shape())),
        ))
    }
}

//! A whole transformer block, `h = x + wo·attn(norm(x))`, `out = h + ffn(norm(h))`, as one
//! fused op with a hand-written backward pass.
//!
//! Built from the separate fused ops, a block is a dozen graph nodes with nine activation-sized
//! edges (the two residual adds, the norms, the projections), and candle's backward pass gives
//! every edge a fresh zero tensor and then adds the incoming gradient to it: about 7 % of a
//! badge-1m step at one thread, all of it memory traffic no product needs. As one op the block
//! has a single edge in candle's graph, its input, and the model runs its whole stack of blocks
//! as one op ([`blocks`]), one edge for all of them. The nine weights do not travel through the
//! graph at all: candle's backward pass would give each a zero tensor and an add per edge
//! (three edges each when they were packed into one input by concatenation, a few percent of a
//! badge-6m step), and each weight feeds exactly one block. The op reads them itself, and its
//! backward pass hands their gradients to a [`WeightGrads`], which
//! [`crate::train::model::Transformer::backward`] moves into the gradient store.
//!
//! The passes call the same slice kernels the separate ops use (RMSNorm, the linear products,
//! attention, the feed-forward block), so both compute the same values; `tests/model.rs` checks
//! the op against the separate ops, forward and backward. The profile (`bench-train
//! --profile`) reports the block's parts under the separate ops' names.

use crate::train::ffn::{self, FfnDims};
use crate::train::linear::{input_grad, times_wt, weight_grad};
use crate::train::ops::{
    add_into, cpu_tensor, err, f32_slice, rms_norm_rows, rms_norm_rows_backward, use_fused,
    with_f32, Attention, CResult, RopeTables,
};
use crate::train::profile;
use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// The block's sizes.
#[derive(Clone, Copy, Debug)]
pub struct BlockDims {
    pub dim: usize,
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub eps: f32,
}

impl BlockDims {
    fn head_dim(&self) -> usize {
        self.dim / self.n_heads.max(1)
    }
    /// Width of the fused `[q | k | v]` projection.
    fn qkv_dim(&self) -> usize {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim()
    }
    /// Where each weight lies in the packed vector, in [`BlockWeights`]' order.
    fn layout(&self) -> WeightLayout {
        let (d, h) = (self.dim, self.hidden);
        let mut at = 0;
        let mut next = |n: usize| {
            at += n;
            at - n..at
        };
        WeightLayout {
            attn_norm: next(d),
            wqkv: next(self.qkv_dim() * d),
            wo: next(d * d),
            ffn_norm: next(d),
            w13: next(2 * h * d),
            w2: next(d * h),
        }
    }
}

/// Ranges of the packed weight vector.
struct WeightLayout {
    attn_norm: Range<usize>,
    /// `[wq; wk; wv]`, `(qkv_dim, dim)`.
    wqkv: Range<usize>,
    wo: Range<usize>,
    ffn_norm: Range<usize>,
    /// `[w1; w3]`, `(2·hidden, dim)`.
    w13: Range<usize>,
    w2: Range<usize>,
}

impl WeightLayout {
    fn len(&self) -> usize {
        self.w2.end
    }

    /// The element counts of the nine weights, in [`BlockWeights`]' order.
    fn sizes(&self) -> [usize; 9] {
        let (kv, w1) = (self.wqkv.len() - self.wo.len(), self.w13.len() / 2);
        [
            self.attn_norm.len(),
            self.wo.len(),
            kv / 2,
            kv / 2,
            self.wo.len(),
            self.ffn_norm.len(),
            w1,
            w1,
            self.w2.len(),
        ]
    }

    /// Each weight's part of the packed vector `w`; an error unless it holds exactly
    /// [`WeightLayout::len`] values (forward and backward both check here, not each their own).
    fn split<'a>(&self, w: &'a [f32]) -> CResult<Weights<'a>> {
        if w.len() != self.len() {
            return Err(err(format!(
                "block: packed weights hold {} values, the layout needs {}",
                w.len(),
                self.len()
            )));
        }
        Ok(Weights {
            attn_norm: &w[self.attn_norm.clone()],
            wqkv: &w[self.wqkv.clone()],
            wo: &w[self.wo.clone()],
            ffn_norm: &w[self.ffn_norm.clone()],
            w13: &w[self.w13.clone()],
            w2: &w[self.w2.clone()],
        })
    }
}

/// The block's weights, as slices of the packed vector.
struct Weights<'a> {
    attn_norm: &'a [f32],
    wqkv: &'a [f32],
    wo: &'a [f32],
    ffn_norm: &'a [f32],
    w13: &'a [f32],
    w2: &'a [f32],
}

/// The block's nine weights, in the order the op packs them: `attn_norm`, `wq`, `wk`, `wv`,
/// `wo`, `ffn_norm`, `w1`, `w3`, `w2` (`[wq; wk; wv]` and `[w1; w3]` each become one
/// contiguous matrix, the fused projections' operands).
pub type BlockWeights<'a> = [&'a Tensor; 9];

/// Weight gradients a fused block's backward pass computed, waiting to join the gradient store
/// that candle's backward pass returns (the weights are not in candle's graph; see the module
/// documentation). Shared by the block and the ops it builds.
#[derive(Clone, Default)]
pub struct WeightGrads(Arc<Mutex<Vec<(Tensor, Tensor)>>>);

impl WeightGrads {
    fn deliver(&self, grads: impl IntoIterator<Item = (Tensor, Tensor)>) {
        self.0.lock().unwrap().extend(grads);
    }

    /// Moves the delivered gradients into `store`. An error when a weight already has a
    /// gradient there: the weight fed the graph elsewhere too, or an earlier backward pass's
    /// gradients were never collected, and either would train on a wrong gradient.
    pub fn collect_into(&self, store: &mut GradStore) -> Result<()> {
        for (weight, grad) in std::mem::take(&mut *self.0.lock().unwrap()) {
            if store.insert(&weight, grad).is_some() {
                anyhow::bail!(
                    "block: a weight {:?} received two gradients (used twice in the graph, or a backward pass without collecting its gradients)",
                    weight.shape()
                );
            }
        }
        Ok(())
    }
}

/// The block over `x (B, T, dim)`; its weights' gradients go to `grads` in the backward pass.
pub fn block(
    x: &Tensor,
    weights: BlockWeights<'_>,
    dims: BlockDims,
    rope: &RopeTables,
    grads: &WeightGrads,
) -> Result<Tensor> {
    blocks(x, &[weights], dims, rope, grads)
}

/// A stack of blocks over `x (B, T, dim)`, one after the other, as one op: the whole stack is
/// one edge in candle's graph (each block's input would be another zero tensor and add in the
/// backward pass). The blocks' weight gradients go to `grads`.
pub fn blocks(
    x: &Tensor,
    layers: &[BlockWeights<'_>],
    dims: BlockDims,
    rope: &RopeTables,
    grads: &WeightGrads,
) -> Result<Tensor> {
    let (_, t, dim) = x.dims3()?;
    let sizes = dims.layout().sizes();
    for (i, weights) in layers.iter().enumerate() {
        let fits = weights
            .iter()
            .zip(sizes)
            .all(|(w, n)| w.elem_count() == n && use_fused(w));
        if !fits {
            anyhow::bail!(
                "block {i}: weights {:?} do not match {dims:?}",
                weights.map(|w| w.shape().clone())
            );
        }
    }
    if dim != dims.dim || layers.is_empty() {
        anyhow::bail!(
            "blocks: input {:?} and {} layers do not match {dims:?}",
            x.shape(),
            layers.len()
        );
    }
    let attention = Attention::new(rope, dims.n_heads, dims.n_kv_heads, t, dims.qkv_dim())?;
    let op = Stack {
        dims,
        attention,
        layers: layers.iter().map(|w| w.map(Tensor::clone)).collect(),
        grads: grads.clone(),
        saved: Mutex::new(None),
    };
    Ok(x.contiguous()?.apply_op1_arc(Arc::new(Box::new(op)))?)
}

/// The op: the blocks' shared sizes and attention, and each block's weights.
struct Stack {
    dims: BlockDims,
    attention: Attention,
    /// Each block's weights, in [`BlockWeights`]' order.
    layers: Vec<[Tensor; 9]>,
    grads: WeightGrads,
    saved: Mutex<Option<StackSaved>>,
}

/// What the backward pass needs: each block's activations, and the inputs of all blocks but
/// the first (the op's own input is the first's).
struct StackSaved {
    blocks: Vec<Saved>,
    inputs: Vec<Vec<f32>>,
}

/// One block's forward activations, kept for the backward pass.
struct Saved {
    /// The weights packed in the layout's order.
    packed: Vec<f32>,
    /// `norm(x)`, the attention's input.
    a: Vec<f32>,
    qkv: Vec<f32>,
    /// The attention's output (before `wo`) and its score rows' log-sum-exps.
    y: Vec<f32>,
    lse: Vec<f32>,
    /// The residual stream after attention, and its norm (the feed-forward block's input).
    h: Vec<f32>,
    c: Vec<f32>,
    ffn: ffn::Saved,
}

impl Stack {
    fn shape(&self, x: &Shape) -> CResult<(usize, usize, usize)> {
        let (b, t, dim) = x.dims3()?;
        if dim != self.dims.dim {
            return Err(err(format!(
                "block: input {x:?} is not {} wide",
                self.dims.dim
            )));
        }
        Ok((b, t, b * t))
    }

    fn ffn_dims(&self, rows: usize) -> FfnDims {
        FfnDims {
            rows,
            dim: self.dims.dim,
            hidden: self.dims.hidden,
            dim_out: self.dims.dim,
        }
    }

    /// One block's forward pass over `x` (`b·t` rows): its output and activations.
    fn block_forward(
        &self,
        weights: &[Tensor; 9],
        x: &[f32],
        b: usize,
        t: usize,
    ) -> CResult<(Vec<f32>, Saved)> {
        let (lay, d, rows) = (self.dims.layout(), self.dims, b * t);
        let mut packed = Vec::with_capacity(lay.len());
        for w in weights {
            with_f32(w, |w| {
                packed.extend_from_slice(w);
                Ok(())
            })?;
        }
        let w = lay.split(&packed)?;
        let a = rms_norm_rows(x, w.attn_norm, d.eps);
        let qkv = {
            let _p = profile::op("linear.fwd");
            times_wt(&a, w.wqkv, rows, d.dim, d.qkv_dim())?
        };
        let (y, lse) = self.attention.forward_rows(b, t, d.qkv_dim(), &qkv)?;
        let mut h = {
            let _p = profile::op("linear.fwd");
            times_wt(&y, w.wo, rows, d.dim, d.dim)?
        };
        add_into(&mut h, x);
        let c = rms_norm_rows(&h, w.ffn_norm, d.eps);
        let (mut out, ffn) = ffn::forward_rows(self.ffn_dims(rows), &c, w.w13, w.w2)?;
        add_into(&mut out, &h);
        let saved = Saved {
            packed,
            a,
            qkv,
            y,
            lse,
            h,
            c,
            ffn,
        };
        Ok((out, saved))
    }

    /// One block's backward pass for the output gradient `g`, given its input `x`: the input's
    /// gradient and the nine weights' gradients (in [`BlockWeights`]' order).
    fn block_backward(
        &self,
        s: Saved,
        x: &[f32],
        g: &[f32],
        b: usize,
        t: usize,
    ) -> CResult<(Vec<f32>, Vec<Vec<f32>>)> {
        let (lay, d, rows) = (self.dims.layout(), self.dims, b * t);
        let w = lay.split(&s.packed)?;
        // out = h + ffn(norm(h)): h's gradient is g plus the one through the norm.
        let (dc, dw13, dw2) = ffn::backward_rows(self.ffn_dims(rows), s.ffn, g, &s.c, w.w13, w.w2)?;
        let (mut dh, dffn_norm) = rms_norm_rows_backward(&s.h, w.ffn_norm, &dc, d.eps);
        drop(dc);
        add_into(&mut dh, g);
        // h = x + wo·y.
        let (dy, dwo) = {
            let _p = profile::op("linear.bwd");
            let dy = input_grad(&dh, w.wo, rows, d.dim, d.dim)?;
            (dy, weight_grad(&dh, &s.y, rows, d.dim, d.dim)?)
        };
        let dqkv = self
            .attention
            .backward_rows(b, t, d.qkv_dim(), &s.qkv, &s.y, &dy, &s.lse)?;
        drop(dy);
        let (da, dwqkv) = {
            let _p = profile::op("linear.bwd");
            let da = input_grad(&dqkv, w.wqkv, rows, d.dim, d.qkv_dim())?;
            (da, weight_grad(&dqkv, &s.a, rows, d.dim, d.qkv_dim())?)
        };
        drop(dqkv);
        let (mut dx, dattn_norm) = rms_norm_rows_backward(x, w.attn_norm, &da, d.eps);
        add_into(&mut dx, &dh);
        // The packed gradient's parts, in the layout's order.
        let parts = [dattn_norm, dwqkv, dwo, dffn_norm, dw13, dw2];
        Ok((dx, cut_into_weights(parts, lay.sizes())?))
    }
}

impl CustomOp1 for Stack {
    fn name(&self) -> &'static str {
        "badge-blocks"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> CResult<(CpuStorage, Shape)> {
        let (b, t, _) = self.shape(l1.shape())?;
        let x = f32_slice(s1, l1, "block x")?;
        let mut blocks = Vec::with_capacity(self.layers.len());
        let mut inputs = Vec::with_capacity(self.layers.len().saturating_sub(1));
        let mut out: Option<Vec<f32>> = None;
        for weights in &self.layers {
            let (next, saved) = self.block_forward(weights, out.as_deref().unwrap_or(x), b, t)?;
            blocks.push(saved);
            inputs.extend(out.replace(next));
        }
        let out = out.ok_or_else(|| err("blocks: no layers".into()))?;
        *self.saved.lock().unwrap() = Some(StackSaved { blocks, inputs });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> CResult<Option<Tensor>> {
        let (b, t, _) = self.shape(x.shape())?;
        let StackSaved { blocks, mut inputs } = self
            .saved
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| err("block backward without its forward".into()))?;
        let mut weight_grads = Vec::with_capacity(blocks.len());
        let dx = with_f32(x, |x| {
            with_f32(grad, |grad| {
                // The gradient flowing back into the block being differentiated.
                let mut g: Option<Vec<f32>> = None;
                for (i, saved) in blocks.into_iter().enumerate().rev() {
                    // Block i > 0 reads the last input still saved; block 0 the op's own.
                    let input =
                        match i {
                            0 => None,
                            _ => Some(inputs.pop().ok_or_else(|| {
                                err("blocks: backward lost a block's input".into())
                            })?),
                        };
                    let input = input.as_deref().unwrap_or(x);
                    let (dx, dw) =
                        self.block_backward(saved, input, g.as_deref().unwrap_or(grad), b, t)?;
                    weight_grads.push((i, dw));
                    g = Some(dx);
                }
                g.ok_or_else(|| err("blocks: no layers".into()))
            })
        })?;
        for (i, dw) in weight_grads {
            let weights = &self.layers[i];
            let dw = dw
                .into_iter()
                .zip(weights)
                .map(|(g, w)| (w.clone(), cpu_tensor(g, w.shape())));
            self.grads.deliver(dw);
        }
        Ok(Some(cpu_tensor(dx, x.shape())))
    }
}

/// The packed gradient's parts (in the layout's order) cut into the nine weights' gradients
/// (in [`BlockWeights`]' order): a part that is one weight's whole gradient moves, the
/// stacked projections' parts are copied out weight by weight.
fn cut_into_weights(parts: [Vec<f32>; 6], sizes: [usize; 9]) -> CResult<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(sizes.len());
    let mut sizes = sizes.into_iter().peekable();
    for part in parts {
        if sizes.peek() == Some(&part.len()) {
            sizes.next();
            out.push(part);
            continue;
        }
        let mut at = 0;
        while at < part.len() {
            let n = sizes.next().unwrap_or(usize::MAX);
            let end = at.checked_add(n).filter(|&e| e <= part.len());
            let end =
                end.ok_or_else(|| err("block: gradient parts do not match the weights".into()))?;
            out.push(part[at..end].to_vec());
            at = end;
        }
    }
    if out.len() != 9 || sizes.next().is_some() {
        return Err(err("block: gradient parts do not match the weights".into()));
    }
    Ok(out)
}

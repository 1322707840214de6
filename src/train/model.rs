//! The llama2.c transformer in candle (f32), for training and for f32 reference runs.
//!
//! Every op here has a backward pass. candle-nn's fused `softmax_last_dim`, `rms_norm` and
//! `rope_i` have none (their gradient silently stops), so the hot paths use our own fused ops
//! with hand-written backward passes ([`crate::train::ops`]: RMSNorm, attention with RoPE and the
//! causal softmax inside, SwiGLU, masked cross-entropy); off the CPU they fall back to stock
//! tensor ops. A test proves that every parameter receives a non-zero gradient.
//!
//! Tensor names (safetensors checkpoints): `tok_embeddings`, `layers.{i}.attn_norm`,
//! `layers.{i}.wq|wk|wv|wo`, `layers.{i}.ffn_norm`, `layers.{i}.w1|w2|w3`, `norm`; matrices are
//! stored `[out, in]` like `torch.nn.Linear`.

use crate::train::{block, ffn, linear, ops};
use anyhow::Result;
use badge_firmware::config::ModelConfig;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// RMSNorm: `x / sqrt(mean(x²) + eps) · w` (one fused op).
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(vb: VarBuilder, dim: usize, eps: f64, name: &str) -> Result<Self> {
        Ok(RmsNorm {
            weight: vb.get(dim, name)?,
            eps,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::rms_norm(x, &self.weight, self.eps)
    }
}

/// A bias-free linear layer, weight `[out, in]`.
pub struct Linear {
    weight: Tensor,
}

impl Linear {
    pub fn new(vb: VarBuilder, out_dim: usize, in_dim: usize, name: &str) -> Result<Self> {
        Ok(Linear {
            weight: vb.get((out_dim, in_dim), name)?,
        })
    }
    /// `x · Wᵀ` over the last dimension (one fused op: see [`crate::train::linear`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear::linear(x, &self.weight)
    }

    /// The outputs of several linear layers over the same input, side by side in the last
    /// dimension: one matrix product with their weights stacked (and one gradient for `x`).
    pub fn forward_stacked(layers: &[&Linear], x: &Tensor) -> Result<Tensor> {
        let w: Vec<&Tensor> = layers.iter().map(|l| &l.weight).collect();
        Linear {
            weight: Tensor::cat(&w, 0)?,
        }
        .forward(x)
    }
}

/// Causal self-attention with grouped-query heads and interleaved RoPE.
pub struct Attention {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    n_heads: usize,
    n_kv_heads: usize,
}

impl Attention {
    pub fn new(vb: VarBuilder, c: &ModelConfig) -> Result<Self> {
        let (dim, kv_dim) = (c.dim as usize, c.kv_dim());
        Ok(Attention {
            wq: Linear::new(vb.clone(), dim, dim, "wq")?,
            wk: Linear::new(vb.clone(), kv_dim, dim, "wk")?,
            wv: Linear::new(vb.clone(), kv_dim, dim, "wv")?,
            wo: Linear::new(vb, dim, dim, "wo")?,
            n_heads: c.n_heads as usize,
            n_kv_heads: c.n_kv_heads as usize,
        })
    }

    /// `x (B, T, dim)` → `(B, T, dim)`: one fused op from the q/k/v projections to the
    /// attention output (RoPE, GQA, causal mask and softmax inside).
    pub fn forward(&self, x: &Tensor, rope: &Rope) -> Result<Tensor> {
        let qkv = Linear::forward_stacked(&[&self.wq, &self.wk, &self.wv], x)?;
        let y = ops::attention_qkv(&qkv, &rope.tables, self.n_heads, self.n_kv_heads)?;
        self.wo.forward(&y)
    }
}

/// `w2(silu(w1·x) ⊙ w3·x)`.
pub struct FeedForward {
    w1: Linear,
    w2: Linear,
    w3: Linear,
}

impl FeedForward {
    pub fn new(vb: VarBuilder, c: &ModelConfig) -> Result<Self> {
        let (dim, hidden) = (c.dim as usize, c.hidden_dim as usize);
        Ok(FeedForward {
            w1: Linear::new(vb.clone(), hidden, dim, "w1")?,
            w2: Linear::new(vb.clone(), dim, hidden, "w2")?,
            w3: Linear::new(vb, hidden, dim, "w3")?,
        })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w13 = Tensor::cat(&[&self.w1.weight, &self.w3.weight], 0)?;
        ffn::feed_forward(x, &w13, &self.w2.weight)
    }
}

pub struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    ffn: FeedForward,
    dims: block::BlockDims,
    /// The fused block's weight gradients, until [`Block::collect_weight_grads`].
    weight_grads: block::WeightGrads,
}

impl Block {
    pub fn new(vb: VarBuilder, c: &ModelConfig) -> Result<Self> {
        let eps = f64::from(c.norm_eps);
        Ok(Block {
            attn_norm: RmsNorm::new(vb.clone(), c.dim as usize, eps, "attn_norm")?,
            attn: Attention::new(vb.clone(), c)?,
            ffn_norm: RmsNorm::new(vb.clone(), c.dim as usize, eps, "ffn_norm")?,
            ffn: FeedForward::new(vb, c)?,
            dims: block::BlockDims {
                dim: c.dim as usize,
                hidden: c.hidden_dim as usize,
                n_heads: c.n_heads as usize,
                n_kv_heads: c.n_kv_heads as usize,
                eps: c.norm_eps,
            },
            weight_grads: block::WeightGrads::default(),
        })
    }

    /// `h = x + attn(norm(x))`, `h + ffn(norm(h))`: on the CPU one fused op
    /// ([`crate::train::block`]), elsewhere [`Block::forward_separate`].
    pub fn forward(&self, x: &Tensor, rope: &Rope) -> Result<Tensor> {
        if !ops::use_fused(x) {
            return self.forward_separate(x, rope);
        }
        block::block(
            x,
            self.weights(),
            self.dims,
            &rope.tables,
            &self.weight_grads,
        )
    }

    /// The weights in the fused block's order ([`block::BlockWeights`]).
    fn weights(&self) -> block::BlockWeights<'_> {
        let (a, f) = (&self.attn, &self.ffn);
        [
            &self.attn_norm.weight,
            &a.wq.weight,
            &a.wk.weight,
            &a.wv.weight,
            &a.wo.weight,
            &self.ffn_norm.weight,
            &f.w1.weight,
            &f.w3.weight,
            &f.w2.weight,
        ]
    }

    /// Moves the weight gradients the fused block computed into `grads` (see
    /// [`crate::train::block`]); call it after every backward pass through [`Block::forward`].
    pub fn collect_weight_grads(&self, grads: &mut GradStore) -> Result<()> {
        self.weight_grads.collect_into(grads)
    }

    /// The same block from the separate ops (each fused on its own): the fallback off the CPU,
    /// and the fused block's reference in the tests.
    pub fn forward_separate(&self, x: &Tensor, rope: &Rope) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.attn_norm.forward(x)?, rope)?)?;
        Ok((&x + self.ffn.forward(&self.ffn_norm.forward(&x)?)?)?)
    }
}

/// cos/sin tables for interleaved RoPE: pair i of a head turns by `pos · θ^(-2i/head_dim)`.
pub struct Rope {
    tables: ops::RopeTables,
}

impl Rope {
    pub fn new(c: &ModelConfig, device: &Device) -> Result<Self> {
        let (hd, seq) = (c.head_dim(), c.seq_len as usize);
        let mut cos = Vec::with_capacity(seq * hd / 2);
        let mut sin = Vec::with_capacity(seq * hd / 2);
        for pos in 0..seq {
            for i in 0..hd / 2 {
                // Same f32 arithmetic as the engine, so both turn by the same angles.
                let freq = 1.0 / c.rope_theta.powf((2 * i) as f32 / hd as f32);
                let angle = pos as f32 * freq;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Rope {
            tables: ops::RopeTables::new(cos, sin, seq, hd / 2, device)?,
        })
    }
    /// Rotates `(B, H, T, head_dim)` (stock ops; the model's attention rotates inside its op).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let t = x.dim(2)?;
        Ok(candle_nn::rotary_emb::rope_i_slow(
            x,
            &self.tables.cos.narrow(0, 0, t)?,
            &self.tables.sin.narrow(0, 0, t)?,
        )?)
    }
}

/// The whole model. The classifier shares the token embedding.
pub struct Transformer {
    pub config: ModelConfig,
    tok_embeddings: Tensor,
    blocks: Vec<Block>,
    /// The fused block stack's weight gradients, until [`Transformer::backward`].
    weight_grads: block::WeightGrads,
    norm: RmsNorm,
    rope: Rope,
}

impl Transformer {
    pub fn new(vb: VarBuilder, c: &ModelConfig) -> Result<Self> {
        let device = vb.device().clone();
        let blocks = (0..c.n_layers as usize)
            .map(|i| Block::new(vb.pp(format!("layers.{i}")), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer {
            config: *c,
            tok_embeddings: vb.get((c.vocab_size as usize, c.dim as usize), "tok_embeddings")?,
            blocks,
            weight_grads: block::WeightGrads::default(),
            norm: RmsNorm::new(vb.clone(), c.dim as usize, f64::from(c.norm_eps), "norm")?,
            rope: Rope::new(c, &device)?,
        })
    }

    /// Logits `(B, T, vocab)` for token ids `(B, T)`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let emb = candle_nn::Embedding::new(self.tok_embeddings.clone(), self.config.dim as usize);
        let mut x = emb.forward(ids)?;
        match self.blocks.first() {
            // On the CPU the whole stack is one fused op (see `crate::train::block`).
            Some(first) if ops::use_fused(&x) => {
                let layers: Vec<_> = self.blocks.iter().map(Block::weights).collect();
                let tables = &self.rope.tables;
                x = block::blocks(&x, &layers, first.dims, tables, &self.weight_grads)?;
            }
            _ => {
                for block in &self.blocks {
                    x = block.forward(&x, &self.rope)?;
                }
            }
        }
        let x = self.norm.forward(&x)?;
        let logits = linear::linear(&x, &self.tok_embeddings)?;
        debug_assert_eq!(logits.dims(), [b, t, self.config.vocab_size as usize]);
        Ok(logits)
    }

    /// The gradients of `loss` (computed through [`Transformer::forward`]): candle's backward
    /// pass plus the weight gradients the fused blocks deliver beside the graph. Use this,
    /// not `loss.backward()`, which leaves the blocks' weights without gradients.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let mut grads = loss.backward()?;
        self.weight_grads.collect_into(&mut grads)?;
        Ok(grads)
    }

    /// Mean cross-entropy over the positions where `mask` is 1: logits `(B,T,V)`, targets and
    /// mask `(B,T)`.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let logits = self.forward(ids)?;
        masked_cross_entropy(&logits, targets, mask)
    }
}

/// Mean negative log-likelihood of `targets` over masked positions.
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    ops::cross_entropy(logits, targets, mask)
}

/// Parameter names and shapes of a config, in a fixed order.
pub fn parameter_shapes(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (d, h, kv, v) = (
        c.dim as usize,
        c.hidden_dim as usize,
        c.kv_dim(),
        c.vocab_size as usize,
    );
    let mut out = vec![("tok_embeddings".to_string(), vec![v, d])];
    for i in 0..c.n_layers {
        let p = format!("layers.{i}");
        out.push((format!("{p}.attn_norm"), vec![d]));
        out.push((format!("{p}.wq"), vec![d, d]));
        out.push((format!("{p}.wk"), vec![kv, d]));
        out.push((format!("{p}.wv"), vec![kv, d]));
        out.push((format!("{p}.wo"), vec![d, d]));
        out.push((format!("{p}.ffn_norm"), vec![d]));
        out.push((format!("{p}.w1"), vec![h, d]));
        out.push((format!("{p}.w2"), vec![d, h]));
        out.push((format!("{p}.w3"), vec![h, d]));
    }
    out.push(("norm".to_string(), vec![d]));
    out
}

/// The trainable parameters by name (sorted), as candle `Var`s.
pub type Params = BTreeMap<String, Var>;

/// Fresh weights from our own seeded RNG (candle's CPU RNG cannot be seeded): normal(0, 0.02),
/// residual projections (`wo`, `w2`) scaled by 1/sqrt(2·n_layers) as in llama2.c, norms 1.
pub fn init_params(c: &ModelConfig, seed: u64, device: &Device) -> Result<Params> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut params = Params::new();
    for (name, shape) in parameter_shapes(c) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if shape.len() == 1 {
            vec![1.0; n]
        } else {
            let std = if name.ends_with(".wo") || name.ends_with(".w2") {
                0.02 / (2.0 * c.n_layers as f32).sqrt()
            } else {
                0.02
            };
            (0..n).map(|_| normal(&mut rng) * std).collect()
        };
        params.insert(
            name,
            Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?,
        );
    }
    Ok(params)
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Builds the model over existing parameters (they stay shared: training updates them).
pub fn build(c: &ModelConfig, params: &Params, device: &Device) -> Result<Transformer> {
    ops::keep_freed_memory();
    let map: std::collections::HashMap<String, Tensor> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let vb = VarBuilder::from_tensors(map, DType::F32, device);
    Transformer::new(vb, c)
}

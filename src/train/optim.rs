//! AdamW with two parameter groups (weight decay on matrices, none on the 1-D norm weights),
//! global gradient-norm clipping, and state that can be saved in a checkpoint for exact
//! resumption.
//!
//! On the CPU the step is fused: one pass over each parameter's slices updates the moments and
//! the weights (element-wise, so deterministic however it is split over threads). Elsewhere it
//! runs as tensor ops ([`AdamW::step_reference`], also the tests' reference).

use crate::train::model::Params;
use crate::train::ops;
use anyhow::{anyhow, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use std::collections::BTreeMap;

pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.95;
pub const EPS: f64 = 1e-8;

/// First and second moments per parameter, plus the step count (for bias correction).
pub struct AdamW {
    pub m: BTreeMap<String, Tensor>,
    pub v: BTreeMap<String, Tensor>,
    pub step: u64,
}

/// What one optimizer step saw.
#[derive(Debug, Clone, Copy)]
pub struct StepInfo {
    pub grad_norm: f64,
    pub clipped: bool,
}

impl AdamW {
    pub fn new(params: &Params) -> Result<Self> {
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (name, p) in params {
            m.insert(name.clone(), p.as_tensor().zeros_like()?);
            v.insert(name.clone(), p.as_tensor().zeros_like()?);
        }
        Ok(AdamW { m, v, step: 0 })
    }

    /// Norm weights (1-D) get no weight decay.
    fn decays(p: &Var) -> bool {
        p.as_tensor().rank() > 1
    }

    /// Global L2 norm of all gradients. A parameter without a gradient is an error: the graph
    /// is broken somewhere (an op without backward), and training would silently skip it.
    pub fn grad_norm(params: &Params, grads: &GradStore) -> Result<f64> {
        let mut sum = 0.0f64;
        for (name, p) in params {
            let g = grads
                .get(p.as_tensor())
                .ok_or_else(|| anyhow!("parameter {name} received no gradient"))?;
            sum += if g.device().is_cpu() && g.dtype() == DType::F32 {
                ops::with_f32_data(g, |g| Ok(ops::sum_of_squares(g)))?
            } else {
                f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?)
            };
        }
        Ok(sum.sqrt())
    }

    /// One AdamW step (with clipping to `grad_clip` when positive); fused on the CPU.
    pub fn step(
        &mut self,
        params: &Params,
        grads: &GradStore,
        lr: f64,
        weight_decay: f64,
        grad_clip: f64,
    ) -> Result<StepInfo> {
        let all_cpu = params
            .values()
            .all(|p| p.device().is_cpu() && p.dtype() == DType::F32);
        if !all_cpu {
            return self.step_reference(params, grads, lr, weight_decay, grad_clip);
        }
        let norm = Self::grad_norm(params, grads)?;
        let clipped = grad_clip > 0.0 && norm > grad_clip;
        let scale = if clipped { grad_clip / norm } else { 1.0 } as f32;
        self.step += 1;
        let t = self.step as i32;
        let h = ops::AdamHyper {
            scale,
            beta1: BETA1 as f32,
            beta2: BETA2 as f32,
            bc1: (1.0 - BETA1.powi(t)) as f32,
            bc2: (1.0 - BETA2.powi(t)) as f32,
            eps: EPS as f32,
            lr: lr as f32,
            decay: 1.0,
        };
        for (name, p) in params {
            let g = grads
                .get(p.as_tensor())
                .ok_or_else(|| anyhow!("parameter {name} received no gradient"))?;
            let m = self
                .m
                .get_mut(name)
                .ok_or_else(|| anyhow!("optimizer state lacks {name}"))?;
            let v = self
                .v
                .get_mut(name)
                .ok_or_else(|| anyhow!("optimizer state lacks {name}"))?;
            let decay = if weight_decay > 0.0 && Self::decays(p) {
                (1.0 - lr * weight_decay) as f32
            } else {
                1.0
            };
            let (w, new_m, new_v) =
                ops::adamw_update(p.as_tensor(), g, m, v, &ops::AdamHyper { decay, ..h })?;
            *m = new_m;
            *v = new_v;
            p.set(&w)?;
        }
        Ok(StepInfo {
            grad_norm: norm,
            clipped,
        })
    }

    /// The same step from tensor ops (the path off the CPU, and the tests' reference).
    pub fn step_reference(
        &mut self,
        params: &Params,
        grads: &GradStore,
        lr: f64,
        weight_decay: f64,
        grad_clip: f64,
    ) -> Result<StepInfo> {
        let norm = Self::grad_norm(params, grads)?;
        let clipped = grad_clip > 0.0 && norm > grad_clip;
        let scale = if clipped { grad_clip / norm } else { 1.0 };
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - BETA1.powi(t);
        let bc2 = 1.0 - BETA2.powi(t);
        for (name, p) in params {
            let g = grads
                .get(p.as_tensor())
                .ok_or_else(|| anyhow!("parameter {name} received no gradient"))?;
            let g = if clipped { (g * scale)? } else { g.clone() };
            let m = self
                .m
                .get_mut(name)
                .ok_or_else(|| anyhow!("optimizer state lacks {name}"))?;
            *m = ((&*m * BETA1)? + (&g * (1.0 - BETA1))?)?;
            let v = self
                .v
                .get_mut(name)
                .ok_or_else(|| anyhow!("optimizer state lacks {name}"))?;
            *v = ((&*v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let update = ((&*m / bc1)? / ((&*v / bc2)?.sqrt()? + EPS)?)?;
            let mut w = p.as_tensor().detach();
            if weight_decay > 0.0 && Self::decays(p) {
                w = (w * (1.0 - lr * weight_decay))?;
            }
            p.set(&(w - (update * lr)?)?)?;
        }
        Ok(StepInfo {
            grad_norm: norm,
            clipped,
        })
    }
}

//! The candle model: parameter counts, gradients reaching every parameter, agreement with an
//! independent f64 reference, and a finite-difference gradient check.

mod common;

use badge::train::model;
use badge_firmware::config::ModelConfig;
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;

#[test]
fn published_sizes_have_their_parameter_counts() {
    let load = |n: &str| {
        badge::config::load_model_config(&common::repo().join("configs/models").join(n)).unwrap()
    };
    assert_eq!(load("badge-6m.toml").parameter_count(), 5_566_176);
    let m1 = load("badge-1m.toml").parameter_count();
    assert!((1_000_000..1_100_000).contains(&m1), "{m1}");
    // The counted parameters are exactly the tensors the model creates.
    let c = load("badge-6m.toml");
    let n: usize = model::parameter_shapes(&c)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(n as u64, c.parameter_count());
}

fn batch(c: &ModelConfig, b: usize, t: usize) -> (Tensor, Tensor, Tensor) {
    let ids: Vec<u32> = (0..b * t)
        .map(|i| ((i * 37 + 11) % c.vocab_size as usize) as u32)
        .collect();
    let tg: Vec<u32> = (0..b * t)
        .map(|i| ((i * 53 + 5) % c.vocab_size as usize) as u32)
        .collect();
    let mask: Vec<f32> = (0..b * t)
        .map(|i| if i % 5 == 0 { 0.0 } else { 1.0 })
        .collect();
    let d = Device::Cpu;
    (
        Tensor::from_vec(ids, (b, t), &d).unwrap(),
        Tensor::from_vec(tg, (b, t), &d).unwrap(),
        Tensor::from_vec(mask, (b, t), &d).unwrap(),
    )
}

/// The tiny config's model from `seed` on the CPU, its parameters, and a 2 × 16 batch.
fn tiny_model(seed: u64) -> (model::Params, model::Transformer, (Tensor, Tensor, Tensor)) {
    let c = common::tiny_config();
    let params = model::init_params(&c, seed, &Device::Cpu).unwrap();
    let m = model::build(&c, &params, &Device::Cpu).unwrap();
    (params, m, batch(&c, 2, 16))
}

#[test]
fn every_parameter_receives_a_nonzero_gradient() {
    let (params, m, (ids, tg, mask)) = tiny_model(3);
    let grads = m.backward(&m.loss(&ids, &tg, &mask).unwrap()).unwrap();
    for (name, p) in &params {
        let g = grads
            .get(p.as_tensor())
            .unwrap_or_else(|| panic!("{name} has no gradient"));
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0, "{name} has an all-zero gradient");
    }
}

/// The forward pass in plain f64 loops, written independently of the model code.
fn reference_logits(c: &ModelConfig, w: &BTreeMap<String, Vec<f32>>, ids: &[u32]) -> Vec<Vec<f64>> {
    let (d, hd, nh, nkv, hid) = (
        c.dim as usize,
        c.head_dim(),
        c.n_heads as usize,
        c.n_kv_heads as usize,
        c.hidden_dim as usize,
    );
    let g = |n: &str| w[n].iter().map(|&v| f64::from(v)).collect::<Vec<f64>>();
    let matvec = |m: &[f64], x: &[f64], rows: usize| {
        (0..rows)
            .map(|r| (0..x.len()).map(|j| m[r * x.len() + j] * x[j]).sum())
            .collect::<Vec<f64>>()
    };
    let norm = |x: &[f64], wt: &[f64]| {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        x.iter()
            .zip(wt)
            .map(|(v, w)| v / (ms + f64::from(c.norm_eps)).sqrt() * w)
            .collect::<Vec<f64>>()
    };
    let rope = |v: &mut [f64], pos: usize| {
        for h in 0..v.len() / hd {
            for i in 0..hd / 2 {
                let f = 1.0 / f64::from(c.rope_theta).powf((2 * i) as f64 / hd as f64);
                let (s, co) = ((pos as f64) * f).sin_cos();
                let (a, b) = (v[h * hd + 2 * i], v[h * hd + 2 * i + 1]);
                v[h * hd + 2 * i] = a * co - b * s;
                v[h * hd + 2 * i + 1] = a * s + b * co;
            }
        }
    };
    let emb = g("tok_embeddings");
    let mut xs: Vec<Vec<f64>> = ids
        .iter()
        .map(|&t| emb[t as usize * d..(t as usize + 1) * d].to_vec())
        .collect();
    for l in 0..c.n_layers {
        let p = |n: &str| g(&format!("layers.{l}.{n}"));
        let (wq, wk, wv, wo) = (p("wq"), p("wk"), p("wv"), p("wo"));
        let hs: Vec<Vec<f64>> = xs.iter().map(|x| norm(x, &p("attn_norm"))).collect();
        let mut q: Vec<Vec<f64>> = hs.iter().map(|h| matvec(&wq, h, d)).collect();
        let mut k: Vec<Vec<f64>> = hs.iter().map(|h| matvec(&wk, h, nkv * hd)).collect();
        let v: Vec<Vec<f64>> = hs.iter().map(|h| matvec(&wv, h, nkv * hd)).collect();
        for (pos, (qq, kk)) in q.iter_mut().zip(k.iter_mut()).enumerate() {
            rope(qq, pos);
            rope(kk, pos);
        }
        for t in 0..ids.len() {
            let mut out = vec![0.0; d];
            for h in 0..nh {
                let kh = h / (nh / nkv);
                let scores: Vec<f64> = (0..=t)
                    .map(|s| {
                        (0..hd)
                            .map(|i| q[t][h * hd + i] * k[s][kh * hd + i])
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for (s, es) in e.iter().enumerate() {
                    for i in 0..hd {
                        out[h * hd + i] += es / z * v[s][kh * hd + i];
                    }
                }
            }
            let o = matvec(&wo, &out, d);
            xs[t].iter_mut().zip(o).for_each(|(x, o)| *x += o);
            let h = norm(&xs[t], &p("ffn_norm"));
            let a = matvec(&p("w1"), &h, hid);
            let b = matvec(&p("w3"), &h, hid);
            let gate: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(a, b)| a / (1.0 + (-a).exp()) * b)
                .collect();
            let f = matvec(&p("w2"), &gate, d);
            xs[t].iter_mut().zip(f).for_each(|(x, f)| *x += f);
        }
    }
    xs.iter()
        .map(|x| matvec(&emb, &norm(x, &g("norm")), c.vocab_size as usize))
        .collect()
}

#[test]
fn forward_and_loss_match_an_f64_reference() {
    let c = common::tiny_config();
    let w = common::random_weights(&c, 9);
    let device = Device::Cpu;
    let params: badge::train::model::Params = model::parameter_shapes(&c)
        .into_iter()
        .map(|(n, s)| {
            (
                n.clone(),
                candle_core::Var::from_tensor(
                    &Tensor::from_vec(w[&n].clone(), s, &device).unwrap(),
                )
                .unwrap(),
            )
        })
        .collect();
    let m = model::build(&c, &params, &device).unwrap();
    let ids: Vec<u32> = vec![1, 17, 200, 45, 3, 99, 250, 7, 7, 12];
    let logits = m
        .forward(&Tensor::from_vec(ids.clone(), (1, ids.len()), &device).unwrap())
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want = reference_logits(&c, &w, &ids);
    let (mut max_rel, mut scale) = (0.0f64, 0.0f64);
    for (a, b) in logits.iter().zip(&want) {
        for (&x, &y) in a.iter().zip(b) {
            scale = scale.max(y.abs());
            max_rel = max_rel.max((f64::from(x) - y).abs());
        }
    }
    assert!(
        max_rel / scale < 1e-5,
        "max abs diff {max_rel} relative to {scale}"
    );
    // Loss: mean negative log-likelihood of the targets.
    let targets: Vec<u32> = ids[1..].iter().copied().chain([2]).collect();
    let loss: f32 = m
        .loss(
            &Tensor::from_vec(ids.clone(), (1, ids.len()), &device).unwrap(),
            &Tensor::from_vec(targets.clone(), (1, ids.len()), &device).unwrap(),
            &Tensor::ones((1, ids.len()), candle_core::DType::F32, &device).unwrap(),
        )
        .unwrap()
        .to_scalar()
        .unwrap();
    let ref_loss: f64 = want
        .iter()
        .zip(&targets)
        .map(|(l, &t)| {
            let mx = l.iter().cloned().fold(f64::MIN, f64::max);
            let lse = l.iter().map(|v| (v - mx).exp()).sum::<f64>().ln() + mx;
            lse - l[t as usize]
        })
        .sum::<f64>()
        / ids.len() as f64;
    assert!(
        (f64::from(loss) - ref_loss).abs() / ref_loss < 1e-5,
        "{loss} vs {ref_loss}"
    );
}

#[test]
fn gradients_match_finite_differences_for_every_tensor_kind() {
    let c = ModelConfig {
        dim: 16,
        hidden_dim: 32,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        vocab_size: 40,
        seq_len: 8,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let device = Device::Cpu;
    let w = common::random_weights(&c, 5);
    let make = |w: &BTreeMap<String, Vec<f32>>| -> badge::train::model::Params {
        model::parameter_shapes(&c)
            .into_iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    candle_core::Var::from_tensor(
                        &Tensor::from_vec(w[&n].clone(), s, &device).unwrap(),
                    )
                    .unwrap(),
                )
            })
            .collect()
    };
    let (ids, tg, mask) = batch(&c, 1, 8);
    let loss_of = |w: &BTreeMap<String, Vec<f32>>| -> f64 {
        let p = make(w);
        f64::from(
            model::build(&c, &p, &device)
                .unwrap()
                .loss(&ids, &tg, &mask)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
        )
    };
    let params = make(&w);
    let m = model::build(&c, &params, &device).unwrap();
    let grads = m.backward(&m.loss(&ids, &tg, &mask).unwrap()).unwrap();
    for (name, var) in &params {
        let g: Vec<f32> = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // The three largest gradient entries of each tensor: f32 central differences are
        // reliable where the gradient is not tiny.
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &i in idx.iter().take(3) {
            let h = 1e-2f32;
            let mut plus = w.clone();
            plus.get_mut(name).unwrap()[i] += h;
            let mut minus = w.clone();
            minus.get_mut(name).unwrap()[i] -= h;
            let numeric = (loss_of(&plus) - loss_of(&minus)) / (2.0 * f64::from(h));
            let analytic = f64::from(g[i]);
            let rel = (numeric - analytic).abs() / analytic.abs().max(1e-3);
            assert!(
                rel < 0.05,
                "{name}[{i}]: analytic {analytic}, numeric {numeric}"
            );
        }
    }
}

/// A backward pass whose block gradients were never collected must not leak into the next
/// one: the second collection finds the stale gradients and says so.
#[test]
fn uncollected_block_gradients_are_an_error_not_a_silent_sum() {
    let (_, m, (ids, tg, mask)) = tiny_model(5);
    m.loss(&ids, &tg, &mask).unwrap().backward().unwrap();
    let err = m.backward(&m.loss(&ids, &tg, &mask).unwrap()).err();
    let msg = format!("{:#}", err.expect("stale block gradients were accepted"));
    assert!(msg.contains("two gradients"), "{msg}");
    // Collected, the next step is clean again.
    m.backward(&m.loss(&ids, &tg, &mask).unwrap()).unwrap();
}

/// The fused block op against the same block from the separate ops: output, the input's
/// gradient and every weight's gradient, for grouped and plain heads, on enough rows that the
/// products split over threads.
#[test]
fn fused_block_matches_the_separate_ops_forward_and_backward() {
    use candle_core::{DType, Var};
    for (case, n_kv_heads) in [2u32, 4].into_iter().enumerate() {
        let c = ModelConfig {
            n_kv_heads,
            ..common::tiny_config()
        };
        let params = model::init_params(&c, 7 + case as u64, &Device::Cpu).unwrap();
        let map = params
            .iter()
            .filter(|(k, _)| k.starts_with("layers.0."))
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let vb = candle_nn::VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
        let block = model::Block::new(vb.pp("layers.0"), &c).unwrap();
        let rope = model::Rope::new(&c, &Device::Cpu).unwrap();
        let (b, t, d) = (5, c.seq_len as usize, c.dim as usize);
        let x = Var::from_tensor(
            &Tensor::from_vec(
                common::random_values(b * t * d, 11, 1.0),
                (b, t, d),
                &Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
        let r = Tensor::from_vec(
            common::random_values(b * t * d, 12, 1.0),
            (b, t, d),
            &Device::Cpu,
        )
        .unwrap();
        let pass = |fused: bool| {
            let y = if fused {
                block.forward(x.as_tensor(), &rope).unwrap()
            } else {
                block.forward_separate(x.as_tensor(), &rope).unwrap()
            };
            let mut grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            block.collect_weight_grads(&mut grads).unwrap();
            let mut g = vec![("x".to_string(), grads.get(x.as_tensor()).unwrap().clone())];
            for (name, p) in params.iter().filter(|(k, _)| k.starts_with("layers.0.")) {
                let gp = grads.get(p.as_tensor());
                g.push((
                    name.clone(),
                    gp.unwrap_or_else(|| panic!("{name}: no gradient")).clone(),
                ));
            }
            (y, g)
        };
        let ((y, g), (y_ref, g_ref)) = (pass(true), pass(false));
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
            let scale = b.iter().fold(0f32, |m, &v| m.max(v.abs()));
            let diff = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (&p, &q)| m.max((p - q).abs()));
            assert!(
                scale > 0.0 && diff / scale < 1e-5,
                "case {case} {what}: {diff} of {scale}"
            );
        };
        close(&y, &y_ref, "output");
        assert_eq!(g.len(), 10, "x and the block's nine weights");
        for ((name, a), (_, b)) in g.iter().zip(&g_ref) {
            close(a, b, name);
        }
    }
}

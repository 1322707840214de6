//! The fused ops of `badge::train::ops` against the same computation from stock candle ops, forward
//! and backward, and the fused AdamW step against the tensor-op step.

mod common;

use badge::train::{ffn, linear, model, ops, optim::AdamW};
use candle_core::{DType, Device, Tensor, Var};

fn rand(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(common::random_values(n, seed, scale), shape, &Device::Cpu).unwrap()
}

/// max |a - b| / max |b|, asserted below `tol`.
fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f64, |m, (&x, &y)| m.max(f64::from(x - y).abs()));
    assert!(scale > 0.0, "{what}: reference is all zero");
    assert!(
        diff / scale < tol,
        "{what}: max diff {diff} relative to {scale} = {}",
        diff / scale
    );
}

/// Runs `f` on fresh variables made from `inputs`, then backward of `sum(f(..) · r)`:
/// the output and the gradient of every input.
fn run(inputs: &[Tensor], r_seed: u64, f: impl Fn(&[Tensor]) -> Tensor) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts);
    let r = rand(y.dims(), r_seed, 1.0);
    let loss = if y.rank() == 0 {
        y.clone()
    } else {
        (&y * &r).unwrap().sum_all().unwrap()
    };
    let grads = loss.backward().unwrap();
    let gs = ts
        .iter()
        .map(|t| grads.get(t).expect("input without gradient").clone())
        .collect();
    (y, gs)
}

fn rope_tables(seq: usize, hd: usize) -> ops::RopeTables {
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for pos in 0..seq {
        for i in 0..hd / 2 {
            let a = pos as f32 / 10000f32.powf((2 * i) as f32 / hd as f32);
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    ops::RopeTables::new(cos, sin, seq, hd / 2, &Device::Cpu).unwrap()
}

#[test]
fn attention_matches_stock_ops_forward_and_backward() {
    // (batch, T, heads, kv heads, head_dim): GQA, plain multi-head, head sizes that are and are
    // not multiples of the vector width.
    for (i, &(b, t, h, kv, hd)) in [
        (2, 13, 4, 2, 8),
        (1, 20, 2, 2, 6),
        (2, 9, 8, 4, 16),
        (1, 33, 3, 1, 28),
        // Several query tiles, the last one partial.
        (1, 70, 4, 2, 16),
    ]
    .iter()
    .enumerate()
    {
        let rope = rope_tables(80, hd);
        let s = 100 * i as u64;
        let inputs = [
            rand(&[b, t, h * hd], s + 1, 1.0),
            rand(&[b, t, kv * hd], s + 2, 1.0),
            rand(&[b, t, kv * hd], s + 3, 1.0),
        ];
        let (y, g) = run(&inputs, s + 4, |x| {
            ops::attention(&x[0], &x[1], &x[2], &rope, h, kv).unwrap()
        });
        let (y_ref, g_ref) = run(&inputs, s + 4, |x| {
            ops::attention_reference(&x[0], &x[1], &x[2], &rope, h, kv).unwrap()
        });
        assert_close(&y, &y_ref, 1e-5, "attention output");
        for (n, (a, b)) in ["dq", "dk", "dv"].iter().zip(g.iter().zip(&g_ref)) {
            assert_close(a, b, 1e-5, &format!("attention {n} (case {i})"));
        }
    }
}

#[test]
fn linear_matches_stock_ops_forward_and_backward() {
    // (leading dims, in, out): single rows and columns, odd sizes, a batch of sequences.
    for (i, (lead, n_in, n_out)) in [
        (vec![1], 1, 1),
        (vec![7], 31, 1),
        (vec![1], 257, 7),
        (vec![31], 7, 257),
        (vec![3, 37], 64, 96),
        (vec![2, 129], 224, 33),
        // Enough rows and outputs that both products split over the pool's threads, unevenly.
        (vec![3, 50], 40, 300),
    ]
    .into_iter()
    .enumerate()
    {
        let s = 10 * i as u64;
        let mut x_shape = lead.clone();
        x_shape.push(n_in);
        let inputs = [rand(&x_shape, s + 1, 1.0), rand(&[n_out, n_in], s + 2, 0.5)];
        let (y, g) = run(&inputs, s + 3, |x| linear::linear(&x[0], &x[1]).unwrap());
        let (y_ref, g_ref) = run(&inputs, s + 3, |x| {
            linear::linear_reference(&x[0], &x[1]).unwrap()
        });
        assert_close(&y, &y_ref, 1e-5, &format!("linear output (case {i})"));
        assert_close(&g[0], &g_ref[0], 1e-5, &format!("linear dx (case {i})"));
        assert_close(&g[1], &g_ref[1], 1e-5, &format!("linear dw (case {i})"));
    }
}

#[test]
fn feed_forward_matches_stock_ops_forward_and_backward() {
    // (rows, dim, hidden, dim_out): one row, odd sizes, a model-like block.
    for (i, &(rows, dim, hidden, dim_out)) in [
        (1, 1, 1, 1),
        (7, 31, 5, 3),
        (33, 16, 48, 16),
        (130, 64, 96, 64),
    ]
    .iter()
    .enumerate()
    {
        let s = 10 * i as u64;
        let inputs = [
            rand(&[rows, dim], s + 1, 1.0),
            rand(&[2 * hidden, dim], s + 2, 0.5),
            rand(&[dim_out, hidden], s + 3, 0.5),
        ];
        let (y, g) = run(&inputs, s + 4, |x| {
            ffn::feed_forward(&x[0], &x[1], &x[2]).unwrap()
        });
        let (y_ref, g_ref) = run(&inputs, s + 4, |x| {
            ffn::feed_forward_reference(&x[0], &x[1], &x[2]).unwrap()
        });
        assert_close(&y, &y_ref, 1e-5, &format!("feed_forward output (case {i})"));
        for (n, (a, b)) in ["dx", "dw13", "dw2"].iter().zip(g.iter().zip(&g_ref)) {
            assert_close(a, b, 1e-5, &format!("feed_forward {n} (case {i})"));
        }
    }
}

#[test]
fn rms_norm_matches_stock_ops_forward_and_backward() {
    for (i, &(rows, dim)) in [(37, 32), (5, 13), (130, 224)].iter().enumerate() {
        let s = 10 * i as u64;
        let inputs = [
            rand(&[rows, dim], s + 1, 2.0),
            (rand(&[dim], s + 2, 0.5) + 1.0).unwrap(),
        ];
        let (y, g) = run(&inputs, s + 3, |x| {
            ops::rms_norm(&x[0], &x[1], 1e-5).unwrap()
        });
        let (y_ref, g_ref) = run(&inputs, s + 3, |x| {
            ops::rms_norm_reference(&x[0], &x[1], 1e-5).unwrap()
        });
        assert_close(&y, &y_ref, 1e-5, "rms_norm output");
        assert_close(&g[0], &g_ref[0], 1e-5, "rms_norm dx");
        assert_close(&g[1], &g_ref[1], 1e-5, "rms_norm dw");
    }
}

#[test]
fn swiglu_matches_stock_ops_forward_and_backward() {
    let inputs = [rand(&[3, 50, 70], 1, 6.0), rand(&[3, 50, 70], 2, 3.0)];
    let (y, g) = run(&inputs, 3, |x| ops::swiglu(&x[0], &x[1]).unwrap());
    let (y_ref, g_ref) = run(&inputs, 3, |x| ops::swiglu_reference(&x[0], &x[1]).unwrap());
    assert_close(&y, &y_ref, 1e-5, "swiglu output");
    assert_close(&g[0], &g_ref[0], 1e-5, "swiglu da");
    assert_close(&g[1], &g_ref[1], 1e-5, "swiglu db");
}

#[test]
fn fast_exp_is_accurate() {
    for i in 0..=20_000 {
        let x = -87.0 + 175.0 * i as f32 / 20_000.0;
        let (a, b) = (ops::exp(x), f64::from(x).exp());
        assert!(
            ((f64::from(a) - b) / b).abs() < 1e-6,
            "exp({x}) = {a}, want {b}"
        );
    }
}

#[test]
fn sum_of_squares_matches_an_f64_sum() {
    // An odd length: whole chunks, a partial chunk, and a tail shorter than one vector.
    let x: Vec<f32> = (0..3 * 4096 + 1027)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3)
        .collect();
    let want: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let got = ops::sum_of_squares(&x);
    assert!(((got - want) / want).abs() < 1e-6, "{got} vs {want}");
    assert_eq!(ops::sum_of_squares(&[]), 0.0);
    assert_eq!(ops::sum_of_squares(&[3.0]), 9.0);
}

#[test]
fn cross_entropy_matches_stock_ops_forward_and_backward() {
    let (n, v) = (3 * 17, 300);
    let logits = rand(&[3, 17, v], 1, 8.0);
    let targets: Vec<u32> = (0..n).map(|i| ((i * 37 + 5) % v) as u32).collect();
    let targets = Tensor::from_vec(targets, (3, 17), &Device::Cpu).unwrap();
    let mask: Vec<f32> = (0..n).map(|i| if i % 4 == 1 { 0.0 } else { 1.0 }).collect();
    let mask = Tensor::from_vec(mask, (3, 17), &Device::Cpu).unwrap();
    let (y, g) = run(std::slice::from_ref(&logits), 0, |x| {
        ops::cross_entropy(&x[0], &targets, &mask).unwrap()
    });
    let (y_ref, g_ref) = run(std::slice::from_ref(&logits), 0, |x| {
        ops::cross_entropy_reference(&x[0], &targets, &mask).unwrap()
    });
    assert_close(&y, &y_ref, 1e-5, "cross-entropy loss");
    assert_close(&g[0], &g_ref[0], 1e-5, "cross-entropy dlogits");
    // An all-masked batch: loss 0, no NaN.
    let zero = mask.zeros_like().unwrap();
    let l: f32 = ops::cross_entropy(&logits, &targets, &zero)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(l, 0.0);
}

#[test]
fn fused_adamw_matches_tensor_op_adamw_over_ten_steps() {
    let c = common::tiny_config();
    let dev = Device::Cpu;
    let (b, t) = (2, 16);
    let ids: Vec<u32> = (0..b * t).map(|i| ((i * 37 + 11) % 300) as u32).collect();
    let tg: Vec<u32> = (0..b * t).map(|i| ((i * 53 + 5) % 300) as u32).collect();
    let ids = Tensor::from_vec(ids, (b, t), &dev).unwrap();
    let tg = Tensor::from_vec(tg, (b, t), &dev).unwrap();
    let mask = Tensor::ones((b, t), DType::F32, &dev).unwrap();
    let train = |fused: bool| -> (Vec<f32>, model::Params) {
        let params = model::init_params(&c, 4, &dev).unwrap();
        let m = model::build(&c, &params, &dev).unwrap();
        let mut opt = AdamW::new(&params).unwrap();
        let mut losses = Vec::new();
        for step in 0..10 {
            let loss = m.loss(&ids, &tg, &mask).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
            let grads = m.backward(&loss).unwrap();
            // A tight clip on even steps exercises clipping; decay exercises both groups.
            let clip = if step % 2 == 0 { 0.05 } else { 1.0 };
            let info = if fused {
                opt.step(&params, &grads, 3e-3, 0.1, clip).unwrap()
            } else {
                opt.step_reference(&params, &grads, 3e-3, 0.1, clip)
                    .unwrap()
            };
            assert!(info.grad_norm.is_finite());
        }
        assert_eq!(opt.step, 10);
        (losses, params)
    };
    let (fused, pf) = train(true);
    let (reference, pr) = train(false);
    for (a, b) in fused.iter().zip(&reference) {
        assert!(
            ((a - b) / b).abs() < 1e-5,
            "losses {fused:?} vs {reference:?}"
        );
    }
    assert!(
        fused[9] < fused[0] - 0.05,
        "training did not lower the loss: {fused:?}"
    );
    for (name, p) in &pf {
        assert_close(p.as_tensor(), pr[name].as_tensor(), 1e-4, name);
    }
}

//! Training throughput benchmark: forward + backward + AdamW on random batches.
//!
//! `cargo run --release --bin bench-train -- --model badge-1m --threads 2 --steps 10 [--json]`
//!
//! Prints the median tokens/s over the timed steps (after warm-up), and the median seconds of
//! each phase of a step (forward with the loss, backward, AdamW), the first split of a profile.
//! `--threads` sets `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` before candle starts its thread
//! pools.

use anyhow::{bail, Context, Result};
use badge::train::{model, optim::AdamW};
use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    models: Vec<String>,
    threads: usize,
    steps: usize,
    warmup: usize,
    batch: usize,
    seq: usize,
    json: bool,
    device: String,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        models: Vec::new(),
        threads: 2,
        steps: 10,
        warmup: 2,
        batch: 16,
        seq: 256,
        json: false,
        device: "cpu".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--model" => a.models.push(val("--model")?),
            "--threads" => a.threads = val("--threads")?.parse()?,
            "--steps" => a.steps = val("--steps")?.parse()?,
            "--warmup" => a.warmup = val("--warmup")?.parse()?,
            "--batch" => a.batch = val("--batch")?.parse()?,
            "--seq" => a.seq = val("--seq")?.parse()?,
            "--json" => a.json = true,
            "--device" => a.device = val("--device")?,
            "-h" | "--help" => {
                println!(
                    "bench-train [--model badge-1m|badge-6m|PATH.toml]... [--threads 2] \
                     [--steps 10] [--warmup 2] [--batch 16] [--seq 256] [--device cpu|cuda[:N]] [--json]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if a.models.is_empty() {
        a.models = vec!["badge-1m".into(), "badge-6m".into()];
    }
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    Ok(a)
}

fn config_path(name: &str) -> PathBuf {
    if name.ends_with(".toml") {
        PathBuf::from(name)
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("configs/models")
            .join(format!("{name}.toml"))
    }
}

/// One model's results: median tokens/s, the last loss, every timed step's tokens/s, and the
/// median seconds of the forward, backward and optimizer phases.
struct Bench {
    tokens_per_sec: f64,
    loss: f64,
    samples: Vec<f64>,
    phases: [f64; 3],
}

fn bench(name: &str, a: &Args) -> Result<Bench> {
    let cfg = badge::config::load_model_config(&config_path(name))?;
    let device = badge::train::parse_device(&a.device)?;
    let params = model::init_params(&cfg, 1, &device)?;
    let m = model::build(&cfg, &params, &device)?;
    let mut opt = AdamW::new(&params)?;
    let mut rng = StdRng::seed_from_u64(7);
    let n = a.batch * a.seq;
    let vocab = cfg.vocab_size;
    let mut times = Vec::new();
    let mut phases: [Vec<f64>; 3] = Default::default();
    let mut last_loss = f64::NAN;
    for step in 0..a.warmup + a.steps {
        let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab)).collect();
        let tg: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab)).collect();
        let ids = Tensor::from_vec(ids, (a.batch, a.seq), &device)?;
        let tg = Tensor::from_vec(tg, (a.batch, a.seq), &device)?;
        let mask = Tensor::ones((a.batch, a.seq), candle_core::DType::F32, &device)?;
        // A GPU runs asynchronously: each phase ends when its last kernel does.
        let t0 = Instant::now();
        let loss = m.loss(&ids, &tg, &mask)?;
        device.synchronize()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        device.synchronize()?;
        let t2 = Instant::now();
        opt.step(&params, &grads, 1e-3, 0.1, 1.0)?;
        last_loss = f64::from(loss.to_scalar::<f32>()?);
        device.synchronize()?;
        let t3 = Instant::now();
        if step >= a.warmup {
            times.push(n as f64 / (t3 - t0).as_secs_f64());
            for (p, (s, e)) in phases.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3)]) {
                p.push((e - s).as_secs_f64());
            }
        }
    }
    Ok(Bench {
        tokens_per_sec: badge::util::median(&mut times.clone()),
        loss: last_loss,
        samples: times,
        phases: phases.map(|mut p| badge::util::median(&mut p)),
    })
}

fn main() -> Result<()> {
    let a = parse()?;
    // Before candle builds any pool: they read these once.
    std::env::set_var("RAYON_NUM_THREADS", a.threads.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", a.threads.to_string());
    badge::train::ops::tune_threads();
    for name in &a.models {
        let r = bench(name, &a)?;
        let [fwd, bwd, opt] = r.phases;
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "impl": "candle",
                    "device": a.device,
                    "model": name,
                    "threads": a.threads,
                    "batch": a.batch,
                    "seq": a.seq,
                    "steps": a.steps,
                    "tokens_per_sec": r.tokens_per_sec,
                    "samples": r.samples,
                    "final_loss": r.loss,
                    "phase_secs": {"forward": fwd, "backward": bwd, "optimizer": opt},
                })
            );
        } else {
            println!(
                "{name}: {:.0} tokens/s (median of {} steps, {} threads, batch {}x{}), loss {:.4}; \
                 forward {:.1} ms, backward {:.1} ms, optimizer {:.1} ms",
                r.tokens_per_sec,
                a.steps,
                a.threads,
                a.batch,
                a.seq,
                r.loss,
                fwd * 1e3,
                bwd * 1e3,
                opt * 1e3
            );
        }
    }
    Ok(())
}

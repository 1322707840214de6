//! Training throughput benchmark: forward + backward + AdamW on random batches.
//!
//! `cargo run --release --bin bench-train -- --model badge-1m --threads 2 --steps 10 [--json]`
//!
//! Prints the median tokens/s over the timed steps (after warm-up), and the median seconds of
//! each phase of a step (forward with the loss, backward, AdamW), the first split of a profile.
//! `--threads` sets `RAYON_NUM_THREADS` and `CANDLE_NUM_THREADS` before candle starts its thread
//! pools.

use anyhow::{bail, Context, Result};
use badge::train::{model, optim::AdamW, profile, profile::OpTime};
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
    profile: bool,
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
        profile: false,
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
            "--profile" => a.profile = true,
            "--device" => a.device = val("--device")?,
            "-h" | "--help" => {
                println!(
                    "bench-train [--model badge-1m|badge-6m|PATH.toml]... [--threads 2] \
                     [--steps 10] [--warmup 2] [--batch 16] [--seq 256] [--device cpu|cuda[:N]] [--json] [--profile]"
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
    /// With `--profile`: the seconds of each phase of one recorded step, and each fused op's
    /// totals in it.
    profile: Option<([f64; 3], Vec<OpTime>)>,
}

fn bench(name: &str, a: &Args) -> Result<Bench> {
    let cfg = badge::config::load_model_config(&config_path(name))?;
    if a.seq == 0 || a.seq > cfg.seq_len as usize {
        bail!(
            "--seq {} does not fit {name}: its sequences hold 1 to {} positions (seq_len); pass --seq {} or less",
            a.seq,
            cfg.seq_len,
            cfg.seq_len
        );
    }
    let device = badge::train::parse_device(&a.device)?;
    let params = model::init_params(&cfg, 1, &device)?;
    let m = model::build(&cfg, &params, &device)?;
    let mut opt = AdamW::new(&params)?;
    let mut rng = StdRng::seed_from_u64(7);
    let n = a.batch * a.seq;
    let vocab = cfg.vocab_size;
    // One step: the times at its start and at the end of its forward, backward and optimizer
    // phases (a GPU runs asynchronously: each phase ends when its last kernel does).
    let mut step = || -> Result<([Instant; 4], f64)> {
        let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab)).collect();
        let tg: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab)).collect();
        let ids = Tensor::from_vec(ids, (a.batch, a.seq), &device)?;
        let tg = Tensor::from_vec(tg, (a.batch, a.seq), &device)?;
        let mask = Tensor::ones((a.batch, a.seq), candle_core::DType::F32, &device)?;
        let t0 = Instant::now();
        let loss = m.loss(&ids, &tg, &mask)?;
        device.synchronize()?;
        let t1 = Instant::now();
        let grads = m.backward(&loss)?;
        device.synchronize()?;
        let t2 = Instant::now();
        opt.step(&params, &grads, 1e-3, 0.1, 1.0)?;
        let loss = f64::from(loss.to_scalar::<f32>()?);
        device.synchronize()?;
        Ok(([t0, t1, t2, Instant::now()], loss))
    };
    let secs = |t: &[Instant; 4]| [0, 1, 2].map(|i| (t[i + 1] - t[i]).as_secs_f64());
    let mut times = Vec::new();
    let mut phases: [Vec<f64>; 3] = Default::default();
    let mut last_loss = f64::NAN;
    for i in 0..a.warmup + a.steps {
        let (t, loss) = step()?;
        last_loss = loss;
        if i >= a.warmup {
            times.push(n as f64 / (t[3] - t[0]).as_secs_f64());
            for (p, s) in phases.iter_mut().zip(secs(&t)) {
                p.push(s);
            }
        }
    }
    // One more step, recorded op by op: the spans' bookkeeping stays out of the timed steps.
    let profile = if a.profile {
        profile::enable();
        let (t, _) = step()?;
        Some((secs(&t), profile::take()))
    } else {
        None
    };
    Ok(Bench {
        tokens_per_sec: badge::util::median(&mut times.clone()),
        loss: last_loss,
        samples: times,
        phases: phases.map(|mut p| badge::util::median(&mut p)),
        profile,
    })
}

/// The profile of one step: each phase, each fused op in it (with its matrix products), and
/// the rest of the phase (candle's own ops and graph bookkeeping), in ms and shares of the step.
fn print_profile(phases: &[f64; 3], ops: &[OpTime]) {
    let total: f64 = phases.iter().sum();
    let pct = |s: f64| 100.0 * s / total;
    let matmul: f64 = ops.iter().map(|o| o.matmul_secs).sum();
    println!(
        "  profile of one step: {:.1} ms, matrix products {:.1} ms ({:.1} %), the rest {:.1} ms",
        total * 1e3,
        matmul * 1e3,
        pct(matmul),
        (total - matmul) * 1e3
    );
    let phase_of = |op: &str| {
        if op.ends_with(".fwd") {
            0
        } else if op.ends_with(".bwd") {
            1
        } else {
            2
        }
    };
    for (p, name) in ["forward", "backward", "optimizer"].iter().enumerate() {
        let mine: Vec<_> = ops.iter().filter(|o| phase_of(o.op) == p).collect();
        let (in_ops, mm) = mine
            .iter()
            .fold((0.0, 0.0), |(s, m), o| (s + o.secs, m + o.matmul_secs));
        println!(
            "  {name:<10} {:>8.1} ms {:>5.1} %   matrix products {:>7.1} ms {:>5.1} %",
            phases[p] * 1e3,
            pct(phases[p]),
            mm * 1e3,
            pct(mm)
        );
        for o in &mine {
            println!(
                "    {:<20} {:>8.1} ms {:>5.1} %   matrix products {:>7.1} ms {:>5.1} %   {} calls",
                o.op,
                o.secs * 1e3,
                pct(o.secs),
                o.matmul_secs * 1e3,
                pct(o.matmul_secs),
                o.calls
            );
        }
        let rest = phases[p] - in_ops;
        println!(
            "    {:<20} {:>8.1} ms {:>5.1} %",
            "(outside fused ops)",
            rest * 1e3,
            pct(rest)
        );
    }
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
                    "profile": r.profile.as_ref().map(|(phases, ops)| serde_json::json!({
                        "phase_secs": phases,
                        "ops": ops.iter().map(|o| serde_json::json!({
                            "op": o.op, "secs": o.secs, "matmul_secs": o.matmul_secs,
                            "calls": o.calls,
                        })).collect::<Vec<_>>(),
                    })),
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
            if let Some((phases, ops)) = &r.profile {
                print_profile(phases, ops);
            }
        }
    }
    Ok(())
}

//! `bench-engine`: the badge's int8 engine on the host, in tokens per second, and the effect of
//! the smaller KV caches.
//!
//! * `prepare --model configs/models/badge-1m.toml --out DIR` writes random weights of that shape
//!   twice: `DIR/badge.bin` (the badge's blob) and `DIR/model.bin` + `DIR/tokenizer.bin`
//!   (llama2.c's version-2 Q8_0 file, what `runq` reads), quantized by the same code.
//! * `run --blob DIR/badge.bin --workers 1 --runs 5` generates greedily from BOS through
//!   positions `0..steps` like `runq -n 256 -t 0` and reports the median tokens/s (timed, as runq
//!   does, from the end of the first step).
//! * `kv-report --blob MODEL.bin --text data/stories/stories-valid.txt` runs held-out text through
//!   the engine with f32, f16 and int8 KV caches and reports top-1 agreement with f32 and the
//!   cache sizes.
//!
//! `scripts/bench_engine.sh RUNQ_PATH` drives `prepare` and `run` against runq.

use anyhow::{anyhow, bail, Context, Result};
use badge::answer::HostWorkers;
use badge::util::AlignedBytes;
use badge_firmware::config::{KvCacheKind, ModelConfig};
use badge_firmware::engine::{Engine, RunState};
use badge_firmware::format::Blob;
use badge_firmware::sampler::argmax;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Benchmark the badge's int8 engine on the host")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write random weights of a model shape as a blob and as a llama2.c checkpoint.
    Prepare {
        /// Model config (TOML), e.g. configs/models/badge-1m.toml.
        #[arg(long)]
        model: PathBuf,
        /// Output folder (badge.bin, model.bin, tokenizer.bin).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Greedy generation from BOS; median tokens/s over several runs.
    Run {
        #[arg(long)]
        blob: PathBuf,
        /// 1 or 2.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Positions to run (runq's `-n`); at most the model's seq_len.
        #[arg(long, default_value_t = 256)]
        steps: usize,
        /// Override the blob's KV cache representation.
        #[arg(long, value_parser = parse_kv)]
        kv: Option<KvCacheKind>,
        #[arg(long)]
        json: bool,
    },
    /// Top-1 agreement of the f16 and int8 KV caches with f32 on held-out text.
    KvReport {
        #[arg(long)]
        blob: PathBuf,
        #[arg(long, default_value = "data/stories/stories-valid.txt")]
        text: PathBuf,
        /// At most this many tokens of text (in windows of the model's seq_len).
        #[arg(long, default_value_t = 4096)]
        max_tokens: usize,
        /// Model shapes whose KV cache sizes are listed too (comma-separated TOML paths).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "configs/models/badge-1m.toml,configs/models/badge-6m.toml"
        )]
        shapes: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_kv(s: &str) -> Result<KvCacheKind, String> {
    match s {
        "f32" => Ok(KvCacheKind::F32),
        "f16" => Ok(KvCacheKind::F16),
        "int8" => Ok(KvCacheKind::Int8),
        _ => Err(format!("unknown KV cache {s:?}: f32, f16 or int8")),
    }
}

fn prepare(model: &Path, out: &Path, seed: u64) -> Result<()> {
    let c = badge::config::load_model_config(model)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stories = badge::data::read_stories(Path::new("data/stories/stories.txt"))
        .context("run from the repository root (data/stories/stories.txt)")?;
    let tok = badge::data::tokenizer::BadgeTokenizer::train(&stories, c.vocab_size as usize)?;
    let bos = tok.bos_id() as usize;
    let dim = c.dim as usize;
    let mut weights = badge::run::FlatParams::new();
    for (i, (name, shape)) in badge::train::model::parameter_shapes(&c)
        .into_iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        let mut v = badge::util::random_values(n, seed.wrapping_add(i as u64), 0.15);
        if shape.len() == 1 {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        if name == "tok_embeddings" {
            // A near-zero BOS row keeps its (shared-classifier) logit from ever being the
            // largest, so greedy generation never stops early: runq stops when it samples BOS,
            // and both programs must run all positions for their timings to compare.
            v[bos * dim..][..dim].iter_mut().for_each(|x| *x *= 0.01);
        }
        weights.insert(name, v);
    }
    let (gs, _) = badge::export::resolve_group_size(&c, badge::export::GroupSize::Auto(64))?;
    let inputs = badge::export::BlobInputs {
        prompts: badge_firmware::prompts::PromptsSpec::default(),
        config: c,
        tokenizer: &tok,
        template: badge::config::DEFAULT_TEMPLATE,
        voice: Default::default(),
        kv_cache: KvCacheKind::F32,
        group_size: gs,
        answers: None,
    };
    let (blob, _) = badge::export::build_blob(&inputs, &weights)?;
    std::fs::write(out.join("badge.bin"), &blob)?;
    badge::export::llama2c::write(&out.join("model.bin"), &c, &weights, &tok, gs)?;
    eprintln!(
        "{}: dim {} hidden {} layers {} vocab {} group {gs} -> {}",
        model.display(),
        c.dim,
        c.hidden_dim,
        c.n_layers,
        c.vocab_size,
        out.display()
    );
    Ok(())
}

fn engine_with_kv<'a>(
    blob: &Blob<'a>,
    workers: usize,
    kv: KvCacheKind,
) -> Result<Engine<'a, HostWorkers>> {
    let mut e = Engine::new(blob, HostWorkers::new(workers)).map_err(|e| anyhow!("{e}"))?;
    if kv != blob.kv_cache {
        e.state = RunState::new(&blob.config, blob.group_size, kv);
    }
    Ok(e)
}

/// FNV-1a, to check that runs (and worker counts) compute the same thing.
fn fnv(h: u64, v: u32) -> u64 {
    (h ^ u64::from(v)).wrapping_mul(0x0000_0100_0000_01b3)
}

/// One greedy generation; returns tokens/s over steps 1.. (runq's timing), positions run, and a
/// checksum of the generated tokens and the last logits.
fn generate_once(
    e: &mut Engine<'_, HostWorkers>,
    bos: u32,
    steps: usize,
) -> Result<(f64, usize, u64)> {
    let mut token = bos;
    let mut start = None;
    let mut pos = 0;
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    while pos < steps {
        let next = argmax(e.forward(token, pos).map_err(|e| anyhow!("{e}"))?);
        hash = fnv(hash, next);
        pos += 1;
        if next == bos {
            break;
        }
        token = next;
        if start.is_none() {
            start = Some(Instant::now());
        }
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let last = e
        .forward(token, pos.min(steps) - 1)
        .map_err(|e| anyhow!("{e}"))?;
    hash = last.iter().fold(hash, |h, v| fnv(h, v.to_bits()));
    Ok(((pos - 1) as f64 / secs, pos, hash))
}

#[allow(clippy::too_many_arguments)]
fn run(
    blob_path: &Path,
    workers: usize,
    runs: usize,
    steps: usize,
    kv: Option<KvCacheKind>,
    json: bool,
) -> Result<()> {
    if !(1..=2).contains(&workers) {
        bail!("--workers must be 1 or 2");
    }
    let file = AlignedBytes::read(blob_path)?;
    let blob = Blob::parse(file.as_slice()).map_err(|e| anyhow!("{}: {e}", blob_path.display()))?;
    let c: ModelConfig = blob.config;
    let steps = steps.min(c.seq_len as usize);
    let kv = kv.unwrap_or(blob.kv_cache);
    let mut rates = Vec::new();
    let mut positions = 0;
    let mut checksum = 0;
    for _ in 0..runs.max(1) {
        // A fresh engine per run, as a fresh runq process has.
        let mut e = engine_with_kv(&blob, workers, kv)?;
        let (rate, pos, hash) = generate_once(&mut e, blob.bos_id, steps)?;
        rates.push(rate);
        positions = pos;
        checksum = hash;
    }
    let med = badge::util::median(&mut rates);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "blob": blob_path.display().to_string(),
                "workers": workers,
                "kv_cache": badge::export::kv_name(kv),
                "positions": positions,
                "checksum": format!("{checksum:016x}"),
                "runs": rates.len(),
                "tokens_per_s_median": med,
                "tokens_per_s": rates,
            })
        );
    } else {
        println!(
            "{}: {workers} worker(s), KV {}, {positions} positions: median {med:.0} tok/s over {} runs (checksum {checksum:016x})",
            blob_path.display(),
            badge::export::kv_name(kv),
            rates.len()
        );
    }
    Ok(())
}

/// KV cache bytes of a shape as f32, f16 and int8.
fn kv_sizes(c: &ModelConfig, group_size: usize) -> [usize; 3] {
    [KvCacheKind::F32, KvCacheKind::F16, KvCacheKind::Int8]
        .map(|k| RunState::new(c, group_size, k).kv_cache_bytes())
}

fn kv_report(
    blob_path: &Path,
    text: &Path,
    max_tokens: usize,
    shapes: &[PathBuf],
    json: bool,
) -> Result<()> {
    let file = AlignedBytes::read(blob_path)?;
    let blob = Blob::parse(file.as_slice()).map_err(|e| anyhow!("{}: {e}", blob_path.display()))?;
    let c = blob.config;
    let tok = badge_firmware::tokenizer::Tokenizer::new(blob.tokenizer);
    let stories = badge::data::read_stories(text)?;
    // Windows of seq_len tokens, each starting with BOS, each story encoded separately.
    let window = c.seq_len as usize;
    let mut windows: Vec<Vec<u32>> = Vec::new();
    let mut total = 0;
    for s in &stories {
        let mut ids = vec![blob.bos_id];
        ids.extend(tok.encode(s));
        for w in ids.chunks(window) {
            if total >= max_tokens {
                break;
            }
            let w = &w[..w.len().min(max_tokens - total)];
            total += w.len();
            windows.push(w.to_vec());
        }
    }
    if total == 0 {
        bail!("{}: no text", text.display());
    }
    let top1 = |kv: KvCacheKind| -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
        let mut e = engine_with_kv(&blob, 1, kv)?;
        let mut picks = Vec::new();
        let mut last = Vec::new();
        for w in &windows {
            for (pos, &t) in w.iter().enumerate() {
                let logits = e.forward(t, pos).map_err(|e| anyhow!("{e}"))?;
                picks.push(argmax(logits));
                if pos + 1 == w.len() {
                    last.push(logits.to_vec());
                }
            }
        }
        Ok((picks, last))
    };
    let (reference, _) = top1(KvCacheKind::F32)?;
    // Next-token accuracy against the text itself, for scale.
    let targets: Vec<Option<u32>> = windows
        .iter()
        .flat_map(|w| {
            w.iter()
                .skip(1)
                .map(|&t| Some(t))
                .chain(std::iter::once(None))
        })
        .collect();
    let accuracy = |picks: &[u32]| {
        let (mut hit, mut n) = (0usize, 0usize);
        for (p, t) in picks.iter().zip(&targets) {
            if let Some(t) = t {
                n += 1;
                hit += usize::from(p == t);
            }
        }
        hit as f64 / n.max(1) as f64
    };
    let mut rows = Vec::new();
    for kv in [KvCacheKind::F32, KvCacheKind::F16, KvCacheKind::Int8] {
        let picks = if kv == KvCacheKind::F32 {
            reference.clone()
        } else {
            top1(kv)?.0
        };
        let agree = picks.iter().zip(&reference).filter(|(a, b)| a == b).count() as f64
            / reference.len() as f64;
        let bytes = RunState::new(&c, blob.group_size, kv).kv_cache_bytes();
        rows.push((kv, agree, accuracy(&picks), bytes));
    }
    let f32_bytes = rows[0].3 as f64;
    let mut shape_sizes = Vec::new();
    for path in shapes {
        let sc = badge::config::load_model_config(path)?;
        let (gs, _) = badge::export::resolve_group_size(&sc, badge::export::GroupSize::Auto(64))?;
        shape_sizes.push((path.display().to_string(), kv_sizes(&sc, gs)));
    }
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|&(kv, agree, acc, bytes)| {
                serde_json::json!({
                    "kv_cache": badge::export::kv_name(kv),
                    "top1_agreement_with_f32": agree,
                    "next_token_accuracy": acc,
                    "kv_cache_bytes": bytes,
                    "saving_vs_f32": 1.0 - bytes as f64 / f32_bytes,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "blob": blob_path.display().to_string(),
                "text": text.display().to_string(),
                "tokens": total,
                "windows": windows.len(),
                "results": list,
                "shapes": shape_sizes
                    .iter()
                    .map(|(name, [a, b, c])| serde_json::json!({
                        "model": name, "f32": a, "f16": b, "int8": c,
                    }))
                    .collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "{} on {} ({total} tokens in {} windows of ≤ {window}):",
            blob_path.display(),
            text.display(),
            windows.len()
        );
        println!(
            "| KV cache | bytes | saving vs f32 | top-1 agreement with f32 | next-token accuracy |"
        );
        println!("|---|---|---|---|---|");
        for (kv, agree, acc, bytes) in rows {
            println!(
                "| {} | {bytes} | {:.1}% | {:.2}% | {:.2}% |",
                badge::export::kv_name(kv),
                100.0 * (1.0 - bytes as f64 / f32_bytes),
                100.0 * agree,
                100.0 * acc
            );
        }
        println!();
        println!("| KV cache bytes (seq_len positions) | f32 | f16 | int8 (saving vs f32) |");
        println!("|---|---|---|---|");
        for (name, [a, b, c]) in &shape_sizes {
            println!(
                "| {name} | {a} | {b} ({:.1}%) | {c} ({:.1}%) |",
                100.0 * (1.0 - *b as f64 / *a as f64),
                100.0 * (1.0 - *c as f64 / *a as f64)
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Prepare { model, out, seed } => prepare(&model, &out, seed),
        Cmd::Run {
            blob,
            workers,
            runs,
            steps,
            kv,
            json,
        } => run(&blob, workers, runs, steps, kv, json),
        Cmd::KvReport {
            blob,
            text,
            max_tokens,
            shapes,
            json,
        } => kv_report(&blob, &text, max_tokens, &shapes, json),
    }
}

//! Benchmark: the badge's `no_std` tokenizer against the host `tokenizers` crate, encoding the
//! TinyStories valid sample story by story (characters per second), with identical ids checked.
//!
//! Usage: `cargo run --release --bin bench-tokenizer -- [SHARED_DIR] [--json]`;
//! `SHARED_DIR` defaults to $BADGE_SHARED or ../shared.

use anyhow::{bail, Context, Result};
use badge::data::tokenizer::BadgeTokenizer;
use std::path::PathBuf;
use std::time::Instant;

#[derive(serde::Serialize)]
struct Row {
    vocab_size: usize,
    train_seconds: f64,
    tokens_per_char: f64,
    host_chars_per_sec: f64,
    badge_chars_per_sec: f64,
    badge_over_host: f64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let shared = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("BADGE_SHARED").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared"));
    let dir = shared.join("data/tinystories");
    if !dir.exists() {
        bail!(
            "{} not found: pass the shared folder or set BADGE_SHARED",
            dir.display()
        );
    }
    let train = badge::data::read_stories(&dir.join("tinystories_train_sample.txt"))?;
    let valid = badge::data::read_stories(&dir.join("tinystories_valid_sample.txt"))?;
    let chars: usize = valid.iter().map(|s| s.chars().count()).sum();
    let mut rows = Vec::new();
    for vocab in [512usize, 1024] {
        let t0 = Instant::now();
        let tok = BadgeTokenizer::train(&train, vocab)?;
        let train_seconds = t0.elapsed().as_secs_f64();
        let stats = badge::data::tokenizer::stats(&tok, &valid)?;
        // The same tokenizer as the badge sees it: inside a blob.
        let mut c =
            badge::config::load_model_config(&PathBuf::from("configs/models/badge-tiny.toml"))
                .context("run from the repository root")?;
        c.vocab_size = vocab as u32;
        let weights = badge::train::model::parameter_shapes(&c)
            .into_iter()
            .map(|(n, s)| (n, vec![0.5f32; s.iter().product()]))
            .collect();
        let inputs = badge::export::BlobInputs {
            prompts: badge_firmware::prompts::PromptsSpec::default(),
            config: c,
            tokenizer: &tok,
            template: badge::config::DEFAULT_TEMPLATE,
            voice: Default::default(),
            kv_cache: badge_firmware::config::KvCacheKind::F32,
            group_size: 64,
            answers: None,
        };
        let (blob_bytes, _) = badge::export::build_blob(&inputs, &weights)?;
        let aligned = badge::util::AlignedBytes::from_slice(&blob_bytes);
        let blob = badge_firmware::format::Blob::parse(aligned.as_slice())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let fw = badge_firmware::tokenizer::Tokenizer::new(blob.tokenizer);
        let (mut host_rates, mut badge_rates) = (Vec::new(), Vec::new());
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let t = Instant::now();
            let mut n = 0;
            for s in &valid {
                n += tok.encode(s)?.len();
            }
            host_rates.push(chars as f64 / t.elapsed().as_secs_f64());
            let t = Instant::now();
            let mut m = 0;
            for s in &valid {
                out.clear();
                fw.encode_with(s, &mut out, &mut scratch);
                m += out.len();
            }
            badge_rates.push(chars as f64 / t.elapsed().as_secs_f64());
            if n != m {
                bail!("host and badge token counts differ ({n} vs {m})");
            }
        }
        let (h, b) = (
            badge::util::median(&mut host_rates),
            badge::util::median(&mut badge_rates),
        );
        rows.push(Row {
            vocab_size: vocab,
            train_seconds,
            tokens_per_char: stats.tokens_per_char,
            host_chars_per_sec: h,
            badge_chars_per_sec: b,
            badge_over_host: b / h,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{} valid stories, {} characters; medians of 5 runs",
            valid.len(),
            chars
        );
        println!(
            "{:>6} {:>9} {:>11} {:>16} {:>17} {:>11}",
            "vocab", "train s", "tokens/char", "host chars/s", "badge chars/s", "badge/host"
        );
        for r in &rows {
            println!(
                "{:>6} {:>9.2} {:>11.4} {:>16.0} {:>17.0} {:>10.2}x",
                r.vocab_size,
                r.train_seconds,
                r.tokens_per_char,
                r.host_chars_per_sec,
                r.badge_chars_per_sec,
                r.badge_over_host
            );
        }
    }
    Ok(())
}

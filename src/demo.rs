//! `badge demo`: the whole pipeline on the bundled example owner in one command: train the
//! tiny curriculum (tokenizer included), export the blob, ask questions through the badge's
//! engine, score trained and held-out questions, and speak the answers to WAV files.

use crate::answer::{Answerer, BlobAnswerer, BlobFile};
use crate::data::{read_qa_csv, QaPair};
use crate::export::{ExportFormat, ExportOptions, GroupSize};
use crate::train::TrainOptions;
use anyhow::{Context, Result};
use badge_firmware::generate::GenerateOptions;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub curriculum: PathBuf,
    pub out: PathBuf,
    /// Cap every phase at this many steps (a reduced demo for tests).
    pub max_steps: Option<usize>,
    /// Train with this seed instead of the curriculum's.
    pub seed: Option<u64>,
    pub questions: usize,
    pub quiet: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DemoAnswer {
    pub question: String,
    pub expected: String,
    pub answer: String,
    pub correct: bool,
    pub wav: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub run: PathBuf,
    pub blob: PathBuf,
    /// The badge's flash image with the blob (partition table and model; no firmware), for
    /// `badge sim --image`.
    pub image: PathBuf,
    pub asked: Vec<DemoAnswer>,
    pub trained: crate::answer::eval::Score,
    pub heldout: crate::answer::eval::Score,
    /// Off-topic questions (never calibrated on): `fallback` counts the right reaction.
    pub offtopic: Option<crate::answer::eval::Score>,
    pub seconds: f64,
}

/// Evenly spread picks, so the handful covers every category.
fn spread(pairs: &[QaPair], n: usize) -> Vec<QaPair> {
    if pairs.len() <= n {
        return pairs.to_vec();
    }
    (0..n).map(|i| pairs[i * pairs.len() / n].clone()).collect()
}

pub fn run(opts: &DemoOptions) -> Result<DemoReport> {
    let t0 = Instant::now();
    let run_dir = opts.out.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("clearing the previous demo run {}", run_dir.display()))?;
    }
    let curriculum = match opts.max_steps {
        Some(n) => {
            let mut text = crate::util::read_to_string(&opts.curriculum)?;
            let mut c: toml::Value = toml::from_str(&text)?;
            for p in c
                .get_mut("phase")
                .and_then(|p| p.as_array_mut())
                .into_iter()
                .flatten()
            {
                let steps = p.get("steps").and_then(|s| s.as_integer()).unwrap_or(0);
                p["steps"] = toml::Value::Integer(steps.min(n as i64));
            }
            text = toml::to_string(&c)?;
            let path = opts.curriculum.with_file_name(".demo-reduced.toml");
            crate::util::write_atomic(&path, text.as_bytes())?;
            path
        }
        None => opts.curriculum.clone(),
    };
    let step = |msg: &str| {
        if !opts.quiet {
            eprintln!("\n== {msg}");
        }
    };
    step(&format!(
        "1/4 training {} (tokenizer, stories, profile, Q&A)",
        opts.curriculum.display()
    ));
    let summary = crate::train::run(&TrainOptions {
        curriculum: Some(curriculum.clone()),
        out: run_dir.clone(),
        resume: false,
        device: candle_core::Device::Cpu,
        seed: opts.seed,
        download: false,
        strict: false,
        from_phase: None,
        stop_after: None,
        quiet: opts.quiet,
    });
    if opts.max_steps.is_some() {
        let _ = std::fs::remove_file(&curriculum);
    }
    let summary = summary?;
    if !opts.quiet {
        eprint!("{}", crate::train::summary_table(&summary));
    }

    step("2/4 exporting the Q8_0 blob");
    let blob_path = opts.out.join("badge.bin");
    let exported = crate::export::export(&ExportOptions {
        run: run_dir.clone(),
        checkpoint: None,
        out: blob_path.clone(),
        group_size: GroupSize::Auto(64),
        format: ExportFormat::Blob,
        kv_cache: None,
        max_rel_error: None,
        quality_samples: 0,
        free: false,
        keep_known: None,
        question_match: true,
        board: Some(PathBuf::from(crate::config::board::DEFAULT_BOARD)).filter(|p| p.exists()),
    })?;
    if !opts.quiet {
        eprintln!(
            "{} bytes, group size {}, worst relative RMSE {:.4} ({})",
            exported.bytes,
            exported.group_size,
            exported.report.worst_rel_rmse,
            exported.report.worst_tensor
        );
    }

    let image = opts.out.join("flash.bin");
    let board = crate::config::board::Board::load(Path::new(crate::config::board::DEFAULT_BOARD))?;
    crate::device::flash::write_image(&blob_path, &board, None, None, &image)?;

    step("3/4 asking the badge (int8 engine, the same code as on the chip)");
    let rc = crate::run::run_config(&crate::train::checkpoint::RunDir::new(&run_dir))?;
    let (trained, heldout) = owner_questions(&rc.curriculum)?;
    let file = BlobFile::read(&blob_path)?;
    let mut badge = BlobAnswerer::new(&file, 1, GenerateOptions::default())?;
    let voice = badge.blob.voice;
    let wav_dir = opts.out.join("answers");
    let mut asked = Vec::new();
    for (i, p) in spread(&trained, opts.questions).iter().enumerate() {
        let answer = badge.answer(&p.question)?;
        let correct = answer.trim() == p.answer.trim();
        let wav = wav_dir.join(format!("answer-{:02}.wav", i + 1));
        crate::answer::say::say_to_wav(&answer, &voice, false, &wav)?;
        if !opts.quiet {
            println!(
                "Q: {}\nA: {}   [{}]",
                p.question,
                answer,
                if correct { "right" } else { "WRONG" }
            );
        }
        asked.push(DemoAnswer {
            question: p.question.clone(),
            expected: p.answer.clone(),
            answer,
            correct,
            wav,
        });
    }

    step("4/4 scoring every trained and held-out question");
    let trained_score = crate::answer::eval::evaluate(&mut badge, &trained, |_| {})?.overall;
    let heldout_score = crate::answer::eval::evaluate(&mut badge, &heldout, |_| {})?.overall;
    let offtopic = match &rc.curriculum.answers.offtopic_test {
        Some(p) => {
            let q = crate::answer::known::read_questions(p)?;
            Some(crate::answer::eval::offtopic(&mut badge, &q)?.0)
        }
        None => None,
    };
    let report = DemoReport {
        run: run_dir,
        blob: blob_path,
        image,
        asked,
        trained: trained_score,
        heldout: heldout_score,
        offtopic,
        seconds: t0.elapsed().as_secs_f64(),
    };
    if !opts.quiet {
        print_epilogue(&report, &wav_dir);
    }
    Ok(report)
}

/// The trained and held-out questions of the curriculum's Q&A source about the owner: the
/// first one that teaches something besides the fallback line (a source of off-topic
/// questions taught to say the fallback is not asked here; the off-topic test list is).
fn owner_questions(c: &crate::config::Curriculum) -> Result<(Vec<QaPair>, Vec<QaPair>)> {
    let fallback = c.answers.fallback.trim();
    for s in c.sources.values() {
        let crate::config::SourceConfig::Qa { train, valid, .. } = s else {
            continue;
        };
        let trained = read_qa_csv(train)?;
        if trained.iter().all(|p| p.answer.trim() == fallback) {
            continue;
        }
        let heldout = match valid {
            Some(v) => read_qa_csv(v)?,
            None => Vec::new(),
        };
        return Ok((trained, heldout));
    }
    anyhow::bail!("the curriculum has no Q&A source about the owner to ask from")
}

fn print_epilogue(r: &DemoReport, wav_dir: &Path) {
    let right = r.asked.iter().filter(|a| a.correct).count();
    println!(
        "\nasked {} questions: {right} right\ntrained questions:   {}/{} exact ({:.1}%)\nheld-out questions:  {}/{} exact ({:.1}%), {} normalized, {} fallback ({:.1}%)",
        r.asked.len(),
        r.trained.exact,
        r.trained.total,
        100.0 * r.trained.exact_rate(),
        r.heldout.exact,
        r.heldout.total,
        100.0 * r.heldout.exact_rate(),
        r.heldout.normalized,
        r.heldout.fallback,
        100.0 * r.heldout.fallback_rate()
    );
    if let Some(o) = &r.offtopic {
        println!(
            "off-topic questions: {}/{} fallback ({:.1}%)",
            o.fallback,
            o.total,
            100.0 * o.fallback_rate()
        );
    }
    println!();
    println!(
        "run:     {}  (summary.json, metrics.jsonl, loss.svg, checkpoints/)",
        r.run.display()
    );
    println!("blob:    {}", r.blob.display());
    println!(
        "image:   {}  (badge sim --image {} --press short,short,long)",
        r.image.display(),
        r.image.display()
    );
    println!("answers: {}/answer-NN.wav", wav_dir.display());
    println!("took {:.0} s\n", r.seconds);
    println!("next steps:");
    println!(
        "  badge ask --model {} \"What is your email?\"",
        r.blob.display()
    );
    println!(
        "  badge train --curriculum configs/badge-1m.toml --out runs/me --download   # a real size"
    );
    println!("  badge flash --from runs/me --image flash.bin                               # a flash image for the badge");
}

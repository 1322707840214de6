//! `badge export`: a trained checkpoint → Q8_0 → the blob the badge loads (or llama2.c's
//! version-2 file), with the per-tensor error report.

use crate::data::tokenizer::BadgeTokenizer;
use crate::export::quant_report::{quantize_measured, QuantReport};
use crate::run::{FlatParams, Run};
use anyhow::{bail, Context, Result};
use badge_firmware::config::{KvCacheKind, ModelConfig, Voice};
use badge_firmware::format::{BlobSpec, BlobWriter, OwnedTensorData, TensorKind, TensorSpec};
use badge_firmware::quant;
use std::path::PathBuf;

/// How the group size was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSize {
    /// The largest power of two ≤ this that divides every row length.
    Auto(usize),
    /// Exactly this, or an error.
    Forced(usize),
}

/// Resolves the group size for a config; returns it and a note when it was lowered.
pub fn resolve_group_size(c: &ModelConfig, gs: GroupSize) -> Result<(usize, Option<String>)> {
    let rows = [c.dim as usize, c.hidden_dim as usize];
    match gs {
        GroupSize::Forced(n) => {
            quant::check_group_size(n, &rows)
                .map_err(|e| anyhow::anyhow!("--group-size {n}: {e}"))?;
            Ok((n, None))
        }
        GroupSize::Auto(n) => {
            let chosen = quant::choose_group_size(n, &rows).map_err(|e| anyhow::anyhow!("{e}"))?;
            let note = (chosen != n).then(|| {
                format!(
                    "group size {n} does not divide dim {} and hidden_dim {}: using {chosen}",
                    c.dim, c.hidden_dim
                )
            });
            Ok((chosen, note))
        }
    }
}

fn param_name(kind: TensorKind, layer: u32) -> String {
    if kind.is_per_layer() {
        format!("layers.{layer}.{}", kind.name())
    } else {
        kind.name().to_string()
    }
}

/// Everything a blob needs besides the weights.
pub struct BlobInputs<'a> {
    pub config: ModelConfig,
    pub tokenizer: &'a BadgeTokenizer,
    pub template: &'a str,
    pub voice: Voice,
    pub kv_cache: KvCacheKind,
    pub group_size: usize,
    /// What the button asks ([`crate::export::button_prompts::button_prompts`]).
    pub prompts: badge_firmware::prompts::PromptsSpec,
    /// The known answers and fallback line (None: open generation only).
    pub answers: Option<badge_firmware::answers::AnswersSpec>,
}

/// Quantizes every matrix and assembles the blob; returns its bytes and the error report.
pub fn build_blob(inputs: &BlobInputs<'_>, weights: &FlatParams) -> Result<(Vec<u8>, QuantReport)> {
    let c = &inputs.config;
    let gs = inputs.group_size;
    let mut tensors = Vec::new();
    let mut errors = Vec::new();
    let mut push = |kind: TensorKind, layer: u32| -> Result<()> {
        let name = param_name(kind, layer);
        let values = weights
            .get(&name)
            .with_context(|| format!("the checkpoint has no tensor {name}"))?;
        let (rows, cols) = kind.shape(c);
        if values.len() != rows * cols {
            bail!(
                "tensor {name} has {} values, the config needs {rows}x{cols}",
                values.len()
            );
        }
        let data = if kind.is_norm() {
            OwnedTensorData::F32(values.clone())
        } else {
            let (q, scales, error) = quantize_measured(&name, (rows, cols), values, gs);
            errors.push(error);
            OwnedTensorData::Q8 { q, scales }
        };
        tensors.push(TensorSpec {
            kind,
            layer,
            rows,
            cols,
            values: data,
        });
        Ok(())
    };
    push(TensorKind::TokenEmbedding, 0)?;
    for l in 0..c.n_layers {
        for kind in TensorKind::PER_LAYER {
            push(kind, l)?;
        }
    }
    push(TensorKind::FinalNorm, 0)?;
    let spec = BlobSpec {
        config: *c,
        group_size: gs as u32,
        kv_cache: inputs.kv_cache,
        voice: inputs.voice,
        bos_id: inputs.tokenizer.bos_id(),
        eos_id: inputs.tokenizer.eos_id(),
        tokenizer: inputs.tokenizer.to_spec()?,
        template: inputs.template.to_string(),
        prompts: inputs.prompts.clone(),
        answers: inputs.answers.clone(),
        tensors,
    };
    Ok((BlobWriter::write(&spec), QuantReport::new(gs, errors)))
}

/// Output formats of `badge export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The badge's blob (firmware/FORMAT.md).
    Blob,
    /// llama2.c's version-2 Q8_0 checkpoint plus tokenizer.bin beside it.
    Llama2c,
}

/// Options of `badge export`.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub run: PathBuf,
    pub checkpoint: Option<PathBuf>,
    pub out: PathBuf,
    pub group_size: GroupSize,
    pub format: ExportFormat,
    /// The KV cache the badge uses; `None` picks the most precise one that fits the board.
    pub kv_cache: Option<KvCacheKind>,
    pub max_rel_error: Option<f64>,
    pub board: Option<PathBuf>,
    /// Compare f32 and int8 on this many held-out texts and trained questions (0 = skip).
    pub quality_samples: usize,
    /// Store the known answers but make open generation the badge's default.
    pub free: bool,
    /// The share of held-out in-domain questions the threshold must still answer; `None`
    /// takes the curriculum's `[answers] keep_known`.
    pub keep_known: Option<f64>,
    /// Store the question match (`badge_firmware::question_match`); `false` leaves the
    /// choice between known answers to the model alone (`badge export --no-match`).
    pub question_match: bool,
}

/// What an export produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportResult {
    pub out: PathBuf,
    pub bytes: usize,
    pub group_size: usize,
    pub note: Option<String>,
    pub report: QuantReport,
    pub memory: Option<crate::config::board::MemoryPlan>,
    pub quality: Option<crate::export::quality::QualityReport>,
    /// The KV cache stored in the blob (None for llama2.c files).
    pub kv_cache: Option<KvCacheKind>,
    /// How many known answers the blob holds, and the bytes of its answers section.
    pub known_answers: Option<(usize, usize)>,
    /// The confidence threshold's calibration (None without off-topic questions).
    pub calibration: Option<crate::answer::known::Calibration>,
    /// What each button press makes the badge say (empty for llama2.c files).
    pub buttons: Vec<crate::export::button_prompts::ButtonAnswer>,
}

/// Picks the KV cache: the requested one, or (`None`) the most precise of f32, f16 and int8
/// whose memory plan fits the board. Errors name what overflows when nothing fits.
#[allow(clippy::type_complexity)]
fn choose_kv_cache(
    board: Option<&crate::config::board::Board>,
    blob_bytes: u64,
    cfg: &ModelConfig,
    gs: usize,
    requested: Option<KvCacheKind>,
) -> Result<(
    KvCacheKind,
    Option<crate::config::board::MemoryPlan>,
    Option<String>,
)> {
    let Some(board) = board else {
        return Ok((requested.unwrap_or(KvCacheKind::F32), None, None));
    };
    let candidates = match requested {
        Some(k) => vec![k],
        None => vec![KvCacheKind::F32, KvCacheKind::F16, KvCacheKind::Int8],
    };
    let mut last_error = None;
    for (i, kind) in candidates.iter().enumerate() {
        let state = badge_firmware::engine::RunStateSize::of(cfg, gs, *kind);
        let plan = crate::config::board::MemoryPlan::new(board, blob_bytes, state)?;
        match plan.check() {
            Ok(()) => {
                let note = (i > 0).then(|| {
                    format!(
                        "KV cache {} chosen: a more precise one does not fit board {}",
                        kv_name(*kind),
                        board.name
                    )
                });
                return Ok((*kind, Some(plan), note));
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .expect("at least one candidate")
        .context("the model does not fit the board; nothing was written"))
}

/// The name `--kv-cache` takes for a kind.
pub fn kv_name(kind: KvCacheKind) -> &'static str {
    match kind {
        KvCacheKind::F32 => "f32",
        KvCacheKind::F16 => "f16",
        KvCacheKind::Int8 => "int8",
    }
}

pub fn export(opts: &ExportOptions) -> Result<ExportResult> {
    let run = Run::load(&opts.run, opts.checkpoint.as_deref())?;
    let rc = &run.config;
    let keep_known = opts.keep_known.unwrap_or(rc.curriculum.answers.keep_known);
    let keep_known = crate::config::check_keep_known(keep_known).context("--keep-known")?;
    let cfg = rc.model;
    let weights = run.flat_weights()?;
    let tokenizer = &run.tokenizer;
    let (gs, note) = resolve_group_size(&cfg, opts.group_size)?;
    if opts.format == ExportFormat::Llama2c {
        let (bytes, report) =
            crate::export::llama2c::write(&opts.out, &cfg, &weights, tokenizer, gs)?;
        return Ok(ExportResult {
            out: opts.out.clone(),
            bytes,
            group_size: gs,
            note,
            report,
            memory: None,
            quality: None,
            kv_cache: None,
            known_answers: None,
            calibration: None,
            buttons: Vec::new(),
        });
    }
    let board = opts
        .board
        .as_deref()
        .map(crate::config::board::Board::load)
        .transpose()?;
    let prompts = crate::export::button_prompts::button_prompts(rc)?;
    let taught = crate::answer::known::taught_answers(rc, &run.dir.root.join("synth"))?;
    let mut answers = crate::answer::known::answers_spec(
        tokenizer,
        &rc.curriculum.template,
        &taught.answers,
        &rc.curriculum.answers.fallback,
        // Calibration needs the constrained decoder; the flag is set on the final build.
        false,
    )?;
    crate::answer::known::add_question_signals(
        &mut answers,
        tokenizer,
        &rc.curriculum.template,
        &taught,
    )?;
    if !opts.question_match {
        answers.match_questions.clear();
    }
    let build = |kv_cache, answers: &badge_firmware::answers::AnswersSpec| {
        let inputs = BlobInputs {
            prompts: prompts.clone(),
            config: cfg,
            tokenizer,
            template: &rc.curriculum.template,
            voice: rc.curriculum.voice.unwrap_or_default(),
            kv_cache,
            group_size: gs,
            answers: Some(answers.clone()),
        };
        build_blob(&inputs, &weights)
    };
    let (mut blob, report) = build(opts.kv_cache.unwrap_or(KvCacheKind::F32), &answers)?;
    if let Some(max) = opts.max_rel_error {
        if let Some(t) = report.tensors.iter().find(|t| t.rel_rmse > max) {
            bail!("tensor {} has relative RMSE {:.5}, above --max-rel-error {max}; nothing was written", t.name, t.rel_rmse);
        }
    }
    let (kv_cache, memory, kv_note) =
        choose_kv_cache(board.as_ref(), blob.len() as u64, &cfg, gs, opts.kv_cache)?;
    if kv_cache != opts.kv_cache.unwrap_or(KvCacheKind::F32) {
        // Only the header field differs; rebuilding keeps the writer the one place that knows it.
        blob = build(kv_cache, &answers)?.0;
    }
    let calibration = match &rc.curriculum.answers.offtopic {
        Some(path) if !taught.heldout_questions.is_empty() => {
            let offtopic = crate::answer::known::read_questions(path)?;
            let c = calibrate_blob(&blob, &taught, &offtopic, keep_known)?;
            answers.measure = c.measure();
            answers.threshold = c.threshold();
            Some(c)
        }
        _ => None,
    };
    answers.free_by_default = opts.free;
    if calibration.is_some() || opts.free {
        blob = build(kv_cache, &answers)?.0;
    }
    let note = match (note, calibration.is_none()) {
        (n, true) => Some(
            n.map_or(String::new(), |n| format!("{n}; "))
                + "no off-topic questions ([answers] offtopic) or held-out synth questions to calibrate on: the badge never says its fallback line",
        ),
        (n, false) => n,
    };
    let note = match (note, kv_note) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
    crate::util::write_atomic(&opts.out, &blob)?;
    let buttons = crate::export::button_prompts::button_answers(&blob, &prompts)?;
    let quality = match opts.quality_samples {
        0 => None,
        n => Some(crate::export::quality::measure(&run, &opts.out, n, n)?),
    };
    let answers_bytes = badge_firmware::answers::write_answers(&answers).len();
    let memory = memory.map(|mut m| {
        m.answers_bytes = answers_bytes as u64;
        m
    });
    Ok(ExportResult {
        known_answers: Some((taught.answers.len(), answers_bytes)),
        calibration,
        buttons,
        kv_cache: Some(kv_cache),
        quality,
        out: opts.out.clone(),
        bytes: blob.len(),
        group_size: gs,
        note,
        report,
        memory,
    })
}

/// Asks the blob (known-answer decoding, never falling back) the calibration questions
/// ([`crate::answer::known::calibrate_answerer`]) and fits the confidence threshold.
fn calibrate_blob(
    blob: &[u8],
    taught: &crate::answer::known::TaughtAnswers,
    offtopic: &[String],
    keep_known: f64,
) -> Result<crate::answer::known::Calibration> {
    let file = crate::answer::BlobFile::from_bytes(blob)?;
    let mut badge = crate::answer::BlobAnswerer::new(&file, 1, Default::default())?;
    crate::answer::known::calibrate_answerer(&mut badge, taught, offtopic, keep_known)
}

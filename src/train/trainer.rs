//! `badge train`: the three-phase curriculum (stories → profile → Q&A) with checkpoints,
//! resumption, metrics, evaluation, a summary and a loss plot.

use crate::config::{Curriculum, PhaseConfig, ResolvedCurriculum};
use crate::data::tokenizer::BadgeTokenizer;
use crate::data::{self, SourceData, TokenStream};
use crate::train::checkpoint::{self, Progress, RunDir};
use crate::train::metrics::{append_metric, read_metrics, MetricLine};
use crate::train::model::{self, Params, Transformer};
use crate::train::optim::AdamW;
use anyhow::{bail, Context, Result};
use badge_firmware::template::PromptTemplate;
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Options of one `badge train` invocation.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub curriculum: Option<PathBuf>,
    pub out: PathBuf,
    pub resume: bool,
    pub device: Device,
    pub seed: Option<u64>,
    pub download: bool,
    pub strict: bool,
    /// Restart from this phase (by name), starting from the previous phase's final checkpoint.
    pub from_phase: Option<String>,
    /// Stop (as if interrupted) after this many optimizer steps in total: for tests of resume.
    pub stop_after: Option<u64>,
    pub quiet: bool,
}

/// Per-phase results in `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub name: String,
    pub steps: usize,
    /// Mean train loss over the last 10% of the phase's steps.
    pub final_train_loss: f64,
    /// Held-out loss per dataset at the end of the phase.
    pub eval_loss: BTreeMap<String, f64>,
    pub max_loss: Option<f64>,
    pub passed: bool,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub curriculum: String,
    pub parameters: u64,
    pub phases: Vec<PhaseSummary>,
    pub all_passed: bool,
}

/// Tokenized data of every source: train and held-out streams.
pub struct Prepared {
    pub tokenizer: BadgeTokenizer,
    pub sources: BTreeMap<String, SourceData>,
    pub valid_streams: BTreeMap<String, TokenStream>,
}

/// Loads every source and the tokenizer (training one into the run when the curriculum names
/// none and the run has none yet).
pub fn prepare(rc: &ResolvedCurriculum, run: &RunDir, download: bool) -> Result<Prepared> {
    let c = &rc.curriculum;
    let template =
        PromptTemplate::parse(&c.template).map_err(|e| anyhow::anyhow!("template: {e}"))?;
    let held_out = data::held_out::HeldOut::of_curriculum(c)?;
    let mut sources = BTreeMap::new();
    for (name, cfg) in &c.sources {
        let synth_dir = run.root.join("synth").join(name);
        let d = data::load_source(cfg, &template, &synth_dir, download, &held_out)
            .with_context(|| format!("loading data source `{name}`"))?;
        if d.held_out_dropped > 0 {
            eprintln!(
                "source `{name}`: {} generated questions left out of training: they read as \
                 held-out or calibration questions",
                d.held_out_dropped
            );
        }
        sources.insert(name.clone(), d);
    }
    let tokenizer = if run.tokenizer().exists() {
        BadgeTokenizer::load(&run.tokenizer())?
    } else if let Some(p) = &c.tokenizer.path {
        let t = BadgeTokenizer::load(p)?;
        t.save(&run.tokenizer())?;
        t
    } else {
        let names: Vec<String> = c
            .tokenizer
            .train_on
            .clone()
            .unwrap_or_else(|| sources.keys().cloned().collect());
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("training the tokenizer: {bytes} of text {elapsed}")
                .expect("valid template"),
        );
        let mut texts = Vec::new();
        for n in &names {
            let s = sources
                .get(n)
                .with_context(|| format!("tokenizer.train_on names unknown source `{n}`"))?;
            texts.push(first_bytes(
                s.train_texts()?,
                c.tokenizer.sample_bytes,
                &bar,
            ));
        }
        let t = BadgeTokenizer::train_streamed(
            texts.into_iter().flatten(),
            c.tokenizer.vocab_size,
            c.tokenizer.split_digits,
        )?;
        bar.finish_and_clear();
        t.save(&run.tokenizer())?;
        t
    };
    if tokenizer.vocab_size() != rc.model.vocab_size as usize {
        bail!(
            "the tokenizer has {} tokens but the model's vocab_size is {}",
            tokenizer.vocab_size(),
            rc.model.vocab_size
        );
    }
    data::attach_token_caches(&mut sources, &run.root.join("tokens"), &tokenizer)?;
    let mut valid_streams = BTreeMap::new();
    for (name, d) in &sources {
        if !d.valid.is_empty() {
            valid_streams.insert(
                name.clone(),
                TokenStream::build(&tokenizer, &d.valid, 1, 0)?,
            );
        }
    }
    Ok(Prepared {
        tokenizer,
        sources,
        valid_streams,
    })
}

/// The texts of `texts` up to the one that reaches `max_bytes` in all, counted on `bar`.
fn first_bytes<'a>(
    texts: impl Iterator<Item = Result<String>> + Send + 'a,
    max_bytes: u64,
    bar: &'a ProgressBar,
) -> impl Iterator<Item = Result<String>> + Send + 'a {
    let mut taken = 0u64;
    texts
        .take_while(move |t| {
            let more = taken < max_bytes;
            if let Ok(t) = t {
                taken = taken.saturating_add(t.len() as u64);
            }
            more
        })
        .inspect(|t| {
            if let Ok(t) = t {
                bar.inc(t.len() as u64);
            }
        })
}

/// The deterministic batch of (phase, step): the RNG is derived from them, so a resumed run
/// draws exactly the batches the uninterrupted run would have.
fn batch(
    streams: &[(TokenStream, f64)],
    seed: u64,
    phase: usize,
    step: usize,
    rows: usize,
    seq_len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mut rng = StdRng::seed_from_u64(
        seed ^ ((phase as u64) << 48) ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let total: f64 = streams.iter().map(|s| s.1).sum();
    let (mut ids, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    let (mut win, mut win_mask) = (Vec::new(), Vec::new());
    for _ in 0..rows {
        let mut pick = rng.random::<f64>() * total;
        let mut chosen = &streams[streams.len() - 1].0;
        for (s, w) in streams {
            if pick < *w {
                chosen = s;
                break;
            }
            pick -= w;
        }
        let start = chosen.starts[rng.random_range(0..chosen.starts.len())];
        win.clear();
        win_mask.clear();
        chosen.window(start, seq_len + 1, &mut win, &mut win_mask);
        ids.extend_from_slice(&win[..seq_len]);
        targets.extend_from_slice(&win[1..]);
        mask.extend(win_mask[1..].iter().map(|&m| f32::from(m)));
    }
    Ok((
        Tensor::from_vec(ids, (rows, seq_len), device)?,
        Tensor::from_vec(targets, (rows, seq_len), device)?,
        Tensor::from_vec(mask, (rows, seq_len), device)?,
    ))
}

/// Mean held-out loss of a stream: windows at its first sample starts, in fixed order.
pub fn eval_loss(
    model: &Transformer,
    stream: &TokenStream,
    seq_len: usize,
    max_windows: usize,
    device: &Device,
) -> Result<f64> {
    let starts: Vec<usize> = stream.starts.iter().copied().take(max_windows).collect();
    let (mut total, mut count) = (0.0, 0.0);
    for chunk in starts.chunks(16) {
        let (mut ids, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for &s in chunk {
            let (mut w, mut m) = (Vec::new(), Vec::new());
            stream.window(s, seq_len + 1, &mut w, &mut m);
            ids.extend_from_slice(&w[..seq_len]);
            targets.extend_from_slice(&w[1..]);
            mask.extend(m[1..].iter().map(|&x| f32::from(x)));
        }
        let n = mask.iter().sum::<f32>() as f64;
        let rows = chunk.len();
        let loss = model.loss(
            &Tensor::from_vec(ids, (rows, seq_len), device)?,
            &Tensor::from_vec(targets, (rows, seq_len), device)?,
            &Tensor::from_vec(mask, (rows, seq_len), device)?,
        )?;
        total += f64::from(loss.to_scalar::<f32>()?) * n;
        count += n;
    }
    Ok(if count > 0.0 { total / count } else { f64::NAN })
}

fn eval_all(
    model: &Transformer,
    prep: &Prepared,
    seq_len: usize,
    device: &Device,
) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for (name, s) in &prep.valid_streams {
        out.insert(name.clone(), eval_loss(model, s, seq_len, 32, device)?);
    }
    Ok(out)
}

/// Runs (or resumes) a curriculum. Returns the summary.
pub fn run(opts: &TrainOptions) -> Result<Summary> {
    let run = RunDir::new(&opts.out);
    let rc: ResolvedCurriculum = if opts.resume {
        let text = crate::util::read_to_string(&run.config())
            .context("--resume needs a run directory made by `badge train`")?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: corrupt run config", run.config().display()))?
    } else {
        let path = opts
            .curriculum
            .as_ref()
            .context("give --curriculum FILE (or --resume to continue a run)")?;
        let mut rc = Curriculum::load(path)?;
        if let Some(seed) = opts.seed {
            rc.curriculum.seed = seed;
        }
        if run.progress().exists() && opts.from_phase.is_none() {
            bail!(
                "{} already holds a run; continue it with `badge train --resume {}`, or choose another --out",
                opts.out.display(),
                opts.out.display()
            );
        }
        std::fs::create_dir_all(run.checkpoints())
            .with_context(|| format!("creating {}", run.checkpoints().display()))?;
        crate::util::write_atomic(&run.config(), serde_json::to_string_pretty(&rc)?.as_bytes())?;
        rc
    };
    let c = &rc.curriculum;
    let cfg = rc.model;
    let device = &opts.device;
    let prep = prepare(&rc, &run, opts.download)?;
    let seq_len = cfg.seq_len as usize;

    // Where to start.
    let (params, mut opt, start) = match (opts.resume, &opts.from_phase) {
        (true, _) => {
            let p = run
                .read_progress()?
                .context("this run has no checkpoint yet: start it again without --resume")?;
            let (params, opt) =
                checkpoint::load_with_optimizer(&run.latest(), &cfg, device, p.optimizer_step)?;
            (params, opt, p)
        }
        (false, Some(name)) => {
            let idx = c
                .phase
                .iter()
                .position(|p| &p.name == name)
                .with_context(|| format!("no phase named `{name}` in the curriculum"))?;
            let params = if idx == 0 {
                model::init_params(&cfg, c.seed, device)?
            } else {
                let prev = run.phase_final(&c.phase[idx - 1].name);
                checkpoint::load_params(&prev, &cfg, device).with_context(|| {
                    format!(
                        "phase `{name}` starts from the previous phase's final checkpoint {}",
                        prev.display()
                    )
                })?
            };
            let opt = AdamW::new(&params)?;
            (
                params,
                opt,
                Progress {
                    phase: idx,
                    step: 0,
                    optimizer_step: 0,
                },
            )
        }
        (false, None) => {
            let params = model::init_params(&cfg, c.seed, device)?;
            let opt = AdamW::new(&params)?;
            (
                params,
                opt,
                Progress {
                    phase: 0,
                    step: 0,
                    optimizer_step: 0,
                },
            )
        }
    };

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        // A second handler registration (tests run several trainings) is harmless to ignore.
        let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    }

    let mut summaries: Vec<PhaseSummary> = read_summary(&run).map(|s| s.phases).unwrap_or_default();
    summaries.truncate(start.phase);
    for (pi, phase) in c.phase.iter().enumerate().skip(start.phase) {
        let first_step = if pi == start.phase { start.step } else { 0 };
        if pi > start.phase || first_step == 0 {
            // Each phase gets fresh optimizer moments (its own learning-rate schedule).
            opt = AdamW::new(&params)?;
        }
        let t0 = Instant::now();
        let streams: Vec<(TokenStream, f64)> = phase
            .mix
            .iter()
            .map(|m| {
                let d = &prep.sources[&m.source];
                if d.has_no_train() {
                    bail!(
                        "phase `{}`: source `{}` has no training samples",
                        phase.name,
                        m.source
                    );
                }
                Ok((
                    d.train_stream(&prep.tokenizer, m.repeat, c.seed ^ pi as u64)?,
                    m.weight,
                ))
            })
            .collect::<Result<_>>()?;
        let model = model::build(&cfg, &params, device)?;
        let bar = progress_bar(phase, first_step, opts.quiet);
        // The last step always evaluates; the phase summary reuses that result.
        let mut final_eval = None;
        for step in first_step..phase.steps {
            if interrupted.load(Ordering::SeqCst)
                || opts
                    .stop_after
                    .is_some_and(|n| global_offset(c, pi) + step as u64 >= n)
            {
                bar.abandon_with_message("interrupted");
                save_progress(&run, &params, &opt, pi, step)?;
                bail!(Interrupted {
                    run: opts.out.clone()
                });
            }
            let ts = Instant::now();
            let (ids, targets, mask) = batch(
                &streams,
                c.seed,
                pi,
                step,
                phase.batch_size,
                seq_len,
                device,
            )?;
            let loss = model.loss(&ids, &targets, &mask)?;
            let loss_value = f64::from(loss.to_scalar::<f32>()?);
            if !loss_value.is_finite() {
                bar.abandon();
                bail!(
                    "phase `{}` step {step}: the loss became {loss_value}; stopped. The last good checkpoint is {} (try a lower lr or a grad_clip)",
                    phase.name,
                    run.latest().display()
                );
            }
            let grads = model.backward(&loss)?;
            let lr = phase.lr_at(step);
            let info = opt.step(&params, &grads, lr, phase.weight_decay, phase.grad_clip)?;
            let tps = (phase.batch_size * seq_len) as f64 / ts.elapsed().as_secs_f64();
            let done = step + 1;
            let mut line = MetricLine {
                phase: phase.name.clone(),
                step: done,
                global_step: global_offset(c, pi) + done as u64,
                loss: loss_value,
                lr,
                tokens_per_sec: tps,
                grad_norm: info.grad_norm,
                eval: BTreeMap::new(),
            };
            if done % phase.eval_every == 0 || done == phase.steps {
                line.eval = eval_all(&model, &prep, seq_len, device)?;
                if done == phase.steps {
                    final_eval = Some(line.eval.clone());
                }
            }
            append_metric(&run.metrics(), &line)?;
            bar.set_position(done as u64);
            bar.set_message(format!("loss {loss_value:.4}  lr {lr:.2e}  {tps:.0} tok/s"));
            if done % phase.checkpoint_every == 0 && done < phase.steps {
                save_progress(&run, &params, &opt, pi, done)?;
            }
        }
        bar.finish();
        let eval = match final_eval {
            Some(e) => e,
            None => eval_all(&model, &prep, seq_len, device)?,
        };
        let tail = (phase.steps / 10).max(1);
        let metrics = read_metrics(&run.metrics())?;
        let phase_losses: Vec<f64> = metrics
            .iter()
            .filter(|m| m.phase == phase.name)
            .map(|m| m.loss)
            .collect();
        let last: Vec<f64> = phase_losses.iter().rev().take(tail).copied().collect();
        let final_train_loss = last.iter().sum::<f64>() / last.len().max(1) as f64;
        let passed = phase.max_loss.is_none_or(|m| final_train_loss <= m);
        summaries.push(PhaseSummary {
            name: phase.name.clone(),
            steps: phase.steps,
            final_train_loss,
            eval_loss: eval,
            max_loss: phase.max_loss,
            passed,
            seconds: t0.elapsed().as_secs_f64(),
        });
        checkpoint::save(&run.phase_final(&phase.name), &params, None)?;
        save_progress(&run, &params, &opt, pi + 1, 0)?;
        write_summary(&run, c, &cfg, &summaries)?;
        if !opts.quiet {
            eprintln!(
                "phase {} done: train loss {final_train_loss:.4}{}",
                phase.name,
                match phase.max_loss {
                    Some(m) if !passed => format!("  MISSED its max_loss {m}"),
                    Some(m) => format!("  (max_loss {m}: passed)"),
                    None => String::new(),
                }
            );
        }
        if !passed && opts.strict {
            bail!("phase `{}` missed its success criterion: loss {final_train_loss:.4} > max_loss {:?} (--strict)", phase.name, phase.max_loss);
        }
    }
    checkpoint::save(&run.final_weights(), &params, None)?;
    let summary = write_summary(&run, c, &cfg, &summaries)?;
    if let Err(e) =
        crate::train::plot::loss_svg(&read_metrics(&run.metrics())?, &run.root.join("loss.svg"))
    {
        eprintln!("warning: could not draw loss.svg: {e:#}");
    }
    Ok(summary)
}

/// Steps of the phases before `phase` (so the global step keeps growing across phases).
fn global_offset(c: &Curriculum, phase: usize) -> u64 {
    c.phase[..phase].iter().map(|p| p.steps as u64).sum()
}

/// Error returned when training stopped on request; `--resume` continues.
#[derive(Debug)]
pub struct Interrupted {
    pub run: PathBuf,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "training interrupted; checkpoint saved. Continue with: badge train --resume {}",
            self.run.display()
        )
    }
}
impl std::error::Error for Interrupted {}

fn save_progress(
    run: &RunDir,
    params: &Params,
    opt: &AdamW,
    phase: usize,
    step: usize,
) -> Result<()> {
    checkpoint::save(&run.latest(), params, Some(opt))?;
    run.write_progress(&Progress {
        phase,
        step,
        optimizer_step: opt.step,
    })
}

fn progress_bar(phase: &PhaseConfig, first: usize, quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(phase.steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(phase.name.clone());
    bar.set_position(first as u64);
    bar
}

fn read_summary(run: &RunDir) -> Option<Summary> {
    serde_json::from_str(&std::fs::read_to_string(run.summary()).ok()?).ok()
}

fn write_summary(
    run: &RunDir,
    c: &Curriculum,
    cfg: &badge_firmware::config::ModelConfig,
    phases: &[PhaseSummary],
) -> Result<Summary> {
    let s = Summary {
        curriculum: c.name.clone(),
        parameters: cfg.parameter_count(),
        phases: phases.to_vec(),
        all_passed: phases.iter().all(|p| p.passed),
    };
    crate::util::write_atomic(&run.summary(), serde_json::to_string_pretty(&s)?.as_bytes())?;
    Ok(s)
}

/// The loss table of a summary (the published recipe's per-dataset table).
pub fn summary_table(s: &Summary) -> String {
    let datasets: std::collections::BTreeSet<&String> =
        s.phases.iter().flat_map(|p| p.eval_loss.keys()).collect();
    let mut out = format!("{:<10} {:>6} {:>11}", "phase", "steps", "train loss");
    for d in &datasets {
        out += &format!(" {:>12}", format!("eval {d}"));
    }
    out += &format!(" {:>9} {:>8} {:>7}\n", "max_loss", "result", "secs");
    for p in &s.phases {
        out += &format!("{:<10} {:>6} {:>11.4}", p.name, p.steps, p.final_train_loss);
        for d in &datasets {
            out += &format!(
                " {:>12}",
                p.eval_loss
                    .get(*d)
                    .map_or("-".to_string(), |v| format!("{v:.4}"))
            );
        }
        out += &format!(
            " {:>9} {:>8} {:>7.1}\n",
            p.max_loss.map_or("-".into(), |m| format!("{m}")),
            if p.passed { "ok" } else { "MISSED" },
            p.seconds
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokenizer_sample_stops_after_the_text_that_reaches_the_limit() {
        let texts = ["aaaa", "bbbb", "cccc", "dddd"].map(|t| Ok(t.to_string()));
        let bar = ProgressBar::hidden();
        let got: Vec<String> = first_bytes(texts.into_iter(), 6, &bar)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            got,
            ["aaaa", "bbbb"],
            "4 < 6 bytes after one text, 8 after two"
        );
        assert_eq!(bar.position(), 8);
        let all = ["x"].map(|t| Ok(t.to_string()));
        assert_eq!(first_bytes(all.into_iter(), 0, &bar).count(), 0);
    }
}

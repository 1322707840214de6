//! The bodies of the subcommands that print: each calls one stage and formats its result.

use super::{GenArgs, MemoryArgs, TokenizerCmd};
use anyhow::{bail, Context, Result};
use badge::answer::{Answerer, BlobAnswerer, BlobFile, CandleAnswerer};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

fn texts_of(inputs: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for p in inputs {
        if p.is_dir() {
            texts.extend(badge::data::read_prose_dir(p)?);
        } else if p.extension().is_some_and(|e| e == "csv") {
            texts.extend(
                badge::data::read_qa_csv(p)?
                    .into_iter()
                    .map(|q| format!("{}\n{}", q.question, q.answer)),
            );
        } else {
            texts.extend(badge::data::read_stories(p)?);
        }
    }
    Ok(texts)
}

pub fn tokenizer(cmd: TokenizerCmd) -> Result<()> {
    match cmd {
        TokenizerCmd::Train {
            vocab_size,
            input,
            out,
            split_digits,
        } => {
            let t0 = Instant::now();
            let texts = texts_of(&input)?;
            let tok = badge::data::tokenizer::BadgeTokenizer::train_with(
                &texts,
                vocab_size,
                split_digits,
            )?;
            tok.save(&out)?;
            eprintln!(
                "trained {} tokens on {} texts in {:.2} s → {}",
                tok.vocab_size(),
                texts.len(),
                t0.elapsed().as_secs_f64(),
                out.display()
            );
            Ok(())
        }
        TokenizerCmd::Stats {
            tokenizer,
            input,
            json,
        } => {
            let tok = badge::data::tokenizer::BadgeTokenizer::load(&tokenizer)?;
            let s = badge::data::tokenizer::stats(&tok, &texts_of(&input)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "vocab size        {}\ntexts             {}\ncharacters        {}\ntokens            {}\ntokens/char       {:.4}\nbyte fallbacks    {}",
                    s.vocab_size, s.texts, s.chars, s.tokens, s.tokens_per_char, s.byte_fallback_tokens
                );
            }
            Ok(())
        }
    }
}

pub fn export(opts: &badge::export::ExportOptions, json: bool, csv: Option<&Path>) -> Result<()> {
    let r = badge::export::export(opts)?;
    if let Some(p) = csv {
        badge::util::write_atomic(p, r.report.csv()?.as_bytes())?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    if let Some(n) = &r.note {
        eprintln!("note: {n}");
    }
    print!("{}", r.report.table());
    if let Some(q) = &r.quality {
        print!("\n{}", q.table());
    }
    if let Some(m) = &r.memory {
        print!("\n{}", m.table());
    }
    if let Some((n, bytes)) = r.known_answers {
        println!(
            "\nknown answers: {n} ({bytes} bytes in the blob){}",
            if opts.free {
                "; open generation by default (--free)"
            } else {
                ""
            }
        );
    }
    if let Some(c) = &r.calibration {
        print!("{}", c.table());
    }
    print_button_answers(&r.buttons);
    match r.kv_cache {
        Some(kv) => println!(
            "\nwrote {} ({} bytes, KV cache {})",
            r.out.display(),
            r.bytes,
            badge::export::kv_name(kv)
        ),
        None => println!("\nwrote {} ({} bytes)", r.out.display(), r.bytes),
    }
    Ok(())
}

/// The button's presses and what the badge answers them, with a warning for each press that
/// gets the fallback line (a visitor pressing the button would hear "I don't know").
fn print_button_answers(buttons: &[badge::export::button_prompts::ButtonAnswer]) {
    if buttons.is_empty() {
        return;
    }
    println!("\nbutton presses:");
    for b in buttons {
        println!("  {:<7} {}  ->  {}", b.press, b.question, b.answer);
    }
    for b in buttons.iter().filter(|b| b.fallback) {
        eprintln!(
            "warning: the button's {} ({:?}) gets the fallback line: add that question to the \
             Q&A, or set [buttons] in the curriculum to questions the badge answers",
            b.press, b.question
        );
    }
}

pub fn inspect(
    model: &Path,
    report: bool,
    against: Option<&Path>,
    board: &Path,
    json: bool,
) -> Result<()> {
    if report && against.is_none() {
        bail!("--report needs --against runs/NAME: the blob holds only the quantized weights, the run holds the originals");
    }
    let i = badge::export::inspect::inspect(model, Some(board).filter(|b| b.exists()), against)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&i)?);
    } else {
        print!("{}", i.table());
    }
    Ok(())
}

/// Runs `f` with an answerer for `model`: a blob through the int8 engine, or a run directory
/// through candle (`--engine candle`).
fn with_answerer(
    model: &Path,
    gen: &GenArgs,
    mem: &MemoryArgs,
    f: &mut dyn FnMut(&mut dyn Answerer) -> Result<()>,
) -> Result<()> {
    match gen.engine.as_str() {
        "int8" => {
            if model.is_dir() {
                bail!("{} is a run directory: export it first (badge export --from {} --out model.bin) or use --engine candle", model.display(), model.display());
            }
            let file = BlobFile::read(model)
                .with_context(|| format!("opening model {}", model.display()))?;
            let mut a = BlobAnswerer::with_memory_limit(
                &file,
                gen.workers,
                gen.options(),
                mem.run_state_limit()?,
            )
            .with_context(|| format!("model {}", model.display()))?;
            f(&mut a)
        }
        "candle" => f(&mut *candle(model, gen.options())?),
        other => bail!("unknown engine `{other}`: use int8 or candle"),
    }
}

/// The f32 checkpoint of a run: known-answer decoding (calibrated like the blob) unless
/// `options.free`.
fn candle(
    run_dir: &Path,
    options: badge_firmware::generate::GenerateOptions,
) -> Result<Box<CandleAnswerer>> {
    let run = badge::run::Run::load(run_dir, None)?;
    Ok(Box::new(if options.free {
        let mut a = CandleAnswerer::from_run(&run, options.max_new_tokens)?;
        a.options = options;
        a
    } else {
        badge::answer::known::candle_known(&run, options)?
    }))
}

fn ask_one(a: &mut dyn Answerer, question: &str) -> Result<String> {
    let t0 = Instant::now();
    let mut answer = String::new();
    let stdout = std::io::stdout();
    let stats = a.answer_streaming(question, &mut |piece| {
        answer.push_str(piece);
        let mut out = stdout.lock();
        let _ = out.write_all(piece.as_bytes());
        let _ = out.flush();
    })?;
    println!();
    let secs = t0.elapsed().as_secs_f64();
    let how = match (stats.outcome, stats.confidence) {
        (badge_firmware::generate::Outcome::Free, _) => "open generation".to_string(),
        (o, Some(c)) => format!(
            "{} (mean log-prob {:.3}, first-branch margin {:.3}, answer log-prob {:.3}, question match {:.3}, novelty plus match {:.3})",
            if o == badge_firmware::generate::Outcome::Known {
                "known answer"
            } else {
                "fallback"
            },
            c.mean_log_prob,
            c.first_branch_margin,
            c.answer_log_prob,
            c.answer_match,
            c.novelty_plus_match
        ),
        (_, None) => "fallback".to_string(),
    };
    eprintln!(
        "[{} prompt + {} generated tokens in {:.3} s: {:.1} tok/s; stop: {:?}; {how}]",
        stats.prompt_tokens,
        stats.generated_tokens,
        secs,
        (stats.prompt_tokens + stats.generated_tokens) as f64 / secs,
        stats.stop
    );
    Ok(answer)
}

pub fn ask(
    model: &Path,
    question: &str,
    gen: &GenArgs,
    mem: &MemoryArgs,
    speak: Option<&Path>,
) -> Result<()> {
    let mut voice = badge_firmware::sam::Voice::default();
    with_answerer(model, gen, mem, &mut |a| {
        let answer = ask_one(a, question)?;
        if let Some(wav) = speak {
            if let Ok(file) = BlobFile::read(model) {
                voice = file.blob().voice;
            }
            let n = badge::answer::say::say_to_wav(&answer, &voice, false, wav)?;
            eprintln!("spoke {n} samples to {}", wav.display());
        }
        Ok(())
    })
}

pub fn chat(model: &Path, gen: &GenArgs, mem: &MemoryArgs) -> Result<()> {
    with_answerer(model, gen, mem, &mut |a| {
        let stdin = std::io::stdin();
        loop {
            eprint!("> ");
            let mut line = String::new();
            if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
                return Ok(());
            }
            ask_one(a, line.trim())?;
        }
    })
}

/// What `badge eval` reports: the Q&A scores, and the off-topic fallbacks when asked.
#[derive(serde::Serialize)]
struct EvalOutput {
    #[serde(flatten)]
    qa: badge::answer::eval::EvalReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    offtopic: Option<badge::answer::eval::Score>,
}

pub fn eval(
    model: &Path,
    qa: &Path,
    offtopic: Option<&Path>,
    free: bool,
    misses: usize,
    json: bool,
    mem: &MemoryArgs,
) -> Result<()> {
    let pairs = badge::data::read_qa_csv(qa)?;
    let off = offtopic
        .map(badge::answer::known::read_questions)
        .transpose()?;
    let bar = indicatif::ProgressBar::new(pairs.len() as u64);
    let mut off_misses = Vec::new();
    let mut run = |a: &mut dyn Answerer| -> Result<EvalOutput> {
        let qa = badge::answer::eval::evaluate(a, &pairs, |i| bar.set_position(i as u64))?;
        let offtopic = match &off {
            Some(q) => {
                let (score, answered) = badge::answer::eval::offtopic(a, q)?;
                off_misses = answered;
                Some(score)
            }
            None => None,
        };
        Ok(EvalOutput { qa, offtopic })
    };
    let options = badge_firmware::generate::GenerateOptions {
        free,
        ..Default::default()
    };
    let report = if model.is_dir() {
        run(&mut *candle(model, options)?)?
    } else {
        let file = BlobFile::read(model)?;
        let limit = mem.run_state_limit()?;
        run(
            &mut BlobAnswerer::with_memory_limit(&file, 1, options, limit)
                .with_context(|| format!("model {}", model.display()))?,
        )?
    };
    bar.finish_and_clear();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.qa.table(misses));
        if let Some(o) = &report.offtopic {
            println!(
                "\noff-topic: {}/{} answered with the fallback line ({:.1}%)",
                o.fallback,
                o.total,
                100.0 * o.fallback_rate()
            );
            for m in off_misses.iter().take(misses) {
                println!("  {}\n      got: {}", m.question, m.got);
            }
        }
        if model.is_dir() {
            if let Ok(s) = std::fs::read_to_string(model.join("summary.json")) {
                if let Ok(s) = serde_json::from_str::<badge::train::Summary>(&s) {
                    print!("\nper-dataset loss:\n{}", badge::train::summary_table(&s));
                }
            }
        }
    }
    Ok(())
}

/// `badge flash`: a merged image file, or the badge over its serial port.
#[allow(clippy::too_many_arguments)]
pub fn flash(
    model: &Path,
    board: &Path,
    image: Option<&Path>,
    app: Option<&Path>,
    bootloader: Option<&Path>,
    port: Option<String>,
    baud: u32,
    no_reset: bool,
) -> Result<()> {
    let board = badge::config::board::Board::load(board)?;
    if let Some(img) = image {
        badge::device::flash::write_image(model, &board, app, bootloader, img)?;
        println!(
            "wrote flash image {} (try it: badge sim --image {})",
            img.display(),
            img.display()
        );
        return Ok(());
    }
    use badge::device::flash::{ResetAfterOperation, ResetBeforeOperation};
    let mut opts = badge::device::flash::SerialOptions {
        port,
        baud,
        ..Default::default()
    };
    if no_reset {
        opts.before = ResetBeforeOperation::NoReset;
        opts.after = ResetAfterOperation::NoReset;
    }
    let r = badge::device::flash::flash_serial(model, &board, app, bootloader, &opts)?;
    println!(
        "flashed {} on {} ({} MB flash):",
        r.chip,
        r.port,
        r.flash_size >> 20
    );
    for region in &r.regions {
        println!(
            "  {:<16} at 0x{:06X}  {:>9} bytes  MD5 verified",
            region.name, region.offset, region.len
        );
    }
    Ok(())
}

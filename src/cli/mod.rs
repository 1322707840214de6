//! Argument parsing (clap derive) and dispatch to the stages. No logic beyond that.

use anyhow::{Context, Result};

mod commands;
use badge::train::{self, TrainOptions};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "badge", version, about = "Train a tiny language model about one person and put it on an ESP32-S3 badge", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the three-phase curriculum (stories → profile → Q&A) into a run directory.
    ///
    /// Example: badge train --curriculum configs/badge-6m.toml --out runs/me
    Train {
        /// The curriculum TOML (see configs/).
        #[arg(long, required_unless_present = "resume")]
        curriculum: Option<PathBuf>,
        /// Run directory to create (or, with --resume, to continue).
        #[arg(long, default_value = "runs/badge")]
        out: PathBuf,
        /// Continue an interrupted run from its last checkpoint: badge train --resume runs/NAME
        #[arg(long, value_name = "RUN", conflicts_with = "curriculum")]
        resume: Option<PathBuf>,
        /// cpu, cuda, cuda:N or metal (cuda/metal need the cargo feature of that name).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Override the curriculum's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Download TinyStories through hf-hub for sources that allow it.
        #[arg(long)]
        download: bool,
        /// Fail when a phase misses its max_loss.
        #[arg(long)]
        strict: bool,
        /// Restart from this phase, loading the previous phase's final checkpoint.
        #[arg(long)]
        from_phase: Option<String>,
        /// Stop after this many steps in total, as if interrupted (for testing --resume).
        #[arg(long, hide = true)]
        stop_after: Option<u64>,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Train or measure the tokenizer.
    #[command(subcommand)]
    Tokenizer(TokenizerCmd),
    /// Quantize a run's checkpoint to Q8_0 and write the blob the badge loads.
    ///
    /// Example: badge export --from runs/me --out model.bin
    Export {
        /// The run directory (its final checkpoint, tokenizer and template).
        #[arg(long = "from")]
        run: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Another checkpoint of the run (e.g. checkpoints/phase-profile.safetensors).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Force this Q8_0 group size (default: 64, lowered to the largest power of two that
        /// divides every row length).
        #[arg(long)]
        group_size: Option<usize>,
        #[arg(long, value_enum, default_value = "blob")]
        format: badge::export::ExportFormat,
        /// KV cache on the badge: auto picks the most precise that fits the board.
        #[arg(long, value_enum, default_value = "auto")]
        kv_cache: KvArg,
        /// Fail when any tensor's relative RMSE exceeds this.
        #[arg(long)]
        max_rel_error: Option<f64>,
        /// Compare the f32 checkpoint with the int8 blob on this many held-out texts and
        /// trained questions: top-1 agreement, KL divergence, Q&A exact match (0 = skip).
        #[arg(long, default_value_t = 32)]
        quality: usize,
        /// Board profile to check the memory plan against.
        #[arg(long, default_value = badge::config::board::DEFAULT_BOARD)]
        board: PathBuf,
        /// Make open generation the badge's default (the known answers are still stored).
        #[arg(long)]
        free: bool,
        /// How cautious the badge is: the share (0 to 1) of held-out questions about the owner
        /// that it must still answer when the "I don't know" threshold is calibrated. Lower
        /// says "I don't know" more often, to strangers' odd phrasings and to off-topic
        /// questions alike. Default: the curriculum's `[answers] keep_known` (0.96).
        #[arg(long, value_name = "SHARE")]
        keep_known: Option<f64>,
        /// Leave out the question match: known answers are chosen by the model's own
        /// probabilities alone (to measure what the match adds; the example owner's blob is
        /// 47 KB smaller).
        #[arg(long)]
        no_match: bool,
        #[arg(long)]
        json: bool,
        /// Write the error table as CSV to this file.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Show a blob's header, tensors, CRC and memory plan.
    Inspect {
        model: PathBuf,
        /// Also measure quantization error against a run's f32 checkpoint.
        #[arg(long)]
        report: bool,
        /// The run to compare with (for --report).
        #[arg(long, requires = "report")]
        against: Option<PathBuf>,
        #[arg(long, default_value = badge::config::board::DEFAULT_BOARD)]
        board: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Ask the model one question; the answer streams to stdout, timing to stderr.
    ///
    /// Example: badge ask --model model.bin "What is your email?"
    Ask {
        /// A blob, or a run directory with --engine candle.
        #[arg(long)]
        model: PathBuf,
        question: String,
        #[command(flatten)]
        gen: GenArgs,
        #[command(flatten)]
        mem: MemoryArgs,
        /// Also speak the answer into this WAV file.
        #[arg(long)]
        speak: Option<PathBuf>,
    },
    /// Ask questions interactively (one per line; an empty line or Ctrl-D ends).
    Chat {
        #[arg(long)]
        model: PathBuf,
        #[command(flatten)]
        gen: GenArgs,
        #[command(flatten)]
        mem: MemoryArgs,
    },
    /// Speak text with SAM into a WAV file, as the badge will.
    ///
    /// Example: badge say "Hello, I am a badge." --voice robot --out hello.wav
    Say {
        text: String,
        #[arg(long, default_value = "sam")]
        voice: String,
        /// The text is SAM phonemes, not English.
        #[arg(long)]
        phonetic: bool,
        #[arg(long, default_value = "say.wav")]
        out: PathBuf,
    },
    /// Ask every question of a Q&A CSV and report exact and normalized accuracy.
    Eval {
        /// A blob (the badge's engine) or a run directory (its f32 checkpoint in candle).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        qa: PathBuf,
        /// Also ask these off-topic questions (one per line) and count the fallbacks.
        #[arg(long)]
        offtopic: Option<PathBuf>,
        /// Open generation instead of the known answers.
        #[arg(long)]
        free: bool,
        /// How many misses to list.
        #[arg(long, default_value_t = 20)]
        misses: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        mem: MemoryArgs,
    },
    /// Generate training data from a facts file.
    #[command(subcommand)]
    Data(DataCmd),
    /// A personal badge folder: facts.toml, qa.csv, prose/ and a curriculum (badge.toml).
    ///
    /// Example: badge init me --name "Åsa Lindqvist" --size tiny
    Init {
        dir: PathBuf,
        /// Your full name, written into facts.toml and qa.csv.
        #[arg(long)]
        name: Option<String>,
        /// Model size: tiny, 1m, 3m or 6m (the curricula in configs/).
        #[arg(long, default_value = "tiny")]
        size: badge::data::init::Size,
        /// Let `badge train --download` fetch the full TinyStories set.
        #[arg(long)]
        download: bool,
        /// Rewrite only the curriculum (badge.toml, model.toml) of an existing folder.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// The whole pipeline on the bundled example owner, in one command.
    Demo {
        #[arg(long, default_value = "configs/badge-tiny.toml")]
        curriculum: PathBuf,
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
        /// Cap every phase at this many steps (quick check).
        #[arg(long)]
        max_steps: Option<usize>,
        /// Train with this seed instead of the curriculum's. The held-out figures swing by a
        /// few questions from seed to seed: judge a change over several
        /// (scripts/demo_seeds.sh).
        #[arg(long)]
        seed: Option<u64>,
        /// How many trained questions to ask aloud.
        #[arg(long, default_value_t = 8)]
        questions: usize,
        #[arg(long)]
        json: bool,
    },
    /// Flash a blob (and the firmware) to the badge over USB, or write a flash image
    ///
    /// Examples:
    ///   badge flash --model model.bin --port /dev/ttyACM0
    ///   badge flash --from runs/me                       (export, then flash)
    ///   badge flash --model model.bin --image flash.bin  (a file instead of the badge)
    #[command(verbatim_doc_comment)]
    Flash {
        /// A blob made by `badge export`.
        #[arg(long, conflicts_with = "run", required_unless_present = "run")]
        model: Option<PathBuf>,
        /// Export this run's final checkpoint first (into RUN/model.bin).
        #[arg(long = "from")]
        run: Option<PathBuf>,
        /// Write a merged flash image to this file instead of flashing the badge.
        #[arg(long, conflicts_with_all = ["port", "baud", "no_reset"])]
        image: Option<PathBuf>,
        /// The firmware: its ELF (`cargo +esp build --release`; converted to an app image, with
        /// the bootloader) or an app image (.bin). Written at the factory partition.
        #[arg(long)]
        app: Option<PathBuf>,
        /// The second-stage bootloader (.bin) to include, written at 0x0.
        #[arg(long)]
        bootloader: Option<PathBuf>,
        /// Serial port of the badge (default: the one Espressif USB port found).
        #[arg(long)]
        port: Option<String>,
        /// Baud rate after connecting (the ROM loader starts at 115200).
        #[arg(long, default_value_t = badge::device::flash::DEFAULT_BAUD)]
        baud: u32,
        /// The chip already waits in its serial loader: no DTR/RTS reset before, and it stays
        /// in the loader afterwards.
        #[arg(long)]
        no_reset: bool,
        #[arg(long, default_value = badge::config::board::DEFAULT_BOARD)]
        board: PathBuf,
    },
    /// Run the badge's whole loop on the host over a flash image: stdin questions, WAV answers.
    ///
    /// Example: echo "What is your email?" | badge sim --image flash.bin
    Sim {
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value = badge::config::board::DEFAULT_BOARD)]
        board: PathBuf,
        /// Where the answer WAVs go.
        #[arg(long, default_value = "sim-out")]
        out: PathBuf,
        /// Memory for the blob and its run state, in bytes (K and M suffixes accepted);
        /// default: the board's PSRAM less what its firmware reserves.
        #[arg(long, value_parser = parse_bytes)]
        max_memory: Option<u64>,
        /// Play a matmul hardware fault, to watch the boot self-test fall back: `dual-core`
        /// (both cores together are sometimes wrong) or `kernel` (the vector kernel is wrong).
        #[arg(long, value_enum)]
        simulate_fault: Option<FaultArg>,
        /// Button presses before the first console line, e.g. `short,short,long` (stdin
        /// lines `!press` and `!press long` press it too).
        #[arg(long)]
        press: Option<String>,
        /// Open generation instead of the blob's known answers.
        #[arg(long)]
        free: bool,
    },
    /// Print a model's parameter count, sizes and on-device memory.
    Info {
        /// A model config or a curriculum.
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenizerCmd {
    /// Train a vocabulary on stories, prose folders or Q&A CSV files.
    ///
    /// Example: badge tokenizer train --vocab-size 1024 --input data/stories/stories.txt --out tokenizer.json
    Train {
        #[arg(long, default_value_t = 512)]
        vocab_size: usize,
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Split numbers into single digits (each digit its own word).
        #[arg(long)]
        split_digits: bool,
        #[arg(long, default_value = "tokenizer.json")]
        out: PathBuf,
    },
    /// Vocab size, tokens per character and byte fallbacks on a text.
    Stats {
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DataCmd {
    /// Prose paragraphs and Q&A pairs from facts.toml and the templates.
    ///
    /// Example: badge data synth --facts data/profile/facts.toml --out data/synth
    Synth {
        #[arg(long, default_value = "data/profile/facts.toml")]
        facts: PathBuf,
        #[arg(long, default_value = "data/templates")]
        templates: PathBuf,
        #[arg(long, default_value = "data/synth")]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// What the badge will know: answers, phrasings per source, conflicts, unspeakable letters.
    ///
    /// Example: badge data check me   (or: badge data check --curriculum me/badge.toml)
    Check {
        /// A folder made by `badge init` (its badge.toml).
        #[arg(required_unless_present = "curriculum", conflicts_with = "curriculum")]
        dir: Option<PathBuf>,
        #[arg(long)]
        curriculum: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// Generation settings shared by `ask` and `chat`.
#[derive(clap::Args, Clone)]
struct GenArgs {
    /// int8 (the badge's engine over a blob) or candle (a run's f32 checkpoint).
    #[arg(long, default_value = "int8")]
    engine: String,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Matmul workers (2 = the badge's two cores; a thread on the host).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Open generation instead of the known answers (which the badge uses by default).
    #[arg(long)]
    free: bool,
}

/// How much memory the badge's engine may take on the host.
#[derive(clap::Args, Debug, Clone)]
struct MemoryArgs {
    /// Board profile whose PSRAM budget limits the model's run state (KV cache and
    /// activations), as on the badge.
    #[arg(long, default_value = badge::config::board::DEFAULT_BOARD)]
    board: PathBuf,
    /// Allow a run state of up to this many bytes instead (K and M suffixes accepted), to run
    /// on the host a model larger than the board can hold.
    #[arg(long, value_parser = parse_bytes)]
    max_memory: Option<u64>,
}

impl MemoryArgs {
    /// The run-state limit in bytes: `--max-memory`, else the board's PSRAM budget.
    fn run_state_limit(&self) -> Result<usize> {
        let bytes = match self.max_memory {
            Some(m) => m,
            None => badge::config::board::Board::load(&self.board)?.memory_budget(),
        };
        // A limit past the address space admits everything the machine can address.
        Ok(usize::try_from(bytes).unwrap_or(usize::MAX))
    }
}

/// `--max-memory`: a byte count as partition CSVs write sizes (`65536`, `0x10000`, `64K`, `8M`).
fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    badge::config::board::parse_size(s).ok_or_else(|| {
        format!("`{s}` is not a size: use bytes, 0x hex, or a K or M suffix (e.g. 64M)")
    })
}

impl GenArgs {
    fn options(&self) -> badge_firmware::generate::GenerateOptions {
        badge_firmware::generate::GenerateOptions {
            max_new_tokens: self.max_tokens,
            sampler: badge_firmware::sampler::SamplerConfig {
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed,
            },
            free: self.free,
        }
    }
}

/// `--simulate-fault` of `badge sim`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FaultArg {
    DualCore,
    Kernel,
}

/// `--kv-cache`: a fixed KV cache representation, or the best that fits the board.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KvArg {
    Auto,
    F32,
    F16,
    Int8,
}

impl KvArg {
    fn kind(self) -> Option<badge_firmware::config::KvCacheKind> {
        use badge_firmware::config::KvCacheKind;
        match self {
            Self::Auto => None,
            Self::F32 => Some(KvCacheKind::F32),
            Self::F16 => Some(KvCacheKind::F16),
            Self::Int8 => Some(KvCacheKind::Int8),
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            curriculum,
            out,
            resume,
            device,
            seed,
            download,
            strict,
            from_phase,
            stop_after,
            quiet,
            json,
        } => {
            let opts = TrainOptions {
                curriculum,
                out: resume.clone().unwrap_or(out),
                resume: resume.is_some(),
                device: train::parse_device(&device)?,
                seed,
                download,
                strict,
                from_phase,
                stop_after,
                quiet,
            };
            let summary = train::run(&opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", train::summary_table(&summary));
                println!("run written to {}", opts.out.display());
            }
            Ok(())
        }
        Command::Tokenizer(cmd) => commands::tokenizer(cmd),
        Command::Export {
            run,
            out,
            checkpoint,
            group_size,
            format,
            kv_cache,
            max_rel_error,
            quality,
            board,
            free,
            keep_known,
            no_match,
            json,
            csv,
        } => {
            let opts = badge::export::ExportOptions {
                run,
                checkpoint,
                out,
                group_size: group_size.map_or(
                    badge::export::GroupSize::Auto(64),
                    badge::export::GroupSize::Forced,
                ),
                format,
                kv_cache: kv_cache.kind(),
                max_rel_error,
                quality_samples: quality,
                board: Some(board).filter(|b| b.exists()),
                free,
                keep_known,
                question_match: !no_match,
            };
            commands::export(&opts, json, csv.as_deref())
        }
        Command::Inspect {
            model,
            report,
            against,
            board,
            json,
        } => commands::inspect(&model, report, against.as_deref(), &board, json),
        Command::Ask {
            model,
            question,
            gen,
            mem,
            speak,
        } => commands::ask(&model, &question, &gen, &mem, speak.as_deref()),
        Command::Chat { model, gen, mem } => commands::chat(&model, &gen, &mem),
        Command::Say {
            text,
            voice,
            phonetic,
            out,
        } => {
            let v = badge::answer::say::voice_by_name(&voice)?;
            if !phonetic && !text.is_ascii() {
                eprintln!(
                    "SAM says: {}",
                    badge_firmware::sam::spoken(&text)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            let n = badge::answer::say::say_to_wav(&text, &v, phonetic, &out)?;
            eprintln!(
                "{n} samples ({:.2} s) written to {}",
                n as f64 / 22050.0,
                out.display()
            );
            Ok(())
        }
        Command::Eval {
            model,
            qa,
            offtopic,
            free,
            misses,
            json,
            mem,
        } => commands::eval(&model, &qa, offtopic.as_deref(), free, misses, json, &mem),
        Command::Data(DataCmd::Synth {
            facts,
            templates,
            out,
            seed,
            json,
        }) => {
            let r = badge::data::synth::run(&badge::data::synth::SynthOptions {
                facts,
                templates,
                out,
                seed,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} prose paragraphs ({} distinct templates), {} Q&A pairs ({} from [[fact]] tables)",
                    r.prose_paragraphs, r.distinct_prose_templates, r.qa_pairs, r.free_form_pairs
                );
                print!("{}", r.table());
            }
            Ok(())
        }
        Command::Data(DataCmd::Check {
            dir,
            curriculum,
            json,
        }) => {
            let path = curriculum.or(dir).expect("clap requires one of them");
            let r = badge::data::check::run(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.table());
            }
            Ok(())
        }
        Command::Init {
            dir,
            name,
            size,
            download,
            force,
            json,
        } => {
            let r = badge::data::init::run(&badge::data::init::InitOptions {
                dir,
                name,
                size,
                download,
                force,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for f in &r.written {
                    println!("wrote {}", f.display());
                }
                let d = r.dir.display();
                let dl = if download { " --download" } else { "" };
                println!(
                    "\nNext: fill in {d}/facts.toml (and qa.csv), then\n  badge data check {d}\n  badge train --curriculum {} --out {d}/run{dl}\n  badge flash --from {d}/run --port /dev/ttyACM0",
                    r.curriculum.display()
                );
            }
            Ok(())
        }
        Command::Demo {
            curriculum,
            out,
            max_steps,
            seed,
            questions,
            json,
        } => {
            let r = badge::demo::run(&badge::demo::DemoOptions {
                curriculum,
                out,
                max_steps,
                seed,
                questions,
                quiet: json,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            }
            Ok(())
        }
        Command::Flash {
            model,
            run,
            image,
            app,
            bootloader,
            port,
            baud,
            no_reset,
            board,
        } => {
            let model = match (model, run) {
                (Some(m), _) => m,
                (None, Some(run)) => badge::device::flash::export_run(&run, &board)?,
                (None, None) => unreachable!("clap requires --model or --from"),
            };
            commands::flash(
                &model,
                &board,
                image.as_deref(),
                app.as_deref(),
                bootloader.as_deref(),
                port,
                baud,
                no_reset,
            )
        }
        Command::Sim {
            image,
            board,
            out,
            max_memory,
            simulate_fault,
            press,
            free,
        } => {
            let mut opts = badge::device::sim::SimOptions::new(image, out.clone());
            opts.board = board;
            opts.generate.free = free;
            opts.memory_budget = max_memory
                .map(|m| {
                    usize::try_from(m)
                        .context("--max-memory is larger than this host's address space")
                })
                .transpose()?;
            opts.fault = simulate_fault.map(|f| match f {
                FaultArg::DualCore => badge::device::sim::SimFault::DualCore,
                FaultArg::Kernel => badge::device::sim::SimFault::Kernel,
            });
            if let Some(list) = &press {
                opts.presses = badge::device::sim::parse_presses(list)?;
            }
            let stdin = std::io::stdin();
            let report = badge::device::sim::run_sim(&opts, stdin.lock(), std::io::stdout())?;
            eprintln!(
                "{} answers spoken into {}",
                report.answers.len(),
                out.display()
            );
            Ok(())
        }
        Command::Info { config, json } => {
            let c = badge::config::load_any_model_config(&config)?;
            let info = badge::export::info::ModelInfo::of(&c);
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", info.table());
            }
            Ok(())
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<train::Interrupted>().is_some() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

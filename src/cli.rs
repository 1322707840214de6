//! Argument parsing (clap derive) and dispatch to the stages. No logic beyond that.

use anyhow::{Context, Result};
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
    /// Print a model's parameter count, sizes and on-device memory.
    Info {
        /// A model config or a curriculum.
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn parse_device(s: &str) -> Result<candle_core::Device> {
    match s {
        "cpu" => Ok(candle_core::Device::Cpu),
        "metal" => candle_core::Device::new_metal(0).context("metal device (build with --features metal)"),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n = s.strip_prefix("cuda:").map_or(Ok(0), str::parse).with_context(|| format!("bad device {s}"))?;
            candle_core::Device::new_cuda(n).context("cuda device (build with --features cuda)")
        }
        other => anyhow::bail!("unknown device `{other}`: use cpu, cuda, cuda:N or metal"),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train { curriculum, out, resume, device, seed, download, strict, from_phase, stop_after, quiet, json } => {
            let opts = TrainOptions {
                curriculum,
                out: resume.clone().unwrap_or(out),
                resume: resume.is_some(),
                device: parse_device(&device)?,
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
        Command::Info { config, json } => {
            let c = badge::config::load_any_model_config(&config)?;
            let info = badge::info::ModelInfo::of(&c);
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

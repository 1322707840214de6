//! The `badge` command line. Parsing lives in `cli.rs`; every subcommand calls into a stage.

mod cli;

fn main() -> std::process::ExitCode {
    // Before any thread exists: it sets an environment variable for candle's thread pool.
    badge::train::ops::tune_threads();
    cli::main()
}

//! The `badge` command line. Parsing lives in `cli.rs`; every subcommand calls into a stage.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}

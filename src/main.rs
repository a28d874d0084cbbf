//! The `smime-pickup` command: parse arguments, set up logging, run, report the error chain once.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = smime_pickup::cli::Cli::parse();
    match smime_pickup::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("smime-pickup: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

//! The `smime-pickup` command: parse arguments, set up logging, run, report the error chain once.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = smime_pickup::cli::Cli::parse();
    // `once` on a terminal shows a progress bar: only warnings and errors print beside it
    let bar =
        matches!(cli.command, smime_pickup::cli::Command::Once) && std::io::stderr().is_terminal();
    let level = if bar { "warn" } else { "info" };
    smime_pickup::logging::init(level);
    match smime_pickup::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `once` and `check` already printed their summary or report
            if !matches!(
                err,
                smime_pickup::cli::CliError::Outcome(_) | smime_pickup::cli::CliError::Check(_)
            ) {
                eprintln!(
                    "smime-pickup: {}",
                    smime_pickup::logging::escape_controls(&err.to_string())
                );
            }
            ExitCode::from(err.exit_code())
        }
    }
}

//! The `entra-here-sync` binary: parses the command line and hands it to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    entra_here_sync::cli::run(entra_here_sync::cli::Cli::parse())
}

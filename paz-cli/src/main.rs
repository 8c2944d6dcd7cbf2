//! `paz`: the command-line interface of Paz, a thin adapter over the SDK client
//! ([`paz::Client`]).
//!
//! Data goes to stdout (tables or `--output json`), progress and messages to stderr. Exit
//! codes: 0 success, 1 failure (API error, network, failed deployment), 2 bad usage or input.

mod access;
mod admin;
mod args;
mod failure;
mod follow;
mod output;
mod parse;
mod run;
mod spec;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let server = cli.server.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(failure::EXIT_FAILURE);
        }
    };
    match runtime.block_on(run::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => ExitCode::from(failure::report(&err, &server)),
    }
}

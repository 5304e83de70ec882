//! The client half of the `kubernaut` binary: releases, deploys, waits, rollbacks and
//! status, spoken to a Kubernaut server over HTTP, with exit codes a CI job can act on
//! (`deploy` waits for the verdict unless `--no-wait`; `wait` exits alike). Answers of
//! 429, 502, 503 and 504 are retried within the command's `--retry-budget`.
//!
//! | exit code | meaning |
//! |---|---|
//! | 0 | success (a followed deployment succeeded) |
//! | 1 | the deployment failed or was cancelled (its verdict; nothing else exits 1) |
//! | 2 | bad usage or refused input: the server answered a 4xx the user can fix |
//! | 3 | Kubernaut is unreachable, or answered 5xx (or 429) after the retries |
//! | 4 | conflict (409): another deployment is active on the target, or the state changed |
//! | 70 | the deployment timed out, or no verdict came within the wait |
//!
//! The reference is `docs/cli.md`.

mod api;
mod args;
mod commands;
mod config;
mod diff;
mod duration;
mod follow;
mod output;
mod wire;

use std::process::ExitCode;

pub use args::{
    ClientCommand, CompletionsArgs, DeployArgs, OutputFormat, ReleaseArgs, ReleaseCommand,
    RollbackArgs, ServerArgs, StatusArgs, Token, TokenArgs, TokenCommand, WaitArgs,
};
pub use duration::parse_duration;

/// Why a client command did not succeed, and the exit code each cause maps to.
#[derive(Debug)]
pub enum CliError {
    /// The input was refused before or by the server (a 4xx answer, a file that
    /// cannot be read, a URL that does not parse).
    Usage(String),
    /// The server cannot be reached, or failed (5xx, or 429 after the retry budget).
    Unreachable(String),
    /// The server refused because of the current state (409): another deployment is
    /// active on the target, or what was asked conflicts with what exists.
    Conflict(String),
    /// The followed deployment failed or was cancelled; its report is printed.
    DeploymentFailed,
    /// The followed deployment timed out, or no verdict came in time.
    TimedOut,
    /// `diff --exit-code` found differences (printed).
    Differs,
    /// The server answered something this client does not understand.
    Server(String),
}

impl CliError {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::DeploymentFailed | Self::Differs => 1,
            Self::Usage(_) => 2,
            Self::Unreachable(_) | Self::Server(_) => 3,
            Self::Conflict(_) => 4,
            Self::TimedOut => 70,
        }
    }
}

/// Runs a client command against the server its flags (or `KUBERNAUT_URL`, or the
/// chosen context of the client configuration at `config`) name and returns the exit
/// code. `cli` builds the whole command line (for `completions`).
pub async fn run(
    command: ClientCommand,
    mut server: ServerArgs,
    config: Option<std::path::PathBuf>,
    cli: impl FnOnce() -> clap::Command,
) -> ExitCode {
    let outcome = match config::resolve(&command, &mut server, config.as_deref()) {
        Ok(()) => commands::execute(command, &server, cli).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match &error {
                CliError::Usage(message)
                | CliError::Unreachable(message)
                | CliError::Conflict(message)
                | CliError::Server(message) => eprintln!("kubernaut: {message}"),
                CliError::DeploymentFailed | CliError::TimedOut | CliError::Differs => {}
            }
            ExitCode::from(error.exit_code())
        }
    }
}

//! The client half of the `kubernaut` binary: releases, deploys, waits, rollbacks and
//! status, spoken to a Kubernaut server over HTTP, with exit codes a CI job can act on
//! (`wait` and `deploy --wait` exit alike). Answers of 429 and 503 are retried after
//! their `Retry-After` within the command's `--retry-budget`.
//!
//! | exit code | meaning |
//! |---|---|
//! | 0 | success (a followed deployment succeeded) |
//! | 1 | the deployment failed or was cancelled; the server failed (5xx) |
//! | 2 | bad usage or input: the server answered 4xx (the problem is printed) |
//! | 3 | the server cannot be reached (connection refused, DNS, TLS) |
//! | 70 | the deployment timed out |

mod api;
mod args;
mod commands;
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
    /// The server cannot be reached.
    Unreachable(String),
    /// The followed deployment failed or was cancelled; its report is printed.
    DeploymentFailed,
    /// The followed deployment timed out, or no verdict came in time.
    TimedOut,
    /// The server failed or answered something this client does not understand.
    Server(String),
}

impl CliError {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::DeploymentFailed | Self::Server(_) => 1,
            Self::Usage(_) => 2,
            Self::Unreachable(_) => 3,
            Self::TimedOut => 70,
        }
    }
}

/// Runs a client command against the server its flags (or `KUBERNAUT_URL`) name and
/// returns the exit code. `cli` builds the whole command line (for `completions`).
pub async fn run(command: ClientCommand, cli: impl FnOnce() -> clap::Command) -> ExitCode {
    match commands::execute(command, cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match &error {
                CliError::Usage(message)
                | CliError::Unreachable(message)
                | CliError::Server(message) => eprintln!("kubernaut: {message}"),
                CliError::DeploymentFailed | CliError::TimedOut => {}
            }
            ExitCode::from(error.exit_code())
        }
    }
}

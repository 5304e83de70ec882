//! The client commands and their flags.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::cli::duration::parse_duration;

/// The commands that talk to a Kubernaut server (boxed: the server commands beside
/// them in the binary's command enum are small).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register, list, show and delete releases.
    Release(Box<ReleaseArgs>),
    /// Deploy a release to a cluster and namespace.
    Deploy(Box<DeployArgs>),
    /// Deploy the last release that succeeded on a target before a deployment.
    Rollback(Box<RollbackArgs>),
    /// Show what version of a service runs where.
    Status(Box<StatusArgs>),
    /// Follow a deployment to its verdict and exit with it, as `deploy` does.
    Wait(Box<WaitArgs>),
    /// Cancel an active deployment (what was applied stays applied).
    Cancel(Box<CancelArgs>),
    /// List deployments and show one.
    #[command(visible_alias = "deployments")]
    Deployment(Box<DeploymentArgs>),
    /// Render a release for a target as the server would apply it (nothing applied).
    Render(Box<RenderArgs>),
    /// Compare a release rendered for a target with the live objects in its cluster.
    Diff(Box<DiffArgs>),
    /// Create, list and revoke API tokens.
    Token(Box<TokenArgs>),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// The server used when neither the flags, the environment nor a context name one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Where the server is, who is asking, and how to print its answers: flags of the
/// whole command line, given before or after the command (`kubernaut --context prod
/// deploy ...`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server and output (client commands)")]
pub struct ServerArgs {
    /// The Kubernaut server (default: the context's, else http://127.0.0.1:8080).
    #[arg(long, global = true, env = "KUBERNAUT_URL")]
    pub url: Option<String>,
    /// A bearer token sent to the server (never printed); default: the context's.
    #[arg(long, global = true, env = "KUBERNAUT_TOKEN", hide_env_values = true)]
    pub token: Option<Token>,
    /// The context of the client configuration to use (default: its
    /// `current-context`).
    #[arg(long, global = true, env = "KUBERNAUT_CONTEXT")]
    pub context: Option<String>,
    /// A table or text for people, or the server's answer for scripts: as JSON, or
    /// as YAML.
    #[arg(
        short = 'o',
        long,
        global = true,
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,
    /// How long one command may wait, in all, to retry answers of 429 (too many
    /// requests) and 503 (unavailable), as their `Retry-After` asks (90s, 5m; 0: never
    /// retry). Each wait is told on standard error.
    #[arg(
        long,
        global = true,
        env = "KUBERNAUT_RETRY_BUDGET",
        default_value = "2m",
        value_parser = parse_budget
    )]
    pub retry_budget: Duration,
}

/// A retry budget: a duration, or 0 for none.
fn parse_budget(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// A bearer token; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Token {
    fn from(token: String) -> Self {
        Self(token)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl ClientCommand {
    /// Whether the command talks to a server (all but `completions`).
    pub fn talks_to_a_server(&self) -> bool {
        !matches!(self, Self::Completions(_))
    }
}

impl ServerArgs {
    /// The server's URL as given, or the default.
    pub fn url(&self) -> &str {
        self.url.as_deref().unwrap_or(DEFAULT_URL)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and text for people (`text` is accepted too).
    #[value(alias = "text")]
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    pub command: ReleaseCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Register a release: a version of a service, its image and manifest template.
    Create {
        /// The service (a DNS label such as `web`).
        #[arg(long)]
        service: String,
        /// The version (no whitespace; `1.4.2`, a Git hash, a build number).
        #[arg(long)]
        version: String,
        /// The image reference, `[registry[:port]/]path[:tag][@digest]`.
        #[arg(long)]
        image: String,
        /// The manifest template file (`-` reads standard input).
        #[arg(short = 'f', long)]
        template: PathBuf,
        /// An attribute the template can use, as name=value (repeatable).
        #[arg(long = "attr", value_name = "NAME=VALUE", value_parser = parse_attribute)]
        attributes: Vec<(String, String)>,
        /// Free text kept with the release (a build URL, a changelog line).
        #[arg(long)]
        comment: Option<String>,
    },
    /// List active releases, newest first.
    List {
        /// Only the releases of this service.
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        pages: PageArgs,
    },
    /// Show a release with its template.
    Show {
        /// The release's id.
        id: String,
    },
    /// Retire a release (a soft delete).
    Delete {
        /// The release's id.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The service to deploy.
    #[arg(long)]
    pub service: String,
    /// The version of the service's release to deploy.
    #[arg(long)]
    pub version: String,
    /// A cluster the server knows (see its settings).
    #[arg(long)]
    pub cluster: String,
    /// The namespace to deploy into.
    #[arg(short = 'n', long)]
    pub namespace: String,
    /// A variable for the template, as name=value (repeatable; overrides the release's).
    #[arg(long = "attr", value_name = "NAME=VALUE", value_parser = parse_attribute)]
    pub attributes: Vec<(String, String)>,
    #[command(flatten)]
    pub options: DeployOptions,
}

/// Whether a command that starts a deployment follows it to its verdict: it does
/// unless `--no-wait`, as krane does.
#[derive(Debug, Clone, Args)]
pub struct WaitFlags {
    /// Return as soon as the server accepted the deployment, without its verdict
    /// (exit 0 then says only that it was accepted).
    #[arg(long)]
    pub no_wait: bool,
    /// Follow the deployment to its verdict: the default; accepted for older
    /// pipelines.
    #[arg(long, hide = true, conflicts_with = "no_wait")]
    pub wait: bool,
}

impl WaitFlags {
    pub fn waits(&self) -> bool {
        !self.no_wait
    }
}

/// How much of a listing to read: one page, or every page (following `next_cursor`).
#[derive(Debug, Clone, Args)]
pub struct PageArgs {
    /// The size of a page (the server allows 1 to 500; default 50).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Every page, following the server's cursor to the end (`-A`).
    #[arg(long, short = 'A')]
    pub all: bool,
}

/// How a deploy runs and whether the command follows it.
#[derive(Debug, Clone, Args)]
pub struct DeployOptions {
    /// How long the rollout may take before it is `timed_out` (90s, 10m, 1h).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub wait: WaitFlags,
    /// Keep objects the new manifest no longer contains.
    #[arg(long)]
    pub no_prune: bool,
    /// On failure, deploy the last release that succeeded on the target.
    #[arg(long)]
    pub rollback_on_failure: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The deployment to roll back.
    #[arg(long, required_unless_present_all = ["service", "cluster", "namespace"], conflicts_with_all = ["service", "cluster", "namespace"])]
    pub deployment: Option<String>,
    /// Roll back the latest deployment of this service to --cluster and --namespace.
    #[arg(long, requires_all = ["cluster", "namespace"])]
    pub service: Option<String>,
    /// The cluster of the target to roll back.
    #[arg(long, requires = "service")]
    pub cluster: Option<String>,
    /// The namespace of the target to roll back.
    #[arg(short = 'n', long, requires = "service")]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The deployment to follow (its id, as `deploy` prints it).
    pub deployment: String,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The deployment to cancel.
    pub deployment: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The service to report on (positional or --service).
    #[arg(
        required_unless_present = "service_flag",
        conflicts_with = "service_flag"
    )]
    pub service: Option<String>,
    #[arg(long = "service", value_name = "SERVICE", hide = true)]
    pub service_flag: Option<String>,
    /// Only this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

impl StatusArgs {
    pub fn service(&self) -> &str {
        self.service
            .as_deref()
            .or(self.service_flag.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Args)]
pub struct DeploymentArgs {
    #[command(subcommand)]
    pub command: DeploymentCommand,
}

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// List deployments, newest first.
    #[command(visible_alias = "ls")]
    List {
        /// Only of this service.
        #[arg(long)]
        service: Option<String>,
        /// Only to this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Only to this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Only in this status (queued, applying, rolling_out, succeeded, failed,
        /// timed_out, cancelled).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        pages: PageArgs,
    },
    /// Show a deployment with its timeline and, when it failed, why.
    #[command(visible_alias = "get")]
    Show {
        /// The deployment's id.
        id: String,
    },
}

/// A release (by service and version, or by id) and the target to render it for.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The service of the release.
    #[arg(long, required_unless_present = "release", requires = "version")]
    pub service: Option<String>,
    /// The version of the release.
    #[arg(long, requires = "service")]
    pub version: Option<String>,
    /// The release's id (instead of --service and --version).
    #[arg(long, conflicts_with_all = ["service", "version"])]
    pub release: Option<String>,
    /// The target cluster.
    #[arg(long)]
    pub cluster: String,
    /// The target namespace.
    #[arg(short = 'n', long)]
    pub namespace: String,
    /// A variable for the template, as name=value (repeatable; overrides the release's).
    #[arg(long = "attr", value_name = "NAME=VALUE", value_parser = parse_attribute)]
    pub attributes: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub render: RenderArgs,
    /// Exit 1 when the live objects differ from the rendered ones (as
    /// `git diff --exit-code`); without it, a diff that could be made exits 0.
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token and print its secret (shown this once) on standard output.
    Create {
        /// What the token is for (`jenkins`, `laptop`).
        #[arg(long)]
        name: String,
        /// Whose token (admins only); unset: your own account's.
        #[arg(long)]
        account: Option<String>,
        /// How long it lives (30d, 12h); unset: the server's default, 90 days.
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List tokens (never their secrets): admins see everyone's, others their own.
    List {
        /// Only this account's tokens.
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token's id (see `token list`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `name=value`; the value may contain `=`.
fn parse_attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn an_attribute_splits_at_its_first_equals_sign() {
        assert_eq!(
            parse_attribute("query=a=b"),
            Ok(("query".to_owned(), "a=b".to_owned()))
        );
        assert_eq!(
            parse_attribute("empty="),
            Ok(("empty".to_owned(), String::new()))
        );
        assert!(parse_attribute("novalue").is_err());
        assert!(parse_attribute("=x").is_err());
    }

    #[test]
    fn a_rollback_names_a_deployment_or_a_whole_target() {
        assert!(Cli::try_parse_from(["k", "rollback", "--deployment", "x"]).is_ok());
        assert!(
            Cli::try_parse_from([
                "k",
                "rollback",
                "--service",
                "s",
                "--cluster",
                "c",
                "--namespace",
                "n"
            ])
            .is_ok()
        );
        assert!(Cli::try_parse_from(["k", "rollback"]).is_err());
        assert!(Cli::try_parse_from(["k", "rollback", "--service", "s"]).is_err());
        assert!(
            Cli::try_parse_from([
                "k",
                "rollback",
                "--deployment",
                "x",
                "--service",
                "s",
                "--cluster",
                "c",
                "--namespace",
                "n"
            ])
            .is_err()
        );
    }

    #[test]
    fn token_commands_parse() {
        assert!(
            Cli::try_parse_from([
                "k",
                "token",
                "create",
                "--name",
                "ci",
                "--expires-in",
                "30d"
            ])
            .is_ok()
        );
        assert!(Cli::try_parse_from(["k", "token", "create"]).is_err());
        assert!(Cli::try_parse_from(["k", "token", "list", "--account", "ci"]).is_ok());
        assert!(Cli::try_parse_from(["k", "token", "revoke", "0193"]).is_ok());
    }

    #[test]
    fn the_token_is_never_shown_in_debug_output() {
        let token = Token::from("s3cret".to_owned());
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}

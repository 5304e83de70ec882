//! The `kubernaut` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory as _, Parser, Subcommand};
use kubernaut::sandbox::{Sandbox, SandboxOptions};
use kubernaut::{Application, Settings, bootstrap_token, issue_token, open_database, telemetry};
use kubernaut_domain::{Role, Scope};

/// mimalloc rather than the system allocator: a page of releases allocates a few
/// thousand small strings, and glibc's malloc and free took a third of its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kubernaut: ship services to Kubernetes and get a verdict you can trust.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Server commands: a settings file layered over the built-in defaults
    /// (config/default.toml). Client commands: the client configuration with the
    /// contexts (default `$XDG_CONFIG_HOME/kubernaut/config.yaml`); they never read the
    /// server's settings.
    #[arg(long, global = true, env = "KUBERNAUT_CONFIG")]
    config: Option<PathBuf>,
    /// Where the embedded database lives when `database.url` names none (default
    /// `$XDG_DATA_HOME/kubernaut` or `~/.local/share/kubernaut`).
    #[arg(long, global = true, env = "KUBERNAUT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The client commands' server, token, context and output.
    #[command(flatten)]
    client: kubernaut::cli::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Kubernaut server: on PostgreSQL when `database.url` names one, else on
    /// the embedded database in the data directory (one process).
    Serve,
    /// A sandbox to try Kubernaut in: a simulated cluster named `sandbox`, an embedded
    /// database (temporary unless --data-dir), and an admin token printed once.
    Dev {
        /// The address to serve on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
        /// Release and deploy the Hello World example: one success, one crash loop.
        #[arg(long)]
        seed: bool,
        /// Simulated seconds per real second (rollouts go this much faster).
        #[arg(long, default_value_t = 5.0)]
        time_scale: f64,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Administer access straight through the database (no server needed).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage the database itself (with the server stopped).
    #[command(subcommand)]
    Db(DbCommand),
    #[command(flatten)]
    Client(kubernaut::cli::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Copy everything of the embedded database (releases, deployments and their
    /// timelines, accounts, tokens, the audit trail; ids kept) into an empty PostgreSQL
    /// database, to run replicas on it. Stop `kubernaut serve` first.
    Copy {
        /// The target, `postgres://user:password@host:port/database` (created when
        /// missing and allowed; it must hold no data).
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Issue an API token, creating its account when missing, and print ONLY its
    /// secret on standard output (details go to standard error). Use it for the first
    /// admin token of a fresh install.
    CreateToken {
        /// The account (created as a robot when missing); the token is named after it.
        #[arg(long)]
        name: String,
        /// The role the account is granted.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Limit a deployer to clusters and namespaces, e.g. 'staging/*'.
        #[arg(long, value_parser = parse_scope)]
        scope: Option<Scope>,
        /// How long the token lives (90d, 12h); at most 366 days.
        #[arg(long, value_parser = kubernaut::cli::parse_duration, default_value = "90d")]
        expires_in: Duration,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text)
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    Scope::parse(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        // The client talks to a server and never reads the server's settings: a bad
        // `KUBERNAUT__...` variable in a CI job must not break `kubernaut deploy`.
        Command::Client(command) => {
            return match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(kubernaut::cli::run(
                    command,
                    cli.client,
                    cli.config,
                    Cli::command,
                )),
                Err(error) => {
                    eprintln!("kubernaut: cannot start the runtime: {error}");
                    ExitCode::from(3)
                }
            };
        }
        server => server,
    };
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(mut settings) => {
            if let Some(dir) = &cli.data_dir {
                settings.database.data_dir = Some(dir.clone());
            }
            settings
        }
        Err(error) => {
            eprintln!("kubernaut: invalid settings: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kubernaut: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match command {
            Command::Serve => serve(settings).await,
            Command::Dev {
                bind,
                seed,
                time_scale,
            } => {
                dev(
                    settings,
                    SandboxOptions {
                        data_dir: cli.data_dir,
                        bind,
                        time_scale,
                        seed,
                    },
                )
                .await
            }
            Command::Migrate => open_database(&settings, true).await.map(|_| ()),
            Command::Db(DbCommand::Copy { to }) => copy(&settings, &to).await,
            Command::Admin(AdminCommand::CreateToken {
                name,
                role,
                scope,
                expires_in,
            }) => create_token(&settings, &name, role, scope, expires_in).await,
            Command::Client(_) => Ok(()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("kubernaut: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[expect(
    clippy::print_stdout,
    reason = "the secret alone on standard output, for `$(kubernaut admin create-token ...)`"
)]
async fn create_token(
    settings: &Settings,
    name: &str,
    role: Role,
    scope: Option<Scope>,
    expires_in: Duration,
) -> anyhow::Result<()> {
    let scope_text = scope
        .as_ref()
        .map_or_else(|| "*".to_owned(), ToString::to_string);
    let secret = bootstrap_token(settings, name, role, scope, Some(expires_in)).await?;
    let seconds = expires_in.as_secs();
    let lifetime = if seconds.is_multiple_of(86_400) {
        format!("{} days", seconds / 86_400)
    } else {
        humantime::format_duration(expires_in).to_string()
    };
    eprintln!(
        "kubernaut: issued a token for {name} ({role} on {scope_text}), valid for {lifetime}; it is shown only this once"
    );
    println!("{}", secret.expose());
    Ok(())
}

/// On the embedded database's first start (no account yet), issues an admin token and
/// prints it once, as `vault operator init` prints its root token: one process owns the
/// file, so no other can race it. PostgreSQL installs make theirs with
/// `kubernaut admin create-token`.
async fn first_admin_token(application: &Application) -> anyhow::Result<()> {
    let storage = application.storage();
    let Some(path) = storage.sqlite_path() else {
        return Ok(());
    };
    let accounts = storage
        .repositories()
        .access
        .list_accounts()
        .await
        .map_err(|error| anyhow::anyhow!("could not read the accounts: {error}"))?;
    if !accounts.is_empty() {
        return Ok(());
    }
    let secret = issue_token(storage, "admin", Role::Admin, None, None).await?;
    let text = format!(
        "kubernaut: first start on {}: an admin token (account admin, 90 days), shown only this once:\n{}\n",
        path.display(),
        secret.expose()
    );
    // A closed standard output must not take the server down (`println!` would panic).
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, text.as_bytes())
        .and_then(|()| std::io::Write::flush(&mut out));
    Ok(())
}

async fn dev(settings: Settings, options: SandboxOptions) -> anyhow::Result<()> {
    let sandbox = Sandbox::start(settings, options).await?;
    // One write, and a closed standard output (a pipe read only for the banner) must
    // not take the sandbox down as `println!` would, by panicking.
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, format!("{}\n", sandbox.banner()).as_bytes())
        .and_then(|()| std::io::Write::flush(&mut out));
    drop(out);
    sandbox.run_until_stopped().await?;
    Ok(())
}

async fn copy(settings: &Settings, to: &str) -> anyhow::Result<()> {
    let copied = kubernaut::copy::copy_to_postgres(settings, to).await?;
    eprintln!(
        "kubernaut: copied {copied} to PostgreSQL; set database.url to it (KUBERNAUT__DATABASE__URL) and start kubernaut serve there"
    );
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let bind = settings.server.bind.clone();
    let application = Application::build(settings).await?;
    tracing::info!(%bind, port = application.port(), "kubernaut is serving");
    first_admin_token(&application).await?;
    application.run_until_stopped().await?;
    Ok(())
}

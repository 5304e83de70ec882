//! The `kubernaut` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use kubernaut::{Application, Settings, open_database, telemetry};

/// mimalloc rather than the system allocator: a page of releases allocates a few
/// thousand small strings, and glibc's malloc and free took a third of its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kubernaut: ship services to Kubernetes and get a verdict you can trust.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A settings file layered over the built-in defaults (config/default.toml).
    #[arg(long, global = true, env = "KUBERNAUT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Kubernaut server.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    #[command(flatten)]
    Client(kubernaut::cli::ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
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
    let command = match cli.command {
        Command::Client(command) => {
            return runtime.block_on(kubernaut::cli::run(command, Cli::command));
        }
        server => server,
    };
    let outcome = runtime.block_on(async {
        match command {
            Command::Serve => serve(settings).await,
            Command::Migrate => open_database(&settings, true).await.map(|_| ()),
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

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let bind = settings.server.bind.clone();
    let application = Application::build(settings).await?;
    tracing::info!(%bind, port = application.port(), "kubernaut is serving");
    application.run_until_stopped().await?;
    Ok(())
}

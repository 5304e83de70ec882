//! `kube-sim`: the simulated Kubernetes API server as a program, for demos and scripts.

use std::path::PathBuf;

use clap::Parser;
use kubernaut_testkit::sim::Simulator;

/// Serves a simulated Kubernetes API on 127.0.0.1 until interrupted.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where to write a kubeconfig for the simulator.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Number of simulated nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
}

#[tokio::main]
#[expect(
    clippy::print_stdout,
    reason = "the program reports its address to the user"
)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sim = Simulator::builder()
        .port(args.port)
        .time_scale(args.time_scale)
        .nodes(args.nodes)
        .start()
        .await?;
    if let Some(path) = &args.kubeconfig_out {
        sim.write_kubeconfig(path)?;
        println!("kubeconfig written to {}", path.display());
    }
    println!("kube-sim listening on {}", sim.url());
    tokio::signal::ctrl_c().await?;
    sim.shutdown();
    Ok(())
}

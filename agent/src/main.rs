//! `popcorn-agent`: the per-node daemon. It keeps authenticated links to the
//! other nodes, serves the control socket the `popcorn` CLI talks to, and
//! owns every process it runs or freezes.

mod control;
mod daemon;
mod init;
mod migrate;
mod monitor;
mod peers;
mod supervisor;
mod sync;
mod sys;
mod table;
mod tls;
mod traffic;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "popcorn-agent", version, about = "popcorn node agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent in the foreground.
    Start {
        /// Cluster file (default: $POPCORN_CONFIG, /etc/popcorn/cluster.toml,
        /// else a one-node cluster).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Which node of the cluster file this agent is.
        #[arg(long, env = "POPCORN_NODE")]
        node: Option<String>,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POPCORN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Start { config, node } => {
            init::become_init_if_pid1();
            daemon::run(config.as_deref(), node.as_deref())
        }
    };
    if let Err(e) = result {
        eprintln!("popcorn-agent: {e:#}");
        std::process::exit(1);
    }
}

//! `popcorn`: the command line of a popcorn cluster.

mod bench;
mod build;
mod client;
mod cluster;
mod run;
mod show;
mod top;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use client::Target;
use popcorn_proto::control::{MigrateRequest, Reply, Request};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "popcorn",
    version,
    about = "Move running programs between machines"
)]
struct Cli {
    /// Cluster file (default: $POPCORN_CONFIG, /etc/popcorn/cluster.toml, the local test cluster's, else a one-node cluster).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Node whose agent to talk to (default: $POPCORN_NODE, or `this` in the cluster file).
    #[arg(long, global = true, env = "POPCORN_NODE")]
    node: Option<String>,
    /// Control socket to use instead of the cluster file's.
    #[arg(long, global = true, env = "POPCORN_SOCKET", hide = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cluster members, their ISA, health and link round-trip time.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Start a program under popcorn; exits with its status.
    Run {
        /// Nodes that may host the program (the first is where it starts).
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        program: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Processes run through this node's agent and where they run.
    Ps {
        #[arg(long)]
        json: bool,
    },
    /// Stop every thread of a process (until `thaw`).
    Freeze { pid: i32 },
    /// Resume a frozen process.
    Thaw { pid: i32 },
    /// Show a process's captured state: threads, registers, memory map, files.
    Inspect {
        pid: i32,
        #[arg(long)]
        json: bool,
    },
    /// Move a running process to another node, live; prints the downtime.
    Migrate {
        pid: i32,
        /// Destination node.
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
        /// Fetch memory only when the program touches it (no background
        /// transfer; the origin keeps its copy until every page is fetched).
        #[arg(long, hide = true)]
        no_push: bool,
        /// Return once all of its memory has reached the destination, and
        /// say how long that took.
        #[arg(long)]
        wait: bool,
    },
    /// Send a signal (number or name, default TERM) to a process.
    Kill {
        pid: i32,
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Live monitor of the cluster: nodes, processes, threads, DSM traffic
    /// and migrations (m migrates the selected process; ? for keys).
    Top(top::TopArgs),
    /// Create, start and remove clusters.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Build C sources for x86_64 and aarch64 with common addresses, so the
    /// program can migrate between the two ISAs (APP.x86_64, APP.aarch64,
    /// APP.popcorn.json).
    Build(build::BuildArgs),
    /// Measure popcorn's mechanisms against their baselines (JSON).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() {
    // Like other Unix tools, die quietly when a pipe reader (`| head`) goes away.
    // SAFETY: resetting a signal disposition before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("POPCORN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let target = Target {
        config: cli.config,
        node: cli.node,
        socket: cli.socket,
    };
    match dispatch(&target, cli.command) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("popcorn: {e:#}");
            std::process::exit(1);
        }
    }
}

fn dispatch(target: &Target, command: Command) -> Result<i32> {
    match command {
        Command::Nodes { json } => match target.call(&Request::Nodes)? {
            Reply::Nodes { nodes } => show::nodes(&nodes, json),
            other => unexpected(other),
        },
        Command::Run {
            nodes,
            program,
            args,
        } => run::run(target, nodes, &program, &args),
        Command::Ps { json } => {
            let (_, node) = target.resolve()?;
            match target.call(&Request::Ps)? {
                Reply::Ps { processes } => show::processes(&node, &processes, json),
                other => unexpected(other),
            }
        }
        Command::Freeze { pid } => match target.call(&Request::Freeze { pid })? {
            Reply::Frozen { pid, threads } => {
                println!("froze process {pid} ({threads} threads)");
                Ok(0)
            }
            other => unexpected(other),
        },
        Command::Thaw { pid } => match target.call(&Request::Thaw { pid })? {
            Reply::Thawed { pid } => {
                println!("thawed process {pid}");
                Ok(0)
            }
            other => unexpected(other),
        },
        Command::Inspect { pid, json } => match target.call(&Request::Inspect { pid })? {
            Reply::Inspect { state } => show::inspect(&state, json),
            other => unexpected(other),
        },
        Command::Migrate {
            pid,
            to,
            json,
            no_push,
            wait,
        } => match target.call(&Request::Migrate(MigrateRequest {
            pid,
            to,
            no_push,
            wait,
        }))? {
            Reply::Migrated(report) => show::migration(&report, json),
            other => unexpected(other),
        },
        Command::Kill { pid, signal } => {
            let signal = show::parse_signal(&signal)?;
            match target.call(&Request::Kill { pid, signal })? {
                Reply::Done => Ok(0),
                other => unexpected(other),
            }
        }
        Command::Top(args) => top::run(target, args),
        Command::Cluster(cmd) => cluster::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Build(args) => build::run(args),
    }
}

fn unexpected(reply: Reply) -> Result<i32> {
    bail!("unexpected reply from the agent: {reply:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

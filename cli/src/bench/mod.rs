//! `popcorn bench`: measurements written as JSON, each next to the baseline
//! measured in the same run.
//!
//! - [`freeze`]: freeze + capture + thaw of a local process.
//! - [`migrate`]: live migration in a local two-node cluster: downtime,
//!   remote fault latency, background transfer throughput.
//! - [`xisa`]: translation per frame and cross-ISA migration latency.

mod cluster;
mod freeze;
mod migrate;
mod xisa;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Freeze + capture + thaw latency for 1, 8 and 64 threads.
    Freeze {
        /// Rounds per thread count.
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        /// Thread counts to measure.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1, 8, 64])]
        threads: Vec<usize>,
        /// Write JSON to this file as well as stdout.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// The process the freeze benchmark freezes (internal).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        threads: usize,
    },
    /// Live migration in a temporary local 2-node cluster: downtime by
    /// memory size, remote fault latency, background transfer throughput.
    Migrate(migrate::MigrateArgs),
    /// Moving a thread between x86_64 and aarch64: translation time per
    /// frame, and cross-ISA migrations in a temporary 3-node cluster next
    /// to same-ISA ones.
    Xisa(xisa::XisaArgs),
    /// The program the migration benchmark migrates (internal).
    #[command(hide = true)]
    Workload(migrate::WorkloadArgs),
    /// TCP baseline: echo and sink server (internal).
    #[command(hide = true)]
    NetServer {
        #[arg(long)]
        listen: String,
    },
    /// TCP baseline: round trips and streaming to a net-server (internal).
    #[command(hide = true)]
    NetClient(migrate::NetClientArgs),
}

#[derive(Serialize, serde::Deserialize, Clone, Copy)]
struct Stats {
    min_us: f64,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let at = |q: f64| us(samples[((samples.len() - 1) as f64 * q).round() as usize]);
        Stats {
            min_us: us(samples[0]),
            p50_us: at(0.5),
            p99_us: at(0.99),
            mean_us: samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64,
        }
    }
}

/// Prints `report` as JSON and writes it to `output` too.
fn write_report<T: Serialize>(report: &T, output: Option<&Path>) -> Result<i32> {
    let json = serde_json::to_string_pretty(report)?;
    println!("{json}");
    if let Some(path) = output {
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(0)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

pub fn run(cmd: BenchCommand) -> Result<i32> {
    match cmd {
        BenchCommand::Freeze {
            iterations,
            threads,
            output,
        } => freeze::run(iterations, threads, output.as_deref()),
        BenchCommand::Worker { threads } => freeze::worker(threads),
        BenchCommand::Migrate(args) => migrate::run(&args),
        BenchCommand::Xisa(args) => xisa::run(&args),
        BenchCommand::Workload(args) => migrate::workload(&args),
        BenchCommand::NetServer { listen } => migrate::net_server(&listen),
        BenchCommand::NetClient(args) => migrate::net_client(&args),
    }
}

//! `popcorn bench`: measurements written as JSON, each next to the baseline
//! measured in the same run.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use popcorn_checkpoint::FrozenProcess;
use serde::Serialize;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
}

#[derive(Serialize)]
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

#[derive(Serialize)]
struct FreezeResult {
    threads: usize,
    /// Baseline: seize + interrupt every thread, then detach (ptrace's floor).
    freeze_thaw: Stats,
    /// Plus registers, xstate, sigmask, rseq of every thread.
    freeze_capture_threads_thaw: Stats,
    /// Plus the whole process: memory map, pagemap, files, sigactions, ...
    freeze_capture_thaw: Stats,
    /// The floor for p50 of the full round, microseconds.
    floor_us: f64,
    meets_floor: bool,
}

#[derive(Serialize)]
struct FreezeReport {
    bench: &'static str,
    iterations: usize,
    kernel: String,
    results: Vec<FreezeResult>,
}

pub fn run(cmd: BenchCommand) -> Result<i32> {
    match cmd {
        BenchCommand::Freeze {
            iterations,
            threads,
            output,
        } => {
            if iterations == 0 {
                bail!("--iterations must be at least 1");
            }
            let mut results = Vec::new();
            for n in threads {
                results.push(bench_freeze(n, iterations)?);
            }
            let report = FreezeReport {
                bench: "freeze",
                iterations,
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
                results,
            };
            let json = serde_json::to_string_pretty(&report)?;
            println!("{json}");
            if let Some(path) = output {
                std::fs::write(&path, json + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(0)
        }
        BenchCommand::Worker { threads } => worker(threads),
    }
}

/// N threads: one spinning, the rest sleeping in short naps, like a typical
/// server; runs until killed.
fn worker(threads: usize) -> Result<i32> {
    for i in 1..threads.max(1) {
        std::thread::spawn(move || loop {
            if i == 1 {
                std::hint::black_box((0..10_000u64).sum::<u64>());
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bench_freeze(threads: usize, iterations: usize) -> Result<FreezeResult> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args(["bench", "worker", "--threads", &threads.to_string()])
        .stdin(Stdio::null())
        .spawn()
        .context("starting the benchmark worker")?;
    let worker = Worker(child);
    let pid = worker.0.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(format!("/proc/{pid}/task"))?.count() < threads {
        if Instant::now() > deadline {
            bail!("the benchmark worker did not start {threads} threads");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let round = |level: u8| -> Result<Duration> {
        let t = Instant::now();
        let mut f = FrozenProcess::freeze(pid)?;
        match level {
            0 => {}
            1 => {
                f.capture_threads()?;
            }
            _ => {
                f.capture()?;
            }
        }
        f.thaw()?;
        Ok(t.elapsed())
    };
    let mut samples: [Vec<Duration>; 3] = Default::default();
    // Interleave the three kinds so drift affects them alike.
    for _ in 0..iterations {
        for (level, s) in samples.iter_mut().enumerate() {
            s.push(round(level as u8)?);
        }
    }
    drop(worker);
    let [base, threads_only, full] = samples;
    let full = Stats::of(full);
    let floor_us = if threads <= 1 {
        1000.0
    } else {
        // 1 ms at 1 thread to 10 ms at 64, linear in between.
        1000.0 + 9000.0 * (threads as f64 - 1.0) / 63.0
    };
    Ok(FreezeResult {
        threads,
        freeze_thaw: Stats::of(base),
        freeze_capture_threads_thaw: Stats::of(threads_only),
        meets_floor: full.p50_us < floor_us,
        freeze_capture_thaw: full,
        floor_us,
    })
}

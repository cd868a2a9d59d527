//! `popcorn bench freeze`: freeze + capture + thaw latency of a local
//! process with N threads, next to the bare ptrace freeze/thaw.

use super::{write_report, Stats};
use anyhow::{bail, Context, Result};
use popcorn_checkpoint::FrozenProcess;
use serde::Serialize;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// N threads: one spinning, the rest sleeping in short naps, like a typical
/// server; runs until killed.
pub fn worker(threads: usize) -> Result<i32> {
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

pub fn run(iterations: usize, threads: Vec<usize>, output: Option<&Path>) -> Result<i32> {
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
        kernel: super::kernel(),
        results,
    };
    write_report(&report, output)
}

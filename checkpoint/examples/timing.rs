//! Times freeze + capture + thaw of a worker process with N threads (one
//! spinning, the rest napping 1 ms), like `popcorn bench freeze`:
//! `cargo run --release --example timing -- N [ROUNDS]`.

use popcorn_checkpoint::FrozenProcess;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn worker(threads: usize) -> ! {
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("worker") {
        worker(args[1].parse()?);
    }
    let threads: usize = args
        .first()
        .ok_or("usage: timing THREADS [ROUNDS]")?
        .parse()?;
    let rounds: usize = args.get(1).map_or(Ok(200), |s| s.parse())?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["worker", &threads.to_string()])
        .stdin(Stdio::null())
        .spawn()?;
    let pid = child.id() as i32;
    while std::fs::read_dir(format!("/proc/{pid}/task"))?.count() < threads {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut all: [Vec<Duration>; 3] = Default::default();
    for _ in 0..rounds {
        for (level, v) in all.iter_mut().enumerate() {
            let t = Instant::now();
            let mut f = FrozenProcess::freeze(pid)?;
            match level {
                0 => {}
                1 => drop(f.capture_threads()?),
                _ => drop(f.capture()?),
            }
            f.thaw()?;
            v.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    child.kill()?;
    child.wait()?;
    println!("{threads} threads:");
    for (name, mut v) in ["freeze+thaw", "+capture_threads", "+capture"]
        .into_iter()
        .zip(all)
    {
        v.sort();
        println!(
            "  {name:18} p50 {:>8.1} us  p90 {:>8.1} us",
            v[v.len() / 2].as_secs_f64() * 1e6,
            v[v.len() * 9 / 10].as_secs_f64() * 1e6
        );
    }
    Ok(())
}

//! eBPF tracing overhead on a fault-heavy loop, tracing on vs off in the
//! same run, printed as JSON (docs/BENCHMARKS.md, "eBPF tracing overhead").
//!
//! A worker process maps M MiB, writes one byte per page, drops the pages
//! with MADV_DONTNEED and repeats for S seconds (one fault per touch). Rounds
//! interleave three modes: `off` (nothing loaded), `attached` (programs
//! attached, worker not managed: the filter cost every process pays) and
//! `on` (worker managed). Then a managed process forks and reaps K children
//! to count ring-buffer events delivered and dropped.
//!
//! Run as root: `cargo run --release -p popcorn-ebpf --example tracing_overhead
//! [-- SECONDS ROUNDS MIB FORKS]`.

use std::time::{Duration, Instant};

use popcorn_ebpf::{ProcessEvent, Tracer};
use serde_json::json;

const PAGE: usize = 4096;

/// The worker, in the forked child: async-signal-safe calls only.
fn worker(go: i32, result: i32, seconds: f64, bytes: usize, forks: u32) -> ! {
    let mut byte = 0u8;
    // SAFETY: every call below is a plain system call on memory and fds this
    // child owns; the child ends with _exit and never returns into Rust code
    // that could touch state shared with the parent's threads.
    unsafe {
        if libc::read(go, (&mut byte as *mut u8).cast(), 1) != 1 {
            libc::_exit(2);
        }
        let mut touches: u64 = 0;
        if forks > 0 {
            for _ in 0..forks {
                let pid = libc::fork();
                if pid == 0 {
                    libc::_exit(0);
                }
                if pid > 0 {
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
            }
        } else {
            let p = libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                libc::_exit(3);
            }
            let base = p.cast::<u8>();
            let start = now();
            while now() - start < seconds {
                let mut off = 0;
                while off < bytes {
                    base.add(off).write_volatile(1);
                    off += PAGE;
                }
                touches += (bytes / PAGE) as u64;
                libc::madvise(p, bytes, libc::MADV_DONTNEED);
            }
        }
        let b = touches.to_ne_bytes();
        libc::write(result, b.as_ptr().cast(), b.len());
        libc::_exit(0);
    }
}

/// CLOCK_MONOTONIC seconds (async-signal-safe).
fn now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2");
    (fds[0], fds[1])
}

struct RoundResult {
    touches: u64,
    secs: f64,
    counted_faults: Option<u64>,
    events: Vec<ProcessEvent>,
}

/// Forks a worker, optionally manages it, starts it and waits for its
/// result while draining events every 5 ms.
fn round(
    tracer: Option<&mut Tracer>,
    manage: bool,
    seconds: f64,
    bytes: usize,
    forks: u32,
) -> RoundResult {
    let (go_r, go_w) = pipe();
    let (res_r, res_w) = pipe();
    // SAFETY: this process has no other threads; the child runs `worker`,
    // which only makes system calls and ends with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        worker(go_r, res_w, seconds, bytes, forks);
    }
    // SAFETY: closing our copies of the child's ends.
    unsafe {
        libc::close(go_r);
        libc::close(res_w);
    }
    let mut tracer = tracer;
    if manage {
        if let Some(t) = tracer.as_deref_mut() {
            t.manage(pid as u32).expect("manage");
        }
    }
    let started = Instant::now();
    // SAFETY: writes one byte from a valid buffer to our pipe end.
    unsafe { libc::write(go_w, [1u8].as_ptr().cast(), 1) };
    let mut events = Vec::new();
    let mut buf = [0u8; 8];
    loop {
        let mut pfd = libc::pollfd {
            fd: res_r,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 5) };
        if let Some(t) = tracer.as_deref_mut() {
            events.extend(t.drain_events());
        }
        if ready > 0 {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // SAFETY: reads into a valid 8-byte buffer, then reaps our child.
    let n = unsafe { libc::read(res_r, buf.as_mut_ptr().cast(), 8) };
    assert_eq!(n, 8, "worker result");
    let counted_faults = tracer.as_deref_mut().filter(|_| manage).map(|t| {
        let s = t.snapshot().expect("snapshot");
        s.process_faults(pid as u32)
    });
    // SAFETY: reaps our own child; closes our fds.
    unsafe {
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        libc::close(go_w);
        libc::close(res_r);
    }
    if let Some(t) = tracer {
        std::thread::sleep(Duration::from_millis(20));
        events.extend(t.drain_events());
        let _ = t.unmanage(pid as u32);
    }
    RoundResult {
        touches: u64::from_ne_bytes(buf),
        secs,
        counted_faults,
        events,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let seconds = arg(0, 2.0);
    let rounds = arg(1, 3.0) as usize;
    let mib = arg(2, 64.0) as usize;
    let forks = arg(3, 2000.0) as u32;
    let bytes = mib << 20;

    let mut rows = Vec::new();
    let (mut off, mut attached, mut on) = (Vec::new(), Vec::new(), Vec::new());
    let (mut touches_on, mut counted_on) = (0u64, 0u64);
    for r in 0..rounds {
        for mode in ["off", "attached", "on"] {
            let mut tracer =
                (mode != "off").then(|| Tracer::load().expect("load the tracer (root?)"));
            let res = round(tracer.as_mut(), mode == "on", seconds, bytes, 0);
            let rate = res.touches as f64 / res.secs;
            match mode {
                "off" => off.push(rate),
                "attached" => attached.push(rate),
                _ => {
                    on.push(rate);
                    touches_on += res.touches;
                    counted_on += res.counted_faults.unwrap_or(0);
                }
            }
            let drops = tracer
                .as_ref()
                .map(|t| t.counters().expect("counters").ring_drops);
            rows.push(json!({
                "round": r, "mode": mode, "touches": res.touches,
                "seconds": res.secs, "faults_per_s": rate,
                "faults_counted": res.counted_faults, "ring_drops": drops,
            }));
        }
    }

    // Ring-buffer events: a managed process forks and reaps `forks` children.
    let mut tracer = Tracer::load().expect("load the tracer");
    let res = round(Some(&mut tracer), true, 0.0, 0, forks);
    let c = tracer.counters().expect("counters");
    let fork_events = res
        .events
        .iter()
        .filter(|e| matches!(e, ProcessEvent::Fork { .. }))
        .count();
    let exit_events = res
        .events
        .iter()
        .filter(|e| matches!(e, ProcessEvent::Exit { .. }))
        .count();

    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        json!([lo, hi])
    };
    let ranges = json!({ "off": range(&off), "attached": range(&attached), "on": range(&on) });
    let (m_off, m_att, m_on) = (median(off), median(attached), median(on));
    let out = json!({
        "benchmark": "ebpf_tracing_overhead",
        "seconds_per_round": seconds, "rounds": rounds, "mib": mib,
        "faults_per_s_median": { "off": m_off, "attached": m_att, "on": m_on },
        "faults_per_s_min_max": ranges,
        "slowdown_on_vs_off": 1.0 - m_on / m_off,
        "slowdown_attached_vs_off": 1.0 - m_att / m_off,
        "faults_counted_vs_touches": { "touches": touches_on, "counted": counted_on },
        "events": {
            "forks": forks,
            "expected": 2 * forks as u64 + 1,
            "delivered": res.events.len(),
            "fork": fork_events, "exit": exit_events,
            "ring_drops": c.ring_drops, "map_full": c.map_full,
        },
        "runs": rows,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}

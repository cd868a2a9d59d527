//! `popcorn bench migrate`: live migration between the two nodes of a
//! temporary local cluster (separate network and PID namespaces, real TLS
//! peer links), each figure next to its baseline from the same run:
//!
//! - downtime (freeze → running at the destination) for several memory
//!   sizes, which must stay flat;
//! - remote fault latency with the background transfer off, next to a raw
//!   userfaultfd round trip and a raw TCP round trip on the same link;
//! - background transfer throughput, next to raw TCP streaming on the link
//!   and to how fast this machine fills fresh memory locally (`UFFDIO_COPY`
//!   as the pager does it, and a plain first-touch `memcpy`).

use super::cluster::Cluster;
use super::{write_report, Stats};
use anyhow::{anyhow, bail, Context, Result};
use popcorn_proto::control::ProcessInfo;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Stdio};
use std::time::{Duration, Instant};

const CLUSTER: &str = "bench";
const DIR: &str = "/run/popcorn-bench";
const NET_PORT: u16 = 7990;
const PAGE: usize = 4096;
/// Fresh memory filled by the local baselines, and the bytes per copy (the
/// pager's largest request).
const FILL_TOTAL: usize = 512 << 20;
const FILL_BATCH: usize = 4 << 20;

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// Resident memory sizes to migrate, MiB.
    #[arg(long, value_delimiter = ',', default_values_t = vec![16, 256, 2048])]
    sizes_mib: Vec<usize>,
    /// Migrations per size (alternating a→b and b→a).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Pages the fault benchmark touches after migrating.
    #[arg(long, default_value_t = 2000)]
    faults: usize,
    /// Write JSON to this file as well as stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Leave the cluster up afterwards (its logs are in /run/popcorn-bench/logs).
    #[arg(long)]
    keep_cluster: bool,
}

#[derive(clap::Args)]
pub struct WorkloadArgs {
    /// Memory to fill, MiB.
    #[arg(long)]
    mib: usize,
    /// After SIGUSR1, touch this many random pages once each, timing every
    /// touch, print the statistics and exit.
    #[arg(long)]
    touches: Option<usize>,
}

#[derive(clap::Args)]
pub struct NetClientArgs {
    #[arg(long)]
    connect: String,
    #[arg(long, default_value_t = 2000)]
    round_trips: usize,
    #[arg(long, default_value_t = 1024)]
    stream_mib: usize,
}

#[derive(Serialize, Deserialize)]
struct NetResult {
    round_trip: Stats,
    stream_mib_s: f64,
}

#[derive(Serialize)]
struct Downtime {
    rss_mib: usize,
    downtime_ms: Vec<f64>,
    p50_ms: f64,
    /// Milliseconds until all memory had reached the destination.
    transfer_ms: Vec<u64>,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    kernel: String,
    downtime: Vec<Downtime>,
    downtime_floor_ms: f64,
    downtime_meets_floor: bool,
    /// Largest p50 downtime over the smallest (flat is close to 1).
    downtime_growth: f64,
    remote_fault: Stats,
    baseline_uffd_round_trip: Stats,
    baseline_tcp_round_trip: Stats,
    /// p50 remote fault over (uffd + TCP round trip p50); floor 1.5.
    remote_fault_ratio: f64,
    remote_fault_meets_floor: bool,
    transfer_mib_s: f64,
    baseline_tcp_stream_mib_s: f64,
    /// `UFFDIO_COPY` into fresh registered memory, 4 MiB per copy, no network.
    baseline_uffd_copy_mib_s: f64,
    /// A plain `memcpy` into fresh anonymous memory.
    baseline_first_touch_mib_s: f64,
    /// Transfer over raw TCP streaming; floor 0.7.
    transfer_ratio: f64,
    transfer_meets_floor: bool,
    /// Transfer over the local `UFFDIO_COPY` rate (its ceiling here).
    transfer_uffd_copy_ratio: f64,
}

/// A workload started with `popcorn run` on node a; killed on drop.
struct Workload<'c> {
    cluster: &'c Cluster,
    child: Child,
    out: BufReader<ChildStdout>,
    pid: i32,
}

impl<'c> Workload<'c> {
    fn start(cluster: &'c Cluster, args: &[&str]) -> Result<Workload<'c>> {
        let exe = cluster.exe.to_string_lossy().into_owned();
        let mut all = vec!["run", exe.as_str(), "bench", "workload"];
        all.extend_from_slice(args);
        let mut child = cluster
            .popcorn("a", &all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut w = Workload {
            cluster,
            child,
            out: BufReader::new(stdout),
            pid: 0,
        };
        w.line_starting("ready")?;
        let ps: Vec<ProcessInfo> =
            serde_json::from_slice(&cluster.popcorn("a", &["ps", "--json"]).output()?.stdout)?;
        w.pid = ps
            .iter()
            .filter(|p| p.exit.is_none() && p.argv.iter().any(|a| a == "workload"))
            .map(|p| p.pid)
            .max()
            .ok_or_else(|| anyhow!("the workload is not in popcorn ps"))?;
        Ok(w)
    }

    fn line_starting(&mut self, prefix: &str) -> Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line)? == 0 {
                bail!("the workload ended before printing {prefix:?}");
            }
            if line.starts_with(prefix) {
                return Ok(line.trim_end().to_owned());
            }
        }
    }
}

impl Drop for Workload<'_> {
    fn drop(&mut self) {
        if self.pid > 0 {
            let _ = self
                .cluster
                .popcorn("a", &["kill", &self.pid.to_string(), "KILL"])
                .output();
        }
        let _ = self.child.wait();
    }
}

pub fn run(args: &MigrateArgs) -> Result<i32> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark creates a local cluster (namespaces): run it as root");
    }
    if args.sizes_mib.is_empty() || args.rounds == 0 || args.faults == 0 {
        bail!("--sizes-mib, --rounds and --faults must not be empty or zero");
    }
    let exe = std::env::current_exe()?;
    let cluster = Cluster::up(&exe, CLUSTER, DIR, 2, &[], args.keep_cluster)?;
    let exe_s = exe.to_string_lossy().into_owned();

    // Baselines on the same link and machine.
    let b_ip = cluster.address("b")?;
    let listen = format!("{b_ip}:{NET_PORT}");
    let mut server = cluster
        .exec("b", &[&exe_s, "bench", "net-server", "--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let net = cluster
        .exec("a", &[&exe_s, "bench", "net-client", "--connect", &listen])
        .output();
    // The server exits after the client's two connections; `kill` only
    // reaches the `cluster exec` wrapper, so it is the fallback.
    let _ = server.kill();
    let _ = server.wait();
    let net = net?;
    if !net.status.success() {
        bail!("TCP baseline: {}", String::from_utf8_lossy(&net.stderr));
    }
    let net: NetResult = serde_json::from_slice(&net.stdout).context("TCP baseline output")?;
    let uffd = Stats::of(popcorn_dsm::baseline::uffd_round_trips(args.faults)?);
    let uffd_copy = popcorn_dsm::baseline::uffd_copy_mib_s(FILL_TOTAL, FILL_BATCH)?;
    let first_touch = popcorn_dsm::baseline::first_touch_mib_s(FILL_TOTAL, FILL_BATCH)?;
    eprintln!("fresh memory: UFFDIO_COPY {uffd_copy:.0} MiB/s, memcpy {first_touch:.0} MiB/s");

    // Downtime and background transfer by size.
    let mut downtime = Vec::new();
    let mut transfer = (0u64, 0u64);
    for &mib in &args.sizes_mib {
        let mib_s = mib.to_string();
        let w = Workload::start(&cluster, &["--mib", &mib_s])?;
        let mut d = Downtime {
            rss_mib: mib,
            downtime_ms: Vec::new(),
            p50_ms: 0.0,
            transfer_ms: Vec::new(),
        };
        let mut at = "a";
        for _ in 0..args.rounds {
            let to = if at == "a" { "b" } else { "a" };
            let r = cluster.migrate("a", w.pid, to, &["--wait"])?;
            d.downtime_ms.push(r.downtime_us as f64 / 1000.0);
            let ms = r.transfer_ms.unwrap_or(0);
            d.transfer_ms.push(ms);
            if mib == *args.sizes_mib.iter().max().unwrap_or(&mib) {
                transfer.0 += r.pages_at_origin * PAGE as u64;
                transfer.1 += ms;
            }
            at = to;
        }
        let mut sorted = d.downtime_ms.clone();
        sorted.sort_by(f64::total_cmp);
        d.p50_ms = sorted[sorted.len() / 2];
        eprintln!("{mib} MiB: downtime {:?} ms", d.downtime_ms);
        downtime.push(d);
        drop(w);
    }

    // Remote faults, background transfer off.
    let touches = args.faults.to_string();
    let mut w = Workload::start(&cluster, &["--mib", "64", "--touches", &touches])?;
    cluster.migrate("a", w.pid, "b", &["--no-push"])?;
    let out = cluster
        .popcorn("a", &["kill", &w.pid.to_string(), "USR1"])
        .output()?;
    if !out.status.success() {
        bail!(
            "signalling the workload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = w.line_starting("faults ")?;
    let fault: Stats = serde_json::from_str(&line["faults ".len()..])?;
    w.pid = 0;
    drop(w);

    let floor_ms = 20.0;
    let p50s: Vec<f64> = downtime.iter().map(|d| d.p50_ms).collect();
    let min = p50s.iter().copied().fold(f64::INFINITY, f64::min);
    let max = p50s.iter().copied().fold(0.0, f64::max);
    let ratio = fault.p50_us / (uffd.p50_us + net.round_trip.p50_us);
    let transfer_mib_s = if transfer.1 == 0 {
        0.0
    } else {
        transfer.0 as f64 / (1 << 20) as f64 / (transfer.1 as f64 / 1000.0)
    };
    let report = Report {
        bench: "migrate",
        kernel: super::kernel(),
        downtime_meets_floor: max < floor_ms,
        downtime_floor_ms: floor_ms,
        downtime_growth: max / min.max(0.001),
        downtime,
        remote_fault: fault,
        baseline_uffd_round_trip: uffd,
        baseline_tcp_round_trip: net.round_trip,
        remote_fault_ratio: ratio,
        remote_fault_meets_floor: ratio <= 1.5,
        transfer_mib_s,
        baseline_tcp_stream_mib_s: net.stream_mib_s,
        baseline_uffd_copy_mib_s: uffd_copy,
        baseline_first_touch_mib_s: first_touch,
        transfer_ratio: transfer_mib_s / net.stream_mib_s,
        transfer_meets_floor: transfer_mib_s >= 0.7 * net.stream_mib_s,
        transfer_uffd_copy_ratio: transfer_mib_s / uffd_copy,
    };
    write_report(&report, args.output.as_deref())
}

/// The migrated program: fills memory, says "ready", then either idles
/// until killed or, after SIGUSR1, times first touches of random pages.
pub fn workload(args: &WorkloadArgs) -> Result<i32> {
    // SAFETY: a sigset on the stack, filled and applied to this thread
    // before any other thread exists.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let pages = (args.mib << 20) / PAGE;
    let mut mem = vec![0u8; pages * PAGE];
    for (i, p) in mem.chunks_mut(PAGE).enumerate() {
        p.fill((i % 251) as u8 + 1);
    }
    println!("ready");
    std::io::stdout().flush()?;
    let Some(touches) = args.touches else {
        loop {
            std::thread::sleep(Duration::from_millis(10));
            std::hint::black_box(&mem);
        }
    };
    // SAFETY: waits for the blocked SIGUSR1 with a sigset built here.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
    // A random order of distinct pages (xorshift, Fisher-Yates).
    let mut order: Vec<usize> = (0..pages).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut lat = Vec::with_capacity(touches);
    let mut sum = 0u64;
    for &p in order.iter().take(touches.min(pages)) {
        let t = Instant::now();
        sum += u64::from(std::hint::black_box(mem[p * PAGE]));
        lat.push(t.elapsed());
        if mem[p * PAGE] != (p % 251) as u8 + 1 {
            bail!("page {p} has the wrong content after migration");
        }
    }
    std::hint::black_box(sum);
    let stats: Stats = Stats::of(lat);
    println!("faults {}", serde_json::to_string(&stats)?);
    std::io::stdout().flush()?;
    Ok(0)
}

/// Serves the two connections of one `net-client` run, then exits: the
/// first (`p`) is echoed, the second (`s`) drained and answered with one
/// byte at its end.
pub fn net_server(listen: &str) -> Result<i32> {
    let l = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    for _ in 0..2 {
        let (mut c, _) = l.accept()?;
        c.set_nodelay(true)?;
        let mut mode = [0u8; 1];
        c.read_exact(&mut mode)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = c.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if mode[0] == b'p' {
                c.write_all(&buf[..n])?;
            }
        }
        if mode[0] == b's' {
            c.write_all(b"k")?;
        }
    }
    Ok(0)
}

pub fn net_client(args: &NetClientArgs) -> Result<i32> {
    let mut c = TcpStream::connect(&args.connect)?;
    c.set_nodelay(true)?;
    c.write_all(b"p")?;
    let mut rtt = Vec::with_capacity(args.round_trips);
    let mut b = [0u8; 8];
    for i in 0..args.round_trips.max(1) {
        let t = Instant::now();
        c.write_all(&(i as u64).to_ne_bytes())?;
        c.read_exact(&mut b)?;
        rtt.push(t.elapsed());
    }
    drop(c);
    let mut s = TcpStream::connect(&args.connect)?;
    s.write_all(b"s")?;
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    for _ in 0..args.stream_mib {
        s.write_all(&chunk)?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)?;
    let secs = t.elapsed().as_secs_f64();
    let r = NetResult {
        round_trip: Stats::of(rtt),
        stream_mib_s: args.stream_mib as f64 / secs,
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(0)
}

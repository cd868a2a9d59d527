//! `popcorn bench xisa`: moving a thread between x86_64 and aarch64, each
//! figure next to its baseline from the same run:
//!
//! - translation time per frame (`popcorn_isa::translate` only), both
//!   ways, on real threads of the test program stopped 14 calls deep (the
//!   x86_64 one native under ptrace, the aarch64 one under qemu-aarch64's
//!   GDB stub), next to reading that thread (registers and stack);
//! - end-to-end cross-ISA migration in a temporary 3-node local cluster
//!   (a and c x86_64, b aarch64 under qemu-user): downtime and the whole
//!   `popcorn migrate` (waiting for the migration point included), next to
//!   same-ISA migrations of the same program between a and c.

use super::cluster::Cluster;
use super::{kernel, write_report, Stats};
use anyhow::{anyhow, bail, Context, Result};
use popcorn_checkpoint::restore::{spawn_program, Exec, WorkerSpec};
use popcorn_checkpoint::xisa::emulated::{qemu_command, Emulated};
use popcorn_checkpoint::xisa::ThreadControl;
use popcorn_isa::{App, Binary, Isa, StackPlacement, ThreadSnapshot};
use popcorn_proto::control::ProcessInfo;
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The program moved: the end-to-end test's (tests/programs/xisa).
const PROGRAM: &str = include_str!("../../../tests/programs/xisa/xisa_kernels.c");
const CLUSTER: &str = "benchx";
const DIR: &str = "/run/popcorn-bench-xisa";

#[derive(clap::Args)]
pub struct XisaArgs {
    /// Translations timed per direction.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Migrations per kind (cross-ISA, same-ISA) in the cluster.
    #[arg(long, default_value_t = 4)]
    migrations: usize,
    /// Write JSON to this file as well as stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Leave the cluster up afterwards (logs in /run/popcorn-bench-xisa/logs).
    #[arg(long)]
    keep_cluster: bool,
}

#[derive(Serialize)]
struct Translation {
    from: Isa,
    to: Isa,
    frames: usize,
    /// `translate` time divided by the frames moved.
    per_frame: Stats,
    total: Stats,
    /// Reading the same stopped thread's registers and stack.
    baseline_read_thread: Stats,
    per_frame_floor_us: f64,
    meets_floor: bool,
}

#[derive(Serialize)]
struct Moves {
    kind: &'static str,
    hops: Vec<String>,
    /// Frozen at the migration point → running at the destination.
    downtime_ms: Vec<f64>,
    p50_downtime_ms: f64,
    /// The whole `popcorn migrate` command.
    command_ms: Vec<f64>,
    p50_command_ms: f64,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    kernel: String,
    translation: Vec<Translation>,
    cross_isa: Moves,
    baseline_same_isa: Moves,
}

/// Builds the program with this `popcorn` into `dir`; returns `dir/app`.
fn build(exe: &Path, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let src = dir.join("xisa_kernels.c");
    std::fs::write(&src, PROGRAM)?;
    let app = dir.join("app");
    let out = std::process::Command::new(exe)
        .arg("build")
        .arg(&src)
        .arg("-o")
        .arg(&app)
        .output()?;
    if !out.status.success() {
        bail!("popcorn build: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(app)
}

fn exec(program: &Path, argv: &[String]) -> Result<Exec> {
    let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    Ok(Exec::new(&program.to_string_lossy(), argv, &env, "/")?)
}

/// A thread of the program on `isa`, stopped deep in its pause at a
/// migration point (`at_point`) or at the entry of `main`.
enum Stopped {
    Native(popcorn_checkpoint::FrozenProcess),
    Emulated(Emulated, i32),
}

impl Stopped {
    fn start(app: &App, isa: Isa, at_point: bool, dir: &Path) -> Result<Stopped> {
        let exe = app.binary(isa).map_err(|e| anyhow!(e))?;
        let args: Vec<String> = vec!["app".into(), "1000000".into(), "50".into()];
        let spec = WorkerSpec {
            fds: vec![(2, 2)],
            ..WorkerSpec::default()
        };
        let main = app.main().map_err(|e| anyhow!(e))?;
        let point = app.migration_point(isa).map_err(|e| anyhow!(e))?;
        let wait = Duration::from_secs(30);
        if isa == Isa::native() {
            let mut p = spawn_program(&spec, &exec(&exe, &args)?)?;
            p.run_to_address(main, wait)?;
            if at_point && !p.run_to_migration_point(&point, wait)? {
                bail!("the program did not reach a migration point");
            }
            return Ok(Stopped::Native(p));
        }
        let socket = dir.join(format!("gdb-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let (qemu, options) = qemu_command(isa, &socket);
        let mut argv = vec![qemu.clone()];
        argv.extend(options);
        argv.push(exe.to_string_lossy().into_owned());
        argv.extend(args.into_iter().skip(1));
        let qemu_path = which(&qemu).ok_or_else(|| anyhow!("{qemu} is not installed"))?;
        let spawned = spawn_program(&spec, &exec(&qemu_path, &argv)?)?;
        let pid = spawned.pid();
        spawned.thaw()?;
        let mut e = Emulated::connect(pid, isa, &socket, Duration::from_secs(10))?;
        let _ = std::fs::remove_file(&socket);
        e.run_to_address(main, wait)?;
        if at_point {
            e.resume()?;
            std::thread::sleep(Duration::from_millis(300));
            if !e.run_to_migration_point(&point, wait)? {
                bail!("the emulated program did not reach a migration point");
            }
        }
        Ok(Stopped::Emulated(e, pid))
    }

    fn snapshot(&mut self) -> Result<ThreadSnapshot> {
        Ok(match self {
            Stopped::Native(p) => p.main_thread().snapshot()?,
            Stopped::Emulated(e, _) => e.snapshot()?,
        })
    }

    fn pid(&self) -> i32 {
        match self {
            Stopped::Native(p) => p.pid(),
            Stopped::Emulated(_, pid) => *pid,
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let pid = self.pid();
        // SAFETY: plain integer arguments; our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: collects our own child.
        unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Times `translate` from a thread stopped at a migration point on `from`
/// onto a fresh `to` process at `main`.
fn translation(
    app: &App,
    from: Isa,
    to: Isa,
    iterations: usize,
    dir: &Path,
) -> Result<Translation> {
    let src_bin = Binary::load(app.binary(from).map_err(|e| anyhow!(e))?)?;
    let dst_bin = Binary::load(app.binary(to).map_err(|e| anyhow!(e))?)?;
    let mut source = Stopped::start(app, from, true, dir)?;
    let mut dest = Stopped::start(app, to, false, dir)?;
    let src = source.snapshot()?;
    let placement = StackPlacement::at_function_entry(&dest.snapshot()?, &dst_bin)?;
    let mut total = Vec::with_capacity(iterations);
    let mut read = Vec::with_capacity(iterations);
    let mut frames = 0;
    for _ in 0..iterations {
        let t = Instant::now();
        let x = popcorn_isa::translate(&src, &src_bin, &dst_bin, &placement, &Default::default())?;
        total.push(t.elapsed());
        frames = x.frames.len();
        let t = Instant::now();
        source.snapshot()?;
        read.push(t.elapsed());
    }
    let per_frame: Vec<Duration> = total.iter().map(|d| *d / frames.max(1) as u32).collect();
    let per_frame = Stats::of(per_frame);
    Ok(Translation {
        from,
        to,
        frames,
        meets_floor: per_frame.p50_us < 50.0,
        per_frame,
        total: Stats::of(total),
        baseline_read_thread: Stats::of(read),
        per_frame_floor_us: 50.0,
    })
}

/// The program under `popcorn run` on node a; killed on drop.
struct Running<'c> {
    cluster: &'c Cluster,
    child: Child,
    pid: i32,
}

impl<'c> Running<'c> {
    fn start(cluster: &'c Cluster, app: &Path) -> Result<Running<'c>> {
        let app = app.to_string_lossy().into_owned();
        let mut child = cluster
            .popcorn("a", &["run", "--nodes", "a,b,c", &app, "1000000", "20"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(out).lines();
        match lines.next() {
            Some(Ok(l)) if l.starts_with("round 0:") => {}
            other => bail!("the program printed {other:?}"),
        }
        // Keep reading so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let ps: Vec<ProcessInfo> =
            serde_json::from_slice(&cluster.popcorn("a", &["ps", "--json"]).output()?.stdout)?;
        let pid = ps
            .iter()
            .filter(|p| p.exit.is_none() && p.argv.first().is_some_and(|a| a.ends_with("app")))
            .map(|p| p.pid)
            .max()
            .ok_or_else(|| anyhow!("the program is not in popcorn ps"))?;
        Ok(Running {
            cluster,
            child,
            pid,
        })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = self
            .cluster
            .popcorn("a", &["kill", &self.pid.to_string(), "KILL"])
            .output();
        let _ = self.child.wait();
    }
}

/// Moves the program along `hops` (`from → to`, via the home node a).
fn moves(cluster: &Cluster, pid: i32, kind: &'static str, hops: &[(&str, &str)]) -> Result<Moves> {
    let mut downtime = Vec::new();
    let mut command = Vec::new();
    for (from, to) in hops {
        let t = Instant::now();
        let r = cluster
            .migrate("a", pid, to, &[])
            .with_context(|| format!("{kind} move {from} → {to}"))?;
        command.push(t.elapsed().as_secs_f64() * 1e3);
        downtime.push(r.downtime_us as f64 / 1e3);
        std::thread::sleep(Duration::from_millis(300));
    }
    let p50 = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(0.0)
    };
    Ok(Moves {
        kind,
        hops: hops.iter().map(|(f, t)| format!("{f}→{t}")).collect(),
        p50_downtime_ms: p50(&downtime),
        p50_command_ms: p50(&command),
        downtime_ms: downtime,
        command_ms: command,
    })
}

pub fn run(args: &XisaArgs) -> Result<i32> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark creates a local cluster (namespaces): run it as root");
    }
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("popcorn-bench-xisa-{}", std::process::id()));
    let app_path = build(&exe, &dir)?;
    let app = App::load(&dir.join("app.popcorn.json")).map_err(|e| anyhow!(e))?;
    let translation = vec![
        translation(&app, Isa::X86_64, Isa::Aarch64, args.iterations, &dir)?,
        translation(&app, Isa::Aarch64, Isa::X86_64, args.iterations, &dir)?,
    ];
    let cluster = Cluster::up(
        &exe,
        CLUSTER,
        DIR,
        3,
        &["--isa", "b=aarch64"],
        args.keep_cluster,
    )?;
    let prog = Running::start(&cluster, &app_path)?;
    let n = args.migrations.max(1);
    let cross: Vec<(&str, &str)> = (0..n)
        .map(|i| if i % 2 == 0 { ("a", "b") } else { ("b", "a") })
        .collect();
    let same: Vec<(&str, &str)> = (0..n)
        .map(|i| if i % 2 == 0 { ("a", "c") } else { ("c", "a") })
        .collect();
    // An odd count leaves it away from a: bring it home between the kinds.
    let mut cross_isa = moves(&cluster, prog.pid, "x86_64 ⇄ aarch64", &cross)?;
    if n % 2 == 1 {
        cluster.migrate("a", prog.pid, "a", &[])?;
    }
    let baseline_same_isa = moves(&cluster, prog.pid, "x86_64 ⇄ x86_64", &same)?;
    cross_isa.kind = "x86_64 ⇄ aarch64 (qemu-user)";
    drop(prog);
    let _ = std::fs::remove_dir_all(&dir);
    write_report(
        &Report {
            bench: "xisa",
            kernel: kernel(),
            translation,
            cross_isa,
            baseline_same_isa,
        },
        args.output.as_deref(),
    )
}

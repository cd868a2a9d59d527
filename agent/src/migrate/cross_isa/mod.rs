//! Moving a program built with `popcorn build` between nodes of different
//! ISAs (DESIGN §7, docs/CROSS_ISA.md). The origin asks the program to stop
//! at its next migration point (its supervisor thread: ptrace natively,
//! the GDB stub when emulated), reads the thread's registers and stack and
//! the program's data window, and offers them. The destination starts the
//! other ISA's executable (natively or under qemu-user) with the same PID,
//! runs it to `main`, translates the thread (`popcorn_isa::translate`),
//! writes the data window, the stack and the registers, empties the heap
//! arena and registers it with a userfaultfd served by a pager, as in a
//! same-ISA move: the heap is pulled from the stopped origin on demand and
//! in the background. The rest (commit, abort, stdio hub, exit, signals,
//! `PushDone`) is the same-ISA protocol's.

use super::channel::PageChannel;
use super::incoming::{uffd_in, Pending};
use super::pager::{self, PagerHandle, PagerSpec};
use super::relay::{HostRelay, StdinBacklog};
use super::{decode_answer, encode, lock, Migrations, PeerAnswer, PeerCall};
use crate::supervisor::{self, Handle, Restored};
use popcorn_checkpoint::restore::{spawn_program, Exec, WorkerSpec};
use popcorn_checkpoint::xisa::emulated::{qemu_command, Emulated};
use popcorn_checkpoint::xisa::{self, ThreadControl};
use popcorn_checkpoint::{FrozenProcess, Vma};
use popcorn_dsm::uffd::Uffd;
use popcorn_isa::app::App;
use popcorn_isa::{Binary, Isa, RegisterFile, StackImage, StackPlacement, ThreadSnapshot};
use popcorn_proto::control::{MigrationReport, ProcessInfo};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long the origin waits for the program to reach a migration point.
pub const STOP_WAIT: Duration = Duration::from_secs(5);
/// How long a fresh destination process may take to reach `main`
/// (emulated start-up included).
const START_WAIT: Duration = Duration::from_secs(30);
/// Memory pages: the arena's used part is rounded up to this.
const PAGE: u64 = 4096;
/// x86_64 system call numbers (both a native destination and qemu-user
/// are x86_64 processes on this machine).
const SYS_MADVISE: i64 = 28;
const MADV_DONTNEED: u64 = 4;

/// Everything the destination needs to continue a program on its ISA.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossIsaOffer {
    pub pid: i32,
    /// Node that started the process and owns its terminal.
    pub home: String,
    pub uid: u32,
    pub gid: u32,
    pub argv: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub cwd: String,
    pub nodes: Vec<String>,
    #[serde(default)]
    pub stdin: StdinBacklog,
    /// The program's `APP.popcorn.json` (the same path on every node).
    pub app: PathBuf,
    /// The thread's registers at the migration point (the origin's ISA), as
    /// JSON text: the call is an internally tagged enum, whose buffering
    /// cannot carry the 128-bit vector registers.
    pub regs: String,
    /// `(address, length)` of the bytes attached after the JSON, in order:
    /// the thread's stack, then memory to write at the destination (the
    /// data window).
    pub attached: Vec<(u64, u64)>,
    /// `(address, length)` of the heap arena's used part, pulled from the
    /// origin on demand.
    pub heap: (u64, u64),
}

/// The translator's view of an executable, loaded once per version of the
/// file (loading parses all DWARF: milliseconds).
fn binary(path: &Path) -> Result<Arc<Binary>, String> {
    type Cache = Mutex<HashMap<PathBuf, (Option<SystemTime>, Arc<Binary>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if let Some((t, b)) = lock(cache).get(path) {
        if *t == mtime {
            return Ok(b.clone());
        }
    }
    let b = Arc::new(Binary::load(path).map_err(|e| format!("{}: {e}", path.display()))?);
    lock(cache).insert(path.to_owned(), (mtime, b.clone()));
    Ok(b)
}

/// Splits `bytes` per `ranges`' lengths.
fn split_attached<'a>(
    ranges: &[(u64, u64)],
    mut bytes: &'a [u8],
) -> Result<Vec<(u64, &'a [u8])>, String> {
    let mut out = Vec::with_capacity(ranges.len());
    for &(addr, len) in ranges {
        let len = usize::try_from(len).map_err(|_| "attached range too long".to_owned())?;
        if bytes.len() < len {
            return Err("the offer's attached memory is truncated".into());
        }
        let (this, rest) = bytes.split_at(len);
        out.push((addr, this));
        bytes = rest;
    }
    Ok(out)
}

/// `NAME=value` entries of a process's environment.
fn environment(pid: i32) -> Result<Vec<String>, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| format!("reading the environment of {pid}: {e}"))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect())
}

/// `program` found on `PATH` (qemu-user).
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

impl Migrations {
    /// The `popcorn build` program process `pid` runs.
    fn app_of(&self, pid: i32) -> Result<App, String> {
        if let Some(meta) = lock(&self.apps).get(&pid).cloned() {
            return App::load(&meta);
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map_err(|e| format!("process {pid}: {e}"))?;
        App::for_executable(&exe)
    }

    /// Moves `pid`, running here on ISA `here`, to `to`, whose ISA is
    /// `there`; see the module documentation.
    pub(super) async fn migrate_across(
        self: &Arc<Self>,
        pid: i32,
        to: &str,
        (here, there): (Isa, Isa),
        info: ProcessInfo,
        handle: Handle,
    ) -> Result<MigrationReport, String> {
        let node = self.node.clone();
        let refuse = |why: String| {
            format!(
                "cannot move process {pid} from {here} to {there}: {why}; it keeps running on '{node}'"
            )
        };
        let app = self.app_of(pid).map_err(refuse)?;
        app.binary(there).map_err(refuse)?;
        let point = app.migration_point(here).map_err(refuse)?;
        if lock(&self.apps).get(&pid).is_none() {
            // Launched here natively: the fds are the program's own.
            let threads = crate::sys::thread_count(pid);
            if threads > 1 {
                return Err(refuse(format!(
                    "it has {threads} threads and a move between ISAs works for single-threaded programs only"
                )));
            }
            let fds = popcorn_checkpoint::read_fds(pid).map_err(|e| refuse(e.to_string()))?;
            if let Some(f) = super::outgoing::carried_files(&fds, &node)
                .map_err(refuse)?
                .first()
            {
                return Err(refuse(format!(
                    "fd {} is open ({}) and a move between ISAs carries the standard streams only",
                    f.fd, f.path
                )));
            }
        }
        let thread = handle
            .stop_at_migration_point(point.clone(), STOP_WAIT)
            .await
            .map_err(refuse)?;
        let t0 = Instant::now();
        match self
            .offer_across(pid, to, &info, &handle, &app, thread, t0)
            .await
        {
            Ok(r) => Ok(r),
            Err(e) => {
                self.peers.unexport(to, pid);
                lock(&self.moved).remove(&pid);
                if let Some(r) = lock(&self.hosted).get(&pid) {
                    r.resume_stdin();
                }
                if let Err(t) = handle.resume_at_migration_point(point).await {
                    warn!(pid, "resuming after a failed migration: {t}");
                }
                warn!(pid, %to, "cross-ISA migration failed: {e}");
                Err(format!("{e}; process {pid} keeps running on node '{node}'"))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn offer_across(
        self: &Arc<Self>,
        pid: i32,
        to: &str,
        info: &ProcessInfo,
        handle: &Handle,
        app: &App,
        thread: ThreadSnapshot,
        t0: Instant,
    ) -> Result<MigrationReport, String> {
        let (data, data_len) = app.data_window();
        let (arena, arena_size) = app.arena();
        let memory = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let err = |e: popcorn_checkpoint::Error| e.to_string();
            let top = xisa::read_memory(pid, arena + 8, 8).map_err(err)?;
            let top = u64::from_le_bytes(top.try_into().unwrap_or_default());
            let used = top.clamp(PAGE, arena_size).div_ceil(PAGE) * PAGE;
            let data_bytes = xisa::read_memory(pid, data, data_len as usize).map_err(err)?;
            let env = environment(pid)?;
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
                .map_err(|e| format!("process {pid}: cwd: {e}"))?;
            let owner = popcorn_checkpoint::process_owner(pid).map_err(err)?;
            Ok((used, data_bytes, env, cwd, owner))
        })
        .await
        .map_err(|e| format!("reading the program's memory: {e}"))??;
        let (used, mem_bytes, env, cwd, (uid, gid)) = memory;
        let heap = (arena, used);
        let (real_stdio, stdin) = self.prepare_stdio(pid, handle).await?;
        self.departing(pid, to, handle);
        let attached = vec![
            (thread.stack.base, thread.stack.bytes.len() as u64),
            (data, data_len),
        ];
        let offer = CrossIsaOffer {
            pid,
            home: info.origin.clone(),
            uid,
            gid,
            argv: info.argv.clone(),
            env,
            cwd: cwd.to_string_lossy().into_owned(),
            nodes: info.nodes.clone(),
            stdin,
            app: app.metadata.clone(),
            regs: serde_json::to_string(&thread.regs)
                .map_err(|e| format!("encoding the registers: {e}"))?,
            attached,
            heap,
        };
        let mut body = encode(&PeerCall::CrossIsaOffer(Box::new(offer)));
        body.extend_from_slice(&thread.stack.bytes);
        body.extend_from_slice(&mem_bytes);
        let offer_bytes = body.len() as u64;
        self.peers.export(to, pid);
        match decode_answer(&self.peers.call(to, body, super::CALL_TIMEOUT).await?)? {
            PeerAnswer::Ready { restore_us, .. } => {
                info!(
                    pid,
                    restore_us, "translated and restored at the destination"
                )
            }
            PeerAnswer::Error { message } => {
                return Err(format!("node '{to}' could not continue it: {message}"))
            }
            other => return Err(format!("unexpected answer from {to}: {other:?}")),
        }
        self.commit_at(pid, to).await?;
        let downtime = t0.elapsed();
        let discard_now = self.settle_departure(pid, to, info, real_stdio).await;
        lock(&self.apps).remove(&pid);
        let (pages_at_origin, pages_zero) = match heap_vma(pid, heap) {
            Some(v) => self.send_population_map(pid, to, vec![v]).await,
            None => (0, 0),
        };
        if discard_now {
            self.push_done(to, pid).await;
        }
        let report = MigrationReport {
            pid,
            from: self.node.clone(),
            to: to.to_owned(),
            threads: 1,
            downtime_us: downtime.as_micros() as u64,
            bytes_before_resume: offer_bytes,
            pages_at_origin,
            pages_zero,
            transfer_ms: None,
        };
        Ok(self.migrated(report))
    }

    /// The destination of a move between ISAs.
    pub(super) async fn accept_cross_isa(
        self: &Arc<Self>,
        from: &str,
        offer: CrossIsaOffer,
        attached: &[u8],
    ) -> Result<PeerAnswer, String> {
        let started = Instant::now();
        let pid = offer.pid;
        self.admit(pid).await?;
        let here = self.peers.isa_of(&self.node)?;
        let parts = split_attached(&offer.attached, attached)?;
        let Some(((stack_base, stack), memory)) = parts.split_first() else {
            return Err("the offer carries no stack".into());
        };
        let regs: RegisterFile = serde_json::from_str(&offer.regs)
            .map_err(|e| format!("malformed registers in the offer: {e}"))?;
        let source = ThreadSnapshot {
            regs,
            stack: StackImage::new(*stack_base, stack.to_vec()),
        };
        let memory: Vec<(u64, Vec<u8>)> = memory.iter().map(|(a, b)| (*a, b.to_vec())).collect();
        let (relay, ends) = HostRelay::start(self, pid, &offer.home, offer.stdin.clone())
            .map_err(|e| format!("cannot create the standard stream pipes: {e}"))?;
        let app = App::load(&offer.app)?;
        let start = StartSpec {
            pid,
            isa: here,
            argv: offer.argv.clone(),
            env: offer.env.clone(),
            cwd: offer.cwd.clone(),
            owner: (offer.uid, offer.gid),
        };
        let (done_tx, done_rx) = watch::channel(false);
        let me = self.clone();
        let origin = from.to_owned();
        let heap = offer.heap;
        let setup = move || -> Result<(Restored, PagerHandle), String> {
            let t = Instant::now();
            let stdio: Vec<(i32, i32)> = ends.iter().map(|f| f.as_raw_fd()).zip(0..).collect();
            let (mut restored, frames) = continue_here(&app, &start, &stdio, &source, &memory)?;
            drop(ends);
            let written_us = t.elapsed().as_micros() as u64;
            let pager = pull_heap(&me, &origin, pid, heap, &mut restored, done_tx);
            let pager = match pager {
                Ok(p) => p,
                Err(e) => {
                    kill_child(pid);
                    return Err(e);
                }
            };
            info!(
                pid,
                frames,
                written_us,
                us = t.elapsed().as_micros() as u64,
                "started, translated and written; heap follows"
            );
            Ok((restored, pager))
        };
        let events = self.table.events();
        let restored = tokio::task::spawn_blocking(move || supervisor::restore(setup, events))
            .await
            .map_err(|e| format!("restore thread: {e}"))??;
        let (_, pidfd, handle, commit, pager) = restored;
        let info = self.arriving(pid, offer.uid, offer.argv, offer.home, offer.nodes);
        self.pending(
            pid,
            Pending {
                from: from.to_owned(),
                commit,
                handle,
                pidfd,
                pager: Some((pager, done_rx)),
                relay,
                info,
                app: Some(offer.app),
            },
        );
        Ok(PeerAnswer::Ready {
            pages_at_origin: 0,
            pages_zero: 0,
            restore_us: started.elapsed().as_micros() as u64,
        })
    }
}

/// How to start the destination's executable.
struct StartSpec {
    pid: i32,
    isa: Isa,
    argv: Vec<String>,
    env: Vec<String>,
    cwd: String,
    owner: (u32, u32),
}

/// On the restore thread: starts the program for this node's ISA stopped
/// at `main`, translates `source` onto its stack, writes `memory`, the
/// stack and the registers. Returns it stopped, and the frames moved.
fn continue_here(
    app: &App,
    start: &StartSpec,
    stdio: &[(i32, i32)],
    source: &ThreadSnapshot,
    memory: &[(u64, Vec<u8>)],
) -> Result<(Restored, u64), String> {
    let mut started = false;
    let r = build_here(app, start, stdio, source, memory, &mut started);
    if r.is_err() && started {
        // A half-built program must not run from its beginning.
        kill_child(start.pid);
    }
    r
}

/// Kills and collects a child of the calling thread.
fn kill_child(pid: i32) {
    // SAFETY: plain integer arguments; it is our child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: `status` is a live int; collects our own child.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
}

/// The origin's mapping holding the heap arena, cut to its used part, for
/// the population map.
fn heap_vma(pid: i32, (start, len): (u64, u64)) -> Option<Vma> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let vmas = popcorn_checkpoint::procfs::maps::parse_maps(&text).ok()?;
    let mut v = vmas
        .into_iter()
        .find(|v| v.start <= start && start < v.end)?;
    v.start = start;
    v.end = v.end.min(start + len);
    Some(v)
}

/// Empties the stopped program's heap arena and serves it from the origin
/// through a userfaultfd created inside the program's process (qemu's, when
/// emulated: it accesses the guest's memory at the same addresses).
fn pull_heap(
    me: &Arc<Migrations>,
    origin: &str,
    pid: i32,
    (start, len): (u64, u64),
    restored: &mut Restored,
    done: watch::Sender<bool>,
) -> Result<PagerHandle, String> {
    let empty_and_take = |p: &mut FrozenProcess| -> Result<Uffd, String> {
        let r = p
            .inject_syscall(pid, SYS_MADVISE, [start, len, MADV_DONTNEED, 0, 0, 0])
            .map_err(|e| e.to_string())?;
        if r < 0 {
            return Err(format!(
                "emptying the heap arena: {}",
                std::io::Error::from_raw_os_error(-r as i32)
            ));
        }
        uffd_in(p)
    };
    let uffd = match restored {
        Restored::Native(p) => empty_and_take(p)?,
        Restored::Emulated(_) => {
            let mut p = FrozenProcess::freeze(pid).map_err(|e| e.to_string())?;
            let r = empty_and_take(&mut p);
            p.thaw().map_err(|e| e.to_string())?;
            r?
        }
    };
    uffd.register(start, len)
        .map_err(|e| format!("userfaultfd register {start:#x}: {e}"))?;
    let channel = PageChannel::open(&me.peers, origin, pid)?;
    let spec = PagerSpec {
        pid,
        origin: origin.to_owned(),
        peers: me.peers.clone(),
        channel,
        uffd,
        regions: vec![(start, start + len)],
        at_origin: vec![(start, len)],
        background_push: true,
    };
    let finished = me.clone();
    let origin = origin.to_owned();
    pager::start(spec, move |send_done| {
        finished.pager_finished(pid, &origin, send_done);
        let _ = done.send(true);
    })
}

fn build_here(
    app: &App,
    start: &StartSpec,
    stdio: &[(i32, i32)],
    source: &ThreadSnapshot,
    memory: &[(u64, Vec<u8>)],
    started: &mut bool,
) -> Result<(Restored, u64), String> {
    let err = |e: popcorn_checkpoint::Error| e.to_string();
    let dst_path = app.binary(start.isa)?;
    let src_bin = binary(&app.binary(source.isa())?)?;
    let dst_bin = binary(&dst_path)?;
    let main = app.main()?;
    let spec = WorkerSpec {
        pid_ns: None,
        pid: Some(start.pid),
        fds: stdio.to_vec(),
    };
    let mut restored = if start.isa == Isa::native() {
        let exec = Exec::new(
            &dst_path.to_string_lossy(),
            &start.argv,
            &start.env,
            &start.cwd,
            start.owner,
            true,
        )
        .map_err(err)?;
        let spawned = spawn_program(&spec, &exec).map_err(err)?;
        *started = true;
        let mut process = spawned.stopped.ok_or("the program was started untraced")?;
        process.run_to_address(main, START_WAIT).map_err(err)?;
        Restored::Native(process)
    } else {
        Restored::Emulated(start_emulated(start, &dst_path, &spec, main, started)?)
    };
    let dst_thread = match &mut restored {
        Restored::Native(p) => p.main_thread().snapshot(),
        Restored::Emulated(e) => e.snapshot(),
    }
    .map_err(err)?;
    let placement =
        StackPlacement::at_function_entry(&dst_thread, &dst_bin).map_err(|e| e.to_string())?;
    let t = popcorn_isa::translate(source, &src_bin, &dst_bin, &placement, &Default::default())
        .map_err(|e| format!("translating the thread: {e}"))?;
    for w in &t.warnings {
        warn!(pid = start.pid, "translation: {w}");
    }
    let pid = start.pid;
    for (addr, bytes) in memory {
        xisa::write_memory(pid, *addr, bytes).map_err(err)?;
    }
    xisa::set_request(pid, &app.migration_point(start.isa)?, false).map_err(err)?;
    match &mut restored {
        Restored::Native(p) => p.main_thread().install(&t.snapshot).map_err(err)?,
        Restored::Emulated(e) => e.install(&t.snapshot).map_err(err)?,
    }
    Ok((restored, t.frames.len() as u64))
}

/// Starts `dst` under qemu-user with the GDB stub on a private socket and
/// runs it to `main`.
fn start_emulated(
    start: &StartSpec,
    dst: &Path,
    spec: &WorkerSpec,
    main: u64,
    started: &mut bool,
) -> Result<Emulated, String> {
    let err = |e: popcorn_checkpoint::Error| e.to_string();
    let socket = std::env::temp_dir().join(format!(
        "popcorn-gdb-{}-{}.sock",
        std::process::id(),
        start.pid
    ));
    let _ = std::fs::remove_file(&socket);
    let (qemu, options) = qemu_command(start.isa, &socket);
    let qemu_path = which(&qemu).ok_or_else(|| {
        format!(
            "this node runs {} programs under {qemu}, which is not installed (apt-get install qemu-user)",
            start.isa
        )
    })?;
    let mut argv = vec![qemu.clone()];
    argv.extend(options);
    if let Some(argv0) = start.argv.first() {
        argv.extend(["-0".to_owned(), argv0.clone()]);
    }
    argv.push(dst.to_string_lossy().into_owned());
    argv.extend(start.argv.iter().skip(1).cloned());
    let exec = Exec::new(
        &qemu_path.to_string_lossy(),
        &argv,
        &start.env,
        &start.cwd,
        start.owner,
        false,
    )
    .map_err(err)?;
    let spawned = spawn_program(spec, &exec).map_err(err)?;
    *started = true;
    let connected = Emulated::connect(spawned.pid, start.isa, &socket, Duration::from_secs(10));
    let _ = std::fs::remove_file(&socket);
    let mut emu = match connected {
        Ok(e) => e,
        Err(e) => return Err(e.to_string()),
    };
    emu.run_to_address(main, START_WAIT).map_err(err)?;
    Ok(emu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attached_memory_splits_by_length() {
        let bytes = [1u8, 2, 3, 4, 5, 6];
        let parts = split_attached(&[(0x10, 2), (0x20, 0), (0x30, 4)], &bytes).unwrap();
        assert_eq!(
            parts,
            vec![
                (0x10, &[1u8, 2][..]),
                (0x20, &[][..]),
                (0x30, &[3u8, 4, 5, 6][..])
            ]
        );
        assert!(split_attached(&[(0, 7)], &bytes)
            .unwrap_err()
            .contains("truncated"));
        assert!(split_attached(&[], &bytes).unwrap().is_empty());
    }
}

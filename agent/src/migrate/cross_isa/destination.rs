//! The node a program arrives at from another ISA. **Prepare**: a restore
//! supervisor thread starts the program for this node's ISA with the
//! program's PID (natively under ptrace, or under qemu-user's GDB stub),
//! runs it to `main` and waits there for the offer. **Continue**: the
//! thread is translated onto its stack, the data window written, the heap
//! arena emptied and served on demand by a pager; then the commit, as for
//! any restore (`incoming.rs`).

use super::{CrossIsaOffer, CrossIsaStart};
use crate::migrate::channel::PageChannel;
use crate::migrate::incoming::{uffd_in, Pending};
use crate::migrate::pager::{self, PagerHandle, PagerSpec};
use crate::migrate::relay::{HostRelay, StdinBacklog};
use crate::migrate::{lock, Migrations, PeerAnswer, CALL_TIMEOUT};
use crate::supervisor::{self, Commit, Handle, Restored};
use popcorn_checkpoint::restore::{spawn_program, Exec, WorkerSpec};
use popcorn_checkpoint::xisa::emulated::{qemu_command, Emulated};
use popcorn_checkpoint::xisa::{self, ThreadControl};
use popcorn_checkpoint::FrozenProcess;
use popcorn_dsm::uffd::Uffd;
use popcorn_isa::{App, Binary, Isa, RegisterFile, StackImage, StackPlacement, ThreadSnapshot};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

/// How long a fresh program may take to reach `main` (emulated start-up
/// included).
const START_WAIT: Duration = Duration::from_secs(15);
/// How long a preparation may take in all; below the origin's call
/// timeout, so the origin hears why.
const READY_WAIT: Duration = Duration::from_secs(25);
/// How long a prepared program waits for the offer.
const OFFER_WAIT: Duration = Duration::from_secs(30);
/// x86_64 system call numbers (both a native program and qemu-user are
/// x86_64 processes on this machine).
const SYS_MADVISE: i64 = 28;
const MADV_DONTNEED: u64 = 4;

/// What a restore gives back: pid, pidfd, handle, commit gate, pager.
type Parts = (i32, OwnedFd, Handle, Commit, PagerHandle);

/// A program started and stopped at `main`, waiting for its thread.
pub struct Prepared {
    from: String,
    start: CrossIsaStart,
    go: mpsc::Sender<Continue>,
    restored: oneshot::Receiver<Result<Parts, String>>,
    relay: Arc<HostRelay>,
    done: watch::Receiver<bool>,
}

/// The offer's content, for the prepared program's restore thread.
struct Continue {
    source: ThreadSnapshot,
    memory: Vec<(u64, Vec<u8>)>,
    heap: (u64, u64),
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

/// `program` found on `PATH` (qemu-user).
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Kills and collects a child of the calling thread.
fn kill_child(pid: i32) {
    // SAFETY: plain integer arguments; it is our child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: `status` is a live int; collects our own child.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
}

impl Migrations {
    /// Starts the program at `main` and keeps it for the offer; answers
    /// `Prepared` once it is there.
    pub(in crate::migrate) async fn prepare_cross_isa(
        self: &Arc<Self>,
        from: &str,
        start: CrossIsaStart,
    ) -> Result<PeerAnswer, String> {
        let pid = start.pid;
        // An earlier preparation that never got its offer goes first.
        lock(&self.preparing).remove(&pid);
        self.admit(pid).await?;
        let isa = self.peers.isa_of(&self.node)?;
        let app = App::load(&start.app)?;
        let (relay, ends) = HostRelay::start(self, pid, &start.home, StdinBacklog::default())
            .map_err(|e| format!("cannot create the standard stream pipes: {e}"))?;
        let (go_tx, go_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (result_tx, result_rx) = oneshot::channel();
        let (done_tx, done_rx) = watch::channel(false);
        let me = self.clone();
        let origin = from.to_owned();
        let spec = start.clone();
        let setup = move || -> Result<(Restored, PagerHandle), String> {
            let mut ready = Some(ready_tx);
            let r = start_then_continue(
                &me, &origin, &app, &spec, isa, ends, &mut ready, &go_rx, done_tx,
            );
            if let (Err(e), Some(tx)) = (&r, ready.take()) {
                let _ = tx.send(Err(e.clone()));
            }
            r
        };
        let events = self.table.events();
        tokio::spawn(async move {
            let r = tokio::task::spawn_blocking(move || supervisor::restore(setup, events))
                .await
                .map_err(|e| format!("restore thread: {e}"))
                .and_then(|r| r);
            // Nobody waits any more: the commit gate drops (the program is
            // killed) and the pager, never resumed, is stopped.
            if let Err(Ok((_, _, _, _, pager))) = result_tx.send(r) {
                pager.stop();
            }
        });
        match tokio::time::timeout(READY_WAIT, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            _ => {
                return Err(format!(
                "process {pid} did not reach main within {} s on node '{}' (see its agent's log)",
                READY_WAIT.as_secs(),
                self.node
            ))
            }
        }
        lock(&self.preparing).insert(
            pid,
            Prepared {
                from: from.to_owned(),
                start,
                go: go_tx,
                restored: result_rx,
                relay,
                done: done_rx,
            },
        );
        Ok(PeerAnswer::Prepared)
    }

    /// The offer: continues the prepared program (preparing it first if
    /// the origin did not ask), answers `Ready` once it waits for the
    /// commit.
    pub(in crate::migrate) async fn accept_cross_isa(
        self: &Arc<Self>,
        from: &str,
        offer: CrossIsaOffer,
        attached: &[u8],
    ) -> Result<PeerAnswer, String> {
        let started = Instant::now();
        let pid = offer.start.pid;
        let parts = split_attached(&offer.attached, attached)?;
        let Some(((stack_base, stack), memory)) = parts.split_first() else {
            return Err("the offer carries no stack".into());
        };
        let regs: RegisterFile = serde_json::from_str(&offer.regs)
            .map_err(|e| format!("malformed registers in the offer: {e}"))?;
        let go = Continue {
            source: ThreadSnapshot {
                regs,
                stack: StackImage::new(*stack_base, stack.to_vec()),
            },
            memory: memory.iter().map(|(a, b)| (*a, b.to_vec())).collect(),
            heap: offer.heap,
        };
        let ours = |p: &Prepared| p.from == from;
        let mut prepared = lock(&self.preparing).remove(&pid).filter(ours);
        if prepared.is_none() {
            self.prepare_cross_isa(from, offer.start.clone()).await?;
            prepared = lock(&self.preparing).remove(&pid);
        }
        let p = prepared.ok_or_else(|| format!("process {pid} was not prepared here"))?;
        p.relay.begin_stdin(offer.stdin);
        p.go.send(go)
            .map_err(|_| "the prepared program is gone (it waited too long)".to_owned())?;
        let (_, pidfd, handle, commit, pager) = tokio::time::timeout(CALL_TIMEOUT, p.restored)
            .await
            .map_err(|_| "translating and writing the thread took too long".to_owned())?
            .map_err(|_| "the restore thread ended".to_owned())??;
        let s = p.start;
        let info = self.arriving(pid, s.uid, s.argv, s.home, s.nodes);
        self.pending(
            pid,
            Pending {
                from: from.to_owned(),
                commit,
                handle,
                pidfd,
                pager: Some((pager, p.done)),
                relay: p.relay,
                info,
                app: Some(s.app),
            },
        );
        Ok(PeerAnswer::Ready {
            pages_at_origin: 0,
            pages_zero: 0,
            restore_us: started.elapsed().as_micros() as u64,
        })
    }

    /// Drops a prepared program (the origin gave up); whether there was one.
    pub(in crate::migrate) fn drop_preparation(&self, pid: i32) -> bool {
        // Dropping its sender ends the restore thread's wait: it kills the
        // program.
        lock(&self.preparing).remove(&pid).is_some()
    }
}

/// Kills a child of the calling thread when dropped, unless disarmed: a
/// half-built program must never run from its beginning. Declared after
/// what controls the program, so that it is dropped (and kills) first.
struct KillOnDrop(Option<i32>);

impl KillOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill_child(pid);
        }
    }
}

/// On the restore thread: the program at `main`, then (after `ready`) the
/// offer's thread and memory, then its heap under a pager.
#[allow(clippy::too_many_arguments)]
fn start_then_continue(
    me: &Arc<Migrations>,
    origin: &str,
    app: &App,
    spec: &CrossIsaStart,
    isa: Isa,
    ends: [OwnedFd; 3],
    ready: &mut Option<oneshot::Sender<Result<(), String>>>,
    go: &mpsc::Receiver<Continue>,
    done: watch::Sender<bool>,
) -> Result<(Restored, PagerHandle), String> {
    let t = Instant::now();
    let stdio: Vec<(i32, i32)> = ends.iter().map(|f| f.as_raw_fd()).zip(0..).collect();
    let (mut restored, uffd) = start_at_main(app, spec, isa, &stdio)?;
    let guard = KillOnDrop(Some(spec.pid));
    drop(ends);
    let start_us = t.elapsed().as_micros() as u64;
    if let Some(tx) = ready.take() {
        let _ = tx.send(Ok(()));
    }
    let c = go
        .recv_timeout(OFFER_WAIT)
        .map_err(|_| "no offer followed the preparation".to_owned())?;
    let t = Instant::now();
    let frames = continue_with(app, isa, spec.pid, &mut restored, &c.source, &c.memory)?;
    let pager = pull_heap(me, origin, spec.pid, c.heap, &mut restored, uffd, done)?;
    info!(
        pid = spec.pid,
        start_us,
        frames,
        us = t.elapsed().as_micros() as u64,
        "translated and written; heap follows"
    );
    guard.disarm();
    Ok((restored, pager))
}

/// A 0700 directory owned by the program's user, for qemu's GDB socket
/// (nobody else may put a socket where the agent connects).
fn private_dir(pid: i32, (uid, gid): (u32, u32)) -> Result<PathBuf, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "popcorn-gdb-{}-{pid}-{nanos:x}",
        std::process::id()
    ));
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir(&dir).map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(err)?;
    Ok(dir)
}

/// Starts the program for `isa` with the spec's PID, stdio, argv,
/// environment and directory, stopped at the entry of `main`. Its
/// userfaultfd is made right after the exec, with the agent's privileges
/// (unprivileged processes may not make one that sees kernel accesses);
/// then it takes the spec's credentials.
fn start_at_main(
    app: &App,
    spec: &CrossIsaStart,
    isa: Isa,
    stdio: &[(i32, i32)],
) -> Result<(Restored, Uffd), String> {
    let err = |e: popcorn_checkpoint::Error| e.to_string();
    let exe = app.binary(isa)?;
    let main = app.main()?;
    let worker = WorkerSpec {
        pid_ns: None,
        pid: Some(spec.pid),
        fds: stdio.to_vec(),
    };
    let native = isa == Isa::native();
    let (program, argv, dir) = if native {
        (exe.clone(), spec.argv.clone(), None)
    } else {
        let dir = private_dir(spec.pid, (spec.uid, spec.gid))?;
        let socket = dir.join("gdb.sock");
        let (qemu, options) = qemu_command(isa, &socket);
        let qemu_path = which(&qemu).ok_or_else(|| {
            format!(
                "this node runs {isa} programs under {qemu}, which is not installed (apt-get install qemu-user)"
            )
        })?;
        let mut argv = vec![qemu];
        argv.extend(options);
        if let Some(argv0) = spec.argv.first() {
            argv.extend(["-0".to_owned(), argv0.clone()]);
        }
        argv.push(exe.to_string_lossy().into_owned());
        argv.extend(spec.argv.iter().skip(1).cloned());
        (qemu_path, argv, Some(dir))
    };
    let started = (|| {
        let exec =
            Exec::new(&program.to_string_lossy(), &argv, &spec.env, &spec.cwd).map_err(err)?;
        let mut process = spawn_program(&worker, &exec).map_err(err)?;
        let guard = KillOnDrop(Some(spec.pid));
        let uffd = uffd_in(&mut process)?;
        process.become_user(spec.uid, spec.gid).map_err(err)?;
        let restored = match &dir {
            None => {
                process.run_to_address(main, START_WAIT).map_err(err)?;
                Restored::Native(process)
            }
            Some(dir) => {
                process.thaw().map_err(err)?;
                let socket = dir.join("gdb.sock");
                let mut emu = Emulated::connect(spec.pid, isa, &socket, Duration::from_secs(10))
                    .map_err(err)?;
                emu.run_to_address(main, START_WAIT).map_err(err)?;
                Restored::Emulated(emu)
            }
        };
        guard.disarm();
        Ok((restored, uffd))
    })();
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    started
}

/// Translates `source` onto the stack of the program stopped at `main`,
/// writes `memory`, clears the migration request, writes the stack and
/// registers. Returns the frames moved.
fn continue_with(
    app: &App,
    isa: Isa,
    pid: i32,
    restored: &mut Restored,
    source: &ThreadSnapshot,
    memory: &[(u64, Vec<u8>)],
) -> Result<usize, String> {
    let err = |e: popcorn_checkpoint::Error| e.to_string();
    let src_bin = binary(&app.binary(source.isa())?)?;
    let dst_bin = binary(&app.binary(isa)?)?;
    let at_main = match restored {
        Restored::Native(p) => p.main_thread().snapshot(),
        Restored::Emulated(e) => e.snapshot(),
    }
    .map_err(err)?;
    let placement =
        StackPlacement::at_function_entry(&at_main, &dst_bin).map_err(|e| e.to_string())?;
    let t = popcorn_isa::translate(source, &src_bin, &dst_bin, &placement, &Default::default())
        .map_err(|e| format!("translating the thread: {e}"))?;
    for w in &t.warnings {
        warn!(pid, "translation: {w}");
    }
    for (addr, bytes) in memory {
        xisa::write_memory(pid, *addr, bytes).map_err(err)?;
    }
    xisa::set_request(pid, &app.migration_point(isa)?, false).map_err(err)?;
    match restored {
        Restored::Native(p) => p.main_thread().install(&t.snapshot),
        Restored::Emulated(e) => e.install(&t.snapshot),
    }
    .map_err(err)?;
    Ok(t.frames.len())
}

/// Empties the stopped program's heap arena and serves it from the origin
/// through `uffd`, the userfaultfd made inside the program's process at its
/// start (qemu's, when emulated: it accesses the guest's memory at the same
/// addresses).
fn pull_heap(
    me: &Arc<Migrations>,
    origin: &str,
    pid: i32,
    (start, len): (u64, u64),
    restored: &mut Restored,
    uffd: Uffd,
    done: watch::Sender<bool>,
) -> Result<PagerHandle, String> {
    let empty = |p: &mut FrozenProcess| -> Result<(), String> {
        let r = p
            .inject_syscall(pid, SYS_MADVISE, [start, len, MADV_DONTNEED, 0, 0, 0])
            .map_err(|e| e.to_string())?;
        if r < 0 {
            return Err(format!(
                "emptying the heap arena: {}",
                std::io::Error::from_raw_os_error(-r as i32)
            ));
        }
        Ok(())
    };
    match restored {
        Restored::Native(p) => empty(p)?,
        Restored::Emulated(_) => {
            let mut p = FrozenProcess::freeze(pid).map_err(|e| e.to_string())?;
            let r = empty(&mut p);
            p.thaw().map_err(|e| e.to_string())?;
            r?
        }
    }
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

//! One OS thread per process the agent controls. ptrace ties a tracee to
//! the thread that seized it, so every freeze, capture, thaw and wait for a
//! given process happens on its supervisor thread; requests arrive over a
//! channel and an eventfd wakes the thread.
//!
//! A *launched* supervisor starts the program itself (it is the parent and
//! reports the exit status); a *restoring* one builds a migrated process
//! (the worker is its child, so it reports the exit status too); an
//! *attached* one controls an existing process for `freeze`/`inspect` and
//! ends once the process is thawed.

use crate::sys::{self, EventFd};
use popcorn_checkpoint::xisa::emulated::{Emulated, Event as EmulatedEvent};
use popcorn_checkpoint::xisa::{self, MigrationPoint, ThreadControl};
use popcorn_checkpoint::{FrozenProcess, PageScan, ProcessState};
use popcorn_isa::ThreadSnapshot;
use popcorn_proto::control::ExitStatus;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command as ProcessCommand, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{debug, warn};

type Reply<T> = oneshot::Sender<Result<T, String>>;

/// Requests a supervisor serves.
pub enum Request {
    Freeze(Reply<usize>),
    Thaw(Reply<()>),
    Inspect(Reply<serde_json::Value>),
    /// Full state of the frozen process (for a migration).
    Capture(PageScan, Reply<Box<ProcessState>>),
    /// A duplicate of one of the frozen process's descriptors.
    DupFd(i32, Reply<OwnedFd>),
    /// Kill the frozen process and end the supervisor without reporting an
    /// exit: it was migrated and the copy here is no longer needed.
    Discard(Reply<()>),
    /// Ask the program (built with `popcorn build`) to stop at its next
    /// migration point, waiting at most this long; it stays stopped there.
    /// Answers the thread's registers and stack.
    StopAtMigrationPoint(MigrationPoint, Duration, Reply<Box<ThreadSnapshot>>),
    /// Clear the request and let a program stopped at a migration point
    /// continue where it is.
    ResumeAtMigrationPoint(MigrationPoint, Reply<()>),
}

/// The control side of a supervisor thread.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Request>,
    wake: Arc<EventFd>,
}

impl Handle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| "the process is no longer controlled (it exited)".to_owned())?;
        self.wake.wake();
        rx.await
            .map_err(|_| "the process exited while the request was handled".to_owned())?
    }

    pub async fn freeze(&self) -> Result<usize, String> {
        self.ask(Request::Freeze).await
    }

    pub async fn thaw(&self) -> Result<(), String> {
        self.ask(Request::Thaw).await
    }

    pub async fn inspect(&self) -> Result<serde_json::Value, String> {
        self.ask(Request::Inspect).await
    }

    pub async fn capture(&self, scan: PageScan) -> Result<ProcessState, String> {
        self.ask(|r| Request::Capture(scan, r)).await.map(|b| *b)
    }

    pub async fn dup_fd(&self, fd: i32) -> Result<OwnedFd, String> {
        self.ask(|r| Request::DupFd(fd, r)).await
    }

    pub async fn discard(&self) -> Result<(), String> {
        self.ask(Request::Discard).await
    }

    pub async fn stop_at_migration_point(
        &self,
        point: MigrationPoint,
        timeout: Duration,
    ) -> Result<ThreadSnapshot, String> {
        self.ask(|r| Request::StopAtMigrationPoint(point, timeout, r))
            .await
            .map(|b| *b)
    }

    pub async fn resume_at_migration_point(&self, point: MigrationPoint) -> Result<(), String> {
        self.ask(|r| Request::ResumeAtMigrationPoint(point, r))
            .await
    }
}

/// What the supervisor reports back about its process.
pub trait Events: Send + 'static {
    fn frozen(&self, pid: i32, frozen: bool);
    fn exited(&self, pid: i32, status: Option<ExitStatus>);
}

/// How to start a program.
pub struct Launch {
    pub program: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub stdio: [OwnedFd; 3],
}

/// Lets a launched supervisor start reporting: the caller first records the
/// process, so even an instant exit finds its table entry. Dropping it
/// without calling [`Registered::done`] also releases the supervisor.
pub struct Registered(mpsc::Sender<()>);

impl Registered {
    pub fn done(self) {
        let _ = self.0.send(());
    }
}

/// Starts `launch` on a new supervisor thread. Returns the pid, a pidfd, the
/// handle, and the [`Registered`] gate the supervisor waits on before it
/// reports anything.
pub fn launch(
    launch: Launch,
    events: impl Events,
) -> Result<(i32, OwnedFd, Handle, Registered), String> {
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("supervisor".into())
        .spawn(move || {
            let child = match spawn(launch) {
                Ok(c) => c,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let pid = child.id() as i32;
            let (pidfd, signal_fd, wake, handle, rx) = match control_for(pid) {
                Ok(c) => c,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            if started_tx
                .send(Ok((pid, signal_fd, handle, Registered(go_tx))))
                .is_err()
            {
                return;
            }
            // Report nothing before the caller has recorded the process.
            let _ = go_rx.recv();
            // std's Child is only used for spawning; reaping is ours.
            std::mem::forget(child);
            if let End::Exited(status) = serve(pid, true, pidfd, &wake, &rx, &events) {
                events.exited(pid, status);
            }
        })
        .map_err(|e| format!("cannot start a supervisor thread: {e}"))?;
    started_rx
        .recv()
        .map_err(|_| "supervisor thread died".to_owned())?
}

/// Attaches a supervisor to an existing process.
pub fn attach(pid: i32, events: impl Events) -> Result<Handle, String> {
    let pidfd = sys::pidfd_open(pid).map_err(|e| format!("process {pid}: {e}"))?;
    let wake = Arc::new(EventFd::new().map_err(|e| format!("eventfd: {e}"))?);
    let (tx, rx) = mpsc::channel();
    let handle = Handle {
        tx,
        wake: wake.clone(),
    };
    std::thread::Builder::new()
        .name(format!("attach-{pid}"))
        .spawn(move || {
            if let End::Exited(status) = serve(pid, false, pidfd, &wake, &rx, &events) {
                events.exited(pid, status);
            }
        })
        .map_err(|e| format!("cannot start a supervisor thread: {e}"))?;
    Ok(handle)
}

/// Decides the fate of a restored worker: [`Commit::go`] thaws it and the
/// supervisor serves it; dropping the gate kills it.
pub struct Commit(mpsc::Sender<()>);

impl Commit {
    pub fn go(self) {
        let _ = self.0.send(());
    }
}

/// A restored process, stopped, as `restore`'s setup returns it.
pub enum Restored {
    /// Under ptrace by the restore thread.
    Native(FrozenProcess),
    /// Under qemu-user's GDB stub.
    Emulated(Emulated),
}

impl Restored {
    fn pid(&self) -> i32 {
        match self {
            Restored::Native(f) => f.pid(),
            Restored::Emulated(e) => e.pid(),
        }
    }
}

/// Builds a migrated process on a new supervisor thread: `setup` creates
/// and restores the worker (still stopped) and returns it with whatever the
/// caller needs (`T`). Returns the pid, a pidfd, the handle, the
/// [`Commit`] gate and `T`; the worker stays stopped until the gate opens.
pub fn restore<T: Send + 'static>(
    setup: impl FnOnce() -> Result<(Restored, T), String> + Send + 'static,
    events: impl Events,
) -> Result<(i32, OwnedFd, Handle, Commit, T), String> {
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("restore".into())
        .spawn(move || {
            let (worker, extra) = match setup() {
                Ok(w) => w,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let pid = worker.pid();
            let (pidfd, signal_fd, wake, handle, rx) = match control_for(pid) {
                Ok(c) => c,
                Err(e) => {
                    kill_and_reap(pid);
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            if started_tx
                .send(Ok((pid, signal_fd, handle, Commit(go_tx), extra)))
                .is_err()
            {
                kill_and_reap(pid);
                return;
            }
            if go_rx.recv().is_err() {
                debug!(pid, "restore abandoned: killing the worker");
                // Killed while still stopped: releasing it first would let
                // it run.
                kill_and_reap(pid);
                drop(worker);
                return;
            }
            let end = match worker {
                Restored::Native(process) => {
                    if let Err(e) = process.thaw() {
                        warn!(pid, "thawing the restored process: {e}");
                    }
                    serve(pid, true, pidfd, &wake, &rx, &events)
                }
                Restored::Emulated(mut emu) => {
                    if let Err(e) = emu.resume() {
                        warn!(pid, "resuming the restored process: {e}");
                    }
                    serve_emulated(pid, emu, pidfd, &wake, &rx, &events)
                }
            };
            if let End::Exited(status) = end {
                events.exited(pid, status);
            }
        })
        .map_err(|e| format!("cannot start a supervisor thread: {e}"))?;
    started_rx
        .recv()
        .map_err(|_| "restore thread died".to_owned())?
}

/// What a supervisor thread needs to control `pid`: a pidfd for itself,
/// one for the caller (signals), the wake-up eventfd, the handle and the
/// request queue.
type Control = (
    OwnedFd,
    OwnedFd,
    Arc<EventFd>,
    Handle,
    mpsc::Receiver<Request>,
);

fn control_for(pid: i32) -> Result<Control, String> {
    let pidfd = sys::pidfd_open(pid).map_err(|e| format!("pidfd_open: {e}"))?;
    let signal_fd = pidfd.try_clone().map_err(|e| format!("dup: {e}"))?;
    let wake = Arc::new(EventFd::new().map_err(|e| format!("eventfd: {e}"))?);
    let (tx, rx) = mpsc::channel();
    let handle = Handle {
        tx,
        wake: wake.clone(),
    };
    Ok((pidfd, signal_fd, wake, handle, rx))
}

/// SIGKILLs a child of this thread and collects it (and its threads).
fn kill_and_reap(pid: i32) {
    // SAFETY: plain integer arguments.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    for _ in 0..5000 {
        if reap(pid).is_some() || !popcorn_checkpoint::process_exists(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    warn!(pid, "a killed process was not reaped within 5 s");
}

fn spawn(l: Launch) -> Result<std::process::Child, String> {
    use std::os::unix::process::CommandExt;
    let [stdin, stdout, stderr] = l.stdio;
    let mut cmd = ProcessCommand::new(&l.program);
    if let Some((argv0, rest)) = l.argv.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear()
        .envs(l.env)
        .current_dir(&l.cwd)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .uid(l.uid)
        .gid(l.gid);
    // SAFETY: setsid and close_range are async-signal-safe; setsid detaches
    // the program from the agent's session so signals meant for the agent
    // never reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            // Only stdin, stdout and stderr: nothing the agent inherited.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", l.program))
}

/// How a supervisor loop ended.
enum End {
    /// The process ended (its status when it was ours to reap) or an
    /// attached process was released (`None`).
    Exited(Option<ExitStatus>),
    /// Killed on request after a migration: nothing to report.
    Discarded,
}

/// The supervisor loop.
fn serve(
    pid: i32,
    is_parent: bool,
    pidfd: OwnedFd,
    wake: &EventFd,
    rx: &mpsc::Receiver<Request>,
    events: &dyn Events,
) -> End {
    let mut frozen: Option<FrozenProcess> = None;
    loop {
        // While frozen, exits of traced threads are reported to us and must
        // be reaped before the pidfd fires, so poll periodically then.
        let timeout = frozen.as_ref().map(|_| Duration::from_millis(50));
        let (gone, woken) = sys::poll2(pidfd.as_fd(), wake.fd(), timeout).unwrap_or((false, true));
        if let Some(status) = reap(pid) {
            drop(frozen.take());
            return End::Exited(Some(status));
        }
        if gone {
            drop(frozen.take());
            if is_parent {
                // The leader has exited; its status is ready or about to be.
                for _ in 0..1000 {
                    if let Some(status) = reap(pid) {
                        return End::Exited(Some(status));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            return End::Exited(None);
        }
        if woken {
            wake.drain();
        }
        while let Ok(req) = rx.try_recv() {
            if let Request::Discard(reply) = req {
                if frozen.is_none() {
                    let _ = reply.send(Err(format!("process {pid} is not frozen")));
                    continue;
                }
                // SAFETY: plain integer arguments.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                drop(frozen.take());
                if is_parent {
                    kill_and_reap(pid);
                }
                let _ = reply.send(Ok(()));
                return End::Discarded;
            }
            handle(pid, req, &mut frozen, events);
        }
        if !is_parent && frozen.is_none() {
            return End::Exited(None);
        }
    }
}

/// Reaps whatever of ours has exited; returns the leader's status if it did.
fn reap(pid: i32) -> Option<ExitStatus> {
    while let Some((who, status)) = sys::reap_one() {
        debug!(pid, who, status, "reaped");
        if who == pid {
            if let Some(s) = ExitStatus::from_wait_status(status) {
                return Some(s);
            }
        }
    }
    None
}

fn handle(pid: i32, req: Request, frozen: &mut Option<FrozenProcess>, events: &dyn Events) {
    match req {
        Request::Freeze(reply) => {
            let r = if frozen.is_some() {
                Err(format!("process {pid} is already frozen"))
            } else {
                FrozenProcess::freeze(pid)
                    .map(|f| {
                        let n = f.tids().len();
                        *frozen = Some(f);
                        events.frozen(pid, true);
                        n
                    })
                    .map_err(|e| e.to_string())
            };
            let _ = reply.send(r);
        }
        Request::Thaw(reply) => {
            let r = match frozen.take() {
                None => Err(format!("process {pid} is not frozen")),
                Some(f) => {
                    events.frozen(pid, false);
                    f.thaw().map_err(|e| e.to_string())
                }
            };
            let _ = reply.send(r);
        }
        Request::Inspect(reply) => {
            let r = match frozen {
                Some(f) => capture_json(f),
                None => match FrozenProcess::freeze(pid) {
                    Ok(mut f) => {
                        let r = capture_json(&mut f);
                        if let Err(e) = f.thaw() {
                            warn!(pid, "thaw after inspect: {e}");
                        }
                        r
                    }
                    Err(e) => Err(e.to_string()),
                },
            };
            let _ = reply.send(r);
        }
        Request::Capture(scan, reply) => {
            let r = match frozen {
                Some(f) => f
                    .capture_with(scan)
                    .map(Box::new)
                    .map_err(|e| e.to_string()),
                None => Err(format!("process {pid} is not frozen")),
            };
            let _ = reply.send(r);
        }
        Request::DupFd(fd, reply) => {
            let r = match frozen {
                Some(f) => f.dup_fd(fd).map_err(|e| e.to_string()),
                None => Err(format!("process {pid} is not frozen")),
            };
            let _ = reply.send(r);
        }
        // `serve` handles discards itself; this arm is never reached.
        Request::Discard(reply) => {
            let _ = reply.send(Err("discard reached the wrong handler".into()));
        }
        Request::StopAtMigrationPoint(point, timeout, reply) => {
            let r = if frozen.is_some() {
                Err(format!("process {pid} is frozen"))
            } else {
                stop_native(pid, &point, timeout).map(|(f, snap)| {
                    *frozen = Some(f);
                    events.frozen(pid, true);
                    Box::new(snap)
                })
            };
            let _ = reply.send(r);
        }
        Request::ResumeAtMigrationPoint(point, reply) => {
            let r = match frozen.take() {
                None => Err(format!("process {pid} is not stopped")),
                Some(f) => {
                    events.frozen(pid, false);
                    // Its PC is past the breakpoint already.
                    let cleared = xisa::set_request(pid, &point, false);
                    let thawed = f.thaw();
                    cleared.and(thawed).map_err(|e| e.to_string())
                }
            };
            let _ = reply.send(r);
        }
    }
}

fn not_reached(pid: i32, timeout: Duration) -> String {
    format!(
        "process {pid} did not reach a migration point within {} s (it must call popcorn_migrate_point() regularly)",
        timeout.as_secs()
    )
}

/// Freezes `pid`, runs it to its next migration point and reads its
/// thread there; on failure it runs on, with the request cleared.
fn stop_native(
    pid: i32,
    point: &MigrationPoint,
    timeout: Duration,
) -> Result<(FrozenProcess, ThreadSnapshot), String> {
    let mut f = FrozenProcess::freeze(pid).map_err(|e| e.to_string())?;
    let reached = match f.run_to_migration_point(point, timeout) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let left =
                xisa::set_request(pid, point, false).and_then(|()| f.leave_migration_window(point));
            match left {
                Ok(true) => Ok(()),
                Ok(false) => Err(not_reached(pid, timeout)),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    let snap = reached.and_then(|()| f.main_thread().snapshot().map_err(|e| e.to_string()));
    match snap {
        Ok(s) => Ok((f, s)),
        Err(e) => {
            if let Err(c) = xisa::set_request(pid, point, false) {
                warn!(pid, "clearing the migration request: {c}");
            }
            if let Err(t) = f.thaw() {
                warn!(pid, "thaw after a failed stop: {t}");
            }
            Err(e)
        }
    }
}

/// The supervisor loop of a process emulated by qemu-user: passes signals
/// through its GDB stub, stops it at migration points, reaps it.
fn serve_emulated(
    pid: i32,
    mut emu: Emulated,
    pidfd: OwnedFd,
    wake: &EventFd,
    rx: &mpsc::Receiver<Request>,
    events: &dyn Events,
) -> End {
    let mut running = true;
    // The program's migration point, once known: a stop there that nobody
    // asked for (a request given up on) is resumed in place.
    let mut point: Option<MigrationPoint> = None;
    loop {
        // SAFETY: the stub's descriptor lives as long as `emu`, which
        // outlives this borrow.
        let stub = unsafe { std::os::fd::BorrowedFd::borrow_raw(emu.stop_fd()) };
        // A stop reply read along with an earlier answer: handle it now.
        let buffered = running && emu.stop_buffered();
        let wait = buffered.then_some(Duration::ZERO);
        let mut ready = sys::poll_readable(&[pidfd.as_fd(), wake.fd(), stub], wait)
            .unwrap_or_else(|_| vec![false, true, false]);
        ready[2] |= buffered;
        if ready[2] && running {
            match emu.next_event(point.as_ref(), Duration::from_millis(1)) {
                Ok(Some(EmulatedEvent::Exited(_) | EmulatedEvent::Killed(_))) => running = false,
                Ok(Some(EmulatedEvent::AtMigrationPoint)) => {
                    let resumed = point
                        .as_ref()
                        .map(|p| xisa::set_request(pid, p, false).and_then(|()| emu.resume_at(p)));
                    if let Some(Err(e)) = resumed {
                        warn!(pid, "resuming at a migration point: {e}");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    // Without its stub nothing controls it any more.
                    warn!(
                        pid,
                        "lost the GDB stub of the emulated program: {e}; killing it"
                    );
                    // SAFETY: plain integer arguments; our own child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    running = false;
                }
            }
        }
        if let Some(status) = reap(pid) {
            return End::Exited(Some(status));
        }
        if ready[0] {
            for _ in 0..1000 {
                if let Some(status) = reap(pid) {
                    return End::Exited(Some(status));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            return End::Exited(None);
        }
        if ready[1] {
            wake.drain();
        }
        while let Ok(req) = rx.try_recv() {
            match req {
                Request::Discard(reply) => {
                    emu.kill();
                    kill_and_reap(pid);
                    let _ = reply.send(Ok(()));
                    return End::Discarded;
                }
                Request::StopAtMigrationPoint(at, timeout, reply) => {
                    point = Some(at.clone());
                    let r = if running {
                        stop_emulated(pid, &mut emu, &at, timeout)
                    } else {
                        Err(format!("process {pid} is stopped"))
                    };
                    running = r.is_err();
                    if !running {
                        events.frozen(pid, true);
                    }
                    let _ = reply.send(r.map(Box::new));
                }
                Request::ResumeAtMigrationPoint(at, reply) => {
                    let r = if running {
                        Err(format!("process {pid} is not stopped"))
                    } else {
                        xisa::set_request(pid, &at, false)
                            .and_then(|()| emu.resume_at(&at))
                            .map_err(|e| e.to_string())
                    };
                    if !running && r.is_ok() {
                        running = true;
                        events.frozen(pid, false);
                    }
                    let _ = reply.send(r);
                }
                other => refuse_emulated(pid, other),
            }
        }
    }
}

/// Runs an emulated program to its next migration point; on failure it
/// runs on with the request cleared.
fn stop_emulated(
    pid: i32,
    emu: &mut Emulated,
    point: &MigrationPoint,
    timeout: Duration,
) -> Result<ThreadSnapshot, String> {
    let reached = match emu.run_to_migration_point(point, timeout) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let left = xisa::set_request(pid, point, false)
                .and_then(|()| emu.leave_migration_window(point));
            match left {
                Ok(true) => Ok(()),
                Ok(false) => Err(not_reached(pid, timeout)),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => {
            // Whatever state it is in, it must not stop unwatched later.
            if let Err(c) = xisa::set_request(pid, point, false) {
                warn!(pid, "clearing the migration request: {c}");
            }
            return Err(e.to_string());
        }
    };
    match reached.and_then(|()| emu.snapshot().map_err(|e| e.to_string())) {
        Ok(s) => Ok(s),
        Err(e) => {
            if let Err(c) = xisa::set_request(pid, point, false) {
                warn!(pid, "clearing the migration request: {c}");
            }
            let resumed = if emu.registers().is_ok_and(|r| r.pc() == point.stop_insn) {
                emu.resume_at(point)
            } else {
                emu.resume()
            };
            if let Err(r) = resumed {
                warn!(pid, "resuming after a failed stop: {r}");
            }
            Err(e)
        }
    }
}

/// Answers a request an emulated process cannot serve.
fn refuse_emulated(pid: i32, req: Request) {
    let why = format!(
        "process {pid} runs emulated (qemu-user on a node of another ISA): it can only move to another node"
    );
    match req {
        Request::Freeze(r) => drop(r.send(Err(why))),
        Request::Thaw(r) => drop(r.send(Err(why))),
        Request::Inspect(r) => drop(r.send(Err(why))),
        Request::Capture(_, r) => drop(r.send(Err(why))),
        Request::DupFd(_, r) => drop(r.send(Err(why))),
        Request::Discard(r) | Request::ResumeAtMigrationPoint(_, r) => drop(r.send(Err(why))),
        Request::StopAtMigrationPoint(_, _, r) => drop(r.send(Err(why))),
    }
}

fn capture_json(f: &mut FrozenProcess) -> Result<serde_json::Value, String> {
    let state = f.capture().map_err(|e| e.to_string())?;
    serde_json::to_value(&state).map_err(|e| e.to_string())
}

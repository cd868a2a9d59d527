//! Freezing and thawing a whole process with `PTRACE_SEIZE` +
//! `PTRACE_INTERRUPT`: every thread ends in an interrupt stop (or group stop)
//! and no signal is ever sent. [`FrozenProcess`] owns the set of traced
//! threads; thaw is `PTRACE_DETACH` of each.

use crate::procfs::{self, status};
use crate::sys::misc::{getpid, gettid};
use crate::sys::ptrace::{self, PTRACE_O_TRACECLONE, PTRACE_O_TRACESYSGOOD};
use crate::sys::wait::Event;
use crate::tracer::{Tracer, WaitError};
use crate::Error;
use std::collections::BTreeMap;
use std::io;
use std::marker::PhantomData;
use std::time::{Duration, Instant};
use tracing::{debug, trace, warn};

/// How long a thread may take to reach its stop before freezing fails.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(10);

const SEIZE_OPTIONS: u64 = PTRACE_O_TRACECLONE | PTRACE_O_TRACESYSGOOD;

/// A process whose threads are all stopped under ptrace by the calling
/// thread. Not `Send`: ptrace requests are only accepted from the thread
/// that attached. Dropping it thaws the process (best effort).
#[derive(Debug)]
pub struct FrozenProcess {
    pub(crate) tracer: Tracer,
    /// Traced threads; `true` once the thread is in its stop.
    pub(crate) threads: BTreeMap<i32, bool>,
    /// Address of a `syscall` instruction in the target, once found.
    pub(crate) syscall_insn: Option<u64>,
    /// How syscalls are injected, once decided.
    pub(crate) injection_mode: Option<crate::inject::Mode>,
    thawed: bool,
    _not_send: PhantomData<*const ()>,
}

fn is_errno(e: &io::Error, errno: i32) -> bool {
    e.raw_os_error() == Some(errno)
}

/// True when process `pid` exists (a zombie counts; a thread id does not).
pub fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    procfs::with_text(&format!("/proc/{pid}/status"), |t| {
        status::parse(t).is_ok_and(|s| s.tgid == pid)
    })
    .unwrap_or(false)
}

/// Real uid of process `pid` (first field of `Uid:` in `/proc/PID/status`).
pub fn process_owner_uid(pid: i32) -> Result<u32, Error> {
    Ok(read_status(pid)?.uid[0])
}

/// Real uid and gid of process `pid`.
pub fn process_owner(pid: i32) -> Result<(u32, u32), Error> {
    let s = read_status(pid)?;
    Ok((s.uid[0], s.gid[0]))
}

fn read_status(pid: i32) -> Result<status::Status, Error> {
    if pid <= 0 {
        return Err(Error::NoSuchProcess { pid });
    }
    let path = format!("/proc/{pid}/status");
    let parsed = match procfs::with_text(&path, status::parse) {
        Ok(p) => p,
        Err(Error::Proc { source, .. })
            if is_errno(&source, libc::ENOENT) || is_errno(&source, libc::ESRCH) =>
        {
            return Err(Error::NoSuchProcess { pid })
        }
        Err(e) => return Err(e),
    };
    let s = parsed.map_err(|d| Error::parse(path, d))?;
    if s.tgid != pid {
        return Err(Error::NotAProcess {
            tid: pid,
            pid: s.tgid,
        });
    }
    Ok(s)
}

impl FrozenProcess {
    /// Stops every thread of process `pid`. Threads created while freezing
    /// are stopped too; threads that exit disappear from the set.
    pub fn freeze(pid: i32) -> Result<FrozenProcess, Error> {
        let started = Instant::now();
        if pid == getpid() {
            return Err(Error::SelfTrace { pid });
        }
        read_status(pid)?;
        let ppid = procfs::with_text(&format!("/proc/{pid}/stat"), procfs::stat::parse)
            .ok()
            .and_then(Result::ok)
            .map(|s| s.ppid);
        let mut fp = FrozenProcess {
            tracer: Tracer {
                pid,
                parent: ppid == Some(getpid()),
            },
            threads: BTreeMap::new(),
            syscall_insn: None,
            injection_mode: None,
            thawed: false,
            _not_send: PhantomData,
        };
        // On error `fp` is dropped, which detaches whatever was attached.
        fp.attach_all()?;
        debug!(
            pid,
            threads = fp.threads.len(),
            us = started.elapsed().as_micros() as u64,
            "frozen"
        );
        Ok(fp)
    }

    /// Takes over a single-threaded child of the caller that the calling
    /// thread already traces and that is in a ptrace stop (a restore
    /// worker, or a program started with `PTRACE_TRACEME` and stopped after
    /// its exec).
    pub fn adopt_stopped_child(pid: i32) -> FrozenProcess {
        FrozenProcess {
            tracer: Tracer { pid, parent: true },
            threads: BTreeMap::from([(pid, true)]),
            syscall_insn: None,
            injection_mode: None,
            thawed: false,
            _not_send: PhantomData,
        }
    }

    pub fn pid(&self) -> i32 {
        self.tracer.pid
    }

    /// Thread ids of the frozen process, ascending.
    pub fn tids(&self) -> Vec<i32> {
        self.threads.keys().copied().collect()
    }

    /// Duplicates file descriptor `fd` of the frozen process into the
    /// caller (`pidfd_getfd`), e.g. to hold it across a migration.
    pub fn dup_fd(&self, fd: i32) -> Result<std::os::fd::OwnedFd, Error> {
        let pid = self.tracer.pid;
        let os = |what| move |source| Error::Os { what, pid, source };
        let pidfd = crate::sys::misc::pidfd_open(pid).map_err(os("pidfd_open"))?;
        crate::sys::misc::pidfd_getfd(&pidfd, fd).map_err(os("pidfd_getfd"))
    }

    /// Lets every thread run again.
    pub fn thaw(mut self) -> Result<(), Error> {
        self.thawed = true;
        self.detach_all()
    }

    fn attach_all(&mut self) -> Result<(), Error> {
        let pid = self.tracer.pid;
        let deadline = Instant::now() + STOP_TIMEOUT;
        let task_dir = format!("/proc/{pid}/task");
        loop {
            let tids = match procfs::list_numeric(&task_dir) {
                Ok(t) => t,
                Err(e) if is_errno(&e, libc::ENOENT) || is_errno(&e, libc::ESRCH) => {
                    return Err(self.gone_error());
                }
                Err(e) => return Err(Error::proc(task_dir, e)),
            };
            let mut found_new = false;
            for tid in tids {
                if self.threads.contains_key(&tid) {
                    continue;
                }
                found_new = true;
                self.attach_one(tid)?;
            }
            self.wait_all_stopped(deadline)?;
            if self.threads.is_empty() {
                return Err(self.gone_error());
            }
            if !found_new {
                return Ok(());
            }
        }
    }

    fn gone_error(&self) -> Error {
        let pid = self.tracer.pid;
        if self.threads.is_empty() && !process_exists(pid) {
            Error::NoSuchProcess { pid }
        } else {
            Error::ProcessExited { pid }
        }
    }

    /// Seizes and interrupts one thread found in `/proc/PID/task`.
    fn attach_one(&mut self, tid: i32) -> Result<(), Error> {
        let pid = self.tracer.pid;
        match ptrace::seize(tid, SEIZE_OPTIONS) {
            Ok(()) => {
                trace!(pid, tid, "seized");
                self.threads.insert(tid, false);
                match ptrace::interrupt(tid) {
                    // ESRCH: it is dying; its exit is reported to us.
                    Ok(()) => Ok(()),
                    Err(e) if is_errno(&e, libc::ESRCH) => Ok(()),
                    Err(e) => Err(Error::ptrace("INTERRUPT", tid, e)),
                }
            }
            Err(e) if is_errno(&e, libc::ESRCH) => Ok(()), // exited already
            Err(e) if is_errno(&e, libc::EPERM) => self.explain_eperm(tid, e),
            Err(e) => Err(Error::ptrace("SEIZE", tid, e)),
        }
    }

    /// `PTRACE_SEIZE` said EPERM: the thread is already ours (auto-attached
    /// through TRACECLONE, its clone event not yet seen), traced by someone
    /// else, a zombie, or we lack the privilege.
    fn explain_eperm(&mut self, tid: i32, err: io::Error) -> Result<(), Error> {
        let pid = self.tracer.pid;
        let path = format!("/proc/{pid}/task/{tid}/status");
        let st = match procfs::read_string(&path).map(|t| status::parse(&t)) {
            Ok(Ok(s)) => s,
            // Vanished meanwhile.
            _ => return Ok(()),
        };
        if st.tracer_pid == gettid() {
            trace!(pid, tid, "already attached through TRACECLONE");
            self.threads.insert(tid, false);
            return Ok(());
        }
        if matches!(st.state, Some('Z') | Some('X')) {
            trace!(pid, tid, "zombie thread skipped");
            return Ok(());
        }
        if st.tracer_pid != 0 {
            return Err(Error::AlreadyTraced {
                pid,
                tid,
                tracer: st.tracer_pid,
            });
        }
        Err(Error::PermissionDenied { pid, source: err })
    }

    /// Waits until every attached thread is stopped, following clone events
    /// and passing signals through. All pending threads are polled in turn:
    /// a dying process's leader reports its exit only after its other
    /// (traced) threads have been collected, so no single thread may be
    /// waited for alone.
    pub(crate) fn wait_all_stopped(&mut self, deadline: Instant) -> Result<(), Error> {
        let mut round = 0;
        loop {
            let pending: Vec<i32> = self
                .threads
                .iter()
                .filter_map(|(&t, &stopped)| (!stopped).then_some(t))
                .collect();
            let Some(&first) = pending.first() else {
                return Ok(());
            };
            let mut progressed = false;
            for tid in pending {
                match self.tracer.poll(tid) {
                    Ok(Some(ev)) => {
                        progressed = true;
                        self.handle_freeze_event(tid, ev)?;
                    }
                    Ok(None) => {}
                    Err(WaitError::Os(e)) => return Err(Error::Wait { tid, source: e }),
                    Err(WaitError::Timeout) => {}
                }
            }
            if progressed {
                round = 0;
                continue;
            }
            if Instant::now() >= deadline {
                let pid = self.tracer.pid;
                let state = procfs::read_string(&format!("/proc/{pid}/task/{first}/stat"))
                    .ok()
                    .and_then(|t| procfs::stat::parse_state(&t))
                    .map_or_else(|| "?".to_owned(), String::from);
                return Err(Error::StopTimeout {
                    pid,
                    tid: first,
                    secs: STOP_TIMEOUT.as_secs(),
                    state,
                });
            }
            if round >= 50 {
                // Stopped threads killed meanwhile must be collected before
                // the leader can report its exit.
                let stopped: Vec<i32> = self
                    .threads
                    .iter()
                    .filter_map(|(&t, &s)| s.then_some(t))
                    .collect();
                for t in self.tracer.reap_dead(stopped.into_iter()) {
                    self.threads.remove(&t);
                }
            }
            crate::tracer::backoff(&mut round);
        }
    }

    fn handle_freeze_event(&mut self, tid: i32, ev: Event) -> Result<(), Error> {
        let pid = self.tracer.pid;
        trace!(pid, tid, ?ev, "freeze event");
        match ev {
            Event::Stopped(_) => {
                self.threads.insert(tid, true);
            }
            Event::Exited(_) | Event::Killed(_) | Event::Gone => {
                self.threads.remove(&tid);
                if tid == pid {
                    // The leader's exit is only reported once the whole
                    // thread group is gone.
                    return Err(Error::ProcessExited { pid });
                }
            }
            Event::Clone => {
                match ptrace::event_msg(tid) {
                    Ok(child) => {
                        let child = child as i32;
                        if std::path::Path::new(&format!("/proc/{pid}/task/{child}")).exists() {
                            trace!(pid, tid, child, "thread created during freeze");
                            self.threads.entry(child).or_insert(false);
                        } else {
                            // clone() without SIGCHLD made a new process,
                            // auto-attached all the same: let it go.
                            release_foreign(child);
                        }
                    }
                    Err(e) => warn!(pid, tid, "PTRACE_GETEVENTMSG: {e}"),
                }
                self.resume_and_interrupt(tid, 0)?;
            }
            Event::Signal(sig) => {
                // Deliver it: nothing may be lost. The signal-delivery stop
                // consumed the pending interrupt, so ask again.
                trace!(pid, tid, sig, "signal during freeze passed through");
                self.resume_and_interrupt(tid, sig)?;
            }
            Event::Syscall | Event::Other(_) => self.resume_and_interrupt(tid, 0)?,
        }
        Ok(())
    }

    fn resume_and_interrupt(&mut self, tid: i32, sig: i32) -> Result<(), Error> {
        for (op, r) in [
            ("CONT", ptrace::cont(tid, sig)),
            ("INTERRUPT", ptrace::interrupt(tid)),
        ] {
            match r {
                Ok(()) => {}
                // Killed meanwhile: the next wait reports the exit.
                Err(e) if is_errno(&e, libc::ESRCH) => {}
                Err(e) => return Err(Error::ptrace(op, tid, e)),
            }
        }
        Ok(())
    }

    fn detach_all(&mut self) -> Result<(), Error> {
        let pid = self.tracer.pid;
        let mut first_err = None;
        let mut dead = Vec::new();
        for (&tid, _) in std::mem::take(&mut self.threads).iter() {
            match ptrace::detach(tid, 0) {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::ESRCH) => dead.push(tid),
                Err(e) => {
                    warn!(pid, tid, "PTRACE_DETACH: {e}");
                    first_err.get_or_insert(Error::ptrace("DETACH", tid, e));
                }
            }
        }
        self.reap(&dead);
        debug!(pid, "thawed");
        first_err.map_or(Ok(()), Err)
    }

    /// Threads that died while traced wait for their tracer to collect
    /// them; do so, except for a leader whose status belongs to its parent.
    fn reap(&self, dead: &[i32]) {
        for &tid in dead {
            if tid == self.tracer.pid && self.tracer.parent {
                continue;
            }
            for _ in 0..5 {
                match crate::sys::wait::waitpid(tid, true) {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
    }
}

/// Detaches a process that TRACECLONE attached but that is not a thread of
/// the frozen process, once it has reported its initial stop.
fn release_foreign(child: i32) {
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut round = 0;
    loop {
        match crate::sys::wait::waitpid(child, true) {
            Ok(Some(status)) => {
                let sig = match crate::sys::wait::decode(status) {
                    Event::Signal(sig) => sig,
                    Event::Stopped(_) | Event::Other(_) | Event::Syscall | Event::Clone => 0,
                    _ => return, // already gone
                };
                if let Err(e) = ptrace::detach(child, sig) {
                    warn!(child, "detaching a process created during freeze: {e}");
                }
                return;
            }
            Ok(None) if Instant::now() < deadline => crate::tracer::backoff(&mut round),
            Ok(None) | Err(_) => {
                warn!(child, "a process created during freeze never stopped");
                return;
            }
        }
    }
}

impl Drop for FrozenProcess {
    fn drop(&mut self) {
        if !self.thawed {
            if let Err(e) = self.detach_all() {
                warn!(pid = self.tracer.pid, "thaw on drop: {e}");
            }
        }
    }
}

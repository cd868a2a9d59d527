//! Creating the worker process that becomes the restored one: a fork of
//! the caller made with `clone3`, optionally inside a given PID namespace
//! and with a chosen PID there (`set_tid`, as CRIU does), holding only the
//! file descriptors asked for, parked in `pause()` and stopped under ptrace
//! by the calling thread (`PTRACE_SEIZE` + `PTRACE_INTERRUPT`, no signal;
//! threads it is later made to create are traced from their start).
//! [`spawn_program`] makes the same kind of child run a program instead
//! (a destination of a move between ISAs, which starts as a fresh run).

use crate::sys::ptrace::{self, PTRACE_O_EXITKILL, PTRACE_O_TRACECLONE, PTRACE_O_TRACESYSGOOD};
use crate::sys::wait::Event;
use crate::tracer::WaitError;
use crate::{Error, FrozenProcess};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// Most file descriptors a worker can be given.
const MAX_FDS: usize = 64;

/// How to create a worker.
#[derive(Debug, Default)]
pub struct WorkerSpec<'a> {
    /// PID namespace to create the worker in (an open `/proc/X/ns/pid`);
    /// `None`: the caller's.
    pub pid_ns: Option<BorrowedFd<'a>>,
    /// The PID the worker must have in that namespace; `None`: any.
    pub pid: Option<i32>,
    /// `(fd in the caller, fd number in the worker)`; every other file
    /// descriptor is closed in the worker.
    pub fds: Vec<(RawFd, RawFd)>,
}

/// A freshly created worker, stopped under ptrace by the calling thread.
#[derive(Debug)]
pub struct Worker {
    /// The worker, controlled like a frozen process (its PID as the caller
    /// sees it).
    pub process: FrozenProcess,
    /// Its PID inside the namespace it was created in.
    pub ns_pid: i32,
}

/// `struct clone_args` (linux/sched.h), up to `cgroup`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn os(what: &'static str, pid: i32) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Os { what, pid, source }
}

/// Creates a worker as described by `spec`; see the module documentation.
pub fn spawn_worker(spec: &WorkerSpec) -> Result<Worker, Error> {
    let me = crate::sys::misc::getpid();
    if spec.fds.len() > MAX_FDS {
        return Err(Error::Restore {
            pid: spec.pid.unwrap_or(0),
            detail: format!(
                "{} file descriptors asked for, at most {MAX_FDS}",
                spec.fds.len()
            ),
        });
    }
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: `pipe` is a valid array of two fds for the kernel to fill.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(os("pipe2", me)(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    let (ready_r, ready_w) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };

    let child = clone_in_namespace(spec, ready_w.as_raw_fd(), None)?;
    drop(ready_w);
    let ns_pid = spec.pid.unwrap_or(0);
    // Wait until the child has arranged its fds (one byte) or died (EOF).
    let mut byte = [0u8; 1];
    let n = io::Read::read(&mut File::from(ready_r), &mut byte);
    if !matches!(n, Ok(1)) {
        reap(child);
        return Err(Error::Restore {
            pid: child,
            detail: format!("the worker died while setting up its file descriptors ({n:?})"),
        });
    }
    if let Err(e) = seize_and_stop(child) {
        // SAFETY: plain integer arguments; `child` is our own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
        reap(child);
        return Err(e);
    }
    let ns_pid = if ns_pid == 0 {
        ns_pid_of(child).unwrap_or(child)
    } else {
        ns_pid
    };
    Ok(Worker {
        process: FrozenProcess::adopt_stopped_child(child),
        ns_pid,
    })
}

/// Innermost PID of `pid` (last `NSpid:` field of its status).
fn ns_pid_of(pid: i32) -> Option<i32> {
    let t = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = t.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

fn reap(child: i32) {
    let _ = crate::sys::wait::waitpid(child, false);
}

fn seize_and_stop(child: i32) -> Result<(), Error> {
    ptrace::seize(
        child,
        PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL | PTRACE_O_TRACECLONE,
    )
    .map_err(|e| Error::ptrace("SEIZE", child, e))?;
    ptrace::interrupt(child).map_err(|e| Error::ptrace("INTERRUPT", child, e))?;
    let tracer = crate::tracer::Tracer {
        pid: child,
        parent: true,
    };
    let deadline = Instant::now() + crate::freeze::STOP_TIMEOUT;
    loop {
        match tracer.next_event(child, &[], Some(deadline)) {
            // Stopped in pause(): done with its setup. Stopped earlier
            // (closing its last fds): let it get there.
            Ok(Event::Stopped(_)) => match ptrace::get_regs(child) {
                Ok(r) if r.orig_rax == libc::SYS_pause as u64 => return Ok(()),
                Ok(_) => {
                    ptrace::cont(child, 0).map_err(|e| Error::ptrace("CONT", child, e))?;
                    std::thread::sleep(std::time::Duration::from_micros(100));
                    ptrace::interrupt(child).map_err(|e| Error::ptrace("INTERRUPT", child, e))?;
                }
                Err(e) => return Err(Error::ptrace("GETREGSET", child, e)),
            },
            Ok(Event::Signal(sig)) => {
                ptrace::cont(child, sig).map_err(|e| Error::ptrace("CONT", child, e))?;
                ptrace::interrupt(child).map_err(|e| Error::ptrace("INTERRUPT", child, e))?;
            }
            Ok(Event::Syscall | Event::Other(_) | Event::Clone) => {
                ptrace::cont(child, 0).map_err(|e| Error::ptrace("CONT", child, e))?;
                ptrace::interrupt(child).map_err(|e| Error::ptrace("INTERRUPT", child, e))?;
            }
            Ok(Event::Exited(_) | Event::Killed(_) | Event::Gone) => {
                return Err(Error::ProcessExited { pid: child })
            }
            Err(WaitError::Os(e)) => {
                return Err(Error::Wait {
                    tid: child,
                    source: e,
                })
            }
            Err(WaitError::Timeout) => {
                return Err(Error::StopTimeout {
                    pid: child,
                    tid: child,
                    secs: crate::freeze::STOP_TIMEOUT.as_secs(),
                    state: "?".into(),
                })
            }
        }
    }
}

/// Switches the calling thread's PID namespace for children to
/// `spec.pid_ns` (and back), and forks the worker there.
fn clone_in_namespace(
    spec: &WorkerSpec,
    ready_w: RawFd,
    exec: Option<&Exec>,
) -> Result<i32, Error> {
    let me = crate::sys::misc::getpid();
    let Some(ns) = spec.pid_ns else {
        return clone_worker(spec, ready_w, exec);
    };
    // The namespace we are in: where children go once we switch back.
    let own = File::open("/proc/thread-self/ns/pid")
        .map_err(|e| Error::proc("/proc/thread-self/ns/pid", e))?;
    // SAFETY: plain fd and flag arguments; only the calling thread's
    // namespace for new children changes.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) } == -1 {
        return Err(os("setns(CLONE_NEWPID)", me)(io::Error::last_os_error()));
    }
    let r = clone_worker(spec, ready_w, exec);
    // SAFETY: as above; `own` is our active PID namespace, always allowed.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) } == -1 {
        tracing::warn!(
            "cannot switch back to our own PID namespace: {}",
            io::Error::last_os_error()
        );
    }
    r
}

fn clone_worker(spec: &WorkerSpec, ready_w: RawFd, exec: Option<&Exec>) -> Result<i32, Error> {
    let me = crate::sys::misc::getpid();
    let mut fds = [(0 as RawFd, 0 as RawFd); MAX_FDS];
    for (slot, fd) in fds.iter_mut().zip(&spec.fds) {
        *slot = *fd;
    }
    let fds = &fds[..spec.fds.len()];
    // Temporary copies go at or above `base`, clear of every number used.
    let base = fds
        .iter()
        .flat_map(|&(a, b)| [a, b])
        .chain([ready_w, 2])
        .max()
        .unwrap_or(2)
        + 1;
    let set_tid = [spec.pid.unwrap_or(0) as libc::pid_t];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if spec.pid.is_some() {
            set_tid.as_ptr() as u64
        } else {
            0
        },
        set_tid_size: u64::from(spec.pid.is_some()),
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed; without
    // CLONE_VM the child gets a copy of our memory and runs `worker_child`,
    // which makes only raw system calls and never returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        -1 => {
            let e = io::Error::last_os_error();
            match (e.raw_os_error(), spec.pid) {
                (Some(libc::EEXIST), Some(pid)) => Err(Error::PidTaken { pid }),
                _ => Err(os("clone3", me)(e)),
            }
        }
        0 => worker_child(fds, ready_w, base, exec),
        child => Ok(child as i32),
    }
}

/// Runs in the cloned child of a possibly multi-threaded process: only raw
/// system calls, no allocation, no locks. Moves the wanted fds into place,
/// closes the rest, then either reports readiness and waits to be taken
/// over, or runs `exec` (reporting only a failure, as an errno, on the
/// close-on-exec readiness pipe). Only called in the child right after
/// `clone3` returned 0.
fn worker_child(fds: &[(RawFd, RawFd)], ready_w: RawFd, base: RawFd, exec: Option<&Exec>) -> ! {
    // SAFETY: we are the only thread of a fresh copy of the caller's
    // memory; every call below is a plain system call on integers or on
    // buffers on our stack, and the function never returns into Rust code
    // that could rely on state of the parent's other threads.
    unsafe {
        let mut tmp = [0 as RawFd; MAX_FDS];
        for (i, &(src, _)) in fds.iter().enumerate() {
            let t = libc::fcntl(src, libc::F_DUPFD, base);
            if t < 0 {
                libc::_exit(120);
            }
            tmp[i] = t;
        }
        let dup = if exec.is_some() {
            libc::F_DUPFD_CLOEXEC
        } else {
            libc::F_DUPFD
        };
        let ready = libc::fcntl(ready_w, dup, base);
        if ready < 0 {
            libc::_exit(121);
        }
        for (i, &(_, dst)) in fds.iter().enumerate() {
            if libc::dup2(tmp[i], dst) < 0 {
                libc::_exit(122);
            }
        }
        for fd in 0..base {
            if !fds.iter().any(|&(_, d)| d == fd) {
                libc::close(fd);
            }
        }
        libc::syscall(libc::SYS_close_range, base as u32, (ready - 1) as u32, 0u32);
        libc::syscall(libc::SYS_close_range, (ready + 1) as u32, u32::MAX, 0u32);
        if let Some(e) = exec {
            e.run_in_child(ready);
        }
        let one = [1u8];
        libc::write(ready, one.as_ptr().cast(), 1);
        libc::close(ready);
        loop {
            libc::pause();
        }
    }
}

/// A program for [`spawn_program`]: everything prepared before the fork,
/// since the child may not allocate.
pub struct Exec {
    program: CString,
    cwd: CString,
    // Owned strings behind the pointer arrays.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

fn c_string(what: &str, s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Restore {
        pid: 0,
        detail: format!("{what} {s:?} contains a NUL byte"),
    })
}

impl Exec {
    /// `program` with `argv` (argv[0] included) and `env` (`NAME=value`),
    /// in `cwd`, in a new session.
    pub fn new(program: &str, argv: &[String], env: &[String], cwd: &str) -> Result<Exec, Error> {
        let mut strings = Vec::with_capacity(argv.len() + env.len());
        for a in argv {
            strings.push(c_string("argument", a)?);
        }
        for e in env {
            strings.push(c_string("environment entry", e)?);
        }
        let ptr = |s: &CString| s.as_ptr();
        let mut argv_p: Vec<_> = strings[..argv.len()].iter().map(ptr).collect();
        argv_p.push(std::ptr::null());
        let mut envp_p: Vec<_> = strings[argv.len()..].iter().map(ptr).collect();
        envp_p.push(std::ptr::null());
        Ok(Exec {
            program: c_string("program", program)?,
            cwd: c_string("directory", cwd)?,
            _strings: strings,
            argv: argv_p,
            envp: envp_p,
        })
    }

    /// In the forked child: session, directory, `PTRACE_TRACEME`, exec. On
    /// failure writes the errno to `report` and exits with 127.
    ///
    /// # Safety
    /// Only in the child made by `clone3`, which may make raw system calls
    /// only.
    unsafe fn run_in_child(&self, report: RawFd) -> ! {
        // SAFETY: per this function's contract; every pointer refers to
        // memory prepared before the fork, NUL-terminated (arrays too).
        // Raw system calls throughout (no glibc state of the parent's).
        unsafe {
            let fail = |report: RawFd| -> ! {
                let errno = *libc::__errno_location();
                let b = errno.to_le_bytes();
                libc::syscall(libc::SYS_write, report, b.as_ptr(), b.len());
                libc::syscall(libc::SYS_exit_group, 127);
                libc::_exit(127);
            };
            libc::syscall(libc::SYS_setsid);
            if libc::syscall(libc::SYS_chdir, self.cwd.as_ptr()) != 0 {
                fail(report);
            }
            if libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                fail(report);
            }
            libc::syscall(
                libc::SYS_execve,
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            );
            fail(report)
        }
    }
}

/// Starts `exec` in a child made like a worker (namespace, PID, fds per
/// `spec`), still with the caller's credentials, and returns it stopped
/// under ptrace right after its `execve`, before its first instruction (see
/// [`FrozenProcess::become_user`]).
pub fn spawn_program(spec: &WorkerSpec, exec: &Exec) -> Result<FrozenProcess, Error> {
    let me = crate::sys::misc::getpid();
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: `pipe` is a valid array of two fds for the kernel to fill.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(os("pipe2", me)(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    let (ready_r, ready_w) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    let child = clone_in_namespace(spec, ready_w.as_raw_fd(), Some(exec))?;
    drop(ready_w);
    let fail = |detail: String| {
        // SAFETY: plain integer arguments; `child` is our own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
        reap(child);
        Err(Error::Restore { pid: child, detail })
    };
    // The pipe closes at the exec, or carries an errno; a child that never
    // gets there is killed.
    let mut poll = libc::pollfd {
        fd: ready_r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = crate::freeze::STOP_TIMEOUT.as_millis() as i32;
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut poll, 1, ms) } <= 0 {
        return fail(format!(
            "{} did not start within {} s",
            exec.program.to_string_lossy(),
            crate::freeze::STOP_TIMEOUT.as_secs()
        ));
    }
    let mut errno = [0u8; 4];
    let n = io::Read::read(&mut File::from(ready_r), &mut errno);
    if let Ok(4) = n {
        let e = io::Error::from_raw_os_error(i32::from_le_bytes(errno));
        return fail(format!(
            "cannot run {}: {e}",
            exec.program.to_string_lossy()
        ));
    }
    // The exec's SIGTRAP.
    let tracer = crate::tracer::Tracer {
        pid: child,
        parent: true,
    };
    let deadline = Instant::now() + crate::freeze::STOP_TIMEOUT;
    match tracer.next_event(child, &[], Some(deadline)) {
        Ok(Event::Signal(libc::SIGTRAP)) => {}
        other => return fail(format!("the program did not stop after exec ({other:?})")),
    }
    // Killed, not left running, if this process dies.
    if let Err(e) = crate::sys::ptrace::set_options(child, PTRACE_O_EXITKILL) {
        return fail(format!("PTRACE_SETOPTIONS: {e}"));
    }
    Ok(FrozenProcess::adopt_stopped_child(child))
}

/// System calls injected by [`FrozenProcess::become_user`] (x86_64).
const SYS_SETGROUPS: i64 = 116;
const SYS_SETRESUID: i64 = 117;
const SYS_SETRESGID: i64 = 119;
const SYS_PRCTL: i64 = 157;

impl FrozenProcess {
    /// Gives the stopped, single-threaded process the credentials `uid`
    /// and `gid` with no supplementary groups, and has it killed when the
    /// calling thread exits (`PR_SET_PDEATHSIG`: a program the agent
    /// started for a migration must not run on alone if the agent dies).
    /// Done by system call injection, so it can be done after the caller
    /// made privileged system calls in the process's name (a userfaultfd).
    pub fn become_user(&mut self, uid: u32, gid: u32) -> Result<(), Error> {
        let pid = self.pid();
        let (u, g) = (u64::from(uid), u64::from(gid));
        for (nr, args, what) in [
            (SYS_SETGROUPS, [0, 0, 0, 0, 0, 0], "setgroups"),
            (SYS_SETRESGID, [g, g, g, 0, 0, 0], "setresgid"),
            (SYS_SETRESUID, [u, u, u, 0, 0, 0], "setresuid"),
            (
                SYS_PRCTL,
                [
                    libc::PR_SET_PDEATHSIG as u64,
                    libc::SIGKILL as u64,
                    0,
                    0,
                    0,
                    0,
                ],
                "prctl(PR_SET_PDEATHSIG)",
            ),
        ] {
            let r = self.inject_syscall(pid, nr, args)?;
            if r < 0 {
                return Err(Error::Restore {
                    pid,
                    detail: format!(
                        "{what} in the program failed: {}",
                        io::Error::from_raw_os_error(-r as i32)
                    ),
                });
            }
        }
        Ok(())
    }
}

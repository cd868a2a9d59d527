//! Restoring process attributes and the thread's CPU state in a laid-out
//! worker: the other threads (with their TIDs), sigactions, sigaltstack, robust list, tid address, rseq, cwd,
//! umask, personality, name, pending signals and interval timers by injected syscalls; rlimits with
//! `prlimit` from the tracer; then registers (rewound for a syscall restart), xstate and the
//! signal mask with ptrace.

use super::layout::{Layout, Scratch, SYS_MUNMAP, SYS_PRCTL, SYS_RSEQ};
use crate::inject::Injection;
use crate::regs::{Regs, RestartKind};
use crate::sys::wait::Event;
use crate::sys::{itimer, ptrace};
use crate::tracer::WaitError;
use crate::{Error, FrozenProcess, ProcessState, ThreadState};

const SYS_NANOSLEEP: u64 = 35;
const SYS_CHDIR: i64 = 80;
const SYS_PERSONALITY: i64 = 135;
const SYS_UMASK: i64 = 95;
const SYS_RT_SIGACTION: i64 = 13;
const SYS_SIGALTSTACK: i64 = 131;
const SYS_SET_TID_ADDRESS: i64 = 218;
const SYS_RESTART_SYSCALL: u64 = 219;
const SYS_CLOCK_NANOSLEEP: u64 = 230;
const SYS_SET_ROBUST_LIST: i64 = 273;
const SYS_RT_SIGQUEUEINFO: i64 = 129;
const SYS_RT_TGSIGQUEUEINFO: i64 = 297;
const SYS_CLONE3: i64 = 435;
const PR_SET_NAME: u64 = 15;
const SS_DISABLE: i32 = 2;
const SS_AUTODISARM: i32 = 1 << 31;

/// The registers a restored thread must resume with, given the ones it
/// was captured with. A thread captured inside a syscall that the kernel
/// would have restarted (`-ERESTARTSYS`/`NOINTR`/`NOHAND`) re-executes the
/// `syscall` instruction (`rip -= 2`, `rax = orig_rax`);
/// `-ERESTART_RESTARTBLOCK` resumes through `restart_syscall`, except for
/// the sleeps, which are re-issued (the restart block lives in the origin's
/// kernel: a restarted sleep can only last longer, never fail with EINTR).
/// `orig_rax` is always -1 so the worker's kernel adds no restart of its own.
pub fn resume_regs(captured: &Regs) -> Regs {
    let mut r = *captured;
    if (captured.orig_rax as i64) >= 0 {
        match RestartKind::from_rax(captured.rax) {
            Some(
                RestartKind::RestartSys | RestartKind::RestartNoIntr | RestartKind::RestartNoHand,
            ) => {
                r.rip = captured.rip.wrapping_sub(2);
                r.rax = captured.orig_rax;
            }
            Some(RestartKind::RestartBlock) => {
                r.rip = captured.rip.wrapping_sub(2);
                r.rax = match captured.orig_rax {
                    SYS_NANOSLEEP | SYS_CLOCK_NANOSLEEP => captured.orig_rax,
                    _ => SYS_RESTART_SYSCALL,
                };
            }
            None => {}
        }
    }
    r.orig_rax = u64::MAX;
    r
}

/// Restores everything but memory content in a worker laid out by
/// [`crate::restore::lay_out`] (whose scratch mapping is removed here): the
/// other threads are created with their original TIDs (`clone3` with
/// `set_tid`, injected in the main thread). The worker stays stopped, ready
/// to thaw.
pub fn restore_process_state(
    worker: &mut FrozenProcess,
    state: &ProcessState,
    layout: &Layout,
) -> Result<(), Error> {
    let pid = worker.pid();
    let Some(main) = state.threads.iter().find(|t| t.tid == state.pid) else {
        return Err(Error::Restore {
            pid,
            detail: format!("thread {} (the main thread) was not captured", state.pid),
        });
    };
    let mut scr = Scratch::new(pid, layout);
    let mut s = worker.begin_injection(pid)?;
    for a in &state.sigactions {
        if a.signo == libc::SIGKILL || a.signo == libc::SIGSTOP {
            continue;
        }
        let mut b = Vec::with_capacity(32);
        for x in [a.handler, a.flags, a.restorer, a.mask] {
            b.extend_from_slice(&x.to_ne_bytes());
        }
        let at = scr.put(&b)?;
        s.syscall_ok(SYS_RT_SIGACTION, [a.signo as u64, at, 0, 8, 0, 0])?;
    }
    let cwd = scr.put_str(&state.cwd)?;
    s.syscall_ok(SYS_CHDIR, [cwd, 0, 0, 0, 0, 0])?;
    s.syscall_ok(SYS_UMASK, [u64::from(state.umask), 0, 0, 0, 0, 0])?;
    s.syscall_ok(SYS_PERSONALITY, [state.personality, 0, 0, 0, 0, 0])?;
    let comm = scr.put_str(&state.comm)?;
    s.syscall_ok(SYS_PRCTL, [PR_SET_NAME, comm, 0, 0, 0, 0])?;
    thread_calls(&mut s, main, &mut scr)?;
    let mut placed = vec![(pid, main)];
    for t in state.threads.iter().filter(|t| t.tid != state.pid) {
        placed.push((create_thread(worker, &mut s, pid, t, &mut scr)?, t));
    }
    s.finish()?;
    for &(outer, t) in &placed[1..] {
        let mut s = worker.begin_injection(outer)?;
        thread_calls(&mut s, t, &mut scr)?;
        s.finish()?;
    }
    // Signals still pending at the origin, queued again from inside (a
    // process may queue any siginfo to itself); blocked meanwhile by the
    // injection's signal mask.
    for &(outer, t) in &placed {
        if t.pending_signals.is_empty() {
            continue;
        }
        let mut s = worker.begin_injection(outer)?;
        for p in &t.pending_signals {
            let info = scr.put(&p.siginfo)?;
            let args = [state.pid as u64, t.tid as u64, p.signo as u64, info, 0, 0];
            s.syscall_ok(SYS_RT_TGSIGQUEUEINFO, args)?;
        }
        s.finish()?;
    }
    let mut s = worker.begin_injection(pid)?;
    for p in &state.shared_pending_signals {
        let info = scr.put(&p.siginfo)?;
        let args = [state.pid as u64, p.signo as u64, info, 0, 0, 0];
        s.syscall_ok(SYS_RT_SIGQUEUEINFO, args)?;
    }
    // Armed last, so they lose as little time as possible; one that fires
    // before the thaw leaves its signal pending (the injection blocks it).
    // A zero value would disarm: a timer waiting for its SIGALRM's dequeue
    // to re-arm it fires again one interval from now instead.
    for t in &state.itimers {
        let value_us = if t.pending_rearm() {
            t.interval_us
        } else {
            t.value_us
        };
        let at = scr.put(&itimer::encode(t.interval_us, value_us))?;
        let (nr, args) = itimer::setitimer(t.which, at);
        s.syscall_ok(nr, args)?;
    }
    s.syscall_ok(SYS_MUNMAP, [layout.scratch, layout.scratch_len, 0, 0, 0, 0])?;
    s.finish()?;

    for l in &state.rlimits {
        set_rlimit(pid, l.resource, l.soft, l.hard)?;
    }
    for (tid, t) in placed {
        let pt = |op: &'static str| move |e| Error::ptrace(op, tid, e);
        ptrace::set_regs(tid, &resume_regs(&t.regs).into()).map_err(pt("SETREGSET NT_PRSTATUS"))?;
        ptrace::set_xstate(tid, &t.xstate).map_err(pt("SETREGSET NT_X86_XSTATE"))?;
        ptrace::set_sigmask(tid, t.sigmask).map_err(pt("SETSIGMASK"))?;
    }
    Ok(())
}

/// The per-thread kernel state set from inside the thread itself:
/// sigaltstack, robust list, `clear_child_tid`, rseq.
fn thread_calls(s: &mut Injection, t: &ThreadState, scr: &mut Scratch) -> Result<(), Error> {
    if let Some(alt) = t.sigaltstack {
        let (sp, flags, size) = if alt.flags & SS_DISABLE != 0 {
            (0, SS_DISABLE, 0)
        } else {
            (alt.sp, alt.flags & SS_AUTODISARM, alt.size)
        };
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&sp.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&size.to_ne_bytes());
        let at = scr.put(&b)?;
        s.syscall_ok(SYS_SIGALTSTACK, [at, 0, 0, 0, 0, 0])?;
    }
    if t.robust_list.len != 0 {
        let rl = t.robust_list;
        s.syscall_ok(SYS_SET_ROBUST_LIST, [rl.head, rl.len, 0, 0, 0, 0])?;
    }
    if let Some(ctid) = t.clear_child_tid {
        s.syscall_ok(SYS_SET_TID_ADDRESS, [ctid, 0, 0, 0, 0, 0])?;
    }
    if t.rseq.rseq_abi_pointer != 0 {
        let c = t.rseq;
        s.syscall_ok(
            SYS_RSEQ,
            [
                c.rseq_abi_pointer,
                u64::from(c.rseq_abi_size),
                0,
                u64::from(c.signature),
                0,
                0,
            ],
        )?;
    }
    Ok(())
}

/// `struct clone_args` for a thread with TID `set_tid` (the address of one
/// `pid_t` holding it); no stack, TLS or tid pointers: the tracer sets the
/// registers before the thread runs.
pub(crate) fn thread_clone_args(set_tid: u64) -> Vec<u8> {
    let flags = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as u64;
    [flags, 0, 0, 0, 0, 0, 0, 0, set_tid, 1, 0]
        .iter()
        .flat_map(|x| x.to_ne_bytes())
        .collect()
}

/// Makes the main thread (session `s`) create thread `t.tid`; returns the
/// new thread's TID as the caller sees it, once it is in its first stop.
fn create_thread(
    worker: &mut FrozenProcess,
    s: &mut Injection,
    pid: i32,
    t: &ThreadState,
    scr: &mut Scratch,
) -> Result<i32, Error> {
    let set_tid = scr.put(&t.tid.to_ne_bytes())?;
    let args = thread_clone_args(set_tid);
    let at = scr.put(&args)?;
    let r = s.syscall(SYS_CLONE3, [at, args.len() as u64, 0, 0, 0, 0])?;
    if r == -i64::from(libc::EEXIST) {
        return Err(Error::PidTaken { pid: t.tid });
    }
    if r < 0 || r != i64::from(t.tid) {
        return Err(Error::Restore {
            pid,
            detail: format!("creating thread {}: clone3 returned {r}", t.tid),
        });
    }
    let outer = outer_tid(pid, t.tid)?;
    let tracer = crate::tracer::Tracer { pid, parent: true };
    let deadline = std::time::Instant::now() + crate::freeze::STOP_TIMEOUT;
    match tracer.next_event(outer, &[], Some(deadline)) {
        Ok(Event::Stopped(_)) => {}
        Ok(ev) => {
            return Err(Error::UnexpectedStop {
                tid: outer,
                doing: "waiting for a new thread's first stop",
                what: format!("{ev:?}"),
            })
        }
        Err(WaitError::Os(e)) => {
            return Err(Error::Wait {
                tid: outer,
                source: e,
            })
        }
        Err(WaitError::Timeout) => {
            return Err(Error::StopTimeout {
                pid,
                tid: outer,
                secs: crate::freeze::STOP_TIMEOUT.as_secs(),
                state: "?".into(),
            })
        }
    }
    worker.threads.insert(outer, true);
    Ok(outer)
}

/// The TID, as the caller sees it, of the thread of `pid` whose TID in its
/// own PID namespace is `inner`.
fn outer_tid(pid: i32, inner: i32) -> Result<i32, Error> {
    let dir = format!("/proc/{pid}/task");
    let tids = crate::procfs::list_numeric(&dir).map_err(|e| Error::proc(&dir, e))?;
    for tid in tids {
        let path = format!("{dir}/{tid}/status");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let last = text
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<i32>().ok());
        if last == Some(inner) {
            return Ok(tid);
        }
    }
    Err(Error::Restore {
        pid,
        detail: format!("new thread {inner} not found in {dir}"),
    })
}

fn set_rlimit(pid: i32, resource: u32, soft: u64, hard: u64) -> Result<(), Error> {
    let new = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `new` is a valid rlimit64 for the duration of the call; no
    // old value is asked for.
    let r = unsafe {
        libc::prlimit64(
            pid,
            resource as libc::__rlimit_resource_t,
            &new,
            std::ptr::null_mut(),
        )
    };
    if r == -1 {
        return Err(Error::Os {
            what: "prlimit",
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_syscall(nr: u64, rax: i64) -> Regs {
        Regs {
            rip: 0x1002,
            orig_rax: nr,
            rax: rax as u64,
            rdi: 7,
            ..Regs::default()
        }
    }

    #[test]
    fn restartable_syscalls_rewind() {
        for e in [-512, -513, -514] {
            let r = resume_regs(&in_syscall(0, e));
            assert_eq!(
                (r.rip, r.rax, r.orig_rax, r.rdi),
                (0x1000, 0, u64::MAX, 7),
                "{e}"
            );
        }
    }

    #[test]
    fn restart_block_uses_restart_syscall_except_sleeps() {
        let r = resume_regs(&in_syscall(202, -516));
        assert_eq!((r.rip, r.rax), (0x1000, SYS_RESTART_SYSCALL));
        let r = resume_regs(&in_syscall(SYS_CLOCK_NANOSLEEP, -516));
        assert_eq!((r.rip, r.rax), (0x1000, SYS_CLOCK_NANOSLEEP));
        let r = resume_regs(&in_syscall(SYS_NANOSLEEP, -516));
        assert_eq!((r.rip, r.rax), (0x1000, SYS_NANOSLEEP));
    }

    #[test]
    fn thread_clone_args_share_everything_and_set_one_tid() {
        let b = thread_clone_args(0x1234);
        assert_eq!(b.len(), 88);
        let at = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        let flags = at(0);
        for f in [
            libc::CLONE_VM,
            libc::CLONE_THREAD,
            libc::CLONE_SIGHAND,
            libc::CLONE_FILES,
        ] {
            assert_ne!(flags & f as u64, 0, "{f:#x}");
        }
        assert_eq!(at(4), 0, "a thread has no exit signal");
        assert_eq!((at(8), at(9)), (0x1234, 1));
    }

    #[test]
    fn finished_or_no_syscall_untouched() {
        // A syscall that already has its result (-EINTR, or a value).
        let r = resume_regs(&in_syscall(0, -4));
        assert_eq!((r.rip, r.rax, r.orig_rax), (0x1002, -4i64 as u64, u64::MAX));
        let r = resume_regs(&in_syscall(u64::MAX, -512));
        assert_eq!((r.rip, r.rax), (0x1002, -512i64 as u64));
    }
}

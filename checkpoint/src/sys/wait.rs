//! `waitpid(2)`/`waitid(2)` on one thread, and the pure decoding of a wait
//! status into what a tracer cares about.

use super::ptrace::{PTRACE_EVENT_CLONE, PTRACE_EVENT_STOP};
use std::io;

/// What a wait on a traced thread reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The thread exited with this status.
    Exited(i32),
    /// The thread was killed by this signal.
    Killed(i32),
    /// Syscall-entry or syscall-exit stop (`SIGTRAP | 0x80`, with TRACESYSGOOD).
    Syscall,
    /// `PTRACE_EVENT_STOP`: interrupt stop or group stop (signal given).
    Stopped(i32),
    /// `PTRACE_EVENT_CLONE`: the thread created a new thread (tid in the event message).
    Clone,
    /// Any other `PTRACE_EVENT_*` stop.
    Other(i32),
    /// The thread is dead but its status was left for its real parent to
    /// collect (or was already collected). Never produced by [`decode`].
    Gone,
    /// Signal-delivery-stop: the signal is about to be delivered.
    Signal(i32),
}

/// Decodes a raw `waitpid` status of a traced thread.
pub fn decode(status: i32) -> Event {
    if libc::WIFEXITED(status) {
        return Event::Exited(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        return Event::Killed(libc::WTERMSIG(status));
    }
    // Stopped (the only remaining case for a tracee; WIFCONTINUED is not
    // requested).
    let sig = (status >> 8) & 0xff;
    let event = (status >> 16) & 0xffff;
    if sig == libc::SIGTRAP | 0x80 {
        return Event::Syscall;
    }
    match event {
        0 => Event::Signal(sig),
        PTRACE_EVENT_STOP => Event::Stopped(sig),
        PTRACE_EVENT_CLONE => Event::Clone,
        e => Event::Other(e),
    }
}

/// Blocking or non-blocking `waitpid(tid, __WALL)`; `None` when `nohang`
/// and nothing is ready.
pub fn waitpid(tid: i32, nohang: bool) -> io::Result<Option<i32>> {
    let mut status = 0;
    let flags = libc::__WALL | if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `status` is a valid out pointer for the duration of the call.
        let r = unsafe { libc::waitpid(tid, &mut status, flags) };
        match r {
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            0 => return Ok(None),
            _ => return Ok(Some(status)),
        }
    }
}

/// What `waitid(WNOWAIT)` saw, without consuming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// A stop is ready; `waitpid` returns it.
    Stopped,
    /// The thread is dead (exited or killed); the status is left in place.
    Dead,
}

/// Looks at the next wait report of `tid` without consuming it.
pub fn peek(tid: i32, nohang: bool) -> io::Result<Option<Peek>> {
    let flags = libc::WEXITED | libc::WSTOPPED | if nohang { libc::WNOHANG } else { 0 };
    waitid_nowait(tid, flags)
}

/// Non-blocking: `Some(Peek::Dead)` when `tid` has exited, without
/// consuming anything (stops are not looked at).
pub fn peek_exited(tid: i32) -> io::Result<Option<Peek>> {
    waitid_nowait(tid, libc::WEXITED | libc::WNOHANG)
}

fn waitid_nowait(tid: i32, flags: i32) -> io::Result<Option<Peek>> {
    // SAFETY: siginfo_t is plain data; all-zero is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = flags | libc::WNOWAIT | libc::__WALL;
    loop {
        // SAFETY: `info` is a valid out pointer for the duration of the call.
        let r = unsafe { libc::waitid(libc::P_PID, tid as libc::id_t, &mut info, flags) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled `info` (or left it zeroed for WNOHANG).
        let pid = unsafe { info.si_pid() };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED => Peek::Dead,
            _ => Peek::Stopped,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(sig: i32, event: i32) -> i32 {
        (event << 16) | (sig << 8) | 0x7f
    }

    #[test]
    fn exits_and_kills() {
        assert_eq!(decode(3 << 8), Event::Exited(3));
        assert_eq!(decode(0), Event::Exited(0));
        assert_eq!(decode(libc::SIGKILL), Event::Killed(libc::SIGKILL));
        assert_eq!(decode(libc::SIGSEGV | 0x80), Event::Killed(libc::SIGSEGV));
    }

    #[test]
    fn stops() {
        assert_eq!(decode(stopped(libc::SIGTRAP | 0x80, 0)), Event::Syscall);
        assert_eq!(
            decode(stopped(libc::SIGTRAP, PTRACE_EVENT_STOP)),
            Event::Stopped(libc::SIGTRAP)
        );
        assert_eq!(
            decode(stopped(libc::SIGSTOP, PTRACE_EVENT_STOP)),
            Event::Stopped(libc::SIGSTOP)
        );
        assert_eq!(
            decode(stopped(libc::SIGTRAP, PTRACE_EVENT_CLONE)),
            Event::Clone
        );
        assert_eq!(decode(stopped(libc::SIGTRAP, 4)), Event::Other(4));
        assert_eq!(
            decode(stopped(libc::SIGUSR1, 0)),
            Event::Signal(libc::SIGUSR1)
        );
        assert_eq!(
            decode(stopped(libc::SIGTRAP, 0)),
            Event::Signal(libc::SIGTRAP)
        );
    }
}

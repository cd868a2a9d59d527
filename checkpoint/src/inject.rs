//! Syscall injection: making a stopped thread execute one system call of
//! our choosing and come back exactly as it was.
//!
//! No memory is written. An existing `syscall` instruction (`0f 05`) is
//! found in the target (the vDSO has several). For each injected call the
//! thread's registers point at it with `orig_rax = -1` (so the kernel's
//! syscall-restart logic leaves them alone), and two `PTRACE_SYSCALL`
//! round trips run it from entry to exit. All signals are blocked meanwhile.
//! At the end the original registers and signal mask are put back and the
//! thread is returned to an interrupt stop (`PTRACE_INTERRUPT` +
//! `PTRACE_CONT`), the same kind of stop it was frozen in, so an
//! interrupted syscall is restarted by the kernel on thaw as if nothing had
//! happened. Several calls can share one [`Injection`] session.

use crate::procfs::{self, maps};
use crate::sys::mem;
use crate::sys::ptrace;
use crate::sys::wait::Event;
use crate::tracer::{Tracer, WaitError};
use crate::{Error, FrozenProcess};
use tracing::trace;

/// An open injection session on one stopped thread. Finish it with
/// [`Injection::finish`]; dropping it restores the thread best-effort.
pub(crate) struct Injection {
    tracer: Tracer,
    tid: i32,
    insn: u64,
    saved_regs: libc::user_regs_struct,
    saved_mask: u64,
    open: bool,
}

fn is_esrch(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ESRCH)
}

impl FrozenProcess {
    /// Runs syscall `nr` with `args` in thread `tid` and returns the raw
    /// `rax` (negative values are `-errno`). The thread is left exactly as
    /// it was.
    pub fn inject_syscall(&mut self, tid: i32, nr: i64, args: [u64; 6]) -> Result<i64, Error> {
        let mut s = self.begin_injection(tid)?;
        let r = s.syscall(nr, args);
        let fin = s.finish();
        let r = r?;
        fin?;
        Ok(r)
    }

    /// Starts an injection session on `tid` (which must be frozen).
    pub(crate) fn begin_injection(&mut self, tid: i32) -> Result<Injection, Error> {
        if !self.threads.contains_key(&tid) {
            return Err(Error::UnknownThread {
                pid: self.tracer.pid,
                tid,
            });
        }
        let insn = self.syscall_instruction()?;
        Injection::begin(self.tracer, tid, insn)
    }

    /// Address of a `syscall` instruction in the target, found once.
    pub(crate) fn syscall_instruction(&mut self) -> Result<u64, Error> {
        if let Some(a) = self.syscall_insn {
            return Ok(a);
        }
        let pid = self.tracer.pid;
        let path = format!("/proc/{pid}/maps");
        let text = procfs::read_string(&path)?;
        let vmas = maps::parse_maps(&text).map_err(|d| Error::parse(path, d))?;
        let a = find_syscall_instruction(pid, &vmas)?;
        trace!(pid, addr = format_args!("{a:#x}"), "syscall instruction");
        self.syscall_insn = Some(a);
        Ok(a)
    }
}

/// Searches the vDSO first, then every other executable mapping.
pub(crate) fn find_syscall_instruction(pid: i32, vmas: &[maps::Vma]) -> Result<u64, Error> {
    let user = |v: &&maps::Vma| v.executable() && v.start < 0x8000_0000_0000;
    let vdso = vmas.iter().filter(user).filter(|v| v.name == "[vdso]");
    let others = vmas.iter().filter(user).filter(|v| v.name != "[vdso]");
    for v in vdso.chain(others) {
        let mut off = 0u64;
        // Chunks overlap by one byte so an instruction on a boundary is found.
        const CHUNK: u64 = 64 * 1024;
        while off < v.len() {
            let len = CHUNK.min(v.len() - off) as usize;
            let mut buf = vec![0u8; len];
            let n = match mem::read(pid, v.start + off, &mut buf) {
                Ok(n) => n,
                Err(_) => break, // unreadable (e.g. --x): try the next one
            };
            if let Some(i) = find_syscall(&buf[..n]) {
                return Ok(v.start + off + i as u64);
            }
            if n < len {
                break;
            }
            off += CHUNK - 1;
        }
    }
    Err(Error::NoSyscallInstruction { pid })
}

/// Offset of the first `0f 05` in `code`.
pub(crate) fn find_syscall(code: &[u8]) -> Option<usize> {
    code.windows(2).position(|w| w == [0x0f, 0x05])
}

impl Injection {
    fn begin(tracer: Tracer, tid: i32, insn: u64) -> Result<Injection, Error> {
        let saved_regs = ptrace::get_regs(tid).map_err(|e| Error::ptrace("GETREGSET", tid, e))?;
        let saved_mask =
            ptrace::get_sigmask(tid).map_err(|e| Error::ptrace("GETSIGMASK", tid, e))?;
        ptrace::set_sigmask(tid, u64::MAX).map_err(|e| Error::ptrace("SETSIGMASK", tid, e))?;
        Ok(Injection {
            tracer,
            tid,
            insn,
            saved_regs,
            saved_mask,
            open: true,
        })
    }

    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// Runs one syscall; returns raw `rax`.
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<i64, Error> {
        let tid = self.tid;
        let mut regs = self.saved_regs;
        regs.rip = self.insn;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX;
        regs.rdi = args[0];
        regs.rsi = args[1];
        regs.rdx = args[2];
        regs.r10 = args[3];
        regs.r8 = args[4];
        regs.r9 = args[5];
        ptrace::set_regs(tid, &regs).map_err(|e| Error::ptrace("SETREGSET", tid, e))?;
        self.run_to_syscall_stop("entering the injected syscall")?;
        self.run_to_syscall_stop("leaving the injected syscall")?;
        let out = ptrace::get_regs(tid).map_err(|e| Error::ptrace("GETREGSET", tid, e))?;
        if out.orig_rax != nr as u64 {
            return Err(Error::UnexpectedStop {
                tid,
                doing: "injecting a syscall",
                what: format!("stopped in syscall {} instead of {nr}", out.orig_rax as i64),
            });
        }
        trace!(tid, nr, rax = out.rax as i64, "injected");
        Ok(out.rax as i64)
    }

    /// Like [`Injection::syscall`], but a negative result becomes an error.
    pub fn syscall_ok(&mut self, nr: i64, args: [u64; 6]) -> Result<u64, Error> {
        let r = self.syscall(nr, args)?;
        if (-4095..0).contains(&r) {
            return Err(Error::InjectedSyscall {
                tid: self.tid,
                nr,
                errno: std::io::Error::from_raw_os_error(-r as i32),
            });
        }
        Ok(r as u64)
    }

    fn wait(&self, doing: &'static str) -> Result<Event, Error> {
        let tid = self.tid;
        match self.tracer.next_event(tid, None) {
            Ok(Event::Exited(_) | Event::Killed(_) | Event::Gone) => {
                Err(Error::ThreadExited { tid })
            }
            Ok(ev) => Ok(ev),
            Err(WaitError::Os(e)) => Err(Error::Wait { tid, source: e }),
            Err(WaitError::Timeout) => Err(Error::UnexpectedStop {
                tid,
                doing,
                what: "timeout".into(),
            }),
        }
    }

    /// `PTRACE_SYSCALL` until the next syscall-entry or -exit stop. Only
    /// SIGKILL and SIGSTOP get through the blocked mask; a SIGSTOP is
    /// delivered (a group stop is then reported and stepped over, and the
    /// kernel re-establishes it at detach).
    fn run_to_syscall_stop(&mut self, doing: &'static str) -> Result<(), Error> {
        let tid = self.tid;
        let mut sig = 0;
        loop {
            ptrace::syscall(tid, sig).map_err(|e| {
                if is_esrch(&e) {
                    Error::ThreadExited { tid }
                } else {
                    Error::ptrace("SYSCALL", tid, e)
                }
            })?;
            sig = 0;
            match self.wait(doing)? {
                Event::Syscall => return Ok(()),
                Event::Signal(s) => sig = s,
                Event::Stopped(_) | Event::Other(_) | Event::Clone => {}
                ev => {
                    return Err(Error::UnexpectedStop {
                        tid,
                        doing,
                        what: format!("{ev:?}"),
                    })
                }
            }
        }
    }

    /// Restores registers and signal mask and returns the thread to an
    /// interrupt stop.
    pub fn finish(mut self) -> Result<(), Error> {
        self.open = false;
        self.restore()
    }

    fn restore(&mut self) -> Result<(), Error> {
        let tid = self.tid;
        ptrace::set_regs(tid, &self.saved_regs).map_err(|e| Error::ptrace("SETREGSET", tid, e))?;
        ptrace::set_sigmask(tid, self.saved_mask)
            .map_err(|e| Error::ptrace("SETSIGMASK", tid, e))?;
        let mut sig = 0;
        loop {
            ptrace::interrupt(tid).map_err(|e| Error::ptrace("INTERRUPT", tid, e))?;
            ptrace::cont(tid, sig).map_err(|e| Error::ptrace("CONT", tid, e))?;
            match self.wait("returning to the interrupt stop")? {
                Event::Stopped(_) => return Ok(()),
                // A signal that arrived meanwhile is now unblocked: deliver
                // it (it consumed the interrupt, so interrupt again).
                Event::Signal(s) => sig = s,
                _ => sig = 0,
            }
        }
    }
}

impl Drop for Injection {
    fn drop(&mut self) {
        if self.open {
            self.open = false;
            if let Err(e) = self.restore() {
                tracing::warn!(tid = self.tid, "restoring after a failed injection: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_syscall_bytes() {
        assert_eq!(find_syscall(&[0x90, 0x0f, 0x05, 0xc3]), Some(1));
        assert_eq!(find_syscall(&[0x0f, 0x05]), Some(0));
        assert_eq!(find_syscall(&[0x05, 0x0f]), None);
        assert_eq!(find_syscall(&[0x0f]), None);
        assert_eq!(find_syscall(&[]), None);
    }
}

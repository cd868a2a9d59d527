//! Syscall injection: making a stopped thread execute one system call of
//! our choosing and come back exactly as it was.
//!
//! No memory is written. An existing `syscall` instruction (`0f 05`) is
//! found in the target (the vDSO has several). For each injected call the
//! thread's registers point at it with `orig_rax = -1` (so the kernel's
//! syscall-restart logic leaves them alone) and the thread is single-stepped
//! over it: the kernel reports the step at syscall exit as a SIGTRAP
//! signal-delivery-stop, one round trip per call, and the SIGTRAP is
//! discarded on the next resume. Signals other than SIGTRAP are blocked
//! meanwhile (a blocked or ignored SIGTRAP would make the kernel reset the
//! process's SIGTRAP handler when it forces the trap). At the end the
//! original registers and signal mask are put back and the thread stays in
//! that signal-delivery-stop: like the interrupt stop it was frozen in, it
//! is inside the kernel's signal handling, so on thaw the kernel restarts an
//! interrupted syscall (`-ERESTART*` rewind) as if nothing had happened.
//!
//! When the process ignores SIGTRAP, calls run between `PTRACE_SYSCALL`
//! entry and exit stops instead (two round trips), and the thread is then
//! returned to an interrupt stop with `PTRACE_INTERRUPT` + `PTRACE_CONT`
//! (a syscall-exit-stop is not on the signal path, so restored registers
//! holding `-ERESTARTSYS` would otherwise reach the application).
//!
//! Several calls can share one [`Injection`] session, and sessions on
//! different threads can run their calls concurrently
//! ([`Injection::start_syscall`] / [`Injection::complete_syscall`]).

use crate::procfs::{self, maps};
use crate::sys::mem;
use crate::sys::ptrace;
use crate::sys::wait::Event;
use crate::tracer::{Tracer, WaitError};
use crate::{Error, FrozenProcess};
use tracing::trace;

const SIGTRAP_BIT: u64 = 1 << (libc::SIGTRAP - 1);

/// How the injected `syscall` instruction is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `PTRACE_SINGLESTEP` over it: one stop per call.
    SingleStep,
    /// `PTRACE_SYSCALL` entry and exit stops: two stops per call.
    SyscallStops,
}

/// An open injection session on one stopped thread. Finish it with
/// [`Injection::finish`]; dropping it restores the thread best-effort.
pub(crate) struct Injection {
    tracer: Tracer,
    mode: Mode,
    tid: i32,
    insn: u64,
    saved_regs: libc::user_regs_struct,
    saved_mask: u64,
    /// The other traced threads of the process.
    siblings: Vec<i32>,
    /// Syscall started and not yet completed.
    pending_nr: Option<i64>,
    /// Registers and mask not yet restored.
    open: bool,
    /// Restored, but (SyscallStops mode) the interrupt stop not yet reached.
    returning: bool,
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
        let mode = self.injection_mode()?;
        Injection::begin(self.tracer, mode, tid, insn, self.tids())
    }

    /// Single-step unless the process ignores SIGTRAP (looked up once: a
    /// frozen process cannot change its dispositions).
    fn injection_mode(&mut self) -> Result<Mode, Error> {
        if let Some(m) = self.injection_mode {
            return Ok(m);
        }
        let path = format!("/proc/{}/status", self.tracer.pid);
        let st =
            procfs::with_text(&path, procfs::status::parse)?.map_err(|d| Error::parse(path, d))?;
        Ok(*self.injection_mode.insert(mode_for(st.sig_ign)))
    }

    /// Address of a `syscall` instruction in the target, found once.
    pub(crate) fn syscall_instruction(&mut self) -> Result<u64, Error> {
        if let Some(a) = self.syscall_insn {
            return Ok(a);
        }
        let pid = self.tracer.pid;
        let path = format!("/proc/{pid}/maps");
        let vmas =
            procfs::with_text(&path, maps::parse_maps)?.map_err(|d| Error::parse(path, d))?;
        let a = find_syscall_instruction(pid, &vmas)?;
        trace!(pid, addr = format_args!("{a:#x}"), "syscall instruction");
        self.syscall_insn = Some(a);
        Ok(a)
    }
}

/// The injection mode for a process whose ignored-signal mask is `sig_ign`.
pub(crate) fn mode_for(sig_ign: u64) -> Mode {
    if sig_ign & SIGTRAP_BIT != 0 {
        Mode::SyscallStops
    } else {
        Mode::SingleStep
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
    fn begin(
        tracer: Tracer,
        mode: Mode,
        tid: i32,
        insn: u64,
        siblings: Vec<i32>,
    ) -> Result<Injection, Error> {
        let gone = |op| {
            move |e: std::io::Error| {
                if is_esrch(&e) {
                    Error::ThreadExited { tid }
                } else {
                    Error::ptrace(op, tid, e)
                }
            }
        };
        let saved_regs = ptrace::get_regs(tid).map_err(gone("GETREGSET"))?;
        let saved_mask = ptrace::get_sigmask(tid).map_err(gone("GETSIGMASK"))?;
        let block = match mode {
            Mode::SingleStep => !SIGTRAP_BIT,
            Mode::SyscallStops => u64::MAX,
        };
        ptrace::set_sigmask(tid, block).map_err(gone("SETSIGMASK"))?;
        Ok(Injection {
            tracer,
            mode,
            tid,
            insn,
            saved_regs,
            saved_mask,
            siblings,
            pending_nr: None,
            open: true,
            returning: false,
        })
    }

    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// The registers the thread had when the session began.
    pub fn saved_regs(&self) -> &libc::user_regs_struct {
        &self.saved_regs
    }

    /// Runs one syscall; returns raw `rax`.
    pub fn syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<i64, Error> {
        self.start_syscall(nr, args)?;
        self.complete_syscall()
    }

    /// Like [`Injection::syscall`], but a negative result becomes an error.
    pub fn syscall_ok(&mut self, nr: i64, args: [u64; 6]) -> Result<u64, Error> {
        self.start_syscall(nr, args)?;
        self.complete_syscall_ok()
    }

    /// Sets up and starts syscall `nr`; [`Injection::complete_syscall`]
    /// collects the result. Starting calls in several threads before
    /// completing any lets them run concurrently.
    pub fn start_syscall(&mut self, nr: i64, args: [u64; 6]) -> Result<(), Error> {
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
        self.resume(0)?;
        self.pending_nr = Some(nr);
        Ok(())
    }

    fn resume(&self, sig: i32) -> Result<(), Error> {
        match self.mode {
            Mode::SingleStep => {
                ptrace::singlestep(self.tid, sig).map_err(|e| self.resume_error("SINGLESTEP", e))
            }
            Mode::SyscallStops => {
                ptrace::syscall(self.tid, sig).map_err(|e| self.resume_error("SYSCALL", e))
            }
        }
    }

    /// Resumes until the stop that ends this step of the call: the SIGTRAP
    /// of the single step, or the next syscall stop. Only SIGKILL and
    /// SIGSTOP get through the blocked mask; a SIGSTOP is delivered (the
    /// group stop is then reported and stepped over; the kernel
    /// re-establishes it at detach).
    fn run_to_stop(&mut self, doing: &'static str) -> Result<(), Error> {
        loop {
            match (self.mode, self.wait(doing)?) {
                (Mode::SingleStep, Event::Signal(libc::SIGTRAP)) => return Ok(()),
                (Mode::SyscallStops, Event::Syscall) => return Ok(()),
                (_, Event::Signal(sig)) => self.resume(sig)?,
                // A clone event: an injected clone of a traced process.
                (_, Event::Stopped(_) | Event::Other(_) | Event::Syscall | Event::Clone) => {
                    self.resume(0)?
                }
                (_, ev) => {
                    return Err(Error::UnexpectedStop {
                        tid: self.tid,
                        doing,
                        what: format!("{ev:?}"),
                    })
                }
            }
        }
    }

    /// Waits for the syscall started by [`Injection::start_syscall`] to
    /// finish and returns raw `rax`.
    pub fn complete_syscall(&mut self) -> Result<i64, Error> {
        let tid = self.tid;
        let Some(nr) = self.pending_nr.take() else {
            return Err(Error::UnexpectedStop {
                tid,
                doing: "completing an injected syscall",
                what: "no syscall was started".into(),
            });
        };
        let doing = "running an injected syscall";
        self.run_to_stop(doing)?;
        if self.mode == Mode::SyscallStops {
            // That was the entry stop; now run to the exit stop.
            self.resume(0)?;
            self.run_to_stop(doing)?;
        }
        let out = ptrace::get_regs(tid).map_err(|e| Error::ptrace("GETREGSET", tid, e))?;
        if out.rip != self.insn + 2 || out.orig_rax != nr as u64 {
            return Err(Error::UnexpectedStop {
                tid,
                doing,
                what: format!(
                    "stopped at {:#x} in syscall {} instead of after syscall {nr} at {:#x}",
                    out.rip, out.orig_rax as i64, self.insn
                ),
            });
        }
        trace!(tid, nr, rax = out.rax as i64, "injected");
        Ok(out.rax as i64)
    }

    /// [`Injection::complete_syscall`] with negative results as errors.
    pub fn complete_syscall_ok(&mut self) -> Result<u64, Error> {
        let nr = self.pending_nr.unwrap_or(-1);
        let r = self.complete_syscall()?;
        if (-4095..0).contains(&r) {
            return Err(Error::InjectedSyscall {
                tid: self.tid,
                nr,
                errno: std::io::Error::from_raw_os_error(-r as i32),
            });
        }
        Ok(r as u64)
    }

    fn resume_error(&self, op: &'static str, e: std::io::Error) -> Error {
        if is_esrch(&e) {
            Error::ThreadExited { tid: self.tid }
        } else {
            Error::ptrace(op, self.tid, e)
        }
    }

    fn wait(&self, doing: &'static str) -> Result<Event, Error> {
        let tid = self.tid;
        match self.tracer.next_event(tid, &self.siblings, None) {
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

    /// Restores registers and signal mask (and, in SyscallStops mode,
    /// returns the thread to an interrupt stop).
    pub fn finish(mut self) -> Result<(), Error> {
        self.start_finish()?;
        self.complete_finish()
    }

    /// First half of [`Injection::finish`]: restore, and resume if needed.
    pub fn start_finish(&mut self) -> Result<(), Error> {
        self.open = false;
        let tid = self.tid;
        ptrace::set_regs(tid, &self.saved_regs).map_err(|e| Error::ptrace("SETREGSET", tid, e))?;
        ptrace::set_sigmask(tid, self.saved_mask)
            .map_err(|e| Error::ptrace("SETSIGMASK", tid, e))?;
        if self.mode == Mode::SyscallStops {
            self.returning = true;
            self.interrupt_and_cont(0)?;
        }
        Ok(())
    }

    fn interrupt_and_cont(&self, sig: i32) -> Result<(), Error> {
        let tid = self.tid;
        ptrace::interrupt(tid).map_err(|e| self.resume_error("INTERRUPT", e))?;
        ptrace::cont(tid, sig).map_err(|e| self.resume_error("CONT", e))
    }

    /// Second half of [`Injection::finish`]: wait for the interrupt stop.
    pub fn complete_finish(mut self) -> Result<(), Error> {
        self.wait_returned()
    }

    fn wait_returned(&mut self) -> Result<(), Error> {
        while self.returning {
            match self.wait("returning to the interrupt stop")? {
                Event::Stopped(_) => self.returning = false,
                // A signal that arrived meanwhile is now unblocked: deliver
                // it (it consumed the interrupt, so interrupt again).
                Event::Signal(s) => self.interrupt_and_cont(s)?,
                _ => self.interrupt_and_cont(0)?,
            }
        }
        Ok(())
    }
}

impl Drop for Injection {
    fn drop(&mut self) {
        if self.open && self.pending_nr.is_some() {
            // Error path: a syscall may still be running; collect it first.
            let _ = self.complete_syscall();
        }
        let r = if self.open {
            self.start_finish()
        } else {
            Ok(())
        };
        if let Err(e) = r.and_then(|()| self.wait_returned()) {
            tracing::warn!(tid = self.tid, "restoring after an injection: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_depends_on_ignored_sigtrap() {
        assert_eq!(mode_for(0), Mode::SingleStep);
        assert_eq!(mode_for(!SIGTRAP_BIT), Mode::SingleStep);
        assert_eq!(mode_for(1 << 4), Mode::SyscallStops);
    }

    #[test]
    fn finds_syscall_bytes() {
        assert_eq!(find_syscall(&[0x90, 0x0f, 0x05, 0xc3]), Some(1));
        assert_eq!(find_syscall(&[0x0f, 0x05]), Some(0));
        assert_eq!(find_syscall(&[0x05, 0x0f]), None);
        assert_eq!(find_syscall(&[0x0f]), None);
        assert_eq!(find_syscall(&[]), None);
    }
}

//! x86_64 threads under ptrace: a frozen single-threaded process run to its
//! next migration point, a fresh child run to a function's entry, and
//! their registers as a `popcorn_isa` register file.

use super::{MigrationPoint, ThreadControl, MAX_WINDOW_STEPS};
use crate::sys::ptrace;
use crate::sys::wait::Event;
use crate::tracer::WaitError;
use crate::{Error, FrozenProcess};
use popcorn_isa::{Isa, RegisterFile, X86_64Regs};
use std::time::{Duration, Instant};

/// `int3`.
const INT3: u8 = 0xcc;

/// The thread `tid` of a process frozen by the calling thread.
pub struct PtraceThread {
    pid: i32,
    tid: i32,
}

impl ThreadControl for PtraceThread {
    fn isa(&self) -> Isa {
        Isa::X86_64
    }

    fn pid(&self) -> i32 {
        self.pid
    }

    fn registers(&mut self) -> Result<RegisterFile, Error> {
        let u = ptrace::get_regs(self.tid).map_err(|e| Error::ptrace("GETREGS", self.tid, e))?;
        Ok(RegisterFile::X86_64(X86_64Regs {
            gpr: [
                u.rax, u.rdx, u.rcx, u.rbx, u.rsi, u.rdi, u.rbp, u.rsp, u.r8, u.r9, u.r10, u.r11,
                u.r12, u.r13, u.r14, u.r15,
            ],
            rip: u.rip,
            rflags: u.eflags,
            fs_base: u.fs_base,
            gs_base: u.gs_base,
            ..X86_64Regs::default()
        }))
    }

    fn set_registers(&mut self, regs: &RegisterFile) -> Result<(), Error> {
        let RegisterFile::X86_64(x) = regs else {
            return Err(Error::MigrationPoint {
                pid: self.pid,
                detail: format!("{} registers given for an x86_64 thread", regs.isa()),
            });
        };
        let tid = self.tid;
        let mut u = ptrace::get_regs(tid).map_err(|e| Error::ptrace("GETREGS", tid, e))?;
        let g = &x.gpr;
        (u.rax, u.rdx, u.rcx, u.rbx, u.rsi, u.rdi, u.rbp, u.rsp) =
            (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
        (u.r8, u.r9, u.r10, u.r11, u.r12, u.r13, u.r14, u.r15) =
            (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
        u.rip = x.rip;
        // Not in a system call: nothing to restart.
        u.orig_rax = u64::MAX;
        ptrace::set_regs(tid, &u).map_err(|e| Error::ptrace("SETREGS", tid, e))
    }
}

/// How a wait for the migration point ended.
enum Stop {
    AtBreakpoint,
    /// An interrupt or group stop.
    Interrupted,
    TimedOut,
}

impl FrozenProcess {
    /// The frozen process's main thread.
    pub fn main_thread(&self) -> PtraceThread {
        PtraceThread {
            pid: self.tracer.pid,
            tid: self.tracer.pid,
        }
    }

    fn single_thread(&self, doing: &str) -> Result<i32, Error> {
        let pid = self.tracer.pid;
        match self.threads.len() {
            1 if self.threads.contains_key(&pid) => Ok(pid),
            n => Err(Error::MigrationPoint {
                pid,
                detail: format!(
                    "it has {n} threads; {doing} works for single-threaded programs only"
                ),
            }),
        }
    }

    /// Asks the runtime of the frozen (single-threaded) process to stop at
    /// its next migration point and lets it run until it does or `timeout`
    /// passes. Signals that arrive meanwhile are delivered. Returns whether
    /// it stopped there; either way it is frozen again, with the request
    /// still set (see [`FrozenProcess::leave_migration_window`]).
    pub fn run_to_migration_point(
        &mut self,
        point: &MigrationPoint,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let tid = self.single_thread("a move between ISAs")?;
        super::set_request(self.tracer.pid, point, true)?;
        let deadline = Instant::now() + timeout;
        loop {
            self.threads.insert(tid, false);
            ptrace::cont(tid, 0).map_err(|e| Error::ptrace("CONT", tid, e))?;
            match self.next_stop(tid, point, Some(deadline))? {
                Stop::AtBreakpoint => break,
                // Someone's SIGSTOP: keep waiting (the stop is not kept).
                Stop::Interrupted => continue,
                Stop::TimedOut => {
                    ptrace::interrupt(tid).map_err(|e| Error::ptrace("INTERRUPT", tid, e))?;
                    let limit = Instant::now() + crate::freeze::STOP_TIMEOUT;
                    let reached = match self.next_stop(tid, point, Some(limit))? {
                        Stop::AtBreakpoint => true,
                        Stop::Interrupted => false,
                        Stop::TimedOut => {
                            return Err(Error::StopTimeout {
                                pid: self.tracer.pid,
                                tid,
                                secs: crate::freeze::STOP_TIMEOUT.as_secs(),
                                state: "?".into(),
                            })
                        }
                    };
                    self.threads.insert(tid, true);
                    return Ok(reached);
                }
            }
        }
        self.threads.insert(tid, true);
        Ok(true)
    }

    /// Waits for `tid`'s next stop, delivering signals other than the
    /// migration point's breakpoint.
    fn next_stop(
        &mut self,
        tid: i32,
        point: &MigrationPoint,
        deadline: Option<Instant>,
    ) -> Result<Stop, Error> {
        let pid = self.tracer.pid;
        loop {
            let ev = match self.tracer.next_event(tid, &[], deadline) {
                Ok(ev) => ev,
                Err(WaitError::Timeout) => return Ok(Stop::TimedOut),
                Err(WaitError::Os(source)) => return Err(Error::Wait { tid, source }),
            };
            match ev {
                Event::Signal(libc::SIGTRAP) if self.rip(tid)? == point.stop_insn + 1 => {
                    return Ok(Stop::AtBreakpoint)
                }
                Event::Signal(sig) => {
                    ptrace::cont(tid, sig).map_err(|e| Error::ptrace("CONT", tid, e))?
                }
                Event::Stopped(_) => return Ok(Stop::Interrupted),
                Event::Syscall | Event::Other(_) => {
                    ptrace::cont(tid, 0).map_err(|e| Error::ptrace("CONT", tid, e))?
                }
                Event::Clone => {
                    // A new thread: stop everything and refuse.
                    if let Ok(child) = ptrace::event_msg(tid) {
                        self.threads.insert(child as i32, false);
                    }
                    self.threads.insert(tid, true);
                    self.wait_all_stopped(Instant::now() + crate::freeze::STOP_TIMEOUT)?;
                    return Err(Error::MigrationPoint {
                        pid,
                        detail: "it created a thread while running to its migration point; a move between ISAs works for single-threaded programs only".into(),
                    });
                }
                Event::Exited(_) | Event::Killed(_) | Event::Gone => {
                    self.threads.remove(&tid);
                    return Err(Error::ProcessExited { pid });
                }
            }
        }
    }

    fn rip(&self, tid: i32) -> Result<u64, Error> {
        ptrace::get_regs(tid)
            .map(|r| r.rip)
            .map_err(|e| Error::ptrace("GETREGS", tid, e))
    }

    /// With the request cleared, single-steps the frozen thread until it
    /// is out of the migration point's window, so that it cannot trap once
    /// thawed. Returns true if it was about to execute (or executed) the
    /// breakpoint: it is then at the migration point after all, with its PC
    /// past the breakpoint. Signals that arrive meanwhile are re-sent.
    pub fn leave_migration_window(&mut self, point: &MigrationPoint) -> Result<bool, Error> {
        let tid = self.single_thread("a move between ISAs")?;
        let pid = self.tracer.pid;
        let mut held = Vec::new();
        let mut reached = false;
        for _ in 0..MAX_WINDOW_STEPS {
            let rip = self.rip(tid)?;
            if rip == point.stop_insn + 1 {
                reached = true;
                break;
            }
            if rip == point.stop_insn {
                let mut u = ptrace::get_regs(tid).map_err(|e| Error::ptrace("GETREGS", tid, e))?;
                u.rip = point.resume_pc;
                ptrace::set_regs(tid, &u).map_err(|e| Error::ptrace("SETREGS", tid, e))?;
                reached = true;
                break;
            }
            if !point.in_window(rip) {
                break;
            }
            self.threads.insert(tid, false);
            ptrace::singlestep(tid, 0).map_err(|e| Error::ptrace("SINGLESTEP", tid, e))?;
            let limit = Some(Instant::now() + crate::freeze::STOP_TIMEOUT);
            loop {
                match self.tracer.next_event(tid, &[], limit) {
                    Ok(Event::Signal(libc::SIGTRAP)) | Ok(Event::Stopped(_)) => break,
                    Ok(Event::Signal(sig)) => {
                        held.push(sig);
                        ptrace::singlestep(tid, 0)
                            .map_err(|e| Error::ptrace("SINGLESTEP", tid, e))?;
                    }
                    Ok(Event::Syscall | Event::Other(_) | Event::Clone) => {
                        ptrace::singlestep(tid, 0)
                            .map_err(|e| Error::ptrace("SINGLESTEP", tid, e))?;
                    }
                    Ok(Event::Exited(_) | Event::Killed(_) | Event::Gone) => {
                        self.threads.remove(&tid);
                        return Err(Error::ProcessExited { pid });
                    }
                    Err(WaitError::Timeout) => {
                        return Err(Error::StopTimeout {
                            pid,
                            tid,
                            secs: crate::freeze::STOP_TIMEOUT.as_secs(),
                            state: "?".into(),
                        })
                    }
                    Err(WaitError::Os(source)) => return Err(Error::Wait { tid, source }),
                }
            }
            self.threads.insert(tid, true);
        }
        for sig in held {
            // Queued again; delivered once the thread runs.
            let _ = crate::sys::misc::kill(pid, sig);
        }
        Ok(reached)
    }

    /// Runs a fresh child of the calling thread, stopped under ptrace
    /// after its `execve`, to the instruction at `addr` (the entry of
    /// `main`): a one-shot `int3` there, removed again, PC set back.
    pub fn run_to_address(&mut self, addr: u64, timeout: Duration) -> Result<(), Error> {
        let tid = self.single_thread("starting a program")?;
        let pid = self.tracer.pid;
        let original = super::read_memory(pid, addr, 1)?;
        super::write_memory(pid, addr, &[INT3])?;
        let deadline = Some(Instant::now() + timeout);
        let mut sig = 0;
        let reached = loop {
            ptrace::cont(tid, sig).map_err(|e| Error::ptrace("CONT", tid, e))?;
            sig = 0;
            match self.tracer.next_event(tid, &[], deadline) {
                Ok(Event::Signal(libc::SIGTRAP)) if self.rip(tid)? == addr + 1 => break Ok(()),
                Ok(Event::Signal(s)) => sig = s,
                Ok(Event::Stopped(_) | Event::Syscall | Event::Other(_) | Event::Clone) => {}
                Ok(Event::Exited(_) | Event::Killed(_) | Event::Gone) => {
                    self.threads.remove(&tid);
                    break Err(Error::ProcessExited { pid });
                }
                Err(WaitError::Timeout) => {
                    break Err(Error::MigrationPoint {
                        pid,
                        detail: format!(
                            "it did not reach {addr:#x} within {} s",
                            timeout.as_secs()
                        ),
                    })
                }
                Err(WaitError::Os(source)) => break Err(Error::Wait { tid, source }),
            }
        };
        reached?;
        super::write_memory(pid, addr, &original)?;
        let mut u = ptrace::get_regs(tid).map_err(|e| Error::ptrace("GETREGS", tid, e))?;
        u.rip = addr;
        ptrace::set_regs(tid, &u).map_err(|e| Error::ptrace("SETREGS", tid, e))?;
        self.threads.insert(tid, true);
        Ok(())
    }
}

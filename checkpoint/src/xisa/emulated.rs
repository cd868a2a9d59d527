//! Threads of programs emulated by qemu-user (`qemu-aarch64 -g SOCKET`): an
//! aarch64 node's workers on an x86_64 machine. qemu waits for the GDB
//! client before the program's first instruction; [`Emulated`] runs it to
//! a function's entry, resumes it, passes signals on, stops it at
//! migration points and reads or writes its registers. qemu-user maps the
//! guest at its own addresses, so memory goes through `/proc/PID/mem`.

use super::{MigrationPoint, ThreadControl, MAX_WINDOW_STEPS};
use crate::gdb::aarch64::CoreRegs;
use crate::gdb::{GdbClient, GdbError, StopReply};
use crate::Error;
use popcorn_isa::{Aarch64Regs, Isa, RegisterFile, X86_64Regs};
use std::path::Path;
use std::time::{Duration, Instant};

/// GDB's signal numbers for the stops popcorn itself causes.
const GDB_SIGTRAP: u8 = 5;
const GDB_SIGINT: u8 = 2;

/// gdb's i386-64bit.xml order of rax rbx rcx rdx rsi rdi rbp rsp r8..r15, as
/// DWARF numbers (for qemu-x86_64, which tests use).
const X86_GDB_ORDER: [usize; 16] = [0, 3, 2, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// The qemu-user program and its options for `isa`, with the GDB stub on
/// the Unix socket `socket`. The CPU model fixes the register set the stub
/// reports (cortex-a72: no SVE).
pub fn qemu_command(isa: Isa, socket: &Path) -> (String, Vec<String>) {
    let (program, cpu) = match isa {
        Isa::Aarch64 => ("qemu-aarch64", "cortex-a72"),
        Isa::X86_64 => ("qemu-x86_64", "max"),
    };
    let args = vec![
        "-cpu".into(),
        cpu.into(),
        "-g".into(),
        socket.display().to_string(),
    ];
    (program.into(), args)
}

/// How a stop of a running emulated program is to be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// It exited with this status.
    Exited(u8),
    /// It was killed by this signal (GDB numbering).
    Killed(u8),
    /// It stopped at a migration point.
    AtMigrationPoint,
    /// A signal for the program was delivered and it runs again.
    SignalDelivered(u8),
}

/// One emulated, single-threaded program under its GDB stub.
pub struct Emulated {
    pid: i32,
    isa: Isa,
    gdb: GdbClient,
    /// A signal for the program that stopped it while it was being
    /// stepped; delivered when it resumes.
    held: Option<u8>,
}

impl Emulated {
    /// Connects to the stub of qemu process `pid`, started with
    /// [`qemu_command`]'s `socket`, retrying until `timeout`.
    pub fn connect(pid: i32, isa: Isa, socket: &Path, timeout: Duration) -> Result<Self, Error> {
        let mut gdb = GdbClient::connect_unix(socket, timeout)
            .map_err(|source| Error::Gdb { pid, source })?;
        gdb.set_qemu_pid(pid);
        Ok(Emulated {
            pid,
            isa,
            gdb,
            held: None,
        })
    }

    fn gdb_err(&self) -> impl FnOnce(GdbError) -> Error {
        let pid = self.pid;
        move |source| Error::Gdb { pid, source }
    }

    fn kind(&self) -> u8 {
        match self.isa {
            Isa::Aarch64 => 4,
            Isa::X86_64 => 1,
        }
    }

    fn pc(&mut self) -> Result<u64, Error> {
        Ok(self.registers()?.pc())
    }

    /// Runs the stopped program to the instruction at `addr` (a temporary
    /// breakpoint), delivering signals on the way.
    pub fn run_to_address(&mut self, addr: u64, timeout: Duration) -> Result<(), Error> {
        let kind = self.kind();
        self.gdb
            .set_breakpoint(addr, kind)
            .map_err(self.gdb_err())?;
        self.gdb.resume().map_err(self.gdb_err())?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let stop = self
                .gdb
                .poll_stop(left.max(Duration::from_millis(1)))
                .map_err(self.gdb_err())?;
            match stop {
                Some(StopReply::Signal(GDB_SIGTRAP)) if self.pc()? == addr => break,
                Some(StopReply::Signal(s)) => {
                    self.gdb.resume_with_signal(s).map_err(self.gdb_err())?
                }
                Some(StopReply::Exited(_) | StopReply::Terminated(_)) => {
                    return Err(Error::ProcessExited { pid: self.pid })
                }
                None => {
                    return Err(Error::MigrationPoint {
                        pid: self.pid,
                        detail: format!(
                            "it did not reach {addr:#x} within {} s",
                            timeout.as_secs()
                        ),
                    })
                }
            }
        }
        self.gdb
            .remove_breakpoint(addr, kind)
            .map_err(self.gdb_err())
    }

    /// Lets the stopped program run (with a signal held back, if any).
    pub fn resume(&mut self) -> Result<(), Error> {
        match self.held.take() {
            Some(sig) => self.gdb.resume_with_signal(sig),
            None => self.gdb.resume(),
        }
        .map_err(self.gdb_err())
    }

    /// Resumes a program stopped at a migration point in place (PC past the
    /// breakpoint).
    pub fn resume_at(&mut self, point: &MigrationPoint) -> Result<(), Error> {
        let mut regs = self.registers()?;
        regs.set_pc(point.resume_pc);
        self.set_registers(&regs)?;
        self.resume()
    }

    /// The stub's descriptor: readable when the running program stops,
    /// unless [`Emulated::stop_buffered`].
    pub fn stop_fd(&self) -> std::os::fd::RawFd {
        self.gdb.as_raw_fd()
    }

    /// A stop reply already read from the stub (it came with the answer to
    /// an earlier request).
    pub fn stop_buffered(&self) -> bool {
        self.gdb.has_buffered()
    }

    /// Handles the running program's next stop, if one comes within
    /// `timeout`: signals for the program are delivered (it runs on),
    /// a migration point's breakpoint leaves it stopped.
    pub fn next_event(
        &mut self,
        point: Option<&MigrationPoint>,
        timeout: Duration,
    ) -> Result<Option<Event>, Error> {
        let Some(stop) = self.gdb.poll_stop(timeout).map_err(self.gdb_err())? else {
            return Ok(None);
        };
        Ok(Some(match stop {
            StopReply::Exited(s) => Event::Exited(s),
            StopReply::Terminated(s) => Event::Killed(s),
            StopReply::Signal(GDB_SIGTRAP)
                if point.is_some_and(|p| self.pc().ok() == Some(p.stop_insn)) =>
            {
                Event::AtMigrationPoint
            }
            StopReply::Signal(s) => {
                self.gdb.resume_with_signal(s).map_err(self.gdb_err())?;
                Event::SignalDelivered(s)
            }
        }))
    }

    /// Asks the runtime to stop at the next migration point and waits up to
    /// `timeout`; then interrupts it. Returns whether it stopped there;
    /// either way it is stopped, with the request still set.
    pub fn run_to_migration_point(
        &mut self,
        point: &MigrationPoint,
        timeout: Duration,
    ) -> Result<bool, Error> {
        super::set_request(self.pid, point, true)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(Some(point), left.max(Duration::from_millis(1)))? {
                Some(Event::AtMigrationPoint) => return Ok(true),
                Some(Event::Exited(_) | Event::Killed(_)) => {
                    return Err(Error::ProcessExited { pid: self.pid })
                }
                Some(Event::SignalDelivered(_)) | None => {}
            }
        }
        self.gdb.interrupt().map_err(self.gdb_err())?;
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            let left = limit.saturating_duration_since(Instant::now());
            let stop = self
                .gdb
                .poll_stop(left.max(Duration::from_millis(1)))
                .map_err(self.gdb_err())?;
            match stop {
                Some(StopReply::Signal(GDB_SIGTRAP)) if self.pc()? == point.stop_insn => {
                    return Ok(true)
                }
                // Our interrupt (or a breakpoint hit at the same moment).
                Some(StopReply::Signal(GDB_SIGINT | GDB_SIGTRAP)) => return Ok(false),
                Some(StopReply::Signal(s)) => {
                    self.gdb.resume_with_signal(s).map_err(self.gdb_err())?
                }
                Some(StopReply::Exited(_) | StopReply::Terminated(_)) => {
                    return Err(Error::ProcessExited { pid: self.pid })
                }
                None => {
                    return Err(Error::MigrationPoint {
                        pid: self.pid,
                        detail: "the emulator did not stop the program within 10 s".into(),
                    })
                }
            }
        }
    }

    /// With the request cleared, steps the stopped program out of the
    /// migration point's window. Returns true if it is at the breakpoint
    /// after all (PC on it: resume with [`Emulated::resume_at`]).
    pub fn leave_migration_window(&mut self, point: &MigrationPoint) -> Result<bool, Error> {
        for _ in 0..MAX_WINDOW_STEPS {
            let pc = self.pc()?;
            if pc == point.stop_insn {
                return Ok(true);
            }
            if !point.in_window(pc) {
                return Ok(false);
            }
            self.gdb.step().map_err(self.gdb_err())?;
            match self
                .gdb
                .wait_stop(Some(Duration::from_secs(10)))
                .map_err(self.gdb_err())?
            {
                StopReply::Exited(_) | StopReply::Terminated(_) => {
                    return Err(Error::ProcessExited { pid: self.pid })
                }
                StopReply::Signal(GDB_SIGTRAP) => {}
                // A signal for the program: delivered when it resumes.
                StopReply::Signal(sig) => self.held = Some(sig),
            }
        }
        Ok(false)
    }

    /// Kills the emulator.
    pub fn kill(self) {
        let _ = crate::sys::misc::kill(self.pid, libc::SIGKILL);
    }
}

impl ThreadControl for Emulated {
    fn isa(&self) -> Isa {
        self.isa
    }

    fn pid(&self) -> i32 {
        self.pid
    }

    fn registers(&mut self) -> Result<RegisterFile, Error> {
        let bytes = self.gdb.read_registers().map_err(self.gdb_err())?;
        let short = || Error::MigrationPoint {
            pid: self.pid,
            detail: format!("the GDB stub sent {} bytes of registers", bytes.len()),
        };
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                bytes.get(8 * i..8 * i + 8)?.try_into().ok()?,
            ))
        };
        Ok(match self.isa {
            Isa::Aarch64 => {
                let c = CoreRegs::from_g(&bytes).ok_or_else(short)?;
                RegisterFile::Aarch64(Aarch64Regs {
                    x: c.x,
                    sp: c.sp,
                    pc: c.pc,
                    pstate: u64::from(c.cpsr),
                    ..Default::default()
                })
            }
            Isa::X86_64 => {
                let mut r = X86_64Regs::default();
                for (gdb, &dwarf) in X86_GDB_ORDER.iter().enumerate() {
                    r.gpr[dwarf] = word(gdb).ok_or_else(short)?;
                }
                r.rip = word(16).ok_or_else(short)?;
                RegisterFile::X86_64(r)
            }
        })
    }

    fn set_registers(&mut self, regs: &RegisterFile) -> Result<(), Error> {
        let pid = self.pid;
        let mut bytes = self.gdb.read_registers().map_err(self.gdb_err())?;
        let short = || Error::MigrationPoint {
            pid,
            detail: "the GDB stub sent too few register bytes".into(),
        };
        match (regs, self.isa) {
            (RegisterFile::Aarch64(r), Isa::Aarch64) => {
                let mut c = CoreRegs::from_g(&bytes).ok_or_else(short)?;
                c.x = r.x;
                c.sp = r.sp;
                c.pc = r.pc;
                let core = c.to_g();
                bytes[..core.len()].copy_from_slice(&core);
            }
            (RegisterFile::X86_64(r), Isa::X86_64) => {
                if bytes.len() < 17 * 8 {
                    return Err(short());
                }
                let mut put =
                    |i: usize, v: u64| bytes[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
                for (gdb, &dwarf) in X86_GDB_ORDER.iter().enumerate() {
                    put(gdb, r.gpr[dwarf]);
                }
                put(16, r.rip);
            }
            _ => {
                return Err(Error::MigrationPoint {
                    pid,
                    detail: format!("{} registers given for a {} thread", regs.isa(), self.isa),
                })
            }
        }
        self.gdb.write_registers(&bytes).map_err(self.gdb_err())
    }
}

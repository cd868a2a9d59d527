//! Threads of programs built with `popcorn build`, stopped at a migration
//! point so that they can move between ISAs: one [`ThreadControl`]
//! interface to read and write their registers and stack as
//! `popcorn_isa` snapshots, natively under ptrace ([`native`]) or emulated
//! under qemu-user's GDB stub ([`emulated`]). Memory is read and written
//! through `/proc/PID/mem` in both cases (qemu-user maps the guest at the
//! same addresses: guest_base 0). [`MigrationPoint`] is the protocol with
//! the program's runtime (docs/CROSS_ISA.md).

pub mod emulated;
pub mod native;

use crate::Error;
pub use popcorn_isa::MigrationPoint;
use popcorn_isa::{Isa, RegisterFile, StackImage, ThreadSnapshot};

/// Most single steps taken to leave the window (a few dozen instructions).
pub(crate) const MAX_WINDOW_STEPS: usize = 4096;

/// Bytes below the stack pointer included in a snapshot (the translator
/// builds frames there).
const BELOW_SP: u64 = 16 << 10;

/// One thread stopped by the calling agent thread, on either ISA.
pub trait ThreadControl {
    /// The ISA the thread runs.
    fn isa(&self) -> Isa;
    /// The process (its memory is read through `/proc/PID/mem`).
    fn pid(&self) -> i32;
    fn registers(&mut self) -> Result<RegisterFile, Error>;
    /// Sets the general registers, PC, SP and flags; the thread keeps its
    /// TLS base.
    fn set_registers(&mut self, regs: &RegisterFile) -> Result<(), Error>;

    /// Registers plus the stack from below the stack pointer to the end of
    /// the stack mapping.
    fn snapshot(&mut self) -> Result<ThreadSnapshot, Error> {
        let regs = self.registers()?;
        let stack = read_stack(self.pid(), regs.sp())?;
        Ok(ThreadSnapshot { regs, stack })
    }

    /// Writes a snapshot's stack bytes, then its registers.
    fn install(&mut self, snap: &ThreadSnapshot) -> Result<(), Error> {
        if snap.isa() != self.isa() {
            return Err(Error::MigrationPoint {
                pid: self.pid(),
                detail: format!(
                    "a {} snapshot cannot be installed in a {} thread",
                    snap.isa(),
                    self.isa()
                ),
            });
        }
        write_memory(self.pid(), snap.stack.base, &snap.stack.bytes)?;
        self.set_registers(&snap.regs)
    }
}

/// Reads `len` bytes at `addr` of process `pid`.
pub fn read_memory(pid: i32, addr: u64, len: usize) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; len];
    match crate::sys::mem::read(pid, addr, &mut buf) {
        Ok(n) if n == len => Ok(buf),
        Ok(n) => Err(Error::Memory {
            pid,
            addr,
            len,
            source: std::io::Error::other(format!("short read ({n} bytes)")),
        }),
        Err(source) => Err(Error::Memory {
            pid,
            addr,
            len,
            source,
        }),
    }
}

/// Writes `data` at `addr` of process `pid` (read-only mappings included).
pub fn write_memory(pid: i32, addr: u64, data: &[u8]) -> Result<(), Error> {
    crate::sys::mem::write_forced(pid, addr, data).map_err(|source| Error::Memory {
        pid,
        addr,
        len: data.len(),
        source,
    })
}

/// Sets or clears the runtime's migration request flag (a C `int`).
pub fn set_request(pid: i32, point: &MigrationPoint, on: bool) -> Result<(), Error> {
    write_memory(pid, point.request_flag, &i32::from(on).to_le_bytes())
}

/// The stack of the thread whose stack pointer is `sp`: from
/// [`BELOW_SP`] under it (clamped to the mapping) to the mapping's end.
pub fn read_stack(pid: i32, sp: u64) -> Result<StackImage, Error> {
    let path = format!("/proc/{pid}/maps");
    let text = crate::procfs::read_string(&path)?;
    let vmas = crate::procfs::maps::parse_maps(&text).map_err(|d| Error::parse(&path, d))?;
    let vma = vmas
        .iter()
        .find(|v| sp >= v.start && sp < v.end)
        .ok_or_else(|| Error::MigrationPoint {
            pid,
            detail: format!("no mapping holds the stack pointer {sp:#x}"),
        })?;
    let base = (sp.saturating_sub(BELOW_SP) & !0xfff).max(vma.start);
    let bytes = read_memory(pid, base, (vma.end - base) as usize)?;
    Ok(StackImage::new(base, bytes))
}

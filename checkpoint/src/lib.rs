//! ptrace control of a live process: freeze and thaw every thread without
//! sending a signal, inject system calls into a stopped thread, and capture
//! the thread and process state a restore needs.
//!
//! ```no_run
//! let mut f = popcorn_checkpoint::FrozenProcess::freeze(1234)?;
//! let state = f.capture()?;
//! f.thaw()?;
//! # Ok::<(), popcorn_checkpoint::Error>(())
//! ```

mod error;
mod freeze;
pub mod gdb;
mod inject;
mod pagemap;
mod process;
pub mod procfs;
mod regs;
pub mod restore;
mod sys;
mod thread;
mod tracer;
pub mod xisa;

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("popcorn-checkpoint supports x86_64 Linux only");

pub use error::Error;
pub use freeze::{process_exists, process_owner, process_owner_uid, FrozenProcess};
pub use process::{
    read_fds, scan_populated, Disposition, FdState, Itimer, PageScan, ProcessState, Rlimit,
    SigAction,
};
pub use procfs::fd::FdKind;
pub use procfs::maps::{Backing, PageRange, Vma};
pub use procfs::stat::MmFields;
pub use regs::{InterruptedSyscall, Regs, RestartKind};
pub use sys::mem::{read as read_memory, write_forced as write_memory};
pub use sys::ptrace::RseqConfig;
pub use thread::{PendingSignal, RobustList, SigAltStack, ThreadState};

//! eBPF tracing of managed processes (DESIGN.md §8, issue 4).
//!
//! - [`Tracer`]: loads and attaches the C programs of `src/bpf/`, manages
//!   tgids, reads aggregated figures ([`Snapshot`]) and drains fork/exec/exit
//!   events ([`ProcessEvent`]).
//! - [`rates`]: pure arithmetic on two snapshots (CPU %, faults/s).
//!
//! Process and thread ids are those of the loading process's PID namespace
//! (what its `getpid()` and `/proc` show); the BPF side keys its maps by the
//! kernel's global ids and records the namespace ids when an entry is made.

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("popcorn-ebpf supports x86_64 Linux only");

mod error;
pub mod rates;
mod raw;
mod snapshot;
mod tracer;

pub use error::EbpfError;
pub use snapshot::{Counters, ProcessEvent, RangeFaults, Snapshot, ThreadFigures};
pub use tracer::{Tracer, TracerConfig, HOOKS};

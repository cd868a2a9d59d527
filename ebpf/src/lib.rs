//! eBPF tracing of managed processes (DESIGN.md §8, issue 4).
//!
//! - [`Tracer`]: loads and attaches the C programs of `src/bpf/`, manages
//!   tgids, reads aggregated figures ([`Snapshot`]) and drains fork/exec/exit
//!   events ([`ProcessEvent`]).
//! - [`rates`]: pure arithmetic on two snapshots (CPU %, faults/s).
//!
//! ```no_run
//! # fn main() -> Result<(), popcorn_ebpf::EbpfError> {
//! use popcorn_ebpf::{rates, Tracer};
//! let mut tracer = match Tracer::load() {
//!     Ok(t) => t,
//!     Err(e) if e.is_unavailable() => {
//!         eprintln!("running without tracing: {e}");
//!         return Ok(());
//!     }
//!     Err(e) => return Err(e),
//! };
//! tracer.manage(1234)?;
//! let before = tracer.snapshot()?;
//! std::thread::sleep(std::time::Duration::from_secs(1));
//! let after = tracer.snapshot()?;
//! for p in rates::process_rates(&before, &after) {
//!     println!("{} cpu {:.1}% faults/s {:.0}", p.tgid, p.cpu_percent, p.faults_per_s);
//! }
//! for event in tracer.drain_events() {
//!     println!("{event:?}");
//! }
//! # Ok(())
//! # }
//! ```
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

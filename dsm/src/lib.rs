//! Post-copy memory for live migration (DESIGN.md §5.3–5.5).
//!
//! - [`uffd`]: thin safe wrappers over userfaultfd (ioctls and events),
//!   including a uffd adopted from another process.
//! - [`postcopy`]: the pure (no I/O) page state machine of one migrated
//!   address space on the destination: fault decisions, arrivals and the
//!   adaptive background pusher.
//! - [`baseline`]: local ceilings for benchmarks: the raw userfaultfd round
//!   trip, and how fast fresh memory fills through `UFFDIO_COPY` or `memcpy`.

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
compile_error!("popcorn-dsm supports x86_64 Linux only");

pub mod baseline;
pub mod postcopy;
pub mod uffd;

/// Size of a base page; everything here works in whole pages.
pub const PAGE_SIZE: u64 = 4096;

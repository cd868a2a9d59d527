//! Restore on the destination (DESIGN §5.2): create a worker with the
//! origin's PID ([`spawn_worker`]), lay out the origin's address space in it
//! ([`lay_out`]), fill its memory ([`copy_memory_eager`], to be replaced by
//! post-copy), restore process attributes and the thread
//! ([`restore_process_state`]), then thaw it.

mod layout;
mod state;
mod worker;

pub use layout::{copy_memory_eager, lay_out, Layout};
pub use state::{restore_process_state, resume_regs};
pub use worker::{spawn_program, spawn_worker, Exec, Worker, WorkerSpec};

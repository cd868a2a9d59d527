//! Moving a program built with `popcorn build` between nodes of different
//! ISAs (DESIGN §7, docs/CROSS_ISA.md).
//!
//! - [`origin`]: preflight; asks the destination to **prepare** (start the
//!   other ISA's executable with the same PID, natively or under qemu-user,
//!   and run it to `main`) while the program here runs on; then asks the
//!   program to stop at its next migration point (its supervisor thread:
//!   ptrace natively, the GDB stub when emulated), reads the thread's
//!   registers and stack and the program's data window, and **offers**
//!   them.
//! - [`destination`]: the prepared program gets the translated thread
//!   (`popcorn_isa::translate`), the data window, and its heap arena
//!   emptied and registered with a userfaultfd served by a pager, as in a
//!   same-ISA move: the heap is pulled from the stopped origin on demand
//!   and in the background.
//!
//! - [`requests`]: a program's own `migrate(nid)` calls.
//!
//! The rest (commit, abort, stdio hub, exit, signals, `PushDone`) is the
//! same-ISA protocol's.

mod destination;
mod origin;
mod requests;

pub(super) use destination::Prepared;

use super::relay::StdinBacklog;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How long the origin waits for the program to reach a migration point.
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// How to start the program at the destination (`PeerCall::PrepareCrossIsa`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossIsaStart {
    pub pid: i32,
    /// Node that started the process and owns its terminal.
    pub home: String,
    pub uid: u32,
    pub gid: u32,
    pub argv: Vec<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
    pub cwd: String,
    pub nodes: Vec<String>,
    /// The program's `APP.popcorn.json` (the same path on every node).
    pub app: PathBuf,
}

/// The thread and memory to continue with (`PeerCall::CrossIsaOffer`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossIsaOffer {
    /// Also how to start it, should the destination not be prepared.
    pub start: CrossIsaStart,
    #[serde(default)]
    pub stdin: StdinBacklog,
    /// The thread's registers at the migration point (the origin's ISA), as
    /// JSON text: the call is an internally tagged enum, whose buffering
    /// cannot carry the 128-bit vector registers.
    pub regs: String,
    /// `(address, length)` of the bytes attached after the JSON, in order:
    /// the thread's stack, then memory to write at the destination (the
    /// data window).
    pub attached: Vec<(u64, u64)>,
    /// `(address, length)` of the heap arena's used part, pulled from the
    /// origin on demand.
    pub heap: (u64, u64),
}

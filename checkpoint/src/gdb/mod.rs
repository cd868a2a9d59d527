//! Thread control over the GDB remote protocol, for workers that run under
//! qemu-user (an aarch64 node emulated on an x86_64 machine): [`packet`]
//! frames and parses (pure), [`client`] talks to a stub, [`aarch64`] lays
//! out the registers qemu reports.

pub mod aarch64;
pub mod client;
pub mod packet;

pub use client::{GdbClient, GdbError};
pub use packet::StopReply;

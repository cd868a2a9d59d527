//! Types shared by the popcorn agent and the `popcorn` CLI.
//!
//! - [`config`]: the cluster file (nodes, addresses, ISAs, paths).
//! - [`control`]: JSON messages on an agent's control Unix socket.
//! - [`fdpass`]: sending and receiving file descriptors over a Unix socket.
//! - [`monitor`]: live figures of nodes and processes (`popcorn top`, metrics).
//! - [`wire`]: the binary frame codec spoken between agents over TLS.

pub mod config;
pub mod control;
pub mod fdpass;
pub mod monitor;
pub mod wire;

//! Helpers shared by the integration tests.

pub mod cluster;
pub mod migrate;
pub mod programs;
pub mod restore;

pub use programs::program;

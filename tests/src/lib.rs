//! Helpers shared by the integration tests.

pub mod cluster;
pub mod programs;

pub use programs::program;

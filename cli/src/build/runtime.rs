//! The popcorn runtime's C sources (isa-xlate/runtime/), embedded so that
//! `popcorn build` works from any directory, and the conventions the agent
//! and the translator rely on.

use std::path::Path;

pub const HEADER_NAME: &str = "popcorn.h";
pub const SOURCE_NAME: &str = "popcorn_rt.c";
pub const HEADER: &str = include_str!("../../../isa-xlate/runtime/popcorn.h");
pub const SOURCE: &str = include_str!("../../../isa-xlate/runtime/popcorn_rt.c");

/// The heap arena (`POPCORN_ARENA_BASE`/`_SIZE` in popcorn.h).
pub const ARENA_BASE: u64 = 0x60_0000_0000;
pub const ARENA_SIZE: u64 = 0x4000_0000;

/// Runtime symbols recorded in the metadata (same address on both ISAs).
pub const SYMBOLS: &[&str] = &[
    "popcorn_migrate_point",
    "__popcorn_migrate_stop",
    "check_migrate",
    "migrate",
    "__popcorn_migrate_request",
    "__popcorn_agent_present",
    "__popcorn_migrate_target",
    "__popcorn_arena_ready",
    "__popcorn_heap_shared",
    "malloc",
    "free",
    "calloc",
    "realloc",
    "memalign",
    "posix_memalign",
    "aligned_alloc",
];

/// The functions that are migration points: a frame suspended at a call
/// that can reach one of these must be translatable.
pub const MIGRATION_ROOTS: &[&str] = &["popcorn_migrate_point"];

/// The breakpoint instruction inside `__popcorn_migrate_stop` (differs per ISA).
pub const STOP_LABEL: &str = "__popcorn_stop_insn";

/// Writes popcorn.h and popcorn_rt.c into `dir`.
pub fn write(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(HEADER_NAME), HEADER)?;
    std::fs::write(dir.join(SOURCE_NAME), SOURCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn define(name: &str) -> u64 {
        let line = HEADER
            .lines()
            .find(|l| l.starts_with(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("{name} not in popcorn.h"));
        let value = line.split_whitespace().nth(2).unwrap();
        u64::from_str_radix(value.trim_start_matches("0x").trim_end_matches("UL"), 16).unwrap()
    }

    #[test]
    fn constants_match_the_header() {
        assert_eq!(define("POPCORN_ARENA_BASE"), ARENA_BASE);
        assert_eq!(define("POPCORN_ARENA_SIZE"), ARENA_SIZE);
    }

    #[test]
    fn recorded_symbols_exist_in_the_source() {
        for s in SYMBOLS.iter().chain([&STOP_LABEL]) {
            assert!(SOURCE.contains(s), "{s} not in popcorn_rt.c");
        }
    }
}

//! `APP.popcorn.json`: what the agent and the translator need to know about
//! a program built by `popcorn build` (see docs/CROSS_ISA.md).

use super::layout::{Region, SymKind, Window};
use serde::Serialize;
use std::collections::BTreeMap;

/// Version tag of this format; bump on incompatible changes.
pub const FORMAT: &str = "popcorn-build/1";

#[derive(Debug, Serialize)]
pub struct Metadata {
    pub format: &'static str,
    pub app: String,
    /// ISA name → executable file name (next to this file).
    pub binaries: BTreeMap<&'static str, String>,
    /// Sources as given on the command line, then the runtime.
    pub sources: Vec<String>,
    pub flags: Flags,
    pub tools: BTreeMap<&'static str, Tools>,
    pub layout: LayoutInfo,
    pub arena: Arena,
    pub runtime: Runtime,
    /// Every function, variable and string literal at a common address.
    pub symbols: Vec<Symbol>,
    /// Every call that can be suspended during a migration (its callee can
    /// reach a migration point, or it is indirect), matched across ISAs.
    pub call_sites: Vec<CallSite>,
}

#[derive(Debug, Serialize)]
pub struct CallSite {
    /// The calling function.
    pub function: String,
    /// Index into `sources`.
    pub source: usize,
    /// The called function, `<indirect>` for an indirect call.
    pub callee: String,
    /// Among the calls to `callee` in `function` on the same line and
    /// column (0-based, address order): `popcorn_isa::CallSiteKey`.
    pub ordinal: u32,
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// The address right after the call instruction, per ISA.
    pub return_address: IsaAddresses,
}

#[derive(Debug, Serialize)]
pub struct IsaAddresses {
    pub x86_64: u64,
    pub aarch64: u64,
}

#[derive(Debug, Serialize)]
pub struct Flags {
    pub compile: Vec<String>,
    pub link: Vec<String>,
    /// Extra flags per ISA.
    pub x86_64: Vec<String>,
    pub aarch64: Vec<String>,
    /// -I/-D/-l given by the user.
    pub user: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Tools {
    pub cc: String,
    pub cc_version: String,
    pub ld_version: String,
}

#[derive(Debug, Serialize)]
pub struct LayoutInfo {
    pub page_size: u64,
    pub text: Window,
    pub rodata: Window,
    pub data: Window,
}

#[derive(Debug, Serialize)]
pub struct Arena {
    pub address: u64,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct Runtime {
    /// Symbol → address (identical on both ISAs).
    pub symbols: BTreeMap<String, u64>,
    /// ISA name → where and how the thread stops for a migration.
    pub stop: BTreeMap<&'static str, Stop>,
}

#[derive(Debug, Serialize)]
pub struct Stop {
    /// Address of the breakpoint instruction (`__popcorn_stop_insn`).
    pub address: u64,
    pub instruction: &'static str,
    pub signal: &'static str,
    /// PC to continue from to resume in place (no migration).
    pub resume_pc: u64,
}

#[derive(Debug, Serialize)]
pub struct Symbol {
    /// Symbol name; for string literals the section name.
    pub name: String,
    pub kind: SymKind,
    pub global: bool,
    /// Index into `sources`.
    pub source: usize,
    pub region: Region,
    /// Section in the object file, and the output section it became.
    pub section: String,
    pub output_section: String,
    pub address: u64,
    /// Bytes reserved (the larger of the two sizes).
    pub size: u64,
    pub sizes: IsaSizes,
}

#[derive(Debug, Serialize)]
pub struct IsaSizes {
    pub x86_64: u64,
    pub aarch64: u64,
}

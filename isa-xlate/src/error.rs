//! Errors of the translator. Every error that concerns program state names the function and,
//! where known, the source location (`file:line`) and the ISA it is about.

use crate::regs::Isa;

/// Why a binary could not be loaded or a snapshot could not be translated.
#[derive(Debug, thiserror::Error)]
pub enum XlateError {
    /// The ELF file could not be read or parsed.
    #[error("{what}: {msg}")]
    Binary {
        /// Which binary (path or description).
        what: String,
        /// What went wrong.
        msg: String,
    },
    /// DWARF or CFI parsing failed.
    #[error("{isa} binary: malformed debug info: {msg}")]
    Dwarf {
        /// ISA of the binary.
        isa: Isa,
        /// gimli's message plus context.
        msg: String,
    },
    /// A snapshot or placement of one ISA was given where another was expected.
    #[error("expected a {expected} {what}, got {found}")]
    IsaMismatch {
        /// What was passed.
        what: &'static str,
        /// Expected ISA.
        expected: Isa,
        /// Actual ISA.
        found: Isa,
    },
    /// A symbol the translation needs is missing from a binary.
    #[error("symbol {symbol} is missing from the {isa} binary")]
    MissingSymbol {
        /// Symbol name.
        symbol: String,
        /// Binary's ISA.
        isa: Isa,
    },
    /// Code/data alignment precondition violated.
    #[error("symbol {symbol} is at {src:#x} in the {src_isa} binary but at {dst:#x} in the {dst_isa} binary; build both with `popcorn build` so functions and globals are aligned")]
    NotAligned {
        /// Symbol name.
        symbol: String,
        /// Source ISA.
        src_isa: Isa,
        /// Source address.
        src: u64,
        /// Destination ISA.
        dst_isa: Isa,
        /// Destination address.
        dst: u64,
    },
    /// No CFI covers an address.
    #[error("no unwind info for pc {pc:#x} (in {function}) in the {isa} binary")]
    NoUnwindInfo {
        /// Address looked up.
        pc: u64,
        /// Function containing it (symbol name or `?`).
        function: String,
        /// Binary's ISA.
        isa: Isa,
    },
    /// CFI that the translator cannot evaluate (expressions, realigned stacks, ...).
    #[error("unsupported unwind rule in {function} at {pc:#x} ({isa}): {what}")]
    UnsupportedCfi {
        /// Function.
        function: String,
        /// Address.
        pc: u64,
        /// Binary's ISA.
        isa: Isa,
        /// Description of the rule.
        what: String,
    },
    /// The snapshot's stack image does not cover an address the unwinder or copier needs.
    #[error(
        "stack address {addr:#x} ({what}) is outside the {isa} stack image [{base:#x}, {end:#x})"
    )]
    StackOutOfRange {
        /// Address.
        addr: u64,
        /// What was being accessed.
        what: String,
        /// ISA of that stack.
        isa: Isa,
        /// Image start.
        base: u64,
        /// Image end.
        end: u64,
    },
    /// The migration point function is not on the unwound stack.
    #[error("the {isa} thread is not stopped inside {migrate_point} (unwound: {unwound})")]
    NotAtMigrationPoint {
        /// ISA.
        isa: Isa,
        /// Name of the migration-point function.
        migrate_point: &'static str,
        /// Functions seen while unwinding, innermost first.
        unwound: String,
    },
    /// A return address on the source stack is not right after a call instruction.
    #[error("return address {ra:#x} in {function} is not a call site of the {isa} binary")]
    NotACallSite {
        /// Return address.
        ra: u64,
        /// Function.
        function: String,
        /// ISA.
        isa: Isa,
    },
    /// A source call site has no counterpart in the destination.
    #[error("call site {loc} in {function} (call to {callee}, #{ordinal} on that line) has no match in the {isa} binary")]
    NoMatchingCallSite {
        /// `file:line:column`.
        loc: String,
        /// Caller.
        function: String,
        /// Callee.
        callee: String,
        /// Ordinal among identical keys.
        ordinal: u32,
        /// Destination ISA.
        isa: Isa,
    },
    /// A function of the source stack has no DWARF in one of the binaries.
    #[error(
        "function {function} has no DWARF description in the {isa} binary (build with -g -O0)"
    )]
    NoDebugInfo {
        /// Function.
        function: String,
        /// ISA.
        isa: Isa,
    },
    /// A variable of the source frame has no counterpart in the destination frame.
    #[error("variable {variable} of {function} ({loc}) has no match in the {isa} binary")]
    NoMatchingVariable {
        /// Function.
        function: String,
        /// Variable name.
        variable: String,
        /// Declaration `file:line`.
        loc: String,
        /// Destination ISA.
        isa: Isa,
    },
    /// Source and destination types of a variable are not layout-compatible.
    #[error("variable {variable} of {function} ({loc}) cannot be translated: {detail}")]
    TypeMismatch {
        /// Function.
        function: String,
        /// Variable name.
        variable: String,
        /// Declaration `file:line`.
        loc: String,
        /// What differs.
        detail: String,
    },
    /// A construct the -O0 DWARF translator does not support.
    #[error("{function} ({loc}) in the {isa} binary: {what}")]
    Unsupported {
        /// Function.
        function: String,
        /// `file:line` or address.
        loc: String,
        /// ISA.
        isa: Isa,
        /// Description.
        what: String,
    },
    /// The destination placement is unusable.
    #[error("destination stack placement: {0}")]
    Placement(String),
}

/// Result alias of this crate.
pub type Result<T, E = XlateError> = std::result::Result<T, E>;

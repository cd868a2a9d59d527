//! popcorn-isa: translate the state of a thread stopped at a migration point from one ISA to
//! the other (x86_64 <-> aarch64), for programs built from the same C source at -O0 with full
//! DWARF. Pure functions over data: binaries in, snapshots in, snapshot out.
//!
//! Data flow: [`Binary::load`] reads each ELF's DWARF, CFI and call sites once;
//! [`unwind::migration_frames`] unwinds a source [`ThreadSnapshot`] to the frames suspended at
//! call sites; [`translate`] rebuilds them frame by frame on the destination's stack, placed
//! per [`StackPlacement`]. [`check_pair`] finds what cannot be translated before anything
//! runs, and [`typecheck`] refuses state whose representation differs between the ISAs
//! (`popcorn build` runs it); [`frame_values`] gives the ISA-neutral view of a snapshot's
//! variables. Conventions shared with the C runtime are in [`conventions`]. See
//! `docs/CROSS_ISA.md`.
//!
//! ```no_run
//! use popcorn_isa::{translate, Binary, Options, StackPlacement, ThreadSnapshot};
//! # fn get(isa: &str) -> ThreadSnapshot { panic!("read the {isa} thread from its process") }
//! let src_bin = Binary::load("app.x86_64")?;
//! let dst_bin = Binary::load("app.aarch64")?;
//! let (src_thread, dst_thread) = (get("x86_64"), get("aarch64"));
//! let placement = StackPlacement::from_snapshot(&dst_thread, &dst_bin)?;
//! let t = translate(&src_thread, &src_bin, &dst_bin, &placement, &Options::default())?;
//! // write t.snapshot.regs and t.snapshot.stack into the destination thread
//! # Ok::<(), popcorn_isa::XlateError>(())
//! ```

pub mod app;
pub mod binary;
pub mod callsites;
pub mod cfi;
pub mod check;
pub mod conventions;
pub mod dwarf;
pub mod error;
pub mod pointers;
pub mod regs;
pub mod snapshot;
pub mod translate;
pub mod typecheck;
pub mod unwind;
pub mod values;

pub use app::{App, MigrationPoint};
pub use binary::{Binary, SymKind, Symbol};
pub use callsites::{CallSite, CallSiteKey, KeyAssigner};
pub use check::{check_binary, check_pair, Problem};
pub use conventions::INDIRECT_CALLEE;
pub use error::{Result, XlateError};
pub use regs::{Aarch64Regs, Isa, RegisterFile, X86_64Regs};
pub use snapshot::{StackImage, ThreadSnapshot};
pub use translate::{
    check_symbols, translate, AddressPolicy, FrameReport, Options, StackPlacement, Translation,
};
pub use unwind::{migration_frames, migration_point_return, AppFrame};
pub use values::{frame_values, FrameValues, PointerTarget, VarValue};

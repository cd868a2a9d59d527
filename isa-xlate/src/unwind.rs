//! Unwinding a snapshot with CFI: from the stop PC (inside the migration point, its callee or
//! libc below them) out to the migration point's caller, then through every application frame
//! suspended at a call site, up to `main` (or the outermost function with DWARF).

use crate::binary::Binary;
use crate::callsites::CallSite;
use crate::cfi::{step, Step, StepError};
use crate::conventions::{MAX_FRAMES, MIGRATE_POINT, OUTERMOST_FUNCTION};
use crate::dwarf::Function;
use crate::error::{Result, XlateError};
use crate::regs::RegisterFile;
use crate::snapshot::ThreadSnapshot;

/// An application frame suspended at a call site.
#[derive(Clone, Debug)]
pub struct AppFrame<'b> {
    /// The function (DWARF).
    pub function: &'b Function,
    /// The call it is suspended at.
    pub site: &'b CallSite,
    /// Canonical frame address.
    pub cfa: u64,
    /// Registers as they are in this frame at the call site (pc = return address).
    pub regs: RegisterFile,
    /// Return address into this frame's caller.
    pub caller_pc: u64,
    /// The caller's frame pointer (saved by this frame).
    pub caller_fp: u64,
}

fn step_frame(
    snap: &ThreadSnapshot,
    bin: &Binary,
    regs: &RegisterFile,
    lookup: u64,
    function: &str,
) -> Result<Step> {
    let row = bin
        .cfi
        .lookup(lookup)
        .ok_or_else(|| XlateError::NoUnwindInfo {
            pc: lookup,
            function: function.to_string(),
            isa: bin.isa,
        })?;
    step(row, regs, |a| snap.stack.read_u64(a)).map_err(|e| match e {
        StepError::Memory(addr) => XlateError::StackOutOfRange {
            addr,
            what: format!("register saved by {function}"),
            isa: bin.isa,
            base: snap.stack.base,
            end: snap.stack.end(),
        },
        StepError::Unsupported(what) => XlateError::UnsupportedCfi {
            function: function.to_string(),
            pc: lookup,
            isa: bin.isa,
            what,
        },
        StepError::EndOfStack => XlateError::UnsupportedCfi {
            function: function.to_string(),
            pc: lookup,
            isa: bin.isa,
            what: "return address undefined (end of stack)".into(),
        },
    })
}

/// Registers of the migration point's caller right after [`MIGRATE_POINT`] returns. A snapshot
/// that is already in that state (the output of a translation) is returned as is.
pub fn migration_point_return(snap: &ThreadSnapshot, bin: &Binary) -> Result<RegisterFile> {
    if snap.isa() != bin.isa {
        return Err(XlateError::IsaMismatch {
            what: "snapshot",
            expected: bin.isa,
            found: snap.isa(),
        });
    }
    let mut regs = snap.regs.clone();
    // Already resumed state (a translated snapshot): PC is the return address of a call to
    // the migration point.
    if bin
        .call_sites
        .by_return_address(regs.pc())
        .is_some_and(|s| s.key.callee == MIGRATE_POINT)
        && bin.function_name_at(regs.pc()) != MIGRATE_POINT
    {
        return Ok(regs);
    }
    let mut seen: Vec<String> = Vec::new();
    for i in 0..MAX_FRAMES {
        let pc = regs.pc();
        let name = bin.function_name_at(if i == 0 { pc } else { pc.wrapping_sub(1) });
        let lookup = if i == 0 { pc } else { pc.wrapping_sub(1) };
        let st = step_frame(snap, bin, &regs, lookup, &name);
        let found = name == MIGRATE_POINT;
        seen.push(name);
        match st {
            Ok(st) => {
                regs = st.caller;
                if found {
                    return Ok(regs);
                }
                if regs.pc() == 0 {
                    break;
                }
            }
            Err(e) if found => return Err(e),
            Err(_) => break,
        }
    }
    Err(XlateError::NotAtMigrationPoint {
        isa: bin.isa,
        migrate_point: MIGRATE_POINT,
        unwound: seen.join(" <- "),
    })
}

/// The application frames of a thread stopped at a migration point, innermost first: the
/// caller of [`MIGRATE_POINT`], its caller, ... up to [`OUTERMOST_FUNCTION`] or the last
/// function with DWARF.
pub fn migration_frames<'b>(snap: &ThreadSnapshot, bin: &'b Binary) -> Result<Vec<AppFrame<'b>>> {
    let mut regs = migration_point_return(snap, bin)?;
    let mut frames = Vec::new();
    while frames.len() < MAX_FRAMES {
        let pc = regs.pc();
        let f =
            bin.debug
                .function_at(pc.wrapping_sub(1))
                .ok_or_else(|| XlateError::NoDebugInfo {
                    function: bin.function_name_at(pc.wrapping_sub(1)),
                    isa: bin.isa,
                })?;
        let site =
            bin.call_sites
                .by_return_address(pc)
                .ok_or_else(|| XlateError::NotACallSite {
                    ra: pc,
                    function: f.name.clone(),
                    isa: bin.isa,
                })?;
        let st = step_frame(snap, bin, &regs, pc - 1, &f.name)?;
        let outermost = f.name == OUTERMOST_FUNCTION
            || st.caller.pc() == 0
            || bin
                .debug
                .function_at(st.caller.pc().wrapping_sub(1))
                .is_none();
        frames.push(AppFrame {
            function: f,
            site,
            cfa: st.cfa,
            regs,
            caller_pc: st.caller.pc(),
            caller_fp: st.caller.fp(),
        });
        if outermost {
            return Ok(frames);
        }
        regs = st.caller;
    }
    Err(XlateError::Unsupported {
        function: frames
            .last()
            .map(|f| f.function.name.clone())
            .unwrap_or_default(),
        loc: String::new(),
        isa: bin.isa,
        what: format!("more than {MAX_FRAMES} frames"),
    })
}

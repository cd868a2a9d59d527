//! Frame-by-frame translation of a source snapshot into a destination snapshot: destination
//! frame layout (CFA, SP, FP per frame from the destination's CFI and prologues), variable copy
//! by DWARF type, pointer fix-up, saved FP / return-address slots and the resume registers.

use crate::binary::{Binary, SymKind};
use crate::cfi::{CfaRule, CfiRow, RegRule};
use crate::dwarf::{compatible_layout, FrameBase, Function, Location, Variable};
use crate::error::{Result, XlateError};
use crate::pointers::{fix_pointer, ObjectMap, PointerFix, StackObject};
use crate::regs::{Isa, RegisterFile};
use crate::snapshot::{StackImage, ThreadSnapshot};
use crate::unwind::{migration_frames, AppFrame};

/// How code and global addresses are treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Every function and global with DWARF must have the same address in both binaries
    /// (`popcorn build` output); anything else is refused.
    #[default]
    RequireAligned,
    /// Binaries not aligned (plain builds): pointers into symbols are mapped by name + offset.
    MapBySymbol,
}

/// Translation options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Address policy.
    pub addresses: AddressPolicy,
}

/// Where the translated frames go in the destination thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackPlacement {
    /// CFA the outermost translated frame (`main`) gets.
    pub outer_cfa: u64,
    /// Return address the outermost frame returns to (the destination's libc caller of main).
    pub outer_return_address: u64,
    /// Frame pointer value of that caller.
    pub outer_frame_pointer: u64,
    /// Destination stack to write into; must cover the outermost frame's CFA and the slots
    /// above it. It is grown downwards as far as the translated frames need (the output image
    /// may start lower); bytes outside the translated frames are kept.
    pub stack: StackImage,
    /// Destination registers to start from (TLS base etc. are kept; PC, SP, FP and the link
    /// register are overwritten).
    pub regs: RegisterFile,
    /// `main`'s first three arguments (argc, argv, envp) in the destination, when it is placed
    /// at `main`'s entry: main's pointer parameters are set from them, since the source's point
    /// into the source's own argument area.
    pub main_args: Option<[u64; 3]>,
}

impl StackPlacement {
    /// Use a destination thread that is itself stopped at a migration point: its frames above
    /// the outermost application frame (libc start code, argv, TLS) are kept and the
    /// application frames are replaced.
    pub fn from_snapshot(dst: &ThreadSnapshot, dst_bin: &Binary) -> Result<Self> {
        let frames = migration_frames(dst, dst_bin)?;
        let outer = frames.last().ok_or_else(|| {
            XlateError::Placement("destination thread has no application frames".into())
        })?;
        Ok(StackPlacement {
            outer_cfa: outer.cfa,
            outer_return_address: outer.caller_pc,
            outer_frame_pointer: outer.caller_fp,
            stack: dst.stack.clone(),
            main_args: None,
            regs: dst.regs.clone(),
        })
    }
}

impl StackPlacement {
    /// Use a destination thread stopped at the entry of the outermost function (e.g. a fresh
    /// destination process stopped by a breakpoint on `main`): `main`'s frame is built where
    /// it was about to be, returning to the destination's own libc caller.
    pub fn at_function_entry(dst: &ThreadSnapshot, dst_bin: &Binary) -> Result<Self> {
        if dst.isa() != dst_bin.isa {
            return Err(XlateError::IsaMismatch {
                what: "placement snapshot",
                expected: dst_bin.isa,
                found: dst.isa(),
            });
        }
        let pc = dst.regs.pc();
        let function = dst_bin.function_name_at(pc);
        let is_main = function == "main";
        if dst_bin.debug.function_at(pc).is_none_or(|f| f.low != pc) {
            return Err(XlateError::Placement(format!(
                "destination thread is at {pc:#x} in {function}, not at the entry of a function with DWARF"
            )));
        }
        let row = dst_bin
            .cfi
            .lookup(pc)
            .ok_or_else(|| XlateError::NoUnwindInfo {
                pc,
                function: function.clone(),
                isa: dst_bin.isa,
            })?;
        let st = crate::cfi::step(row, &dst.regs, |a| dst.stack.read_u64(a)).map_err(|e| {
            XlateError::UnsupportedCfi {
                function,
                pc,
                isa: dst_bin.isa,
                what: format!("{e:?}"),
            }
        })?;
        let main_args = is_main.then(|| {
            let arg = |i: usize| {
                let dwarf = match dst.isa() {
                    // rdi, rsi, rdx
                    Isa::X86_64 => [5u16, 4, 1][i],
                    Isa::Aarch64 => i as u16,
                };
                dst.regs.get(dwarf).unwrap_or(0)
            };
            [arg(0), arg(1), arg(2)]
        });
        Ok(StackPlacement {
            main_args,
            outer_cfa: st.cfa,
            outer_return_address: st.caller.pc(),
            outer_frame_pointer: st.caller.fp(),
            stack: dst.stack.clone(),
            regs: dst.regs.clone(),
        })
    }
}

/// What happened to one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameReport {
    /// Function name.
    pub function: String,
    /// `file:line:column` of the call it is suspended at.
    pub site: String,
    /// Source CFA.
    pub src_cfa: u64,
    /// Destination CFA.
    pub dst_cfa: u64,
    /// Source return address (where the frame resumes).
    pub src_ra: u64,
    /// Destination return address.
    pub dst_ra: u64,
    /// Variables copied.
    pub variables: usize,
}

/// Result of [`translate`].
#[derive(Clone, Debug)]
pub struct Translation {
    /// The destination thread state.
    pub snapshot: ThreadSnapshot,
    /// Frames, innermost first.
    pub frames: Vec<FrameReport>,
    /// Pointers left unchanged that may be wrong (into unnamed stack memory, dangling, ...).
    pub warnings: Vec<String>,
}

/// Verify the alignment precondition (or, with [`AddressPolicy::MapBySymbol`], presence) of
/// every function and global described by the source DWARF.
pub fn check_symbols(src: &Binary, dst: &Binary, policy: AddressPolicy) -> Result<()> {
    let names = src
        .debug
        .functions
        .iter()
        .map(|f| (f.name.as_str(), f.low))
        .chain(src.debug.globals.iter().map(|g| (g.name.as_str(), g.addr)));
    for (name, addr) in names {
        if name.is_empty() {
            continue;
        }
        let Some(d) = dst.symbol(name) else {
            if dst.debug.function(name).is_none() {
                return Err(XlateError::MissingSymbol {
                    symbol: name.to_string(),
                    isa: dst.isa,
                });
            }
            continue;
        };
        if policy == AddressPolicy::RequireAligned && d.addr != addr {
            return Err(XlateError::NotAligned {
                symbol: name.to_string(),
                src_isa: src.isa,
                src: addr,
                dst_isa: dst.isa,
                dst: d.addr,
            });
        }
    }
    Ok(())
}

/// Destination layout of one frame.
struct DstFrame<'b> {
    function: &'b Function,
    ra: u64,
    call_addr: u64,
    cfa: u64,
    sp: u64,
    fp: u64,
    row: &'b CfiRow,
}

fn loc_of(f: &Function, line: u32) -> String {
    format!("{}:{}", f.file, line)
}

fn fp_value(bin: &Binary, f: &Function, row: &CfiRow, cfa: u64, ra: u64) -> Result<u64> {
    let isa = bin.isa;
    if let CfaRule::RegOffset { reg, offset } = row.cfa {
        if reg == isa.dwarf_fp() {
            return Ok(cfa.wrapping_add_signed(-offset));
        }
    }
    match row.rule(isa.dwarf_fp()) {
        // gcc's frame record: FP points at the slot holding the caller's FP.
        RegRule::Offset(o) => Ok(cfa.wrapping_add_signed(o)),
        _ => Err(XlateError::UnsupportedCfi {
            function: f.name.clone(),
            pc: ra,
            isa,
            what: "frame pointer not saved at the call site (build with -fno-omit-frame-pointer)"
                .into(),
        }),
    }
}

/// gcc -O0 keeps unnamed temporaries in callee-saved registers across calls; a frame that has
/// saved one of them (other than FP/LR) may hold such a value, which DWARF does not describe.
fn refuse_live_temporaries(bin: &Binary, f: &Function, ra: u64, line: u32) -> Result<()> {
    let Some(row) = bin.cfi.lookup(ra - 1) else {
        return Ok(());
    };
    let scratch = crate::check::callee_saved_scratch(bin.isa);
    match row
        .regs
        .iter()
        .find(|(r, rule)| scratch.contains(r) && matches!(rule, RegRule::Offset(_)))
    {
        Some(&(reg, _)) => Err(XlateError::Unsupported {
            function: f.name.clone(),
            loc: loc_of(f, line),
            isa: bin.isa,
            what: format!(
                "the frame saves {}, so a temporary may be live across the call (rejected by the build checker)",
                RegisterFile::dwarf_name(bin.isa, reg)
            ),
        }),
        None => Ok(()),
    }
}

fn frame_slot(bin: &Binary, f: &Function, row: &CfiRow, reg: u16, ra: u64) -> Result<i64> {
    match row.rule(reg) {
        RegRule::Offset(o) => Ok(o),
        r => Err(XlateError::UnsupportedCfi {
            function: f.name.clone(),
            pc: ra,
            isa: bin.isa,
            what: format!(
                "{} is not saved in the frame at the call site ({r:?})",
                RegisterFile::dwarf_name(bin.isa, reg)
            ),
        }),
    }
}

fn frame_offset(v: &Variable, f: &Function, isa: Isa) -> Result<Option<i64>> {
    match &v.location {
        Location::FrameOffset(o) => Ok(Some(*o)),
        Location::Address(_) | Location::None => Ok(None),
        Location::Other(what) => Err(XlateError::Unsupported {
            function: f.name.clone(),
            loc: loc_of(f, v.decl_line),
            isa,
            what: format!(
                "variable {} has a location the -O0 translator cannot use: {what}",
                v.name
            ),
        }),
    }
}

/// Translate `src` (stopped at a migration point, running `src_bin`) into the state of the
/// same thread running `dst_bin`, placed per `placement`.
pub fn translate(
    src: &ThreadSnapshot,
    src_bin: &Binary,
    dst_bin: &Binary,
    placement: &StackPlacement,
    opts: &Options,
) -> Result<Translation> {
    if placement.regs.isa() != dst_bin.isa {
        return Err(XlateError::IsaMismatch {
            what: "placement",
            expected: dst_bin.isa,
            found: placement.regs.isa(),
        });
    }
    check_symbols(src_bin, dst_bin, opts.addresses)?;
    let frames = migration_frames(src, src_bin)?;
    let dst_isa = dst_bin.isa;

    // 1. Destination layout, outermost first.
    let mut dst_frames: Vec<DstFrame<'_>> = Vec::with_capacity(frames.len());
    let mut next_cfa = placement.outer_cfa;
    for fr in frames.iter().rev() {
        let f = fr.function;
        if f.frame_base != FrameBase::Cfa {
            return Err(XlateError::Unsupported {
                function: f.name.clone(),
                loc: loc_of(f, f.decl_line),
                isa: src_bin.isa,
                what: "frame base is not DW_OP_call_frame_cfa".into(),
            });
        }
        let df = dst_bin
            .debug
            .function(&f.name)
            .ok_or_else(|| XlateError::NoDebugInfo {
                function: f.name.clone(),
                isa: dst_isa,
            })?;
        if df.frame_base != FrameBase::Cfa {
            return Err(XlateError::Unsupported {
                function: df.name.clone(),
                loc: loc_of(df, df.decl_line),
                isa: dst_isa,
                what: "frame base is not DW_OP_call_frame_cfa".into(),
            });
        }
        let key = &fr.site.key;
        let ds = dst_bin
            .call_sites
            .by_key(key)
            .ok_or_else(|| XlateError::NoMatchingCallSite {
                loc: format!("{}:{}:{}", fr.site.file, key.line, key.column),
                function: key.caller.clone(),
                callee: key.callee.clone(),
                ordinal: key.ordinal,
                isa: dst_isa,
            })?;
        let row = dst_bin
            .cfi
            .lookup(ds.ret_addr - 1)
            .ok_or_else(|| XlateError::NoUnwindInfo {
                pc: ds.ret_addr - 1,
                function: df.name.clone(),
                isa: dst_isa,
            })?;
        for (bin, func, ra) in [(src_bin, f, fr.site.ret_addr), (dst_bin, df, ds.ret_addr)] {
            refuse_live_temporaries(bin, func, ra, key.line)?;
        }
        let size = dst_bin.frame_size_at(df, ds.ret_addr)?;
        let cfa = next_cfa;
        let sp = cfa.checked_sub(size).ok_or_else(|| {
            XlateError::Placement(format!("frame of {} does not fit below {cfa:#x}", df.name))
        })?;
        let fp = fp_value(dst_bin, df, row, cfa, ds.ret_addr)?;
        dst_frames.push(DstFrame {
            function: df,
            ra: ds.ret_addr,
            call_addr: ds.call_addr,
            cfa,
            sp,
            fp,
            row,
        });
        next_cfa = sp;
    }
    dst_frames.reverse(); // innermost first, like `frames`
    let innermost_sp = next_cfa;

    let mut out = placement.stack.clone();
    // The translated frames may reach below the destination's captured stack: grow the image
    // (the caller writes it back; the stack mapping must cover it).
    out.extend_down(innermost_sp & !0xf);
    if !out.contains(innermost_sp, placement.outer_cfa - innermost_sp) {
        return Err(XlateError::Placement(format!(
            "destination stack image [{:#x}, {:#x}) does not cover the translated frames [{innermost_sp:#x}, {:#x})",
            out.base,
            out.end(),
            placement.outer_cfa
        )));
    }
    out.zero(innermost_sp, placement.outer_cfa);

    // 2. Variables, collecting stack objects and pointer slots.
    let mut objects = Vec::new();
    let mut slots: Vec<(u64, u64, String)> = Vec::new(); // (dst slot, src value, label)
    let mut reports = Vec::with_capacity(frames.len());
    for (i, (fr, d)) in frames.iter().zip(&dst_frames).enumerate() {
        let n = copy_frame(
            src,
            src_bin,
            dst_bin,
            fr,
            d,
            i,
            &mut out,
            &mut objects,
            &mut slots,
        )?;
        reports.push(FrameReport {
            function: fr.function.name.clone(),
            site: format!(
                "{}:{}:{}",
                fr.site.file, fr.site.key.line, fr.site.key.column
            ),
            src_cfa: fr.cfa,
            dst_cfa: d.cfa,
            src_ra: fr.site.ret_addr,
            dst_ra: d.ra,
            variables: n,
        });
    }

    // 3. Pointer fix-ups.
    let objects = ObjectMap::new(objects);
    let src_live = (
        migration_frames_sp(&frames),
        frames.last().map(|f| f.cfa).unwrap_or(0),
    );
    let src_stack = (src.stack.base, src.stack.end());
    let mut warnings = Vec::new();
    let symbol = |v: u64| -> Option<(u64, String)> {
        let s = src_bin.symbol_containing(v)?;
        let d = dst_bin.symbol(&s.name)?;
        (d.addr != s.addr).then(|| (d.addr + (v - s.addr), s.name.clone()))
    };
    // main's argv and envp parameters: the destination's own.
    let main_params: Vec<(String, u64)> = match (placement.main_args, frames.last()) {
        (Some(args), Some(outer)) if outer.function.name == "main" => outer
            .function
            .vars
            .iter()
            .filter(|v| v.is_param)
            .zip(args)
            .skip(1)
            .map(|(v, a)| (format!("main.{}", v.name), a))
            .collect(),
        _ => Vec::new(),
    };
    for (slot, value, label) in slots {
        if let Some((_, arg)) = main_params.iter().find(|(l, _)| *l == label) {
            if !out.write_u64(slot, *arg) {
                return Err(XlateError::Placement(format!(
                    "{label} at {slot:#x} is outside the destination stack"
                )));
            }
            continue;
        }
        let new = match fix_pointer(value, &objects, src_live, src_stack, symbol) {
            PointerFix::Stack { value, .. } => value,
            PointerFix::Symbol { value: nv, name } => {
                let kind = src_bin.symbol(&name).map(|s| s.kind);
                if opts.addresses == AddressPolicy::RequireAligned {
                    warnings.push(format!(
                        "{label} = {value:#x} points into {name}, which is at a different address in the {dst_isa} binary (libc state does not migrate); left unchanged"
                    ));
                    value
                } else {
                    if kind == Some(SymKind::Object)
                        && src_bin.debug.globals.iter().all(|g| g.name != name)
                    {
                        warnings.push(format!(
                            "{label} points into libc object {name}; mapped by name"
                        ));
                    }
                    nv
                }
            }
            PointerFix::UnnamedStack => {
                warnings.push(format!(
                    "{label} = {value:#x} points into source stack memory that is no translated variable; left unchanged"
                ));
                value
            }
            PointerFix::Dangling => {
                warnings.push(format!(
                    "{label} = {value:#x} points below the live stack (dangling); left unchanged"
                ));
                value
            }
            PointerFix::Unchanged => value,
        };
        out.write_u64(slot, new);
    }

    // 4. Saved frame pointers and return addresses.
    for i in 0..dst_frames.len() {
        let d = &dst_frames[i];
        let (caller_ra, caller_fp) = match dst_frames.get(i + 1) {
            Some(c) => (c.ra, c.fp),
            None => (
                placement.outer_return_address,
                placement.outer_frame_pointer,
            ),
        };
        let ra_off = frame_slot(dst_bin, d.function, d.row, dst_isa.dwarf_ra(), d.ra)?;
        let fp_off = frame_slot(dst_bin, d.function, d.row, dst_isa.dwarf_fp(), d.ra)?;
        for (off, v, what) in [
            (ra_off, caller_ra, "return address"),
            (fp_off, caller_fp, "saved frame pointer"),
        ] {
            let a = d.cfa.wrapping_add_signed(off);
            if !out.write_u64(a, v) {
                return Err(XlateError::Placement(format!(
                    "{what} slot {a:#x} of {} is outside the destination stack image",
                    d.function.name
                )));
            }
        }
    }

    // 5. Registers: as right after the migration point returned into the innermost frame.
    let inner = dst_frames
        .first()
        .ok_or_else(|| XlateError::Placement("no frames".into()))?;
    let mut regs = placement.regs.clone();
    regs.set_pc(inner.ra);
    regs.set(dst_isa.dwarf_sp(), inner.sp);
    regs.set(dst_isa.dwarf_fp(), inner.fp);
    if dst_isa == Isa::Aarch64 {
        regs.set(dst_isa.dwarf_ra(), inner.ra);
    }

    Ok(Translation {
        snapshot: ThreadSnapshot { regs, stack: out },
        frames: reports,
        warnings,
    })
}

fn migration_frames_sp(frames: &[AppFrame<'_>]) -> u64 {
    frames.first().map(|f| f.regs.sp()).unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn copy_frame(
    src: &ThreadSnapshot,
    src_bin: &Binary,
    dst_bin: &Binary,
    fr: &AppFrame<'_>,
    d: &DstFrame<'_>,
    index: usize,
    out: &mut StackImage,
    objects: &mut Vec<StackObject>,
    slots: &mut Vec<(u64, u64, String)>,
) -> Result<usize> {
    let f = fr.function;
    let mut n = 0;
    for v in f.vars.iter().filter(|v| v.in_scope(fr.site.call_addr)) {
        let Some(off) = frame_offset(v, f, src_bin.isa)? else {
            continue;
        };
        let dv = d
            .function
            .vars
            .iter()
            .find(|w| {
                w.name == v.name
                    && w.decl_line == v.decl_line
                    && w.decl_column == v.decl_column
                    && w.in_scope(d.call_addr)
            })
            .ok_or_else(|| XlateError::NoMatchingVariable {
                function: f.name.clone(),
                variable: v.name.clone(),
                loc: loc_of(f, v.decl_line),
                isa: dst_bin.isa,
            })?;
        let Some(doff) = frame_offset(dv, d.function, dst_bin.isa)? else {
            continue;
        };
        for (var, o, func, isa) in [
            (v, off, f, src_bin.isa),
            (dv, doff, d.function, dst_bin.isa),
        ] {
            if var.is_param && o >= 0 {
                return Err(XlateError::Unsupported {
                    function: func.name.clone(),
                    loc: loc_of(func, var.decl_line),
                    isa,
                    what: format!(
                        "parameter {} is passed on the stack (too many or large arguments)",
                        var.name
                    ),
                });
            }
        }
        let layout =
            compatible_layout(&src_bin.debug, v.ty, &dst_bin.debug, dv.ty).map_err(|detail| {
                XlateError::TypeMismatch {
                    function: f.name.clone(),
                    variable: v.name.clone(),
                    loc: loc_of(f, v.decl_line),
                    detail,
                }
            })?;
        let s_addr = fr.cfa.wrapping_add_signed(off);
        let d_addr = d.cfa.wrapping_add_signed(doff);
        let bytes =
            src.stack
                .read(s_addr, layout.size)
                .ok_or_else(|| XlateError::StackOutOfRange {
                    addr: s_addr,
                    what: format!("variable {} of {}", v.name, f.name),
                    isa: src_bin.isa,
                    base: src.stack.base,
                    end: src.stack.end(),
                })?;
        if d_addr < d.sp || d_addr + layout.size > d.cfa || !out.write(d_addr, bytes) {
            return Err(XlateError::Placement(format!(
                "variable {} of {} at {d_addr:#x} lies outside its destination frame [{:#x}, {:#x})",
                v.name, f.name, d.sp, d.cfa
            )));
        }
        let label = format!("{}.{}", f.name, v.name);
        for p in &layout.pointers {
            if let Some(val) = src.stack.read_u64(s_addr + p) {
                slots.push((d_addr + p, val, label.clone()));
            }
        }
        objects.push(StackObject {
            src: s_addr,
            size: layout.size,
            dst: d_addr,
            frame: index,
            label,
        });
        n += 1;
    }
    Ok(n)
}

//! Static checks of a binary pair before anything runs (for `popcorn build`): which functions
//! can be suspended at a migration point, and whether each of them can be translated —
//! temporaries kept in callee-saved registers, unsupported locations and types, stack-passed
//! parameters, call sites or variables present on one side only, unaligned symbols.

use crate::binary::Binary;
use crate::cfi::RegRule;
use crate::conventions::{INDIRECT_CALLEE, MIGRATE_POINT};
use crate::dwarf::{compatible_layout, FrameBase, Function, Location};
use crate::regs::Isa;
use std::collections::BTreeSet;
use std::fmt;

/// One reason a pair of binaries cannot (fully) migrate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// ISA of the binary concerned.
    pub isa: Isa,
    /// Function.
    pub function: String,
    /// `file:line` (or empty).
    pub loc: String,
    /// Description.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: in {} ({}): {}",
            self.loc, self.function, self.isa, self.what
        )
    }
}

/// Callee-saved registers other than FP/LR/SP, by DWARF number.
pub fn callee_saved_scratch(isa: Isa) -> &'static [u16] {
    match isa {
        Isa::X86_64 => &[3, 12, 13, 14, 15],
        Isa::Aarch64 => &[
            19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 72, 73, 74, 75, 76, 77, 78, 79,
        ],
    }
}

/// Functions that can be on the stack at a migration point: transitive direct callers of
/// [`MIGRATE_POINT`], plus (conservatively) every function with DWARF that makes an indirect
/// call if any function pointer could reach one of those.
pub fn migratable_functions(bin: &Binary) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = BTreeSet::new();
    let mut targets: BTreeSet<String> = BTreeSet::from([MIGRATE_POINT.to_string()]);
    loop {
        let before = set.len();
        for s in bin.call_sites.iter() {
            let reaches = targets.contains(&s.key.callee) || s.key.callee == INDIRECT_CALLEE;
            if reaches && s.key.caller != MIGRATE_POINT && set.insert(s.key.caller.clone()) {
                targets.insert(s.key.caller.clone());
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

fn loc(f: &Function, line: u32) -> String {
    format!("{}:{line}", f.file)
}

/// Problems of one binary on its own.
pub fn check_binary(bin: &Binary) -> Vec<Problem> {
    let mut out = Vec::new();
    let scratch = callee_saved_scratch(bin.isa);
    for name in migratable_functions(bin) {
        let Some(f) = bin.debug.function(&name) else {
            out.push(Problem {
                isa: bin.isa,
                function: name,
                loc: String::new(),
                what: "no DWARF (build with -g)".into(),
            });
            continue;
        };
        let mut p = |line: u32, what: String| {
            out.push(Problem {
                isa: bin.isa,
                function: f.name.clone(),
                loc: loc(f, line),
                what,
            })
        };
        let mut saved = BTreeSet::new();
        let mut pc = f.low;
        while pc < f.high {
            let Some(row) = bin.cfi.lookup(pc) else { break };
            for &(reg, rule) in &row.regs {
                if scratch.contains(&reg) && matches!(rule, RegRule::Offset(_)) {
                    saved.insert(reg);
                }
            }
            pc = row.end.max(pc + 1);
        }
        for reg in saved {
            p(
                f.decl_line,
                format!(
                    "saves {}: gcc keeps unnamed temporaries there across calls, which DWARF does not describe; split expressions containing calls into separate statements",
                    crate::regs::RegisterFile::dwarf_name(bin.isa, reg)
                ),
            );
        }
        if f.frame_base != FrameBase::Cfa {
            p(
                f.decl_line,
                "frame base is not DW_OP_call_frame_cfa (build with -O0 -g)".into(),
            );
        }
        for v in &f.vars {
            match &v.location {
                Location::Other(w) => p(
                    v.decl_line,
                    format!("variable {} has an untranslatable location: {w}", v.name),
                ),
                Location::FrameOffset(o) if v.is_param && *o >= 0 => p(
                    v.decl_line,
                    format!("parameter {} is passed on the stack", v.name),
                ),
                _ => {}
            }
            if matches!(v.location, Location::FrameOffset(_)) {
                if let Err(e) = compatible_layout(&bin.debug, v.ty, &bin.debug, v.ty) {
                    p(v.decl_line, format!("variable {}: {e}", v.name));
                }
            }
        }
    }
    out
}

/// Problems of a pair: each binary's own, plus call sites, variables and symbols that do not
/// correspond. With `require_aligned`, functions/globals at different addresses are reported.
pub fn check_pair(a: &Binary, b: &Binary, require_aligned: bool) -> Vec<Problem> {
    let mut out = check_binary(a);
    out.extend(check_binary(b));
    for (x, y) in [(a, b), (b, a)] {
        let mig = migratable_functions(x);
        for s in x.call_sites.iter() {
            let relevant = mig.contains(&s.key.caller)
                && (s.key.callee == MIGRATE_POINT
                    || mig.contains(&s.key.callee)
                    || s.key.callee == INDIRECT_CALLEE);
            if relevant && y.call_sites.by_key(&s.key).is_none() {
                out.push(Problem {
                    isa: x.isa,
                    function: s.key.caller.clone(),
                    loc: format!("{}:{}:{}", s.file, s.key.line, s.key.column),
                    what: format!(
                        "call to {} (#{}) has no match in the {} binary",
                        s.key.callee, s.key.ordinal, y.isa
                    ),
                });
            }
        }
    }
    for name in migratable_functions(a) {
        let (Some(fa), Some(fb)) = (a.debug.function(&name), b.debug.function(&name)) else {
            if a.debug.function(&name).is_some() {
                out.push(Problem {
                    isa: b.isa,
                    function: name.clone(),
                    loc: String::new(),
                    what: "function missing or without DWARF".into(),
                });
            }
            continue;
        };
        for v in fa
            .vars
            .iter()
            .filter(|v| matches!(v.location, Location::FrameOffset(_)))
        {
            match fb.vars.iter().find(|w| {
                w.name == v.name && w.decl_line == v.decl_line && w.decl_column == v.decl_column
            }) {
                None => out.push(Problem {
                    isa: b.isa,
                    function: name.clone(),
                    loc: loc(fa, v.decl_line),
                    what: format!("variable {} missing", v.name),
                }),
                Some(w) => {
                    if let Err(e) = compatible_layout(&a.debug, v.ty, &b.debug, w.ty) {
                        out.push(Problem {
                            isa: a.isa,
                            function: name.clone(),
                            loc: loc(fa, v.decl_line),
                            what: format!("variable {}: {e}", v.name),
                        });
                    }
                }
            }
        }
    }
    if require_aligned {
        let names = a
            .debug
            .functions
            .iter()
            .map(|f| (f.name.as_str(), f.low))
            .chain(a.debug.globals.iter().map(|g| (g.name.as_str(), g.addr)));
        for (name, addr) in names {
            if let Some(s) = b.symbol(name).filter(|s| s.addr != addr) {
                out.push(Problem {
                    isa: b.isa,
                    function: name.to_string(),
                    loc: String::new(),
                    what: format!(
                        "at {:#x} but at {addr:#x} in the {} binary (not aligned)",
                        s.addr, a.isa
                    ),
                });
            }
        }
    }
    out.sort_by(|p, q| (p.isa as u8, &p.loc, &p.function).cmp(&(q.isa as u8, &q.loc, &q.function)));
    out.dedup();
    out
}

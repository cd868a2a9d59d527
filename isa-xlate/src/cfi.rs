//! Call-frame information: the CFA rule and where each register of the caller is saved, per
//! address range, read once from `.eh_frame` / `.debug_frame` with gimli into owned rows, and
//! evaluated against a register file and a stack image.

use crate::error::{Result, XlateError};
use crate::regs::{Isa, RegisterFile};
use gimli::{EndianSlice, LittleEndian, UnwindSection};

/// How the canonical frame address is computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CfaRule {
    /// CFA = register + offset.
    RegOffset {
        /// DWARF register number.
        reg: u16,
        /// Offset added.
        offset: i64,
    },
    /// A DWARF expression (stack realignment etc.): not supported.
    Expression,
}

/// Where the caller's value of one register is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegRule {
    /// Not recoverable (for the return address: end of the stack).
    Undefined,
    /// Unchanged by this frame.
    SameValue,
    /// Saved at CFA + offset.
    Offset(i64),
    /// The value is CFA + offset.
    ValOffset(i64),
    /// Held in another register.
    Register(u16),
    /// Expression or architectural rule: not supported.
    Unsupported,
}

/// One row of the unwind table: rules valid for `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CfiRow {
    /// First address covered.
    pub start: u64,
    /// One past the last address covered.
    pub end: u64,
    /// CFA rule.
    pub cfa: CfaRule,
    /// Non-default register rules.
    pub regs: Vec<(u16, RegRule)>,
}

impl CfiRow {
    /// Rule for `reg` (registers without an explicit rule keep their value).
    pub fn rule(&self, reg: u16) -> RegRule {
        self.regs
            .iter()
            .find(|(r, _)| *r == reg)
            .map(|(_, rule)| *rule)
            .unwrap_or(RegRule::SameValue)
    }

    /// CFA for the given register values.
    pub fn cfa(&self, regs: &RegisterFile) -> Option<u64> {
        match self.cfa {
            CfaRule::RegOffset { reg, offset } => {
                regs.get(reg).map(|v| v.wrapping_add_signed(offset))
            }
            CfaRule::Expression => None,
        }
    }
}

/// The caller's register state after undoing one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// CFA of the frame that was undone.
    pub cfa: u64,
    /// Caller registers; `pc` is the return address, `sp` the CFA.
    pub caller: RegisterFile,
}

/// Why [`step`] failed (turned into [`XlateError`] by the caller, which knows the function).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepError {
    /// The rule cannot be evaluated.
    Unsupported(String),
    /// A saved register lies outside the stack image.
    Memory(u64),
    /// The return address is undefined: outermost frame.
    EndOfStack,
}

/// Undo one frame: evaluate `row` against `regs`, reading saved registers through `mem`.
pub fn step(
    row: &CfiRow,
    regs: &RegisterFile,
    mem: impl Fn(u64) -> Option<u64>,
) -> Result<Step, StepError> {
    let isa = regs.isa();
    let cfa = match row.cfa {
        CfaRule::RegOffset { reg, offset } => regs
            .get(reg)
            .ok_or_else(|| StepError::Unsupported(format!("CFA based on register {reg}")))?
            .wrapping_add_signed(offset),
        CfaRule::Expression => return Err(StepError::Unsupported("CFA expression".into())),
    };
    let ra_col = isa.dwarf_ra();
    if row.rule(ra_col) == RegRule::Undefined {
        return Err(StepError::EndOfStack);
    }
    let mut caller = regs.clone();
    for &(reg, rule) in &row.regs {
        let v = match rule {
            RegRule::SameValue => continue,
            RegRule::Undefined => {
                caller.set(reg, 0);
                continue;
            }
            RegRule::Offset(o) => {
                let a = cfa.wrapping_add_signed(o);
                mem(a).ok_or(StepError::Memory(a))?
            }
            RegRule::ValOffset(o) => cfa.wrapping_add_signed(o),
            RegRule::Register(r) => regs
                .get(r)
                .ok_or_else(|| StepError::Unsupported(format!("register rule names {r}")))?,
            RegRule::Unsupported => {
                return Err(StepError::Unsupported(format!(
                    "expression rule for {}",
                    RegisterFile::dwarf_name(isa, reg)
                )))
            }
        };
        caller.set(reg, v);
    }
    let ra = caller.get(ra_col).unwrap_or(0);
    caller.set(isa.dwarf_sp(), cfa);
    caller.set_pc(ra);
    Ok(Step { cfa, caller })
}

/// Sorted unwind rows of one binary.
#[derive(Clone, Debug, Default)]
pub struct CfiTable {
    rows: Vec<CfiRow>,
}

impl CfiTable {
    /// Build a table from rows (sorted here).
    pub fn from_rows(mut rows: Vec<CfiRow>) -> Self {
        rows.sort_by_key(|r| r.start);
        CfiTable { rows }
    }

    /// The row covering `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&CfiRow> {
        let i = self.rows.partition_point(|r| r.start <= addr);
        let row = self.rows.get(i.checked_sub(1)?)?;
        (addr < row.end).then_some(row)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Parse `.eh_frame` (at `eh_addr`) and, if present, `.debug_frame`; `.debug_frame` rows win
    /// where both cover an address.
    pub fn parse(
        isa: Isa,
        eh_frame: Option<(&[u8], u64)>,
        debug_frame: Option<&[u8]>,
        text_addr: u64,
    ) -> Result<Self> {
        let mut rows = Vec::new();
        let err = |e: gimli::Error, what: &str| XlateError::Dwarf {
            isa,
            msg: format!("{what}: {e}"),
        };
        if let Some(data) = debug_frame {
            let mut sec = gimli::DebugFrame::new(data, LittleEndian);
            sec.set_address_size(8);
            let bases = gimli::BaseAddresses::default().set_text(text_addr);
            collect(&sec, &bases, &mut rows).map_err(|e| err(e, ".debug_frame"))?;
        }
        if let Some((data, addr)) = eh_frame {
            let sec = gimli::EhFrame::new(data, LittleEndian);
            let bases = gimli::BaseAddresses::default()
                .set_eh_frame(addr)
                .set_text(text_addr);
            let mut eh_rows = Vec::new();
            collect(&sec, &bases, &mut eh_rows).map_err(|e| err(e, ".eh_frame"))?;
            let covered = CfiTable::from_rows(rows.clone());
            eh_rows.retain(|r| covered.lookup(r.start).is_none());
            rows.extend(eh_rows);
        }
        Ok(CfiTable::from_rows(rows))
    }
}

fn collect<'a, S>(sec: &S, bases: &gimli::BaseAddresses, out: &mut Vec<CfiRow>) -> gimli::Result<()>
where
    S: UnwindSection<EndianSlice<'a, LittleEndian>>,
{
    let mut ctx = gimli::UnwindContext::new();
    let mut entries = sec.entries(bases);
    while let Some(entry) = entries.next()? {
        let gimli::CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let fde = match partial.parse(S::cie_from_offset) {
            Ok(f) => f,
            Err(_) => continue,
        };
        if fde.len() == 0 {
            continue;
        }
        let mut table = fde.rows(sec, bases, &mut ctx)?;
        while let Some(row) = table.next_row()? {
            let cfa = match row.cfa() {
                gimli::CfaRule::RegisterAndOffset { register, offset } => CfaRule::RegOffset {
                    reg: register.0,
                    offset: *offset,
                },
                gimli::CfaRule::Expression(_) => CfaRule::Expression,
            };
            let regs = row
                .registers()
                .map(|(reg, rule)| {
                    let r = match rule {
                        gimli::RegisterRule::Undefined => RegRule::Undefined,
                        gimli::RegisterRule::SameValue => RegRule::SameValue,
                        gimli::RegisterRule::Offset(o) => RegRule::Offset(*o),
                        gimli::RegisterRule::ValOffset(o) => RegRule::ValOffset(*o),
                        gimli::RegisterRule::Register(r) => RegRule::Register(r.0),
                        _ => RegRule::Unsupported,
                    };
                    (reg.0, r)
                })
                .collect();
            out.push(CfiRow {
                start: row.start_address(),
                end: row.end_address(),
                cfa,
                regs,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::{aarch64, x86_64};
    use crate::snapshot::StackImage;

    fn x86_body_row() -> CfiRow {
        // After `push rbp; mov rbp, rsp`: CFA = rbp + 16, rbp at CFA-16, RA at CFA-8.
        CfiRow {
            start: 0x1000,
            end: 0x1100,
            cfa: CfaRule::RegOffset {
                reg: x86_64::RBP,
                offset: 16,
            },
            regs: vec![
                (x86_64::RBP, RegRule::Offset(-16)),
                (x86_64::RA, RegRule::Offset(-8)),
            ],
        }
    }

    #[test]
    fn x86_frame_pointer_rule() {
        let mut stack = StackImage::new(0x7000, vec![0; 0x100]);
        let mut regs = RegisterFile::zeroed(Isa::X86_64);
        regs.set(x86_64::RBP, 0x7080);
        regs.set(x86_64::RSP, 0x7040);
        regs.set(x86_64::RBX, 77);
        regs.set_pc(0x1010);
        stack.write_u64(0x7080, 0x70c0); // saved rbp
        stack.write_u64(0x7088, 0x2222); // return address
        let s = step(&x86_body_row(), &regs, |a| stack.read_u64(a)).unwrap();
        assert_eq!(s.cfa, 0x7090);
        assert_eq!(s.caller.sp(), 0x7090);
        assert_eq!(s.caller.fp(), 0x70c0);
        assert_eq!(s.caller.pc(), 0x2222);
        assert_eq!(s.caller.get(x86_64::RBX), Some(77), "same-value default");
    }

    #[test]
    fn x86_function_entry_rule() {
        // At entry: CFA = rsp + 8, RA at CFA - 8, rbp untouched.
        let row = CfiRow {
            start: 0,
            end: 10,
            cfa: CfaRule::RegOffset {
                reg: x86_64::RSP,
                offset: 8,
            },
            regs: vec![(x86_64::RA, RegRule::Offset(-8))],
        };
        let mut stack = StackImage::new(0x7000, vec![0; 0x100]);
        stack.write_u64(0x7038, 0x4444);
        let mut regs = RegisterFile::zeroed(Isa::X86_64);
        regs.set(x86_64::RSP, 0x7038);
        regs.set(x86_64::RBP, 0x7100);
        let s = step(&row, &regs, |a| stack.read_u64(a)).unwrap();
        assert_eq!(
            (s.cfa, s.caller.sp(), s.caller.pc(), s.caller.fp()),
            (0x7040, 0x7040, 0x4444, 0x7100)
        );
    }

    #[test]
    fn aarch64_sp_rule_and_link_register() {
        // After `stp x29, x30, [sp, #-48]!; mov x29, sp`: CFA = sp + 48, x29 at CFA-48, x30 at CFA-40.
        let row = CfiRow {
            start: 0,
            end: 100,
            cfa: CfaRule::RegOffset {
                reg: aarch64::SP,
                offset: 48,
            },
            regs: vec![
                (aarch64::X29, RegRule::Offset(-48)),
                (aarch64::X30, RegRule::Offset(-40)),
            ],
        };
        let mut stack = StackImage::new(0x5000, vec![0; 0x100]);
        stack.write_u64(0x5010, 0x50a0);
        stack.write_u64(0x5018, 0x400123);
        let mut regs = RegisterFile::zeroed(Isa::Aarch64);
        regs.set(aarch64::SP, 0x5010);
        let s = step(&row, &regs, |a| stack.read_u64(a)).unwrap();
        assert_eq!(s.cfa, 0x5040);
        assert_eq!(s.caller.sp(), 0x5040);
        assert_eq!(s.caller.fp(), 0x50a0);
        assert_eq!(s.caller.pc(), 0x400123);
        assert_eq!(s.caller.get(aarch64::X30), Some(0x400123));
    }

    #[test]
    fn aarch64_leaf_entry_uses_link_register() {
        let row = CfiRow {
            start: 0,
            end: 4,
            cfa: CfaRule::RegOffset {
                reg: aarch64::SP,
                offset: 0,
            },
            regs: vec![],
        };
        let mut regs = RegisterFile::zeroed(Isa::Aarch64);
        regs.set(aarch64::SP, 0x5000);
        regs.set(aarch64::X30, 0x400800);
        let s = step(&row, &regs, |_| None).unwrap();
        assert_eq!((s.cfa, s.caller.pc()), (0x5000, 0x400800));
    }

    #[test]
    fn other_rules_and_failures() {
        let mut row = x86_body_row();
        row.regs.push((x86_64::RBX, RegRule::Register(x86_64::R8)));
        row.regs.push((x86_64::RSI, RegRule::ValOffset(-32)));
        let mut regs = RegisterFile::zeroed(Isa::X86_64);
        regs.set(x86_64::RBP, 0x7080);
        regs.set(x86_64::R8, 5);
        let mem = |a: u64| (0x7000..0x7100).contains(&a).then_some(a * 2);
        let s = step(&row, &regs, mem).unwrap();
        assert_eq!(s.caller.get(x86_64::RBX), Some(5));
        assert_eq!(s.caller.get(x86_64::RSI), Some(0x7090 - 32));
        // Memory outside the image.
        regs.set(x86_64::RBP, 0x9000);
        assert_eq!(step(&row, &regs, mem), Err(StepError::Memory(0x9000)));
        // Undefined RA ends the stack.
        let mut end = x86_body_row();
        end.regs = vec![(x86_64::RA, RegRule::Undefined)];
        assert_eq!(step(&end, &regs, mem), Err(StepError::EndOfStack));
        // Expressions are refused.
        let mut ex = x86_body_row();
        ex.cfa = CfaRule::Expression;
        assert!(matches!(
            step(&ex, &regs, mem),
            Err(StepError::Unsupported(_))
        ));
        let mut ex = x86_body_row();
        ex.regs.push((x86_64::R8 + 4, RegRule::Unsupported));
        regs.set(x86_64::RBP, 0x7080);
        assert!(matches!(
            step(&ex, &regs, mem),
            Err(StepError::Unsupported(_))
        ));
    }

    #[test]
    fn table_lookup_by_address() {
        let mk = |s, e| CfiRow {
            start: s,
            end: e,
            cfa: CfaRule::Expression,
            regs: vec![],
        };
        let t = CfiTable::from_rows(vec![mk(0x20, 0x30), mk(0x10, 0x18), mk(0x18, 0x20)]);
        assert_eq!(t.len(), 3);
        assert!(t.lookup(0xf).is_none());
        assert_eq!(t.lookup(0x10).map(|r| r.start), Some(0x10));
        assert_eq!(t.lookup(0x1f).map(|r| r.start), Some(0x18));
        assert_eq!(t.lookup(0x2f).map(|r| r.start), Some(0x20));
        assert!(t.lookup(0x30).is_none());
        assert!(CfiTable::default().is_empty());
    }
}

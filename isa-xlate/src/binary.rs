//! One ELF binary as the translator needs it: ISA, symbol table, DWARF ([`DebugInfo`]), CFI
//! ([`CfiTable`]), call sites ([`CallSites`]) and per-function prologue frame sizes. Everything
//! is read at load time into owned data; the ELF bytes are not kept.

use crate::callsites::{callee_label, decode_calls, CallSites, Unkeyed};
use crate::cfi::{CfaRule, CfiTable};
use crate::dwarf::{DebugInfo, Function};
use crate::error::{Result, XlateError};
use crate::regs::Isa;
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};
use std::collections::HashMap;
use std::path::Path;

/// Kind of a symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymKind {
    /// Code.
    Function,
    /// Data object.
    Object,
}

/// A defined symbol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Name.
    pub name: String,
    /// Address.
    pub addr: u64,
    /// Size (0 if unknown).
    pub size: u64,
    /// Kind.
    pub kind: SymKind,
    /// Global (or weak) binding.
    pub global: bool,
}

/// A binary loaded for translation.
#[derive(Clone, Debug)]
pub struct Binary {
    /// ISA from the ELF header.
    pub isa: Isa,
    /// Name used in messages (the path).
    pub name: String,
    /// Defined function/object symbols sorted by address.
    pub symbols: Vec<Symbol>,
    by_name: HashMap<String, usize>,
    /// DWARF.
    pub debug: DebugInfo,
    /// CFI rows.
    pub cfi: CfiTable,
    /// Call sites of DWARF functions.
    pub call_sites: CallSites,
    /// CFA minus SP after each DWARF function's prologue, from decoding it (keyed by entry).
    prologue_sizes: HashMap<u64, u64>,
}

impl Binary {
    /// Load and parse the ELF file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|e| XlateError::Binary {
            what: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Self::parse(&data, &path.display().to_string())
    }

    /// Parse an ELF image; `what` names it in messages.
    pub fn parse(data: &[u8], what: &str) -> Result<Self> {
        let bad = |msg: String| XlateError::Binary {
            what: what.to_string(),
            msg,
        };
        let file = object::File::parse(data).map_err(|e| bad(e.to_string()))?;
        let isa = match file.architecture() {
            object::Architecture::X86_64 => Isa::X86_64,
            object::Architecture::Aarch64 => Isa::Aarch64,
            a => return Err(bad(format!("unsupported architecture {a:?}"))),
        };
        if !file.is_little_endian() || !file.is_64() {
            return Err(bad("only 64-bit little-endian ELF is supported".into()));
        }

        let mut symbols: Vec<Symbol> = file
            .symbols()
            .filter(|s| s.is_definition())
            .filter_map(|s| {
                let kind = match s.kind() {
                    SymbolKind::Text => SymKind::Function,
                    SymbolKind::Data => SymKind::Object,
                    _ => return None,
                };
                let name = s.name().ok()?.to_string();
                (!name.is_empty()).then(|| Symbol {
                    name,
                    addr: s.address(),
                    size: s.size(),
                    kind,
                    global: s.is_global(),
                })
            })
            .collect();
        // Address order; among aliases the preferred name first.
        symbols.sort_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then_with(|| alias_rank(a).cmp(&alias_rank(b)))
        });
        let mut by_name = HashMap::new();
        for (i, s) in symbols.iter().enumerate() {
            by_name.entry(s.name.clone()).or_insert(i);
        }

        let section = |name: &str| -> &[u8] {
            file.section_by_name(name)
                .and_then(|s| s.data().ok())
                .unwrap_or(&[])
        };
        let debug = DebugInfo::parse(isa, section)?;

        let text_addr = file
            .section_by_name(".text")
            .map(|s| s.address())
            .unwrap_or(0);
        let eh = file
            .section_by_name(".eh_frame")
            .and_then(|s| Some((s.data().ok()?, s.address())));
        let dbg_frame = file
            .section_by_name(".debug_frame")
            .and_then(|s| s.data().ok());
        let cfi = CfiTable::parse(isa, eh, dbg_frame, text_addr)?;

        let code: Vec<(u64, &[u8])> = file
            .sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .filter_map(|s| Some((s.address(), s.data().ok()?)))
            .collect();
        let code_at = |lo: u64, hi: u64| -> Option<&[u8]> {
            code.iter().find_map(|&(a, d)| {
                let end = a + d.len() as u64;
                (lo >= a && hi <= end).then(|| &d[(lo - a) as usize..(hi - a) as usize])
            })
        };

        let mut bin = Binary {
            isa,
            name: what.to_string(),
            symbols,
            by_name,
            debug,
            cfi,
            call_sites: CallSites::default(),
            prologue_sizes: HashMap::new(),
        };
        let mut calls = Vec::new();
        for f in &bin.debug.functions {
            let Some(bytes) = code_at(f.low, f.high) else {
                continue;
            };
            if let Some(size) = prologue_size(isa, bytes, f.low) {
                bin.prologue_sizes.insert(f.low, size);
            }
            for (call_addr, ret_addr, target) in decode_calls(isa, bytes, f.low) {
                let callee = target.and_then(|t| bin.function_symbol_starting_at(t));
                let (file, line, column) = bin
                    .debug
                    .line_at(call_addr)
                    .map(|(f, l, c)| (f.to_string(), l, c))
                    .unwrap_or_else(|| (f.file.clone(), 0, 0));
                calls.push(Unkeyed {
                    caller: f.name.clone(),
                    callee: callee_label(callee),
                    file,
                    line,
                    column,
                    call_addr,
                    ret_addr,
                });
            }
        }
        bin.call_sites = CallSites::new(calls);
        Ok(bin)
    }

    /// The symbol named `name`.
    pub fn symbol(&self, name: &str) -> Option<&Symbol> {
        self.by_name.get(name).map(|&i| &self.symbols[i])
    }

    /// The preferred name of a function symbol starting exactly at `addr`.
    pub fn function_symbol_starting_at(&self, addr: u64) -> Option<&str> {
        if let Some(f) = self.debug.function_at(addr).filter(|f| f.low == addr) {
            return Some(f.name.as_str());
        }
        let i = self.symbols.partition_point(|s| s.addr < addr);
        self.symbols[i..]
            .iter()
            .take_while(|s| s.addr == addr)
            .find(|s| s.kind == SymKind::Function)
            .map(|s| s.name.as_str())
    }

    /// The symbol whose `[addr, addr + size)` contains `addr` (size-0 symbols match exactly).
    pub fn symbol_containing(&self, addr: u64) -> Option<&Symbol> {
        let i = self.symbols.partition_point(|s| s.addr <= addr);
        self.symbols[..i]
            .iter()
            .rev()
            .take(64)
            .find(|s| addr < s.addr + s.size.max(1))
    }

    /// Name of the function containing `pc` (DWARF first, then symbols), or `?`.
    pub fn function_name_at(&self, pc: u64) -> String {
        if let Some(f) = self.debug.function_at(pc) {
            return f.name.clone();
        }
        self.symbol_containing(pc)
            .filter(|s| s.kind == SymKind::Function)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| "?".into())
    }

    /// CFA minus SP of `f` while it is suspended at the call returning to `ra`: from the CFI if
    /// the CFA is SP-based there, else from the decoded prologue.
    pub fn frame_size_at(&self, f: &Function, ra: u64) -> Result<u64> {
        let row = self
            .cfi
            .lookup(ra - 1)
            .ok_or_else(|| XlateError::NoUnwindInfo {
                pc: ra - 1,
                function: f.name.clone(),
                isa: self.isa,
            })?;
        match row.cfa {
            CfaRule::RegOffset { reg, offset } if reg == self.isa.dwarf_sp() => {
                u64::try_from(offset)
                    .map_err(|_| self.unsupported_cfi(f, ra, "negative CFA offset"))
            }
            CfaRule::RegOffset { reg, .. } if reg == self.isa.dwarf_fp() => {
                self.prologue_sizes.get(&f.low).copied().ok_or_else(|| {
                    self.unsupported_cfi(f, ra, "unrecognized prologue (cannot size the frame)")
                })
            }
            _ => Err(self.unsupported_cfi(f, ra, "CFA neither SP- nor FP-based")),
        }
    }

    fn unsupported_cfi(&self, f: &Function, ra: u64, what: &str) -> XlateError {
        XlateError::UnsupportedCfi {
            function: f.name.clone(),
            pc: ra,
            isa: self.isa,
            what: what.to_string(),
        }
    }
}

fn alias_rank(s: &Symbol) -> (bool, bool, usize, String) {
    (
        !s.global,
        s.name.starts_with('_'),
        s.name.len(),
        s.name.clone(),
    )
}

/// CFA - SP after the prologue of a gcc -O0 function, by decoding it (None if unrecognized).
pub fn prologue_size(isa: Isa, code: &[u8], addr: u64) -> Option<u64> {
    match isa {
        Isa::X86_64 => {
            use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic, OpKind, Register};
            let mut d = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
            let mut size = 8u64; // return address
            let mut saw_frame = false;
            for _ in 0..16 {
                if !d.can_decode() {
                    break;
                }
                let ins = d.decode();
                match ins.mnemonic() {
                    Mnemonic::Endbr64 => {}
                    Mnemonic::Push if ins.op0_kind() == OpKind::Register => size += 8,
                    Mnemonic::Mov
                        if ins.op0_register() == Register::RBP
                            && ins.op1_kind() == OpKind::Register
                            && ins.op1_register() == Register::RSP =>
                    {
                        saw_frame = true
                    }
                    Mnemonic::Sub
                        if ins.op0_register() == Register::RSP
                            && matches!(ins.code(), Code::Sub_rm64_imm8 | Code::Sub_rm64_imm32) =>
                    {
                        size += ins.immediate(1);
                        break;
                    }
                    _ => break,
                }
            }
            saw_frame.then_some(size)
        }
        Isa::Aarch64 => {
            let mut size = 0u64;
            for w in code.chunks_exact(4).take(8) {
                let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                if w & 0xffc0_03e0 == 0xa980_03e0 {
                    // stp Xt, Xt2, [sp, #imm]!
                    let imm7 = (((w >> 15) & 0x7f) << 25) as i32 >> 25;
                    size = size.checked_add_signed(-i64::from(imm7) * 8)?;
                } else if w & 0xff80_03ff == 0xd100_03ff {
                    // sub sp, sp, #imm{, lsl 12}
                    let imm = u64::from((w >> 10) & 0xfff) << (12 * ((w >> 22) & 1));
                    size += imm;
                } else if w == 0x9100_03fd
                    || w & 0xffc0_03e0 == 0xa900_03e0
                    || w & 0xffc0_03e0 == 0xf900_03e0
                {
                    // mov x29, sp ; stp/str without writeback off sp
                } else {
                    break;
                }
            }
            (size > 0).then_some(size)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_prologues() {
        // push rbp; mov rbp,rsp; sub rsp,0x70
        let a = [0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x70, 0x90];
        assert_eq!(prologue_size(Isa::X86_64, &a, 0x1000), Some(8 + 8 + 0x70));
        // endbr64; push rbp; mov rbp,rsp; push rbx; sub rsp,0x1000
        let b = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x53, 0x48, 0x81, 0xec, 0x00, 0x10,
            0x00, 0x00,
        ];
        assert_eq!(
            prologue_size(Isa::X86_64, &b, 0x1000),
            Some(8 + 8 + 8 + 0x1000)
        );
        // Leaf without sub: push rbp; mov rbp,rsp; mov eax,0
        let c = [0x55, 0x48, 0x89, 0xe5, 0xb8, 0, 0, 0, 0];
        assert_eq!(prologue_size(Isa::X86_64, &c, 0x1000), Some(16));
        // No frame pointer.
        assert_eq!(
            prologue_size(Isa::X86_64, &[0x48, 0x83, 0xec, 0x08], 0x1000),
            None
        );
    }

    #[test]
    fn aarch64_prologues() {
        let words = |w: &[u32]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        // stp x29, x30, [sp, #-128]!; mov x29, sp; str w0, [sp, #44]
        let a = words(&[0xa9b8_7bfd, 0x9100_03fd, 0xb900_2fe0]);
        assert_eq!(prologue_size(Isa::Aarch64, &a, 0), Some(128));
        // sub sp, sp, #0x1, lsl #12; stp x29, x30, [sp, #-16]!; mov x29, sp
        let b = words(&[0xd140_07ff, 0xa9bf_7bfd, 0x9100_03fd]);
        assert_eq!(prologue_size(Isa::Aarch64, &b, 0), Some(4096 + 16));
        assert_eq!(prologue_size(Isa::Aarch64, &words(&[0xd65f_03c0]), 0), None);
    }
}

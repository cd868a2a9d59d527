//! Call sites: found by decoding call instructions of every DWARF function (at -O0 gcc emits no
//! `DW_TAG_call_site`), keyed by (caller, callee, line, column, ordinal) so that the same call
//! in the other ISA's binary can be found; indexed by return address and by key.
//! [`KeyAssigner`] is the one definition of the key, also used by `popcorn build` for the
//! metadata's `call_sites`.

use crate::conventions::INDIRECT_CALLEE;
use crate::regs::Isa;
use std::collections::HashMap;
use std::fmt;

/// Identity of a call site that is the same in both binaries built from one source.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallSiteKey {
    /// Function containing the call.
    pub caller: String,
    /// Called function, or [`INDIRECT_CALLEE`].
    pub callee: String,
    /// Source line of the call instruction.
    pub line: u32,
    /// Source column of the call instruction.
    pub column: u32,
    /// Index among call sites of the same caller with equal callee, line and column, in
    /// address order.
    pub ordinal: u32,
}

/// Numbers call sites into [`CallSiteKey`]s. Fed the calls of one binary (or of its assembly)
/// in address order, it gives each call the count of earlier calls with the same caller,
/// callee, line and column as its ordinal.
#[derive(Debug, Default)]
pub struct KeyAssigner {
    counters: HashMap<(String, String, u32, u32), u32>,
}

impl KeyAssigner {
    /// The key of the next call of `caller` to `callee` (or [`INDIRECT_CALLEE`]) at
    /// `line`:`column`.
    pub fn key(&mut self, caller: &str, callee: &str, line: u32, column: u32) -> CallSiteKey {
        let n = self
            .counters
            .entry((caller.to_owned(), callee.to_owned(), line, column))
            .or_insert(0);
        let key = CallSiteKey {
            caller: caller.to_owned(),
            callee: callee.to_owned(),
            line,
            column,
            ordinal: *n,
        };
        *n += 1;
        key
    }
}

/// One call instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSite {
    /// Cross-binary key.
    pub key: CallSiteKey,
    /// Source file of the caller.
    pub file: String,
    /// Address of the call instruction.
    pub call_addr: u64,
    /// Return address (the instruction after the call).
    pub ret_addr: u64,
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{} in {} (call to {})",
            self.file, self.key.line, self.key.column, self.key.caller, self.key.callee
        )
    }
}

/// A decoded call: `(call address, return address, direct target)`.
pub type RawCall = (u64, u64, Option<u64>);

/// Decode every call instruction in `code` (loaded at `addr`).
pub fn decode_calls(isa: Isa, code: &[u8], addr: u64) -> Vec<RawCall> {
    match isa {
        Isa::Aarch64 => code
            .chunks_exact(4)
            .enumerate()
            .filter_map(|(i, w)| {
                let pc = addr + 4 * i as u64;
                let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                if w & 0xfc00_0000 == 0x9400_0000 {
                    // BL imm26
                    let imm = ((w & 0x03ff_ffff) << 6) as i32 >> 4; // sign-extend, *4
                    Some((pc, pc + 4, Some(pc.wrapping_add_signed(i64::from(imm)))))
                } else if w & 0xffff_fc1f == 0xd63f_0000 {
                    // BLR Xn
                    Some((pc, pc + 4, None))
                } else {
                    None
                }
            })
            .collect(),
        Isa::X86_64 => {
            use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
            let mut d = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
            let mut out = Vec::new();
            while d.can_decode() {
                let ins = d.decode();
                if ins.mnemonic() == Mnemonic::Call {
                    let target = matches!(ins.op0_kind(), OpKind::NearBranch64)
                        .then(|| ins.near_branch_target());
                    out.push((ins.ip(), ins.next_ip(), target));
                }
            }
            out
        }
    }
}

/// A call with its source position, before ordinals are assigned.
#[derive(Clone, Debug)]
pub struct Unkeyed {
    /// Caller name.
    pub caller: String,
    /// Callee name or [`INDIRECT_CALLEE`].
    pub callee: String,
    /// Caller's file.
    pub file: String,
    /// Line.
    pub line: u32,
    /// Column.
    pub column: u32,
    /// Call instruction address.
    pub call_addr: u64,
    /// Return address.
    pub ret_addr: u64,
}

/// All call sites of one binary.
#[derive(Clone, Debug, Default)]
pub struct CallSites {
    sites: Vec<CallSite>,
    by_ret: HashMap<u64, usize>,
    by_key: HashMap<CallSiteKey, usize>,
}

impl CallSites {
    /// Assign ordinals (address order within equal (caller, callee, line, column)) and index.
    pub fn new(mut calls: Vec<Unkeyed>) -> Self {
        calls.sort_by_key(|c| c.call_addr);
        let mut keys = KeyAssigner::default();
        let mut out = CallSites::default();
        for c in calls {
            let key = keys.key(&c.caller, &c.callee, c.line, c.column);
            let i = out.sites.len();
            out.by_ret.insert(c.ret_addr, i);
            out.by_key.insert(key.clone(), i);
            out.sites.push(CallSite {
                key,
                file: c.file,
                call_addr: c.call_addr,
                ret_addr: c.ret_addr,
            });
        }
        out
    }

    /// The call site whose return address is `ra`.
    pub fn by_return_address(&self, ra: u64) -> Option<&CallSite> {
        self.by_ret.get(&ra).map(|&i| &self.sites[i])
    }

    /// The call site with `key`.
    pub fn by_key(&self, key: &CallSiteKey) -> Option<&CallSite> {
        self.by_key.get(key).map(|&i| &self.sites[i])
    }

    /// All call sites in address order.
    pub fn iter(&self) -> impl Iterator<Item = &CallSite> {
        self.sites.iter()
    }

    /// Number of call sites.
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }
}

/// Callee label for an optional direct-target name.
pub fn callee_label(name: Option<&str>) -> String {
    name.unwrap_or(INDIRECT_CALLEE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aarch64_bl_and_blr() {
        // bl +8 ; nop ; bl -4 ; blr x3 ; ret
        let words: [u32; 5] = [
            0x9400_0002,
            0xd503_201f,
            0x97ff_ffff,
            0xd63f_0060,
            0xd65f_03c0,
        ];
        let code: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let calls = decode_calls(Isa::Aarch64, &code, 0x400000);
        assert_eq!(
            calls,
            vec![
                (0x400000, 0x400004, Some(0x400008)),
                (0x400008, 0x40000c, Some(0x400004)),
                (0x40000c, 0x400010, None),
            ]
        );
    }

    #[test]
    fn x86_direct_and_indirect_calls() {
        // call rel32 (+0) ; mov eax,1 ; call *%rdx ; call *0x10(%rbp) ; ret
        let code = [
            0xe8, 0x00, 0x00, 0x00, 0x00, // call next
            0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
            0xff, 0xd2, // call *%rdx
            0xff, 0x55, 0x10, // call *0x10(%rbp)
            0xc3,
        ];
        let calls = decode_calls(Isa::X86_64, &code, 0x401000);
        assert_eq!(
            calls,
            vec![
                (0x401000, 0x401005, Some(0x401005)),
                (0x40100a, 0x40100c, None),
                (0x40100c, 0x40100f, None),
            ]
        );
    }

    fn call(caller: &str, callee: &str, line: u32, col: u32, addr: u64) -> Unkeyed {
        Unkeyed {
            caller: caller.into(),
            callee: callee.into(),
            file: "m.c".into(),
            line,
            column: col,
            call_addr: addr,
            ret_addr: addr + 5,
        }
    }

    #[test]
    fn ordinals_and_cross_binary_matching() {
        // Binary A: two calls of g on line 7 col 3 (a macro), one of h; plus a helper (memcpy)
        // call only A has: it must not perturb ordinals of the others.
        let a = CallSites::new(vec![
            call("f", "g", 7, 3, 0x130),
            call("f", "memcpy", 7, 3, 0x110),
            call("f", "g", 7, 3, 0x100),
            call("f", "h", 8, 5, 0x140),
            call("main", "f", 20, 9, 0x200),
        ]);
        let b = CallSites::new(vec![
            call("f", "g", 7, 3, 0x1000),
            call("f", "g", 7, 3, 0x1010),
            call("f", "h", 8, 5, 0x1020),
            call("main", "f", 20, 9, 0x2000),
        ]);
        assert_eq!(a.len(), 5);
        let second = a.by_return_address(0x135).unwrap();
        assert_eq!(second.key.ordinal, 1);
        assert_eq!(b.by_key(&second.key).unwrap().ret_addr, 0x1015);
        let first = a.by_return_address(0x105).unwrap();
        assert_eq!(first.key.ordinal, 0);
        assert_eq!(b.by_key(&first.key).unwrap().ret_addr, 0x1005);
        let helper = a.by_return_address(0x115).unwrap();
        assert!(b.by_key(&helper.key).is_none());
        assert_eq!(
            b.by_key(&a.by_return_address(0x205).unwrap().key)
                .unwrap()
                .call_addr,
            0x2000
        );
        assert!(a.by_return_address(0x100).is_none());
        assert_eq!(format!("{first}"), "m.c:7:3 in f (call to g)");
        assert_eq!(callee_label(None), INDIRECT_CALLEE);
        assert!(CallSites::default().is_empty());
        assert_eq!(b.iter().count(), 4);
    }
}

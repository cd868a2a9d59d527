//! Reading the application frames' variables out of a snapshot through DWARF, with pointers
//! resolved to what they point at (stack variable + offset, symbol + offset): the ISA-neutral
//! view used to check a translation.

use crate::binary::Binary;
use crate::callsites::CallSiteKey;
use crate::dwarf::{compatible_layout, Location};
use crate::error::{Result, XlateError};
use crate::snapshot::ThreadSnapshot;
use crate::unwind::migration_frames;

/// What a pointer value designates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PointerTarget {
    /// A variable of application frame `frame` (0 = innermost), at `offset` bytes.
    Stack {
        /// Frame index.
        frame: usize,
        /// Variable name.
        variable: String,
        /// Byte offset.
        offset: u64,
    },
    /// Inside a symbol.
    Symbol {
        /// Name.
        name: String,
        /// Byte offset.
        offset: u64,
    },
    /// Anything else, raw.
    Raw(u64),
}

/// One variable's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarValue {
    /// Name.
    pub name: String,
    /// Bytes with pointer slots and struct padding zeroed.
    pub bytes: Vec<u8>,
    /// Pointer slots: (offset, target).
    pub pointers: Vec<(u64, PointerTarget)>,
}

/// One frame's variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameValues {
    /// Call site the frame is suspended at.
    pub key: CallSiteKey,
    /// Variables in scope there with frame locations, in DWARF order.
    pub vars: Vec<VarValue>,
}

/// Read every application frame's variables.
pub fn frame_values(snap: &ThreadSnapshot, bin: &Binary) -> Result<Vec<FrameValues>> {
    let frames = migration_frames(snap, bin)?;
    // Objects first, for pointer resolution.
    let mut objs: Vec<(u64, u64, usize, String)> = Vec::new();
    for (i, fr) in frames.iter().enumerate() {
        for v in fr
            .function
            .vars
            .iter()
            .filter(|v| v.in_scope(fr.site.call_addr))
        {
            if let (Location::FrameOffset(o), Some(size)) = (&v.location, bin.debug.size_of(v.ty)) {
                objs.push((fr.cfa.wrapping_add_signed(*o), size, i, v.name.clone()));
            }
        }
    }
    let target = |val: u64| -> PointerTarget {
        if let Some((a, _, f, n)) = objs.iter().find(|(a, s, ..)| val >= *a && val < a + s) {
            return PointerTarget::Stack {
                frame: *f,
                variable: n.clone(),
                offset: val - a,
            };
        }
        if let Some((a, _, f, n)) = objs.iter().find(|(a, s, ..)| val == a + s) {
            return PointerTarget::Stack {
                frame: *f,
                variable: n.clone(),
                offset: val - a,
            };
        }
        match bin.symbol_containing(val) {
            Some(s) if val != 0 => PointerTarget::Symbol {
                name: s.name.clone(),
                offset: val - s.addr,
            },
            _ => PointerTarget::Raw(val),
        }
    };
    let mut out = Vec::new();
    for fr in &frames {
        let mut vars = Vec::new();
        for v in fr
            .function
            .vars
            .iter()
            .filter(|v| v.in_scope(fr.site.call_addr))
        {
            let Location::FrameOffset(o) = v.location else {
                continue;
            };
            let layout = compatible_layout(&bin.debug, v.ty, &bin.debug, v.ty).unwrap_or_default();
            let size = bin.debug.size_of(v.ty).unwrap_or(layout.size);
            let addr = fr.cfa.wrapping_add_signed(o);
            let mut bytes = snap
                .stack
                .read(addr, size)
                .ok_or_else(|| XlateError::StackOutOfRange {
                    addr,
                    what: format!("variable {} of {}", v.name, fr.function.name),
                    isa: bin.isa,
                    base: snap.stack.base,
                    end: snap.stack.end(),
                })?
                .to_vec();
            let mut used = vec![false; bytes.len()];
            bin.debug.mark_data_bytes(v.ty, 0, &mut used);
            for (b, u) in bytes.iter_mut().zip(&used) {
                if !u {
                    *b = 0;
                }
            }
            let mut pointers = Vec::new();
            for &p in &layout.pointers {
                let val = snap.stack.read_u64(addr + p).unwrap_or(0);
                pointers.push((p, target(val)));
                if let Some(b) = bytes.get_mut(p as usize..p as usize + 8) {
                    b.fill(0);
                }
            }
            vars.push(VarValue {
                name: v.name.clone(),
                bytes,
                pointers,
            });
        }
        out.push(FrameValues {
            key: fr.site.key.clone(),
            vars,
        });
    }
    Ok(out)
}

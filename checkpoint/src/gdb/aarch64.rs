//! aarch64 registers as qemu's GDB stub reports them (gdb's
//! `aarch64-core.xml` then `aarch64-fpu.xml`): the `g` packet holds x0–x30,
//! sp, pc (8 bytes each) and cpsr (4), little-endian; the vector registers
//! are read one by one. With `-cpu cortex-a72` (no SVE), which popcorn
//! uses, v0–v31 are 16 bytes each; the default `max` CPU shows SVE
//! registers there instead.

/// Bytes of the `g` packet.
pub const CORE_BYTES: usize = 31 * 8 + 8 + 8 + 4;
/// Stub register number of v0 (v0–v31 follow, then fpsr and fpcr).
pub const V0: usize = 34;
pub const FPSR: usize = V0 + 32;
pub const FPCR: usize = FPSR + 1;

/// The general registers of one aarch64 thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreRegs {
    /// x0–x30 (x29 is the frame pointer, x30 the link register).
    pub x: [u64; 31],
    pub sp: u64,
    pub pc: u64,
    pub cpsr: u32,
}

impl CoreRegs {
    /// From a `g` packet's bytes; `None` if it is too short.
    pub fn from_g(bytes: &[u8]) -> Option<CoreRegs> {
        if bytes.len() < CORE_BYTES {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let mut r = CoreRegs::default();
        for (i, x) in r.x.iter_mut().enumerate() {
            *x = word(i);
        }
        r.sp = word(31);
        r.pc = word(32);
        let mut c = [0u8; 4];
        c.copy_from_slice(&bytes[33 * 8..33 * 8 + 4]);
        r.cpsr = u32::from_le_bytes(c);
        Some(r)
    }

    /// The `g` packet's bytes.
    pub fn to_g(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CORE_BYTES);
        for x in self.x.iter().chain([&self.sp, &self.pc]) {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&self.cpsr.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_packet_round_trips() {
        let mut r = CoreRegs::default();
        for (i, x) in r.x.iter_mut().enumerate() {
            *x = 0x1111_0000_0000_0000 | i as u64;
        }
        r.sp = 0x7fff_fff0;
        r.pc = 0x40_0580;
        r.cpsr = 0x6000_0000;
        let g = r.to_g();
        assert_eq!(g.len(), CORE_BYTES);
        assert_eq!(&g[32 * 8..32 * 8 + 8], &0x40_0580u64.to_le_bytes());
        assert_eq!(CoreRegs::from_g(&g), Some(r));
        assert_eq!(CoreRegs::from_g(&g[..CORE_BYTES - 1]), None);
    }
}

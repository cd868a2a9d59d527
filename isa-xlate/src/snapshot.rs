//! Thread snapshots: the register file plus the bytes of the thread's stack.
//!
//! This module owns [`ThreadSnapshot`] and [`StackImage`], the only memory the translator
//! reads or writes (globals and heap are identical in both binaries and never touched here).

use crate::regs::{Isa, RegisterFile};

/// A contiguous copy of (part of) a thread's stack: `bytes[i]` is the byte at `base + i`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StackImage {
    /// Lowest address covered.
    pub base: u64,
    /// Contents.
    pub bytes: Vec<u8>,
}

impl StackImage {
    /// An image covering `[base, base + bytes.len())`.
    pub fn new(base: u64, bytes: Vec<u8>) -> Self {
        StackImage { base, bytes }
    }

    /// One past the highest address covered.
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.bytes.len() as u64)
    }

    /// Whether `[addr, addr + len)` lies inside the image.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.base && addr.checked_add(len).is_some_and(|e| e <= self.end())
    }

    fn range(&self, addr: u64, len: u64) -> Option<std::ops::Range<usize>> {
        if !self.contains(addr, len) {
            return None;
        }
        let start = usize::try_from(addr - self.base).ok()?;
        let len = usize::try_from(len).ok()?;
        Some(start..start + len)
    }

    /// The bytes `[addr, addr + len)`, if covered.
    pub fn read(&self, addr: u64, len: u64) -> Option<&[u8]> {
        self.range(addr, len).map(|r| &self.bytes[r])
    }

    /// A little-endian u64 at `addr`, if covered.
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let b = self.read(addr, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }

    /// Overwrite `[addr, addr + data.len())`; false (and nothing written) if not covered.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        match self.range(addr, data.len() as u64) {
            Some(r) => {
                self.bytes[r].copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    /// Write a little-endian u64; false if not covered.
    pub fn write_u64(&mut self, addr: u64, v: u64) -> bool {
        self.write(addr, &v.to_le_bytes())
    }

    /// Grow the image downwards (with zeros) so that it starts at or below `addr`.
    pub fn extend_down(&mut self, addr: u64) {
        if addr < self.base {
            let extra = (self.base - addr) as usize;
            let mut bytes = vec![0u8; extra + self.bytes.len()];
            bytes[extra..].copy_from_slice(&self.bytes);
            self.bytes = bytes;
            self.base = addr;
        }
    }

    /// Zero `[lo, hi)` (clamped to the image).
    pub fn zero(&mut self, lo: u64, hi: u64) {
        let lo = lo.max(self.base);
        let hi = hi.min(self.end());
        if lo < hi {
            if let Some(r) = self.range(lo, hi - lo) {
                self.bytes[r].fill(0);
            }
        }
    }
}

/// The state of one thread stopped at a migration point: registers and stack bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ThreadSnapshot {
    /// Register file; its variant names the ISA.
    pub regs: RegisterFile,
    /// The stack, at least from the stack pointer up to the outermost translated frame's CFA
    /// plus the slots where that frame saved its caller's FP and return address.
    pub stack: StackImage,
}

impl ThreadSnapshot {
    /// ISA of the snapshot.
    pub fn isa(&self) -> Isa {
        self.regs.isa()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_image_bounds() {
        let mut s = StackImage::new(0x1000, vec![0; 32]);
        assert!(s.contains(0x1000, 32));
        assert!(!s.contains(0x1000, 33));
        assert!(!s.contains(0xfff, 1));
        assert!(!s.contains(u64::MAX, 2));
        assert!(s.write_u64(0x1018, 0x1122334455667788));
        assert_eq!(s.read_u64(0x1018), Some(0x1122334455667788));
        assert_eq!(s.read_u64(0x1019), None);
        assert!(!s.write_u64(0x101c, 1));
        s.zero(0x0, 0x101c);
        assert_eq!(s.read(0x1018, 4), Some(&[0u8; 4][..]));
        assert_eq!(s.read(0x101c, 4), Some(&[0x44u8, 0x33, 0x22, 0x11][..]));
        assert_eq!(s.end(), 0x1020);
        s.extend_down(0x0ff0);
        assert_eq!((s.base, s.end()), (0x0ff0, 0x1020));
        assert_eq!(s.read_u64(0x0ff0), Some(0));
        assert_eq!(s.read(0x101c, 4), Some(&[0x44u8, 0x33, 0x22, 0x11][..]));
        s.extend_down(0x2000);
        assert_eq!(s.base, 0x0ff0);
    }

    #[test]
    fn snapshots_serialize() {
        let mut regs = RegisterFile::zeroed(Isa::Aarch64);
        regs.set(95, u64::MAX);
        let snap = ThreadSnapshot {
            regs,
            stack: StackImage::new(0x0055_0000_0000, vec![1, 2, 3]),
        };
        let json = serde_json::to_string(&snap).unwrap();
        let back: ThreadSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
        assert_eq!(back.isa(), Isa::Aarch64);
    }
}

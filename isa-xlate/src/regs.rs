//! Register files of x86_64 and aarch64 and their DWARF register numbering.
//!
//! This module owns the ISA enum, the two register-file structs and the mapping between DWARF
//! register numbers (what CFI and location expressions name) and fields.

use std::fmt;

/// An instruction-set architecture the translator knows.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Isa {
    /// AMD64 / Intel 64, System V ABI.
    X86_64,
    /// ARMv8-A 64-bit, AAPCS64.
    Aarch64,
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = String;
    fn from_str(s: &str) -> Result<Isa, String> {
        match s {
            "x86_64" => Ok(Isa::X86_64),
            "aarch64" => Ok(Isa::Aarch64),
            other => Err(format!(
                "unknown ISA '{other}' (expected x86_64 or aarch64)"
            )),
        }
    }
}

impl Isa {
    /// Both ISAs, in a fixed order (see [`Isa::index`]).
    pub const ALL: [Isa; 2] = [Isa::X86_64, Isa::Aarch64];

    /// The name used in file names, cluster files and metadata.
    pub fn name(self) -> &'static str {
        match self {
            Isa::X86_64 => "x86_64",
            Isa::Aarch64 => "aarch64",
        }
    }

    /// Position in [`Isa::ALL`].
    pub fn index(self) -> usize {
        match self {
            Isa::X86_64 => 0,
            Isa::Aarch64 => 1,
        }
    }

    /// The ISA this program was built for.
    pub fn native() -> Isa {
        if cfg!(target_arch = "aarch64") {
            Isa::Aarch64
        } else {
            Isa::X86_64
        }
    }

    /// DWARF number of the stack pointer.
    pub const fn dwarf_sp(self) -> u16 {
        match self {
            Isa::X86_64 => x86_64::RSP,
            Isa::Aarch64 => aarch64::SP,
        }
    }
    /// DWARF number of the frame pointer.
    pub const fn dwarf_fp(self) -> u16 {
        match self {
            Isa::X86_64 => x86_64::RBP,
            Isa::Aarch64 => aarch64::X29,
        }
    }
    /// DWARF number of the return-address column used by CFI.
    pub const fn dwarf_ra(self) -> u16 {
        match self {
            Isa::X86_64 => x86_64::RA,
            Isa::Aarch64 => aarch64::X30,
        }
    }
    /// Size of a pointer / general register in bytes (both ISAs are LP64).
    pub const fn pointer_size(self) -> u64 {
        8
    }
}

/// DWARF register numbers of x86_64 (System V psABI, figure 3.36).
pub mod x86_64 {
    /// rax.
    pub const RAX: u16 = 0;
    /// rdx.
    pub const RDX: u16 = 1;
    /// rcx.
    pub const RCX: u16 = 2;
    /// rbx.
    pub const RBX: u16 = 3;
    /// rsi.
    pub const RSI: u16 = 4;
    /// rdi.
    pub const RDI: u16 = 5;
    /// rbp (frame pointer).
    pub const RBP: u16 = 6;
    /// rsp (stack pointer).
    pub const RSP: u16 = 7;
    /// r8; r9..r15 follow as 9..15.
    pub const R8: u16 = 8;
    /// Return-address column (rip).
    pub const RA: u16 = 16;
    /// xmm0; xmm1..xmm15 follow as 18..32.
    pub const XMM0: u16 = 17;
}

/// DWARF register numbers of aarch64 (AADWARF64).
pub mod aarch64 {
    /// x0; x1..x30 follow as 1..30.
    pub const X0: u16 = 0;
    /// x29 (frame pointer).
    pub const X29: u16 = 29;
    /// x30 (link register).
    pub const X30: u16 = 30;
    /// sp.
    pub const SP: u16 = 31;
    /// v0; v1..v31 follow as 65..95.
    pub const V0: u16 = 64;
}

/// x86_64 user register file (what ptrace or a GDB stub exposes for a thread).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct X86_64Regs {
    /// General registers in DWARF order: rax, rdx, rcx, rbx, rsi, rdi, rbp, rsp, r8..r15.
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags.
    pub rflags: u64,
    /// TLS base (the destination keeps its own).
    pub fs_base: u64,
    /// gs base.
    pub gs_base: u64,
    /// SSE registers.
    pub xmm: [u128; 16],
    /// SSE control/status.
    pub mxcsr: u32,
}

/// aarch64 user register file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Aarch64Regs {
    /// x0..x30 (x29 = frame pointer, x30 = link register).
    pub x: [u64; 31],
    /// Stack pointer.
    pub sp: u64,
    /// Program counter.
    pub pc: u64,
    /// NZCV and the rest of PSTATE visible to user space.
    pub pstate: u64,
    /// TLS register (the destination keeps its own).
    pub tpidr_el0: u64,
    /// SIMD/FP registers.
    pub v: [u128; 32],
    /// FP status.
    pub fpsr: u32,
    /// FP control.
    pub fpcr: u32,
}

/// The register file of one thread on one ISA.
// Both variants are plain register arrays (aarch64 has twice the vector registers); boxing
// would only add an allocation per snapshot.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RegisterFile {
    /// x86_64 registers.
    X86_64(X86_64Regs),
    /// aarch64 registers.
    Aarch64(Aarch64Regs),
}

impl RegisterFile {
    /// An all-zero register file of `isa`.
    pub fn zeroed(isa: Isa) -> Self {
        match isa {
            Isa::X86_64 => RegisterFile::X86_64(X86_64Regs::default()),
            Isa::Aarch64 => RegisterFile::Aarch64(Aarch64Regs::default()),
        }
    }

    /// Which ISA this register file belongs to.
    pub fn isa(&self) -> Isa {
        match self {
            RegisterFile::X86_64(_) => Isa::X86_64,
            RegisterFile::Aarch64(_) => Isa::Aarch64,
        }
    }

    /// Program counter.
    pub fn pc(&self) -> u64 {
        match self {
            RegisterFile::X86_64(r) => r.rip,
            RegisterFile::Aarch64(r) => r.pc,
        }
    }

    /// Set the program counter.
    pub fn set_pc(&mut self, v: u64) {
        match self {
            RegisterFile::X86_64(r) => r.rip = v,
            RegisterFile::Aarch64(r) => r.pc = v,
        }
    }

    /// Stack pointer.
    pub fn sp(&self) -> u64 {
        self.get(self.isa().dwarf_sp()).unwrap_or(0)
    }

    /// Frame pointer (rbp / x29).
    pub fn fp(&self) -> u64 {
        self.get(self.isa().dwarf_fp()).unwrap_or(0)
    }

    /// Read a 64-bit register by DWARF number; `None` for numbers this file has no 64-bit
    /// integer view of (vector registers return their low 64 bits).
    pub fn get(&self, dwarf: u16) -> Option<u64> {
        match self {
            RegisterFile::X86_64(r) => match dwarf {
                0..=15 => Some(r.gpr[dwarf as usize]),
                x86_64::RA => Some(r.rip),
                17..=32 => Some(r.xmm[(dwarf - x86_64::XMM0) as usize] as u64),
                _ => None,
            },
            RegisterFile::Aarch64(r) => match dwarf {
                0..=30 => Some(r.x[dwarf as usize]),
                aarch64::SP => Some(r.sp),
                64..=95 => Some(r.v[(dwarf - aarch64::V0) as usize] as u64),
                _ => None,
            },
        }
    }

    /// Write a 64-bit register by DWARF number (vector registers get the value zero-extended).
    /// Returns false for numbers the file does not have.
    pub fn set(&mut self, dwarf: u16, v: u64) -> bool {
        match self {
            RegisterFile::X86_64(r) => match dwarf {
                0..=15 => r.gpr[dwarf as usize] = v,
                x86_64::RA => r.rip = v,
                17..=32 => r.xmm[(dwarf - x86_64::XMM0) as usize] = u128::from(v),
                _ => return false,
            },
            RegisterFile::Aarch64(r) => match dwarf {
                0..=30 => r.x[dwarf as usize] = v,
                aarch64::SP => r.sp = v,
                64..=95 => r.v[(dwarf - aarch64::V0) as usize] = u128::from(v),
                _ => return false,
            },
        }
        true
    }

    /// Name of a DWARF register for messages.
    pub fn dwarf_name(isa: Isa, dwarf: u16) -> String {
        const X86: [&str; 17] = [
            "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15", "rip",
        ];
        match (isa, dwarf) {
            (Isa::X86_64, 0..=16) => X86[dwarf as usize].to_string(),
            (Isa::X86_64, 17..=32) => format!("xmm{}", dwarf - 17),
            (Isa::Aarch64, 0..=30) => format!("x{dwarf}"),
            (Isa::Aarch64, 31) => "sp".to_string(),
            (Isa::Aarch64, 64..=95) => format!("v{}", dwarf - 64),
            _ => format!("dwarf-reg-{dwarf}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_dwarf_numbers_map_to_named_roles() {
        let mut r = RegisterFile::zeroed(Isa::X86_64);
        for n in 0..=16u16 {
            assert!(r.set(n, 0x1000 + u64::from(n)));
        }
        assert_eq!(r.sp(), 0x1007);
        assert_eq!(r.fp(), 0x1006);
        assert_eq!(r.pc(), 0x1010);
        assert_eq!(r.get(x86_64::RBX), Some(0x1003));
        assert!(r.set(x86_64::XMM0 + 15, 7));
        assert_eq!(r.get(32), Some(7));
        assert!(!r.set(33, 1));
        assert_eq!(r.get(33), None);
        assert_eq!(RegisterFile::dwarf_name(Isa::X86_64, 6), "rbp");
        assert_eq!(RegisterFile::dwarf_name(Isa::X86_64, 18), "xmm1");
    }

    #[test]
    fn aarch64_dwarf_numbers_map_to_named_roles() {
        let mut r = RegisterFile::zeroed(Isa::Aarch64);
        for n in 0..=31u16 {
            assert!(r.set(n, 0x2000 + u64::from(n)));
        }
        assert_eq!(r.sp(), 0x201f);
        assert_eq!(r.fp(), 0x201d);
        assert_eq!(r.get(Isa::Aarch64.dwarf_ra()), Some(0x201e));
        r.set_pc(0x400000);
        assert_eq!(r.pc(), 0x400000);
        assert!(r.set(95, 9));
        assert_eq!(r.get(95), Some(9));
        assert!(!r.set(32, 1));
        assert!(!r.set(63, 1));
        assert_eq!(RegisterFile::dwarf_name(Isa::Aarch64, 31), "sp");
        assert_eq!(RegisterFile::dwarf_name(Isa::Aarch64, 70), "v6");
    }

    #[test]
    fn roles_per_isa() {
        assert_eq!(Isa::X86_64.dwarf_ra(), 16);
        assert_eq!(Isa::Aarch64.dwarf_ra(), 30);
        assert_eq!(Isa::X86_64.dwarf_fp(), 6);
        assert_eq!(Isa::Aarch64.dwarf_sp(), 31);
        assert_eq!(RegisterFile::zeroed(Isa::Aarch64).isa(), Isa::Aarch64);
        assert_eq!(Isa::Aarch64.to_string(), "aarch64");
    }
}

//! The x86-64 general-purpose register file (`NT_PRSTATUS`) as a named,
//! serializable struct, and how a stopped thread's registers describe an
//! interrupted system call.

use serde::{Deserialize, Serialize};

/// `struct user_regs_struct` field by field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

impl From<libc::user_regs_struct> for Regs {
    fn from(r: libc::user_regs_struct) -> Regs {
        Regs {
            r15: r.r15,
            r14: r.r14,
            r13: r.r13,
            r12: r.r12,
            rbp: r.rbp,
            rbx: r.rbx,
            r11: r.r11,
            r10: r.r10,
            r9: r.r9,
            r8: r.r8,
            rax: r.rax,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            orig_rax: r.orig_rax,
            rip: r.rip,
            cs: r.cs,
            eflags: r.eflags,
            rsp: r.rsp,
            ss: r.ss,
            fs_base: r.fs_base,
            gs_base: r.gs_base,
            ds: r.ds,
            es: r.es,
            fs: r.fs,
            gs: r.gs,
        }
    }
}

impl From<Regs> for libc::user_regs_struct {
    fn from(r: Regs) -> libc::user_regs_struct {
        libc::user_regs_struct {
            r15: r.r15,
            r14: r.r14,
            r13: r.r13,
            r12: r.r12,
            rbp: r.rbp,
            rbx: r.rbx,
            r11: r.r11,
            r10: r.r10,
            r9: r.r9,
            r8: r.r8,
            rax: r.rax,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            orig_rax: r.orig_rax,
            rip: r.rip,
            cs: r.cs,
            eflags: r.eflags,
            rsp: r.rsp,
            ss: r.ss,
            fs_base: r.fs_base,
            gs_base: r.gs_base,
            ds: r.ds,
            es: r.es,
            fs: r.fs,
            gs: r.gs,
        }
    }
}

/// How the kernel will restart a system call interrupted by the stop, from
/// the `-ERESTART*` value left in `rax`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartKind {
    /// -ERESTARTSYS (512): restarted unless a handler without SA_RESTART runs.
    RestartSys,
    /// -ERESTARTNOINTR (513): always restarted.
    RestartNoIntr,
    /// -ERESTARTNOHAND (514): restarted unless any handler runs.
    RestartNoHand,
    /// -ERESTART_RESTARTBLOCK (516): resumed through `restart_syscall`.
    RestartBlock,
}

impl RestartKind {
    /// Classifies a raw `rax` value.
    pub fn from_rax(rax: u64) -> Option<RestartKind> {
        match rax as i64 {
            -512 => Some(RestartKind::RestartSys),
            -513 => Some(RestartKind::RestartNoIntr),
            -514 => Some(RestartKind::RestartNoHand),
            -516 => Some(RestartKind::RestartBlock),
            _ => None,
        }
    }
}

/// A thread stopped inside a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptedSyscall {
    /// Syscall number (`orig_rax`).
    pub nr: i64,
    /// Set when the syscall will be restarted on resume rather than return
    /// `rax` to the application.
    pub restart: Option<RestartKind>,
}

impl Regs {
    /// The syscall this thread is stopped in, if any (`orig_rax >= 0`).
    pub fn interrupted_syscall(&self) -> Option<InterruptedSyscall> {
        let nr = self.orig_rax as i64;
        (nr >= 0).then(|| InterruptedSyscall {
            nr,
            restart: RestartKind::from_rax(self.rax),
        })
    }
}

/// Serde helper: bytes as one lowercase hex string.
pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).map_err(serde::de::Error::custom)
    }

    pub fn decode(s: &str) -> Result<Vec<u8>, String> {
        if s.len() & 1 == 1 {
            return Err("odd-length hex string".into());
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad hex at offset {i}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_kinds() {
        assert_eq!(
            RestartKind::from_rax(-512i64 as u64),
            Some(RestartKind::RestartSys)
        );
        assert_eq!(
            RestartKind::from_rax(-513i64 as u64),
            Some(RestartKind::RestartNoIntr)
        );
        assert_eq!(
            RestartKind::from_rax(-514i64 as u64),
            Some(RestartKind::RestartNoHand)
        );
        assert_eq!(
            RestartKind::from_rax(-516i64 as u64),
            Some(RestartKind::RestartBlock)
        );
        assert_eq!(RestartKind::from_rax(-515i64 as u64), None);
        assert_eq!(RestartKind::from_rax(-4i64 as u64), None);
        assert_eq!(RestartKind::from_rax(0), None);
    }

    #[test]
    fn interrupted_syscall() {
        let mut r = Regs {
            orig_rax: u64::MAX,
            ..Regs::default()
        };
        assert_eq!(r.interrupted_syscall(), None);
        r.orig_rax = 0;
        r.rax = -512i64 as u64;
        assert_eq!(
            r.interrupted_syscall(),
            Some(InterruptedSyscall {
                nr: 0,
                restart: Some(RestartKind::RestartSys)
            })
        );
        r.orig_rax = 202;
        r.rax = 0;
        assert_eq!(r.interrupted_syscall().unwrap().restart, None);
    }

    #[test]
    fn round_trips_libc_struct() {
        let r = Regs {
            r15: 1,
            rip: 2,
            fs_base: 3,
            gs: 4,
            orig_rax: 5,
            ..Regs::default()
        };
        let raw: libc::user_regs_struct = r.into();
        assert_eq!(Regs::from(raw), r);
    }

    #[test]
    fn hex_round_trip() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct W(#[serde(with = "hex_bytes")] Vec<u8>);
        let w = W(vec![0u8, 1, 0xab, 0xff]);
        let j = serde_json::to_string(&w).unwrap();
        assert_eq!(j, "\"0001abff\"");
        assert_eq!(serde_json::from_str::<W>(&j).unwrap(), w);
        assert!(serde_json::from_str::<W>("\"abc\"").is_err());
        assert!(serde_json::from_str::<W>("\"zz\"").is_err());
    }
}

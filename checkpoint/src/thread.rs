//! Per-thread state ([`ThreadState`]): what the tracer reads directly with
//! ptrace and `/proc`, plus the fields only an injected syscall can reveal
//! (filled in by the process capture).

use crate::procfs;
use crate::regs::{hex_bytes, InterruptedSyscall, Regs};
use crate::sys::misc;
use crate::sys::ptrace::{self, RseqConfig, SIGINFO_SIZE};
use crate::{Error, FrozenProcess};
use serde::{Deserialize, Serialize};

/// `stack_t` of `sigaltstack(2)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAltStack {
    pub sp: u64,
    /// `SS_ONSTACK` (1) / `SS_DISABLE` (2) / `SS_AUTODISARM`.
    pub flags: i32,
    pub size: u64,
}

impl SigAltStack {
    /// Decodes a raw 24-byte `stack_t`.
    pub fn from_bytes(b: &[u8]) -> Option<SigAltStack> {
        let u64_at = |o: usize| Some(u64::from_ne_bytes(b.get(o..o + 8)?.try_into().ok()?));
        let flags = i32::from_ne_bytes(b.get(8..12)?.try_into().ok()?);
        Some(SigAltStack {
            sp: u64_at(0)?,
            flags,
            size: u64_at(16)?,
        })
    }
}

/// Robust futex list registration (`set_robust_list(2)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobustList {
    pub head: u64,
    pub len: u64,
}

/// One queued, not yet delivered signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSignal {
    pub signo: i32,
    pub code: i32,
    /// The raw 128-byte `siginfo_t`.
    #[serde(with = "hex_bytes")]
    pub siginfo: Vec<u8>,
}

impl PendingSignal {
    pub(crate) fn from_raw(raw: &[u8; SIGINFO_SIZE]) -> PendingSignal {
        let i32_at = |o: usize| i32::from_ne_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
        PendingSignal {
            signo: i32_at(0),
            code: i32_at(8),
            siginfo: raw.to_vec(),
        }
    }
}

/// Everything about one thread needed to recreate it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    pub tid: i32,
    /// State letter from `/proc/PID/task/TID/stat` (`t` while frozen).
    pub state: char,
    pub regs: Regs,
    /// The XSAVE area (`NT_X86_XSTATE`): x87/SSE legacy area at 0, header at
    /// 512, then AVX and later components.
    #[serde(with = "hex_bytes")]
    pub xstate: Vec<u8>,
    /// Blocked signals (bit n-1 = signal n).
    pub sigmask: u64,
    pub rseq: RseqConfig,
    pub robust_list: RobustList,
    /// Set when the thread was stopped inside a system call.
    pub syscall: Option<InterruptedSyscall>,
    /// Signals queued for this thread only.
    pub pending_signals: Vec<PendingSignal>,
    /// `sigaltstack`; `None` unless captured by [`FrozenProcess::capture`].
    pub sigaltstack: Option<SigAltStack>,
    /// `clear_child_tid` address (`PR_GET_TID_ADDRESS`); `None` unless
    /// captured by [`FrozenProcess::capture`].
    pub clear_child_tid: Option<u64>,
}

impl FrozenProcess {
    /// Registers, xstate, sigmask, rseq, robust list and pending signals of
    /// every thread: everything that needs no injected syscall.
    pub fn capture_threads(&mut self) -> Result<Vec<ThreadState>, Error> {
        let pid = self.pid();
        self.tids()
            .into_iter()
            .map(|tid| capture_thread(pid, tid))
            .collect()
    }
}

pub(crate) fn capture_thread(pid: i32, tid: i32) -> Result<ThreadState, Error> {
    let pt = |op: &'static str| move |e| Error::ptrace(op, tid, e);
    let regs: Regs = ptrace::get_regs(tid)
        .map_err(pt("GETREGSET NT_PRSTATUS"))?
        .into();
    let xstate = ptrace::get_xstate(tid).map_err(pt("GETREGSET NT_X86_XSTATE"))?;
    let sigmask = ptrace::get_sigmask(tid).map_err(pt("GETSIGMASK"))?;
    let rseq = ptrace::get_rseq_config(tid).map_err(pt("GET_RSEQ_CONFIGURATION"))?;
    let (head, len) = misc::get_robust_list(tid).map_err(|e| Error::Os {
        what: "get_robust_list",
        pid: tid,
        source: e,
    })?;
    let pending_signals = ptrace::peek_siginfo(tid, false)
        .map_err(pt("PEEKSIGINFO"))?
        .iter()
        .map(PendingSignal::from_raw)
        .collect();
    let stat_path = format!("/proc/{pid}/task/{tid}/stat");
    let state = procfs::with_text(&stat_path, procfs::stat::parse_state)?
        .ok_or_else(|| Error::parse(stat_path, "no state field"))?;
    Ok(ThreadState {
        tid,
        state,
        syscall: regs.interrupted_syscall(),
        regs,
        xstate,
        sigmask,
        rseq,
        robust_list: RobustList { head, len },
        pending_signals,
        sigaltstack: None,
        clear_child_tid: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_stack_t() {
        let mut b = Vec::new();
        b.extend_from_slice(&0x7f00_1000u64.to_ne_bytes());
        b.extend_from_slice(&1i32.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&65536u64.to_ne_bytes());
        assert_eq!(
            SigAltStack::from_bytes(&b),
            Some(SigAltStack {
                sp: 0x7f00_1000,
                flags: 1,
                size: 65536
            })
        );
        assert_eq!(SigAltStack::from_bytes(&b[..20]), None);
    }

    #[test]
    fn decodes_siginfo() {
        let mut raw = [0u8; SIGINFO_SIZE];
        raw[0..4].copy_from_slice(&10i32.to_ne_bytes());
        raw[8..12].copy_from_slice(&(-6i32).to_ne_bytes());
        let p = PendingSignal::from_raw(&raw);
        assert_eq!((p.signo, p.code, p.siginfo.len()), (10, -6, 128));
    }
}

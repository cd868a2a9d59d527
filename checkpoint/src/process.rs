//! Whole-process state ([`ProcessState`]) and [`FrozenProcess::capture`]:
//! `/proc` files, `prlimit` from the tracer, and one batch of injected
//! syscalls per thread for what only the process itself can report
//! (sigactions, sigaltstack, `clear_child_tid`, current break).

use crate::inject::{find_syscall_instruction, Injection};
use crate::procfs::fd::{self, FdKind};
use crate::procfs::maps::{self, Vma};
use crate::procfs::stat::MmFields;
use crate::procfs::{self, auxv, status};
use crate::sys::{mem, misc, ptrace};
use crate::thread::{capture_thread, PendingSignal, SigAltStack, ThreadState};
use crate::{Error, FrozenProcess};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tracing::debug;

const SYS_MMAP: i64 = 9;
const SYS_MUNMAP: i64 = 11;
const SYS_BRK: i64 = 12;
const SYS_RT_SIGACTION: i64 = 13;
const SYS_SIGALTSTACK: i64 = 131;
const SYS_PRCTL: i64 = 157;
const PR_GET_TID_ADDRESS: u64 = 40;

/// Bytes of scratch memory per thread: `stack_t` (24) + tid address (8).
const THREAD_SLOT: u64 = 32;
/// Bytes per kernel `struct sigaction`: handler, flags, restorer, mask.
const SIGACTION_SIZE: u64 = 32;
const NSIG: u64 = 64;

/// What a signal does when delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    Default,
    Ignore,
    Handler,
}

/// One entry of the signal action table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    pub signo: i32,
    pub disposition: Disposition,
    /// `sa_handler` (0 = SIG_DFL, 1 = SIG_IGN, else the handler address).
    pub handler: u64,
    /// `SA_*` flags. Only read from the process for caught signals and
    /// SIGCHLD; 0 otherwise.
    pub flags: u64,
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

/// One resource limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: u32,
    pub name: String,
    /// `u64::MAX` = unlimited.
    pub soft: u64,
    pub hard: u64,
}

/// One open file descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdState {
    pub fd: i32,
    /// Target of `/proc/PID/fd/N`.
    pub target: String,
    pub kind: FdKind,
    pub pos: u64,
    /// `O_*` flags.
    pub flags: u32,
    pub mnt_id: Option<u64>,
    pub ino: Option<u64>,
}

/// Everything captured about a frozen process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub comm: String,
    /// Target of `/proc/PID/exe`.
    pub exe: String,
    pub cwd: String,
    pub root: String,
    pub umask: u32,
    pub personality: u64,
    pub threads: Vec<ThreadState>,
    pub vmas: Vec<Vma>,
    pub mm: MmFields,
    /// Auxiliary vector as `(type, value)`.
    pub auxv: Vec<(u64, u64)>,
    /// Signals 1..=64, in order.
    pub sigactions: Vec<SigAction>,
    pub rlimits: Vec<Rlimit>,
    pub fds: Vec<FdState>,
    /// Signals queued for the whole process.
    pub shared_pending_signals: Vec<PendingSignal>,
}

const RLIMIT_NAMES: [&str; 16] = [
    "cpu",
    "fsize",
    "data",
    "stack",
    "core",
    "rss",
    "nproc",
    "nofile",
    "memlock",
    "as",
    "locks",
    "sigpending",
    "msgqueue",
    "nice",
    "rtprio",
    "rttime",
];

fn bit(mask: u64, sig: u64) -> bool {
    mask & (1 << (sig - 1)) != 0
}

/// Signals whose full action must be read from inside: caught ones, and
/// SIGCHLD (its SA_NOCLDSTOP/SA_NOCLDWAIT flags matter even without a handler).
fn signals_to_query(sig_cgt: u64) -> Vec<u64> {
    (1..=NSIG)
        .filter(|&s| bit(sig_cgt, s) || s == libc::SIGCHLD as u64)
        .collect()
}

/// Builds the table of 64 sigactions from the status masks and the raw
/// `struct sigaction`s read for `queried` signals.
fn sigaction_table(sig_ign: u64, queried: &[(u64, [u64; 4])]) -> Vec<SigAction> {
    (1..=NSIG)
        .map(|s| {
            let found = queried.iter().find(|(q, _)| *q == s).map(|(_, a)| *a);
            let [handler, flags, restorer, mask] =
                found.unwrap_or([u64::from(bit(sig_ign, s)), 0, 0, 0]);
            SigAction {
                signo: s as i32,
                disposition: match handler {
                    0 => Disposition::Default,
                    1 => Disposition::Ignore,
                    _ => Disposition::Handler,
                },
                handler,
                flags,
                restorer,
                mask,
            }
        })
        .collect()
}

/// What the injected syscalls report, per thread and per process.
struct Injected {
    brk: u64,
    sigactions: Vec<(u64, [u64; 4])>,
    per_thread: Vec<(i32, SigAltStack, u64)>,
}

impl FrozenProcess {
    /// Captures the full state of the process. The process is left exactly
    /// as it was (scratch memory is mapped and unmapped again).
    pub fn capture(&mut self) -> Result<ProcessState, Error> {
        let t0 = Instant::now();
        let pid = self.pid();
        let status_path = format!("/proc/{pid}/status");
        let st = status::parse(&procfs::read_string(&status_path)?)
            .map_err(|d| Error::parse(&status_path, d))?;
        let stat_path = format!("/proc/{pid}/stat");
        let stat = procfs::stat::parse(&procfs::read_string(&stat_path)?)
            .map_err(|d| Error::parse(&stat_path, d))?;
        let smaps_path = format!("/proc/{pid}/smaps");
        let mut vmas = maps::parse_smaps(&procfs::read_string(&smaps_path)?)
            .map_err(|d| Error::parse(&smaps_path, d))?;
        if self.syscall_insn.is_none() {
            self.syscall_insn = Some(find_syscall_instruction(pid, &vmas)?);
        }

        let injected = self.inject_queries(st.sig_cgt)?;

        let mut threads = Vec::with_capacity(self.threads.len());
        for tid in self.tids() {
            let mut t = capture_thread(pid, tid)?;
            if let Some((_, alt, ctid)) = injected.per_thread.iter().find(|(x, ..)| *x == tid) {
                t.sigaltstack = Some(*alt);
                t.clear_child_tid = Some(*ctid);
            }
            threads.push(t);
        }

        crate::pagemap::fill(pid, &mut vmas)?;
        let mut mm = stat.mm.clone();
        mm.brk = injected.brk;

        let state = ProcessState {
            pid,
            ppid: stat.ppid,
            pgid: stat.pgrp,
            sid: stat.session,
            comm: stat.comm.clone(),
            exe: procfs::read_link(&format!("/proc/{pid}/exe")).unwrap_or_default(),
            cwd: procfs::read_link(&format!("/proc/{pid}/cwd"))?,
            root: procfs::read_link(&format!("/proc/{pid}/root"))?,
            umask: st.umask.unwrap_or(0o022),
            personality: read_personality(pid)?,
            threads,
            vmas,
            mm,
            auxv: auxv::parse(&procfs::read_bytes(&format!("/proc/{pid}/auxv"))?),
            sigactions: sigaction_table(st.sig_ign, &injected.sigactions),
            rlimits: read_rlimits(pid)?,
            fds: read_fds(pid)?,
            shared_pending_signals: self.shared_pending()?,
        };
        debug!(pid, us = t0.elapsed().as_micros() as u64, "captured");
        Ok(state)
    }

    fn shared_pending(&self) -> Result<Vec<PendingSignal>, Error> {
        let Some(&tid) = self.threads.keys().next() else {
            return Ok(Vec::new());
        };
        Ok(ptrace::peek_siginfo(tid, true)
            .map_err(|e| Error::ptrace("PEEKSIGINFO", tid, e))?
            .iter()
            .map(PendingSignal::from_raw)
            .collect())
    }

    /// One injection session per thread. The first thread's session maps
    /// the scratch page(s), stays open while the others run, reads the
    /// results and unmaps it again.
    fn inject_queries(&mut self, sig_cgt: u64) -> Result<Injected, Error> {
        let pid = self.pid();
        let tids = self.tids();
        let Some(&main) = tids.iter().find(|&&t| t == pid).or(tids.first()) else {
            return Err(Error::ProcessExited { pid });
        };
        let signals = signals_to_query(sig_cgt);
        let threads_bytes = THREAD_SLOT * tids.len() as u64;
        let size = (threads_bytes + SIGACTION_SIZE * NSIG).div_ceil(4096) * 4096;

        let mut s = self.begin_injection(main)?;
        let scratch = s.syscall_ok(
            SYS_MMAP,
            [
                0,
                size,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        let result = self.queries_with_scratch(&mut s, &tids, &signals, scratch, size);
        let unmapped = s.syscall_ok(SYS_MUNMAP, [scratch, size, 0, 0, 0, 0]);
        let finished = s.finish();
        let out = result?;
        unmapped?;
        finished?;
        Ok(out)
    }

    fn queries_with_scratch(
        &mut self,
        main: &mut Injection,
        tids: &[i32],
        signals: &[u64],
        scratch: u64,
        size: u64,
    ) -> Result<Injected, Error> {
        let pid = self.pid();
        let sigact_base = scratch + THREAD_SLOT * tids.len() as u64;
        let brk = main.syscall_ok(SYS_BRK, [0; 6])?;
        for &sig in signals {
            main.syscall_ok(
                SYS_RT_SIGACTION,
                [sig, 0, sigact_base + (sig - 1) * SIGACTION_SIZE, 8, 0, 0],
            )?;
        }
        for (i, &tid) in tids.iter().enumerate() {
            let slot = scratch + THREAD_SLOT * i as u64;
            let per_thread = |s: &mut Injection| -> Result<(), Error> {
                s.syscall_ok(SYS_SIGALTSTACK, [0, slot, 0, 0, 0, 0])?;
                s.syscall_ok(SYS_PRCTL, [PR_GET_TID_ADDRESS, slot + 24, 0, 0, 0, 0])?;
                Ok(())
            };
            if tid == main.tid() {
                per_thread(main)?;
            } else {
                let mut s = self.begin_injection(tid)?;
                let r = per_thread(&mut s);
                s.finish()?;
                r?;
            }
        }
        let bytes = mem::read_exact(pid, scratch, size as usize).map_err(|e| Error::Memory {
            pid,
            addr: scratch,
            len: size as usize,
            source: e,
        })?;
        let u64_at = |o: u64| -> u64 {
            let o = o as usize;
            bytes
                .get(o..o + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_ne_bytes)
        };
        let per_thread = tids
            .iter()
            .enumerate()
            .map(|(i, &tid)| {
                let off = THREAD_SLOT as usize * i;
                let alt = SigAltStack::from_bytes(&bytes[off..off + 24]).unwrap_or_default();
                (tid, alt, u64_at(off as u64 + 24))
            })
            .collect();
        let sigactions = signals
            .iter()
            .map(|&sig| {
                let o = sigact_base - scratch + (sig - 1) * SIGACTION_SIZE;
                (
                    sig,
                    [u64_at(o), u64_at(o + 8), u64_at(o + 16), u64_at(o + 24)],
                )
            })
            .collect();
        Ok(Injected {
            brk,
            sigactions,
            per_thread,
        })
    }
}

fn read_personality(pid: i32) -> Result<u64, Error> {
    let path = format!("/proc/{pid}/personality");
    let text = procfs::read_string(&path)?;
    u64::from_str_radix(text.trim(), 16).map_err(|_| Error::parse(path, format!("{text:?}")))
}

fn read_rlimits(pid: i32) -> Result<Vec<Rlimit>, Error> {
    RLIMIT_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (soft, hard) = misc::prlimit(pid, i as u32).map_err(|e| Error::Os {
                what: "prlimit",
                pid,
                source: e,
            })?;
            Ok(Rlimit {
                resource: i as u32,
                name: (*name).to_owned(),
                soft,
                hard,
            })
        })
        .collect()
}

fn read_fds(pid: i32) -> Result<Vec<FdState>, Error> {
    let dir = format!("/proc/{pid}/fd");
    let fds = procfs::list_numeric(&dir).map_err(|e| Error::proc(&dir, e))?;
    let mut out = Vec::with_capacity(fds.len());
    for n in fds {
        let link = format!("{dir}/{n}");
        // An fd closed meanwhile (by a thread we do not control) is skipped.
        let Ok(target) = procfs::read_link(&link) else {
            continue;
        };
        let info_path = format!("/proc/{pid}/fdinfo/{n}");
        let Ok(text) = procfs::read_string(&info_path) else {
            continue;
        };
        let info = fd::parse_fdinfo(&text).map_err(|d| Error::parse(&info_path, d))?;
        let is_dir = target.starts_with('/')
            && !target.starts_with("/dev/")
            && std::fs::metadata(&link).is_ok_and(|m| m.is_dir());
        out.push(FdState {
            fd: n,
            kind: fd::classify(&target, is_dir),
            target,
            pos: info.pos,
            flags: info.flags,
            mnt_id: info.mnt_id,
            ino: info.ino,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_signals_are_queried() {
        // SIGUSR1 (10) and SIGTERM (15) caught; SIGCHLD (17) always.
        let cgt = (1 << 9) | (1 << 14);
        assert_eq!(signals_to_query(cgt), vec![10, 15, 17]);
        assert_eq!(signals_to_query(0), vec![17]);
        assert_eq!(signals_to_query(1 << 63), vec![17, 64]);
    }

    #[test]
    fn builds_table() {
        let ign = 1 << 12; // SIGPIPE
        let t = sigaction_table(
            ign,
            &[(10, [0x4000, 0x1c000000, 0x5000, 0xff]), (17, [0, 1, 0, 0])],
        );
        assert_eq!(t.len(), 64);
        assert_eq!(t[0].signo, 1);
        assert_eq!(t[63].signo, 64);
        assert_eq!(t[12].disposition, Disposition::Ignore);
        assert_eq!(t[12].handler, 1);
        assert_eq!(t[9].disposition, Disposition::Handler);
        assert_eq!(
            (t[9].handler, t[9].flags, t[9].restorer, t[9].mask),
            (0x4000, 0x1c000000, 0x5000, 0xff)
        );
        assert_eq!(t[16].disposition, Disposition::Default);
        assert_eq!(t[16].flags, 1);
        assert_eq!(t[1].disposition, Disposition::Default);
    }
}

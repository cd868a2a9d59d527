//! Whole-process state ([`ProcessState`]) and [`FrozenProcess::capture`]:
//! `/proc` files, `prlimit` from the tracer, and one batch of injected
//! syscalls per thread for what only the process itself can report
//! (sigactions, sigaltstack, `clear_child_tid`, current break, interval
//! timers).

use crate::inject::{find_syscall_instruction, Injection};
use crate::procfs::fd::{self, FdKind};
use crate::procfs::maps::{self, Backing, Vma};
use crate::procfs::stat::MmFields;
use crate::procfs::{self, auxv, status};
use crate::sys::itimer::{self, ITIMERVAL_SIZE};
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
/// Bytes of the main thread's scratch for the interval timers.
const ITIMERS_SIZE: u64 = ITIMERVAL_SIZE as u64 * itimer::WHICH.len() as u64;
/// Main thread's scratch beyond [`THREAD_SLOT`]: sigactions, then timers.
const MAIN_EXTRA: u64 = SIGACTION_SIZE * NSIG + ITIMERS_SIZE;

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

/// One armed interval timer (`setitimer(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Itimer {
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL` or `ITIMER_PROF`.
    pub which: i32,
    pub interval_us: u64,
    /// Time left until it next fires.
    pub value_us: u64,
}

impl Itimer {
    /// A periodic `ITIMER_REAL` that has fired and waits for its SIGALRM to
    /// be dequeued, which re-arms it (`getitimer` reports a zero value
    /// meanwhile, e.g. when it fired while the process was frozen).
    pub fn pending_rearm(&self) -> bool {
        self.which == libc::ITIMER_REAL && self.value_us == 0 && self.interval_us != 0
    }

    /// Whether it will fire again (else it is disarmed and not kept).
    fn live(&self) -> bool {
        self.value_us != 0 || self.pending_rearm()
    }
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
    /// Interval timers that will fire (see [`Itimer::pending_rearm`]).
    #[serde(default)]
    pub itimers: Vec<Itimer>,
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

/// Signals whose full action must be read from inside: the caught ones.
/// (For SIG_DFL/SIG_IGN the flags are reported as 0.)
fn signals_to_query(sig_cgt: u64) -> Vec<u64> {
    (1..=NSIG).filter(|&s| bit(sig_cgt, s)).collect()
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
    itimers: Vec<Itimer>,
}

/// Which mappings [`FrozenProcess::capture_with`] scans for populated pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageScan {
    /// Every mapping (cost grows with resident memory: ~10 ms per GiB).
    All,
    /// File mappings only (their written pages); anonymous mappings are
    /// left with empty `populated`, to be scanned later with
    /// [`scan_populated`] — a migration does that after the process runs
    /// again, so its downtime does not grow with memory.
    FileMappings,
}

/// Fills `present_pages`, `swapped_pages` and `populated` of `vmas` of
/// process `pid` (e.g. a frozen copy, after the fact).
pub fn scan_populated(pid: i32, vmas: &mut [Vma]) -> Result<(), Error> {
    crate::pagemap::fill(pid, vmas)
}

impl FrozenProcess {
    /// Captures the full state of the process. The process is left exactly
    /// as it was (scratch memory is mapped and unmapped again).
    pub fn capture(&mut self) -> Result<ProcessState, Error> {
        self.capture_with(PageScan::All)
    }

    /// [`FrozenProcess::capture`], scanning only the mappings `scan` says.
    pub fn capture_with(&mut self, scan: PageScan) -> Result<ProcessState, Error> {
        let t0 = Instant::now();
        let pid = self.pid();
        let status_path = format!("/proc/{pid}/status");
        let st = procfs::with_text(&status_path, status::parse)?
            .map_err(|d| Error::parse(&status_path, d))?;
        let stat_path = format!("/proc/{pid}/stat");
        let stat = procfs::with_text(&stat_path, procfs::stat::parse)?
            .map_err(|d| Error::parse(&stat_path, d))?;
        // `maps`, not `smaps`: smaps walks every page table entry to count
        // RSS (11 ms per GiB here), which would make the freeze time grow
        // with memory. The flags restore needs are derived instead.
        let maps_path = format!("/proc/{pid}/maps");
        let mut vmas = procfs::with_text(&maps_path, maps::parse_maps)?
            .map_err(|d| Error::parse(&maps_path, d))?;
        for v in &mut vmas {
            v.vm_flags = maps::derived_flags(v);
        }
        self.injection_mode
            .get_or_insert(crate::inject::mode_for(st.sig_ign));
        if self.syscall_insn.is_none() {
            self.syscall_insn = Some(find_syscall_instruction(pid, &vmas)?);
        }

        let injected = self.inject_queries(&vmas, st.sig_cgt)?;

        let mut threads = Vec::with_capacity(self.threads.len());
        for tid in self.tids() {
            let mut t = capture_thread(pid, tid)?;
            if let Some((_, alt, ctid)) = injected.per_thread.iter().find(|(x, ..)| *x == tid) {
                t.sigaltstack = Some(*alt);
                t.clear_child_tid = Some(*ctid);
            }
            threads.push(t);
        }

        match scan {
            PageScan::All => crate::pagemap::fill(pid, &mut vmas)?,
            PageScan::FileMappings => {
                // One small scan per file mapping: a scan spanning from the
                // first to the last would cross the heap.
                for v in vmas.iter_mut().filter(|v| v.backing == Backing::File) {
                    crate::pagemap::fill(pid, std::slice::from_mut(v))?;
                }
            }
        }
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
            auxv: procfs::with_bytes(&format!("/proc/{pid}/auxv"), auxv::parse)?,
            sigactions: sigaction_table(st.sig_ign, &injected.sigactions),
            rlimits: read_rlimits(pid)?,
            fds: read_fds(pid)?,
            shared_pending_signals: self.shared_pending()?,
            itimers: injected.itimers,
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

    /// Runs the injected queries: one session per thread, all open at
    /// once, the calls of each round started in every thread before any is
    /// completed so the threads run them concurrently. Results are written
    /// by the kernel into scratch memory: just below each thread's stack red
    /// zone (saved first and put back after), or, when a stack pointer does
    /// not point into writable memory with room, one anonymous mapping made
    /// and removed by injection.
    fn inject_queries(&mut self, vmas: &[Vma], sig_cgt: u64) -> Result<Injected, Error> {
        let pid = self.pid();
        let tids = self.tids();
        let Some(main) =
            tids.iter()
                .position(|&t| t == pid)
                .or(if tids.is_empty() { None } else { Some(0) })
        else {
            return Err(Error::ProcessExited { pid });
        };
        let signals = signals_to_query(sig_cgt);
        let mut sessions = Vec::with_capacity(tids.len());
        for &tid in &tids {
            sessions.push(self.begin_injection(tid)?);
        }
        let sizes: Vec<u64> = (0..tids.len())
            .map(|i| THREAD_SLOT + if i == main { MAIN_EXTRA } else { 0 })
            .collect();
        let on_stack: Option<Vec<u64>> = sessions
            .iter()
            .zip(&sizes)
            .map(|(s, &len)| stack_scratch(s.saved_regs().rsp, len, vmas))
            .collect();
        let result = match on_stack {
            Some(slots) => {
                let ranges: Vec<(u64, usize)> = slots
                    .iter()
                    .zip(&sizes)
                    .map(|(&a, &l)| (a, l as usize))
                    .collect();
                let saved =
                    mem::read_vectored(pid, &ranges).map_err(|e| mem_err(pid, &ranges, e))?;
                let r = run_queries(pid, &mut sessions, main, &slots, &sizes, &signals);
                let put_back: Vec<(u64, &[u8])> = slots
                    .iter()
                    .zip(&saved)
                    .map(|(&a, d)| (a, d.as_slice()))
                    .collect();
                let w = mem::write_vectored(pid, &put_back).map_err(|e| mem_err(pid, &ranges, e));
                r.and_then(|r| w.map(|()| r))
            }
            None => {
                debug!(pid, "a stack has no room for scratch; mapping a page");
                let total: u64 = sizes.iter().sum::<u64>().div_ceil(4096) * 4096;
                let base = sessions[main].syscall_ok(
                    SYS_MMAP,
                    [
                        0,
                        total,
                        (libc::PROT_READ | libc::PROT_WRITE) as u64,
                        (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                        u64::MAX,
                        0,
                    ],
                )?;
                let slots: Vec<u64> = sizes
                    .iter()
                    .scan(base, |next, &len| {
                        let a = *next;
                        *next += len;
                        Some(a)
                    })
                    .collect();
                let r = run_queries(pid, &mut sessions, main, &slots, &sizes, &signals);
                let u = sessions[main].syscall_ok(SYS_MUNMAP, [base, total, 0, 0, 0, 0]);
                r.and_then(|r| u.map(|_| r))
            }
        };
        // Return every thread to its interrupt stop, concurrently.
        let mut first_err = None;
        let mut restarted = Vec::with_capacity(sessions.len());
        for mut s in sessions {
            match s.start_finish() {
                Ok(()) => restarted.push(s),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for s in restarted {
            if let Err(e) = s.complete_finish() {
                first_err.get_or_insert(e);
            }
        }
        let out = result?;
        first_err.map_or(Ok(out), Err)
    }
}

fn mem_err(pid: i32, ranges: &[(u64, usize)], source: std::io::Error) -> Error {
    Error::Memory {
        pid,
        addr: ranges.first().map_or(0, |r| r.0),
        len: ranges.iter().map(|r| r.1).sum(),
        source,
    }
}

/// Bytes kept free below the stack pointer (the x86-64 ABI red zone).
const RED_ZONE: u64 = 128;

/// A `len`-byte scratch area just below the red zone of a thread whose
/// stack pointer is `rsp`, if that lies in a private writable mapping.
fn stack_scratch(rsp: u64, len: u64, vmas: &[Vma]) -> Option<u64> {
    let addr = rsp.checked_sub(RED_ZONE + len)? & !63;
    vmas.iter()
        .find(|v| v.start <= addr && rsp <= v.end)
        .filter(|v| v.readable() && v.writable() && !v.shared())
        .map(|_| addr)
}

/// Runs the queries in rounds; every thread gets `sigaltstack` and
/// `PR_GET_TID_ADDRESS`, the main thread also `brk(0)`, the sigactions and
/// `getitimer`.
fn run_queries(
    pid: i32,
    sessions: &mut [Injection],
    main: usize,
    slots: &[u64],
    sizes: &[u64],
    signals: &[u64],
) -> Result<Injected, Error> {
    let calls: Vec<Vec<(i64, [u64; 6])>> = slots
        .iter()
        .enumerate()
        .map(|(i, &slot)| {
            let mut c = vec![
                (SYS_SIGALTSTACK, [0, slot, 0, 0, 0, 0]),
                (SYS_PRCTL, [PR_GET_TID_ADDRESS, slot + 24, 0, 0, 0, 0]),
            ];
            if i == main {
                c.push((SYS_BRK, [0; 6]));
                for &sig in signals {
                    let at = slot + THREAD_SLOT + (sig - 1) * SIGACTION_SIZE;
                    c.push((SYS_RT_SIGACTION, [sig, 0, at, 8, 0, 0]));
                }
                for (k, &which) in itimer::WHICH.iter().enumerate() {
                    c.push(itimer::getitimer(which, slot + itimer_offset(k)));
                }
            }
            c
        })
        .collect();
    let rounds = calls.iter().map(Vec::len).max().unwrap_or(0);
    let mut brk = 0;
    for round in 0..rounds {
        let active: Vec<usize> = (0..sessions.len())
            .filter(|&i| calls[i].len() > round)
            .collect();
        for &i in &active {
            let (nr, args) = calls[i][round];
            sessions[i].start_syscall(nr, args)?;
        }
        let mut first_err = None;
        for &i in &active {
            // Complete every started call even after an error.
            match sessions[i].complete_syscall_ok() {
                Ok(v) if calls[i][round].0 == SYS_BRK => brk = v,
                Ok(_) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    let ranges: Vec<(u64, usize)> = slots
        .iter()
        .zip(sizes)
        .map(|(&a, &l)| (a, l as usize))
        .collect();
    let bytes = mem::read_vectored(pid, &ranges).map_err(|e| mem_err(pid, &ranges, e))?;
    let u64_at = |b: &[u8], o: u64| -> u64 {
        let o = o as usize;
        b.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes)
    };
    let per_thread = sessions
        .iter()
        .zip(&bytes)
        .map(|(s, b)| {
            let alt = SigAltStack::from_bytes(&b[..24]).unwrap_or_default();
            (s.tid(), alt, u64_at(b, 24))
        })
        .collect();
    let m = &bytes[main];
    let sigactions = signals
        .iter()
        .map(|&sig| {
            let o = THREAD_SLOT + (sig - 1) * SIGACTION_SIZE;
            (
                sig,
                [
                    u64_at(m, o),
                    u64_at(m, o + 8),
                    u64_at(m, o + 16),
                    u64_at(m, o + 24),
                ],
            )
        })
        .collect();
    let itimers = itimer::WHICH
        .iter()
        .enumerate()
        .filter_map(|(k, &which)| {
            let o = itimer_offset(k) as usize;
            let b: &[u8; ITIMERVAL_SIZE] = m.get(o..o + ITIMERVAL_SIZE)?.try_into().ok()?;
            let (interval_us, value_us) = itimer::decode(b);
            let t = Itimer {
                which,
                interval_us,
                value_us,
            };
            t.live().then_some(t)
        })
        .collect();
    Ok(Injected {
        brk,
        sigactions,
        per_thread,
        itimers,
    })
}

/// Offset of the `k`th timer in the main thread's scratch.
fn itimer_offset(k: usize) -> u64 {
    THREAD_SLOT + SIGACTION_SIZE * NSIG + k as u64 * ITIMERVAL_SIZE as u64
}

fn read_personality(pid: i32) -> Result<u64, Error> {
    let path = format!("/proc/{pid}/personality");
    procfs::with_text(&path, |t| {
        u64::from_str_radix(t.trim(), 16).map_err(|_| format!("{t:?}"))
    })?
    .map_err(|d| Error::parse(path, d))
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

/// The open file descriptors of `pid` (no freeze needed; a racing close
/// just drops one from the list).
pub fn read_fds(pid: i32) -> Result<Vec<FdState>, Error> {
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
        let Ok(info) = procfs::with_text(&info_path, fd::parse_fdinfo) else {
            continue;
        };
        let info = info.map_err(|d| Error::parse(&info_path, d))?;
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
        assert_eq!(signals_to_query(cgt), vec![10, 15]);
        assert!(signals_to_query(0).is_empty());
        assert_eq!(signals_to_query((1 << 63) | (1 << 16)), vec![17, 64]);
    }

    #[test]
    fn expired_periodic_real_timer_is_kept() {
        let t = |which, interval_us, value_us| Itimer {
            which,
            interval_us,
            value_us,
        };
        assert!(t(libc::ITIMER_REAL, 50_000, 0).pending_rearm());
        assert!(t(libc::ITIMER_REAL, 50_000, 0).live());
        assert!(!t(libc::ITIMER_REAL, 0, 0).live());
        assert!(!t(libc::ITIMER_VIRTUAL, 50_000, 0).live());
        assert!(t(libc::ITIMER_PROF, 0, 10).live());
        assert!(!t(libc::ITIMER_REAL, 50_000, 7).pending_rearm());
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

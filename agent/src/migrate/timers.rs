//! Interval timers (`setitimer(2)`: real, virtual, profiling) are kernel
//! state the capture does not include: they are read from the frozen
//! process with injected `getitimer` calls and armed again in the restored
//! worker with `setitimer`, through a scratch page mapped for the purpose
//! and unmapped afterwards. Injections block every signal, so a timer that
//! expires meanwhile only leaves its signal pending.

use popcorn_checkpoint::{read_memory, write_memory, FrozenProcess};
use serde::{Deserialize, Serialize};

const SYS_MMAP: i64 = 9;
const SYS_MUNMAP: i64 = 11;
const SYS_GETITIMER: i64 = 36;
const SYS_SETITIMER: i64 = 38;
const PAGE: u64 = 4096;
/// `struct itimerval`: interval then value, each `{tv_sec, tv_usec}`.
const ITIMERVAL_SIZE: usize = 32;

/// One armed interval timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Itimer {
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL` or `ITIMER_PROF`.
    pub which: i32,
    pub interval_us: u64,
    pub value_us: u64,
}

fn to_us(sec: u64, usec: u64) -> u64 {
    sec.saturating_mul(1_000_000).saturating_add(usec)
}

/// Runs `f` with the address of a fresh private page in `p` (injected
/// into its main thread), unmapped afterwards.
fn with_scratch<T>(
    p: &mut FrozenProcess,
    f: impl FnOnce(&mut FrozenProcess, u64) -> Result<T, String>,
) -> Result<T, String> {
    let tid = p.pid();
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let addr = p
        .inject_syscall(tid, SYS_MMAP, [0, PAGE, prot, flags, u64::MAX, 0])
        .map_err(|e| e.to_string())?;
    if addr < 0 {
        return Err(format!(
            "mapping a scratch page in process {tid}: {}",
            std::io::Error::from_raw_os_error(-addr as i32)
        ));
    }
    let addr = addr as u64;
    let r = f(p, addr);
    match p.inject_syscall(tid, SYS_MUNMAP, [addr, PAGE, 0, 0, 0, 0]) {
        Ok(0) => r,
        Ok(e) => Err(format!(
            "unmapping the scratch page of process {tid}: {}",
            std::io::Error::from_raw_os_error(-e as i32)
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The armed interval timers of a frozen process.
pub fn read(p: &mut FrozenProcess) -> Result<Vec<Itimer>, String> {
    with_scratch(p, |p, at| {
        let tid = p.pid();
        let mut out = Vec::new();
        for which in [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF] {
            let r = p
                .inject_syscall(tid, SYS_GETITIMER, [which as u64, at, 0, 0, 0, 0])
                .map_err(|e| e.to_string())?;
            if r < 0 {
                return Err(format!(
                    "getitimer({which}) in process {tid}: {}",
                    std::io::Error::from_raw_os_error(-r as i32)
                ));
            }
            let mut buf = [0u8; ITIMERVAL_SIZE];
            let n = read_memory(tid, at, &mut buf)
                .map_err(|e| format!("reading the timers of process {tid}: {e}"))?;
            if n != buf.len() {
                return Err(format!("reading the timers of process {tid}: short read"));
            }
            let w: Vec<u64> = buf
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
                .collect();
            let t = Itimer {
                which,
                interval_us: to_us(w[0], w[1]),
                value_us: to_us(w[2], w[3]),
            };
            // A zero value means disarmed.
            if t.value_us != 0 {
                out.push(t);
            }
        }
        Ok(out)
    })
}

/// Arms `timers` in a restored (stopped) process.
pub fn arm(p: &mut FrozenProcess, timers: &[Itimer]) -> Result<(), String> {
    if timers.is_empty() {
        return Ok(());
    }
    with_scratch(p, |p, at| {
        let tid = p.pid();
        for t in timers {
            let words = [
                t.interval_us / 1_000_000,
                t.interval_us % 1_000_000,
                t.value_us / 1_000_000,
                t.value_us % 1_000_000,
            ];
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            write_memory(tid, at, &bytes)
                .map_err(|e| format!("writing a timer into process {tid}: {e}"))?;
            let r = p
                .inject_syscall(tid, SYS_SETITIMER, [t.which as u64, at, 0, 0, 0, 0])
                .map_err(|e| e.to_string())?;
            if r < 0 {
                return Err(format!(
                    "setitimer({}) in process {tid}: {}",
                    t.which,
                    std::io::Error::from_raw_os_error(-r as i32)
                ));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microseconds() {
        assert_eq!(to_us(2, 500_000), 2_500_000);
        assert_eq!(to_us(u64::MAX, 1), u64::MAX);
    }
}

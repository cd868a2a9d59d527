//! `getitimer`/`setitimer` as injected into a traced process (the timers
//! are per process, so only the process itself can read or arm them): the
//! call numbers and arguments, and the `struct itimerval` bytes the kernel
//! reads or writes in the process's memory.

/// Bytes of `struct itimerval`: interval then value, each `{tv_sec, tv_usec}`.
pub const ITIMERVAL_SIZE: usize = 32;

/// `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`.
pub const WHICH: [i32; 3] = [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF];

const SYS_GETITIMER: i64 = 36;
const SYS_SETITIMER: i64 = 38;

/// `getitimer(which, at)`: the kernel writes an itimerval at `at`.
pub fn getitimer(which: i32, at: u64) -> (i64, [u64; 6]) {
    (SYS_GETITIMER, [which as u64, at, 0, 0, 0, 0])
}

/// `setitimer(which, at, NULL)`: the kernel reads an itimerval at `at`.
pub fn setitimer(which: i32, at: u64) -> (i64, [u64; 6]) {
    (SYS_SETITIMER, [which as u64, at, 0, 0, 0, 0])
}

/// `(interval_us, value_us)` of an itimerval.
pub fn decode(b: &[u8; ITIMERVAL_SIZE]) -> (u64, u64) {
    let w = |i: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[i * 8..i * 8 + 8]);
        u64::from_ne_bytes(x)
    };
    (to_us(w(0), w(1)), to_us(w(2), w(3)))
}

/// The itimerval for `interval_us` and `value_us`.
pub fn encode(interval_us: u64, value_us: u64) -> [u8; ITIMERVAL_SIZE] {
    let words = [
        interval_us / 1_000_000,
        interval_us % 1_000_000,
        value_us / 1_000_000,
        value_us % 1_000_000,
    ];
    let mut b = [0u8; ITIMERVAL_SIZE];
    for (chunk, w) in b.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    b
}

fn to_us(sec: u64, usec: u64) -> u64 {
    sec.saturating_mul(1_000_000).saturating_add(usec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itimerval_bytes() {
        assert_eq!(ITIMERVAL_SIZE, std::mem::size_of::<libc::itimerval>());
        assert_eq!(decode(&encode(50_000, 2_500_000)), (50_000, 2_500_000));
        let mut b = [0u8; ITIMERVAL_SIZE];
        b[16..24].copy_from_slice(&u64::MAX.to_ne_bytes());
        b[24..32].copy_from_slice(&1u64.to_ne_bytes());
        assert_eq!(decode(&b), (0, u64::MAX));
    }
}

//! Waiting for the next report of one traced thread: blocking or against a
//! deadline, and without stealing the exit status of a process whose real
//! parent is the caller (that status belongs to the caller's own `wait`).

use crate::sys::wait::{self, Event, Peek};
use std::io;
use std::time::{Duration, Instant};

/// Who we are relative to the traced process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tracer {
    /// Thread group id of the traced process.
    pub pid: i32,
    /// True when the calling process is also the traced process's real
    /// parent: the leader's exit status must then be left in place.
    pub parent: bool,
}

/// A wait that did not end in a report.
#[derive(Debug)]
pub(crate) enum WaitError {
    Timeout,
    Os(io::Error),
}

impl Tracer {
    /// Waits for the next report of `tid`, polling (yielding first, then
    /// sleeping). While waiting long, dead threads among `siblings` are
    /// collected: a killed process's leader reports its exit only after its
    /// other traced threads have been, so waiting on the leader alone could
    /// never end. With a deadline, gives up with [`WaitError::Timeout`].
    pub fn next_event(
        &self,
        tid: i32,
        siblings: &[i32],
        deadline: Option<Instant>,
    ) -> Result<Event, WaitError> {
        let mut round = 0u32;
        loop {
            if let Some(e) = self.poll(tid)? {
                return Ok(e);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(WaitError::Timeout);
            }
            if round >= 50 {
                self.reap_dead(siblings.iter().copied().filter(|&t| t != tid));
            }
            backoff(&mut round);
        }
    }

    /// Collects the exit of every thread in `tids` that is dead (never
    /// consuming a stop, nor the leader's status when it belongs to the
    /// caller as parent). Returns the ones collected.
    pub fn reap_dead(&self, tids: impl Iterator<Item = i32>) -> Vec<i32> {
        let mut out = Vec::new();
        for t in tids {
            if self.parent && t == self.pid {
                continue;
            }
            if let Ok(Some(Peek::Dead)) = wait::peek_exited(t) {
                if let Ok(Some(_)) = wait::waitpid(t, true) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// One non-blocking look at `tid`: its next report, if there is one.
    pub fn poll(&self, tid: i32) -> Result<Option<Event>, WaitError> {
        self.try_once(tid, true, self.parent && tid == self.pid)
    }

    fn try_once(&self, tid: i32, nohang: bool, keep: bool) -> Result<Option<Event>, WaitError> {
        let gone = |e: &io::Error| e.raw_os_error() == Some(libc::ECHILD);
        if keep {
            match wait::peek(tid, nohang) {
                Ok(None) => return Ok(None),
                Ok(Some(Peek::Dead)) => return Ok(Some(Event::Gone)),
                Ok(Some(Peek::Stopped)) => {}
                Err(e) if gone(&e) => return Ok(Some(Event::Gone)),
                Err(e) => return Err(WaitError::Os(e)),
            }
        }
        match wait::waitpid(tid, nohang) {
            Ok(None) => Ok(None),
            Ok(Some(status)) => Ok(Some(wait::decode(status))),
            Err(e) if gone(&e) => Ok(Some(Event::Gone)),
            Err(e) => Err(WaitError::Os(e)),
        }
    }
}

/// Pause between polls: yield at first, then sleep 20 us doubling to 160 us
/// (stops normally take microseconds; long sleeps would only add latency).
pub(crate) fn backoff(round: &mut u32) {
    *round += 1;
    if *round < 50 {
        std::thread::yield_now();
    } else {
        let us = 20u64 << (*round - 50).min(3);
        std::thread::sleep(Duration::from_micros(us));
    }
}

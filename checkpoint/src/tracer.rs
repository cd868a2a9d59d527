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
    /// Waits for the next report of `tid`. Without a deadline this blocks;
    /// with one it polls (yielding first, then sleeping) until the deadline.
    pub fn next_event(&self, tid: i32, deadline: Option<Instant>) -> Result<Event, WaitError> {
        let keep_leader_status = self.parent && tid == self.pid;
        let nohang = deadline.is_some();
        let mut round = 0u32;
        loop {
            if let Some(e) = self.try_once(tid, nohang, keep_leader_status)? {
                return Ok(e);
            }
            let Some(deadline) = deadline else {
                continue;
            };
            if Instant::now() >= deadline {
                return Err(WaitError::Timeout);
            }
            round += 1;
            if round < 50 {
                std::thread::yield_now();
            } else {
                let us = 20u64 << (round - 50).min(6);
                std::thread::sleep(Duration::from_micros(us));
            }
        }
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

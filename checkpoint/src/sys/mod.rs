//! Thin safe wrappers over the system calls this crate uses, one file per
//! family. No policy lives here: each function does one call and turns its
//! result into `io::Result`, or, for a call injected into the traced
//! process, builds its arguments and the bytes it exchanges.

pub mod itimer;
pub mod mem;
pub mod misc;
pub mod ptrace;
pub mod wait;

use std::io;

/// Turns a `-1 and errno` style return value into `io::Result`.
pub(crate) fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

//! Small syscalls made by the tracer itself: pidfds, `prlimit`,
//! `get_robust_list`, thread ids, signals.

use super::check;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The calling process's id.
pub fn getpid() -> i32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { libc::getpid() }
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers.
    check(unsafe { libc::kill(pid, signal) }.into()).map(drop)
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Duplicates file descriptor `fd` of the process behind `pidfd` into ours.
pub fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain integer arguments; `pidfd` stays open during the call.
    let r = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// `(soft, hard)` limit of `resource` for process `pid`.
pub fn prlimit(pid: i32, resource: u32) -> io::Result<(u64, u64)> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid out pointer; no new limit is passed.
    let r = unsafe {
        libc::prlimit64(
            pid,
            resource as libc::__rlimit_resource_t,
            std::ptr::null(),
            &mut old,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// `(head, len)` of the robust futex list of thread `tid`.
pub fn get_robust_list(tid: i32) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: both out pointers are valid for the duration of the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid,
            &mut head as *mut u64,
            &mut len as *mut libc::size_t,
        )
    })?;
    Ok((head, len as u64))
}

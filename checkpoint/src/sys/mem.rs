//! Reading another process's memory: `process_vm_readv(2)`, with
//! `/proc/PID/mem` as the fallback for mappings it refuses (e.g. `[vvar]`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Reads `buf.len()` bytes at `addr` in process `pid`; returns the count read.
pub fn read(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which is writable for its length;
    // `remote` is only interpreted in the target's address space.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n >= 0 {
        return Ok(n as usize);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Err(err);
    }
    // process_vm_readv refuses some special mappings; /proc/PID/mem does not.
    let f = File::open(format!("/proc/{pid}/mem"))?;
    f.read_at(buf, addr)
}

/// Reads exactly `len` bytes at `addr`.
pub fn read_exact(pid: i32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = read(pid, addr, &mut buf)?;
    if n != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short read: {n} of {len} bytes"),
        ));
    }
    Ok(buf)
}

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

/// Writes `data` at `addr` in process `pid` through `/proc/PID/mem`, which
/// (unlike `process_vm_writev`) also writes into read-only private mappings.
pub fn write_forced(pid: i32, addr: u64, data: &[u8]) -> io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))?;
    f.write_all_at(data, addr)
}

/// Reads several remote ranges with one `process_vm_readv`.
pub fn read_vectored(pid: i32, ranges: &[(u64, usize)]) -> io::Result<Vec<Vec<u8>>> {
    let mut bufs: Vec<Vec<u8>> = ranges.iter().map(|&(_, len)| vec![0u8; len]).collect();
    let total: usize = ranges.iter().map(|r| r.1).sum();
    for chunk in (0..ranges.len()).collect::<Vec<_>>().chunks(IOV_BATCH) {
        let local: Vec<libc::iovec> = chunk
            .iter()
            .map(|&i| libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: bufs[i].len(),
            })
            .collect();
        let remote = remote_iovecs(chunk.iter().map(|&i| ranges[i]));
        let want: usize = chunk.iter().map(|&i| ranges[i].1).sum();
        // SAFETY: every local iovec describes one of `bufs`, writable for its
        // length and alive for the call; remote iovecs are only interpreted
        // in the target's address space.
        let n = unsafe {
            libc::process_vm_readv(
                pid,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        check_transfer(n, want)?;
    }
    debug_assert_eq!(bufs.iter().map(Vec::len).sum::<usize>(), total);
    Ok(bufs)
}

/// Writes several remote ranges with one `process_vm_writev`.
pub fn write_vectored(pid: i32, ranges: &[(u64, &[u8])]) -> io::Result<()> {
    for chunk in ranges.chunks(IOV_BATCH) {
        let local: Vec<libc::iovec> = chunk
            .iter()
            .map(|(_, data)| libc::iovec {
                iov_base: data.as_ptr().cast_mut().cast(),
                iov_len: data.len(),
            })
            .collect();
        let remote = remote_iovecs(chunk.iter().map(|(a, d)| (*a, d.len())));
        let want: usize = chunk.iter().map(|(_, d)| d.len()).sum();
        // SAFETY: local iovecs describe the caller's slices, which the kernel
        // only reads; remote iovecs are only interpreted in the target.
        let n = unsafe {
            libc::process_vm_writev(
                pid,
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        check_transfer(n, want)?;
    }
    Ok(())
}

/// `process_vm_*` accept at most IOV_MAX (1024) iovecs per call.
const IOV_BATCH: usize = 1024;

fn remote_iovecs(ranges: impl Iterator<Item = (u64, usize)>) -> Vec<libc::iovec> {
    ranges
        .map(|(addr, len)| libc::iovec {
            iov_base: addr as usize as *mut libc::c_void,
            iov_len: len,
        })
        .collect()
}

fn check_transfer(n: isize, want: usize) -> io::Result<()> {
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != want {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("partial transfer: {n} of {want} bytes"),
        ));
    }
    Ok(())
}

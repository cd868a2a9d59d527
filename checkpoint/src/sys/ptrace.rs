//! `ptrace(2)` requests, each as a safe function over a thread id.

use super::check;
use serde::{Deserialize, Serialize};
use std::io;
use std::mem::size_of;

pub const PTRACE_GETEVENTMSG: u32 = 0x4201;
pub const PTRACE_GETREGSET: u32 = 0x4204;
pub const PTRACE_SETREGSET: u32 = 0x4205;
pub const PTRACE_SEIZE: u32 = 0x4206;
pub const PTRACE_INTERRUPT: u32 = 0x4207;
pub const PTRACE_PEEKSIGINFO: u32 = 0x4209;
pub const PTRACE_GETSIGMASK: u32 = 0x420a;
pub const PTRACE_SETSIGMASK: u32 = 0x420b;
pub const PTRACE_GET_RSEQ_CONFIGURATION: u32 = 0x420f;
pub const PTRACE_CONT: u32 = 7;
pub const PTRACE_SINGLESTEP: u32 = 9;
pub const PTRACE_DETACH: u32 = 17;
pub const PTRACE_SYSCALL: u32 = 24;

pub const PTRACE_O_TRACESYSGOOD: u64 = 0x1;
pub const PTRACE_O_TRACECLONE: u64 = 0x8;
pub const PTRACE_O_EXITKILL: u64 = 0x10_0000;

pub const PTRACE_EVENT_CLONE: i32 = 3;
pub const PTRACE_EVENT_STOP: i32 = 128;

pub const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;

pub const NT_PRSTATUS: usize = 1;
/// Not in every libc: the x86 XSAVE area regset.
pub const NT_X86_XSTATE: usize = 0x202;

/// Largest XSAVE area we accept (the kernel trims the iovec to the real size).
const XSTATE_MAX: usize = 16 * 1024;

/// Calls `ptrace(req, tid, addr, data)`.
fn raw(req: u32, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: ptrace with these requests reads or writes at most the buffers
    // that the callers below pass as `addr`/`data`, which are valid and
    // sized for the request; integer arguments carry no memory.
    check(unsafe { libc::ptrace(req, tid, addr, data) })
}

pub fn seize(tid: i32, options: u64) -> io::Result<()> {
    raw(PTRACE_SEIZE, tid, 0, options as usize).map(drop)
}

/// `PTRACE_SETOPTIONS`.
pub fn set_options(tid: i32, options: u64) -> io::Result<()> {
    raw(libc::PTRACE_SETOPTIONS, tid, 0, options as usize).map(drop)
}

pub fn interrupt(tid: i32) -> io::Result<()> {
    raw(PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// Resumes a stopped tracee, delivering `sig` (0 = none).
pub fn cont(tid: i32, sig: i32) -> io::Result<()> {
    raw(PTRACE_CONT, tid, 0, sig as usize).map(drop)
}

/// Resumes a stopped tracee until the next syscall entry or exit.
pub fn syscall(tid: i32, sig: i32) -> io::Result<()> {
    raw(PTRACE_SYSCALL, tid, 0, sig as usize).map(drop)
}

/// Resumes a stopped tracee for one instruction.
pub fn singlestep(tid: i32, sig: i32) -> io::Result<()> {
    raw(PTRACE_SINGLESTEP, tid, 0, sig as usize).map(drop)
}

pub fn detach(tid: i32, sig: i32) -> io::Result<()> {
    raw(PTRACE_DETACH, tid, 0, sig as usize).map(drop)
}

pub fn event_msg(tid: i32) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    raw(PTRACE_GETEVENTMSG, tid, 0, &mut msg as *mut _ as usize)?;
    Ok(msg)
}

/// Reads a register set into `buf`; returns the number of bytes the kernel filled.
fn get_regset(tid: i32, note: usize, buf: *mut u8, len: usize) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    };
    raw(PTRACE_GETREGSET, tid, note, &mut iov as *mut _ as usize)?;
    Ok(iov.iov_len)
}

pub fn get_regs(tid: i32) -> io::Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    let n = get_regset(
        tid,
        NT_PRSTATUS,
        (&mut regs as *mut libc::user_regs_struct).cast(),
        size_of::<libc::user_regs_struct>(),
    )?;
    if n != size_of::<libc::user_regs_struct>() {
        return Err(io::Error::other(format!(
            "NT_PRSTATUS returned {n} bytes, expected {}",
            size_of::<libc::user_regs_struct>()
        )));
    }
    Ok(regs)
}

pub fn set_regs(tid: i32, regs: &libc::user_regs_struct) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: (regs as *const libc::user_regs_struct).cast_mut().cast(),
        iov_len: size_of::<libc::user_regs_struct>(),
    };
    // The kernel only reads through the iovec for SETREGSET.
    raw(
        PTRACE_SETREGSET,
        tid,
        NT_PRSTATUS,
        &mut iov as *mut _ as usize,
    )
    .map(drop)
}

/// The whole XSAVE area (x87, SSE, AVX, ... as enabled on this CPU).
pub fn get_xstate(tid: i32) -> io::Result<Vec<u8>> {
    // A stack buffer, then an exact-size copy: fresh heap memory costs page
    // faults.
    let mut buf = [0u8; XSTATE_MAX];
    let n = get_regset(tid, NT_X86_XSTATE, buf.as_mut_ptr(), buf.len())?;
    Ok(buf[..n.min(XSTATE_MAX)].to_vec())
}

/// Writes the XSAVE area back (as read by [`get_xstate`]).
pub fn set_xstate(tid: i32, xstate: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: xstate.as_ptr().cast_mut().cast(),
        iov_len: xstate.len(),
    };
    // The kernel only reads through the iovec for SETREGSET.
    raw(
        PTRACE_SETREGSET,
        tid,
        NT_X86_XSTATE,
        &mut iov as *mut _ as usize,
    )
    .map(drop)
}

pub fn get_sigmask(tid: i32) -> io::Result<u64> {
    let mut mask: u64 = 0;
    raw(PTRACE_GETSIGMASK, tid, 8, &mut mask as *mut u64 as usize)?;
    Ok(mask)
}

pub fn set_sigmask(tid: i32, mask: u64) -> io::Result<()> {
    raw(PTRACE_SETSIGMASK, tid, 8, &mask as *const u64 as usize).map(drop)
}

/// `struct ptrace_rseq_configuration` from `<linux/ptrace.h>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RseqConfig {
    /// Address of the thread's `struct rseq`, 0 when none is registered.
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct RawRseqConfig {
    rseq_abi_pointer: u64,
    rseq_abi_size: u32,
    signature: u32,
    flags: u32,
    pad: u32,
}

pub fn get_rseq_config(tid: i32) -> io::Result<RseqConfig> {
    let mut conf = RawRseqConfig::default();
    raw(
        PTRACE_GET_RSEQ_CONFIGURATION,
        tid,
        size_of::<RawRseqConfig>(),
        &mut conf as *mut RawRseqConfig as usize,
    )?;
    Ok(RseqConfig {
        rseq_abi_pointer: conf.rseq_abi_pointer,
        rseq_abi_size: conf.rseq_abi_size,
        signature: conf.signature,
        flags: conf.flags,
    })
}

/// Size of one `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// Pending signals of the thread (or, with `shared`, of the whole process),
/// without dequeuing them. Each element is one raw `siginfo_t`.
pub fn peek_siginfo(tid: i32, shared: bool) -> io::Result<Vec<[u8; SIGINFO_SIZE]>> {
    const BATCH: usize = 32;
    let mut out = Vec::new();
    loop {
        let mut buf = [[0u8; SIGINFO_SIZE]; BATCH];
        let args = PeekSiginfoArgs {
            off: out.len() as u64,
            flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
            nr: BATCH as i32,
        };
        let n = raw(
            PTRACE_PEEKSIGINFO,
            tid,
            &args as *const PeekSiginfoArgs as usize,
            buf.as_mut_ptr() as usize,
        )? as usize;
        out.extend_from_slice(&buf[..n.min(BATCH)]);
        if n < BATCH {
            return Ok(out);
        }
    }
}

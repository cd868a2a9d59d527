//! Rebuilding the origin's address space in a stopped worker, by injected
//! system calls: everything of the worker's own is unmapped except its
//! vDSO block, the block (`[vvar]`, `[vvar_vclock]`, `[vdso]`) is moved by
//! one delta to the origin's addresses, every origin mapping is recreated
//! at its address (from the same file when it is still there, else
//! anonymous), and the mm fields are set with one `PR_SET_MM_MAP`.
//! Strings and structs the calls need go into a scratch mapping in the
//! worker, written through `/proc/PID/mem`.

use crate::inject::Injection;
use crate::procfs::maps::{self, Backing, Vma};
use crate::sys::{mem, ptrace};
use crate::{Error, FrozenProcess, ProcessState};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use tracing::debug;

pub(crate) const SYS_OPENAT: i64 = 257;
pub(crate) const SYS_CLOSE: i64 = 3;
pub(crate) const SYS_MMAP: i64 = 9;
pub(crate) const SYS_MUNMAP: i64 = 11;
pub(crate) const SYS_MREMAP: i64 = 25;
pub(crate) const SYS_PRCTL: i64 = 157;
pub(crate) const SYS_RSEQ: i64 = 334;

const PAGE: u64 = 4096;
/// First address above the user half of the address space (x86-64, 4 levels).
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// Size of the worker's scratch mapping.
const SCRATCH_LEN: u64 = 64 * 1024;
/// Lowest address considered for scratch or temporary mappings.
const LOW: u64 = 0x100_0000;
const VDSO_BLOCK: [&str; 3] = ["[vvar]", "[vvar_vclock]", "[vdso]"];
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const RSEQ_FLAG_UNREGISTER: u64 = 1;

/// The worker's address space once laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Scratch mapping in the worker (removed by
    /// [`crate::restore::restore_process_state`]).
    pub scratch: u64,
    pub scratch_len: u64,
    /// `(address, length)` ranges whose content must come from the origin
    /// (populated private pages, and whole mappings whose file is gone).
    pub to_copy: Vec<(u64, u64)>,
    /// `(start, end)` of the private mappings made anonymous: the ones a
    /// userfaultfd can serve in MISSING mode. Parts of [`Layout::to_copy`]
    /// outside them (populated pages of private file mappings) must be
    /// copied before the worker runs.
    pub anonymous: Vec<(u64, u64)>,
}

/// `(address, length)` ranges.
pub type Ranges = Vec<(u64, u64)>;

impl Layout {
    /// Splits [`Layout::to_copy`] into `(inside anonymous mappings, the rest)`.
    pub fn split_copy(&self) -> (Ranges, Ranges) {
        self.to_copy.iter().partition(|&&(start, len)| {
            self.anonymous
                .iter()
                .any(|&(s, e)| s <= start && start + len <= e)
        })
    }
}

/// A bump allocator over the scratch mapping.
pub(crate) struct Scratch {
    pid: i32,
    base: u64,
    len: u64,
    used: u64,
}

impl Scratch {
    pub(crate) fn new(pid: i32, layout: &Layout) -> Scratch {
        Scratch {
            pid,
            base: layout.scratch,
            len: layout.scratch_len,
            used: 0,
        }
    }

    /// Copies `data` into the worker; returns its address there.
    pub(crate) fn put(&mut self, data: &[u8]) -> Result<u64, Error> {
        let at = self.used.next_multiple_of(16);
        if at + data.len() as u64 > self.len {
            self.used = 0;
            return self.put_at(0, data);
        }
        self.put_at(at, data)
    }

    fn put_at(&mut self, at: u64, data: &[u8]) -> Result<u64, Error> {
        if at + data.len() as u64 > self.len {
            return Err(Error::Restore {
                pid: self.pid,
                detail: format!("{} bytes do not fit in the scratch mapping", data.len()),
            });
        }
        let addr = self.base + at;
        mem::write_forced(self.pid, addr, data).map_err(|source| Error::Memory {
            pid: self.pid,
            addr,
            len: data.len(),
            source,
        })?;
        self.used = at + data.len() as u64;
        Ok(addr)
    }

    /// A NUL-terminated copy of `s`.
    pub(crate) fn put_str(&mut self, s: &str) -> Result<u64, Error> {
        let mut b = Vec::with_capacity(s.len() + 1);
        b.extend_from_slice(s.as_bytes());
        b.push(0);
        self.put(&b)
    }
}

fn restore_err(pid: i32, detail: impl Into<String>) -> Error {
    Error::Restore {
        pid,
        detail: detail.into(),
    }
}

/// The `[vvar]`/`[vvar_vclock]`/`[vdso]` mappings present, in address order.
fn vdso_block(vmas: &[Vma]) -> Vec<&Vma> {
    let mut b: Vec<&Vma> = vmas
        .iter()
        .filter(|v| VDSO_BLOCK.contains(&v.name.as_str()))
        .collect();
    b.sort_by_key(|v| v.start);
    b
}

/// The delta that moves the worker's vDSO block onto the origin's, after
/// checking both blocks have the same pieces of the same sizes at the same
/// relative positions.
pub(crate) fn vdso_delta(origin: &[&Vma], worker: &[&Vma]) -> Result<i64, String> {
    let shape = |b: &[&Vma]| -> Vec<(String, u64, u64)> {
        let base = b.first().map_or(0, |v| v.start);
        b.iter()
            .map(|v| (v.name.clone(), v.start - base, v.len()))
            .collect()
    };
    if origin.is_empty() {
        return Err("the origin has no vDSO".into());
    }
    if shape(origin) != shape(worker) {
        return Err(format!(
            "vDSO blocks differ: origin {:?}, worker {:?}",
            shape(origin),
            shape(worker)
        ));
    }
    Ok(origin[0].start.wrapping_sub(worker[0].start) as i64)
}

/// `[start, end)` of a block.
fn span(b: &[&Vma]) -> (u64, u64) {
    (
        b.first().map_or(0, |v| v.start),
        b.last().map_or(0, |v| v.end),
    )
}

/// Lowest `len`-byte gap at or above [`LOW`] that overlaps none of `taken`.
pub(crate) fn find_gap(taken: &[(u64, u64)], len: u64) -> Option<u64> {
    let mut t = taken.to_vec();
    t.sort();
    let mut at = LOW;
    for (s, e) in t {
        if e <= at {
            continue;
        }
        if s >= at + len {
            return Some(at);
        }
        at = at.max(e.next_multiple_of(PAGE));
    }
    (at + len <= TASK_SIZE).then_some(at)
}

/// True when the file at `vma.name` is the one the origin mapped (same
/// inode and device).
fn same_file(vma: &Vma) -> bool {
    let Ok(m) = std::fs::metadata(&vma.name) else {
        return false;
    };
    let dev = m.dev();
    let want = format!("{:02x}:{:02x}", libc::major(dev), libc::minor(dev));
    m.ino() == vma.inode && m.is_file() && want == vma.dev
}

fn prot_of(v: &Vma) -> u64 {
    let mut p = 0;
    if v.readable() {
        p |= libc::PROT_READ;
    }
    if v.writable() {
        p |= libc::PROT_WRITE;
    }
    if v.executable() {
        p |= libc::PROT_EXEC;
    }
    p as u64
}

impl FrozenProcess {
    fn worker_vmas(&self) -> Result<Vec<Vma>, Error> {
        let path = format!("/proc/{}/maps", self.pid());
        crate::procfs::with_text(&path, maps::parse_maps)?.map_err(|d| Error::parse(path, d))
    }
}

/// Lays out the address space of `state` in the stopped single-threaded
/// `worker` (see the module documentation). Memory content is not copied:
/// [`Layout::to_copy`] says what must be.
pub fn lay_out(worker: &mut FrozenProcess, state: &ProcessState) -> Result<Layout, Error> {
    let pid = worker.pid();
    let own = worker.worker_vmas()?;
    let wblock = vdso_block(&own);
    let oblock = vdso_block(&state.vmas);
    let delta = vdso_delta(&oblock, &wblock).map_err(|d| restore_err(pid, d))?;
    let (ws, we) = span(&wblock);
    let (os, oe) = span(&oblock);

    // 1. Forget the worker's own rseq area and mappings.
    let mut s = worker.begin_injection(pid)?;
    let rseq = ptrace::get_rseq_config(pid).map_err(|e| Error::ptrace("GET_RSEQ", pid, e))?;
    if rseq.rseq_abi_pointer != 0 {
        s.syscall_ok(
            SYS_RSEQ,
            [
                rseq.rseq_abi_pointer,
                u64::from(rseq.rseq_abi_size),
                RSEQ_FLAG_UNREGISTER,
                u64::from(rseq.signature),
                0,
                0,
            ],
        )?;
    }
    s.syscall_ok(SYS_MUNMAP, [0, ws, 0, 0, 0, 0])?;
    s.syscall_ok(SYS_MUNMAP, [we, TASK_SIZE - we, 0, 0, 0, 0])?;
    s.finish()?;

    // 2. Move the vDSO block (through a free spot when the two overlap).
    if delta != 0 {
        let len = we - ws;
        let mut steps = Vec::new();
        if ws < oe && os < we {
            let tmp = find_gap(&[(ws, we), (os, oe)], len)
                .ok_or_else(|| restore_err(pid, "no room to move the vDSO"))?;
            steps.push(tmp);
        }
        steps.push(os);
        let mut cur = ws;
        for to in steps {
            move_block(worker, &wblock, ws, cur, to)?;
            cur = to;
        }
    }

    // 3. Scratch memory, then every origin mapping.
    let mut taken: Vec<(u64, u64)> = state.vmas.iter().map(|v| (v.start, v.end)).collect();
    taken.push((os, oe));
    let scratch = find_gap(&taken, SCRATCH_LEN)
        .ok_or_else(|| restore_err(pid, "no room for scratch memory"))?;
    let mut s = worker.begin_injection(pid)?;
    map_fixed(
        &mut s,
        pid,
        scratch,
        SCRATCH_LEN,
        3,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        u64::MAX,
        0,
    )?;
    let mut layout = Layout {
        scratch,
        scratch_len: SCRATCH_LEN,
        to_copy: Vec::new(),
        anonymous: Vec::new(),
    };
    let mut scr = Scratch::new(pid, &layout);
    let mut files: BTreeMap<(String, bool), u64> = BTreeMap::new();
    let r = map_all(&mut s, pid, state, &mut scr, &mut files, &mut layout);
    for fd in files.values() {
        let _ = s.syscall(SYS_CLOSE, [*fd, 0, 0, 0, 0, 0]);
    }
    r?;
    set_mm(&mut s, pid, state, &mut scr)?;
    s.finish()?;
    debug!(pid, copy_ranges = layout.to_copy.len(), "laid out");
    Ok(layout)
}

/// Moves the block whose first mapping is at `cur` (originally at `orig`)
/// to `to`, the `[vdso]` (which holds the injection's `syscall`) last.
fn move_block(
    worker: &mut FrozenProcess,
    block: &[&Vma],
    orig: u64,
    cur: u64,
    to: u64,
) -> Result<(), Error> {
    let pid = worker.pid();
    let mut s = worker.begin_injection(pid)?;
    let mut pieces: Vec<&&Vma> = block.iter().collect();
    pieces.sort_by_key(|v| v.name == "[vdso]");
    for v in pieces {
        let from = v.start - orig + cur;
        let dest = v.start - orig + to;
        let got = s.syscall_ok(
            SYS_MREMAP,
            [
                from,
                v.len(),
                v.len(),
                MREMAP_MAYMOVE | MREMAP_FIXED,
                dest,
                0,
            ],
        )?;
        if got != dest {
            return Err(restore_err(
                pid,
                format!("{} moved to {got:#x}, not {dest:#x}", v.name),
            ));
        }
    }
    s.finish()?;
    if let Some(insn) = worker.syscall_insn {
        worker.syscall_insn = Some(insn.wrapping_add(to.wrapping_sub(cur)));
    }
    debug!(
        pid,
        from = format_args!("{cur:#x}"),
        to = format_args!("{to:#x}"),
        "vDSO moved"
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn map_fixed(
    s: &mut Injection,
    pid: i32,
    addr: u64,
    len: u64,
    prot: u64,
    flags: i32,
    fd: u64,
    offset: u64,
) -> Result<(), Error> {
    let flags = (flags | libc::MAP_FIXED_NOREPLACE) as u64;
    let got = s.syscall_ok(SYS_MMAP, [addr, len, prot, flags, fd, offset])?;
    if got != addr {
        return Err(restore_err(
            pid,
            format!("mapping at {addr:#x} landed at {got:#x}"),
        ));
    }
    Ok(())
}

fn map_all(
    s: &mut Injection,
    pid: i32,
    state: &ProcessState,
    scr: &mut Scratch,
    files: &mut BTreeMap<(String, bool), u64>,
    layout: &mut Layout,
) -> Result<(), Error> {
    for v in &state.vmas {
        if v.backing == Backing::Special {
            continue;
        }
        let shared = v.shared();
        if shared && v.backing != Backing::File {
            return Err(restore_err(
                pid,
                format!(
                    "shared anonymous mapping {:#x}-{:#x} is not supported yet",
                    v.start, v.end
                ),
            ));
        }
        let from_file = v.backing == Backing::File && v.name.starts_with('/') && same_file(v);
        if shared && !from_file {
            return Err(restore_err(
                pid,
                format!("shared mapping of {} is not available here", v.name),
            ));
        }
        let mut flags = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        if v.vm_flags.iter().any(|f| f == "gd") {
            flags |= libc::MAP_GROWSDOWN;
        }
        if v.vm_flags.iter().any(|f| f == "nr") {
            flags |= libc::MAP_NORESERVE;
        }
        let (fd, offset) = if from_file {
            let rw = shared && v.writable();
            let key = (v.name.clone(), rw);
            let fd = match files.get(&key) {
                Some(&fd) => fd,
                None => {
                    let path = scr.put_str(&v.name)?;
                    let mode = if rw { libc::O_RDWR } else { libc::O_RDONLY } | libc::O_CLOEXEC;
                    let fd = s.syscall_ok(
                        SYS_OPENAT,
                        [libc::AT_FDCWD as u64, path, mode as u64, 0, 0, 0],
                    )?;
                    files.insert(key, fd);
                    fd
                }
            };
            (fd, v.offset)
        } else {
            flags |= libc::MAP_ANONYMOUS;
            (u64::MAX, 0)
        };
        map_fixed(s, pid, v.start, v.len(), prot_of(v), flags, fd, offset)?;
        if shared || (from_file && v.executable()) {
            continue;
        }
        if !from_file {
            layout.anonymous.push((v.start, v.end));
        }
        if v.backing == Backing::File && !from_file {
            layout.to_copy.push((v.start, v.len()));
        } else {
            let populated = v.populated.iter().map(|r| (r.start, r.pages * PAGE));
            layout.to_copy.extend(populated);
        }
    }
    Ok(())
}

/// `struct prctl_mm_map` followed by the saved auxv it points to.
/// `exe_fd` is the worker's fd on the executable, `None` to keep its own.
pub(crate) fn mm_map_bytes(
    state: &ProcessState,
    auxv_addr: u64,
    exe_fd: Option<u32>,
) -> (Vec<u8>, Vec<u8>) {
    let mut auxv = Vec::with_capacity((state.auxv.len() + 1) * 16);
    for &(t, v) in state.auxv.iter().chain(std::iter::once(&(0, 0))) {
        auxv.extend_from_slice(&t.to_ne_bytes());
        auxv.extend_from_slice(&v.to_ne_bytes());
    }
    let m = &state.mm;
    let mut b = Vec::with_capacity(104);
    for x in [
        m.start_code,
        m.end_code,
        m.start_data,
        m.end_data,
        m.start_brk,
        m.brk,
        m.start_stack,
        m.arg_start,
        m.arg_end,
        m.env_start,
        m.env_end,
        auxv_addr,
    ] {
        b.extend_from_slice(&x.to_ne_bytes());
    }
    b.extend_from_slice(&(auxv.len() as u32).to_ne_bytes());
    b.extend_from_slice(&exe_fd.unwrap_or(u32::MAX).to_ne_bytes()); // -1: keep
    (b, auxv)
}

fn set_mm(
    s: &mut Injection,
    pid: i32,
    state: &ProcessState,
    scr: &mut Scratch,
) -> Result<(), Error> {
    // /proc/PID/exe: the origin's executable when it is here too.
    let exe_fd = if std::path::Path::new(&state.exe).is_file() {
        let path = scr.put_str(&state.exe)?;
        let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        let fd = s.syscall(SYS_OPENAT, [libc::AT_FDCWD as u64, path, flags, 0, 0, 0])?;
        u32::try_from(fd).ok()
    } else {
        None
    };
    let (_, auxv) = mm_map_bytes(state, 0, exe_fd);
    let auxv_addr = scr.put(&auxv)?;
    let (map, _) = mm_map_bytes(state, auxv_addr, exe_fd);
    let map_addr = scr.put(&map)?;
    let r = s.syscall_ok(
        SYS_PRCTL,
        [PR_SET_MM, PR_SET_MM_MAP, map_addr, map.len() as u64, 0, 0],
    );
    if let Some(fd) = exe_fd {
        s.syscall(SYS_CLOSE, [u64::from(fd), 0, 0, 0, 0, 0])?;
    }
    r.map_err(|e| restore_err(pid, format!("PR_SET_MM_MAP: {e}")))?;
    Ok(())
}

/// Copies `ranges` from the frozen `origin` into `worker` (eager: all now).
/// The post-copy path (userfaultfd, in `dsm/`) replaces this step.
pub fn copy_memory_eager(origin: i32, worker: i32, ranges: &[(u64, u64)]) -> Result<u64, Error> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 1 << 20;
    let path = format!("/proc/{worker}/mem");
    let out = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::proc(&path, e))?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut total = 0;
    for &(start, len) in ranges {
        let mut off = 0;
        while off < len {
            let n = CHUNK.min(len - off) as usize;
            let addr = start + off;
            let mem_err = |pid, source| Error::Memory {
                pid,
                addr,
                len: n,
                source,
            };
            let got = mem::read(origin, addr, &mut buf[..n]).map_err(|e| mem_err(origin, e))?;
            if got != n {
                let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read");
                return Err(mem_err(origin, e));
            }
            out.write_all_at(&buf[..n], addr)
                .map_err(|e| mem_err(worker, e))?;
            off += n as u64;
            total += n as u64;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(name: &str, start: u64, end: u64) -> Vma {
        let mut v = maps::parse_line(&format!("{start:x}-{end:x} r--p 00000000 00:00 0 {name}"))
            .expect("valid line");
        v.name = name.into();
        v
    }

    #[test]
    fn vdso_delta_checks_shape() {
        let o = [
            vma("[vvar]", 0x7000_0000, 0x7000_4000),
            vma("[vdso]", 0x7000_4000, 0x7000_6000),
        ];
        let w = [
            vma("[vvar]", 0x6000_0000, 0x6000_4000),
            vma("[vdso]", 0x6000_4000, 0x6000_6000),
        ];
        let (o, w): (Vec<&Vma>, Vec<&Vma>) = (o.iter().collect(), w.iter().collect());
        assert_eq!(vdso_delta(&o, &w), Ok(0x1000_0000));
        assert_eq!(vdso_delta(&w, &o), Ok(-0x1000_0000));
        let short = [
            vma("[vvar]", 0x6000_0000, 0x6000_2000),
            vma("[vdso]", 0x6000_2000, 0x6000_4000),
        ];
        let short: Vec<&Vma> = short.iter().collect();
        assert!(vdso_delta(&o, &short).is_err());
        assert!(vdso_delta(&[], &w).is_err());
    }

    #[test]
    fn gap_avoids_taken_ranges() {
        assert_eq!(find_gap(&[], 0x1000), Some(LOW));
        assert_eq!(find_gap(&[(LOW, LOW + 0x3000)], 0x1000), Some(LOW + 0x3000));
        assert_eq!(
            find_gap(&[(LOW + 0x2000, LOW + 0x3000), (LOW, LOW + 0x1000)], 0x1000),
            Some(LOW + 0x1000)
        );
        assert_eq!(
            find_gap(&[(LOW + 0x2000, LOW + 0x3000), (LOW, LOW + 0x1000)], 0x2000),
            Some(LOW + 0x3000)
        );
        assert_eq!(find_gap(&[(0, TASK_SIZE)], 0x1000), None);
    }
}

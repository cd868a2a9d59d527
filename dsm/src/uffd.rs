//! Thin safe wrappers over userfaultfd: creating or adopting a uffd, the
//! `UFFDIO_*` ioctls (API, REGISTER, UNREGISTER, COPY, ZEROPAGE, WAKE) and
//! decoding `struct uffd_msg` events.
//!
//! A uffd acts on the mm of the task that *created* it, whoever holds the fd
//! (DESIGN.md §5.3): a uffd created inside a target (injected `userfaultfd`)
//! and taken with `pidfd_getfd` registers and fills the target's memory.
//! `UFFD_USER_MODE_ONLY` is never used: faults taken inside system calls
//! must be delivered too (§5.4).
//!
//! The ioctl numbers and structures are defined here from the kernel uapi
//! header (`include/uapi/linux/userfaultfd.h`); the unit tests pin them.

use crate::PAGE_SIZE;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `UFFD_API`: the only API version.
pub const UFFD_API: u64 = 0xAA;

/// Feature bits (`UFFD_FEATURE_*`).
pub mod feature {
    pub const PAGEFAULT_FLAG_WP: u64 = 1 << 0;
    pub const EVENT_FORK: u64 = 1 << 1;
    pub const EVENT_REMAP: u64 = 1 << 2;
    pub const EVENT_REMOVE: u64 = 1 << 3;
    pub const MISSING_HUGETLBFS: u64 = 1 << 4;
    pub const MISSING_SHMEM: u64 = 1 << 5;
    pub const EVENT_UNMAP: u64 = 1 << 6;
    pub const SIGBUS: u64 = 1 << 7;
    pub const THREAD_ID: u64 = 1 << 8;
    pub const EXACT_ADDRESS: u64 = 1 << 11;
}

/// Features a post-copy destination asks for (those the kernel has):
/// non-cooperative FORK/REMOVE/UNMAP/REMAP events, shmem, faulting thread
/// ids.
pub const POSTCOPY_FEATURES: u64 = feature::EVENT_FORK
    | feature::EVENT_REMOVE
    | feature::EVENT_UNMAP
    | feature::EVENT_REMAP
    | feature::MISSING_SHMEM
    | feature::THREAD_ID;

/// `UFFDIO_REGISTER_MODE_MISSING`.
pub const REGISTER_MODE_MISSING: u64 = 1 << 0;
/// `UFFDIO_REGISTER_MODE_WP`.
pub const REGISTER_MODE_WP: u64 = 1 << 1;
/// `UFFD_PAGEFAULT_FLAG_WRITE`: the fault was a write.
pub const PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;
/// `UFFD_PAGEFAULT_FLAG_WP`: the fault hit a write-protected page.
pub const PAGEFAULT_FLAG_WP: u64 = 1 << 1;

const UFFDIO: u32 = 0xAA;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, 0xAA, nr, size)` as the kernel computes it.
const fn ioc(dir: u32, nr: u32, size: usize) -> u64 {
    ((dir << 30) | ((size as u32) << 16) | (UFFDIO << 8) | nr) as u64
}

const fn iowr(nr: u32, size: usize) -> u64 {
    ioc(IOC_READ | IOC_WRITE, nr, size)
}

const fn ior(nr: u32, size: usize) -> u64 {
    ioc(IOC_READ, nr, size)
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

pub const UFFDIO_API: u64 = iowr(0x3F, std::mem::size_of::<UffdioApi>());
pub const UFFDIO_REGISTER: u64 = iowr(0x00, std::mem::size_of::<UffdioRegister>());
pub const UFFDIO_UNREGISTER: u64 = ior(0x01, std::mem::size_of::<UffdioRange>());
pub const UFFDIO_WAKE: u64 = ior(0x02, std::mem::size_of::<UffdioRange>());
pub const UFFDIO_COPY: u64 = iowr(0x03, std::mem::size_of::<UffdioCopy>());
pub const UFFDIO_ZEROPAGE: u64 = iowr(0x04, std::mem::size_of::<UffdioZeropage>());

/// Size of one `struct uffd_msg`.
pub const MSG_SIZE: usize = 32;

const EVENT_PAGEFAULT: u8 = 0x12;
const EVENT_FORK: u8 = 0x13;
const EVENT_REMAP: u8 = 0x14;
const EVENT_REMOVE: u8 = 0x15;
const EVENT_UNMAP: u8 = 0x16;

#[derive(Debug, thiserror::Error)]
pub enum UffdError {
    #[error("userfaultfd(2): {0} (root or vm.unprivileged_userfaultfd=1 is needed)")]
    Create(#[source] io::Error),
    #[error("{op} on userfaultfd: {source}")]
    Ioctl {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("kernel lacks userfaultfd features {missing:#x} (wanted {wanted:#x})")]
    MissingFeatures { wanted: u64, missing: u64 },
    /// The mm is changing (an unread REMOVE/UNMAP/REMAP event): read events,
    /// then retry from `dst + done`.
    #[error("{op} at {addr:#x}: EAGAIN after {done} bytes; read pending events first")]
    Again {
        op: &'static str,
        addr: u64,
        done: u64,
    },
    #[error("{what} {addr:#x}+{len:#x} is not whole pages")]
    Unaligned {
        what: &'static str,
        addr: u64,
        len: u64,
    },
    #[error("reading userfaultfd events: {0}")]
    Read(#[source] io::Error),
    #[error("poll on userfaultfd: {0}")]
    Poll(#[source] io::Error),
}

impl UffdError {
    /// The errno behind an ioctl failure, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            UffdError::Ioctl { source, .. } | UffdError::Create(source) => source.raw_os_error(),
            UffdError::Again { .. } => Some(libc::EAGAIN),
            _ => None,
        }
    }
}

/// One event read from a uffd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A thread touched a missing (or write-protected) page. `addr` is the
    /// faulting address (page-aligned unless EXACT_ADDRESS was requested);
    /// `tid` is 0 without the THREAD_ID feature.
    PageFault { addr: u64, flags: u64, tid: u32 },
    /// `madvise(MADV_DONTNEED/REMOVE)` dropped `[start, end)`.
    Remove { start: u64, end: u64 },
    /// `munmap` removed `[start, end)`.
    Unmap { start: u64, end: u64 },
    /// `mremap` moved `len` bytes from `from` to `to`.
    Remap { from: u64, to: u64, len: u64 },
    /// The process forked; `ufd` is a new uffd for the child, installed in
    /// the reader's fd table: the caller owns it and must close it.
    Fork { ufd: RawFd },
    /// An event kind this build does not know.
    Unknown(u8),
}

impl Event {
    /// Decodes one `struct uffd_msg`.
    pub fn parse(msg: &[u8; MSG_SIZE]) -> Event {
        let u64_at = |off: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&msg[off..off + 8]);
            u64::from_ne_bytes(b)
        };
        let u32_at = |off: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&msg[off..off + 4]);
            u32::from_ne_bytes(b)
        };
        match msg[0] {
            EVENT_PAGEFAULT => Event::PageFault {
                flags: u64_at(8),
                addr: u64_at(16),
                tid: u32_at(24),
            },
            EVENT_FORK => Event::Fork {
                ufd: u32_at(8) as RawFd,
            },
            EVENT_REMAP => Event::Remap {
                from: u64_at(8),
                to: u64_at(16),
                len: u64_at(24),
            },
            EVENT_REMOVE => Event::Remove {
                start: u64_at(8),
                end: u64_at(16),
            },
            EVENT_UNMAP => Event::Unmap {
                start: u64_at(8),
                end: u64_at(16),
            },
            other => Event::Unknown(other),
        }
    }
}

/// What a fill (`copy`/`zeropage`) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filled {
    /// Bytes installed by this call.
    pub installed: u64,
    /// Bytes skipped because a page was already there (EEXIST).
    pub existed: u64,
}

/// Creates a userfaultfd in the calling process (`O_CLOEXEC|O_NONBLOCK`,
/// kernel faults included). Its UFFDIO_API handshake is not done yet.
pub fn create_raw() -> Result<OwnedFd, UffdError> {
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as libc::c_long;
    // SAFETY: userfaultfd takes one integer flags argument and returns a new
    // fd or -1; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if r < 0 {
        return Err(UffdError::Create(io::Error::last_os_error()));
    }
    // SAFETY: `r` is a fresh fd returned by the kernel and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Features the running kernel supports (UFFDIO_API with 0 on a probe fd).
pub fn supported_features() -> Result<u64, UffdError> {
    let fd = create_raw()?;
    let mut api = UffdioApi {
        api: UFFD_API,
        ..Default::default()
    };
    ioctl(fd.as_fd(), UFFDIO_API, &mut api, "UFFDIO_API")?;
    Ok(api.features)
}

fn ioctl<T>(fd: BorrowedFd<'_>, req: u64, arg: &mut T, op: &'static str) -> Result<(), UffdError> {
    // SAFETY: `req` is one of the UFFDIO_* numbers whose size field matches
    // `T` (pinned by the tests); `arg` is a valid, exclusive #[repr(C)]
    // struct the kernel may read and write for the duration of the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::c_ulong, arg as *mut T) };
    if r < 0 {
        return Err(UffdError::Ioctl {
            op,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn check_pages(what: &'static str, addr: u64, len: u64) -> Result<(), UffdError> {
    if len == 0 || !addr.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        return Err(UffdError::Unaligned { what, addr, len });
    }
    Ok(())
}

/// A userfaultfd after its UFFDIO_API handshake.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    features: u64,
}

impl Uffd {
    /// A new uffd for the calling process with [`POSTCOPY_FEATURES`] (those
    /// the kernel has).
    pub fn new() -> Result<Uffd, UffdError> {
        let avail = supported_features()?;
        Uffd::adopt(create_raw()?, POSTCOPY_FEATURES & avail)
    }

    /// Does the UFFDIO_API handshake on `fd` (e.g. one created inside a
    /// target and taken with `pidfd_getfd`) asking for exactly `features`.
    /// The handshake can be done once per uffd.
    pub fn adopt(fd: OwnedFd, features: u64) -> Result<Uffd, UffdError> {
        let mut api = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        if let Err(e) = ioctl(fd.as_fd(), UFFDIO_API, &mut api, "UFFDIO_API") {
            if e.errno() == Some(libc::EINVAL) {
                let avail = supported_features()?;
                if features & !avail != 0 {
                    return Err(UffdError::MissingFeatures {
                        wanted: features,
                        missing: features & !avail,
                    });
                }
            }
            return Err(e);
        }
        Ok(Uffd {
            fd,
            features: api.features,
        })
    }

    /// [`adopt`](Uffd::adopt) with [`POSTCOPY_FEATURES`] the kernel has.
    pub fn adopt_postcopy(fd: OwnedFd) -> Result<Uffd, UffdError> {
        let avail = supported_features()?;
        Uffd::adopt(fd, POSTCOPY_FEATURES & avail)
    }

    /// The uffd of a forked child, from an [`Event::Fork`]: it shares the
    /// parent uffd's features and needs no handshake.
    pub fn adopt_forked(fd: OwnedFd, parent: &Uffd) -> Uffd {
        Uffd {
            fd,
            features: parent.features,
        }
    }

    /// Features granted by the handshake.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Registers `[start, start+len)` in MISSING mode; returns the bitmask of
    /// ioctls (`1 << _UFFDIO_*`) available on the range.
    pub fn register(&self, start: u64, len: u64) -> Result<u64, UffdError> {
        self.register_mode(start, len, REGISTER_MODE_MISSING)
    }

    /// Registers `[start, start+len)` with the given `REGISTER_MODE_*` bits.
    pub fn register_mode(&self, start: u64, len: u64, mode: u64) -> Result<u64, UffdError> {
        check_pages("register", start, len)?;
        let mut reg = UffdioRegister {
            range: UffdioRange { start, len },
            mode,
            ioctls: 0,
        };
        ioctl(
            self.fd.as_fd(),
            UFFDIO_REGISTER,
            &mut reg,
            "UFFDIO_REGISTER",
        )?;
        Ok(reg.ioctls)
    }

    pub fn unregister(&self, start: u64, len: u64) -> Result<(), UffdError> {
        check_pages("unregister", start, len)?;
        let mut r = UffdioRange { start, len };
        ioctl(
            self.fd.as_fd(),
            UFFDIO_UNREGISTER,
            &mut r,
            "UFFDIO_UNREGISTER",
        )
    }

    /// Wakes threads waiting on faults in `[start, start+len)`.
    pub fn wake(&self, start: u64, len: u64) -> Result<(), UffdError> {
        check_pages("wake", start, len)?;
        let mut r = UffdioRange { start, len };
        ioctl(self.fd.as_fd(), UFFDIO_WAKE, &mut r, "UFFDIO_WAKE")
    }

    /// Installs `src` (whole pages, from this process) at `dst` in the uffd's
    /// mm and wakes the waiters. Pages already present are skipped (EEXIST
    /// is not an error) and their waiters woken too. `dst..dst+len` must not
    /// cross a VMA. [`UffdError::Again`] means events are pending: read them,
    /// then retry the rest.
    pub fn copy(&self, dst: u64, src: &[u8]) -> Result<Filled, UffdError> {
        let len = src.len() as u64;
        check_pages("copy", dst, len)?;
        let base = src.as_ptr() as u64;
        self.fill("UFFDIO_COPY", dst, len, |at| {
            let mut c = UffdioCopy {
                dst: dst + at,
                src: base + at,
                len: len - at,
                mode: 0,
                copy: 0,
            };
            let r = ioctl(self.fd.as_fd(), UFFDIO_COPY, &mut c, "UFFDIO_COPY");
            (r, c.copy)
        })
    }

    /// Maps the zero page over `[dst, dst+len)` (same rules as [`copy`](Uffd::copy)).
    pub fn zeropage(&self, dst: u64, len: u64) -> Result<Filled, UffdError> {
        check_pages("zeropage", dst, len)?;
        self.fill("UFFDIO_ZEROPAGE", dst, len, |at| {
            let mut z = UffdioZeropage {
                range: UffdioRange {
                    start: dst + at,
                    len: len - at,
                },
                mode: 0,
                zeropage: 0,
            };
            let r = ioctl(self.fd.as_fd(), UFFDIO_ZEROPAGE, &mut z, "UFFDIO_ZEROPAGE");
            (r, z.zeropage)
        })
    }

    /// Drives one fill ioctl to completion: `step(at)` fills from offset
    /// `at` and returns the result and the kernel's progress field.
    fn fill(
        &self,
        op: &'static str,
        dst: u64,
        len: u64,
        mut step: impl FnMut(u64) -> (Result<(), UffdError>, i64),
    ) -> Result<Filled, UffdError> {
        let mut at = 0u64;
        let mut out = Filled::default();
        while at < len {
            let (r, progress) = step(at);
            let Err(e) = r else {
                out.installed += len - at;
                break;
            };
            let done = if progress > 0 { progress as u64 } else { 0 };
            at += done;
            out.installed += done;
            match e.errno() {
                Some(libc::EEXIST) => {
                    at += PAGE_SIZE;
                    out.existed += PAGE_SIZE;
                }
                // A partial fill reports EAGAIN: carry on from where it stopped.
                Some(libc::EAGAIN) if done > 0 => {}
                Some(libc::EAGAIN) => {
                    return Err(UffdError::Again {
                        op,
                        addr: dst,
                        done: at,
                    })
                }
                _ => return Err(e),
            }
        }
        if out.existed > 0 {
            // Threads faulting on pages someone else installed still wait.
            self.wake(dst, len)?;
        }
        Ok(out)
    }

    /// Reads one pending event; `Ok(None)` when there is none (the fd is
    /// non-blocking).
    pub fn read_event(&self) -> Result<Option<Event>, UffdError> {
        let mut buf = [0u8; MSG_SIZE];
        loop {
            // SAFETY: `buf` is a writable buffer of MSG_SIZE bytes; a uffd
            // read writes whole messages only.
            let r = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    MSG_SIZE,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(None),
                    Some(libc::EINTR) => continue,
                    _ => Err(UffdError::Read(e)),
                };
            }
            if r as usize != MSG_SIZE {
                return Err(UffdError::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("short uffd message: {r} bytes"),
                )));
            }
            return Ok(Some(Event::parse(&buf)));
        }
    }

    /// Waits up to `timeout_ms` (-1: forever) for an event; true if readable.
    pub fn poll(&self, timeout_ms: i32) -> Result<bool, UffdError> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd, count 1.
            let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(UffdError::Poll(e));
            }
            return Ok(r > 0 && p.revents & libc::POLLIN != 0);
        }
    }
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel() {
        // Values of the uapi macros as compiled by gcc on x86_64.
        assert_eq!(UFFDIO_API, 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER, 0xc020_aa00);
        assert_eq!(UFFDIO_UNREGISTER, 0x8010_aa01);
        assert_eq!(UFFDIO_WAKE, 0x8010_aa02);
        assert_eq!(UFFDIO_COPY, 0xc028_aa03);
        assert_eq!(UFFDIO_ZEROPAGE, 0xc020_aa04);
    }

    #[test]
    fn struct_sizes() {
        assert_eq!(std::mem::size_of::<UffdioApi>(), 24);
        assert_eq!(std::mem::size_of::<UffdioRange>(), 16);
        assert_eq!(std::mem::size_of::<UffdioRegister>(), 32);
        assert_eq!(std::mem::size_of::<UffdioCopy>(), 40);
        assert_eq!(std::mem::size_of::<UffdioZeropage>(), 32);
    }

    fn msg(event: u8, words: [u64; 3]) -> [u8; MSG_SIZE] {
        let mut m = [0u8; MSG_SIZE];
        m[0] = event;
        for (i, w) in words.iter().enumerate() {
            m[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_ne_bytes());
        }
        m
    }

    #[test]
    fn parses_every_event() {
        assert_eq!(
            Event::parse(&msg(0x12, [PAGEFAULT_FLAG_WRITE, 0x7000, 42])),
            Event::PageFault {
                addr: 0x7000,
                flags: PAGEFAULT_FLAG_WRITE,
                tid: 42
            }
        );
        assert_eq!(Event::parse(&msg(0x13, [9, 0, 0])), Event::Fork { ufd: 9 });
        assert_eq!(
            Event::parse(&msg(0x14, [0x1000, 0x9000, 0x2000])),
            Event::Remap {
                from: 0x1000,
                to: 0x9000,
                len: 0x2000
            }
        );
        assert_eq!(
            Event::parse(&msg(0x15, [0x1000, 0x3000, 0])),
            Event::Remove {
                start: 0x1000,
                end: 0x3000
            }
        );
        assert_eq!(
            Event::parse(&msg(0x16, [0x4000, 0x5000, 0])),
            Event::Unmap {
                start: 0x4000,
                end: 0x5000
            }
        );
        assert_eq!(Event::parse(&msg(0x77, [0; 3])), Event::Unknown(0x77));
    }

    #[test]
    fn rejects_partial_pages() {
        let u = Uffd::new().expect("userfaultfd (run as root)");
        assert!(matches!(
            u.register(0x1001, 4096),
            Err(UffdError::Unaligned { .. })
        ));
        assert!(matches!(
            u.copy(0x1000, &[0u8; 100]),
            Err(UffdError::Unaligned { .. })
        ));
        assert!(matches!(
            u.zeropage(0x1000, 0),
            Err(UffdError::Unaligned { .. })
        ));
    }

    struct Map(*mut libc::c_void, usize);
    impl Map {
        fn anon(len: usize) -> Map {
            // SAFETY: fresh private anonymous mapping, no fixed address.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            Map(p, len)
        }
        fn addr(&self) -> u64 {
            self.0 as u64
        }
    }
    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping created in `anon`.
            unsafe { libc::munmap(self.0, self.1) };
        }
    }

    /// DESIGN.md §5.5: while a REMOVE event is unread, UFFDIO_COPY fails
    /// with EAGAIN (reported as `Again`); after reading it the copy works.
    #[test]
    fn copy_is_again_while_a_remove_event_is_unread() {
        let u = Uffd::new().expect("userfaultfd (run as root)");
        assert_ne!(u.features() & feature::EVENT_REMOVE, 0);
        let m = Map::anon(2 * 4096);
        u.register(m.addr(), 2 * 4096).unwrap();
        let page = vec![1u8; 4096];
        u.copy(m.addr(), &page).unwrap();
        let (addr, len) = (m.addr() as usize, 2 * 4096usize);
        // The madvise blocks until its REMOVE event is read.
        let madv = std::thread::spawn(move || {
            // SAFETY: drops the pages of the test's own mapping.
            unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) }
        });
        assert!(u.poll(10_000).unwrap(), "no REMOVE event within 10 s");
        match u.copy(m.addr() + 4096, &page) {
            Err(UffdError::Again { done: 0, .. }) => {}
            other => panic!("expected Again, got {other:?}"),
        }
        assert_eq!(
            u.read_event().unwrap(),
            Some(Event::Remove {
                start: m.addr(),
                end: m.addr() + 2 * 4096
            })
        );
        assert_eq!(madv.join().unwrap(), 0);
        assert_eq!(u.copy(m.addr() + 4096, &page).unwrap().installed, 4096);
        // The dropped page is missing again: a second copy installs it.
        assert_eq!(u.copy(m.addr(), &page).unwrap().installed, 4096);
        // Unregister before the mapping goes: with EVENT_UNMAP, munmap of
        // a registered range waits until its event is read.
        u.unregister(m.addr(), 2 * 4096).unwrap();
    }

    /// Our own process: a thread faults on a registered page, the handler
    /// reads the event and copies; EEXIST on a second copy is tolerated and
    /// zeropage works.
    #[test]
    fn serves_a_fault_in_this_process() {
        let u = Uffd::new().expect("userfaultfd (run as root)");
        assert_ne!(u.features() & feature::THREAD_ID, 0);
        let m = Map::anon(4 * 4096);
        let ioctls = u.register(m.addr(), 4 * 4096).unwrap();
        assert_ne!(ioctls & (1 << 3), 0, "COPY available: {ioctls:#x}");
        let addr = m.addr() as usize;
        let reader = std::thread::spawn(move || {
            // SAFETY: the page is mapped and registered; the load blocks
            // until the handler below fills it.
            let v = unsafe { std::ptr::read_volatile((addr + 4096 + 8) as *const u64) };
            // SAFETY: as above, page 2 is zero-filled by the handler.
            let z = unsafe { std::ptr::read_volatile((addr + 2 * 4096) as *const u64) };
            (v, z)
        });
        let mut page = vec![0u8; 4096];
        page[8..16].copy_from_slice(&0x1122_3344_5566_7788u64.to_ne_bytes());
        let mut served = 0;
        while served < 2 {
            assert!(u.poll(10_000).unwrap(), "no fault within 10 s");
            while let Some(ev) = u.read_event().unwrap() {
                let Event::PageFault { addr: a, tid, .. } = ev else {
                    panic!("unexpected {ev:?}");
                };
                assert_ne!(tid, 0);
                let a = a & !(PAGE_SIZE - 1);
                if a == m.addr() + 4096 {
                    assert_eq!(u.copy(a, &page).unwrap().installed, 4096);
                    // A racing second copy of the same page: EEXIST, skipped.
                    let again = u.copy(a, &page).unwrap();
                    assert_eq!((again.installed, again.existed), (0, 4096));
                } else {
                    assert_eq!(a, m.addr() + 2 * 4096);
                    assert_eq!(u.zeropage(a, 4096).unwrap().installed, 4096);
                }
                served += 1;
            }
        }
        assert_eq!(reader.join().unwrap(), (0x1122_3344_5566_7788, 0));
        // A multi-page copy over a range with one present page in the middle.
        let src = vec![7u8; 3 * 4096];
        let f = u.copy(m.addr() + 2 * 4096, &src[..2 * 4096]).unwrap();
        assert_eq!((f.installed, f.existed), (4096, 4096));
        u.unregister(m.addr(), 4 * 4096).unwrap();
    }
}

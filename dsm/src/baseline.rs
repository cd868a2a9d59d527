//! Local ceilings `popcorn bench migrate` reports its figures against:
//!
//! - [`uffd_round_trips`], next to remote faults: a thread touches a
//!   missing page, a handler thread blocked in poll(2) reads the event and
//!   `UFFDIO_COPY`s a page, the thread resumes;
//! - [`uffd_copy_mib_s`] and [`first_touch_mib_s`], next to the background
//!   transfer: how fast this machine fills fresh memory through
//!   `UFFDIO_COPY` (what the destination's pager does) and by a plain
//!   `memcpy`, with no network involved.

use crate::uffd::{Event, Uffd, UffdError};
use crate::PAGE_SIZE;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error(transparent)]
    Uffd(#[from] UffdError),
    #[error("mapping {len} bytes: {source}")]
    Map {
        len: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Mismatch(String),
}

/// Faults `pages` fresh pages one after the other; returns each fault's
/// latency as the faulting thread saw it.
pub fn uffd_round_trips(pages: usize) -> Result<Vec<Duration>, BaselineError> {
    let pages = pages.max(1);
    let len = pages * PAGE_SIZE as usize;
    let region = Fresh::map(len)?;
    // The handler thread has ended when `measure` returns, before the unmap.
    Ok(measure(region.addr(), len, pages)?)
}

fn measure(base: u64, len: usize, pages: usize) -> Result<Vec<Duration>, UffdError> {
    let uffd = Uffd::new()?;
    uffd.register(base, len as u64)?;
    let stop = Arc::new(AtomicBool::new(false));
    let handler = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<(), UffdError> {
            let page = vec![0x5au8; PAGE_SIZE as usize];
            while !stop.load(Ordering::Relaxed) {
                if !uffd.poll(100)? {
                    continue;
                }
                while let Some(ev) = uffd.read_event()? {
                    if let Event::PageFault { addr, .. } = ev {
                        uffd.copy(addr & !(PAGE_SIZE - 1), &page)?;
                    }
                }
            }
            Ok(())
        })
    };
    let mut lat = Vec::with_capacity(pages);
    for i in 0..pages {
        let p = (base + i as u64 * PAGE_SIZE) as *const u8;
        let t = Instant::now();
        // SAFETY: `p` is inside the registered mapping; the load blocks
        // until the handler installs the page.
        let v = unsafe { std::ptr::read_volatile(p) };
        lat.push(t.elapsed());
        if v != 0x5a {
            stop.store(true, Ordering::Relaxed);
            let _ = handler.join();
            return Err(UffdError::Read(std::io::Error::other(format!(
                "page {i} read back {v:#x}, not 0x5a"
            ))));
        }
    }
    stop.store(true, Ordering::Relaxed);
    match handler.join() {
        Ok(r) => r?,
        Err(_) => {
            return Err(UffdError::Read(std::io::Error::other(
                "the fault handler thread panicked",
            )))
        }
    }
    Ok(lat)
}

/// A fresh private anonymous mapping, unmapped on drop.
struct Fresh {
    base: *mut libc::c_void,
    len: usize,
}

impl Fresh {
    fn map(len: usize) -> Result<Fresh, BaselineError> {
        // SAFETY: a new private anonymous mapping at an address of the
        // kernel's choice; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(BaselineError::Map {
                len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Fresh { base, len })
    }

    fn addr(&self) -> u64 {
        self.base as u64
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference
        // into it outlives `self`.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// `total` rounded down to whole `batch`es of whole pages (at least one).
fn shape(total: usize, batch: usize) -> (usize, usize) {
    let page = PAGE_SIZE as usize;
    let batch = (batch / page).max(1) * page;
    let total = (total / batch).max(1) * batch;
    (total, batch)
}

/// A `batch`-byte source buffer, written so its pages are present.
fn warm_source(batch: usize) -> Vec<u8> {
    (0..batch).map(|i| (i % 251) as u8 + 1).collect()
}

fn mib_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / t.as_secs_f64().max(1e-9)
}

/// MiB/s of `UFFDIO_COPY` into a fresh registered mapping of `total`
/// bytes, `batch` bytes per copy from one warm source buffer (the pager
/// installs up to 4 MiB per copy).
pub fn uffd_copy_mib_s(total: usize, batch: usize) -> Result<f64, BaselineError> {
    let (total, batch) = shape(total, batch);
    let src = warm_source(batch);
    let dst = Fresh::map(total)?;
    let uffd = Uffd::new()?;
    uffd.register(dst.addr(), total as u64)?;
    let t = Instant::now();
    for off in (0..total).step_by(batch) {
        uffd.copy(dst.addr() + off as u64, &src)?;
    }
    let rate = mib_s(total, t.elapsed());
    let last = (dst.addr() + total as u64 - 1) as *const u8;
    // SAFETY: the last byte of the mapping, installed by the copies above.
    let v = unsafe { std::ptr::read_volatile(last) };
    if v != src[batch - 1] {
        return Err(BaselineError::Mismatch(format!(
            "the last copied byte reads {v:#x}, not {:#x}",
            src[batch - 1]
        )));
    }
    Ok(rate)
}

/// MiB/s of a plain `memcpy` into fresh anonymous memory (the first touch
/// populates every page), `batch` bytes at a time from one warm source
/// buffer.
pub fn first_touch_mib_s(total: usize, batch: usize) -> Result<f64, BaselineError> {
    let (total, batch) = shape(total, batch);
    let src = warm_source(batch);
    let dst = Fresh::map(total)?;
    let t = Instant::now();
    for off in (0..total).step_by(batch) {
        // SAFETY: `off + batch <= total`, inside the mapping, which nothing
        // else accesses; `src` is a separate heap buffer of `batch` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), (dst.base as *mut u8).add(off), batch);
        }
    }
    let rate = mib_s(total, t.elapsed());
    std::hint::black_box(&dst);
    Ok(rate)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fresh_memory_rates_are_measured() {
        let copy =
            super::uffd_copy_mib_s(8 << 20, 4 << 20).expect("userfaultfd (run the tests as root)");
        assert!(copy > 0.0 && copy.is_finite(), "{copy}");
        let touch = super::first_touch_mib_s(8 << 20, 4 << 20).expect("mmap");
        assert!(touch > 0.0 && touch.is_finite(), "{touch}");
        // Sizes that are not whole batches or pages still measure something.
        assert!(super::uffd_copy_mib_s(5000, 3000).expect("userfaultfd") > 0.0);
        assert_eq!(super::shape(5000, 3000), (4096, 4096));
        assert_eq!(super::shape(9 << 20, 4 << 20), (8 << 20, 4 << 20));
    }

    #[test]
    fn round_trips_are_measured() {
        let lat = super::uffd_round_trips(50).expect("userfaultfd (run the tests as root)");
        assert_eq!(lat.len(), 50);
        assert!(lat.iter().all(|d| !d.is_zero()));
    }
}

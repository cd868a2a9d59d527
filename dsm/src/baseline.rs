//! The raw userfaultfd round trip on this machine, the baseline next to
//! which `popcorn bench migrate` reports remote faults: a thread touches a
//! missing page, a handler thread blocked in poll(2) reads the event and
//! `UFFDIO_COPY`s a page, the thread resumes.

use crate::uffd::{Event, Uffd, UffdError};
use crate::PAGE_SIZE;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Faults `pages` fresh pages one after the other; returns each fault's
/// latency as the faulting thread saw it.
pub fn uffd_round_trips(pages: usize) -> Result<Vec<Duration>, UffdError> {
    let pages = pages.max(1);
    let len = pages * PAGE_SIZE as usize;
    // SAFETY: a fresh private anonymous mapping at an address of the
    // kernel's choice; unmapped before returning.
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
        return Err(UffdError::Create(std::io::Error::last_os_error()));
    }
    let result = measure(base as u64, len, pages);
    // SAFETY: unmaps exactly the mapping created above; the handler thread
    // has ended.
    unsafe { libc::munmap(base, len) };
    result
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

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_are_measured() {
        let lat = super::uffd_round_trips(50).expect("userfaultfd (run the tests as root)");
        assert_eq!(lat.len(), 50);
        assert!(lat.iter().all(|d| !d.is_zero()));
    }
}

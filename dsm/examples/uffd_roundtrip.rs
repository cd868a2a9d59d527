//! Baseline for the remote-fault benchmark (DESIGN.md §10): the raw
//! userfaultfd round trip on this machine — a thread touches a missing page,
//! a handler thread reads the event and `UFFDIO_COPY`s a page, the thread
//! resumes. Prints one JSON object.
//!
//! ```text
//! cargo run --release -p popcorn-dsm --example uffd_roundtrip -- [PAGES] [poll|spin]
//! ```
//! `poll`: the handler blocks in poll(2) (default); `spin`: it busy-polls
//! the non-blocking uffd (trades a CPU for the wake-up cost).

use popcorn_dsm::uffd::{Event, Uffd};
use popcorn_dsm::PAGE_SIZE;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let pages: usize = match args.next() {
        Some(s) => s.parse()?,
        None => 20_000,
    };
    let mode = args.next().unwrap_or_else(|| "poll".into());
    let spin = match mode.as_str() {
        "poll" => false,
        "spin" => true,
        other => return Err(format!("mode must be poll or spin, not {other:?}").into()),
    };
    if pages == 0 {
        return Err("PAGES must be at least 1".into());
    }
    let len = pages * PAGE_SIZE as usize;
    // SAFETY: a fresh private anonymous mapping at an address of the
    // kernel's choice; unmapped at the end of main.
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
        return Err(std::io::Error::last_os_error().into());
    }
    let base = base as u64;
    let uffd = Uffd::new()?;
    uffd.register(base, len as u64)?;

    let stop = Arc::new(AtomicBool::new(false));
    let handler = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<u64, popcorn_dsm::uffd::UffdError> {
            let page = vec![0x5au8; PAGE_SIZE as usize];
            let mut served = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if !spin && !uffd.poll(100)? {
                    continue;
                }
                while let Some(ev) = uffd.read_event()? {
                    if let Event::PageFault { addr, .. } = ev {
                        uffd.copy(addr & !(PAGE_SIZE - 1), &page)?;
                        served += 1;
                    }
                }
                if spin {
                    std::hint::spin_loop();
                }
            }
            Ok(served)
        })
    };

    let mut lat_ns = Vec::with_capacity(pages);
    let mut check = 0u64;
    for i in 0..pages {
        let p = (base + i as u64 * PAGE_SIZE) as *const u8;
        let t = Instant::now();
        // SAFETY: `p` is inside the registered mapping; the load blocks until
        // the handler installs the page.
        check = check.wrapping_add(u64::from(unsafe { std::ptr::read_volatile(p) }));
        lat_ns.push(t.elapsed().as_nanos() as u64);
    }
    stop.store(true, Ordering::Relaxed);
    let served = handler.join().map_err(|_| "handler thread panicked")??;
    // SAFETY: unmaps exactly the mapping created above; nothing uses it now.
    unsafe { libc::munmap(base as *mut libc::c_void, len) };
    if check != 0x5a * pages as u64 {
        return Err(format!("pages read back wrong: sum {check}").into());
    }

    lat_ns.sort_unstable();
    let pct = |q: f64| lat_ns[((lat_ns.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    let mean = lat_ns.iter().sum::<u64>() as f64 / lat_ns.len() as f64 / 1000.0;
    println!(
        "{{\"bench\":\"uffd_roundtrip\",\"mode\":\"{mode}\",\"faults\":{pages},\"served\":{served},\
         \"mean_us\":{mean:.2},\"p50_us\":{:.2},\"p99_us\":{:.2},\"min_us\":{:.2},\"max_us\":{:.2}}}",
        pct(0.5),
        pct(0.99),
        pct(0.0),
        pct(1.0)
    );
    Ok(())
}

//! `/proc/PID/pagemap`: which pages of each mapping are populated. One
//! `pread` per mapping (chunked), never one call per page.

use crate::procfs::maps::{PageRange, Vma};
use crate::Error;
use std::fs::File;
use std::os::unix::fs::FileExt;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
/// Entries read per `pread` (512 KiB of pagemap).
const CHUNK_PAGES: u64 = 64 * 1024;
/// First address outside the user half of the address space.
const USER_TOP: u64 = 0x8000_0000_0000;

/// Running tally of one mapping's pages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Presence {
    pub present: u64,
    pub swapped: u64,
    pub ranges: Vec<PageRange>,
}

impl Presence {
    /// Adds the pagemap entries of consecutive pages starting at `addr`.
    pub fn add(&mut self, mut addr: u64, entries: &[u64], page: u64) {
        for &e in entries {
            let present = e & PM_PRESENT != 0;
            let swapped = e & PM_SWAPPED != 0;
            self.present += u64::from(present);
            self.swapped += u64::from(swapped);
            if present || swapped {
                match self.ranges.last_mut() {
                    Some(r) if r.start + r.pages * page == addr => r.pages += 1,
                    _ => self.ranges.push(PageRange {
                        start: addr,
                        pages: 1,
                    }),
                }
            }
            addr += page;
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory arguments.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// Fills `present_pages`, `swapped_pages` and `populated` of every mapping.
pub fn fill(pid: i32, vmas: &mut [Vma]) -> Result<(), Error> {
    let path = format!("/proc/{pid}/pagemap");
    let f = File::open(&path).map_err(|e| Error::proc(&path, e))?;
    let page = page_size();
    let mut buf: Vec<u8> = Vec::new();
    for v in vmas.iter_mut().filter(|v| v.end <= USER_TOP) {
        let mut p = Presence::default();
        let mut addr = v.start;
        while addr < v.end {
            let n = ((v.end - addr) / page).min(CHUNK_PAGES);
            buf.resize((n * 8) as usize, 0);
            let got = f
                .read_at(&mut buf, addr / page * 8)
                .map_err(|e| Error::proc(&path, e))?;
            if got == 0 {
                break;
            }
            let entries: Vec<u64> = buf[..got - got % 8]
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            p.add(addr, &entries, page);
            addr += entries.len() as u64 * page;
        }
        v.present_pages = p.present;
        v.swapped_pages = p.swapped;
        v.populated = p.ranges;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_runs() {
        let mut p = Presence::default();
        let e = [PM_PRESENT, PM_PRESENT, 0, PM_SWAPPED, PM_PRESENT | 5, 0];
        p.add(0x1000, &e, 0x1000);
        assert_eq!(p.present, 3);
        assert_eq!(p.swapped, 1);
        assert_eq!(
            p.ranges,
            vec![
                PageRange {
                    start: 0x1000,
                    pages: 2
                },
                PageRange {
                    start: 0x4000,
                    pages: 2
                }
            ]
        );
        // A later chunk continues the last run.
        p.add(0x7000, &[PM_PRESENT], 0x1000);
        assert_eq!(p.ranges.len(), 3);
        p.add(0x8000, &[PM_PRESENT], 0x1000);
        assert_eq!(p.ranges.len(), 3);
        assert_eq!(p.ranges[2].pages, 2);
    }

    #[test]
    fn nothing_present() {
        let mut p = Presence::default();
        p.add(0, &[0; 100], 4096);
        assert_eq!(p, Presence::default());
    }
}

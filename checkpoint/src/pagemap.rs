//! Which pages of each mapping are populated (present in RAM or swapped).
//! One `PAGEMAP_SCAN` ioctl over the whole address space returns only the
//! populated runs; kernels without it (< 6.7) fall back to reading
//! `/proc/PID/pagemap`, one `pread` per mapping (chunked), never one call
//! per page.

use crate::procfs::maps::{Backing, PageRange, Vma};
use crate::Error;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
/// Entries read per `pread` (512 KiB of pagemap).
const CHUNK_PAGES: u64 = 64 * 1024;
/// First address outside the user half of the address space.
const USER_TOP: u64 = 0x8000_0000_0000;

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 = 0xc060_6610;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Regions returned per ioctl.
const SCAN_BATCH: usize = 512;

#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// Running tally of one mapping's pages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Presence {
    pub present: u64,
    pub swapped: u64,
    pub ranges: Vec<PageRange>,
}

impl Presence {
    /// Adds `pages` consecutive populated pages starting at `addr`.
    fn add_run(&mut self, addr: u64, pages: u64, page: u64) {
        match self.ranges.last_mut() {
            Some(r) if r.start + r.pages * page == addr => r.pages += pages,
            _ => self.ranges.push(PageRange { start: addr, pages }),
        }
    }

    /// Adds the raw pagemap entries of consecutive pages starting at `addr`.
    pub fn add_entries(&mut self, mut addr: u64, entries: &[u64], page: u64) {
        for &e in entries {
            let present = e & PM_PRESENT != 0;
            let swapped = e & PM_SWAPPED != 0;
            self.present += u64::from(present);
            self.swapped += u64::from(swapped);
            if present || swapped {
                self.add_run(addr, 1, page);
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

/// Fills `present_pages`, `swapped_pages` and `populated` of every mapping
/// (`vmas` sorted by address, as `/proc` lists them).
pub fn fill(pid: i32, vmas: &mut [Vma]) -> Result<(), Error> {
    let path = format!("/proc/{pid}/pagemap");
    let f = File::open(&path).map_err(|e| Error::proc(&path, e))?;
    let page = page_size();
    let user: Vec<usize> = (0..vmas.len())
        .filter(|&i| vmas[i].end <= USER_TOP)
        .collect();
    let (Some(&first), Some(&last)) = (user.first(), user.last()) else {
        return Ok(());
    };
    match scan(&f, vmas[first].start, vmas[last].end) {
        Ok(regions) => {
            let presence = assign(&regions, vmas, page);
            for (v, p) in vmas.iter_mut().zip(presence) {
                v.present_pages = p.present;
                v.swapped_pages = p.swapped;
                v.populated = p.ranges;
            }
            Ok(())
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
            fill_by_reading(&f, &path, &mut vmas[first..=last], page)
        }
        Err(e) => Err(Error::proc(path, e)),
    }
}

/// All populated regions in `[start, end)` via `PAGEMAP_SCAN`.
fn scan(f: &File, start: u64, end: u64) -> io::Result<Vec<Region>> {
    let mut out = Vec::new();
    let mut buf = vec![Region::default(); SCAN_BATCH];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: at,
            end,
            vec: buf.as_mut_ptr() as u64,
            vec_len: buf.len() as u64,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE,
            ..PmScanArg::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at `buf`,
        // writable for `vec_len` regions; both outlive the call.
        let n = unsafe { libc::ioctl(f.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        out.extend_from_slice(&buf[..(n as usize).min(buf.len())]);
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(out)
}

/// Splits scan regions over the mappings they fall in.
pub fn assign(regions: &[Region], vmas: &[Vma], page: u64) -> Vec<Presence> {
    let mut out: Vec<Presence> = vmas.iter().map(|_| Presence::default()).collect();
    let mut vi = 0;
    for r in regions {
        let mut start = r.start;
        while start < r.end {
            while vi < vmas.len() && vmas[vi].end <= start {
                vi += 1;
            }
            let Some(v) = vmas.get(vi) else { break };
            if v.start >= r.end {
                break;
            }
            let s = start.max(v.start);
            let e = r.end.min(v.end);
            let pages = (e - s) / page;
            let p = &mut out[vi];
            if r.categories & PAGE_IS_PRESENT != 0 {
                p.present += pages;
            }
            if r.categories & PAGE_IS_SWAPPED != 0 {
                p.swapped += pages;
            }
            // A page cache page mapped by a file mapping is the file's
            // content, not something the process wrote: not populated.
            let unmodified = r.categories & PAGE_IS_FILE != 0 && v.backing == Backing::File;
            if !unmodified {
                p.add_run(s, pages, page);
            }
            start = e;
        }
    }
    out
}

fn fill_by_reading(f: &File, path: &str, vmas: &mut [Vma], page: u64) -> Result<(), Error> {
    let mut buf = vec![0u8; (CHUNK_PAGES * 8) as usize];
    for v in vmas.iter_mut().filter(|v| v.end <= USER_TOP) {
        let mut p = Presence::default();
        let mut addr = v.start;
        while addr < v.end {
            let n = ((v.end - addr) / page).min(CHUNK_PAGES) as usize;
            let got = f
                .read_at(&mut buf[..n * 8], addr / page * 8)
                .map_err(|e| Error::proc(path, e))?;
            if got < 8 {
                break;
            }
            let entries: Vec<u64> = buf[..got - got % 8]
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            p.add_entries(addr, &entries, page);
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
    use crate::procfs::maps::parse_line;

    #[test]
    fn merges_runs_of_entries() {
        let mut p = Presence::default();
        let e = [PM_PRESENT, PM_PRESENT, 0, PM_SWAPPED, PM_PRESENT | 5, 0];
        p.add_entries(0x1000, &e, 0x1000);
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
        p.add_entries(0x7000, &[PM_PRESENT], 0x1000);
        assert_eq!(p.ranges.len(), 3);
        p.add_entries(0x8000, &[PM_PRESENT], 0x1000);
        assert_eq!(p.ranges.len(), 3);
        assert_eq!(p.ranges[2].pages, 2);
    }

    #[test]
    fn nothing_present() {
        let mut p = Presence::default();
        p.add_entries(0, &[0; 100], 4096);
        assert_eq!(p, Presence::default());
        assert_eq!(assign(&[], &[], 4096), vec![]);
    }

    #[test]
    fn page_cache_pages_of_file_mappings_are_not_populated() {
        let vmas = vec![parse_line("10000-14000 rw-p 00000000 fd:01 42 /lib/x.so").unwrap()];
        let r = |start, end, categories| Region {
            start,
            end,
            categories,
        };
        let regions = [
            // Read but never written: the file's pages.
            r(0x10000, 0x12000, PAGE_IS_PRESENT | PAGE_IS_FILE),
            // Written: private anonymous copies.
            r(0x12000, 0x13000, PAGE_IS_PRESENT),
            r(0x13000, 0x14000, PAGE_IS_SWAPPED),
        ];
        let p = assign(&regions, &vmas, 0x1000);
        assert_eq!((p[0].present, p[0].swapped), (3, 1));
        assert_eq!(
            p[0].ranges,
            [PageRange {
                start: 0x12000,
                pages: 2
            }]
        );
    }

    #[test]
    fn assigns_regions_across_mappings() {
        let vmas = vec![
            parse_line("10000-14000 rw-p 00000000 00:00 0").unwrap(),
            parse_line("14000-18000 rw-p 00000000 00:00 0").unwrap(),
            parse_line("20000-30000 rw-p 00000000 00:00 0").unwrap(),
        ];
        let r = |start, end, categories| Region {
            start,
            end,
            categories,
        };
        let regions = [
            // Crosses the boundary between the first two mappings.
            r(0x12000, 0x16000, PAGE_IS_PRESENT),
            r(0x16000, 0x17000, PAGE_IS_SWAPPED),
            r(0x21000, 0x22000, PAGE_IS_PRESENT),
            r(0x22000, 0x24000, PAGE_IS_PRESENT),
        ];
        let p = assign(&regions, &vmas, 0x1000);
        assert_eq!((p[0].present, p[0].swapped), (2, 0));
        assert_eq!(
            p[0].ranges,
            [PageRange {
                start: 0x12000,
                pages: 2
            }]
        );
        assert_eq!((p[1].present, p[1].swapped), (2, 1));
        assert_eq!(
            p[1].ranges,
            [PageRange {
                start: 0x14000,
                pages: 3
            }]
        );
        assert_eq!(p[2].present, 3);
        assert_eq!(
            p[2].ranges,
            [PageRange {
                start: 0x21000,
                pages: 3
            }]
        );
    }

    #[test]
    fn scan_agrees_with_reading_for_self() {
        let f = File::open("/proc/self/pagemap").unwrap();
        let text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let vmas: Vec<Vma> = crate::procfs::maps::parse_maps(&text)
            .unwrap()
            .into_iter()
            .filter(|v| v.end <= USER_TOP && v.name == "[stack]")
            .collect();
        let regions = scan(&f, vmas[0].start, vmas[0].end).unwrap();
        let by_scan = assign(&regions, &vmas, page_size());
        assert!(by_scan[0].present > 0);
        let mut read = vmas.clone();
        fill_by_reading(&f, "self", &mut read, page_size()).unwrap();
        // The stack may grow between the two looks; allow a little slack.
        assert!(by_scan[0].present.abs_diff(read[0].present_pages) <= 8);
    }
}

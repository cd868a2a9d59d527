//! The post-copy page state machine of one migrated address space on the
//! destination (DESIGN.md §5.3). Pure: no I/O, no clock; the caller turns
//! [`Action`]s into `UFFDIO_ZEROPAGE`/`UFFDIO_COPY`/`UFFDIO_WAKE` and page
//! requests, and reports arrivals back.
//!
//! Every page of a registered region is in one [`PageState`]:
//! `NotTouchedAtOrigin` (zero-filled locally on fault, never fetched),
//! `AtOrigin` (must be fetched), `InFlight` (requested, not arrived) or
//! `Present`. A background pusher ([`Postcopy::next_push_batch`]) streams
//! the `AtOrigin` pages in batches that start at 64 KiB, double while no
//! fault came since the previous batch (up to 1 MiB) and drop back to
//! 64 KiB on every fault.
//!
//! Back migration (later): pages written on a node must win over stale
//! copies at the origin; this machine never overwrites a `Present` page.

use crate::PAGE_SIZE;

/// First (and post-fault) background batch.
pub const MIN_PUSH_BYTES: u64 = 64 << 10;
/// Largest background batch. The pager keeps several in flight; a 1 MiB
/// batch mostly stays in cache while it is read, encrypted, decrypted and
/// installed (measured here, per 2 GiB: the origin's sending and the
/// pager's receiving took 1.1–1.9 s and 1.1–1.3 s with 4 MiB batches,
/// 0.9–1.2 s and 0.9–1.1 s with 1 MiB).
pub const MAX_PUSH_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Never populated at the origin: zero-fill locally, no network.
    NotTouchedAtOrigin,
    /// Content only at the origin.
    AtOrigin,
    /// Requested from the origin (by a fault or the pusher), not arrived.
    InFlight,
    /// Installed in the destination's memory.
    Present,
}

/// `pages` consecutive pages starting at page-aligned `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageRange {
    pub start: u64,
    pub pages: u64,
}

impl PageRange {
    pub fn end(&self) -> u64 {
        self.start + self.pages * PAGE_SIZE
    }

    pub fn bytes(&self) -> u64 {
        self.pages * PAGE_SIZE
    }
}

/// What to do about one fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `UFFDIO_ZEROPAGE` this page (now counted `Present`).
    ZeroFill(PageRange),
    /// Request these pages from the origin (now `InFlight`); their arrival
    /// wakes the faulting thread.
    Fetch(PageRange),
    /// The page is already requested: nothing to do, its arrival wakes us.
    AlreadyInFlight,
    /// The page is already installed (a fault raced its arrival):
    /// `UFFDIO_WAKE` the page.
    Present(PageRange),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostcopyError {
    #[error("region {start:#x}-{end:#x} is empty or not page-aligned")]
    BadRegion { start: u64, end: u64 },
    #[error("region {start:#x}-{end:#x} overlaps an existing region")]
    Overlap { start: u64, end: u64 },
    #[error("{start:#x}-{end:#x} is not inside one region")]
    OutsideRegion { start: u64, end: u64 },
    #[error("fault at {0:#x} outside every migrated region")]
    UnknownAddress(u64),
}

#[derive(Debug, Clone)]
struct Region {
    start: u64,
    end: u64,
    pages: Vec<PageState>,
}

/// Page counts per state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub not_touched: u64,
    pub at_origin: u64,
    pub in_flight: u64,
    pub present: u64,
}

/// One migrated address space.
#[derive(Debug)]
pub struct Postcopy {
    /// Sorted by start, disjoint.
    regions: Vec<Region>,
    counts: Counts,
    /// Pages fetched per fault (the faulting page and following `AtOrigin`
    /// pages of the same region), at least 1.
    fault_window: u64,
    push_bytes: u64,
    /// A fault arrived since the last batch (or no batch yet).
    faulted_since_push: bool,
    pushed_any: bool,
    /// Pusher position: (region index, page index).
    cursor: (usize, usize),
}

impl Default for Postcopy {
    fn default() -> Self {
        Postcopy::new()
    }
}

impl Postcopy {
    pub fn new() -> Postcopy {
        Postcopy {
            regions: Vec::new(),
            counts: Counts::default(),
            fault_window: 1,
            push_bytes: MIN_PUSH_BYTES,
            faulted_since_push: false,
            pushed_any: false,
            cursor: (0, 0),
        }
    }

    /// Pages fetched per fault, counting the faulting one (default 1).
    pub fn set_fault_window(&mut self, pages: u64) {
        self.fault_window = pages.max(1);
    }

    /// Adds region `[start, end)` with every page `NotTouchedAtOrigin`.
    /// Use one region per VMA: no range this machine returns crosses a
    /// region, because one `UFFDIO_COPY` cannot cross a VMA.
    pub fn add_region(&mut self, start: u64, end: u64) -> Result<(), PostcopyError> {
        if start >= end || !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
            return Err(PostcopyError::BadRegion { start, end });
        }
        let at = self.regions.partition_point(|r| r.start < start);
        let overlaps_prev = at > 0 && self.regions[at - 1].end > start;
        let overlaps_next = self.regions.get(at).is_some_and(|r| r.start < end);
        if overlaps_prev || overlaps_next {
            return Err(PostcopyError::Overlap { start, end });
        }
        let n = ((end - start) / PAGE_SIZE) as usize;
        self.regions.insert(
            at,
            Region {
                start,
                end,
                pages: vec![PageState::NotTouchedAtOrigin; n],
            },
        );
        self.counts.not_touched += n as u64;
        self.cursor = (0, 0);
        Ok(())
    }

    /// Marks `[start, end)` (inside one region) as populated at the origin.
    /// Only `NotTouchedAtOrigin` pages change.
    pub fn mark_at_origin(&mut self, start: u64, end: u64) -> Result<(), PostcopyError> {
        let (ri, first, last) = self.span(start, end)?;
        for i in first..last {
            let p = &mut self.regions[ri].pages[i];
            if *p == PageState::NotTouchedAtOrigin {
                *p = PageState::AtOrigin;
                self.counts.not_touched -= 1;
                self.counts.at_origin += 1;
            }
        }
        Ok(())
    }

    /// Region index and page index range for `[start, end)`.
    fn span(&self, start: u64, end: u64) -> Result<(usize, usize, usize), PostcopyError> {
        let bad = PostcopyError::OutsideRegion { start, end };
        if start >= end || !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
            return Err(bad);
        }
        let ri = self.region_of(start).ok_or(bad.clone())?;
        let r = &self.regions[ri];
        if end > r.end {
            return Err(bad);
        }
        Ok((
            ri,
            ((start - r.start) / PAGE_SIZE) as usize,
            ((end - r.start) / PAGE_SIZE) as usize,
        ))
    }

    fn region_of(&self, addr: u64) -> Option<usize> {
        let at = self.regions.partition_point(|r| r.start <= addr);
        let ri = at.checked_sub(1)?;
        (addr < self.regions[ri].end).then_some(ri)
    }

    /// State of the page holding `addr`, if it is in a region.
    pub fn state(&self, addr: u64) -> Option<PageState> {
        let ri = self.region_of(addr)?;
        let r = &self.regions[ri];
        Some(r.pages[((addr - r.start) / PAGE_SIZE) as usize])
    }

    fn set(&mut self, ri: usize, i: usize, to: PageState) {
        let from = std::mem::replace(&mut self.regions[ri].pages[i], to);
        *self.count_mut(from) -= 1;
        *self.count_mut(to) += 1;
    }

    fn count_mut(&mut self, s: PageState) -> &mut u64 {
        match s {
            PageState::NotTouchedAtOrigin => &mut self.counts.not_touched,
            PageState::AtOrigin => &mut self.counts.at_origin,
            PageState::InFlight => &mut self.counts.in_flight,
            PageState::Present => &mut self.counts.present,
        }
    }

    /// Decides what to do about a fault at `addr` (any address in the page).
    pub fn on_fault(&mut self, addr: u64) -> Result<Action, PostcopyError> {
        let ri = self
            .region_of(addr)
            .ok_or(PostcopyError::UnknownAddress(addr))?;
        self.push_bytes = MIN_PUSH_BYTES;
        self.faulted_since_push = true;
        let r = &self.regions[ri];
        let i = ((addr - r.start) / PAGE_SIZE) as usize;
        let page = PageRange {
            start: r.start + i as u64 * PAGE_SIZE,
            pages: 1,
        };
        Ok(match r.pages[i] {
            PageState::NotTouchedAtOrigin => {
                self.set(ri, i, PageState::Present);
                Action::ZeroFill(page)
            }
            PageState::InFlight => Action::AlreadyInFlight,
            PageState::Present => Action::Present(page),
            PageState::AtOrigin => {
                let mut n = 0usize;
                while (n as u64) < self.fault_window
                    && self.regions[ri].pages.get(i + n) == Some(&PageState::AtOrigin)
                {
                    self.set(ri, i + n, PageState::InFlight);
                    n += 1;
                }
                Action::Fetch(PageRange {
                    start: page.start,
                    pages: n as u64,
                })
            }
        })
    }

    /// Pages of `range` arrived. Returns the runs to install with
    /// `UFFDIO_COPY` (which wakes their waiters), now `Present`: the pages
    /// that were `InFlight` or `AtOrigin`. `Present` pages are left out
    /// (never overwrite a local page), and so are `NotTouchedAtOrigin` ones
    /// (zero by definition, e.g. discarded while their data travelled).
    pub fn on_pages_arrived(&mut self, range: PageRange) -> Result<Vec<PageRange>, PostcopyError> {
        let (ri, first, last) = self.span(range.start, range.end())?;
        let base = self.regions[ri].start;
        let mut runs: Vec<PageRange> = Vec::new();
        for i in first..last {
            if !matches!(
                self.regions[ri].pages[i],
                PageState::InFlight | PageState::AtOrigin
            ) {
                continue;
            }
            self.set(ri, i, PageState::Present);
            let addr = base + i as u64 * PAGE_SIZE;
            match runs.last_mut() {
                Some(r) if r.end() == addr => r.pages += 1,
                _ => runs.push(PageRange {
                    start: addr,
                    pages: 1,
                }),
            }
        }
        Ok(runs)
    }

    /// A request for `range` failed: its `InFlight` pages go back to
    /// `AtOrigin` so a later fault or batch asks again.
    pub fn on_fetch_failed(&mut self, range: PageRange) -> Result<(), PostcopyError> {
        let (ri, first, last) = self.span(range.start, range.end())?;
        for i in first..last {
            if self.regions[ri].pages[i] == PageState::InFlight {
                self.set(ri, i, PageState::AtOrigin);
            }
        }
        Ok(())
    }

    /// The program dropped `[start, end)` (uffd REMOVE event for
    /// `madvise(MADV_DONTNEED)`, or UNMAP for `munmap`): every page of the
    /// migrated regions in that range now reads as zero, so it becomes
    /// `NotTouchedAtOrigin` — never fetched, and data still in flight for it
    /// is not installed. Parts outside the regions are ignored. Returns the
    /// number of pages that changed state.
    pub fn on_discard(&mut self, start: u64, end: u64) -> u64 {
        self.zero_where(start, end, |p| p != PageState::NotTouchedAtOrigin)
    }

    /// Makes the pages of `[start, end)` (inside the regions) for which
    /// `which` holds `NotTouchedAtOrigin`; returns how many changed.
    fn zero_where(&mut self, start: u64, end: u64, which: impl Fn(PageState) -> bool) -> u64 {
        let start = start & !(PAGE_SIZE - 1);
        let mut changed = 0;
        let first_region = self.regions.partition_point(|r| r.end <= start);
        for ri in first_region..self.regions.len() {
            let (rs, re) = (self.regions[ri].start, self.regions[ri].end);
            if rs >= end {
                break;
            }
            let a = ((start.max(rs) - rs) / PAGE_SIZE) as usize;
            let b = ((end.min(re) - rs).div_ceil(PAGE_SIZE)) as usize;
            for i in a..b {
                if which(self.regions[ri].pages[i]) {
                    self.set(ri, i, PageState::NotTouchedAtOrigin);
                    changed += 1;
                }
            }
        }
        changed
    }

    /// The origin reports `[start, end)` was never populated there (a
    /// population map that arrives after the process resumed): pages still
    /// `AtOrigin` in it become `NotTouchedAtOrigin`. Pages in flight or
    /// present are left alone. Returns the number changed.
    pub fn on_origin_untouched(&mut self, start: u64, end: u64) -> u64 {
        self.zero_where(start, end, |p| p == PageState::AtOrigin)
    }

    /// The state of a child the process forked: pages present here were
    /// copied by the fork, pages in flight here are still missing there
    /// (`AtOrigin`), the rest is the same. The pusher starts afresh.
    pub fn fork_child(&self) -> Postcopy {
        let mut child = Postcopy::new();
        child.fault_window = self.fault_window;
        child.regions = self.regions.clone();
        child.counts = self.counts;
        for r in &mut child.regions {
            for p in r.pages.iter_mut().filter(|p| **p == PageState::InFlight) {
                *p = PageState::AtOrigin;
            }
        }
        child.counts.at_origin += child.counts.in_flight;
        child.counts.in_flight = 0;
        child
    }

    /// Current background batch size in bytes.
    pub fn push_batch_bytes(&self) -> u64 {
        self.push_bytes
    }

    /// The next background batch: runs of `AtOrigin` pages (each inside one
    /// region, in address order from where the previous batch stopped,
    /// wrapping), at most the current batch size in total, now `InFlight`.
    /// Empty when nothing is left at the origin.
    pub fn next_push_batch(&mut self) -> Vec<PageRange> {
        let mut out: Vec<PageRange> = Vec::new();
        if self.counts.at_origin == 0 || self.regions.is_empty() {
            return out;
        }
        if self.pushed_any && !self.faulted_since_push {
            self.push_bytes = (self.push_bytes * 2).min(MAX_PUSH_BYTES);
        }
        self.pushed_any = true;
        self.faulted_since_push = false;
        let mut budget = (self.push_bytes / PAGE_SIZE) as usize;
        let (mut ri, mut i) = self.cursor;
        if ri >= self.regions.len() {
            (ri, i) = (0, 0);
        }
        // Visit every page at most once: the cursor's region is seen twice
        // (its tail now, its head after wrapping).
        for _ in 0..=self.regions.len() {
            let len = self.regions[ri].pages.len();
            while budget > 0 && i < len && self.counts.at_origin > 0 {
                if self.regions[ri].pages[i] != PageState::AtOrigin {
                    i += 1;
                    continue;
                }
                let addr = self.regions[ri].start + i as u64 * PAGE_SIZE;
                self.set(ri, i, PageState::InFlight);
                // Runs never cross regions, even adjacent ones (one
                // UFFDIO_COPY cannot cross a VMA).
                match out.last_mut() {
                    Some(r) if r.end() == addr && i > 0 => r.pages += 1,
                    _ => out.push(PageRange {
                        start: addr,
                        pages: 1,
                    }),
                }
                budget -= 1;
                i += 1;
            }
            if budget == 0 || self.counts.at_origin == 0 {
                break;
            }
            ri = (ri + 1) % self.regions.len();
            i = 0;
        }
        self.cursor = (ri, i);
        out
    }

    /// Pages that still need the network (`AtOrigin` + `InFlight`).
    pub fn remaining(&self) -> u64 {
        self.counts.at_origin + self.counts.in_flight
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const P: u64 = PAGE_SIZE;

    fn one_region(pages: u64, origin: &[(u64, u64)]) -> Postcopy {
        let mut pc = Postcopy::new();
        pc.add_region(0x10_0000, 0x10_0000 + pages * P).unwrap();
        for &(a, b) in origin {
            pc.mark_at_origin(0x10_0000 + a * P, 0x10_0000 + b * P)
                .unwrap();
        }
        pc
    }

    fn range(start: u64, pages: u64) -> PageRange {
        PageRange { start, pages }
    }

    #[test]
    fn region_validation() {
        let mut pc = Postcopy::new();
        assert!(matches!(
            pc.add_region(0x1000, 0x1000),
            Err(PostcopyError::BadRegion { .. })
        ));
        assert!(matches!(
            pc.add_region(0x1001, 0x3000),
            Err(PostcopyError::BadRegion { .. })
        ));
        pc.add_region(0x4000, 0x8000).unwrap();
        pc.add_region(0x1000, 0x2000).unwrap();
        pc.add_region(0x8000, 0x9000).unwrap();
        for (a, b) in [(0x3000, 0x5000), (0x7000, 0x8000), (0x0, 0x10000)] {
            assert_eq!(
                pc.add_region(a, b),
                Err(PostcopyError::Overlap { start: a, end: b })
            );
        }
        assert_eq!(
            pc.mark_at_origin(0x7000, 0x9000),
            Err(PostcopyError::OutsideRegion {
                start: 0x7000,
                end: 0x9000
            })
        );
        assert_eq!(
            pc.on_fault(0x3000),
            Err(PostcopyError::UnknownAddress(0x3000))
        );
        assert_eq!(
            pc.on_fault(0x9000),
            Err(PostcopyError::UnknownAddress(0x9000))
        );
        assert_eq!(pc.state(0x8fff), Some(PageState::NotTouchedAtOrigin));
        assert_eq!(pc.counts().not_touched, 6);
    }

    #[test]
    fn fault_actions() {
        let mut pc = one_region(8, &[(2, 6)]);
        let b = 0x10_0000;
        assert_eq!(pc.remaining(), 4);
        assert_eq!(pc.on_fault(b + 5), Ok(Action::ZeroFill(range(b, 1))));
        assert_eq!(pc.on_fault(b + 7), Ok(Action::Present(range(b, 1))));
        assert_eq!(
            pc.on_fault(b + 2 * P + 9),
            Ok(Action::Fetch(range(b + 2 * P, 1)))
        );
        // A second thread on the same page merges.
        assert_eq!(pc.on_fault(b + 2 * P), Ok(Action::AlreadyInFlight));
        assert_eq!(pc.remaining(), 4);
        assert_eq!(
            pc.on_pages_arrived(range(b + 2 * P, 1)),
            Ok(vec![range(b + 2 * P, 1)])
        );
        assert_eq!(pc.remaining(), 3);
        assert_eq!(
            pc.on_fault(b + 2 * P),
            Ok(Action::Present(range(b + 2 * P, 1)))
        );
        // Duplicate arrival installs nothing.
        assert_eq!(pc.on_pages_arrived(range(b + 2 * P, 1)), Ok(vec![]));
        // Fault window: fetch stops at the end of the AtOrigin run.
        pc.set_fault_window(8);
        assert_eq!(
            pc.on_fault(b + 4 * P),
            Ok(Action::Fetch(range(b + 4 * P, 2)))
        );
        pc.on_fetch_failed(range(b + 4 * P, 2)).unwrap();
        assert_eq!(pc.state(b + 4 * P), Some(PageState::AtOrigin));
        assert_eq!(
            pc.on_fault(b + 3 * P),
            Ok(Action::Fetch(range(b + 3 * P, 3)))
        );
        assert_eq!(
            pc.counts(),
            Counts {
                not_touched: 3,
                at_origin: 0,
                in_flight: 3,
                present: 2
            }
        );
    }

    #[test]
    fn arrivals_skip_present_pages() {
        let mut pc = one_region(6, &[(0, 6)]);
        let b = 0x10_0000;
        assert_eq!(
            pc.on_fault(b + 2 * P),
            Ok(Action::Fetch(range(b + 2 * P, 1)))
        );
        pc.on_pages_arrived(range(b + 2 * P, 1)).unwrap();
        assert_eq!(
            pc.on_pages_arrived(range(b, 6)),
            Ok(vec![range(b, 2), range(b + 3 * P, 3)])
        );
        assert_eq!(pc.remaining(), 0);
        assert_eq!(pc.next_push_batch(), vec![]);
    }

    #[test]
    fn discarded_pages_are_zero_and_late_data_is_dropped() {
        let mut pc = Postcopy::new();
        pc.add_region(0x1000, 0x5000).unwrap();
        pc.add_region(0x8000, 0xa000).unwrap();
        pc.mark_at_origin(0x1000, 0x5000).unwrap();
        pc.mark_at_origin(0x8000, 0xa000).unwrap();
        assert_eq!(pc.on_fault(0x2000), Ok(Action::Fetch(range(0x2000, 1))));
        assert_eq!(pc.on_fault(0x3000), Ok(Action::Fetch(range(0x3000, 1))));
        pc.on_pages_arrived(range(0x3000, 1)).unwrap();
        // Spans a region's tail, a gap and part of the next region; the end
        // is not page-aligned.
        assert_eq!(pc.on_discard(0x2000, 0x8800), 4);
        assert_eq!(pc.state(0x3000), Some(PageState::NotTouchedAtOrigin));
        assert_eq!(pc.state(0x1000), Some(PageState::AtOrigin));
        assert_eq!(pc.state(0x9000), Some(PageState::AtOrigin));
        // The fetch of 0x2000 completes after the discard: not installed.
        assert_eq!(pc.on_pages_arrived(range(0x2000, 1)), Ok(vec![]));
        assert_eq!(pc.on_fault(0x2000), Ok(Action::ZeroFill(range(0x2000, 1))));
        assert_eq!(pc.remaining(), 2);
        assert_eq!(pc.on_discard(0x0, 0x1000), 0);
        assert_eq!(pc.on_discard(0xa000, 0xb000), 0);
    }

    #[test]
    fn a_late_population_map_zeroes_only_pages_still_at_origin() {
        let mut pc = Postcopy::new();
        pc.add_region(0x1000, 0x6000).unwrap();
        pc.mark_at_origin(0x1000, 0x6000).unwrap();
        assert_eq!(pc.on_fault(0x1000), Ok(Action::Fetch(range(0x1000, 1))));
        assert_eq!(pc.on_fault(0x2000), Ok(Action::Fetch(range(0x2000, 1))));
        pc.on_pages_arrived(range(0x2000, 1)).unwrap();
        // The origin never had 0x1000..0x4000: only 0x3000 was still AtOrigin.
        assert_eq!(pc.on_origin_untouched(0x1000, 0x4000), 1);
        assert_eq!(pc.state(0x1000), Some(PageState::InFlight));
        assert_eq!(pc.state(0x2000), Some(PageState::Present));
        assert_eq!(pc.state(0x3000), Some(PageState::NotTouchedAtOrigin));
        assert_eq!(pc.state(0x4000), Some(PageState::AtOrigin));
        assert_eq!(pc.on_fault(0x3000), Ok(Action::ZeroFill(range(0x3000, 1))));
        // The in-flight zeros still arrive and are installed.
        assert_eq!(
            pc.on_pages_arrived(range(0x1000, 1)),
            Ok(vec![range(0x1000, 1)])
        );
        assert_eq!(pc.remaining(), 2);
        assert_eq!(pc.on_origin_untouched(0x8000, 0x9000), 0);
    }

    #[test]
    fn a_forked_child_fetches_what_was_in_flight() {
        let mut pc = Postcopy::new();
        pc.add_region(0x1000, 0x5000).unwrap();
        pc.mark_at_origin(0x1000, 0x4000).unwrap();
        assert_eq!(pc.on_fault(0x1000), Ok(Action::Fetch(range(0x1000, 1))));
        assert_eq!(pc.on_fault(0x2000), Ok(Action::Fetch(range(0x2000, 1))));
        pc.on_pages_arrived(range(0x2000, 1)).unwrap();
        let mut child = pc.fork_child();
        assert_eq!(child.state(0x1000), Some(PageState::AtOrigin));
        assert_eq!(child.state(0x2000), Some(PageState::Present));
        assert_eq!(child.state(0x3000), Some(PageState::AtOrigin));
        assert_eq!(child.state(0x4000), Some(PageState::NotTouchedAtOrigin));
        assert_eq!(child.remaining(), 2);
        assert_eq!(child.counts().in_flight, 0);
        assert_eq!(child.on_fault(0x1000), Ok(Action::Fetch(range(0x1000, 1))));
        // The parent is unchanged.
        assert_eq!(pc.state(0x1000), Some(PageState::InFlight));
        assert_eq!(pc.remaining(), 2);
    }

    #[test]
    fn pusher_grows_while_idle_and_resets_on_fault() {
        // 3 regions, 24 MiB at origin in total.
        let mut pc = Postcopy::new();
        let mib = 1 << 20;
        pc.add_region(0x1000_0000, 0x1000_0000 + 16 * mib).unwrap();
        pc.add_region(0x2000_0000, 0x2000_0000 + 4 * mib).unwrap();
        pc.add_region(0x3000_0000, 0x3000_0000 + 4 * mib).unwrap();
        pc.mark_at_origin(0x1000_0000, 0x1000_0000 + 16 * mib)
            .unwrap();
        pc.mark_at_origin(0x2000_0000, 0x2000_0000 + 4 * mib)
            .unwrap();
        pc.mark_at_origin(0x3000_0000, 0x3000_0000 + 4 * mib)
            .unwrap();
        let bytes = |b: &[PageRange]| b.iter().map(|r| r.bytes()).sum::<u64>();
        let sizes: Vec<u64> = (0..8).map(|_| bytes(&pc.next_push_batch())).collect();
        let want: Vec<u64> = (0..8)
            .map(|i| (MIN_PUSH_BYTES << i).min(MAX_PUSH_BYTES))
            .collect();
        assert_eq!(sizes, want);
        assert_eq!(want[0], 64 << 10);
        assert_eq!(want[7], MAX_PUSH_BYTES, "reaches the largest batch");
        assert_eq!(pc.push_batch_bytes(), MAX_PUSH_BYTES);
        // A fault (here in a page already pushed) drops back to 64 KiB.
        assert_eq!(pc.on_fault(0x1000_0000), Ok(Action::AlreadyInFlight));
        assert_eq!(pc.push_batch_bytes(), MIN_PUSH_BYTES);
        let b = pc.next_push_batch();
        assert_eq!(bytes(&b), 64 << 10);
        let b2 = pc.next_push_batch();
        assert_eq!(bytes(&b2), 128 << 10);
        assert_eq!(
            b2[0].start,
            b[b.len() - 1].end(),
            "batches continue from the cursor"
        );
        // Runs never cross a region: drain and check.
        let mut seen = 0;
        loop {
            let b = pc.next_push_batch();
            if b.is_empty() {
                break;
            }
            for r in b {
                let ri = pc.region_of(r.start).unwrap();
                assert!(r.end() <= pc.regions[ri].end);
                seen += r.pages;
            }
        }
        assert_eq!(pc.counts().at_origin, 0);
        assert_eq!(pc.counts().in_flight, 6144);
        assert!(seen > 0);
    }

    /// Random faults, arrivals, failures and batches against a per-page
    /// reference model.
    #[test]
    fn random_schedules_match_the_reference() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200 {
            let mut pc = Postcopy::new();
            pc.set_fault_window(1 + next() % 4);
            let window = pc.fault_window;
            let mut model: BTreeMap<u64, PageState> = BTreeMap::new();
            let mut regions = Vec::new();
            let mut base = 0x40_0000u64;
            for _ in 0..1 + next() % 4 {
                let pages = 1 + next() % 40;
                base += (next() % 3) * P; // sometimes adjacent, sometimes a gap
                pc.add_region(base, base + pages * P).unwrap();
                regions.push((base, base + pages * P));
                for i in 0..pages {
                    model.insert(base + i * P, PageState::NotTouchedAtOrigin);
                }
                for _ in 0..next() % 4 {
                    let a = next() % pages;
                    let b = a + 1 + next() % (pages - a);
                    pc.mark_at_origin(base + a * P, base + b * P).unwrap();
                    for i in a..b {
                        model.insert(base + i * P, PageState::AtOrigin);
                    }
                }
                base += pages * P;
            }
            let lo = regions[0].0 - 2 * P;
            let hi = base + 2 * P;
            let mut outstanding: Vec<PageRange> = Vec::new();
            for step in 0..400 {
                match next() % 6 {
                    5 => {
                        let a = lo + next() % (hi - lo);
                        let b = a + next() % (8 * P);
                        let mut want = 0;
                        for (&pg, st) in model.range_mut(a & !(P - 1)..b) {
                            debug_assert!(pg < b);
                            if *st != PageState::NotTouchedAtOrigin {
                                *st = PageState::NotTouchedAtOrigin;
                                want += 1;
                            }
                        }
                        assert_eq!(pc.on_discard(a, b), want, "round {round} step {step}");
                    }
                    0 | 1 => {
                        let addr = lo + next() % (hi - lo);
                        let page = addr & !(P - 1);
                        let got = pc.on_fault(addr);
                        let Some(&st) = model.get(&page) else {
                            assert_eq!(got, Err(PostcopyError::UnknownAddress(addr)));
                            continue;
                        };
                        let got = got.unwrap();
                        match st {
                            PageState::NotTouchedAtOrigin => {
                                assert_eq!(got, Action::ZeroFill(range(page, 1)));
                                model.insert(page, PageState::Present);
                            }
                            PageState::InFlight => assert_eq!(got, Action::AlreadyInFlight),
                            PageState::Present => assert_eq!(got, Action::Present(range(page, 1))),
                            PageState::AtOrigin => {
                                let mut n = 0;
                                while n < window
                                    && model.get(&(page + n * P)) == Some(&PageState::AtOrigin)
                                    && regions
                                        .iter()
                                        .any(|&(s, e)| s <= page && page + (n + 1) * P <= e)
                                {
                                    model.insert(page + n * P, PageState::InFlight);
                                    n += 1;
                                }
                                assert_eq!(
                                    got,
                                    Action::Fetch(range(page, n)),
                                    "round {round} step {step}"
                                );
                                outstanding.push(range(page, n));
                            }
                        }
                        assert_eq!(pc.push_batch_bytes(), MIN_PUSH_BYTES);
                    }
                    2 if !outstanding.is_empty() => {
                        let r =
                            outstanding.swap_remove((next() % outstanding.len() as u64) as usize);
                        let runs = pc.on_pages_arrived(r).unwrap();
                        let mut want = Vec::new();
                        for i in 0..r.pages {
                            let a = r.start + i * P;
                            if matches!(model[&a], PageState::InFlight | PageState::AtOrigin) {
                                model.insert(a, PageState::Present);
                                want.push(a);
                            }
                        }
                        let got: Vec<u64> = runs
                            .iter()
                            .flat_map(|r| (0..r.pages).map(move |i| r.start + i * P))
                            .collect();
                        assert_eq!(got, want);
                    }
                    3 if !outstanding.is_empty() => {
                        let r =
                            outstanding.swap_remove((next() % outstanding.len() as u64) as usize);
                        pc.on_fetch_failed(r).unwrap();
                        for i in 0..r.pages {
                            let a = r.start + i * P;
                            if model[&a] == PageState::InFlight {
                                model.insert(a, PageState::AtOrigin);
                            }
                        }
                    }
                    _ => {
                        let before = pc.push_batch_bytes();
                        let at_origin_before = model
                            .values()
                            .filter(|s| **s == PageState::AtOrigin)
                            .count() as u64;
                        let batch = pc.next_push_batch();
                        let total: u64 = batch.iter().map(|r| r.pages).sum();
                        if batch.is_empty() {
                            assert_eq!(at_origin_before, 0);
                        } else {
                            assert!(pc.push_batch_bytes() >= before);
                        }
                        // Full batches unless the origin runs out.
                        assert_eq!(
                            total,
                            at_origin_before.min(pc.push_batch_bytes() / P),
                            "round {round} step {step}"
                        );
                        for r in batch {
                            assert!(r.pages >= 1);
                            assert!(regions.iter().any(|&(s, e)| s <= r.start && r.end() <= e));
                            for i in 0..r.pages {
                                let a = r.start + i * P;
                                assert_eq!(model[&a], PageState::AtOrigin);
                                model.insert(a, PageState::InFlight);
                            }
                            outstanding.push(r);
                        }
                    }
                }
                let count = |s| model.values().filter(|&&v| v == s).count() as u64;
                assert_eq!(
                    pc.counts(),
                    Counts {
                        not_touched: count(PageState::NotTouchedAtOrigin),
                        at_origin: count(PageState::AtOrigin),
                        in_flight: count(PageState::InFlight),
                        present: count(PageState::Present),
                    }
                );
                for (&a, &s) in &model {
                    assert_eq!(pc.state(a), Some(s));
                }
            }
            // Drain: the pusher plus arrivals finish everything.
            loop {
                let b = pc.next_push_batch();
                if b.is_empty() {
                    break;
                }
                outstanding.extend(b);
            }
            for r in outstanding.drain(..) {
                pc.on_pages_arrived(r).unwrap();
            }
            assert_eq!(pc.remaining(), 0, "round {round}");
        }
    }
}

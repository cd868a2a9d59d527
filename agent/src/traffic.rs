//! DSM traffic counters per process: faults served from another node and
//! pages carried over the page channels. Pagers and page-channel servers
//! count; the monitor reads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of one process on this node, cumulative.
#[derive(Debug, Default)]
pub struct ProcessTraffic {
    /// userfaultfd faults of the process (any kind).
    pub faults: AtomicU64,
    /// Faults that had to fetch their page from another node.
    pub remote_faults: AtomicU64,
    /// Pages received from another node (on fault or in the background).
    pub pages_in: AtomicU64,
    /// Pages filled with zeros here, never sent.
    pub zero_pages: AtomicU64,
    /// Pages sent to another node.
    pub pages_out: AtomicU64,
}

impl ProcessTraffic {
    fn counts(&self) -> TrafficCounts {
        TrafficCounts {
            remote_faults: self.remote_faults.load(Ordering::Relaxed),
            pages_in: self.pages_in.load(Ordering::Relaxed),
            pages_out: self.pages_out.load(Ordering::Relaxed),
        }
    }
}

/// A reading of the counters that the monitor turns into rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounts {
    pub remote_faults: u64,
    pub pages_in: u64,
    pub pages_out: u64,
}

/// Every process's counters.
#[derive(Debug, Default)]
pub struct Traffic {
    procs: Mutex<BTreeMap<i32, Arc<ProcessTraffic>>>,
}

impl Traffic {
    /// The counters of `pid`, created at first use.
    pub fn of(&self, pid: i32) -> Arc<ProcessTraffic> {
        crate::sync::lock(&self.procs)
            .entry(pid)
            .or_default()
            .clone()
    }

    /// A reading of every process's counters.
    pub fn counts(&self) -> BTreeMap<i32, TrafficCounts> {
        crate::sync::lock(&self.procs)
            .iter()
            .map(|(&pid, t)| (pid, t.counts()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_shared_per_pid() {
        let t = Traffic::default();
        t.of(3).pages_in.fetch_add(5, Ordering::Relaxed);
        t.of(3).pages_in.fetch_add(2, Ordering::Relaxed);
        t.of(4).pages_out.fetch_add(1, Ordering::Relaxed);
        let c = t.counts();
        assert_eq!(c[&3].pages_in, 7);
        assert_eq!(c[&4].pages_out, 1);
    }
}

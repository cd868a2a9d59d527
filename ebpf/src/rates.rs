//! Pure arithmetic on two snapshots: CPU %, run-queue wait % and faults/s
//! per thread and per process.

use std::collections::HashMap;

use crate::snapshot::{Snapshot, ThreadFigures};

/// Rates of one thread between two snapshots.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadRates {
    pub tgid: u32,
    pub tid: u32,
    /// On-CPU time over wall time, in percent of one CPU.
    pub cpu_percent: f64,
    /// Run-queue wait over wall time, in percent.
    pub runq_percent: f64,
    pub faults_per_s: f64,
    pub exited: bool,
}

/// Rates of one process (sums over its threads).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessRates {
    pub tgid: u32,
    pub threads: usize,
    /// Percent of one CPU (may exceed 100 with several threads).
    pub cpu_percent: f64,
    pub runq_percent: f64,
    pub faults_per_s: f64,
}

/// A counter's increase; a counter that went backwards (thread id reused
/// after its figures were removed) counts from zero.
fn delta(cur: u64, prev: u64) -> u64 {
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

/// Per-thread rates between `prev` and `cur` (threads of `cur`; a thread
/// missing from `prev` counts from zero). Empty if no time passed.
pub fn thread_rates(prev: &Snapshot, cur: &Snapshot) -> Vec<ThreadRates> {
    let Some(elapsed_ns) = cur.at_ns.checked_sub(prev.at_ns).filter(|&d| d > 0) else {
        return Vec::new();
    };
    let secs = elapsed_ns as f64 / 1e9;
    let before: HashMap<(u32, u32), &ThreadFigures> =
        prev.threads.iter().map(|t| ((t.tgid, t.tid), t)).collect();
    let zero = ThreadFigures::default();
    cur.threads
        .iter()
        .map(|t| {
            let p = before.get(&(t.tgid, t.tid)).copied().unwrap_or(&zero);
            ThreadRates {
                tgid: t.tgid,
                tid: t.tid,
                cpu_percent: 100.0 * delta(t.oncpu_ns, p.oncpu_ns) as f64 / elapsed_ns as f64,
                runq_percent: 100.0 * delta(t.runq_wait_ns, p.runq_wait_ns) as f64
                    / elapsed_ns as f64,
                faults_per_s: delta(t.faults, p.faults) as f64 / secs,
                exited: t.exited,
            }
        })
        .collect()
}

/// Per-process rates between `prev` and `cur`, sorted by tgid.
pub fn process_rates(prev: &Snapshot, cur: &Snapshot) -> Vec<ProcessRates> {
    let mut by_tgid: std::collections::BTreeMap<u32, ProcessRates> = Default::default();
    for t in thread_rates(prev, cur) {
        let p = by_tgid.entry(t.tgid).or_insert(ProcessRates {
            tgid: t.tgid,
            threads: 0,
            cpu_percent: 0.0,
            runq_percent: 0.0,
            faults_per_s: 0.0,
        });
        p.threads += 1;
        p.cpu_percent += t.cpu_percent;
        p.runq_percent += t.runq_percent;
        p.faults_per_s += t.faults_per_s;
    }
    by_tgid.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(tgid: u32, tid: u32, oncpu_ns: u64, runq_wait_ns: u64, faults: u64) -> ThreadFigures {
        ThreadFigures {
            tgid,
            tid,
            oncpu_ns,
            runq_wait_ns,
            faults,
            ..Default::default()
        }
    }

    fn snap(at_ns: u64, threads: Vec<ThreadFigures>) -> Snapshot {
        Snapshot {
            at_ns,
            threads,
            ..Default::default()
        }
    }

    #[test]
    fn cpu_and_fault_rates_over_one_second() {
        let a = snap(1_000_000_000, vec![thread(5, 5, 100, 0, 10)]);
        let b = snap(
            2_000_000_000,
            vec![thread(5, 5, 250_000_100, 50_000_000, 1010)],
        );
        let r = thread_rates(&a, &b);
        assert_eq!(r.len(), 1);
        assert!((r[0].cpu_percent - 25.0).abs() < 1e-9);
        assert!((r[0].runq_percent - 5.0).abs() < 1e-9);
        assert!((r[0].faults_per_s - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn new_thread_counts_from_zero_and_half_second_scales() {
        let a = snap(0, vec![]);
        let b = snap(500_000_000, vec![thread(5, 6, 500_000_000, 0, 100)]);
        let r = thread_rates(&a, &b);
        assert!((r[0].cpu_percent - 100.0).abs() < 1e-9);
        assert!((r[0].faults_per_s - 200.0).abs() < 1e-9);
    }

    #[test]
    fn counter_going_backwards_restarts_from_zero() {
        let a = snap(0, vec![thread(5, 6, 20_000_000, 0, 900)]);
        let b = snap(1_000_000_000, vec![thread(5, 6, 10_000_000, 0, 7)]);
        let r = thread_rates(&a, &b);
        assert!((r[0].cpu_percent - 1.0).abs() < 1e-9);
        assert!((r[0].faults_per_s - 7.0).abs() < 1e-9);
    }

    #[test]
    fn no_elapsed_time_gives_nothing() {
        let a = snap(10, vec![thread(1, 1, 0, 0, 0)]);
        assert!(thread_rates(&a, &a).is_empty());
        assert!(thread_rates(&snap(20, vec![]), &a).is_empty());
    }

    #[test]
    fn process_rates_sum_threads() {
        let a = snap(0, vec![]);
        let b = snap(
            1_000_000_000,
            vec![
                thread(5, 5, 300_000_000, 0, 10),
                thread(5, 6, 700_000_000, 100_000_000, 20),
                thread(9, 9, 100_000_000, 0, 0),
            ],
        );
        let p = process_rates(&a, &b);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].tgid, p[0].threads), (5, 2));
        assert!((p[0].cpu_percent - 100.0).abs() < 1e-9);
        assert!((p[0].runq_percent - 10.0).abs() < 1e-9);
        assert!((p[0].faults_per_s - 30.0).abs() < 1e-9);
        assert_eq!((p[1].tgid, p[1].threads), (9, 1));
        assert!((p[1].cpu_percent - 10.0).abs() < 1e-9);
    }
}

//! The agent's live figures (issue 4): per-thread CPU and faults of the
//! processes running here (eBPF), their DSM traffic, the machine, and the
//! migrations that left this node. A thread samples once per
//! [`INTERVAL`]; [`Monitor::report`] hands out the latest [`NodeReport`],
//! which peers fetch for `popcorn top` and the metrics endpoint serves.

pub mod machine;
pub mod prometheus;

use crate::peers::Peers;
use crate::sync::lock;
use crate::table::ProcessTable;
use crate::traffic::TrafficCounts;
use machine::MachineSampler;
use popcorn_ebpf::rates::{thread_rates, ThreadRates};
use popcorn_ebpf::{Snapshot, Tracer};
use popcorn_proto::config::Isa;
use popcorn_proto::control::{MigrationReport, ProcessInfo, ProcessStateKind};
use popcorn_proto::monitor::{
    DsmFigures, MigrationEvent, NodeReport, ProcessFigures, ProcessTraffic, ThreadFigures,
    TracingStatus,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};

/// How often the figures are sampled.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Migrations kept in the log.
const LOG_LEN: usize = 32;

#[derive(Default)]
struct MigrationLog {
    recent: VecDeque<MigrationEvent>,
    total: u64,
    downtime_us_total: u64,
}

impl MigrationLog {
    fn fill(&self, r: &mut NodeReport) {
        r.migrations_total = self.total;
        r.migration_downtime_us_total = self.downtime_us_total;
        r.migrations = self.recent.iter().cloned().collect();
    }
}

/// The table's entries now, with the sampled figures of those still
/// running here; a process that arrived or left since the sample shows
/// no CPU or fault figures until the next one.
fn current_processes(
    node: &str,
    sampled: Vec<ProcessFigures>,
    now: Vec<ProcessInfo>,
) -> Vec<ProcessFigures> {
    let mut sampled: HashMap<i32, ProcessFigures> =
        sampled.into_iter().map(|p| (p.info.pid, p)).collect();
    now.into_iter()
        .map(|info| {
            let here = info.node == node && info.state != ProcessStateKind::Exited;
            match sampled.remove(&info.pid) {
                Some(p) if here && p.info.node == node => ProcessFigures { info, ..p },
                Some(p) => process_figures(info, &[], p.dsm),
                None => process_figures(info, &[], DsmFigures::default()),
            }
        })
        .collect()
}

pub struct Monitor {
    node: String,
    isa: Isa,
    table: Arc<ProcessTable>,
    peers: Arc<Peers>,
    tracing: TracingStatus,
    tracer: Mutex<Option<Tracer>>,
    log: Mutex<MigrationLog>,
    latest: Mutex<NodeReport>,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Monitor {
    /// Loads the tracer (unless `tracing` is off; without CAP_BPF or BTF
    /// the agent runs without it and says why) and starts sampling.
    pub fn start(
        node: String,
        isa: Isa,
        tracing: bool,
        table: Arc<ProcessTable>,
        peers: Arc<Peers>,
    ) -> Arc<Monitor> {
        let (tracer, status) = if !tracing {
            let reason = "tracing is off in the cluster file (tracing = false)";
            info!("{reason}");
            (None, TracingStatus::off(reason))
        } else {
            match Tracer::load() {
                Ok(t) => {
                    for hook in t.missing_hooks() {
                        info!(hook, "eBPF hook unavailable on this kernel");
                    }
                    (Some(t), TracingStatus::on())
                }
                Err(e) => {
                    warn!("running without eBPF tracing: {e}");
                    (None, TracingStatus::off(&e.to_string()))
                }
            }
        };
        let mut sampler = Sampler::default();
        let empty = NodeReport {
            node: node.clone(),
            isa,
            at_unix_ms: unix_ms(),
            tracing: status.clone(),
            machine: Default::default(),
            processes: vec![],
            traffic: vec![],
            dsm: DsmFigures::default(),
            migrations_total: 0,
            migration_downtime_us_total: 0,
            migrations: vec![],
        };
        let monitor = Arc::new(Monitor {
            node,
            isa,
            table,
            peers,
            tracing: status,
            tracer: Mutex::new(tracer),
            log: Mutex::default(),
            latest: Mutex::new(empty),
        });
        let first = sampler.sample(&monitor);
        *lock(&monitor.latest) = first;
        let weak = Arc::downgrade(&monitor);
        let spawned = std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || loop {
                std::thread::sleep(INTERVAL);
                let Some(m) = weak.upgrade() else { return };
                let report = sampler.sample(&m);
                *lock(&m.latest) = report;
            });
        if let Err(e) = spawned {
            warn!("cannot start the monitor thread: {e}; figures stay at zero");
        }
        monitor
    }

    /// Starts tracing a process that runs here (launched or restored).
    pub fn manage(&self, pid: i32) {
        if let Some(t) = lock(&self.tracer).as_mut() {
            if let Err(e) = t.manage(pid as u32) {
                debug!(pid, "tracing the process: {e}");
            }
        }
    }

    /// The latest figures, with placement and the migration log as they
    /// are now (a migration may have ended since the last sample).
    pub fn report(&self) -> NodeReport {
        let mut r = lock(&self.latest).clone();
        r.processes = current_processes(
            &self.node,
            std::mem::take(&mut r.processes),
            self.table.list(&self.node),
        );
        lock(&self.log).fill(&mut r);
        r
    }

    /// Records a migration that left this node.
    pub fn record_migration(&self, report: &MigrationReport) {
        let mut log = lock(&self.log);
        if log.recent.len() == LOG_LEN {
            log.recent.pop_front();
        }
        log.recent.push_back(MigrationEvent {
            at_unix_ms: unix_ms(),
            pid: report.pid,
            from: report.from.clone(),
            to: report.to.clone(),
            threads: report.threads,
            downtime_us: report.downtime_us,
            pages_at_origin: report.pages_at_origin,
        });
        log.total += 1;
        log.downtime_us_total += report.downtime_us;
    }
}

/// What the sampling thread keeps between samples.
struct Sampler {
    prev_snapshot: Option<Snapshot>,
    prev_traffic: BTreeMap<i32, TrafficCounts>,
    prev_at: Instant,
    machine: MachineSampler,
    snapshot_failed: bool,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            prev_snapshot: None,
            prev_traffic: BTreeMap::new(),
            prev_at: Instant::now(),
            machine: MachineSampler::default(),
            snapshot_failed: false,
        }
    }
}

impl Sampler {
    fn sample(&mut self, m: &Monitor) -> NodeReport {
        let now = Instant::now();
        let secs = now.duration_since(self.prev_at).as_secs_f64();
        self.prev_at = now;
        let infos = m.table.list(&m.node);
        let threads = self.thread_rates(m);
        let counts = m.peers.traffic.counts();
        let traffic = dsm_rates(&self.prev_traffic, &counts, secs);
        self.prev_traffic = counts;
        let mut dsm = DsmFigures::default();
        traffic.iter().for_each(|t| dsm.add(&t.dsm));
        let processes = infos
            .into_iter()
            .map(|info| {
                let here = info.node == m.node && info.state != ProcessStateKind::Exited;
                let rates = if here {
                    threads.get(&info.pid).map(Vec::as_slice).unwrap_or(&[])
                } else {
                    &[]
                };
                let own = traffic
                    .iter()
                    .find(|t| t.pid == info.pid)
                    .map(|t| t.dsm.clone())
                    .unwrap_or_default();
                process_figures(info, rates, own)
            })
            .collect();
        let mut report = NodeReport {
            node: m.node.clone(),
            isa: m.isa,
            at_unix_ms: unix_ms(),
            tracing: m.tracing.clone(),
            machine: self.machine.sample(),
            processes,
            traffic,
            dsm,
            migrations_total: 0,
            migration_downtime_us_total: 0,
            migrations: vec![],
        };
        lock(&m.log).fill(&mut report);
        report
    }

    /// Per-thread rates since the previous sample, by process.
    fn thread_rates(&mut self, m: &Monitor) -> HashMap<i32, Vec<ThreadRates>> {
        let mut by_pid: HashMap<i32, Vec<ThreadRates>> = HashMap::new();
        let mut guard = lock(&m.tracer);
        let Some(tracer) = guard.as_mut() else {
            return by_pid;
        };
        for event in tracer.drain_events() {
            debug!(?event, "process event");
        }
        let snapshot = match tracer.snapshot() {
            Ok(s) => s,
            Err(e) => {
                if !std::mem::replace(&mut self.snapshot_failed, true) {
                    warn!("reading the eBPF figures: {e}");
                }
                return by_pid;
            }
        };
        if let Some(prev) = &self.prev_snapshot {
            for r in thread_rates(prev, &snapshot) {
                by_pid.entry(r.tgid as i32).or_default().push(r);
            }
        }
        self.prev_snapshot = Some(snapshot);
        by_pid
    }
}

/// One process's figures from its threads' rates and its DSM traffic.
fn process_figures(info: ProcessInfo, rates: &[ThreadRates], dsm: DsmFigures) -> ProcessFigures {
    // Folded from +0.0: an empty f64 sum is -0.0, which prints as "-0.0".
    let cpu_percent = rates.iter().fold(0.0, |s, r| s + r.cpu_percent);
    let faults_per_s = rates.iter().fold(0.0, |s, r| s + r.faults_per_s);
    let thread_figures = rates
        .iter()
        .filter(|r| !r.exited)
        .map(|r| ThreadFigures {
            tid: r.tid as i32,
            cpu_percent: r.cpu_percent,
            faults_per_s: r.faults_per_s,
        })
        .collect();
    ProcessFigures {
        info,
        cpu_percent,
        faults_per_s,
        dsm,
        thread_figures,
    }
}

/// DSM figures of every process between two readings `secs` apart.
fn dsm_rates(
    prev: &BTreeMap<i32, TrafficCounts>,
    cur: &BTreeMap<i32, TrafficCounts>,
    secs: f64,
) -> Vec<ProcessTraffic> {
    let rate = |c: u64, p: u64| {
        if secs > 0.0 {
            c.saturating_sub(p) as f64 / secs
        } else {
            0.0
        }
    };
    cur.iter()
        .map(|(&pid, c)| {
            let p = prev.get(&pid).copied().unwrap_or_default();
            ProcessTraffic {
                pid,
                dsm: DsmFigures {
                    remote_faults_per_s: rate(c.remote_faults, p.remote_faults),
                    pages_in_per_s: rate(c.pages_in, p.pages_in),
                    pages_out_per_s: rate(c.pages_out, p.pages_out),
                    remote_faults: c.remote_faults,
                    pages_in: c.pages_in,
                    pages_out: c.pages_out,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(remote_faults: u64, pages_in: u64, pages_out: u64) -> TrafficCounts {
        TrafficCounts {
            remote_faults,
            pages_in,
            pages_out,
        }
    }

    #[test]
    fn dsm_rates_over_half_a_second() {
        let prev = BTreeMap::from([(5, counts(1, 10, 0))]);
        let cur = BTreeMap::from([(5, counts(3, 110, 0)), (6, counts(0, 0, 50))]);
        let r = dsm_rates(&prev, &cur, 0.5);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].pid, 5);
        assert_eq!(r[0].dsm.remote_faults_per_s, 4.0);
        assert_eq!(r[0].dsm.pages_in_per_s, 200.0);
        assert_eq!(r[0].dsm.pages_in, 110);
        assert_eq!(r[1].dsm.pages_out_per_s, 100.0);
        assert!(dsm_rates(&prev, &cur, 0.0)
            .iter()
            .all(|t| t.dsm.pages_in_per_s == 0.0));
    }

    fn info(pid: i32, node: &str) -> ProcessInfo {
        ProcessInfo {
            pid,
            uid: 0,
            argv: vec!["x".into()],
            origin: "a".into(),
            node: node.into(),
            nodes: vec![],
            state: ProcessStateKind::Running,
            threads: 1,
            exit: None,
        }
    }

    #[test]
    fn current_placement_replaces_the_sampled_one() {
        let dsm = DsmFigures {
            pages_out: 9,
            ..Default::default()
        };
        let mut stays = process_figures(info(1, "a"), &[], DsmFigures::default());
        stays.cpu_percent = 50.0;
        let mut leaves = process_figures(info(2, "a"), &[], dsm.clone());
        leaves.cpu_percent = 70.0;
        let now = vec![info(1, "a"), info(2, "b"), info(3, "a")];
        let p = current_processes("a", vec![stays, leaves], now);
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].info.node.as_str(), p[0].cpu_percent), ("a", 50.0));
        // Moved to b since the sample: placement now, no stale CPU.
        assert_eq!((p[1].info.node.as_str(), p[1].cpu_percent), ("b", 0.0));
        assert_eq!(p[1].dsm, dsm);
        // Arrived since the sample: listed, figures at the next one.
        assert_eq!((p[2].info.pid, p[2].cpu_percent), (3, 0.0));
        assert!(
            p[2].cpu_percent.is_sign_positive(),
            "prints as 0.0, not -0.0"
        );
    }

    #[test]
    fn process_figures_sum_live_threads() {
        let info = info(5, "a");
        let t = |tid, cpu, exited| ThreadRates {
            tgid: 5,
            tid,
            cpu_percent: cpu,
            runq_percent: 0.0,
            faults_per_s: 10.0,
            exited,
        };
        let p = process_figures(
            info,
            &[t(5, 30.0, false), t(6, 20.0, true)],
            DsmFigures::default(),
        );
        assert_eq!(p.cpu_percent, 50.0);
        assert_eq!(p.faults_per_s, 20.0);
        assert_eq!(p.thread_figures.len(), 1);
        assert_eq!(p.thread_figures[0].tid, 5);
    }
}

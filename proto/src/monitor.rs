//! Live figures of a cluster: what each agent measures about itself
//! ([`NodeReport`]), and the merged view of every node ([`ClusterView`])
//! that `popcorn top`, `popcorn top --once --json` and the metrics endpoint
//! show. Rates are per second over the agent's last sampling interval.

use crate::config::Isa;
use crate::control::{Health, NodeStatus, ProcessInfo, ProcessStateKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Whether an agent traces its processes with eBPF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TracingStatus {
    pub enabled: bool,
    /// Why tracing is off (no CAP_BPF, no BTF, disabled by configuration).
    pub reason: Option<String>,
}

impl TracingStatus {
    pub fn on() -> TracingStatus {
        TracingStatus {
            enabled: true,
            reason: None,
        }
    }

    pub fn off(reason: &str) -> TracingStatus {
        TracingStatus {
            enabled: false,
            reason: Some(reason.to_owned()),
        }
    }
}

/// Figures of one thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadFigures {
    pub tid: i32,
    /// Percent of one CPU.
    pub cpu_percent: f64,
    /// User page faults per second (every kind, as the kernel counts them).
    pub faults_per_s: f64,
}

/// Distributed shared memory traffic of one process on one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DsmFigures {
    /// Faults served from another node per second.
    pub remote_faults_per_s: f64,
    /// Pages received from other nodes per second.
    pub pages_in_per_s: f64,
    /// Pages sent to other nodes per second.
    pub pages_out_per_s: f64,
    /// Totals since the agent started.
    pub remote_faults: u64,
    pub pages_in: u64,
    pub pages_out: u64,
}

impl DsmFigures {
    /// Adds another set of figures (totals and rates).
    pub fn add(&mut self, other: &DsmFigures) {
        self.remote_faults_per_s += other.remote_faults_per_s;
        self.pages_in_per_s += other.pages_in_per_s;
        self.pages_out_per_s += other.pages_out_per_s;
        self.remote_faults += other.remote_faults;
        self.pages_in += other.pages_in;
        self.pages_out += other.pages_out;
    }
}

/// A process as `popcorn ps` shows it, with its live figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessFigures {
    #[serde(flatten)]
    pub info: ProcessInfo,
    /// Percent of one CPU (sum over threads; may exceed 100).
    pub cpu_percent: f64,
    /// User page faults per second, every thread.
    pub faults_per_s: f64,
    pub dsm: DsmFigures,
    /// Threads with their figures (empty when not measured: tracing off,
    /// or the process runs elsewhere).
    pub thread_figures: Vec<ThreadFigures>,
}

/// One finished migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationEvent {
    /// Wall clock when the process resumed at the destination, Unix ms.
    pub at_unix_ms: u64,
    pub pid: i32,
    pub from: String,
    pub to: String,
    pub threads: usize,
    pub downtime_us: u64,
    /// Pages the destination fetched on demand or in the background.
    pub pages_at_origin: u64,
}

/// The machine a node runs on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineFigures {
    pub cpus: u32,
    /// 1-minute load average.
    pub load1: f64,
    /// Busy CPU over the last interval, percent of all CPUs.
    pub cpu_busy_percent: f64,
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
}

/// What one agent reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub isa: Isa,
    /// When the figures were sampled, Unix ms.
    pub at_unix_ms: u64,
    pub tracing: TracingStatus,
    pub machine: MachineFigures,
    /// Every process in this agent's table (as `popcorn ps` on this node),
    /// with figures for those running here.
    pub processes: Vec<ProcessFigures>,
    /// DSM traffic of every process this node carried pages for (also
    /// ones that left it and those its table does not hold).
    pub traffic: Vec<ProcessTraffic>,
    /// DSM traffic of this node (sum over processes, including ones gone).
    pub dsm: DsmFigures,
    /// Migrations that left this node since the agent started.
    pub migrations_total: u64,
    /// Sum of their downtimes, microseconds.
    pub migration_downtime_us_total: u64,
    /// Recent migrations that left this node, oldest first.
    pub migrations: Vec<MigrationEvent>,
}

/// DSM traffic of one process on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessTraffic {
    pub pid: i32,
    #[serde(flatten)]
    pub dsm: DsmFigures,
}

/// One node in the cluster view: its link as the answering agent sees it,
/// and its own report when it could be reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub status: NodeStatus,
    pub report: Option<NodeReport>,
}

/// The whole cluster, as one agent assembled it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The agent that assembled it.
    pub node: String,
    pub at_unix_ms: u64,
    pub nodes: Vec<NodeView>,
    /// Every process known to any node, once, sorted by pid.
    pub processes: Vec<ProcessFigures>,
    /// Recent migrations of every node, oldest first.
    pub migrations: Vec<MigrationEvent>,
}

/// How much an entry of one node says about a process: the node it runs on
/// measures it; its home knows where it runs; others may hold a stale copy.
fn authority(reporter: &str, p: &ProcessFigures) -> u8 {
    match (p.info.node == reporter, p.info.origin == reporter) {
        (true, _) if p.info.state != ProcessStateKind::Exited => 3,
        (_, true) => 2,
        (true, _) => 1,
        _ => 0,
    }
}

/// Most recent migrations kept in a view.
pub const VIEW_MIGRATIONS: usize = 32;

impl ClusterView {
    /// Merges the reports of every node. A process reported by several
    /// nodes appears once: CPU and faults come from the node it runs on,
    /// placement and state from the most authoritative report, DSM traffic
    /// is the sum over every node (pages in where it runs, out where its
    /// memory was).
    pub fn merge(node: &str, at_unix_ms: u64, nodes: Vec<NodeView>) -> ClusterView {
        let mut best: BTreeMap<i32, (u8, ProcessFigures)> = BTreeMap::new();
        let mut migrations = Vec::new();
        for view in &nodes {
            let Some(report) = &view.report else {
                continue;
            };
            migrations.extend(report.migrations.iter().cloned());
            for p in &report.processes {
                let rank = authority(&report.node, p);
                match best.get_mut(&p.info.pid) {
                    Some((r, _)) if *r >= rank => {}
                    Some(slot) => *slot = (rank, p.clone()),
                    None => {
                        best.insert(p.info.pid, (rank, p.clone()));
                    }
                }
            }
        }
        // The home's entry knows where the process went; figures come from
        // the node named there.
        let figures_from = |pid: i32, node: &str| -> Option<&ProcessFigures> {
            nodes
                .iter()
                .filter_map(|v| v.report.as_ref())
                .find(|r| r.node == node)
                .and_then(|r| r.processes.iter().find(|p| p.info.pid == pid))
        };
        let traffic_of = |pid: i32| -> DsmFigures {
            let mut sum = DsmFigures::default();
            nodes
                .iter()
                .filter_map(|v| v.report.as_ref())
                .flat_map(|r| r.traffic.iter())
                .filter(|t| t.pid == pid)
                .for_each(|t| sum.add(&t.dsm));
            sum
        };
        let processes = best
            .into_values()
            .map(|(_, mut p)| {
                if let Some(f) = figures_from(p.info.pid, &p.info.node) {
                    if f.info.state != ProcessStateKind::Exited {
                        p.cpu_percent = f.cpu_percent;
                        p.faults_per_s = f.faults_per_s;
                        p.thread_figures = f.thread_figures.clone();
                        p.info.threads = f.info.threads;
                    }
                }
                p.dsm = traffic_of(p.info.pid);
                p
            })
            .collect();
        migrations.sort_by_key(|m| (m.at_unix_ms, m.pid));
        let excess = migrations.len().saturating_sub(VIEW_MIGRATIONS);
        migrations.drain(..excess);
        ClusterView {
            node: node.to_owned(),
            at_unix_ms,
            nodes,
            processes,
            migrations,
        }
    }

    /// The process `pid`, if any node knows it.
    pub fn process(&self, pid: i32) -> Option<&ProcessFigures> {
        self.processes.iter().find(|p| p.info.pid == pid)
    }

    /// Nodes whose link is up (or the answering one).
    pub fn reachable_nodes(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes
            .iter()
            .filter(|n| n.status.health != Health::Down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: i32, origin: &str, node: &str, state: ProcessStateKind) -> ProcessInfo {
        ProcessInfo {
            pid,
            uid: 0,
            argv: vec!["app".into()],
            origin: origin.into(),
            node: node.into(),
            nodes: vec![],
            state,
            threads: 1,
            exit: None,
        }
    }

    fn figures(info: ProcessInfo, cpu: f64) -> ProcessFigures {
        ProcessFigures {
            info,
            cpu_percent: cpu,
            faults_per_s: 0.0,
            dsm: DsmFigures::default(),
            thread_figures: vec![],
        }
    }

    fn view(
        node: &str,
        processes: Vec<ProcessFigures>,
        migrations: Vec<MigrationEvent>,
    ) -> NodeView {
        NodeView {
            status: NodeStatus {
                name: node.into(),
                address: "10.0.0.1:7000".into(),
                isa: Isa::X86_64,
                health: Health::Up,
                rtt_us: Some(30.0),
                last_seen_ms: Some(1),
                error: None,
            },
            report: Some(NodeReport {
                node: node.into(),
                isa: Isa::X86_64,
                at_unix_ms: 0,
                tracing: TracingStatus::on(),
                machine: MachineFigures::default(),
                processes,
                traffic: vec![],
                dsm: DsmFigures::default(),
                migrations_total: migrations.len() as u64,
                migration_downtime_us_total: 0,
                migrations,
            }),
        }
    }

    fn migration(at: u64, pid: i32) -> MigrationEvent {
        MigrationEvent {
            at_unix_ms: at,
            pid,
            from: "a".into(),
            to: "b".into(),
            threads: 1,
            downtime_us: 10_000,
            pages_at_origin: 5,
        }
    }

    #[test]
    fn migrated_process_appears_once_with_figures_from_where_it_runs() {
        use ProcessStateKind::*;
        let a = view(
            "a",
            vec![figures(info(7, "a", "b", Running), 0.0)],
            vec![migration(5, 7)],
        );
        let mut hosted = figures(info(7, "a", "b", Running), 42.0);
        hosted.info.threads = 3;
        let mut b = view("b", vec![hosted], vec![]);
        let dsm = |pages_in, pages_out| DsmFigures {
            pages_in,
            pages_out,
            ..Default::default()
        };
        let mut a = a;
        for (v, d) in [(&mut a, dsm(0, 9)), (&mut b, dsm(9, 0))] {
            v.report.as_mut().unwrap().traffic = vec![ProcessTraffic { pid: 7, dsm: d }];
        }
        let v = ClusterView::merge("a", 10, vec![a, b]);
        assert_eq!(v.processes.len(), 1);
        let p = v.process(7).unwrap();
        assert_eq!(p.info.node, "b");
        assert_eq!(p.info.threads, 3);
        assert_eq!(p.cpu_percent, 42.0);
        assert_eq!((p.dsm.pages_in, p.dsm.pages_out), (9, 9));
        assert_eq!(v.migrations, vec![migration(5, 7)]);
    }

    #[test]
    fn home_entry_wins_over_a_stale_copy_elsewhere() {
        use ProcessStateKind::*;
        // c hosted it once and kept an exited entry; a (home) says it runs on b.
        let a = view("a", vec![figures(info(7, "a", "b", Running), 0.0)], vec![]);
        let b = view("b", vec![figures(info(7, "a", "b", Running), 9.0)], vec![]);
        let c = view("c", vec![figures(info(7, "a", "c", Exited), 0.0)], vec![]);
        let v = ClusterView::merge("c", 10, vec![c, a, b]);
        let p = v.process(7).unwrap();
        assert_eq!((p.info.node.as_str(), p.info.state), ("b", Running));
        assert_eq!(p.cpu_percent, 9.0);
    }

    #[test]
    fn unreachable_nodes_contribute_nothing_and_migrations_are_ordered_and_capped() {
        let mut down = view("b", vec![], vec![]);
        down.report = None;
        down.status.health = Health::Down;
        let many: Vec<_> = (0..40).rev().map(|i| migration(i, i as i32)).collect();
        let a = view("a", vec![], many);
        let v = ClusterView::merge("a", 10, vec![a, down]);
        assert_eq!(v.migrations.len(), VIEW_MIGRATIONS);
        assert_eq!(v.migrations.first().unwrap().at_unix_ms, 8);
        assert_eq!(v.migrations.last().unwrap().at_unix_ms, 39);
        assert_eq!(v.reachable_nodes().count(), 1);
    }

    #[test]
    fn json_flattens_the_process_info_like_ps() {
        use ProcessStateKind::*;
        let p = figures(info(7, "a", "b", Running), 1.5);
        let json = serde_json::to_value(&p).unwrap();
        let ps = serde_json::to_value(&p.info).unwrap();
        for (k, v) in ps.as_object().unwrap() {
            assert_eq!(&json[k], v, "field {k}");
        }
        let back: ProcessFigures = serde_json::from_value(json).unwrap();
        assert_eq!(back, p);
    }
}

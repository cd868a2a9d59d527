//! The monitor's state as plain data: the latest cluster view, the process
//! order and selection, per-node and per-process histories, the node picker
//! and the status line. Keys come in as [`Key`]s and the state answers with
//! an [`Action`]; nothing here touches the terminal or the agent, so every
//! rule is unit-tested.

use super::history::History;
use popcorn_proto::control::{MigrationReport, ProcessStateKind};
use popcorn_proto::monitor::{ClusterView, ProcessFigures, TracingStatus};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The order of the processes table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Busiest first.
    Cpu,
    /// Most page faults per second first.
    Faults,
    /// Lowest pid first.
    Pid,
    /// By node name, then pid.
    Node,
}

impl SortKey {
    /// The next key of the `s` cycle.
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Cpu => SortKey::Faults,
            SortKey::Faults => SortKey::Pid,
            SortKey::Pid => SortKey::Node,
            SortKey::Node => SortKey::Cpu,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortKey::Cpu => "cpu",
            SortKey::Faults => "faults",
            SortKey::Pid => "pid",
            SortKey::Node => "node",
        }
    }
}

/// A key press, as the monitor understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    Enter,
    Esc,
    /// Ctrl-C.
    Interrupt,
    Char(char),
}

/// What the caller must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Quit,
    /// Send `Request::Migrate` for this process, without waiting for it.
    Migrate {
        pid: i32,
        to: String,
    },
}

/// Choosing where to move a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picker {
    pub pid: i32,
    /// Where the process runs now.
    pub from: String,
    /// Reachable nodes other than `from`, in the view's order.
    pub candidates: Vec<String>,
    /// Index into `candidates`.
    pub selected: usize,
}

/// The line under the header: the outcome of the last action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub error: bool,
}

impl Status {
    fn info(text: String) -> Option<Status> {
        Some(Status { text, error: false })
    }

    fn error(text: String) -> Option<Status> {
        Some(Status { text, error: true })
    }
}

/// Everything the screen shows, and the rules for changing it.
#[derive(Debug, Default)]
pub struct App {
    /// The latest view (kept, and shown, while the agent cannot be reached).
    view: Option<ClusterView>,
    /// Why the latest refresh failed, until one succeeds.
    fetch_error: Option<String>,
    /// Pids of the processes table, in display order.
    rows: Vec<i32>,
    selected: Option<i32>,
    sort: Option<SortKey>,
    reverse: bool,
    show_threads: bool,
    help: bool,
    picker: Option<Picker>,
    status: Option<Status>,
    node_history: BTreeMap<String, History>,
    process_history: BTreeMap<i32, History>,
}

/// Whether the node `node` measures its processes: `None` when it did not
/// report at all.
pub fn tracing_of<'a>(view: &'a ClusterView, node: &str) -> Option<&'a TracingStatus> {
    view.nodes
        .iter()
        .filter_map(|n| n.report.as_ref())
        .find(|r| r.node == node)
        .map(|r| &r.tracing)
}

/// Whether a process's CPU and fault figures mean anything: it runs on a
/// node that reported and traces.
pub fn measured(view: &ClusterView, p: &ProcessFigures) -> bool {
    p.info.state != ProcessStateKind::Exited
        && tracing_of(view, &p.info.node).is_some_and(|t| t.enabled)
}

impl App {
    pub fn new() -> App {
        App::default()
    }

    pub fn view(&self) -> Option<&ClusterView> {
        self.view.as_ref()
    }

    pub fn fetch_error(&self) -> Option<&str> {
        self.fetch_error.as_deref()
    }

    pub fn sort(&self) -> SortKey {
        self.sort.unwrap_or(SortKey::Cpu)
    }

    pub fn reversed(&self) -> bool {
        self.reverse
    }

    pub fn show_threads(&self) -> bool {
        self.show_threads
    }

    pub fn help(&self) -> bool {
        self.help
    }

    pub fn picker(&self) -> Option<&Picker> {
        self.picker.as_ref()
    }

    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    /// The processes in display order.
    pub fn rows(&self) -> Vec<&ProcessFigures> {
        match &self.view {
            Some(v) => self.rows.iter().filter_map(|pid| v.process(*pid)).collect(),
            None => Vec::new(),
        }
    }

    #[cfg(test)]
    pub fn selected_pid(&self) -> Option<i32> {
        self.selected
    }

    /// Row of the selected process.
    pub fn selected_index(&self) -> Option<usize> {
        let pid = self.selected?;
        self.rows.iter().position(|p| *p == pid)
    }

    pub fn selected_process(&self) -> Option<&ProcessFigures> {
        self.view.as_ref()?.process(self.selected?)
    }

    pub fn node_history(&self, node: &str) -> Option<&History> {
        self.node_history.get(node)
    }

    pub fn process_history(&self, pid: i32) -> Option<&History> {
        self.process_history.get(&pid)
    }

    /// Nodes that reported with tracing off, and why.
    pub fn tracing_off(&self) -> Vec<(String, String)> {
        let Some(view) = &self.view else {
            return Vec::new();
        };
        view.nodes
            .iter()
            .filter_map(|n| n.report.as_ref())
            .filter(|r| !r.tracing.enabled)
            .map(|r| {
                (
                    r.node.clone(),
                    r.tracing
                        .reason
                        .clone()
                        .unwrap_or_else(|| "no reason given".into()),
                )
            })
            .collect()
    }

    /// A fresh view from the agent: histories grow, the order is rebuilt and
    /// the selection stays on the same process (or, when it is gone, on the
    /// row that took its place).
    pub fn update(&mut self, view: ClusterView) {
        self.fetch_error = None;
        for n in &view.nodes {
            if let Some(r) = &n.report {
                self.node_history
                    .entry(n.status.name.clone())
                    .or_default()
                    .push(r.machine.cpu_busy_percent);
            }
        }
        self.node_history
            .retain(|name, _| view.nodes.iter().any(|n| &n.status.name == name));
        for p in &view.processes {
            if measured(&view, p) {
                self.process_history
                    .entry(p.info.pid)
                    .or_default()
                    .push(p.cpu_percent);
            }
        }
        self.process_history
            .retain(|pid, _| view.process(*pid).is_some());
        let hint = self.selected_index();
        self.view = Some(view);
        self.resort(hint);
        if let Some(picker) = &self.picker {
            if self
                .view
                .as_ref()
                .and_then(|v| v.process(picker.pid))
                .is_none()
            {
                self.status = Status::error(format!(
                    "process {} is gone; migration cancelled",
                    picker.pid
                ));
                self.picker = None;
            }
        }
    }

    /// The latest refresh failed; the last view stays on screen.
    pub fn fetch_failed(&mut self, message: String) {
        self.fetch_error = Some(message);
    }

    /// A migration was sent.
    pub fn migration_started(&mut self, pid: i32, to: &str) {
        self.status = Status::info(format!("migrating process {pid} to {to}…"));
    }

    /// The agent answered a migration.
    pub fn migration_done(&mut self, pid: i32, to: &str, outcome: Result<MigrationReport, String>) {
        self.status = match outcome {
            Ok(r) => Status::info(format!(
                "migrated process {} from {} to {}: downtime {:.2} ms, {} pages follow",
                r.pid,
                r.from,
                r.to,
                r.downtime_us as f64 / 1000.0,
                r.pages_at_origin
            )),
            Err(e) => Status::error(format!("migrating process {pid} to {to} failed: {e}")),
        };
    }

    /// Rebuilds the row order; `hint` is the selected row before.
    fn resort(&mut self, hint: Option<usize>) {
        let Some(view) = &self.view else {
            self.rows.clear();
            self.selected = None;
            return;
        };
        let key = self.sort();
        let reverse = self.reverse;
        let mut procs: Vec<&ProcessFigures> = view.processes.iter().collect();
        let cpu = |p: &ProcessFigures| {
            if measured(view, p) {
                p.cpu_percent
            } else {
                -1.0
            }
        };
        let faults = |p: &ProcessFigures| {
            if measured(view, p) {
                p.faults_per_s
            } else {
                -1.0
            }
        };
        procs.sort_by(|a, b| {
            let primary = match key {
                SortKey::Cpu => cpu(b).total_cmp(&cpu(a)),
                SortKey::Faults => faults(b).total_cmp(&faults(a)),
                SortKey::Pid => a.info.pid.cmp(&b.info.pid),
                SortKey::Node => a.info.node.cmp(&b.info.node),
            };
            let primary = if reverse { primary.reverse() } else { primary };
            primary.then_with(|| a.info.pid.cmp(&b.info.pid))
        });
        self.rows = procs.iter().map(|p| p.info.pid).collect();
        let kept = self.selected.filter(|pid| self.rows.contains(pid));
        self.selected = kept.or_else(|| {
            let last = self.rows.len().checked_sub(1)?;
            self.rows.get(hint.unwrap_or(0).min(last)).copied()
        });
    }

    fn move_selection(&mut self, down: bool) {
        let Some(last) = self.rows.len().checked_sub(1) else {
            return;
        };
        let next = match self.selected_index() {
            None => 0,
            Some(i) if down => (i + 1).min(last),
            Some(i) => i.saturating_sub(1),
        };
        self.selected = self.rows.get(next).copied();
    }

    /// Opens the node picker for the selected process.
    fn open_picker(&mut self) {
        let (Some(view), Some(p)) = (&self.view, self.selected_process()) else {
            self.status = Status::error("no process selected".into());
            return;
        };
        if p.info.state == ProcessStateKind::Exited {
            self.status = Status::error(format!("process {} has exited", p.info.pid));
            return;
        }
        let candidates: Vec<String> = view
            .reachable_nodes()
            .map(|n| n.status.name.clone())
            .filter(|name| *name != p.info.node)
            .collect();
        if candidates.is_empty() {
            self.status = Status::error(format!(
                "no other reachable node to move process {} to",
                p.info.pid
            ));
            return;
        }
        self.picker = Some(Picker {
            pid: p.info.pid,
            from: p.info.node.clone(),
            candidates,
            selected: 0,
        });
    }

    fn picker_key(&mut self, key: Key) -> Action {
        let Some(picker) = &mut self.picker else {
            return Action::Nothing;
        };
        let last = picker.candidates.len().saturating_sub(1);
        let chosen = match key {
            Key::Interrupt => return Action::Quit,
            Key::Esc | Key::Char('q') => {
                self.picker = None;
                return Action::Nothing;
            }
            Key::Up | Key::Char('k') => {
                picker.selected = picker.selected.saturating_sub(1);
                return Action::Nothing;
            }
            Key::Down | Key::Char('j') => {
                picker.selected = (picker.selected + 1).min(last);
                return Action::Nothing;
            }
            Key::Enter => picker.selected,
            Key::Char(c) => match c.to_digit(10) {
                Some(n) if n >= 1 && (n as usize) <= picker.candidates.len() => n as usize - 1,
                _ => return Action::Nothing,
            },
        };
        let pid = picker.pid;
        let to = picker.candidates.get(chosen).cloned();
        self.picker = None;
        match to {
            Some(to) => {
                self.migration_started(pid, &to);
                Action::Migrate { pid, to }
            }
            None => Action::Nothing,
        }
    }

    /// Applies a key press.
    pub fn on_key(&mut self, key: Key) -> Action {
        if self.picker.is_some() {
            return self.picker_key(key);
        }
        if key != Key::Char('?') {
            self.help = false;
        }
        match key {
            Key::Interrupt | Key::Esc | Key::Char('q') => return Action::Quit,
            Key::Up | Key::Char('k') => self.move_selection(false),
            Key::Down | Key::Char('j') => self.move_selection(true),
            Key::Enter => self.show_threads = !self.show_threads,
            Key::Char('s') => {
                self.sort = Some(self.sort().next());
                self.resort(None);
            }
            Key::Char('r') => {
                self.reverse = !self.reverse;
                self.resort(None);
            }
            Key::Char('m') => self.open_picker(),
            Key::Char('?') => self.help = !self.help,
            Key::Char(_) => {}
        }
        Action::Nothing
    }
}

/// Orders two floats where NaN sorts lowest (for tables of figures).
pub fn by_figure(a: f64, b: f64) -> Ordering {
    let key = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
    key(a).total_cmp(&key(b))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use popcorn_proto::config::Isa;
    use popcorn_proto::control::{Health, NodeStatus, ProcessInfo};
    use popcorn_proto::monitor::{
        DsmFigures, MachineFigures, MigrationEvent, NodeReport, NodeView, ThreadFigures,
    };

    pub fn process(pid: i32, node: &str, cpu: f64, faults: f64) -> ProcessFigures {
        ProcessFigures {
            info: ProcessInfo {
                pid,
                uid: 0,
                argv: vec![format!("app{pid}"), "--work".into()],
                origin: "a".into(),
                node: node.into(),
                nodes: vec![],
                state: ProcessStateKind::Running,
                threads: 2,
                exit: None,
            },
            cpu_percent: cpu,
            faults_per_s: faults,
            dsm: DsmFigures {
                remote_faults_per_s: 3.0,
                pages_in_per_s: 4.0,
                pages_out_per_s: 5.0,
                ..DsmFigures::default()
            },
            thread_figures: vec![
                ThreadFigures {
                    tid: pid,
                    cpu_percent: cpu / 2.0,
                    faults_per_s: faults,
                },
                ThreadFigures {
                    tid: pid + 1,
                    cpu_percent: cpu / 2.0,
                    faults_per_s: 0.0,
                },
            ],
        }
    }

    pub fn node(name: &str, health: Health, cpu_busy: f64) -> NodeView {
        NodeView {
            status: NodeStatus {
                name: name.into(),
                address: "10.0.0.1:7000".into(),
                isa: Isa::X86_64,
                health,
                rtt_us: Some(120.0),
                last_seen_ms: Some(5),
                error: None,
            },
            report: (health != Health::Down).then(|| NodeReport {
                node: name.into(),
                isa: Isa::X86_64,
                at_unix_ms: 0,
                tracing: TracingStatus {
                    enabled: true,
                    reason: None,
                },
                machine: MachineFigures {
                    cpus: 2,
                    load1: 0.5,
                    cpu_busy_percent: cpu_busy,
                    mem_total_kib: 8 << 20,
                    mem_available_kib: 6 << 20,
                },
                processes: vec![],
                traffic: vec![],
                dsm: DsmFigures::default(),
                migrations_total: 0,
                migration_downtime_us_total: 0,
                migrations: vec![],
            }),
        }
    }

    /// Nodes a (local), b (up), c (down); processes as given.
    pub fn view(processes: Vec<ProcessFigures>) -> ClusterView {
        ClusterView {
            node: "a".into(),
            at_unix_ms: 1_700_000_000_000,
            nodes: vec![
                node("a", Health::Local, 20.0),
                node("b", Health::Up, 40.0),
                node("c", Health::Down, 0.0),
            ],
            processes,
            migrations: vec![MigrationEvent {
                at_unix_ms: 1_699_999_990_000,
                pid: 11,
                from: "a".into(),
                to: "b".into(),
                threads: 2,
                downtime_us: 12_340,
                pages_at_origin: 567,
            }],
        }
    }

    fn sample() -> ClusterView {
        view(vec![
            process(10, "a", 5.0, 100.0),
            process(11, "b", 50.0, 1.0),
            process(12, "a", 20.0, 10.0),
        ])
    }

    fn pids(app: &App) -> Vec<i32> {
        app.rows().iter().map(|p| p.info.pid).collect()
    }

    #[test]
    fn empty_until_the_first_view() {
        let mut app = App::new();
        assert!(app.rows().is_empty());
        assert_eq!(app.selected_pid(), None);
        assert_eq!(app.on_key(Key::Down), Action::Nothing);
        assert_eq!(app.on_key(Key::Char('m')), Action::Nothing);
        assert!(app.status().is_some_and(|s| s.error));
        assert!(app.tracing_off().is_empty());
    }

    #[test]
    fn sorts_by_cpu_then_cycles_and_reverses() {
        let mut app = App::new();
        app.update(sample());
        assert_eq!(app.sort(), SortKey::Cpu);
        assert_eq!(pids(&app), vec![11, 12, 10]);
        assert_eq!(app.selected_pid(), Some(11));
        app.on_key(Key::Char('s'));
        assert_eq!(app.sort(), SortKey::Faults);
        assert_eq!(pids(&app), vec![10, 12, 11]);
        app.on_key(Key::Char('s'));
        assert_eq!(app.sort(), SortKey::Pid);
        assert_eq!(pids(&app), vec![10, 11, 12]);
        app.on_key(Key::Char('s'));
        assert_eq!(app.sort(), SortKey::Node);
        assert_eq!(pids(&app), vec![10, 12, 11]);
        app.on_key(Key::Char('r'));
        assert!(app.reversed());
        assert_eq!(pids(&app), vec![11, 10, 12], "ties stay in pid order");
        app.on_key(Key::Char('s'));
        assert_eq!(app.sort(), SortKey::Cpu);
        assert_eq!(pids(&app), vec![10, 12, 11]);
        app.on_key(Key::Char('r'));
        assert_eq!(pids(&app), vec![11, 12, 10]);
        // The selection followed the process through every reorder.
        assert_eq!(app.selected_pid(), Some(11));
    }

    #[test]
    fn unmeasured_processes_sort_last_by_cpu_and_faults() {
        let mut v = sample();
        v.processes.push(process(13, "c", 99.0, 999.0)); // c is down
        let mut exited = process(14, "a", 98.0, 998.0);
        exited.info.state = ProcessStateKind::Exited;
        v.processes.push(exited);
        let mut app = App::new();
        app.update(v.clone());
        assert_eq!(pids(&app), vec![11, 12, 10, 13, 14]);
        app.on_key(Key::Char('s'));
        assert_eq!(pids(&app), vec![10, 12, 11, 13, 14]);
        // Tracing off on a: its processes are not measured either.
        if let Some(r) = v.nodes[0].report.as_mut() {
            r.tracing = TracingStatus {
                enabled: false,
                reason: Some("no CAP_BPF".into()),
            };
        }
        let mut app = App::new();
        app.update(v);
        assert_eq!(pids(&app), vec![11, 10, 12, 13, 14]);
        assert_eq!(app.tracing_off(), vec![("a".into(), "no CAP_BPF".into())]);
    }

    #[test]
    fn selection_moves_within_bounds() {
        let mut app = App::new();
        app.update(sample());
        assert_eq!(app.selected_index(), Some(0));
        app.on_key(Key::Up);
        assert_eq!(app.selected_index(), Some(0));
        app.on_key(Key::Down);
        app.on_key(Key::Char('j'));
        assert_eq!(app.selected_pid(), Some(10));
        app.on_key(Key::Down);
        assert_eq!(app.selected_index(), Some(2));
        app.on_key(Key::Char('k'));
        assert_eq!(app.selected_pid(), Some(12));
    }

    #[test]
    fn selection_stays_on_the_same_pid_across_refreshes() {
        let mut app = App::new();
        app.update(sample());
        app.on_key(Key::Down); // 12, second row
        assert_eq!(app.selected_pid(), Some(12));
        // 12 becomes the busiest: it moves to the top, the selection follows.
        let mut v = sample();
        v.processes[2].cpu_percent = 90.0;
        app.update(v);
        assert_eq!(app.selected_pid(), Some(12));
        assert_eq!(app.selected_index(), Some(0));
    }

    #[test]
    fn selection_takes_the_row_of_a_process_that_disappeared() {
        let mut app = App::new();
        app.update(sample()); // 11, 12, 10
        app.on_key(Key::Down);
        assert_eq!(app.selected_pid(), Some(12));
        let mut v = sample();
        v.processes.retain(|p| p.info.pid != 12);
        app.update(v); // 11, 10
        assert_eq!(app.selected_pid(), Some(10));
        // The last row going away selects the new last row.
        let mut v = sample();
        v.processes.retain(|p| p.info.pid == 11);
        app.update(v);
        assert_eq!(app.selected_pid(), Some(11));
        // No processes at all: nothing selected; one appearing is selected.
        app.update(view(vec![]));
        assert_eq!(app.selected_pid(), None);
        assert!(app.selected_process().is_none());
        app.update(sample());
        assert_eq!(app.selected_pid(), Some(11));
    }

    #[test]
    fn histories_grow_capped_and_forget_what_is_gone() {
        let mut app = App::new();
        for i in 0..100 {
            let mut v = sample();
            v.processes[0].cpu_percent = i as f64;
            app.update(v);
        }
        let h = app.process_history(10).map(|h| h.iter().count());
        assert_eq!(h, Some(super::super::history::SAMPLES));
        assert_eq!(app.process_history(10).and_then(|h| h.latest()), Some(99.0));
        assert_eq!(app.node_history("b").and_then(|h| h.latest()), Some(40.0));
        assert_eq!(
            app.node_history("a").map(|h| h.iter().count()),
            Some(super::super::history::SAMPLES)
        );
        // c never reported: no history.
        assert!(app.node_history("c").is_none());
        let mut v = sample();
        v.processes.retain(|p| p.info.pid != 10);
        v.nodes.retain(|n| n.status.name != "b");
        app.update(v);
        assert!(app.process_history(10).is_none());
        assert!(app.node_history("b").is_none());
        assert!(app.process_history(11).is_some());
    }

    #[test]
    fn unmeasured_processes_get_no_samples() {
        let mut v = sample();
        if let Some(r) = v.nodes[1].report.as_mut() {
            r.tracing.enabled = false;
        }
        let mut app = App::new();
        app.update(v);
        assert!(app.process_history(11).is_none());
        assert!(app.process_history(10).is_some());
        assert_eq!(
            app.tracing_off(),
            vec![("b".into(), "no reason given".into())]
        );
    }

    #[test]
    fn enter_toggles_threads_and_question_mark_help() {
        let mut app = App::new();
        app.update(sample());
        assert!(!app.show_threads());
        app.on_key(Key::Enter);
        assert!(app.show_threads());
        app.on_key(Key::Enter);
        assert!(!app.show_threads());
        app.on_key(Key::Char('?'));
        assert!(app.help());
        app.on_key(Key::Char('?'));
        assert!(!app.help());
        app.on_key(Key::Char('?'));
        app.on_key(Key::Down);
        assert!(!app.help(), "any other key hides the help");
    }

    #[test]
    fn quit_keys() {
        for k in [Key::Char('q'), Key::Esc, Key::Interrupt] {
            let mut app = App::new();
            app.update(sample());
            assert_eq!(app.on_key(k), Action::Quit);
        }
        let mut app = App::new();
        assert_eq!(app.on_key(Key::Char('x')), Action::Nothing);
    }

    #[test]
    fn picker_excludes_the_current_node_and_down_nodes() {
        let mut app = App::new();
        let mut v = sample();
        v.nodes.push(node("d", Health::Up, 1.0));
        app.update(v);
        // 11 runs on b: a and d are candidates, c is down.
        assert_eq!(app.selected_pid(), Some(11));
        assert_eq!(app.on_key(Key::Char('m')), Action::Nothing);
        let p = app.picker().cloned();
        assert_eq!(
            p,
            Some(Picker {
                pid: 11,
                from: "b".into(),
                candidates: vec!["a".into(), "d".into()],
                selected: 0
            })
        );
        app.on_key(Key::Esc);
        assert!(app.picker().is_none());
        // 12 runs on a: b and d.
        app.on_key(Key::Down);
        app.on_key(Key::Char('m'));
        assert_eq!(
            app.picker().map(|p| p.candidates.clone()),
            Some(vec!["b".to_string(), "d".to_string()])
        );
    }

    #[test]
    fn picker_chooses_with_arrows_enter_or_number() {
        let mut app = App::new();
        let mut v = sample();
        v.nodes.push(node("d", Health::Up, 1.0));
        app.update(v);
        app.on_key(Key::Char('m'));
        // Keys go to the picker while it is open.
        assert_eq!(app.on_key(Key::Down), Action::Nothing);
        assert_eq!(app.on_key(Key::Down), Action::Nothing);
        assert_eq!(app.picker().map(|p| p.selected), Some(1));
        assert_eq!(app.on_key(Key::Char('k')), Action::Nothing);
        assert_eq!(app.on_key(Key::Char('j')), Action::Nothing);
        assert_eq!(app.selected_pid(), Some(11));
        assert_eq!(
            app.on_key(Key::Enter),
            Action::Migrate {
                pid: 11,
                to: "d".into()
            }
        );
        assert!(app.picker().is_none());
        assert!(app.status().is_some_and(|s| s.text.contains("migrating")));
        // By number; numbers out of range are ignored.
        app.on_key(Key::Char('m'));
        assert_eq!(app.on_key(Key::Char('3')), Action::Nothing);
        assert_eq!(app.on_key(Key::Char('0')), Action::Nothing);
        assert_eq!(app.on_key(Key::Char('x')), Action::Nothing);
        assert_eq!(
            app.on_key(Key::Char('1')),
            Action::Migrate {
                pid: 11,
                to: "a".into()
            }
        );
        // q closes the picker without quitting; Ctrl-C still quits.
        app.on_key(Key::Char('m'));
        assert_eq!(app.on_key(Key::Char('q')), Action::Nothing);
        assert!(app.picker().is_none());
        app.on_key(Key::Char('m'));
        assert_eq!(app.on_key(Key::Interrupt), Action::Quit);
    }

    #[test]
    fn picker_refuses_exited_processes_and_lonely_clusters() {
        let mut v = view(vec![process(10, "a", 1.0, 1.0)]);
        v.processes[0].info.state = ProcessStateKind::Exited;
        let mut app = App::new();
        app.update(v);
        app.on_key(Key::Char('m'));
        assert!(app.picker().is_none());
        assert!(app
            .status()
            .is_some_and(|s| s.error && s.text.contains("exited")));
        let mut v = view(vec![process(10, "a", 1.0, 1.0)]);
        v.nodes.retain(|n| n.status.name != "b");
        let mut app = App::new();
        app.update(v);
        app.on_key(Key::Char('m'));
        assert!(app.picker().is_none());
        assert!(app
            .status()
            .is_some_and(|s| s.text.contains("no other reachable node")));
    }

    #[test]
    fn picker_closes_when_its_process_goes_away() {
        let mut app = App::new();
        app.update(sample());
        app.on_key(Key::Char('m'));
        assert!(app.picker().is_some());
        let mut v = sample();
        v.processes.retain(|p| p.info.pid != 11);
        app.update(v);
        assert!(app.picker().is_none());
        assert!(app.status().is_some_and(|s| s.error));
    }

    #[test]
    fn fetch_errors_keep_the_last_view_until_a_refresh_works() {
        let mut app = App::new();
        app.update(sample());
        app.fetch_failed("no agent".into());
        assert_eq!(app.fetch_error(), Some("no agent"));
        assert_eq!(app.rows().len(), 3);
        app.update(sample());
        assert_eq!(app.fetch_error(), None);
    }

    #[test]
    fn migration_outcomes_show_in_the_status_line() {
        let mut app = App::new();
        app.migration_done(
            7,
            "b",
            Ok(MigrationReport {
                pid: 7,
                from: "a".into(),
                to: "b".into(),
                threads: 1,
                downtime_us: 1500,
                bytes_before_resume: 0,
                pages_at_origin: 9,
                pages_zero: 0,
                transfer_ms: None,
            }),
        );
        let s = app.status().cloned();
        assert_eq!(
            s,
            Some(Status {
                text: "migrated process 7 from a to b: downtime 1.50 ms, 9 pages follow".into(),
                error: false
            })
        );
        app.migration_done(7, "b", Err("process 7 is frozen".into()));
        let s = app.status().cloned();
        assert_eq!(
            s,
            Some(Status {
                text: "migrating process 7 to b failed: process 7 is frozen".into(),
                error: true
            })
        );
    }

    #[test]
    fn figures_order_with_nan_lowest() {
        assert_eq!(by_figure(f64::NAN, 0.0), Ordering::Less);
        assert_eq!(by_figure(2.0, 1.0), Ordering::Greater);
    }
}

//! Fixtures for the migration tests: a `popcorn run` client whose stdout is
//! followed line by line, and wrappers around `popcorn ps`/`migrate`/`kill`
//! that return what a user would read.

use crate::cluster::TestCluster;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `popcorn run` client: stdin piped, stdout followed line by line,
/// stderr collected. Killed on drop if still running.
pub struct Client {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Every stdout line received so far.
    pub seen: Vec<String>,
}

/// What a finished client printed.
pub struct Finished {
    pub status: ExitStatus,
    pub lines: Vec<String>,
    pub stderr: String,
}

impl Client {
    /// `popcorn --node NODE run ARGV…` from the host.
    pub fn run(c: &TestCluster, node: &str, argv: &[&str]) -> Client {
        let mut args = vec!["run"];
        args.extend_from_slice(argv);
        Client::spawn(c.popcorn_direct(node, &args))
    }

    pub fn spawn(mut cmd: Command) -> Client {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn popcorn run");
        let stdout = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Client {
            child,
            stdin,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    pub fn stderr(&self) -> String {
        text(&self.stderr.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits up to `timeout` for a line satisfying `pred` and returns it.
    pub fn wait_line(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no expected line within {timeout:?}; stdout so far: {:?}; stderr: {}",
                    tail(&self.seen),
                    self.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "popcorn run closed stdout; stdout: {:?}; stderr: {}",
                    tail(&self.seen),
                    self.stderr()
                ),
            }
        }
    }

    /// Waits for the exact line `want`.
    pub fn wait_for(&mut self, want: &str, timeout: Duration) {
        self.wait_line(|l| l == want, timeout);
    }

    /// Takes every stdout line that has arrived, without waiting.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    pub fn write_stdin(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(data).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// A writer for the client's stdin usable from another thread.
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin already taken")
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Host PID of the `popcorn run` client (for Ctrl-C).
    pub fn client_pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits up to `timeout` for `popcorn run` to exit; returns its status
    /// and everything it printed. Panics (after killing it) on timeout.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "popcorn run still running after {timeout:?}; stdout: {:?}; stderr: {}",
                    tail(&self.seen),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        Finished {
            status,
            lines: std::mem::take(&mut self.seen),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last lines of a long output, for panic messages.
pub fn tail(lines: &[String]) -> &[String] {
    &lines[lines.len().saturating_sub(30)..]
}

/// `popcorn --node NODE ps --json`.
pub fn ps(c: &TestCluster, node: &str) -> Vec<serde_json::Value> {
    let out = c.popcorn_direct(node, &["ps", "--json"]).output().unwrap();
    assert!(out.status.success(), "ps on {node}: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ps --json: {e}: {}", text(&out.stdout)));
    v.as_array().cloned().unwrap_or_default()
}

/// The `ps --json` entry of `pid` on `node`, if listed.
pub fn ps_entry(c: &TestCluster, node: &str, pid: i32) -> Option<serde_json::Value> {
    ps(c, node)
        .into_iter()
        .find(|p| p["pid"].as_i64() == Some(i64::from(pid)))
}

/// Waits for the running process `popcorn ps` on `node` lists with an argv
/// element ending in `program`; returns its PID.
pub fn wait_pid(c: &TestCluster, node: &str, program: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let procs = ps(c, node);
        let found = procs.iter().find(|p| {
            p["state"] == "running"
                && p["argv"]
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(|a| a.as_str())
                    .is_some_and(|a| a.ends_with(program))
        });
        if let Some(p) = found {
            return p["pid"].as_i64().expect("pid") as i32;
        }
        assert!(
            Instant::now() < deadline,
            "{program} never appeared in ps on {node}: {procs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `popcorn --node VIA migrate PID --to TO --json`: the report, or the
/// command's stderr when it fails.
pub fn migrate(
    c: &TestCluster,
    via: &str,
    pid: i32,
    to: &str,
) -> Result<serde_json::Value, String> {
    let out = migrate_cmd(c, via, pid, to).output().unwrap();
    migrate_result(&out)
}

pub fn migrate_cmd(c: &TestCluster, via: &str, pid: i32, to: &str) -> Command {
    c.popcorn_direct(via, &["migrate", &pid.to_string(), "--to", to, "--json"])
}

pub fn migrate_result(out: &Output) -> Result<serde_json::Value, String> {
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "migrate --json printed no report ({e}): {}",
            text(&out.stdout)
        )
    })
}

/// Migrates and checks the report; panics with the error otherwise.
pub fn migrate_ok(c: &TestCluster, via: &str, pid: i32, to: &str) -> serde_json::Value {
    let r = migrate(c, via, pid, to)
        .unwrap_or_else(|e| panic!("migrate {pid} --to {to} via {via} failed: {e}"));
    assert_eq!(r["pid"].as_i64(), Some(i64::from(pid)), "report: {r}");
    assert_eq!(r["to"], to, "report: {r}");
    r
}

/// Asserts a failing command's stderr names the problem.
pub fn fails_with(r: Result<serde_json::Value, String>, needles: &[&str]) -> String {
    let err = match r {
        Ok(report) => panic!("expected a failure naming {needles:?}, got success: {report}"),
        Err(e) => e,
    };
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    err
}

/// Lines `count N` of a counter output must be exactly 0..n: no gap, no
/// duplicate, in order.
pub fn assert_counts(lines: &[String], n: usize) {
    let counts: Vec<&String> = lines.iter().filter(|l| l.starts_with("count ")).collect();
    for (i, l) in counts.iter().enumerate() {
        assert_eq!(
            l.as_str(),
            format!("count {i}"),
            "count line {i} out of sequence; around it: {:?}",
            &counts[i.saturating_sub(3)..(i + 3).min(counts.len())]
        );
    }
    assert_eq!(
        counts.len(),
        n,
        "expected {n} count lines: {:?}",
        tail(lines)
    );
}

/// The value of the first line `KEY VALUE`.
pub fn value<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
}

/// Runs `ip ARGS` on the host and checks it succeeded.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
}

/// Waits until `popcorn nodes --json` on `node` shows `peer` up (or not).
pub fn wait_link(c: &TestCluster, node: &str, peer: &str, up: bool, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = c
            .popcorn_direct(node, &["nodes", "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let state = v
            .as_array()
            .and_then(|a| a.iter().find(|n| n["name"] == peer).cloned())
            .unwrap_or_default();
        if link_is_up(&state) == up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "link {node}→{peer} not {} within {timeout:?}: {state}",
            if up { "up" } else { "down" }
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn link_is_up(state: &serde_json::Value) -> bool {
    state["health"] == "up"
}

/// A cluster of `nodes` nodes (a, b, c…) whose peer links are all up.
pub fn cluster(name: &str, nodes: usize) -> TestCluster {
    cluster_with(name, nodes, &[])
}

/// [`cluster`] with more `cluster up` arguments.
pub fn cluster_with(name: &str, nodes: usize, extra: &[&str]) -> TestCluster {
    let c = TestCluster::up_with(name, nodes, extra).expect("cluster up");
    let names: Vec<String> = (0..nodes)
        .map(|i| char::from(b'a' + i as u8).to_string())
        .collect();
    for x in &names {
        for y in names.iter().filter(|y| *y != x) {
            wait_link(&c, x, y, true, Duration::from_secs(20));
        }
    }
    c
}

/// Host PIDs of the processes in `node`'s PID namespace that the node
/// knows as `pid` (a running process, or a frozen copy an origin keeps).
pub fn processes_in_node(c: &TestCluster, node: &str, pid: i32) -> Vec<i32> {
    let agent = c.agent_pid(node).expect("agent running");
    let ns = std::fs::read_link(format!("/proc/{agent}/ns/pid")).expect("agent pid ns");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&p| {
            std::fs::read_link(format!("/proc/{p}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&ns)
                && crate::cluster::ns_pid(p) == Some(pid)
                && crate::cluster::alive(p)
        })
        .collect()
}

/// Waits until `node` keeps nothing of process `pid`.
pub fn wait_nothing_left(c: &TestCluster, node: &str, pid: i32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_in_node(c, node, pid);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} still has process {pid} (host PIDs {left:?}) {timeout:?} after it ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

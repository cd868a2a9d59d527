//! The live monitor with real agents: `popcorn top` shows a process and
//! its eBPF-measured CPU where it runs, follows it from node a to node b,
//! logs the migration, agrees with `popcorn ps --json`; the full-screen
//! view runs under tmux, migrates the selected process from the keyboard
//! and restores the terminal; each agent serves Prometheus text; an agent
//! without tracing says so.

use popcorn_proto::config::ClusterConfig;
use popcorn_tests::cluster::TestCluster;
use popcorn_tests::migrate::{cluster, migrate_ok, ps, ps_entry, text, wait_pid, Client};
use popcorn_tests::program;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

/// `popcorn --node NODE top --once --json`.
fn top_json(c: &TestCluster, node: &str) -> Value {
    let out = c
        .popcorn_direct(node, &["top", "--once", "--json"])
        .output()
        .expect("run popcorn top");
    assert!(out.status.success(), "top on {node}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("top --once --json: {e}: {}", text(&out.stdout)))
}

/// `popcorn --node NODE top --once` (the screen as text).
fn top_text(c: &TestCluster, node: &str) -> String {
    let out = c
        .popcorn_direct(node, &["top", "--once", "--width", "160", "--height", "48"])
        .output()
        .expect("run popcorn top");
    assert!(out.status.success(), "top on {node}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn process(view: &Value, pid: i32) -> Option<&Value> {
    view["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"].as_i64() == Some(i64::from(pid)))
}

/// Polls `top --once --json` on `node` until `pred` holds for `pid`.
fn wait_view(
    c: &TestCluster,
    node: &str,
    pid: i32,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let view = top_json(c, node);
        if process(&view, pid).is_some_and(&pred) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "top on {node} never showed process {pid} {what}: {:#}",
            process(&view, pid).cloned().unwrap_or(Value::Null)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The process table's row of `pid` (first column, inside the box).
fn row(screen: &str, pid: i32) -> Option<&str> {
    let pid = pid.to_string();
    screen.lines().find(|l| {
        l.trim_matches(|c: char| c == '│' || c.is_whitespace())
            .split_whitespace()
            .next()
            == Some(pid.as_str())
    })
}

/// The column after the PID: the node it runs on.
fn row_node(line: &str) -> Option<&str> {
    line.trim_matches(|c: char| c == '│' || c.is_whitespace())
        .split_whitespace()
        .nth(1)
}

/// A spinning process measured by eBPF where it runs (the machine is
/// shared with other tests: any clearly non-zero share will do).
fn busy(p: &Value) -> bool {
    p["cpu_percent"].as_f64().is_some_and(|c| c > 10.0)
        && p["thread_figures"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
}

/// Ends the spinner where it runs; `popcorn run` reports the signal.
fn stop(c: &TestCluster, pid: i32, run: Client) {
    let out = c
        .popcorn_direct("a", &["kill", &pid.to_string(), "TERM"])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    let done = run.finish(Duration::from_secs(30));
    assert_eq!(done.status.code(), Some(143), "stderr: {}", done.stderr);
}

#[test]
fn top_follows_a_process_from_a_to_b_and_matches_ps() {
    let c = cluster("mtop", 2);
    let prog = program("top_spin");
    let mut run = Client::run(&c, "a", &[prog.to_str().unwrap(), "120"]);
    run.wait_for("tick 1", Duration::from_secs(20));
    let pid = wait_pid(&c, "a", "top_spin");

    // Measured by node a's tracer while it runs there.
    let view = wait_view(&c, "a", pid, "busy on a", |p| p["node"] == "a" && busy(p));
    let nodes: Vec<&str> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(nodes, ["a", "b"], "{view:#}");
    for n in view["nodes"].as_array().unwrap() {
        assert_eq!(n["report"]["tracing"]["enabled"], true, "{n:#}");
    }
    let screen = top_text(&c, "a");
    let line = row(&screen, pid).unwrap_or_else(|| panic!("no row for {pid}:\n{screen}"));
    assert!(row_node(line) == Some("a"), "row: {line}\n{screen}");

    let report = migrate_ok(&c, "a", pid, "b");
    // Any node shows the whole cluster: ask b, whose tracer measures it now.
    let view = wait_view(&c, "b", pid, "busy on b", |p| p["node"] == "b" && busy(p));
    let p = process(&view, pid).unwrap();
    assert_eq!(p["origin"], "a", "{p:#}");
    assert!(
        p["dsm"]["pages_in"].as_u64().is_some_and(|n| n > 0),
        "pages came from a: {p:#}"
    );
    let logged = view["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["pid"].as_i64() == Some(i64::from(pid)))
        .unwrap_or_else(|| panic!("migration not logged: {view:#}"));
    assert_eq!((&logged["from"], &logged["to"]), (&"a".into(), &"b".into()));
    assert_eq!(logged["downtime_us"], report["downtime_us"]);

    let screen = top_text(&c, "a");
    let line = row(&screen, pid).unwrap_or_else(|| panic!("no row for {pid}:\n{screen}"));
    assert!(row_node(line) == Some("b"), "row: {line}\n{screen}");

    // The snapshot's processes are what `popcorn ps --json` lists.
    let view = top_json(&c, "a");
    for entry in ps(&c, "a") {
        let pid = entry["pid"].as_i64().unwrap() as i32;
        let p = process(&view, pid).unwrap_or_else(|| panic!("{entry} missing from top"));
        for (k, v) in entry.as_object().unwrap() {
            if k != "threads" {
                assert_eq!(&p[k], v, "field {k} of {pid}: top {p:#} vs ps {entry:#}");
            }
        }
    }

    stop(&c, pid, run);
}

/// A tmux server of its own, removed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn pane_pid(&self) -> i32 {
        let out = self
            .cmd()
            .args(["display", "-p", "-t", "top", "#{pane_pid}"])
            .output()
            .unwrap();
        text(&out.stdout).trim().parse().expect("pane pid")
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "top"])
            .output()
            .unwrap();
        text(&out.stdout)
    }

    fn keys(&self, keys: &[&str]) {
        let st = self
            .cmd()
            .args(["send-keys", "-t", "top"])
            .args(keys)
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "screen never showed {what}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Waits for a file the test's shell writes; `screen` explains a timeout.
fn wait_file(path: &std::path::Path, screen: impl Fn() -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written:\n{}",
            path.display(),
            screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

#[test]
fn full_screen_top_migrates_the_selected_process_and_quits_cleanly() {
    let c = cluster("mtui", 2);
    let prog = program("top_spin");
    let mut run = Client::run(&c, "a", &[prog.to_str().unwrap(), "120"]);
    run.wait_for("tick 1", Duration::from_secs(20));
    let pid = wait_pid(&c, "a", "top_spin");

    let rc_file = c.dir().join("top.rc");
    let _ = std::fs::remove_file(&rc_file);
    let _ = std::fs::remove_file(rc_file.with_extension("rc.2"));
    let shell = format!(
        "{top}; echo $? > {rc}; read _; {top}; echo $? > {rc}.2; sleep 60",
        top = format!(
            "{} --config {} --node a top",
            c.bin("popcorn").display(),
            c.config_path().display()
        ),
        rc = rc_file.display()
    );
    let tmux = Tmux {
        socket: format!("popcorn-test-{}", std::process::id()),
    };
    let st = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "160",
            "-y",
            "48",
            &shell,
        ])
        .status()
        .expect("tmux (apt-get install tmux)");
    assert!(st.success());
    let pid_s = pid.to_string();
    tmux.wait_screen("the process on a", |s| {
        row(s, pid).is_some_and(|l| row_node(l) == Some("a"))
    });
    // The only process is selected: m opens the node picker, Enter picks b.
    tmux.keys(&["m"]);
    tmux.wait_screen("the node picker", |s| s.contains(" b"));
    tmux.keys(&["Enter"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ps_entry(&c, "a", pid).is_none_or(|e| e["node"] != "b") {
        assert!(
            Instant::now() < deadline,
            "m + Enter did not move {pid} to b:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let screen = tmux.wait_screen("the process on b", |s| {
        row(s, pid).is_some_and(|l| row_node(l) == Some("b"))
    });
    assert!(screen.contains(&pid_s));
    tmux.keys(&["q"]);
    let rc = wait_file(&rc_file, || tmux.screen());
    assert_eq!(rc.trim(), "0", "top's exit status after q");
    tmux.wait_screen("the restored terminal", |s| row(s, pid).is_none());
    // Enter lets the shell start a second top; SIGTERM ends it cleanly too.
    tmux.keys(&["Enter"]);
    tmux.wait_screen("the second top", |s| row(s, pid).is_some());
    let shell = tmux.pane_pid();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).unwrap();
    let top: i32 = children
        .split_whitespace()
        .next()
        .expect("top runs")
        .parse()
        .unwrap();
    // SAFETY: plain kill(2) of the top process this test started.
    unsafe { libc::kill(top, libc::SIGTERM) };
    let rc = wait_file(&rc_file.with_extension("rc.2"), || tmux.screen());
    assert_eq!(rc.trim(), "143", "top's exit status after SIGTERM");
    // Back on the normal screen: no table left behind (tmux may take a
    // moment to process the last bytes top wrote).
    tmux.wait_screen("the restored terminal", |s| row(s, pid).is_none());

    stop(&c, pid, run);
}

/// GET `path` from `addr` inside the network namespace `netns`.
fn http_get_in(netns: &str, addr: std::net::SocketAddr, path: &str) -> String {
    let netns = format!("/run/netns/{netns}");
    let path = path.to_owned();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns).expect("netns");
        // SAFETY: setns on this fresh thread only, with a valid netns fd.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {netns}");
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    })
    .join()
    .expect("http thread")
}

#[test]
fn metrics_endpoint_serves_prometheus_text_and_tracing_can_be_off() {
    let c = cluster("mmet", 2);
    // Node b restarts with tracing off in its cluster file.
    let path = c.config_path();
    let conf = std::fs::read_to_string(&path).unwrap();
    assert!(conf.contains("tracing = true"), "{conf}");
    std::fs::write(&path, conf.replacen("tracing = true", "tracing = false", 1)).unwrap();
    c.kill_agent("b");
    c.start_agent("b").expect("restart b");
    popcorn_tests::migrate::wait_link(&c, "a", "b", true, Duration::from_secs(20));

    let prog = program("top_spin");
    let mut run = Client::run(&c, "a", &[prog.to_str().unwrap(), "120"]);
    run.wait_for("tick 1", Duration::from_secs(20));
    let pid = wait_pid(&c, "a", "top_spin");
    wait_view(&c, "a", pid, "busy on a", busy);

    let config = ClusterConfig::load(&path).unwrap();
    let node_a = config.node("a").unwrap();
    let addr = std::net::SocketAddr::new(node_a.address.ip(), config.cluster.metrics_port);
    let reply = http_get_in(&c.netns("a"), addr, "/metrics");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let sample = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{body}"));
        match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let pid_s = pid.to_string();
    assert_eq!(
        sample("popcorn_node_info", &[("node", "a"), ("isa", "x86_64")]),
        1.0
    );
    assert_eq!(sample("popcorn_tracing_enabled", &[("node", "a")]), 1.0);
    assert_eq!(
        sample("popcorn_peer_up", &[("node", "a"), ("peer", "b")]),
        1.0
    );
    assert!(sample("popcorn_node_memory_total_bytes", &[("node", "a")]) > 0.0);
    assert!(
        sample(
            "popcorn_process_cpu_ratio",
            &[("node", "a"), ("pid", &pid_s)]
        ) > 0.1
    );
    assert_eq!(sample("popcorn_migrations_total", &[("node", "a")]), 0.0);
    let not_found = http_get_in(&c.netns("a"), addr, "/nothing");
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");

    // b runs without tracing and says why; top shows it and keeps working.
    let view = top_json(&c, "a");
    let b = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "b")
        .unwrap();
    assert_eq!(b["report"]["tracing"]["enabled"], false, "{b:#}");
    assert!(
        b["report"]["tracing"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("tracing = false")),
        "{b:#}"
    );
    let screen = top_text(&c, "a");
    assert!(screen.contains("tracing off on node b"), "{screen}");
    migrate_ok(&c, "a", pid, "b");
    let view = wait_view(&c, "a", pid, "on b", |p| p["node"] == "b");
    assert_eq!(
        process(&view, pid).unwrap()["cpu_percent"],
        0.0,
        "b does not measure"
    );

    stop(&c, pid, run);
}

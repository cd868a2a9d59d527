//! The metrics endpoint: this node's figures in the Prometheus text
//! exposition format (version 0.0.4), served over plain HTTP at
//! `/metrics` on the node's address and the cluster file's `metrics_port`.

use super::Monitor;
use crate::peers::Peers;
use popcorn_proto::control::{Health, NodeStatus, ProcessStateKind};
use popcorn_proto::monitor::NodeReport;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

/// Longest request head read.
const MAX_HEAD: usize = 8192;

/// A metric family being written: its samples follow its HELP and TYPE.
struct Family<'a> {
    out: &'a mut String,
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

impl Family<'_> {
    fn new<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

/// One metric family with one sample per item.
fn family<T>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    items: impl IntoIterator<Item = T>,
    sample: impl Fn(&T) -> (Vec<(&'static str, String)>, f64),
) {
    let mut f = Family::new(out, name, kind, help);
    for item in items {
        let (labels, value) = sample(&item);
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        f.sample(name, &labels, value);
    }
}

/// The process's command line as a label (shortened).
fn command(argv: &[String]) -> String {
    let mut c = argv.join(" ");
    if c.len() > 80 {
        let mut end = 80;
        while !c.is_char_boundary(end) {
            end -= 1;
        }
        c.truncate(end);
    }
    c
}

/// This node's figures in the text format; `peers` are the links as this
/// agent sees them.
pub fn encode(r: &NodeReport, peers: &[NodeStatus]) -> String {
    let mut out = String::new();
    let node = || ("node", r.node.clone());
    let one = [()];
    family(
        &mut out,
        "popcorn_node_info",
        "gauge",
        "The node this agent is, with its ISA.",
        one,
        |_| (vec![node(), ("isa", r.isa.to_string())], 1.0),
    );
    family(
        &mut out,
        "popcorn_tracing_enabled",
        "gauge",
        "1 when the agent traces its processes with eBPF.",
        one,
        |_| (vec![node()], if r.tracing.enabled { 1.0 } else { 0.0 }),
    );
    family(
        &mut out,
        "popcorn_node_cpus",
        "gauge",
        "CPUs of the machine.",
        one,
        |_| (vec![node()], f64::from(r.machine.cpus)),
    );
    family(
        &mut out,
        "popcorn_node_load1",
        "gauge",
        "1-minute load average.",
        one,
        |_| (vec![node()], r.machine.load1),
    );
    family(
        &mut out,
        "popcorn_node_cpu_busy_ratio",
        "gauge",
        "Busy share of all CPUs over the last second.",
        one,
        |_| (vec![node()], r.machine.cpu_busy_percent / 100.0),
    );
    family(
        &mut out,
        "popcorn_node_memory_total_bytes",
        "gauge",
        "Memory of the machine.",
        one,
        |_| (vec![node()], (r.machine.mem_total_kib * 1024) as f64),
    );
    family(
        &mut out,
        "popcorn_node_memory_available_bytes",
        "gauge",
        "Memory available for new work.",
        one,
        |_| (vec![node()], (r.machine.mem_available_kib * 1024) as f64),
    );
    let others = || peers.iter().filter(|p| p.health != Health::Local);
    family(
        &mut out,
        "popcorn_peer_up",
        "gauge",
        "1 when the authenticated link to the peer is up.",
        others(),
        |p| {
            (
                vec![node(), ("peer", p.name.clone())],
                if p.health == Health::Up { 1.0 } else { 0.0 },
            )
        },
    );
    family(
        &mut out,
        "popcorn_peer_rtt_seconds",
        "gauge",
        "Latest heartbeat round trip to the peer.",
        others().filter(|p| p.rtt_us.is_some()),
        |p| {
            (
                vec![node(), ("peer", p.name.clone())],
                p.rtt_us.unwrap_or(0.0) / 1e6,
            )
        },
    );
    family(
        &mut out,
        "popcorn_dsm_remote_faults_total",
        "counter",
        "Page faults served from another node.",
        one,
        |_| (vec![node()], r.dsm.remote_faults as f64),
    );
    family(
        &mut out,
        "popcorn_dsm_pages_in_total",
        "counter",
        "Pages received from other nodes.",
        one,
        |_| (vec![node()], r.dsm.pages_in as f64),
    );
    family(
        &mut out,
        "popcorn_dsm_pages_out_total",
        "counter",
        "Pages sent to other nodes.",
        one,
        |_| (vec![node()], r.dsm.pages_out as f64),
    );
    family(
        &mut out,
        "popcorn_migrations_total",
        "counter",
        "Migrations that left this node.",
        one,
        |_| (vec![node()], r.migrations_total as f64),
    );
    family(
        &mut out,
        "popcorn_migration_downtime_seconds_total",
        "counter",
        "Sum of the downtimes of those migrations.",
        one,
        |_| (vec![node()], r.migration_downtime_us_total as f64 / 1e6),
    );
    let states = [
        (ProcessStateKind::Running, "running"),
        (ProcessStateKind::Frozen, "frozen"),
        (ProcessStateKind::Exited, "exited"),
    ];
    family(
        &mut out,
        "popcorn_processes",
        "gauge",
        "Processes in this agent's table by state.",
        states,
        |(k, name)| {
            let n = r.processes.iter().filter(|p| p.info.state == *k).count();
            (vec![node(), ("state", (*name).to_owned())], n as f64)
        },
    );
    let here = || {
        r.processes
            .iter()
            .filter(|p| p.info.node == r.node && p.info.state != ProcessStateKind::Exited)
    };
    let process = |p: &popcorn_proto::monitor::ProcessFigures| {
        vec![
            node(),
            ("pid", p.info.pid.to_string()),
            ("origin", p.info.origin.clone()),
            ("command", command(&p.info.argv)),
        ]
    };
    family(
        &mut out,
        "popcorn_process_threads",
        "gauge",
        "Threads of a process running on this node.",
        here(),
        |p| (process(p), p.info.threads as f64),
    );
    family(
        &mut out,
        "popcorn_process_cpu_ratio",
        "gauge",
        "CPU time over the last second, 1 = one CPU.",
        here(),
        |p| (process(p), p.cpu_percent / 100.0),
    );
    family(
        &mut out,
        "popcorn_process_faults_per_second",
        "gauge",
        "User page faults per second.",
        here(),
        |p| (process(p), p.faults_per_s),
    );
    let pid = |pid: i32| vec![node(), ("pid", pid.to_string())];
    family(
        &mut out,
        "popcorn_process_dsm_remote_faults_total",
        "counter",
        "Faults of the process served from another node.",
        &r.traffic,
        |t| (pid(t.pid), t.dsm.remote_faults as f64),
    );
    family(
        &mut out,
        "popcorn_process_dsm_pages_in_total",
        "counter",
        "Pages of the process received here.",
        &r.traffic,
        |t| (pid(t.pid), t.dsm.pages_in as f64),
    );
    family(
        &mut out,
        "popcorn_process_dsm_pages_out_total",
        "counter",
        "Pages of the process sent from here.",
        &r.traffic,
        |t| (pid(t.pid), t.dsm.pages_out as f64),
    );
    let threads = || here().flat_map(|p| p.thread_figures.iter().map(move |t| (p.info.pid, t)));
    let thread =
        |pid: i32, tid: i32| vec![node(), ("pid", pid.to_string()), ("tid", tid.to_string())];
    family(
        &mut out,
        "popcorn_thread_cpu_ratio",
        "gauge",
        "CPU time of a thread over the last second.",
        threads(),
        |(p, t)| (thread(*p, t.tid), t.cpu_percent / 100.0),
    );
    family(
        &mut out,
        "popcorn_thread_faults_per_second",
        "gauge",
        "User page faults of a thread per second.",
        threads(),
        |(p, t)| (thread(*p, t.tid), t.faults_per_s),
    );
    out
}

/// Binds the endpoint; a port that cannot be bound only costs the metrics.
pub async fn start(addr: SocketAddr, monitor: Arc<Monitor>, peers: Arc<Peers>) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%addr, "metrics endpoint off: cannot listen: {e} (set metrics_port in the cluster file)");
            return;
        }
    };
    info!(%addr, "metrics at http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, from)) => {
                    let (monitor, peers) = (monitor.clone(), peers.clone());
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &monitor, &peers).await {
                            debug!(%from, "metrics request: {e}");
                        }
                    });
                }
                Err(e) => {
                    warn!("accepting a metrics connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

/// The request's method and path, once its head has arrived.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&head[..end]).ok()?;
    let mut parts = head.lines().next()?.split_whitespace();
    Some((parts.next()?, parts.next()?))
}

async fn answer(mut stream: TcpStream, monitor: &Monitor, peers: &Peers) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let line = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow client"))??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some((method, path)) = request_line(&head) {
            break (method.to_owned(), path.to_owned());
        }
        if head.len() > MAX_HEAD {
            break (String::new(), String::new());
        }
    };
    let (status, kind, body) = match (line.0.as_str(), line.1.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            encode(&monitor.report(), &peers.status()),
        ),
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "popcorn agent: metrics at /metrics\n".to_owned(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".to_owned(),
        ),
        _ => (
            "400 Bad Request",
            "text/plain",
            "only GET is served\n".to_owned(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcorn_proto::config::Isa;
    use popcorn_proto::control::ProcessInfo;
    use popcorn_proto::monitor::{
        DsmFigures, MachineFigures, ProcessFigures, ProcessTraffic, ThreadFigures, TracingStatus,
    };

    fn report() -> NodeReport {
        NodeReport {
            node: "a".into(),
            isa: Isa::X86_64,
            at_unix_ms: 1,
            tracing: TracingStatus::on(),
            machine: MachineFigures {
                cpus: 2,
                load1: 0.5,
                cpu_busy_percent: 25.0,
                mem_total_kib: 1024,
                mem_available_kib: 512,
            },
            processes: vec![ProcessFigures {
                info: ProcessInfo {
                    pid: 7,
                    uid: 0,
                    argv: vec!["./app".into(), "say \"hi\"\n".into()],
                    origin: "a".into(),
                    node: "a".into(),
                    nodes: vec![],
                    state: ProcessStateKind::Running,
                    threads: 2,
                    exit: None,
                },
                cpu_percent: 150.0,
                faults_per_s: 10.0,
                dsm: DsmFigures::default(),
                thread_figures: vec![ThreadFigures {
                    tid: 8,
                    cpu_percent: 75.0,
                    faults_per_s: 5.0,
                }],
            }],
            traffic: vec![ProcessTraffic {
                pid: 7,
                dsm: DsmFigures {
                    pages_out: 3,
                    ..Default::default()
                },
            }],
            dsm: DsmFigures::default(),
            migrations_total: 2,
            migration_downtime_us_total: 25_000,
            migrations: vec![],
        }
    }

    /// Every line is a comment or `name{labels} value`; samples follow
    /// their family's TYPE line.
    fn check_syntax(text: &str) {
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_owned();
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name_labels, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok() || value == "NaN", "{line}");
            let name = name_labels.split('{').next().unwrap();
            assert_eq!(name, family, "{line}");
        }
    }

    #[test]
    fn encodes_node_process_thread_and_traffic_figures() {
        let peers = vec![NodeStatus {
            name: "b".into(),
            address: "10.0.0.2:7000".into(),
            isa: Isa::X86_64,
            health: Health::Up,
            rtt_us: Some(250.0),
            last_seen_ms: Some(3),
            error: None,
        }];
        let text = encode(&report(), &peers);
        check_syntax(&text);
        for expected in [
            "popcorn_node_info{node=\"a\",isa=\"x86_64\"} 1\n",
            "popcorn_node_cpu_busy_ratio{node=\"a\"} 0.25\n",
            "popcorn_node_memory_total_bytes{node=\"a\"} 1048576\n",
            "popcorn_peer_up{node=\"a\",peer=\"b\"} 1\n",
            "popcorn_peer_rtt_seconds{node=\"a\",peer=\"b\"} 0.00025\n",
            "popcorn_migrations_total{node=\"a\"} 2\n",
            "popcorn_migration_downtime_seconds_total{node=\"a\"} 0.025\n",
            "popcorn_processes{node=\"a\",state=\"running\"} 1\n",
            "popcorn_process_cpu_ratio{node=\"a\",pid=\"7\",origin=\"a\",command=\"./app say \\\"hi\\\"\\n\"} 1.5\n",
            "popcorn_process_dsm_pages_out_total{node=\"a\",pid=\"7\"} 3\n",
            "popcorn_thread_cpu_ratio{node=\"a\",pid=\"7\",tid=\"8\"} 0.75\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn numbers_and_commands() {
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(1e-7), "0.0000001");
        let long = vec!["é".repeat(60)];
        assert!(command(&long).len() <= 80);
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_line(b"GET /metrics HTTP/1.1\r\n"), None);
        assert_eq!(request_line(b"\xff\xfe\r\n\r\n"), None);
    }
}

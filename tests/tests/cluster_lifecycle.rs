//! `popcorn cluster up/exec/down`: nodes are real network + PID + mount
//! namespaces that reach each other, and `down` removes everything, also
//! after a crash that lost the state file. Needs root and
//! `cargo build --workspace` first.

use popcorn_proto::config::ClusterConfig;
use popcorn_tests::cluster::{alive, bin_dir, cluster_dir, cluster_name, TestCluster};
use std::process::Command;

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cluster's network namespaces and host interfaces still present.
fn leftovers(cluster: &str) -> Vec<String> {
    let prefix = format!("pc-{cluster}-");
    let bridge = format!("pc-{cluster}");
    let mut found: Vec<String> = ip(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(|n| format!("netns {n}"))
        .collect();
    found.extend(
        ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n))
            .filter(|n| *n == bridge || n.starts_with(&prefix))
            .map(|n| format!("link {n}")),
    );
    found
}

/// Every process in the cluster's network namespaces.
fn cluster_pids(c: &TestCluster, nodes: &[&str]) -> Vec<i32> {
    nodes
        .iter()
        .flat_map(|n| {
            ip(&["netns", "pids", &c.netns(n)])
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

fn pidns(pid: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("pid namespace")
}

#[test]
fn nodes_are_isolated_hosts_and_down_removes_them() {
    let c = TestCluster::up("life", 3).expect("cluster up");
    let name = c.name().to_owned();
    let nodes = ["a", "b", "c"];
    let config = ClusterConfig::load(&c.config_path()).expect("cluster file");
    assert_eq!(config.cluster.name, name);
    assert_eq!(config.nodes.len(), 3);

    // Each node: its own netns with its own address on the cluster's /24.
    let namespaces = ip(&["netns", "list"]);
    let mut agents = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let ns = c.netns(node);
        assert!(namespaces.contains(&ns), "{ns} missing: {namespaces}");
        let want = config.node(node).unwrap().address.ip();
        let octets = match want {
            std::net::IpAddr::V4(v4) => v4.octets(),
            other => panic!("IPv6 address {other}"),
        };
        assert_eq!((octets[0], octets[1], octets[3]), (10, 77, 11 + i as u8));
        let addr = ip(&["-n", &ns, "-br", "addr", "show", "eth0"]);
        assert!(addr.contains(&format!("{want}/24")), "{ns}: {addr}");
        assert!(config.control_socket(node).exists());
        agents.push(c.agent_pid(node).expect("agent pid"));
    }

    // Each agent has a PID namespace of its own, not ours.
    let ours = pidns("self");
    let theirs: Vec<_> = agents.iter().map(|p| pidns(&p.to_string())).collect();
    assert!(theirs.iter().all(|n| *n != ours), "{theirs:?}");
    assert!(theirs[0] != theirs[1] && theirs[1] != theirs[2] && theirs[0] != theirs[2]);

    // `exec` runs inside the node: its PID namespace, its /proc, its
    // network, the node's environment, and returns the exit status.
    let out = c
        .exec(
            "b",
            &[
                "sh",
                "-c",
                "echo $POPCORN_NODE; cat /proc/1/comm; readlink /proc/self/ns/pid; \
                 ip -br addr show eth0; exit 7",
            ],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "b", "{text}");
    assert_eq!(lines[1], "popcorn-agent", "{text}");
    assert_eq!(std::path::Path::new(lines[2]), theirs[1], "{text}");
    assert!(
        lines[3].contains(&config.node("b").unwrap().address.ip().to_string()),
        "{text}"
    );

    // A real network between the nodes.
    for (from, to) in [("a", "c"), ("c", "b")] {
        let target = config.node(to).unwrap().address.ip().to_string();
        let out = Command::new("ip")
            .args(["netns", "exec", &c.netns(from)])
            .args(["ping", "-c1", "-W2", &target])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ping {from}→{to}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // A second `up` of the same name is refused with a hint.
    let out = c.cluster_cmd("up", &["--nodes", "1"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already up") && err.contains("down"), "{err}");

    let pids = cluster_pids(&c, &nodes);
    assert!(pids.len() >= 3, "{pids:?}");
    let dir = c.dir().to_owned();
    drop(c);
    assert!(leftovers(&name).is_empty(), "left: {:?}", leftovers(&name));
    for pid in pids.iter().chain(&agents) {
        assert!(!alive(*pid), "process {pid} survived down");
    }
    assert!(!dir.exists(), "{} survived down", dir.display());
}

#[test]
fn down_cleans_up_after_a_crash() {
    let c = TestCluster::up("crash", 2).expect("cluster up");
    let name = c.name().to_owned();
    let agents: Vec<i32> = ["a", "b"].iter().map(|n| c.agent_pid(n).unwrap()).collect();
    let pids = cluster_pids(&c, &["a", "b"]);
    // The tool "crashed": its state file is gone and the agents were killed.
    std::fs::remove_file(c.dir().join("state.json")).unwrap();
    for &pid in &agents {
        // SAFETY: plain kill(2) of an agent of our cluster.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(!leftovers(&name).is_empty());
    drop(c);
    assert!(leftovers(&name).is_empty(), "left: {:?}", leftovers(&name));
    for pid in pids.iter().chain(&agents) {
        assert!(!alive(*pid), "process {pid} survived down");
    }
    // Down again with nothing there succeeds.
    let out = Command::new(bin_dir().join("popcorn"))
        .args(["cluster", "down", "--name", &cluster_name("crash"), "--dir"])
        .arg(cluster_dir("crash"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn down_stops_agents_that_survive_a_lost_state_file() {
    let c = TestCluster::up("lost", 1).expect("cluster up");
    let name = c.name().to_owned();
    let pids = cluster_pids(&c, &["a"]);
    std::fs::write(c.dir().join("state.json"), "{ not json").unwrap();
    drop(c);
    assert!(leftovers(&name).is_empty(), "left: {:?}", leftovers(&name));
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived down");
    }
}

//! `popcorn cluster up/down`: nodes are real network + PID + mount
//! namespaces that reach each other, and `down` removes everything, also
//! after a crash that lost the state file.

use popcorn_tests::cluster::TestCluster;
use std::process::Command;

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn leftovers(cluster: &str) -> Vec<String> {
    let mut found: Vec<String> = ip(&["netns", "list"])
        .lines()
        .filter(|l| l.starts_with(&format!("{cluster}-")))
        .map(str::to_owned)
        .collect();
    found.extend(
        ip(&["-o", "link", "show"])
            .lines()
            .filter(|l| l.contains(&format!("pcb{cluster}")) || l.contains(&format!("pcv{cluster}")))
            .map(str::to_owned),
    );
    found
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn nodes_are_isolated_hosts_and_down_removes_them() {
    let c = TestCluster::up("life", 3).expect("cluster up");
    let name = c.name().to_owned();
    let namespaces = ip(&["netns", "list"]);
    let mut agents = Vec::new();
    for (i, node) in ["a", "b", "c"].iter().enumerate() {
        let ns = format!("{name}-{node}");
        assert!(namespaces.contains(&ns), "{ns} missing: {namespaces}");
        let addr = ip(&["-n", &ns, "-br", "addr", "show", "eth0"]);
        assert!(addr.contains(&format!("10.77.0.{}/24", 11 + i)), "{addr}");
        let pid = c.agent_pid(node).expect("agent pid");
        agents.push(pid);
    }
    // Each agent has a PID namespace of its own, not ours.
    let pidns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    let ours = pidns("self");
    let theirs: Vec<_> = agents.iter().map(|p| pidns(&p.to_string())).collect();
    assert!(theirs.iter().all(|n| *n != ours));
    assert!(theirs[0] != theirs[1] && theirs[1] != theirs[2] && theirs[0] != theirs[2]);
    // ... and its own /proc: inside node b, PID 1 is b's init.
    let out = c
        .popcorn_direct("b", &["run", "cat", "/proc/1/status"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("popcorn-agent"));

    // Real network between the nodes.
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("{name}-a"), "ping", "-c1", "-W2", "10.77.0.13"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ping a→c: {}", String::from_utf8_lossy(&out.stdout));

    drop(c);
    assert!(leftovers(&name).is_empty(), "left: {:?}", leftovers(&name));
    for pid in agents {
        assert!(!alive(pid), "agent {pid} survived down");
    }
}

#[test]
fn down_cleans_up_after_a_crash() {
    let c = TestCluster::up("crash", 2).expect("cluster up");
    let name = c.name().to_owned();
    let agents: Vec<i32> = ["a", "b"].iter().map(|n| c.agent_pid(n).unwrap()).collect();
    // The tool "crashed": its state file is gone and one agent was killed.
    std::fs::remove_file(c.dir().join("state.json")).unwrap();
    c.kill_agent("a");
    assert!(!leftovers(&name).is_empty());
    drop(c);
    assert!(leftovers(&name).is_empty(), "left: {:?}", leftovers(&name));
    for pid in agents {
        assert!(!alive(pid), "agent {pid} survived down");
    }
    // Down again with nothing there succeeds.
    let out = Command::new(popcorn_tests::cluster::bin_dir().join("popcorn"))
        .args(["cluster", "down", "--name", &name, "--dir", "/run/popcorn-test-crash"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

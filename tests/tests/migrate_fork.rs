//! A process that forks right after migrating, before its memory has
//! arrived (background transfer off): the child's missing pages come from
//! the origin through a pager of its own, and both see intact memory.

use popcorn_proto::control::{NodeStatus, ProcessInfo};
use popcorn_tests::cluster::TestCluster;
use popcorn_tests::programs::program;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn wait_link_up(c: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = c
            .popcorn_direct("a", &["nodes", "--json"])
            .output()
            .unwrap();
        let nodes: Vec<NodeStatus> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if nodes.iter().any(|n| n.name == "b" && n.rtt_us.is_some()) {
            return;
        }
        assert!(Instant::now() < deadline, "the link a-b did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_child_forked_during_post_copy_sees_intact_memory() {
    let c = TestCluster::up("mfork", 2).expect("cluster up");
    wait_link_up(&c);
    let prog = program("mig_fork");
    let mut run = c
        .popcorn_direct("a", &["run", prog.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("popcorn run");
    let mut out = BufReader::new(run.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let ps = c.popcorn_direct("a", &["ps", "--json"]).output().unwrap();
    let ps: Vec<ProcessInfo> = serde_json::from_slice(&ps.stdout).unwrap();
    let pid = ps
        .iter()
        .find(|p| p.exit.is_none() && p.argv[0].ends_with("mig_fork"))
        .expect("mig_fork in ps")
        .pid
        .to_string();

    let m = c
        .popcorn_direct("a", &["migrate", &pid, "--to", "b", "--no-push"])
        .output()
        .unwrap();
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    // Fork now, with almost all of the 16 MiB still at a.
    run.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = run.wait().unwrap();
    let mut lines: Vec<&str> = rest.lines().collect();
    lines.sort();
    assert_eq!(lines, ["child intact", "parent intact"], "output: {rest:?}");
    assert_eq!(status.code(), Some(0));
}

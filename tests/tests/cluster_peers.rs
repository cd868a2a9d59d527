//! Peer links between real agents in separate network namespaces: health,
//! round-trip time, loss of a peer, and refusal of a peer whose certificate
//! does not come from the cluster CA.

use popcorn_tests::cluster::TestCluster;
use std::process::Command;
use std::time::{Duration, Instant};

fn nodes(c: &TestCluster, from: &str) -> serde_json::Value {
    let out = c
        .popcorn_direct(from, &["nodes", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn health_of(c: &TestCluster, from: &str, node: &str) -> (String, serde_json::Value) {
    let all = nodes(c, from);
    let n = all
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .cloned()
        .unwrap();
    (n["health"].as_str().unwrap().to_owned(), n)
}

fn wait_health(c: &TestCluster, from: &str, node: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (h, n) = health_of(c, from, node);
        if h == want {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{node} seen from {from} stayed {h}: {n}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `node`, seen from `from`, is down with an error containing `why`.
fn wait_down_because(c: &TestCluster, from: &str, node: &str, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (h, n) = health_of(c, from, node);
        if h == "down" && n["error"].as_str().unwrap_or_default().contains(why) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{node} seen from {from}: expected down because of {why:?}, got {n}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_of(c: &TestCluster, node: &str) -> String {
    std::fs::read_to_string(c.dir().join("logs").join(format!("{node}.log"))).unwrap_or_default()
}

#[test]
fn peers_connect_report_rtt_and_notice_loss() {
    let c = TestCluster::up("peer", 3).expect("cluster up");
    for from in ["a", "b", "c"] {
        for to in ["a", "b", "c"] {
            if from == to {
                let (h, _) = health_of(&c, from, to);
                assert_eq!(h, "local");
            } else {
                let n = wait_health(&c, from, to, "up");
                let rtt = n["rtt_us"].as_f64().expect("rtt after heartbeats");
                assert!(rtt > 0.0 && rtt < 1_000_000.0, "rtt {rtt}");
            }
        }
    }
    let human = c.popcorn_direct("a", &["nodes"]).output().unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("local (this node)") && human.contains("up"),
        "{human}"
    );

    c.kill_agent("c");
    wait_health(&c, "a", "c", "down");
    wait_health(&c, "b", "c", "down");
    let (h, n) = health_of(&c, "a", "b");
    assert_eq!(h, "up", "a-b link must survive c's loss: {n}");

    // c comes back and is linked again.
    c.start_agent("c").expect("restart c");
    wait_health(&c, "a", "c", "up");
    wait_health(&c, "c", "b", "up");
}

#[test]
fn peer_with_a_foreign_certificate_is_refused() {
    let c = TestCluster::up("cert", 2).expect("cluster up");
    wait_health(&c, "a", "b", "up");

    // Give b a certificate from another CA (same node name), restart it.
    let rogue = std::env::temp_dir().join(format!("popcorn-rogue-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&rogue);
    let (_, b) = health_of(&c, "a", "b");
    let b_addr = b["address"].as_str().unwrap().to_owned();
    let out = Command::new(c.bin("popcorn"))
        .args(["cluster", "init", "--dir", rogue.to_str().unwrap()])
        .args(["--name", c.name(), "--member", &format!("b={b_addr}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.kill_agent("b");
    for f in ["b.crt", "b.key"] {
        std::fs::copy(rogue.join("pki").join(f), c.dir().join("pki").join(f)).unwrap();
    }
    c.start_agent("b").expect("restart b");

    // Each side refuses the other, says so in `nodes`, and logs it.
    wait_down_because(&c, "a", "b", "certificate");
    wait_down_because(&c, "b", "a", "refused its connection");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (a_log, b_log) = (log_of(&c, "a"), log_of(&c, "b"));
        if a_log.contains("cannot link to peer")
            && a_log.contains("certificate")
            && b_log.contains("refused peer connection")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refusal not logged:\na: {a_log}\nb: {b_log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&rogue);
}

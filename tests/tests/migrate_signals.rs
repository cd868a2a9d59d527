//! Signals reach a migrated process wherever it runs: `popcorn kill` sent
//! to its home node, and Ctrl-C on the `popcorn run` client; the client
//! exits with 128 + signal, like a shell, and the output up to the signal
//! is complete.

use popcorn_tests::cluster::TestCluster;
use popcorn_tests::migrate::{assert_counts, cluster, migrate_ok, ps_entry, wait_pid, Client};
use popcorn_tests::program;
use std::time::{Duration, Instant};

/// A long counter started on a and moved to b; returns the client and PID.
fn counter_on_b(c: &TestCluster) -> (Client, i32) {
    let prog = program("mig_counter");
    let mut run = Client::run(c, "a", &[prog.to_str().unwrap(), "3000", "16"]);
    run.wait_for("count 10", Duration::from_secs(20));
    let pid = wait_pid(c, "a", "mig_counter");
    migrate_ok(c, "a", pid, "b");
    run.wait_for("count 40", Duration::from_secs(10));
    assert_eq!(ps_entry(c, "a", pid).expect("listed on a")["node"], "b");
    (run, pid)
}

/// The process is no longer listed as running on either node.
fn gone(c: &TestCluster, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for node in ["a", "b"] {
        while ps_entry(c, node, pid).is_some_and(|e| e["state"] != "exited") {
            assert!(
                Instant::now() < deadline,
                "{pid} still listed on {node}: {:?}",
                ps_entry(c, node, pid)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn kill_and_ctrl_c_reach_the_migrated_process() {
    let c = cluster("mgsig", 2);
    let started = Instant::now();

    // `popcorn kill PID TERM` at the home node.
    let (run, pid) = counter_on_b(&c);
    let out = c
        .popcorn_direct("a", &["kill", &pid.to_string(), "TERM"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = run.finish(Duration::from_secs(10));
    assert_eq!(done.status.code(), Some(143), "stderr: {}", done.stderr);
    let n = done
        .lines
        .iter()
        .filter(|l| l.starts_with("count "))
        .count();
    assert!(n < 3000, "the counter was not stopped: {n} counts");
    assert_counts(&done.lines, n);
    assert!(!done.lines.iter().any(|l| l.starts_with("final")));
    gone(&c, pid);

    // Ctrl-C on `popcorn run`.
    let (run, pid) = counter_on_b(&c);
    // SAFETY: plain kill(2) of the client this test started.
    unsafe { libc::kill(run.client_pid(), libc::SIGINT) };
    let done = run.finish(Duration::from_secs(10));
    assert_eq!(done.status.code(), Some(130), "stderr: {}", done.stderr);
    let n = done
        .lines
        .iter()
        .filter(|l| l.starts_with("count "))
        .count();
    assert!(n < 3000, "the counter was not stopped: {n} counts");
    assert_counts(&done.lines, n);
    gone(&c, pid);
    eprintln!("took {:?}", started.elapsed());
}

//! `popcorn migrate` of a running counter a → b → a → b: what `popcorn run`
//! prints is exactly what the program would print without migration, the
//! exit status comes back, and `popcorn ps` shows where it runs.

use popcorn_tests::migrate::{
    assert_counts, cluster, migrate_ok, ps_entry, value, wait_pid, Client,
};
use popcorn_tests::program;
use std::time::{Duration, Instant};

const COUNT: usize = 400;

#[test]
fn counter_moves_back_and_forth_without_gap_or_duplicate() {
    let c = cluster("mgcount", 2);
    let prog = program("mig_counter");
    let started = Instant::now();
    let mut run = Client::run(&c, "a", &[prog.to_str().unwrap(), &COUNT.to_string(), "32"]);
    run.wait_line(|l| l.starts_with("sum "), Duration::from_secs(20));
    let pid = wait_pid(&c, "a", "mig_counter");
    let entry = ps_entry(&c, "a", pid).expect("listed on a");
    assert_eq!(entry["node"], "a", "{entry}");

    let mut reports = Vec::new();
    for (at, to) in [(30, "b"), (130, "a"), (230, "b")] {
        run.wait_for(&format!("count {at}"), Duration::from_secs(30));
        let r = migrate_ok(&c, "a", pid, to);
        eprintln!("migrated to {to} at count {at}: {r}");
        reports.push(r);
        let entry = ps_entry(&c, "a", pid).expect("still listed on its home node a");
        assert_eq!(entry["node"], to, "ps on a after the move to {to}: {entry}");
        assert_eq!(entry["state"], "running", "{entry}");
        // It keeps counting where it now runs.
        run.wait_for(&format!("count {}", at + 20), Duration::from_secs(10));
    }
    for r in &reports {
        assert!(r["threads"].as_u64() == Some(1), "{r}");
        assert!(r["downtime_us"].as_u64().is_some_and(|d| d > 0), "{r}");
        assert!(r["pages_at_origin"].as_u64().is_some_and(|p| p > 0), "{r}");
    }
    assert_eq!(
        reports[1]["from"], "b",
        "the second move starts from b: {}",
        reports[1]
    );

    let done = run.finish(Duration::from_secs(60));
    eprintln!("took {:?}", started.elapsed());
    assert_eq!(done.status.code(), Some(7), "stderr: {}", done.stderr);
    assert_counts(&done.lines, COUNT);
    let sum = value(&done.lines, "sum").expect("sum line");
    assert_eq!(value(&done.lines, "final"), Some(sum), "checksum changed");
    assert_eq!(
        done.lines.len(),
        COUNT + 2,
        "unexpected extra output: {:?}",
        done.lines
    );
    assert!(done.stderr.is_empty(), "stderr: {}", done.stderr);
    // Gone from the tables once it has exited.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ps_entry(&c, "a", pid).is_some_and(|e| e["state"] == "running") {
        assert!(Instant::now() < deadline, "still listed as running on a");
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! A program with 1 GiB of pseudo-random data is migrated and then
//! rereads all of it: every byte arrives (post-copy on demand and in the
//! background), and the downtime does not grow with the memory size.

use popcorn_tests::cluster::TestCluster;
use popcorn_tests::migrate::{cluster, migrate_ok, value, wait_pid, Client};
use popcorn_tests::program;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Runs `mig_fill MIB` on a, migrates it to b, lets it check its data;
/// returns the reported downtime in microseconds.
fn fill_migrate_check(c: &TestCluster, mib: usize, tag: &str) -> u64 {
    let trigger = PathBuf::from(format!("/tmp/popcorn-mgmem-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_file(&trigger);
    let prog = program("mig_fill");
    let t0 = Instant::now();
    let mut run = Client::run(
        c,
        "a",
        &[
            prog.to_str().unwrap(),
            &mib.to_string(),
            trigger.to_str().unwrap(),
        ],
    );
    run.wait_line(|l| l.starts_with("sum "), Duration::from_secs(60));
    let filled = t0.elapsed();
    let pid = wait_pid(c, "a", "mig_fill");
    let t1 = Instant::now();
    let r = migrate_ok(c, "a", pid, "b");
    let migrated = t1.elapsed();
    let pages = r["pages_at_origin"].as_u64().unwrap_or(0);
    assert!(
        pages >= (mib as u64) << 8,
        "{mib} MiB written but only {pages} pages to fetch: {r}"
    );
    std::fs::write(&trigger, b"").unwrap();
    let t2 = Instant::now();
    let done = run.finish(Duration::from_secs(120));
    let _ = std::fs::remove_file(&trigger);
    eprintln!(
        "{mib} MiB: fill {filled:?}, migrate command {migrated:?}, downtime {} us, check after migration {:?}; {r}",
        r["downtime_us"],
        t2.elapsed()
    );
    assert_eq!(done.status.code(), Some(0), "stderr: {}", done.stderr);
    let sum = value(&done.lines, "sum").expect("sum line");
    assert_eq!(value(&done.lines, "final"), Some(sum), "{:?}", done.lines);
    assert!(done.lines.iter().any(|l| l == "ok"), "{:?}", done.lines);
    r["downtime_us"].as_u64().expect("downtime_us")
}

#[test]
fn one_gib_arrives_intact_and_downtime_is_flat() {
    let c = cluster("mgmem", 2);
    let small: Vec<u64> = (0..2)
        .map(|i| fill_migrate_check(&c, 16, &format!("s{i}")))
        .collect();
    let big = fill_migrate_check(&c, 1024, "big");
    let small_max = small.iter().copied().max().unwrap_or(0);
    eprintln!("downtime: 16 MiB {small:?} us, 1 GiB {big} us");
    assert!(
        big < 3 * small_max + 20_000,
        "downtime grows with memory: 1 GiB {big} us vs 16 MiB {small:?} us"
    );
}

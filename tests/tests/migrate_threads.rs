//! A 9-thread program (mutex, condition variable, barrier; threads blocked
//! in futex, nanosleep and in read of stdin, a pipe) migrated twice while
//! it works: it finishes with the right totals, and no blocked call fails
//! with EINTR.

use popcorn_tests::cluster::TestCluster;
use popcorn_tests::migrate::{cluster, migrate_ok, value, wait_pid, Client};
use popcorn_tests::program;
use std::time::{Duration, Instant};

const SYS_READ: i64 = 0;
const SYS_NANOSLEEP: i64 = 35;
const SYS_FUTEX: i64 = 202;
const SYS_CLOCK_NANOSLEEP: i64 = 230;

/// The system call each thread of a host process is blocked in (-1 when
/// running), from /proc/PID/task/*/syscall.
fn blocked_in(host_pid: &str) -> Vec<i64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{host_pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("syscall")).ok())
        .map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(-1)
        })
        .collect()
}

/// Waits until, on `node`, a thread of `pid` is blocked in read, two in
/// futex and one in a sleep: the state the next freeze interrupts.
fn wait_blocked(c: &TestCluster, node: &str, pid: i32) {
    let host = c.host_pid(node, &pid.to_string());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = blocked_in(&host);
        let n = |nr: i64| s.iter().filter(|&&x| x == nr).count();
        if s.len() == 9
            && n(SYS_READ) >= 1
            && n(SYS_FUTEX) >= 2
            && n(SYS_NANOSLEEP) + n(SYS_CLOCK_NANOSLEEP) >= 1
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "threads of {pid} on {node} never all blocked as expected: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn blocked_threads_survive_two_migrations() {
    let c = cluster("mgthr", 2);
    let prog = program("mig_threads");
    let started = Instant::now();
    let mut run = Client::run(&c, "a", &[prog.to_str().unwrap(), "300", "100"]);
    run.wait_for("ready", Duration::from_secs(20));
    let pid = wait_pid(&c, "a", "mig_threads");
    run.write_stdin(b"add 5\n");

    wait_blocked(&c, "a", pid);
    let r = migrate_ok(&c, "a", pid, "b");
    assert_eq!(r["threads"].as_u64(), Some(9), "{r}");
    run.write_stdin(b"add 7\nwake\n");
    run.wait_for("woken", Duration::from_secs(10));

    wait_blocked(&c, "b", pid);
    let r = migrate_ok(&c, "a", pid, "a");
    assert_eq!(r["threads"].as_u64(), Some(9), "{r}");
    assert_eq!(r["from"], "b", "{r}");
    run.write_stdin(b"add 11\nend\n");
    run.close_stdin();

    let done = run.finish(Duration::from_secs(30));
    eprintln!("took {:?}", started.elapsed());
    assert_eq!(
        done.status.code(),
        Some(0),
        "stdout: {:?}; stderr: {}",
        done.lines,
        done.stderr
    );
    let lines = &done.lines;
    assert!(!lines.iter().any(|l| l.starts_with("error")), "{lines:?}");
    assert_eq!(value(lines, "stdin"), Some("23"), "{lines:?}");
    assert_eq!(value(lines, "ticks"), Some("5050"), "{lines:?}");
    assert_eq!(value(lines, "counter"), Some("1200"), "{lines:?}");
    assert_eq!(value(lines, "rounds"), Some("300"), "{lines:?}");
    assert_eq!(lines.last().map(String::as_str), Some("done"), "{lines:?}");
}

//! A migration that cannot happen leaves the process running where it was,
//! its output uninterrupted, and `popcorn migrate` says why: bad requests,
//! descriptors that cannot move, a destination agent killed mid-way, a cut
//! link. And once a migrated process has all its memory, the node it came
//! from may die without disturbing it.

use popcorn_tests::cluster::TestCluster;
use popcorn_tests::migrate::{
    assert_counts, cluster, cluster_with, fails_with, ip, migrate, migrate_cmd, migrate_ok,
    migrate_result, ps_entry, value, wait_link, wait_pid, Client,
};
use popcorn_tests::program;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

/// `mig_counter COUNT 16` started on a, with its PID.
fn counter(c: &TestCluster, count: usize) -> (Client, i32) {
    let prog = program("mig_counter");
    let mut run = Client::run(c, "a", &[prog.to_str().unwrap(), &count.to_string(), "16"]);
    run.wait_for("count 0", Duration::from_secs(20));
    let pid = wait_pid(c, "a", "mig_counter");
    (run, pid)
}

/// The last `count N` seen so far.
fn last_count(run: &mut Client) -> usize {
    run.drain();
    run.seen
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("count ")?.parse().ok())
        .unwrap_or(0)
}

/// The process still runs on `node`, listed there by its home a, and
/// keeps printing.
fn still_running_on(c: &TestCluster, run: &mut Client, pid: i32, node: &str) {
    let e = ps_entry(c, "a", pid).expect("listed on a");
    assert_eq!(e["node"], node, "{e}");
    assert_eq!(e["state"], "running", "{e}");
    let next = last_count(run) + 5;
    run.wait_for(&format!("count {next}"), Duration::from_secs(5));
}

/// Lets the counter finish and checks its whole output.
fn finishes_intact(run: Client, count: usize) {
    let done = run.finish(Duration::from_secs(60));
    assert_eq!(done.status.code(), Some(7), "stderr: {}", done.stderr);
    assert_counts(&done.lines, count);
    let sum = value(&done.lines, "sum").expect("sum line");
    assert_eq!(value(&done.lines, "final"), Some(sum));
}

fn proc_state(host_pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{host_pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}

#[test]
fn bad_requests_and_unmovable_descriptors_are_refused() {
    // Node c declares another ISA.
    let c = cluster_with("mgref", 3, &["--isa", "c=aarch64"]);
    let started = Instant::now();
    const COUNT: usize = 300;
    let prog = program("mig_fds");
    let mut run = Client::run(&c, "a", &[prog.to_str().unwrap(), &COUNT.to_string()]);
    run.wait_for("fds 3 4", Duration::from_secs(20));
    let pid = wait_pid(&c, "a", "mig_fds");

    fails_with(migrate(&c, "a", pid, "zz"), &["unknown node 'zz'"]);
    fails_with(migrate(&c, "a", pid, "a"), &["already runs on node 'a'"]);
    fails_with(
        migrate(&c, "a", 999_999, "b"),
        &["no process with PID 999999 on node 'a'"],
    );
    // A node of another ISA needs a `popcorn build` program at a migration point.
    fails_with(
        migrate(&c, "a", pid, "c"),
        &[
            "from x86_64 to aarch64",
            "was not built with `popcorn build`",
            "keeps running on 'a'",
        ],
    );
    // The node's PID 1 is not a program started with `popcorn run`.
    fails_with(migrate(&c, "a", 1, "b"), &["not managed by node 'a'"]);
    // Someone else's process.
    let out = migrate_cmd(&c, "a", pid, "b")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    fails_with(migrate_result(&out), &["permission denied"]);
    still_running_on(&c, &mut run, pid, "a");

    // Descriptors that cannot move: refused before anything changes, named.
    fails_with(
        migrate(&c, "a", pid, "b"),
        &["fd 3", "eventfd", "stays on node 'a'"],
    );
    still_running_on(&c, &mut run, pid, "a");
    run.write_stdin(b"close 3\n");
    run.wait_for("closed 3", Duration::from_secs(5));
    fails_with(
        migrate(&c, "a", pid, "b"),
        &["fd 4", "socket", "stays on node 'a'"],
    );
    still_running_on(&c, &mut run, pid, "a");
    run.write_stdin(b"close 4\n");
    run.wait_for("closed 4", Duration::from_secs(5));

    // Without them it moves; asking again names where it runs.
    migrate_ok(&c, "a", pid, "b");
    fails_with(migrate(&c, "a", pid, "b"), &["already runs on node 'b'"]);
    fails_with(migrate(&c, "b", pid, "b"), &["already runs on node 'b'"]);
    still_running_on(&c, &mut run, pid, "b");

    let done = run.finish(Duration::from_secs(30));
    eprintln!("took {:?}", started.elapsed());
    assert_eq!(done.status.code(), Some(7), "stderr: {}", done.stderr);
    assert_counts(&done.lines, COUNT);
    assert_eq!(done.lines.last().map(String::as_str), Some("final"));
}

#[test]
fn destination_agent_killed_mid_migration() {
    let c = cluster("mgdead", 2);
    let started = Instant::now();
    const COUNT: usize = 800;
    let (mut run, pid) = counter(&c, COUNT);
    let host = c.host_pid("a", &pid.to_string());

    // b's agent hangs, the migration starts (the process freezes), then
    // b's agent dies.
    let agent_b = c.agent_pid("b").expect("agent b");
    // SAFETY: plain kill(2) of an agent of this test's cluster.
    unsafe { libc::kill(agent_b, libc::SIGSTOP) };
    let child = migrate_cmd(&c, "a", pid, "b")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_state(&host) != Some('t') {
        assert!(Instant::now() < deadline, "the migration never froze {pid}");
        std::thread::sleep(Duration::from_millis(2));
    }
    c.kill_agent("b");
    let t = Instant::now();
    let out = child.wait_with_output().unwrap();
    let err = fails_with(
        migrate_result(&out),
        &["'b'", &format!("process {pid} keeps running on node 'a'")],
    );
    eprintln!("failed {:?} after the kill: {err}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    still_running_on(&c, &mut run, pid, "a");

    // With b down: refused at once.
    wait_link(&c, "a", "b", false, Duration::from_secs(10));
    fails_with(migrate(&c, "a", pid, "b"), &["node 'b' is not reachable"]);
    still_running_on(&c, &mut run, pid, "a");

    // b back: the migration works.
    c.start_agent("b").expect("restart b");
    wait_link(&c, "a", "b", true, Duration::from_secs(20));
    migrate_ok(&c, "a", pid, "b");
    still_running_on(&c, &mut run, pid, "b");
    eprintln!("recovered after {:?}", started.elapsed());
    finishes_intact(run, COUNT);
}

#[test]
fn cut_link_fails_the_migration_and_the_process_stays() {
    let c = cluster("mgcut", 2);
    let started = Instant::now();
    const COUNT: usize = 1000;
    let (mut run, pid) = counter(&c, COUNT);
    let veth = popcorn_tests::cluster::netns_name(c.name(), "b");

    // Cut while the link still looks up: the offer goes nowhere until the
    // heartbeats declare the link dead.
    ip(&["link", "set", &veth, "down"]);
    let t = Instant::now();
    let err = fails_with(
        migrate(&c, "a", pid, "b"),
        &["'b'", &format!("process {pid} keeps running on node 'a'")],
    );
    eprintln!("failed after {:?}: {err}", t.elapsed());
    still_running_on(&c, &mut run, pid, "a");

    // Known down: refused at once.
    wait_link(&c, "a", "b", false, Duration::from_secs(10));
    let t = Instant::now();
    fails_with(migrate(&c, "a", pid, "b"), &["node 'b' is not reachable"]);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    still_running_on(&c, &mut run, pid, "a");

    // Restored: the migration works.
    ip(&["link", "set", &veth, "up"]);
    wait_link(&c, "a", "b", true, Duration::from_secs(30));
    migrate_ok(&c, "a", pid, "b");
    still_running_on(&c, &mut run, pid, "b");
    eprintln!("recovered after {:?}", started.elapsed());
    finishes_intact(run, COUNT);
}

#[test]
fn origin_agent_dies_after_the_push() {
    let c = cluster("mgorig", 3);
    let started = Instant::now();
    const COUNT: usize = 600;
    let (mut run, pid) = counter(&c, COUNT);
    migrate_ok(&c, "a", pid, "b");
    run.wait_for("count 50", Duration::from_secs(10));
    let r = migrate_ok(&c, "a", pid, "c");
    assert_eq!(r["from"], "b", "{r}");
    // b has sent every page once it drops its frozen copy.
    let log = c.dir().join("logs").join("b.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("frozen copy discarded") && l.contains(&format!("pid={pid}")))
    {
        assert!(Instant::now() < deadline, "b never finished pushing");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Lots of it still to do after b is gone.
    assert!(last_count(&mut run) < COUNT - 200);
    c.kill_agent("b");
    still_running_on(&c, &mut run, pid, "c");
    eprintln!("took {:?}", started.elapsed());
    finishes_intact(run, COUNT);
}

#[test]
fn restore_error_at_the_destination_thaws_the_origin() {
    let c = cluster("mgrst", 2);
    let started = Instant::now();
    // A directory with a tmpfs mounted over it in node a's mount namespace
    // only: a file opened there cannot be reopened on b.
    let dir = std::env::temp_dir().join(format!("popcorn-mgrst-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let out = c
        .exec("a", &["mount", "-t", "tmpfs", "popcorn-test", d])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    const COUNT: usize = 300;
    let input = std::env::temp_dir().join(format!("popcorn-mgrst-{}.in", std::process::id()));
    let records: String = (0..COUNT).map(|i| format!("{i:07}\n")).collect();
    std::fs::write(&input, records).unwrap();
    let out_path = dir.join("out.txt");
    let prog = program("mig_append");
    let mut run = Client::run(
        &c,
        "a",
        &[
            prog.to_str().unwrap(),
            &COUNT.to_string(),
            out_path.to_str().unwrap(),
            input.to_str().unwrap(),
        ],
    );
    run.wait_for("count 20", Duration::from_secs(20));
    let pid = wait_pid(&c, "a", "mig_append");

    let err = fails_with(
        migrate(&c, "a", pid, "b"),
        &[
            "node 'b' could not restore it",
            "fd 3",
            out_path.to_str().unwrap(),
            &format!("process {pid} keeps running on node 'a'"),
        ],
    );
    eprintln!("{err}");
    still_running_on(&c, &mut run, pid, "a");

    let done = run.finish(Duration::from_secs(30));
    eprintln!("took {:?}", started.elapsed());
    assert_eq!(
        done.status.code(),
        Some(0),
        "{:?} {}",
        done.lines,
        done.stderr
    );
    assert_counts(&done.lines, COUNT);
    // The file (visible in a's namespace only) has every line once.
    let out = c
        .exec("a", &["cat", out_path.to_str().unwrap()])
        .output()
        .unwrap();
    let want: String = (0..COUNT).map(|i| format!("line {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    let _ = c.exec("a", &["umount", d]).output();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&input);
}

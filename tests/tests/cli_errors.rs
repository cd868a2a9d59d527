//! Bad input gets a clear message, a non-zero exit, and leaves the target
//! process untouched.

use popcorn_tests::cluster::TestCluster;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn fails_with(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

fn proc_state(host_pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{host_pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}

/// A `popcorn run` client, killed if the test ends early.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A root-owned program under node a's agent; returns (client, pid in node).
fn start_sleeper(c: &TestCluster, tag: &str) -> (Running, String) {
    let pidfile = std::env::temp_dir().join(format!("popcorn-err-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&pidfile);
    let script = format!("echo $$ > {}; exec sleep 300", pidfile.display());
    let child = Running(
        c.popcorn_direct("a", &["run", "/bin/sh", "-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(&pidfile) {
            if s.ends_with('\n') {
                let _ = std::fs::remove_file(&pidfile);
                return (child, s.trim().to_owned());
            }
        }
        assert!(Instant::now() < deadline, "sleeper did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_requests_are_refused_clearly() {
    let c = TestCluster::up("err", 2).expect("cluster up");
    let (mut sleeper, pid) = start_sleeper(&c, "main");
    let host_pid = c.host_pid("a", &pid);

    // Nonexistent PID.
    for verb in ["freeze", "thaw", "inspect", "kill"] {
        let out = c.popcorn_direct("a", &[verb, "999999"]).output().unwrap();
        fails_with(&out, "no process with PID 999999 on node 'a'");
    }

    // Someone else's process, from a non-root caller: refused, untouched.
    for verb in ["freeze", "inspect", "kill"] {
        let out = c
            .popcorn_direct("a", &[verb, &pid])
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap();
        fails_with(&out, "permission denied");
        assert_eq!(
            proc_state(&host_pid),
            Some('S'),
            "target disturbed by {verb}"
        );
    }

    // A non-root caller's program runs as that caller.
    let out = c
        .popcorn_direct("a", &["run", "id", "-u"])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        NOBODY.to_string(),
        "{}",
        text(&out.stderr)
    );

    // Unknown node, as a target and in --nodes.
    let out = c.popcorn_direct("zz", &["nodes"]).output().unwrap();
    fails_with(&out, "unknown node 'zz': the cluster has 'a' and 'b'");
    let out = c
        .popcorn_direct("a", &["run", "--nodes", "a,zz", "true"])
        .output()
        .unwrap();
    fails_with(&out, "unknown node 'zz'");

    // Malformed cluster file: the CLI and the agent both say where.
    let bad = std::env::temp_dir().join(format!("popcorn-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, "[cluster]\nname = \"x\"\n[[node]\nname=").unwrap();
    let out = Command::new(c.bin("popcorn"))
        .args(["--config", bad.to_str().unwrap(), "nodes"])
        .output()
        .unwrap();
    fails_with(&out, "malformed cluster file");
    let out = Command::new(c.bin("popcorn-agent"))
        .args(["start", "--config", bad.to_str().unwrap(), "--node", "a"])
        .output()
        .unwrap();
    fails_with(&out, "malformed cluster file");
    let _ = std::fs::remove_file(&bad);

    // Agent not running.
    c.kill_agent("b");
    let out = c.popcorn_direct("b", &["nodes"]).output().unwrap();
    fails_with(&out, "no popcorn agent is running for node 'b'");

    // Through all of it, the sleeper kept running where it was.
    assert_eq!(proc_state(&host_pid), Some('S'));
    let out = c
        .popcorn_direct("a", &["kill", &pid, "KILL"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sleeper.0.wait().unwrap().code(), Some(137));
}

//! `popcorn run` and the process commands against real agents in a local
//! cluster: output, stdin, exit status and signals must match running the
//! program directly.

use popcorn_tests::cluster::TestCluster;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn sh(script: &str) -> Output {
    Command::new("/bin/sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("run sh")
}

fn run_in(c: &TestCluster, node: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = c
        .popcorn_direct(node, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn popcorn");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().expect("wait popcorn")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// PID printed by a program that reports it on its first stdout line.
fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s.trim().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn proc_state(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim().chars().next()
}

#[test]
fn run_matches_direct_execution() {
    let c = TestCluster::up("run", 2).expect("cluster up");

    // Output (both streams), exit codes 0 and 3.
    for (script, code) in [
        ("echo hello; echo to-stderr >&2; printf 'no newline'", 0),
        ("seq 1 2000; echo done >&2; exit 3", 3),
    ] {
        let direct = sh(script);
        let via = run_in(&c, "a", &["run", "/bin/sh", "-c", script], b"");
        assert_eq!(
            text(&via.stdout),
            text(&direct.stdout),
            "stdout of {script}"
        );
        assert_eq!(
            text(&via.stderr),
            text(&direct.stderr),
            "stderr of {script}"
        );
        assert_eq!(via.status.code(), Some(code), "exit of {script}");
        assert_eq!(direct.status.code(), Some(code));
    }

    // stdin reaches the program; PATH lookup works like a shell's.
    let input: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let via = run_in(&c, "b", &["run", "--nodes", "b", "wc", "-l"], &input);
    assert_eq!(text(&via.stdout).trim(), "100000");
    assert_eq!(via.status.code(), Some(0));

    // Killed by a signal: 128 + signal, like a shell.
    let via = run_in(&c, "a", &["run", "/bin/sh", "-c", "kill -9 $$"], b"");
    assert_eq!(via.status.code(), Some(137));
    let via = run_in(&c, "a", &["run", "/bin/sh", "-c", "kill -TERM $$"], b"");
    assert_eq!(via.status.code(), Some(143));

    // Programs that exit at once still report their status (the exit can
    // race the agent recording the process).
    for i in 0..20 {
        let (prog, code) = if i % 2 == 0 {
            ("true", 0)
        } else {
            ("false", 1)
        };
        let via = run_in(&c, "a", &["run", prog], b"");
        assert_eq!(via.status.code(), Some(code), "{prog} #{i}");
    }

    // A missing program: the shell's 127, nothing started.
    let via = run_in(&c, "a", &["run", "no-such-program-xyz"], b"");
    assert_eq!(via.status.code(), Some(127));
    assert!(
        text(&via.stderr).contains("command not found"),
        "{}",
        text(&via.stderr)
    );
}

#[test]
fn signals_reach_the_program_and_ps_shows_it() {
    let c = TestCluster::up("sig", 1).expect("cluster up");
    let dir = tempdir("sig");
    let pidfile = dir.join("pid");
    // The program reports its PID (as its node sees it), then traps INT.
    let script = format!(
        "trap 'echo got-int; exit 7' INT; echo $$ > {}; while :; do sleep 0.05; done",
        pidfile.display()
    );
    let child = c
        .popcorn_direct("a", &["run", "/bin/sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = wait_for_file(&pidfile);

    let ps = c.popcorn_direct("a", &["ps", "--json"]).output().unwrap();
    assert!(ps.status.success(), "{}", text(&ps.stderr));
    let procs: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    let entry = procs
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_i64() == pid.parse().ok())
        .unwrap_or_else(|| panic!("pid {pid} not in ps: {procs}"));
    assert_eq!(entry["node"], "a");
    assert_eq!(entry["state"], "running");

    // Ctrl-C on `popcorn run` is forwarded.
    // SAFETY: plain kill of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "got-int\n");
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn freeze_thaw_inspect_through_the_agent() {
    let c = TestCluster::up("frz", 1).expect("cluster up");
    let dir = tempdir("frz");
    let pidfile = dir.join("pid");
    let counter = dir.join("count");
    let script = format!(
        "echo $$ > {}; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo $i > {}; sleep 0.01; done",
        pidfile.display(),
        counter.display()
    );
    let mut child = c
        .popcorn_direct("a", &["run", "/bin/sh", "-c", &script])
        .spawn()
        .unwrap();
    let pid = wait_for_file(&pidfile);
    let host_pid = c.host_pid("a", &pid);

    let out = c.popcorn_direct("a", &["freeze", &pid]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        proc_state(&host_pid),
        Some('t'),
        "frozen process is in a trace stop"
    );
    let before = std::fs::read_to_string(&counter).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap(),
        before,
        "counter moved while frozen"
    );

    let out = c
        .popcorn_direct("a", &["inspect", &pid, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["pid"].to_string(), pid);
    assert!(!state["threads"].as_array().unwrap().is_empty());
    assert!(state["vmas"].as_array().unwrap().len() > 5);
    let human = c.popcorn_direct("a", &["inspect", &pid]).output().unwrap();
    assert!(
        text(&human.stdout).contains("thread(s)"),
        "{}",
        text(&human.stdout)
    );

    let out = c.popcorn_direct("a", &["freeze", &pid]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already frozen"),
        "{}",
        text(&out.stderr)
    );

    let out = c.popcorn_direct("a", &["thaw", &pid]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&counter).unwrap() == before {
        assert!(Instant::now() < deadline, "counter did not move after thaw");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = c.popcorn_direct("a", &["thaw", &pid]).output().unwrap();
    assert!(
        text(&out.stderr).contains("not frozen"),
        "{}",
        text(&out.stderr)
    );

    let out = c
        .popcorn_direct("a", &["kill", &pid, "KILL"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(child.wait().unwrap().code(), Some(137));
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("popcorn-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

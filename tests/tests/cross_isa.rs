//! Cross-ISA migration through the agents (issue 5), in a local cluster
//! whose node b is declared aarch64 (its programs run under qemu-aarch64
//! on this x86_64 machine): a program built with `popcorn build` moves
//! x86_64 → aarch64 → x86_64 in the middle of its run (stopped 14 calls
//! deep, its heap following on demand), with output byte-identical to an
//! unmigrated native run and its exit status propagated; a move requested while the program is between migration
//! points is refused and it keeps running; a signal reaches it while it
//! runs emulated; a program's own Popcorn-style `migrate(nid)` calls move
//! it there and back; when the destination cannot continue it (its executable
//! is not the program's), the program resumes where it stopped. (A program
//! not built with `popcorn build` is refused in migrate_failures.)
//!
//! Needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user
//! (`make deps`) and the built binaries (cargo build).

use popcorn_tests::cluster::bin_dir;
use popcorn_tests::migrate::{
    cluster_with, fails_with, migrate, migrate_ok, ps_entry, text, wait_nothing_left, wait_pid,
    Client,
};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unprivileged user programs run as in one test.
const NOBODY: u32 = 65534;
use std::time::{Duration, Instant};

/// `popcorn build tests/programs/xisa/NAME.c -o DIR/NAME` in a directory of
/// test `test`'s own; returns DIR/NAME.
fn built(name: &str, test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("popcorn-xisa-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("programs/xisa/{name}.c"));
    let app = dir.join(name);
    let out = Command::new(bin_dir().join("popcorn"))
        .arg("build")
        .arg(&src)
        .arg("-o")
        .arg(&app)
        .output()
        .unwrap();
    assert!(out.status.success(), "popcorn build: {}", text(&out.stderr));
    app
}

/// Output lines and exit code of an unmigrated run of `exe` (under `qemu`
/// when given).
fn unmigrated(qemu: Option<&str>, exe: &Path, args: &[&str]) -> (Vec<String>, i32) {
    let out = match qemu {
        Some(q) => Command::new(q).arg(exe).args(args).output().unwrap(),
        None => Command::new(exe).args(args).output().unwrap(),
    };
    let lines = text(&out.stdout).lines().map(str::to_owned).collect();
    (lines, out.status.code().unwrap_or(-1))
}

fn node_of(c: &popcorn_tests::cluster::TestCluster, pid: i32) -> String {
    ps_entry(c, "a", pid)
        .and_then(|p| p["node"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[test]
fn a_program_moves_to_aarch64_and_back_with_identical_output() {
    let app = built("xisa_kernels", "e2e");
    let app_s = app.to_str().unwrap();
    let args = ["150", "20"];
    let native = app.with_extension("x86_64");
    let (expected, code) = unmigrated(None, &native, &args);
    assert_eq!(code, 5);
    assert_eq!(expected.len(), 151, "{expected:?}");
    // Same program, same bytes on the other ISA.
    let emulated = unmigrated(Some("qemu-aarch64"), &app.with_extension("aarch64"), &args);
    assert_eq!(emulated, (expected.clone(), 5));

    let c = cluster_with("xisae2e", 2, &["--isa", "b=aarch64"]);
    let mut run = Client::run(&c, "a", &["--nodes", "a,b", app_s, args[0], args[1]]);
    run.wait_line(|l| l.starts_with("round 5:"), Duration::from_secs(30));
    let pid = wait_pid(&c, "a", "xisa_kernels");

    let to_arm = migrate_ok(&c, "a", pid, "b");
    assert_eq!(to_arm["to"], "b");
    assert!(to_arm["downtime_us"].as_u64().unwrap() > 0, "{to_arm}");
    // The heap was not sent with the offer: it follows on demand.
    assert!(to_arm["pages_at_origin"].as_u64().unwrap() > 0, "{to_arm}");
    assert_eq!(node_of(&c, pid), "b");
    // It runs emulated there for a while, output still arriving.
    run.wait_line(|l| l.starts_with("round 60:"), Duration::from_secs(60));
    assert_eq!(node_of(&c, pid), "b");

    // Back, asked at the home node (forwarded to b).
    let back = migrate_ok(&c, "a", pid, "a");
    assert_eq!(
        (back["from"].as_str(), back["to"].as_str()),
        (Some("b"), Some("a"))
    );
    assert_eq!(node_of(&c, pid), "a");

    let fin = run.finish(Duration::from_secs(120));
    assert_eq!(fin.status.code(), Some(5), "stderr: {}", fin.stderr);
    assert_eq!(fin.lines, expected, "stderr: {}", fin.stderr);
}

#[test]
fn moves_between_migration_points_are_refused_and_signals_reach_the_emulated_program() {
    let app = built("xisa_kernels", "sig");
    let app_s = app.to_str().unwrap();
    // After each round 6.5 s without a migration point.
    let args = ["40", "0", "6500"];
    let c = cluster_with("xisasig", 2, &["--isa", "b=aarch64"]);
    let mut run = Client::run(
        &c,
        "a",
        &["--nodes", "a,b", app_s, args[0], args[1], args[2]],
    );
    run.wait_line(|l| l.starts_with("round 0:"), Duration::from_secs(30));
    let pid = wait_pid(&c, "a", "xisa_kernels");

    // Napping for 6.5 s: no migration point within the 5 s the agent waits.
    let started = Instant::now();
    fails_with(
        migrate(&c, "a", pid, "b"),
        &[
            "did not reach a migration point within 5 s",
            "keeps running on 'a'",
        ],
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(node_of(&c, pid), "a");
    // The program b had started for it, waiting at main, is gone.
    wait_nothing_left(&c, "b", pid, Duration::from_secs(5));
    run.wait_line(|l| l.starts_with("round 1:"), Duration::from_secs(30));

    // Right after a round's line the program naps 6.5 s again; a request
    // made 3 s into that sleep is served at its end.
    std::thread::sleep(Duration::from_secs(3));
    let to_arm = migrate_ok(&c, "a", pid, "b");
    assert_eq!(to_arm["to"], "b");
    run.wait_line(|l| l.starts_with("round 2:"), Duration::from_secs(30));

    // A signal sent at home reaches it under qemu on b: killed by SIGTERM.
    let out = c
        .popcorn_direct("a", &["kill", &pid.to_string(), "TERM"])
        .output()
        .unwrap();
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    let fin = run.finish(Duration::from_secs(60));
    assert_eq!(fin.status.code(), Some(128 + 15), "stderr: {}", fin.stderr);
    // What it printed before is what an unmigrated run prints, and it
    // never finished.
    let (expected, _) = unmigrated(None, &app.with_extension("x86_64"), &[args[0]]);
    let n = fin.lines.len();
    assert!((3..40).contains(&n), "{:?}", fin.lines);
    assert_eq!(fin.lines[..], expected[..n]);
}

#[test]
fn a_destination_that_cannot_continue_leaves_the_program_where_it_was() {
    let app = built("xisa_kernels", "fail");
    // b's executable of this name is another program: its call sites do not
    // match, so the translation fails there.
    let other = built("xisa_stop", "fail-other");
    std::fs::copy(
        other.with_extension("aarch64"),
        app.with_extension("aarch64"),
    )
    .unwrap();
    let app_s = app.to_str().unwrap();
    // Long enough to be running still when b has failed, even under load.
    let args = ["250", "20"];
    let (expected, code) = unmigrated(None, &app.with_extension("x86_64"), &args);
    let c = cluster_with("xisafail", 2, &["--isa", "b=aarch64"]);
    let mut run = Client::run(&c, "a", &["--nodes", "a,b", app_s, args[0], args[1]]);
    run.wait_line(|l| l.starts_with("round 3:"), Duration::from_secs(30));
    let pid = wait_pid(&c, "a", "xisa_kernels");
    fails_with(
        migrate(&c, "a", pid, "b"),
        &["node 'b' could not", "keeps running on node 'a'"],
    );
    assert_eq!(node_of(&c, pid), "a");
    wait_nothing_left(&c, "b", pid, Duration::from_secs(5));
    let fin = run.finish(Duration::from_secs(60));
    assert_eq!(fin.status.code(), Some(code), "stderr: {}", fin.stderr);
    assert_eq!(fin.lines, expected, "stderr: {}", fin.stderr);
}

#[test]
fn a_program_moves_itself_with_popcorns_migrate_call() {
    let app = built("xisa_migrate_call", "call");
    let app_s = app.to_str().unwrap();
    // Without an agent, migrate() returns at once: the reference output.
    let (expected, code) = unmigrated(None, &app.with_extension("x86_64"), &[]);
    assert_eq!(code, 3);
    let c = cluster_with("xisacall", 2, &["--isa", "b=aarch64"]);
    // As an unprivileged user: the program runs as that user on every
    // node (its userfaultfd made before it drops the agent's privileges).
    let mut cmd = c.popcorn_direct("a", &["run", "--nodes", "a,b", app_s]);
    cmd.uid(NOBODY).gid(NOBODY).current_dir("/tmp");
    let mut run = Client::spawn(cmd);
    run.wait_line(|l| l.starts_with("phase 0:"), Duration::from_secs(30));
    let pid = wait_pid(&c, "a", "xisa_migrate_call");
    let owner = ps_entry(&c, "a", pid).unwrap()["uid"].as_u64();
    assert_eq!(owner, Some(u64::from(NOBODY)));
    // migrate(1) after phase 1 (to b, aarch64), migrate(0) after phase 3.
    let fin = run.finish(Duration::from_secs(60));
    assert_eq!(fin.status.code(), Some(code), "stderr: {}", fin.stderr);
    assert_eq!(fin.lines, expected, "stderr: {}", fin.stderr);
    // The home node logged both moves.
    let out = c
        .popcorn_direct("a", &["top", "--once", "--json"])
        .output()
        .unwrap();
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let moves: Vec<(String, String)> = view["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["pid"].as_i64() == Some(i64::from(pid)))
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (s("from"), s("to"))
        })
        .collect();
    let logs = || {
        ["a", "b"]
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(c.dir().join(format!("logs/{n}.log")));
                let log = log.unwrap_or_default();
                let lines: Vec<&str> = log.lines().filter(|l| l.contains("migrat")).collect();
                format!("{n}: {}", lines.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        moves.contains(&("a".into(), "b".into())),
        "{moves:?}\n{}",
        logs()
    );
    assert!(
        moves.contains(&("b".into(), "a".into())),
        "{moves:?}\n{}",
        logs()
    );
}

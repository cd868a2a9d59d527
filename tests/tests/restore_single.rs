//! Restore of a single-threaded process: a worker created with a chosen PID
//! (and refused with a clear error when that PID is taken), and a full
//! freeze → capture → restore in a new PID namespace under the same PID, the
//! restored program carrying on exactly where the original stopped.

use popcorn_checkpoint::restore::{
    copy_memory_eager, lay_out, restore_process_state, spawn_worker, WorkerSpec,
};
use popcorn_checkpoint::{Error, FrozenProcess};
use popcorn_tests::programs::Running;
use popcorn_tests::restore::{KillOnDrop, PidNs};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// `(field, value)` of `/proc/PID/status`.
fn status_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

#[test]
fn worker_is_stopped_under_ptrace_with_only_the_fds_given() {
    let devnull = File::open("/dev/null").unwrap();
    let w = spawn_worker(&WorkerSpec {
        fds: vec![(devnull.as_raw_fd(), 5)],
        ..WorkerSpec::default()
    })
    .unwrap();
    let pid = w.process.pid();
    let _guard = KillOnDrop(pid);
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let links: Vec<_> = fds
        .iter()
        .map(|f| std::fs::read_link(format!("/proc/{pid}/fd/{f}")))
        .collect();
    assert_eq!(fds, ["5"], "{links:?}");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/5")).unwrap(),
        std::path::Path::new("/dev/null")
    );
    // SAFETY: gettid has no arguments.
    let me = unsafe { libc::syscall(libc::SYS_gettid) };
    assert_eq!(status_field(pid, "TracerPid"), me.to_string());
    assert!(status_field(pid, "State").starts_with('t'));
    drop(w);
}

#[test]
fn taken_pid_is_refused_by_name() {
    let me = std::process::id() as i32;
    let err = spawn_worker(&WorkerSpec {
        pid: Some(me),
        ..WorkerSpec::default()
    })
    .unwrap_err();
    assert!(
        matches!(err, Error::PidTaken { pid } if pid == me),
        "{err:?}"
    );
    assert!(err.to_string().contains(&me.to_string()), "{err}");
}

#[test]
fn counter_continues_in_a_new_pid_namespace_with_the_same_pid() {
    let mut r = Running::start("restore_counter", &[]);
    let sum = r.wait_line(|l| l.starts_with("sum "), Duration::from_secs(20));
    let sum = sum.trim_start_matches("sum ").to_owned();
    r.wait_for("count 20", Duration::from_secs(20));
    let pid = r.pid();
    let ns = PidNs::create();

    // A signal the program blocks: it must still be pending after restore.
    // SAFETY: plain integer arguments.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    let mut origin = FrozenProcess::freeze(pid).unwrap();
    let state = origin.capture().unwrap();
    assert_eq!(state.shared_pending_signals.len(), 1);
    let stdin = origin.dup_fd(0).unwrap();
    let stdout = origin.dup_fd(1).unwrap();
    let stderr = origin.dup_fd(2).unwrap();
    let mut w = spawn_worker(&WorkerSpec {
        pid_ns: Some(ns.ns.as_fd()),
        pid: Some(pid),
        fds: vec![
            (stdin.as_raw_fd(), 0),
            (stdout.as_raw_fd(), 1),
            (stderr.as_raw_fd(), 2),
        ],
    })
    .unwrap();
    drop((stdin, stdout, stderr));
    let wpid = w.process.pid();
    let guard = KillOnDrop(wpid);
    assert_ne!(wpid, pid);
    assert_eq!(w.ns_pid, pid);
    let nspid = status_field(wpid, "NSpid");
    assert_eq!(
        nspid.split_whitespace().last(),
        Some(pid.to_string().as_str())
    );

    let layout = lay_out(&mut w.process, &state).unwrap();
    let copied = copy_memory_eager(pid, wpid, &layout.to_copy).unwrap();
    assert!(copied >= 16 << 20, "only {copied} bytes copied");
    restore_process_state(&mut w.process, &state, &layout).unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{wpid}/exe")).unwrap(),
        std::path::Path::new(&state.exe)
    );
    assert_eq!(status_field(wpid, "Name"), state.comm);

    // The original goes; the worker takes over.
    // SAFETY: plain integer arguments.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    drop(origin);
    let _ = r.child.wait();
    w.process.thaw().unwrap();

    let fin = r.wait_line(|l| l.starts_with("final "), Duration::from_secs(30));
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer; `wpid` is our child.
    let reaped = unsafe { libc::waitpid(wpid, &mut status, 0) };
    assert_eq!(reaped, wpid);
    std::mem::forget(guard);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "worker status {status:#x}"
    );
    assert_eq!(fin, format!("final {sum} pid {pid} usr1 1"));
    let counts: Vec<u32> = r
        .seen
        .iter()
        .filter_map(|l| l.strip_prefix("count ")?.parse().ok())
        .collect();
    let want: Vec<u32> = (0..150).collect();
    assert_eq!(counts, want, "counter had a gap or a duplicate");
}

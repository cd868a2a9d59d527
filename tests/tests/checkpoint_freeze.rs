//! Freeze/thaw of real processes: invisible to a busy multi-threaded
//! program, and clear errors for bad targets.

use popcorn_checkpoint::{Error, FrozenProcess};
use popcorn_tests::programs::Running;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SCALE: &str = "2";

/// Aborts the whole test binary if a test hangs, so a hang is a failure.
fn watchdog(limit: Duration) {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            eprintln!("watchdog: tests still running after {limit:?}, aborting");
            std::process::abort();
        });
    });
}

fn run_undisturbed() -> Vec<String> {
    static BASELINE: OnceLock<Vec<String>> = OnceLock::new();
    BASELINE
        .get_or_init(|| {
            let r = Running::start("mt_workload", &[SCALE]);
            let (status, lines) = r.finish(Duration::from_secs(120));
            assert!(
                status.success(),
                "undisturbed run failed: {status:?} {lines:?}"
            );
            assert!(
                lines
                    .iter()
                    .any(|l| l == "eintr=0 short_sleeps=0 unexpected=0"),
                "{lines:?}"
            );
            lines
        })
        .clone()
}

#[test]
fn mt_workload_survives_500_freezes() {
    watchdog(Duration::from_secs(600));
    let baseline = run_undisturbed();
    let mut r = Running::start("mt_workload", &[SCALE]);
    r.wait_for("started", Duration::from_secs(30));
    let pid = r.pid();
    let mut max_threads = 0;
    let mut times = Vec::new();
    for i in 0..500 {
        assert!(r.alive(), "workload finished after only {i} freezes");
        let t = Instant::now();
        let mut f = FrozenProcess::freeze(pid)
            .unwrap_or_else(|e| panic!("freeze {i} of live process failed: {e}"));
        let threads = f.capture_threads().expect("capture_threads");
        assert_eq!(threads.len(), f.tids().len());
        assert!(
            threads.iter().all(|t| t.state == 't'),
            "not all stopped: {threads:?}"
        );
        max_threads = max_threads.max(threads.len());
        f.thaw().expect("thaw");
        times.push(t.elapsed());
        std::thread::sleep(Duration::from_micros(1000 + (i % 3) * 1000));
    }
    times.sort();
    eprintln!(
        "freeze+capture_threads+thaw: p50 {:?} p90 {:?} max {:?}, up to {max_threads} threads",
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times[times.len() - 1]
    );
    assert!(
        max_threads >= 9,
        "expected the workload's threads, saw {max_threads}"
    );
    let (status, lines) = r.finish(Duration::from_secs(120));
    assert!(status.success(), "frozen run failed: {status:?} {lines:?}");
    assert_eq!(lines, baseline, "output differs from the undisturbed run");
}

#[test]
fn nonexistent_pid_is_named() {
    // Beyond the maximum pid_max (2^22), so it can never exist.
    let pid = 0x7fff_fff0;
    let e = FrozenProcess::freeze(pid).unwrap_err();
    assert!(
        matches!(e, Error::NoSuchProcess { pid: p } if p == pid),
        "{e:?}"
    );
    assert_eq!(e.to_string(), format!("process {pid} does not exist"));
    assert!(!popcorn_checkpoint::process_exists(pid));
    assert!(matches!(
        popcorn_checkpoint::process_owner_uid(pid),
        Err(Error::NoSuchProcess { .. })
    ));
    assert!(matches!(
        FrozenProcess::freeze(-5),
        Err(Error::NoSuchProcess { pid: -5 })
    ));
}

#[test]
fn own_process_and_thread_ids_are_refused() {
    let me = std::process::id() as i32;
    assert!(matches!(
        FrozenProcess::freeze(me),
        Err(Error::SelfTrace { .. })
    ));
    assert!(popcorn_checkpoint::process_exists(me));
    assert_eq!(popcorn_checkpoint::process_owner_uid(me).unwrap(), unsafe {
        libc::getuid()
    });

    let mut r = Running::start("blocked", &[]);
    r.wait_for("ready", Duration::from_secs(30));
    let pid = r.pid();
    let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|&t| t != pid)
        .expect("a second thread");
    let e = FrozenProcess::freeze(tid).unwrap_err();
    assert!(matches!(e, Error::NotAProcess { .. }), "{e:?}");
    assert!(e.to_string().contains(&tid.to_string()), "{e}");
    assert!(!popcorn_checkpoint::process_exists(tid));
}

#[test]
fn already_traced_process_gives_clear_error() {
    let mut r = Running::start("blocked", &[]);
    r.wait_for("ready", Duration::from_secs(30));
    let pid = r.pid();
    // Another thread of ours freezes it first: ptrace belongs to that thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let f = FrozenProcess::freeze(pid).expect("first freeze");
        tx.send(()).unwrap();
        done_rx.recv().unwrap();
        f.thaw().expect("thaw");
    });
    rx.recv().unwrap();
    let e = FrozenProcess::freeze(pid).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyTraced { pid: p, .. } if p == pid),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&pid.to_string()) && msg.contains("already traced"),
        "{msg}"
    );
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    // Once released it can be frozen again.
    FrozenProcess::freeze(pid).unwrap().thaw().unwrap();
}

#[test]
fn zombie_gives_clear_error() {
    let r = Running::start("exiter", &["0"]);
    let pid = r.pid();
    // Wait (without reaping) until it is a zombie.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        if state == "Z" {
            break;
        }
        assert!(Instant::now() < deadline, "never became a zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    let e = FrozenProcess::freeze(pid).unwrap_err();
    assert!(
        matches!(e, Error::ProcessExited { pid: p } if p == pid),
        "{e:?}"
    );
    assert!(e.to_string().contains(&pid.to_string()));
    // Its exit status is still ours to collect.
    let (status, _) = r.finish(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[test]
fn process_exiting_during_freeze_never_hangs() {
    watchdog(Duration::from_secs(600));
    let mut outcomes = [0usize; 3];
    for round in 0..60 {
        let delay = (round % 12) * 300;
        let r = Running::start("exiter", &[&delay.to_string()]);
        let pid = r.pid();
        loop {
            match FrozenProcess::freeze(pid) {
                Ok(mut f) => {
                    outcomes[0] += 1;
                    // Capture may race with nothing: the process is stopped.
                    let threads = f.capture_threads().expect("capture_threads while frozen");
                    assert!(!threads.is_empty());
                    f.thaw().expect("thaw");
                }
                Err(e @ Error::ProcessExited { .. }) => {
                    outcomes[1] += 1;
                    assert!(e.to_string().contains(&pid.to_string()));
                    break;
                }
                Err(e) => panic!("unexpected error freezing exiting process {pid}: {e}"),
            }
        }
        // The exit status still reaches the parent.
        let (status, _) = r.finish(Duration::from_secs(30));
        assert!(status.success(), "round {round}: {status:?}");
        outcomes[2] += 1;
    }
    eprintln!(
        "frozen {} times, {} exits seen during freeze",
        outcomes[0], outcomes[1]
    );
    assert_eq!(outcomes[1], 60);
}

#[test]
fn killed_while_frozen_thaws_cleanly() {
    let mut r = Running::start("blocked", &[]);
    r.wait_for("ready", Duration::from_secs(30));
    let f = FrozenProcess::freeze(r.pid()).unwrap();
    r.child.kill().unwrap();
    // The threads die without our help; thaw must not fail or hang.
    std::thread::sleep(Duration::from_millis(50));
    f.thaw().expect("thaw after SIGKILL");
    let (status, _) = r.finish(Duration::from_secs(30));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn drop_thaws() {
    let mut r = Running::start("blocked", &[]);
    r.wait_for("ready", Duration::from_secs(30));
    {
        let _f = FrozenProcess::freeze(r.pid()).unwrap();
    }
    r.write_stdin(b"after drop\n");
    r.wait_for("got:after drop", Duration::from_secs(30));
}

#[test]
fn processes_cloned_during_freeze_are_let_go() {
    watchdog(Duration::from_secs(600));
    let mut r = Running::start("cloner", &["3000"]);
    r.wait_for("started", Duration::from_secs(30));
    let pid = r.pid();
    let mut freezes = 0;
    while r.alive() {
        let mut f = match FrozenProcess::freeze(pid) {
            Ok(f) => f,
            Err(Error::ProcessExited { .. } | Error::NoSuchProcess { .. }) => break,
            Err(e) => panic!("freeze: {e}"),
        };
        for tid in f.tids() {
            assert!(
                std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists(),
                "{tid} is not a thread of {pid}"
            );
        }
        f.capture_threads().unwrap();
        f.thaw().unwrap();
        freezes += 1;
    }
    let (status, lines) = r.finish(Duration::from_secs(60));
    eprintln!("{freezes} freezes");
    assert!(status.success(), "{status:?} {lines:?}");
    assert_eq!(lines.last().unwrap(), "done children=3000 bad=0");
    assert!(freezes > 100, "only {freezes} freezes");
}

#[test]
fn stopped_process_stays_stopped() {
    let mut r = Running::start("blocked", &[]);
    r.wait_for("ready", Duration::from_secs(30));
    let pid = r.pid();
    let state = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = stat.rsplit(')').next().unwrap().to_owned();
        after.split_whitespace().next().unwrap().to_owned()
    };
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while state() != "T" {
        assert!(Instant::now() < deadline, "never stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut f = FrozenProcess::freeze(pid).unwrap();
    let s = f.capture().unwrap(); // injects syscalls into every thread
    assert_eq!(s.threads.len(), 3);
    f.thaw().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(state(), "T", "thaw resumed a process stopped by SIGSTOP");
    unsafe { libc::kill(pid, libc::SIGCONT) };
    r.write_stdin(b"wake\n");
    r.wait_for("got:wake", Duration::from_secs(30));
    r.close_stdin();
    let (status, lines) = r.finish(Duration::from_secs(30));
    assert!(status.success());
    assert_eq!(
        lines.last().unwrap(),
        "read_eintr=0 futex_eintr=0 futex_err=0 sleep_eintr=0 sleep_short=0"
    );
}

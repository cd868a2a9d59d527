//! Syscall injection into stopped threads: results are right, the thread's
//! registers are untouched, and blocked syscalls carry on after thaw.

use popcorn_checkpoint::{Disposition, FrozenProcess, RestartKind, ThreadState};
use popcorn_tests::programs::Running;
use std::time::{Duration, Instant};

const SYS_READ: i64 = 0;
const SYS_MMAP: i64 = 9;
const SYS_MUNMAP: i64 = 11;
const SYS_GETPID: i64 = 39;
const SYS_GETTID: i64 = 186;
const SYS_FUTEX: i64 = 202;
const SYS_RESTART_SYSCALL: i64 = 219;
const SYS_CLOCK_NANOSLEEP: i64 = 230;

fn mapped(pid: i32, addr: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .any(|l| l.starts_with(&format!("{addr:x}-")))
}

/// Freezes `blocked` once all three threads are inside their syscalls.
fn freeze_when_blocked(r: &Running) -> (FrozenProcess, Vec<ThreadState>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut f = FrozenProcess::freeze(r.pid()).unwrap();
        let threads = f.capture_threads().unwrap();
        let mut nrs: Vec<i64> = threads
            .iter()
            .filter_map(|t| t.syscall.map(|s| s.nr))
            // A sleep interrupted by an earlier freeze resumes as restart_syscall.
            .map(|nr| {
                if nr == SYS_RESTART_SYSCALL {
                    SYS_CLOCK_NANOSLEEP
                } else {
                    nr
                }
            })
            .collect();
        nrs.sort();
        if nrs == [SYS_READ, SYS_FUTEX, SYS_CLOCK_NANOSLEEP] {
            return (f, threads);
        }
        assert!(
            Instant::now() < deadline,
            "threads never all blocked: {nrs:?}"
        );
        f.thaw().unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn getpid_mmap_munmap() {
    let mut r = Running::start("blocked", &[]);
    r.wait_for("ready", Duration::from_secs(30));
    let pid = r.pid();
    let (mut f, threads) = freeze_when_blocked(&r);
    for t in &threads {
        assert_eq!(
            f.inject_syscall(t.tid, SYS_GETPID, [0; 6]).unwrap(),
            pid as i64
        );
        assert_eq!(
            f.inject_syscall(t.tid, SYS_GETTID, [0; 6]).unwrap(),
            t.tid as i64
        );
    }
    let tid = threads[1].tid;
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let addr = f
        .inject_syscall(tid, SYS_MMAP, [0, 8192, prot, flags, u64::MAX, 0])
        .unwrap();
    assert!(addr > 0, "mmap returned {addr}");
    assert!(mapped(pid, addr as u64), "{addr:#x} not in maps");
    assert_eq!(
        f.inject_syscall(tid, SYS_MUNMAP, [addr as u64, 8192, 0, 0, 0, 0])
            .unwrap(),
        0
    );
    assert!(!mapped(pid, addr as u64));
    // Errors come back as -errno.
    assert_eq!(
        f.inject_syscall(tid, SYS_MUNMAP, [1, 8192, 0, 0, 0, 0])
            .unwrap(),
        -libc::EINVAL as i64
    );
    // Unknown thread.
    assert!(f.inject_syscall(1, SYS_GETPID, [0; 6]).is_err());
    f.thaw().unwrap();
    r.write_stdin(b"wake\n");
    r.close_stdin();
    let (status, lines) = r.finish(Duration::from_secs(30));
    assert!(status.success());
    assert_eq!(
        lines,
        [
            "ready",
            "got:wake",
            "read_eintr=0 futex_eintr=0 futex_err=0 sleep_eintr=0 sleep_short=0"
        ]
    );
}

#[test]
fn blocked_threads_survive_100_injections_each() {
    // Single-step injection, and PTRACE_SYSCALL injection for a process
    // that ignores SIGTRAP.
    for (arg, trap) in [
        ("", Disposition::Handler),
        ("trap-ignored", Disposition::Ignore),
    ] {
        survive_100_injections(arg, trap);
    }
}

fn survive_100_injections(arg: &str, trap: Disposition) {
    let args: Vec<&str> = [arg].into_iter().filter(|a| !a.is_empty()).collect();
    let mut r = Running::start("blocked", &args);
    r.wait_for("ready", Duration::from_secs(30));
    let pid = r.pid();
    let (mut f, before) = freeze_when_blocked(&r);
    for t in &before {
        let s = t.syscall.unwrap();
        let want = match s.nr {
            SYS_CLOCK_NANOSLEEP | SYS_RESTART_SYSCALL => RestartKind::RestartBlock,
            _ => RestartKind::RestartSys,
        };
        assert_eq!(
            s.restart,
            Some(want),
            "thread {} in syscall {}",
            t.tid,
            s.nr
        );
    }
    for i in 0..100 {
        for t in &before {
            let r = f.inject_syscall(t.tid, SYS_GETPID, [0; 6]).unwrap();
            assert_eq!(r, pid as i64, "injection {i} into {}", t.tid);
        }
    }
    let after = f.capture_threads().unwrap();
    assert_eq!(before, after, "thread state changed by injections");
    // The SIGTRAP disposition is untouched by the traps injection uses.
    let state = f.capture().unwrap();
    let sigtrap = state.sigactions[libc::SIGTRAP as usize - 1];
    assert_eq!(sigtrap.disposition, trap, "{arg}: {sigtrap:?}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("SigPnd:\t0000000000000000"), "{status}");
    assert!(status.contains("ShdPnd:\t0000000000000000"), "{status}");
    f.thaw().unwrap();

    // The reader is still in its read() and gets data written now.
    r.write_stdin(b"hello after 300 injections\n");
    r.wait_for("got:hello after 300 injections", Duration::from_secs(30));
    r.write_stdin(b"wake\n");
    r.close_stdin();
    let (status, lines) = r.finish(Duration::from_secs(30));
    assert!(status.success());
    assert_eq!(
        lines.last().unwrap(),
        "read_eintr=0 futex_eintr=0 futex_err=0 sleep_eintr=0 sleep_short=0",
        "{arg}: {lines:?}"
    );
}

#[test]
fn workload_output_unchanged_by_injections() {
    let baseline = {
        let r = Running::start("mt_workload", &["1"]);
        let (status, lines) = r.finish(Duration::from_secs(120));
        assert!(status.success(), "{lines:?}");
        lines
    };
    let mut r = Running::start("mt_workload", &["1"]);
    r.wait_for("started", Duration::from_secs(30));
    let pid = r.pid();
    let mut rounds = 0;
    let mut injections = 0;
    while rounds < 100 {
        let mut f = match FrozenProcess::freeze(pid) {
            Ok(f) => f,
            Err(e) => {
                assert!(!r.alive(), "freeze failed while alive: {e}");
                break;
            }
        };
        for tid in f.tids() {
            assert_eq!(
                f.inject_syscall(tid, SYS_GETPID, [0; 6]).unwrap(),
                pid as i64
            );
            injections += 1;
        }
        let s = f.capture().expect("full capture");
        assert_eq!(s.threads.len(), f.tids().len());
        f.thaw().unwrap();
        rounds += 1;
        std::thread::sleep(Duration::from_millis(3));
    }
    eprintln!("{rounds} rounds, {injections} injections");
    assert!(rounds >= 50, "workload ended after {rounds} rounds");
    let (status, lines) = r.finish(Duration::from_secs(120));
    assert!(status.success(), "{status:?} {lines:?}");
    assert_eq!(lines, baseline);
}

#[test]
fn process_killed_during_injections_gives_error_not_hang() {
    for target in ["leader", "other"] {
        let mut r = Running::start("blocked", &[]);
        r.wait_for("ready", Duration::from_secs(30));
        let pid = r.pid();
        let (mut f, threads) = freeze_when_blocked(&r);
        let tid = if target == "leader" {
            pid
        } else {
            threads.iter().map(|t| t.tid).find(|&t| t != pid).unwrap()
        };
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let started = Instant::now();
        let err = loop {
            match f.inject_syscall(tid, SYS_GETPID, [0; 6]) {
                Ok(v) => assert_eq!(v, pid as i64),
                Err(e) => break e,
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "injections kept working after SIGKILL"
            );
        };
        killer.join().unwrap();
        eprintln!("{target}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains(&tid.to_string()), "{err}");
        drop(f);
        let (status, _) = r.finish(Duration::from_secs(30));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}

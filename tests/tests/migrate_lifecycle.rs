//! After a migration the program keeps managing its memory, threads and
//! signals: malloc/free, mmap/munmap/MADV_DONTNEED (no stale page from the
//! origin), realloc that moves a block with mremap, new threads, a SIGALRM
//! timer with the handler installed before the move, and an interval timer
//! armed before the move that keeps ticking after it. Checked after a→b and
//! again after b→a (the program prints OK/FAIL per check), and once more
//! on a process whose memory is fetched only on fault (`--no-push`), so
//! the checks unmap and move pages that are still at the origin.

use popcorn_tests::migrate::{cluster, migrate_ok, migrate_result, text, wait_pid, Client};
use popcorn_tests::program;
use std::time::{Duration, Instant};

const CHECKS: [&str; 5] = ["malloc", "mmap", "realloc", "threads", "alarm"];

#[test]
fn memory_threads_and_timers_work_after_migration() {
    let c = cluster("mglife", 2);
    let trigger = format!("/tmp/popcorn-mglife-{}-", std::process::id());
    let triggers = [format!("{trigger}1"), format!("{trigger}2")];
    for t in &triggers {
        let _ = std::fs::remove_file(t);
    }
    let prog = program("mig_life");
    let started = Instant::now();
    let mut run = Client::run(&c, "a", &[prog.to_str().unwrap(), &trigger]);
    run.wait_for("ready", Duration::from_secs(20));
    let pid = wait_pid(&c, "a", "mig_life");

    for (phase, to) in [(1, "b"), (2, "a")] {
        let r = migrate_ok(&c, "a", pid, to);
        eprintln!("phase {phase}: {r}");
        std::fs::write(&triggers[phase - 1], b"").unwrap();
        run.wait_for(&format!("phase {phase} done"), Duration::from_secs(30));
    }
    let done = run.finish(Duration::from_secs(20));
    for t in &triggers {
        let _ = std::fs::remove_file(t);
    }
    eprintln!("took {:?}", started.elapsed());

    let mut want = vec!["ready".to_owned()];
    for phase in 1..=2 {
        if phase == 1 {
            want.push("OK timer-before".to_owned());
        }
        want.extend(CHECKS.iter().map(|c| format!("OK {c}")));
        want.push(format!("phase {phase} done"));
    }
    assert_eq!(done.lines, want, "stderr: {}", done.stderr);
    assert_eq!(done.status.code(), Some(0), "stderr: {}", done.stderr);

    // Pages only on fault: both phases run on b with most memory still on a.
    let mut run = Client::run(&c, "a", &[prog.to_str().unwrap(), &trigger]);
    run.wait_for("ready", Duration::from_secs(20));
    let pid = wait_pid(&c, "a", "mig_life");
    let out = c
        .popcorn_direct(
            "a",
            &[
                "migrate",
                &pid.to_string(),
                "--to",
                "b",
                "--json",
                "--no-push",
            ],
        )
        .output()
        .unwrap();
    let r = migrate_result(&out).unwrap_or_else(|e| panic!("migrate --no-push: {e}"));
    eprintln!("no push: {r}");
    for t in &triggers {
        std::fs::write(t, b"").unwrap();
    }
    let done = run.finish(Duration::from_secs(30));
    for t in &triggers {
        let _ = std::fs::remove_file(t);
    }
    assert_eq!(done.lines, want, "stderr: {}", done.stderr);
    assert_eq!(done.status.code(), Some(0), "stderr: {}", done.stderr);
    eprintln!("both took {:?}", started.elapsed());
}

/// A child forked while pages are still at the origin gets its own pager
/// (uffd fork events): it reads its parent's data, not zeros. Once with the
/// background transfer (the usual case), once without it, so that nearly
/// all of the 16 MiB is still missing at the fork.
#[test]
fn child_forked_after_migration_sees_the_parents_memory() {
    let c = cluster("mgfork", 2);
    for (round, extra) in [(0, &[][..]), (1, &["--no-push"][..])] {
        let trigger = format!("/tmp/popcorn-mgfork-{}-{round}", std::process::id());
        let _ = std::fs::remove_file(&trigger);
        let prog = program("mig_fork");
        let mut run = Client::run(&c, "a", &[prog.to_str().unwrap(), &trigger]);
        run.wait_for("ready", Duration::from_secs(20));
        let pid = wait_pid(&c, "a", "mig_fork");
        let mut args = vec![
            "migrate".to_owned(),
            pid.to_string(),
            "--to".into(),
            "b".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = c.popcorn_direct("a", &args).output().unwrap();
        assert!(
            out.status.success(),
            "migrate {extra:?}: {}",
            text(&out.stderr)
        );
        std::fs::write(&trigger, b"").unwrap();
        let done = run.finish(Duration::from_secs(60));
        let _ = std::fs::remove_file(&trigger);
        assert_eq!(
            done.lines,
            ["ready", "child bad 0", "parent bad 0", "OK fork"],
            "migrate {extra:?}; stderr: {}",
            done.stderr
        );
        assert_eq!(done.status.code(), Some(0));
    }
}

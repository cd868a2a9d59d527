//! Restore of a multi-threaded process in a new PID namespace: every thread
//! comes back with its TID and carries on (per-thread counters with no gap
//! or duplicate, a shared mutex still works, and `pthread_join` returns,
//! which needs each thread's `clear_child_tid`).

use popcorn_checkpoint::restore::{
    copy_memory_eager, lay_out, restore_process_state, spawn_worker, WorkerSpec,
};
use popcorn_checkpoint::FrozenProcess;
use popcorn_tests::programs::Running;
use popcorn_tests::restore::{KillOnDrop, PidNs};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// `(thread index, counter, tid)` of a `t<k> <n> <tid>` line.
fn parse(line: &str) -> Option<(u32, u32, i32)> {
    let mut it = line.strip_prefix('t')?.split(' ');
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

#[test]
fn threads_keep_their_tids_and_carry_on() {
    let mut r = Running::start("restore_threads", &[]);
    for k in 0..3 {
        let want = format!("t{k} 20 ");
        if !r.seen.iter().any(|l| l.starts_with(&want)) {
            r.wait_line(|l| l.starts_with(&want), Duration::from_secs(20));
        }
    }
    let pid = r.pid();
    let ns = PidNs::create();

    let mut origin = FrozenProcess::freeze(pid).unwrap();
    let state = origin.capture().unwrap();
    assert_eq!(state.threads.len(), 4);
    let stdout = origin.dup_fd(1).unwrap();
    let stderr = origin.dup_fd(2).unwrap();
    let mut w = spawn_worker(&WorkerSpec {
        pid_ns: Some(ns.ns.as_fd()),
        pid: Some(pid),
        fds: vec![(stdout.as_raw_fd(), 1), (stderr.as_raw_fd(), 2)],
    })
    .unwrap();
    drop((stdout, stderr));
    let wpid = w.process.pid();
    let guard = KillOnDrop(wpid);
    let layout = lay_out(&mut w.process, &state).unwrap();
    copy_memory_eager(pid, wpid, &layout.to_copy).unwrap();
    restore_process_state(&mut w.process, &state, &layout).unwrap();
    assert_eq!(w.process.tids().len(), 4);

    // SAFETY: plain integer arguments.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    drop(origin);
    let _ = r.child.wait();
    w.process.thaw().unwrap();

    let fin = r.wait_line(|l| l.starts_with("joined "), Duration::from_secs(30));
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer; `wpid` is our child.
    assert_eq!(unsafe { libc::waitpid(wpid, &mut status, 0) }, wpid);
    std::mem::forget(guard);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "worker status {status:#x}"
    );
    assert_eq!(fin, format!("joined 360 pid {pid}"));
    let mut per: BTreeMap<u32, (Vec<u32>, Vec<i32>)> = BTreeMap::new();
    for (k, n, tid) in r.seen.iter().filter_map(|l| parse(l)) {
        let e = per.entry(k).or_default();
        e.0.push(n);
        if !e.1.contains(&tid) {
            e.1.push(tid);
        }
    }
    let want: Vec<u32> = (0..120).collect();
    for (k, (ns, tids)) in &per {
        assert_eq!(ns, &want, "thread {k}: gap or duplicate");
        assert_eq!(tids.len(), 1, "thread {k} changed TID: {tids:?}");
    }
    assert_eq!(per.len(), 3);
}

//! A full capture of a program that printed its own state must report
//! exactly that state.

use popcorn_checkpoint::{Backing, Disposition, FdKind, FrozenProcess};
use popcorn_tests::programs::{program, Running};
use std::collections::HashMap;
use std::time::Duration;

fn hex(v: &HashMap<String, String>, k: &str) -> u64 {
    u64::from_str_radix(&v[k], 16).unwrap_or_else(|_| panic!("bad {k}: {:?}", v[k]))
}

#[test]
fn capture_matches_selfreport() {
    let mut r = Running::start("selfreport", &[]);
    r.wait_for("ready", Duration::from_secs(30));
    r.wait_for("spinning", Duration::from_secs(30));
    let vals: HashMap<String, String> = r
        .seen
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let pid = r.pid();
    assert_eq!(hex(&vals, "pid"), pid as u64);

    // Right after its write() the thread may still be on the syscall exit
    // path; freeze again until it is in its user-mode loop.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut f = loop {
        let mut f = FrozenProcess::freeze(pid).unwrap();
        if f.capture_threads().unwrap()[0].syscall.is_none() {
            break f;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never left its write()"
        );
        f.thaw().unwrap();
        std::thread::sleep(Duration::from_millis(10));
    };
    let s = f.capture().unwrap();
    let maps_during = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    f.thaw().unwrap();

    assert_eq!(s.pid, pid);
    assert_eq!(s.ppid, std::process::id() as i32);
    assert_eq!(s.threads.len(), 1);
    let t = &s.threads[0];
    assert_eq!(t.tid, pid);
    assert_eq!(t.regs.fs_base, hex(&vals, "fs_base"));
    assert_eq!(t.sigmask, hex(&vals, "sigmask"));
    let alt = t.sigaltstack.expect("sigaltstack captured");
    assert_eq!(alt.sp, hex(&vals, "altstack_sp"));
    assert_eq!(alt.size, hex(&vals, "altstack_size"));
    assert_eq!(alt.flags, 0);
    assert_eq!(t.robust_list.head, hex(&vals, "robust_head"));
    assert_eq!(t.robust_list.len, hex(&vals, "robust_len"));
    assert_eq!(t.clear_child_tid, Some(hex(&vals, "tid_address")));
    let rseq = hex(&vals, "rseq");
    assert_ne!(rseq, 0, "glibc registered no rseq area");
    assert_eq!(t.rseq.rseq_abi_pointer, rseq);
    assert!(t.rseq.rseq_abi_size >= 32);
    assert_ne!(t.rseq.signature, 0);
    // Spinning in user mode: not in a syscall.
    assert_eq!(t.syscall, None, "{:?}", t.regs);
    assert!(t.pending_signals.is_empty());

    // xmm15 in the legacy FXSAVE area of the XSAVE buffer.
    assert!(
        t.xstate.len() >= 576,
        "xstate only {} bytes",
        t.xstate.len()
    );
    let x = &t.xstate[160 + 15 * 16..160 + 16 * 16];
    let lo = u64::from_le_bytes(x[..8].try_into().unwrap());
    let hi = u64::from_le_bytes(x[8..].try_into().unwrap());
    assert_eq!((lo, hi), (hex(&vals, "xmm15_lo"), hex(&vals, "xmm15_hi")));

    // Signal actions.
    assert_eq!(s.sigactions.len(), 64);
    let usr1 = s.sigactions[libc::SIGUSR1 as usize - 1];
    assert_eq!(usr1.signo, libc::SIGUSR1);
    assert_eq!(usr1.disposition, Disposition::Handler);
    assert_eq!(usr1.handler, hex(&vals, "handler"));
    let want = (libc::SA_RESTART | libc::SA_ONSTACK) as u64;
    assert_eq!(usr1.flags & want, want, "flags {:#x}", usr1.flags);
    assert_ne!(usr1.restorer, 0);
    assert_eq!(usr1.mask, 1 << (libc::SIGUSR2 - 1));
    let term = s.sigactions[libc::SIGTERM as usize - 1];
    assert_eq!((term.disposition, term.handler), (Disposition::Default, 0));

    // Process-wide state.
    assert_eq!(s.cwd, "/tmp");
    assert_eq!(s.umask, 0o027);
    let nofile = s.rlimits.iter().find(|l| l.name == "nofile").unwrap();
    assert_eq!(nofile.resource, libc::RLIMIT_NOFILE);
    assert_eq!(nofile.soft, 777);
    assert_eq!(s.rlimits.len(), 16);
    let exe = program("selfreport");
    assert_eq!(s.exe, exe.to_string_lossy());
    assert_eq!(s.comm, "selfreport");
    assert_eq!(s.personality, 0);
    assert!(s
        .vmas
        .iter()
        .any(|v| v.name == exe.to_string_lossy() && v.backing == Backing::File && v.executable()));
    let stack = s
        .vmas
        .iter()
        .find(|v| v.name == "[stack]")
        .expect("[stack]");
    assert!(stack.start <= t.regs.rsp && t.regs.rsp < stack.end);
    assert!(stack.present_pages > 0 && !stack.populated.is_empty());
    assert!(
        stack.vm_flags.iter().any(|f| f == "gd"),
        "{:?}",
        stack.vm_flags
    );
    assert!(s
        .vmas
        .iter()
        .any(|v| v.name == "[vdso]" && v.backing == Backing::Special));
    let populated: u64 = stack.populated.iter().map(|r| r.pages).sum();
    assert_eq!(populated, stack.present_pages + stack.swapped_pages);
    // The scratch mapping is gone again: capture left the map as it was.
    let names_during: Vec<&str> = maps_during.lines().collect();
    assert_eq!(names_during.len(), s.vmas.len(), "{maps_during}");
    // mm fields.
    assert!(s.mm.start_code < s.mm.end_code);
    assert!(s.mm.start_brk <= s.mm.brk, "{:?}", s.mm);
    let heap = s.vmas.iter().find(|v| v.name == "[heap]").expect("[heap]");
    assert!(
        heap.start <= s.mm.brk && s.mm.brk <= heap.end,
        "{:?} {heap:?}",
        s.mm
    );
    assert!(s.mm.arg_start < s.mm.arg_end && s.mm.env_start < s.mm.env_end);
    assert!(stack.start <= s.mm.start_stack && s.mm.start_stack < stack.end);
    // auxv.
    assert!(s.auxv.contains(&(libc::AT_PAGESZ, 4096)));
    let at_entry = s.auxv.iter().find(|(t, _)| *t == libc::AT_ENTRY).unwrap().1;
    assert!(s.mm.start_code <= at_entry && at_entry < s.mm.end_code);
    // fds: stdin and stdout are pipes, stderr whatever the harness has.
    assert_eq!(s.fds[0].fd, 0);
    assert_eq!(s.fds[0].kind, FdKind::Pipe);
    assert_eq!(
        s.fds[0].flags & libc::O_ACCMODE as u32,
        libc::O_RDONLY as u32
    );
    assert_eq!(s.fds[1].kind, FdKind::Pipe);
    assert_eq!(
        s.fds[1].flags & libc::O_ACCMODE as u32,
        libc::O_WRONLY as u32
    );

    // Round trip through JSON.
    let json = serde_json::to_string(&s).unwrap();
    let back: popcorn_checkpoint::ProcessState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert!(json.len() < 200_000, "state JSON is {} bytes", json.len());

    // Still running and still spinning: a second capture sees the same xmm15.
    let mut f = FrozenProcess::freeze(pid).unwrap();
    let again = f.capture_threads().unwrap();
    f.thaw().unwrap();
    assert_eq!(&again[0].xstate[400..416], x);
    assert!(r.alive());
}

#[test]
fn capture_of_multithreaded_process() {
    let mut r = Running::start("blocked", &[]);
    r.wait_for("ready", Duration::from_secs(30));
    let pid = r.pid();
    // Freeze once all three threads sit in their blocking syscalls (new
    // threads register rseq etc. only once they first run).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut f = loop {
        let mut f = FrozenProcess::freeze(pid).unwrap();
        let t = f.capture_threads().unwrap();
        if t.len() == 3
            && t.iter()
                .all(|t| t.syscall.is_some_and(|s| s.restart.is_some()))
        {
            break f;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "threads never blocked"
        );
        f.thaw().unwrap();
        std::thread::sleep(Duration::from_millis(10));
    };
    let s = f.capture().unwrap();
    f.thaw().unwrap();
    assert_eq!(s.threads.len(), 3);
    for t in &s.threads {
        assert!(t.sigaltstack.is_some() && t.clear_child_tid.is_some());
        // Every glibc thread has rseq and a robust list.
        assert_ne!(t.rseq.rseq_abi_pointer, 0);
        assert_ne!(t.robust_list.head, 0);
        // Non-main threads were created with CLONE_CHILD_CLEARTID.
        if t.tid != pid {
            assert_ne!(t.clear_child_tid, Some(0));
        }
    }
    let fs: std::collections::HashSet<u64> = s.threads.iter().map(|t| t.regs.fs_base).collect();
    assert_eq!(fs.len(), 3, "each thread has its own TLS");
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

#[test]
fn capture_includes_interval_timers() {
    // mig_life arms a 50 ms ITIMER_REAL, prints "ready" and waits for a
    // trigger file that never appears.
    let mut r = Running::start("mig_life", &["/nonexistent/popcorn-trigger"]);
    r.wait_for("ready", Duration::from_secs(30));
    let mut f = FrozenProcess::freeze(r.pid()).unwrap();
    let s = f.capture().unwrap();
    // Frozen for two periods: the timer fires, its SIGALRM stays pending,
    // and it only re-arms when the signal is dequeued.
    std::thread::sleep(Duration::from_millis(120));
    let later = f.capture().unwrap();
    f.thaw().unwrap();
    assert_eq!(s.itimers.len(), 1, "{:?}", s.itimers);
    let t = s.itimers[0];
    assert_eq!(t.which, libc::ITIMER_REAL);
    assert_eq!(t.interval_us, 50_000);
    assert!(t.value_us > 0 && t.value_us <= 50_000, "{t:?}");
    assert_eq!(later.itimers.len(), 1, "{:?}", later.itimers);
    assert!(later.itimers[0].pending_rearm(), "{:?}", later.itimers);
}

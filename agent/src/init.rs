//! When the agent is PID 1 of a node's PID namespace, a tiny init stays PID 1:
//! it reaps orphans and forwards SIGTERM/SIGINT to the agent, which runs as
//! its child. Programs the agent launches remain the agent's own children.

use std::sync::atomic::{AtomicI32, Ordering};

static AGENT: AtomicI32 = AtomicI32::new(0);
static UNDER_OUR_INIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True in an agent whose PID namespace is its node's own (it started as
/// PID 1 and runs under the tiny init).
pub fn in_node_pid_namespace() -> bool {
    UNDER_OUR_INIT.load(Ordering::Relaxed)
}

extern "C" fn forward(sig: libc::c_int) {
    let pid = AGENT.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Returns in the agent process; never returns in the init process.
pub fn become_init_if_pid1() {
    if std::process::id() != 1 {
        return;
    }
    // SAFETY: called before any thread exists (tracing's writer is
    // synchronous), so fork is safe.
    let child = unsafe { libc::fork() };
    if child < 0 {
        eprintln!("popcorn-agent: fork failed; running as PID 1 without an init");
        return;
    }
    if child == 0 {
        UNDER_OUR_INIT.store(true, Ordering::Relaxed);
        return;
    }
    AGENT.store(child, Ordering::Relaxed);
    // SAFETY: installs an async-signal-safe handler.
    unsafe {
        libc::signal(libc::SIGTERM, forward as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, forward as *const () as libc::sighandler_t);
    }
    loop {
        let mut status = 0;
        // SAFETY: status is a live int.
        let pid = unsafe { libc::wait(&mut status) };
        if pid == child {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            std::process::exit(code);
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            std::process::exit(1);
        }
    }
}

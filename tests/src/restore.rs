//! Fixtures for the restore tests: a fresh PID namespace to restore into,
//! and a guard that kills and reaps a restored worker.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A new PID namespace whose init is `sleep`: the child of `unshare`.
pub struct PidNs {
    unshare: Child,
    /// The namespace, for `setns`.
    pub ns: File,
}

impl PidNs {
    pub fn create() -> PidNs {
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("run unshare");
        let u = unshare.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        let init = loop {
            let c =
                std::fs::read_to_string(format!("/proc/{u}/task/{u}/children")).unwrap_or_default();
            if let Some(pid) = c.split_whitespace().next() {
                break pid.to_owned();
            }
            assert!(Instant::now() < deadline, "unshare never forked its init");
            std::thread::sleep(Duration::from_millis(5));
        };
        let ns = File::open(format!("/proc/{init}/ns/pid")).expect("open the namespace");
        PidNs { unshare, ns }
    }
}

impl Drop for PidNs {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// Kills and reaps a worker when the test ends, even by a panic.
pub struct KillOnDrop(pub i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid = self.0;
        let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // SAFETY: plain integer arguments; the worker is our own child and
        // its threads may be traced by this thread: their exits are
        // collected before the leader's can be (ECHILD when not ours).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            for tid in tids.into_iter().filter(|&t| t != pid).chain([pid]) {
                libc::waitpid(tid, std::ptr::null_mut(), libc::__WALL);
            }
        }
    }
}

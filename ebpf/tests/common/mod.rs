//! Helpers of the tests that load the tracer in the real kernel: the C
//! programs of `tests/programs/` (compiled with `cc` on first use) and a
//! child process driven line by line through stdin/stdout.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::Duration;

static COMPILE: Mutex<()> = Mutex::new(());

/// Path of `tests/programs/<name>.c` compiled with `cc`.
pub fn program(name: &str) -> PathBuf {
    let _guard = COMPILE.lock().unwrap_or_else(|e| e.into_inner());
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(format!("{name}.c"));
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("popcorn-ebpf-{name}"));
    let fresh = match (std::fs::metadata(&src), std::fs::metadata(&bin)) {
        (Ok(s), Ok(b)) => b.modified().ok() >= s.modified().ok(),
        _ => false,
    };
    if !fresh {
        // Another test process (the PID-namespace copy) may compile the same
        // program: build under a private name, then rename atomically.
        let tmp = bin.with_extension(format!("tmp{}", std::process::id()));
        let status = Command::new("cc")
            .args(["-O1", "-Wall", "-Werror", "-o"])
            .arg(&tmp)
            .arg(&src)
            .status()
            .expect("run cc");
        assert!(status.success(), "cc failed on {}", src.display());
        std::fs::rename(&tmp, &bin).expect("install the compiled program");
    }
    bin
}

/// A helper program; killed on drop.
pub struct Helper {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Helper {
    pub fn start(name: &str, args: &[&str]) -> Helper {
        let mut child = Command::new(program(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Helper {
            child,
            stdin,
            lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one line to the program's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    /// The next stdout line (panics after 20 s).
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line from the helper program")
    }

    /// The next stdout line if one comes within `wait`.
    pub fn try_line(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Closes stdin and waits for the exit status.
    pub fn finish(mut self) -> std::process::ExitStatus {
        self.stdin = None;
        self.child.wait().expect("wait helper")
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until process `pid` sleeps (state S in /proc/PID/stat), e.g.
/// blocked reading its stdin, so no slice of it is in progress.
pub fn wait_sleeping(pid: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if state == Some('S') {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} never slept: {stat}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

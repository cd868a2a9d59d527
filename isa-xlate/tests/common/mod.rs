//! Test harness: build the C test programs for both ISAs, run the x86_64 one natively under
//! ptrace and the aarch64 one under `qemu-aarch64 -g` (GDB remote protocol) until they reach the
//! migration point, and take real snapshots; also write a translated snapshot back and resume.
#![allow(dead_code)]

use popcorn_checkpoint::xisa::emulated::{qemu_command, Emulated, Event as StopEvent};
use popcorn_checkpoint::xisa::ThreadControl;
use popcorn_checkpoint::FrozenProcess;
use popcorn_isa::ThreadSnapshot;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub const CFLAGS: &[&str] = &[
    "-O0",
    "-g",
    "-fno-omit-frame-pointer",
    "-fno-inline",
    "-fno-stack-protector",
    "-static",
    "-no-pie",
    "-fsigned-char",
];

pub struct Pair {
    pub x86: PathBuf,
    pub a64: PathBuf,
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("isa-xlate-programs");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compile `programs/<name>.c` + the migrate stub for both ISAs (once per test process).
pub fn build(name: &str, extra: &[&str]) -> Pair {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs");
    let tag = format!("{name}{}", extra.join("").replace(['-', '='], "_"));
    let x86 = out_dir().join(format!("{tag}.x86_64"));
    let a64 = out_dir().join(format!("{tag}.aarch64"));
    for (cc, out, isa_flags) in [
        ("gcc", &x86, &["-mno-red-zone"][..]),
        ("aarch64-linux-gnu-gcc", &a64, &[][..]),
    ] {
        let st = Command::new(cc)
            .args(CFLAGS)
            .args(isa_flags)
            .args(extra)
            .arg("-o")
            .arg(out)
            .arg(src.join(format!("{name}.c")))
            .arg(src.join("migrate_stub.c"))
            .status()
            .unwrap_or_else(|e| panic!("{cc}: {e}"));
        assert!(st.success(), "{cc} failed for {name}");
    }
    Pair { x86, a64 }
}

pub fn recurse_pair() -> &'static Pair {
    static P: OnceLock<Pair> = OnceLock::new();
    P.get_or_init(|| build("recurse", &[]))
}

/// Output of an unmigrated native run.
pub fn native_output(bin: &Path, seed: &str) -> String {
    let o = Command::new(bin)
        .env("XLATE_SEED", seed)
        .env("XLATE_NO_STOP", "1")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Output of an unmigrated aarch64 run under qemu.
pub fn native_output_a64(bin: &Path, seed: &str) -> String {
    let o = Command::new("qemu-aarch64")
        .arg(bin)
        .env("XLATE_SEED", seed)
        .env("XLATE_NO_STOP", "1")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A native x86_64 process stopped (SIGSTOP under ptrace) at the migration point.
pub struct X86Proc {
    pub child: Child,
    process: Option<FrozenProcess>,
}

fn wait_stop(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: plain waitpid on our own traced child.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    assert_eq!(r, pid, "waitpid");
    status
}

impl X86Proc {
    pub fn start(bin: &Path, seed: &str) -> (X86Proc, ThreadSnapshot) {
        let mut cmd = Command::new(bin);
        cmd.env("XLATE_SEED", seed).stdout(Stdio::piped());
        // SAFETY: PTRACE_TRACEME is async-signal-safe and only affects the child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        let st = wait_stop(pid);
        assert!(
            libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == libc::SIGTRAP,
            "exec stop"
        );
        // SAFETY: continuing our stopped tracee.
        unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, 0) };
        let st = wait_stop(pid);
        assert!(
            libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == libc::SIGSTOP,
            "migration stop: {st:#x}"
        );
        let mut p = X86Proc {
            child,
            process: Some(FrozenProcess::adopt_stopped_child(pid)),
        };
        let snap = p.snapshot();
        (p, snap)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn snapshot(&mut self) -> ThreadSnapshot {
        let p = self.process.as_ref().expect("stopped");
        p.main_thread().snapshot().expect("snapshot")
    }

    /// Install `snap` (registers + stack) and run to exit; returns stdout.
    pub fn resume_with(mut self, snap: &ThreadSnapshot) -> String {
        let p = self.process.take().expect("stopped");
        p.main_thread().install(snap).expect("install");
        // Detaching from the SIGSTOP stop discards the signal.
        p.thaw().expect("thaw");
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let st = self.child.wait().unwrap();
        assert_eq!(st.code(), Some(0), "exit status {st:?}");
        out
    }
}

impl Drop for X86Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        drop(self.process.take());
        let _ = self.child.wait();
    }
}

/// An aarch64 program under `qemu-aarch64 -g SOCKET`, controlled over the GDB remote protocol.
pub struct A64Proc {
    pub child: Child,
    emu: Emulated,
}

/// x86_64 under `qemu-x86_64 -g` (for multi-threaded programs): same client.
pub type QemuProc = A64Proc;

impl A64Proc {
    pub fn start(bin: &Path, seed: &str, stop_at: u64) -> (A64Proc, ThreadSnapshot) {
        Self::start_isa(popcorn_isa::Isa::Aarch64, bin, seed, stop_at)
    }

    pub fn start_isa(
        isa: popcorn_isa::Isa,
        bin: &Path,
        seed: &str,
        stop_at: u64,
    ) -> (A64Proc, ThreadSnapshot) {
        // A unix socket per instance (qemu's -g takes a path): no port collisions with other
        // users of the machine.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = out_dir().join(format!("gdb-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let (qemu, args) = qemu_command(isa, &path);
        let child = Command::new(qemu)
            .args(args)
            .arg(bin)
            .env("XLATE_SEED", seed)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu");
        let mut emu = Emulated::connect(child.id() as i32, isa, &path, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("qemu gdbstub {path:?}: {e}"));
        let _ = std::fs::remove_file(&path);
        emu.run_to_address(stop_at, Duration::from_secs(30))
            .expect("run to the stop");
        let mut p = A64Proc { child, emu };
        let snap = p.snapshot();
        (p, snap)
    }

    pub fn snapshot(&mut self) -> ThreadSnapshot {
        self.emu.snapshot().expect("snapshot")
    }

    /// Install `snap` and run to exit; returns stdout.
    pub fn resume_with(mut self, snap: &ThreadSnapshot) -> String {
        self.emu.install(snap).expect("install");
        self.emu.resume().expect("c");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self
                .emu
                .next_event(None, Duration::from_secs(1))
                .expect("stop")
            {
                Some(StopEvent::Exited(0)) => break,
                Some(e @ (StopEvent::Exited(_) | StopEvent::Killed(_))) => panic!("{e:?}"),
                _ => assert!(std::time::Instant::now() < deadline, "no exit"),
            }
        }
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }
}

impl Drop for A64Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

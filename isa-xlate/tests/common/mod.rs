//! Test harness: build the C test programs for both ISAs, run the x86_64 one natively under
//! ptrace and the aarch64 one under `qemu-aarch64 -g` (GDB remote protocol) until they reach the
//! migration point, and take real snapshots; also write a translated snapshot back and resume.
#![allow(dead_code)]

use popcorn_checkpoint::gdb::aarch64::CoreRegs;
use popcorn_checkpoint::gdb::{GdbClient, StopReply};
use popcorn_isa::{Aarch64Regs, RegisterFile, StackImage, ThreadSnapshot, X86_64Regs};
use std::io::Read;
use std::os::unix::fs::FileExt;
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

fn read_stack(pid: i32, sp: u64) -> StackImage {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let (lo, hi) = maps
        .lines()
        .filter_map(|l| {
            let r = l.split_whitespace().next()?;
            let (a, b) = r.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .find(|&(a, b)| sp >= a && sp < b)
        .expect("stack mapping");
    let base = (sp.saturating_sub(8192) & !0xfff).max(lo);
    let mut buf = vec![0u8; (hi - base) as usize];
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    f.read_exact_at(&mut buf, base).unwrap();
    StackImage::new(base, buf)
}

fn write_stack(pid: i32, img: &StackImage) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .unwrap();
    f.write_all_at(&img.bytes, img.base).unwrap();
}

/// A native x86_64 process stopped (SIGSTOP under ptrace) at the migration point.
pub struct X86Proc {
    pub child: Child,
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
        let p = X86Proc { child };
        let snap = p.snapshot();
        (p, snap)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn snapshot(&self) -> ThreadSnapshot {
        let pid = self.pid();
        // SAFETY: user_regs_struct is plain data; PTRACE_GETREGS fills it for a stopped tracee.
        let mut u: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        let r = unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut u as *mut _) };
        assert_eq!(r, 0, "GETREGS");
        let gpr = [
            u.rax, u.rdx, u.rcx, u.rbx, u.rsi, u.rdi, u.rbp, u.rsp, u.r8, u.r9, u.r10, u.r11,
            u.r12, u.r13, u.r14, u.r15,
        ];
        let regs = RegisterFile::X86_64(X86_64Regs {
            gpr,
            rip: u.rip,
            rflags: u.eflags,
            fs_base: u.fs_base,
            gs_base: u.gs_base,
            ..X86_64Regs::default()
        });
        let stack = read_stack(pid, u.rsp);
        ThreadSnapshot { regs, stack }
    }

    /// Install `snap` (registers + stack) and run to exit; returns stdout.
    pub fn resume_with(mut self, snap: &ThreadSnapshot) -> String {
        let pid = self.pid();
        let RegisterFile::X86_64(x) = &snap.regs else {
            panic!("not x86")
        };
        write_stack(pid, &snap.stack);
        // SAFETY: as in snapshot().
        let mut u: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        // SAFETY: stopped tracee.
        unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut u as *mut _) };
        let g = &x.gpr;
        (u.rax, u.rdx, u.rcx, u.rbx, u.rsi, u.rdi, u.rbp, u.rsp) =
            (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
        (u.r8, u.r9, u.r10, u.r11, u.r12, u.r13, u.r14, u.r15) =
            (g[8], g[9], g[10], g[11], g[12], g[13], g[14], g[15]);
        u.rip = x.rip;
        u.orig_rax = u64::MAX; // no syscall restart
                               // SAFETY: stopped tracee, valid struct.
        let r = unsafe { libc::ptrace(libc::PTRACE_SETREGS, pid, 0, &u as *const _) };
        assert_eq!(r, 0, "SETREGS");
        // SAFETY: resume without delivering the stop signal.
        unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, 0) };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let st = wait_stop(pid);
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "exit status {st:#x}"
        );
        out
    }
}

impl Drop for X86Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An aarch64 program under `qemu-aarch64 -g SOCKET`, controlled over the GDB remote protocol.
pub struct A64Proc {
    pub child: Child,
    gdb: GdbClient,
    isa: popcorn_isa::Isa,
}

/// x86_64 under `qemu-x86_64 -g` (for multi-threaded programs): same client.
pub type QemuProc = A64Proc;

/// gdb's i386-64bit.xml order of rax rbx rcx rdx rsi rdi rbp rsp r8..r15, as DWARF numbers.
const X86_GDB_ORDER: [usize; 16] = [0, 3, 2, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

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
        let (qemu, cpu) = match isa {
            popcorn_isa::Isa::Aarch64 => ("qemu-aarch64", "cortex-a72"),
            popcorn_isa::Isa::X86_64 => ("qemu-x86_64", "max"),
        };
        let child = Command::new(qemu)
            .args(["-cpu", cpu, "-g"])
            .arg(&path)
            .arg(bin)
            .env("XLATE_SEED", seed)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu");
        let mut gdb = GdbClient::connect_unix(&path, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("qemu gdbstub {path:?}: {e}"));
        let _ = std::fs::remove_file(&path);
        gdb.set_qemu_pid(child.id() as i32);
        let mut p = A64Proc { child, gdb, isa };
        p.gdb.set_breakpoint(stop_at, 4).expect("Z0");
        p.gdb.resume().expect("c");
        let stop = p
            .gdb
            .wait_stop(Some(Duration::from_secs(30)))
            .expect("stop");
        assert!(matches!(stop, StopReply::Signal(_)), "stop reply {stop:?}");
        p.gdb.remove_breakpoint(stop_at, 4).expect("z0");
        let snap = p.snapshot();
        (p, snap)
    }

    pub fn snapshot(&mut self) -> ThreadSnapshot {
        let bytes = self.gdb.read_registers().expect("g");
        let word = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap());
        let regs = match self.isa {
            popcorn_isa::Isa::Aarch64 => {
                let c = CoreRegs::from_g(&bytes).expect("short g reply");
                RegisterFile::Aarch64(Aarch64Regs {
                    x: c.x,
                    sp: c.sp,
                    pc: c.pc,
                    pstate: u64::from(c.cpsr),
                    ..Default::default()
                })
            }
            popcorn_isa::Isa::X86_64 => {
                assert!(bytes.len() >= 17 * 8, "short g reply");
                let mut r = X86_64Regs::default();
                for (gdb, &dwarf) in X86_GDB_ORDER.iter().enumerate() {
                    r.gpr[dwarf] = word(gdb);
                }
                r.rip = word(16);
                RegisterFile::X86_64(r)
            }
        };
        let stack = read_stack(self.child.id() as i32, regs.sp());
        // guest_base must be 0: a GDB read of the stack equals the /proc/PID/mem read.
        let sp = regs.sp();
        let m = self.gdb.read_memory(sp, 16).expect("m");
        assert_eq!(m, stack.read(sp, 16).unwrap(), "guest_base is not 0");
        ThreadSnapshot { regs, stack }
    }

    /// Install `snap` and run to exit; returns stdout.
    pub fn resume_with(mut self, snap: &ThreadSnapshot) -> String {
        write_stack(self.child.id() as i32, &snap.stack);
        let mut bytes = self.gdb.read_registers().expect("g");
        match &snap.regs {
            RegisterFile::Aarch64(r) => {
                let mut c = CoreRegs::from_g(&bytes).expect("short g reply");
                c.x = r.x;
                c.sp = r.sp;
                c.pc = r.pc;
                let core = c.to_g();
                bytes[..core.len()].copy_from_slice(&core);
            }
            RegisterFile::X86_64(r) => {
                let mut put =
                    |i: usize, v: u64| bytes[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
                for (gdb, &dwarf) in X86_GDB_ORDER.iter().enumerate() {
                    put(gdb, r.gpr[dwarf]);
                }
                put(16, r.rip);
            }
        }
        self.gdb.write_registers(&bytes).expect("G");
        self.gdb.resume().expect("c");
        let exit = self
            .gdb
            .wait_stop(Some(Duration::from_secs(60)))
            .expect("exit");
        assert!(matches!(exit, StopReply::Exited(_)), "exit reply {exit:?}");
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

/// Build `programs/<name>.c` for both ISAs with every application function and global at the
/// same address (DESIGN §7; `popcorn build` automates this): per-symbol sections, renamed
/// with objcopy so the default linker script leaves them alone, then placed at
/// max(size)/max(align) positions in a code and a data window by a linker-script fragment.
pub fn build_aligned(name: &str) -> Pair {
    use object::{Object, ObjectSection};
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs");
    let dir = out_dir();
    let tools = [
        ("gcc", "objcopy", "x86_64", &["-mno-red-zone"][..]),
        (
            "aarch64-linux-gnu-gcc",
            "aarch64-linux-gnu-objcopy",
            "aarch64",
            &[][..],
        ),
    ];
    let units = [name, "migrate_stub"];
    // Compile objects and collect (section, size, align) per ISA.
    let mut objs: Vec<Vec<PathBuf>> = Vec::new();
    let mut sections: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for (cc, _, isa, flags) in tools {
        let mut list = Vec::new();
        for u in units {
            let o = dir.join(format!("{name}-aligned-{u}.{isa}.o"));
            let st = Command::new(cc)
                .args(CFLAGS)
                .args(flags)
                .args([
                    "-ffunction-sections",
                    "-fdata-sections",
                    "-fno-common",
                    "-c",
                    "-o",
                ])
                .arg(&o)
                .arg(src.join(format!("{u}.c")))
                .status()
                .unwrap();
            assert!(st.success(), "{cc} -c {u}");
            let data = std::fs::read(&o).unwrap();
            let file = object::File::parse(&*data).unwrap();
            for s in file.sections() {
                let n = s.name().unwrap_or("");
                let pinned = ["text.", "data.", "bss.", "rodata."]
                    .iter()
                    .any(|p| n.strip_prefix('.').is_some_and(|r| r.starts_with(p)))
                    && !n.contains(".str1.")
                    && !n.contains(".cst");
                if pinned {
                    let e = sections.entry(n.to_string()).or_insert((0, 1));
                    e.0 = e.0.max(s.size());
                    e.1 = e.1.max(s.align());
                }
            }
            list.push(o);
        }
        objs.push(list);
    }
    // One address per section: a code window and a separate (page-apart) data window, near
    // libc (aarch64 `bl` reaches +-128 MiB). Placed by a linker-script fragment: one output
    // section per window, each input section at its fixed offset.
    let (code_base, data_base) = (0x0200_0000u64, 0x0300_0000u64);
    let mut text = String::new();
    let mut datas = String::new();
    let (mut code, mut data) = (0u64, 0u64);
    for (n, (size, align)) in &sections {
        let (cur, out) = if n.starts_with(".text.") {
            (&mut code, &mut text)
        } else {
            (&mut data, &mut datas)
        };
        let off = (*cur).div_ceil(*align) * align;
        *cur = off + (*size).max(1);
        out.push_str(&format!("    . = {off:#x}; KEEP(*(.mig{n}))\n"));
    }
    let script = dir.join(format!("{name}-aligned.ld"));
    std::fs::write(
        &script,
        format!(
            "SECTIONS\n{{\n  .popcorn.text {code_base:#x} : {{\n{text}  }}\n}}\nINSERT AFTER .text;\n\
             SECTIONS\n{{\n  .popcorn.data {data_base:#x} : {{\n{datas}  }}\n}}\nINSERT AFTER .data;\n"
        ),
    )
    .unwrap();
    let mut outs = Vec::new();
    for ((cc, objcopy, isa, flags), list) in tools.iter().zip(&objs) {
        for o in list {
            let mut cmd = Command::new(objcopy);
            for n in sections.keys() {
                cmd.arg(format!("--rename-section={n}=.mig{n}"));
            }
            assert!(cmd.arg(o).status().unwrap().success(), "{objcopy}");
        }
        let out = dir.join(format!("{name}-aligned.{isa}"));
        let st = Command::new(cc)
            .args(CFLAGS)
            .args(*flags)
            .arg("-o")
            .arg(&out)
            .args(list)
            .arg(format!("-Wl,-T,{}", script.display()))
            .status()
            .unwrap();
        assert!(st.success(), "{cc} link");
        outs.push(out);
    }
    let a64 = outs.pop().unwrap();
    let x86 = outs.pop().unwrap();
    Pair { x86, a64 }
}

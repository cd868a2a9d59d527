//! `popcorn build`: one C program built for x86_64 and aarch64 with every
//! application symbol at the same address, running to byte-identical output
//! natively and under qemu-aarch64 (heap pointers included); the checker
//! refuses an untranslatable call site; clear errors for missing tools,
//! compile errors and one-sided symbols.
//!
//! Needs gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user
//! (`make deps` installs them) and a built `popcorn` (cargo build).

use popcorn_tests::cluster::bin_dir;
use popcorn_tests::migrate::text;
use popcorn_tests::programs::nm_symbols;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn popcorn() -> Command {
    let bin = bin_dir().join("popcorn");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p popcorn` first",
        bin.display()
    );
    Command::new(bin)
}

fn programs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/xisa")
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("popcorn-xbuild-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn build(args: &[&str], srcs: &[PathBuf], out: &Path) -> Output {
    popcorn()
        .arg("build")
        .args(args)
        .args(srcs)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

/// `nm` of an executable: name → address, for symbols in [lo, hi).
fn nm(exe: &Path, lo: u64, hi: u64) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (sym, addr) in nm_symbols(exe) {
        // aarch64 mapping symbols, and the per-ISA breakpoint label.
        if addr < lo || addr >= hi || sym.starts_with('$') || sym == "__popcorn_stop_insn" {
            continue;
        }
        // Static locals of different files can share a name: keep them all.
        let mut name = sym;
        while m.contains_key(&name) {
            name.push('\'');
        }
        m.insert(name, addr);
    }
    m
}

#[test]
fn builds_both_isas_with_common_addresses_and_identical_output() {
    let dir = scratch("demo");
    let out = dir.join("demo");
    let srcs = [
        programs().join("xisa_demo.c"),
        programs().join("xisa_list.c"),
    ];
    let r = build(&[], &srcs, &out);
    assert!(
        r.status.success(),
        "popcorn build failed: {}",
        text(&r.stderr)
    );
    let summary = text(&r.stdout);
    assert!(
        summary.starts_with("popcorn build: demo.x86_64 + demo.aarch64: ")
            && summary.contains("heap arena 0x6000000000"),
        "{summary}"
    );
    assert_eq!(summary.lines().count(), 1, "{summary}");
    assert!(
        !dir.join("demo.popcorn-build").exists(),
        "temporary files left"
    );

    // Metadata.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("demo.popcorn.json")).unwrap()).unwrap();
    assert_eq!(meta["format"], "popcorn-build/1");
    assert_eq!(meta["arena"]["address"], 0x60_0000_0000u64);
    assert_eq!(meta["sources"].as_array().unwrap().len(), 3);
    let lo = meta["layout"]["text"]["start"].as_u64().unwrap();
    let hi = meta["layout"]["data"]["end"].as_u64().unwrap();
    let rt = &meta["runtime"]["symbols"];
    for s in [
        "popcorn_migrate_point",
        "__popcorn_migrate_request",
        "malloc",
    ] {
        assert!(
            rt[s].as_u64().is_some_and(|a| a >= lo && a < hi),
            "{s}: {rt}"
        );
    }
    assert_eq!(meta["runtime"]["stop"]["x86_64"]["instruction"], "int3");
    assert_eq!(meta["runtime"]["stop"]["aarch64"]["instruction"], "brk #0");

    // Every application symbol at one address in both executables.
    let x = nm(&dir.join("demo.x86_64"), lo, hi);
    let a = nm(&dir.join("demo.aarch64"), lo, hi);
    assert_eq!(x, a, "symbols differ between the two executables");
    for name in [
        "main",
        "twice",
        "twice'",
        "fact",
        "list_push",
        "g_counter",
        "g_zero",
        "g_table",
        "g_names",
        "g_ops",
        "g_buf",
        "calls.0",
        "calls.1",
        "pushes.0",
        "popcorn_migrate_point",
        "malloc",
    ] {
        assert!(
            x.contains_key(name),
            "{name} not in the common windows: {x:?}"
        );
    }
    // The metadata agrees with the executables.
    let symbols = meta["symbols"].as_array().unwrap();
    for s in symbols {
        if s["kind"] != "string" && s["global"] == true {
            let name = s["name"].as_str().unwrap();
            assert_eq!(x.get(name).copied(), s["address"].as_u64(), "{name}");
        }
    }
    assert!(symbols.iter().filter(|s| s["kind"] == "string").count() >= 5);

    // Call sites that can be suspended: each return address follows a call
    // on the recorded line, in both executables.
    let sites = meta["call_sites"].as_array().unwrap();
    let site = |f: &str, callee: &str| {
        sites
            .iter()
            .any(|s| s["function"] == f && s["callee"] == callee)
    };
    assert!(site("main", "popcorn_migrate_point"), "{sites:?}");
    assert!(site("depth", "depth") && site("list_sum", "popcorn_migrate_point"));
    assert!(site("main", "<indirect>"), "indirect call through g_ops");
    assert!(
        !site("main", "printf") && !site("main", "fact"),
        "{sites:?}"
    );
    for s in sites {
        let line = s["line"].as_u64().unwrap();
        for isa in ["x86_64", "aarch64"] {
            let ret = s["return_address"][isa].as_u64().unwrap();
            let out = Command::new("addr2line")
                .arg("-e")
                .arg(dir.join(format!("demo.{isa}")))
                .arg(format!("{:#x}", ret - 1))
                .output()
                .unwrap();
            let where_ = text(&out.stdout);
            let got: String = where_
                .rsplit(':')
                .next()
                .unwrap_or("")
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            assert!(
                got == line.to_string(),
                "{isa} call site {s}: addr2line says {where_}"
            );
        }
    }
    let all = Command::new("nm")
        .arg(dir.join("demo.aarch64"))
        .output()
        .unwrap();
    assert!(
        !text(&all.stdout).contains("__popcorn_ret_"),
        "labels not stripped"
    );

    // Same bytes out, natively and under qemu.
    let native = Command::new(dir.join("demo.x86_64")).output().unwrap();
    assert!(native.status.success(), "{}", text(&native.stderr));
    let emulated = Command::new("qemu-aarch64")
        .arg(dir.join("demo.aarch64"))
        .output()
        .expect("run qemu-aarch64 (Debian package qemu-user)");
    assert!(emulated.status.success(), "{}", text(&emulated.stderr));
    let out = text(&native.stdout);
    assert_eq!(out, text(&emulated.stdout), "outputs differ");
    assert!(
        out.contains("acc=95 fact=3628800 depth=21 alpha gamma"),
        "{out}"
    );
    assert!(out.contains("heap s=0x6000000"), "{out}");
    assert!(out.contains("migration pending=0"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checker_rejects_untranslatable_call_site() {
    let dir = scratch("checker");
    let src = programs().join("xisa_untranslatable.c");
    let r = build(&[], std::slice::from_ref(&src), &dir.join("u"));
    let err = text(&r.stderr);
    assert!(!r.status.success(), "accepted an untranslatable program");
    let want = format!("{}:21: in function main: ", src.display());
    assert!(err.contains(&want), "expected {want:?} in: {err}");
    assert!(err.contains("across the call to g"), "{err}");
    assert!(
        err.contains("rewrite the expression so the call's result goes to a named variable first"),
        "{err}"
    );
    assert!(!dir.join("u.x86_64").exists() && !dir.join("u.aarch64").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn clear_errors() {
    let dir = scratch("errors");
    let ok = programs().join("xisa_untranslatable.c");

    // Missing cross compiler: names the Debian package.
    let r = popcorn()
        .args(["build", "-o"])
        .arg(dir.join("m"))
        .arg(&ok)
        .env("POPCORN_CC_AARCH64", "/nonexistent/aarch64-linux-gnu-gcc")
        .output()
        .unwrap();
    let err = text(&r.stderr);
    assert!(!r.status.success());
    assert!(err.contains("gcc-aarch64-linux-gnu"), "{err}");

    // A compile error is passed through with the compiler's message.
    let bad = dir.join("bad.c");
    std::fs::write(&bad, "int main(void) { return undeclared_thing; }\n").unwrap();
    let r = build(&[], std::slice::from_ref(&bad), &dir.join("bad"));
    let err = text(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains("compiling") && err.contains("undeclared_thing"),
        "{err}"
    );
    assert!(err.contains(&format!("{}:1:", bad.display())), "{err}");

    // A symbol that exists for one ISA only.
    let one = dir.join("one.c");
    std::fs::write(
        &one,
        "#ifdef __aarch64__\nint only_arm = 1;\n#endif\nint main(void) { return 0; }\n",
    )
    .unwrap();
    let r = build(&[], &[one], &dir.join("one"));
    let err = text(&r.stderr);
    assert!(!r.status.success());
    assert!(
        err.contains("variable only_arm exists only in the aarch64 build"),
        "{err}"
    );

    // Missing source.
    let r = build(&[], &[dir.join("nope.c")], &dir.join("nope"));
    assert!(text(&r.stderr).contains("no such source file"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn heap_arena_is_correct_and_identical_on_both_isas() {
    let dir = scratch("heap");
    let out = dir.join("heap");
    let r = build(&[], &[programs().join("xisa_heap.c")], &out);
    assert!(
        r.status.success(),
        "popcorn build failed: {}",
        text(&r.stderr)
    );
    let native = Command::new(dir.join("heap.x86_64")).output().unwrap();
    let emulated = Command::new("qemu-aarch64")
        .arg(dir.join("heap.aarch64"))
        .output()
        .unwrap();
    let (n, e) = (text(&native.stdout), text(&emulated.stdout));
    assert!(native.status.success() && n.contains("bad=0"), "{n}");
    assert!(emulated.status.success() && e.contains("bad=0"), "{e}");
    assert_eq!(n, e, "allocation addresses differ between the ISAs");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn type_checks_reject_state_that_cannot_cross() {
    let dir = scratch("types");
    let src = programs().join("xisa_types.c");
    let r = build(&[], std::slice::from_ref(&src), &dir.join("t"));
    let err = text(&r.stderr);
    assert!(!r.status.success(), "accepted: {err}");
    let file = src.display().to_string();
    for want in [
        format!("{file}:9: global g_scale holds a long double"),
        format!("{file}:11: in function vsum: the function is variadic"),
        format!("{file}:13: in function vsum: variable ap is a va_list"),
        format!("{file}:42: global g_env is a jmp_buf"),
        format!("{file}:43: warning: global g_log is a FILE *"),
    ] {
        assert!(err.contains(&want), "expected {want:?} in: {err}");
    }
    // twice() cannot be suspended: its long double is fine.
    assert!(!err.contains("function twice"), "{err}");
    assert!(!dir.join("t.x86_64").exists() && !dir.join("t.aarch64").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Builds xisa_stop.c into `dir`; returns its metadata.
fn build_stop(dir: &Path) -> serde_json::Value {
    let r = build(&[], &[programs().join("xisa_stop.c")], &dir.join("stop"));
    assert!(
        r.status.success(),
        "popcorn build failed: {}",
        text(&r.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.join("stop.popcorn.json")).unwrap()).unwrap()
}

#[test]
fn migration_stop_flushes_stdio_then_traps_on_both_isas() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch("selfstop");
    build_stop(&dir);
    // No core files from the deliberate SIGTRAP.
    let no_core = |program: &Path, args: &[&Path]| {
        Command::new("sh")
            .args(["-c", "ulimit -c 0; exec \"$0\" \"$@\""])
            .arg(program)
            .args(args)
            .arg("self")
            .output()
            .unwrap()
    };
    let native = no_core(&dir.join("stop.x86_64"), &[]);
    let emulated = no_core(Path::new("qemu-aarch64"), &[&dir.join("stop.aarch64")]);
    for (isa, out) in [("x86_64", native), ("aarch64", emulated)] {
        assert_eq!(
            text(&out.stdout),
            "no agent: still here\nbefore the stop\n",
            "{isa}: output flushed at the stop, nothing after it"
        );
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGTRAP),
            "{isa}: {:?}",
            out.status
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn read_exactly(r: &mut impl std::io::Read, n: usize) -> String {
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).unwrap();
    text(&buf)
}

#[test]
fn qemu_gdbstub_sees_the_migration_stop() {
    use popcorn_checkpoint::gdb::aarch64::CoreRegs;
    use popcorn_checkpoint::gdb::{GdbClient, StopReply};
    use std::io::Read;
    use std::time::Duration;

    let dir = scratch("gdbstop");
    let meta = build_stop(&dir);
    let request = meta["runtime"]["symbols"]["__popcorn_migrate_request"]
        .as_u64()
        .unwrap();
    let stop = &meta["runtime"]["stop"]["aarch64"];
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut qemu = Command::new("qemu-aarch64")
        .args(["-cpu", "cortex-a72", "-g", &port.to_string()])
        .arg(dir.join("stop.aarch64"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("qemu-aarch64 (apt-get install qemu-user)");
    let mut out = qemu.stdout.take().unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut gdb = GdbClient::connect(addr, Duration::from_secs(10)).unwrap();
    gdb.set_qemu_pid(qemu.id() as i32);
    assert_eq!(gdb.stop_reason().unwrap(), StopReply::Signal(5));

    // The agent asks; the program stops at the breakpoint in the runtime.
    gdb.write_memory(request, &1u32.to_le_bytes()).unwrap();
    gdb.resume().unwrap();
    let s = gdb.wait_stop(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(s, StopReply::Signal(5), "SIGTRAP at the migration stop");
    let mut regs = CoreRegs::from_g(&gdb.read_registers().unwrap()).unwrap();
    assert_eq!(Some(regs.pc), stop["address"].as_u64(), "stopped on brk");
    let point = meta["runtime"]["symbols"]["popcorn_migrate_point"]
        .as_u64()
        .unwrap();
    assert!(
        (point..point + 0x100).contains(&regs.x[30]),
        "called from popcorn_migrate_point: lr {:#x}",
        regs.x[30]
    );
    assert_eq!(
        read_exactly(&mut out, 8),
        "round 0\n",
        "flushed before the stop"
    );

    // Resume in place: clear the request, step over the breakpoint.
    gdb.write_memory(request, &0u32.to_le_bytes()).unwrap();
    regs.pc = stop["resume_pc"].as_u64().unwrap();
    gdb.write_registers(&regs.to_g()).unwrap();
    gdb.resume().unwrap();
    let s = gdb.wait_stop(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(s, StopReply::Exited(0));
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "round 1\nround 2\n");
    let _ = qemu.kill();
    let _ = qemu.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ptrace_sees_the_migration_stop() {
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::process::CommandExt;

    let dir = scratch("ptracestop");
    let meta = build_stop(&dir);
    let request = meta["runtime"]["symbols"]["__popcorn_migrate_request"]
        .as_u64()
        .unwrap();
    let resume_pc = meta["runtime"]["stop"]["x86_64"]["resume_pc"]
        .as_u64()
        .unwrap();
    let mut cmd = Command::new(dir.join("stop.x86_64"));
    cmd.stdout(std::process::Stdio::piped());
    // SAFETY: ptrace(PTRACE_TRACEME) is async-signal-safe and touches no
    // memory of the parent; it is all the child does before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().unwrap();
    let wait = || {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
        status
    };
    let cont = || {
        // SAFETY: PTRACE_CONT on our stopped tracee, no signal delivered.
        let r = unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, 0) };
        assert_eq!(r, 0, "PTRACE_CONT: {}", std::io::Error::last_os_error());
    };
    let poke = |value: u32| {
        let mut mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .unwrap();
        mem.seek(SeekFrom::Start(request)).unwrap();
        mem.write_all(&value.to_le_bytes()).unwrap();
    };

    // Stopped at exec.
    let st = wait();
    assert!(libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == libc::SIGTRAP);
    poke(1);
    cont();
    let st = wait();
    assert!(
        libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == libc::SIGTRAP,
        "status {st:#x}"
    );
    // SAFETY: user_regs_struct is plain data; PTRACE_GETREGS fills it for
    // our stopped tracee.
    let rip = unsafe {
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        let r = libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs as *mut _);
        assert_eq!(r, 0);
        regs.rip
    };
    assert_eq!(rip, resume_pc, "rip just past int3");
    assert_eq!(
        read_exactly(&mut out, 8),
        "round 0\n",
        "flushed before the stop"
    );
    poke(0);
    cont();
    let st = wait();
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "status {st:#x}"
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "round 1\nround 2\n");
    // Already reaped by waitpid; this only keeps std's handle consistent.
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

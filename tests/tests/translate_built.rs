//! The translator on executables made by `popcorn build` (every function
//! and global at one address, the real runtime): isa-xlate's recursion
//! test program (20 frames; locals of every scalar type, arrays, structs,
//! doubles, pointers to other frames' locals, to a global and to a
//! function) stopped at the runtime's breakpoint natively under ptrace,
//! translated with the default `RequireAligned` policy onto a fresh
//! aarch64 process stopped at `main` under qemu, finishes there with the
//! output of an unmigrated run; pointers to code and globals keep their
//! values. Process control is the agent's (`popcorn_checkpoint::xisa`).

use popcorn_checkpoint::restore::{spawn_program, Exec, WorkerSpec};
use popcorn_checkpoint::xisa::emulated::{qemu_command, Emulated, Event};
use popcorn_checkpoint::xisa::{self, ThreadControl};
use popcorn_isa::{frame_values, translate, App, Binary, Isa, PointerTarget, StackPlacement};
use popcorn_tests::cluster::bin_dir;
use popcorn_tests::migrate::text;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEED: &str = "77";

#[test]
fn a_built_program_translates_with_the_default_policy_and_finishes_on_aarch64() {
    let dir = std::env::temp_dir().join(format!("popcorn-xlate-built-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../isa-xlate/tests/programs/recurse.c");
    let app_path = dir.join("recurse");
    let out = Command::new(bin_dir().join("popcorn"))
        .arg("build")
        .arg(&src)
        .arg("-o")
        .arg(&app_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "popcorn build: {}", text(&out.stderr));
    let app = App::load(&dir.join("recurse.popcorn.json")).unwrap();
    let x86_path = app.binary(Isa::X86_64).unwrap();
    let a64_path = app.binary(Isa::Aarch64).unwrap();
    let x86 = Binary::load(&x86_path).unwrap();
    let a64 = Binary::load(&a64_path).unwrap();
    for s in ["recurse", "main", "mix", "g_table", "popcorn_migrate_point"] {
        let (a, b) = (x86.symbol(s).unwrap().addr, a64.symbol(s).unwrap().addr);
        assert_eq!(a, b, "{s}");
    }
    let expected = Command::new(&x86_path)
        .env("XLATE_SEED", SEED)
        .output()
        .unwrap();
    let expected = text(&expected.stdout);

    // The x86_64 thread, native under ptrace, stopped at its migration point.
    let x_out = dir.join("x86.out");
    let x_file = std::fs::File::create(&x_out).unwrap();
    let env = vec![format!("XLATE_SEED={SEED}")];
    let argv = vec!["recurse".to_owned()];
    let exec = Exec::new(&x86_path.to_string_lossy(), &argv, &env, "/").unwrap();
    let spec = WorkerSpec {
        fds: vec![(x_file.as_raw_fd(), 1), (2, 2)],
        ..WorkerSpec::default()
    };
    let mut x = spawn_program(&spec, &exec).unwrap();
    let point = app.migration_point(Isa::X86_64).unwrap();
    assert!(x
        .run_to_migration_point(&point, Duration::from_secs(20))
        .unwrap());
    let xs = x.main_thread().snapshot().unwrap();
    let before = std::fs::read_to_string(&x_out).unwrap();
    let (data, data_len) = app.data_window();
    let (arena, _) = app.arena();
    let top = xisa::read_memory(x.pid(), arena + 8, 8).unwrap();
    let used = u64::from_le_bytes(top.try_into().unwrap()).div_ceil(4096) * 4096;
    let memory = [
        (
            data,
            xisa::read_memory(x.pid(), data, data_len as usize).unwrap(),
        ),
        (
            arena,
            xisa::read_memory(x.pid(), arena, used as usize).unwrap(),
        ),
    ];

    // A fresh aarch64 process under qemu, stopped at main.
    let socket = dir.join("gdb.sock");
    let (qemu, args) = qemu_command(Isa::Aarch64, &socket);
    let mut child = Command::new(qemu)
        .args(args)
        .arg(&a64_path)
        .env("XLATE_SEED", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut a = Emulated::connect(
        child.id() as i32,
        Isa::Aarch64,
        &socket,
        Duration::from_secs(10),
    )
    .unwrap();
    a.run_to_address(app.main().unwrap(), Duration::from_secs(30))
        .unwrap();
    let placement = StackPlacement::at_function_entry(&a.snapshot().unwrap(), &a64).unwrap();

    let t = translate(&xs, &x86, &a64, &placement, &Default::default()).unwrap();
    assert_eq!(
        t.frames.len(),
        21,
        "20 recursion frames and main: {:?}",
        t.frames
    );
    let v = frame_values(&t.snapshot, &a64).unwrap();
    let get = |n: &str| v[0].vars.iter().find(|v| v.name == n).unwrap();
    // A pointer to a function keeps its value: same address on both ISAs.
    assert_eq!(
        get("fn").pointers[0].1,
        PointerTarget::Symbol {
            name: "mix".into(),
            offset: 0
        }
    );
    for (addr, bytes) in &memory {
        xisa::write_memory(a.pid(), *addr, bytes).unwrap();
    }
    xisa::set_request(a.pid(), &app.migration_point(Isa::Aarch64).unwrap(), false).unwrap();
    a.install(&t.snapshot).unwrap();
    a.resume().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match a.next_event(None, Duration::from_secs(1)).unwrap() {
            Some(Event::Exited(0)) => break,
            Some(e @ (Event::Exited(_) | Event::Killed(_))) => panic!("{e:?}"),
            _ => assert!(Instant::now() < deadline, "the aarch64 side never ended"),
        }
    }
    let mut after = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut after)
        .unwrap();
    let _ = child.wait();
    assert_eq!(before + &after, expected);
    drop(x);
    let _ = std::fs::remove_dir_all(&dir);
}

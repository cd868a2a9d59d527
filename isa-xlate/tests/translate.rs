//! Translation over real binary pairs: x86_64 (native, ptrace) and aarch64 (qemu-aarch64 -g).

mod common;

use common::{recurse_pair, A64Proc, X86Proc};
use popcorn_isa::conventions::MIGRATE_STOP;
use popcorn_isa::{
    frame_values, migration_frames, migration_point_return, translate, AddressPolicy, Binary,
    FrameValues, Options, PointerTarget, StackPlacement, XlateError,
};
use std::sync::OnceLock;
use std::time::Instant;

struct Bins {
    x86: Binary,
    a64: Binary,
}

fn bins() -> &'static Bins {
    static B: OnceLock<Bins> = OnceLock::new();
    B.get_or_init(|| {
        let p = recurse_pair();
        Bins {
            x86: Binary::load(&p.x86).unwrap(),
            a64: Binary::load(&p.a64).unwrap(),
        }
    })
}

const MAP: Options = Options {
    addresses: AddressPolicy::MapBySymbol,
};

fn a64_stop(b: &Bins) -> u64 {
    b.a64.symbol(MIGRATE_STOP).unwrap().addr
}

/// Pointer targets naming symbols compare by name; everything else must be equal.
fn assert_same_values(a: &[FrameValues], b: &[FrameValues], what: &str, skip: &[&str]) {
    assert_eq!(a.len(), b.len(), "{what}: frame count");
    for (fa, fb) in a.iter().zip(b) {
        assert_eq!(fa.key, fb.key, "{what}: call-site keys");
        assert_eq!(
            fa.vars.len(),
            fb.vars.len(),
            "{what}: variables of {}",
            fa.key.caller
        );
        for (va, vb) in fa.vars.iter().zip(&fb.vars) {
            assert_eq!(va.name, vb.name, "{what}");
            if skip.contains(&va.name.as_str()) {
                continue;
            }
            assert_eq!(
                va.bytes, vb.bytes,
                "{what}: {}.{} bytes",
                fa.key.caller, va.name
            );
            assert_eq!(
                va.pointers, vb.pointers,
                "{what}: {}.{} pointers",
                fa.key.caller, va.name
            );
        }
    }
}

#[test]
fn both_binaries_load_and_describe_the_program() {
    let b = bins();
    for bin in [&b.x86, &b.a64] {
        let f = bin.debug.function("recurse").expect("recurse has DWARF");
        let names: Vec<&str> = f.vars.iter().map(|v| v.name.as_str()).collect();
        for n in [
            "depth", "parent", "acc", "seed", "c", "uc", "ull", "f", "d", "b", "arr", "darr", "pt",
            "me", "p_up_l", "fn", "inner",
        ] {
            assert!(
                names.contains(&n),
                "{}: {n} missing from {names:?}",
                bin.isa
            );
        }
        let to_migrate: Vec<_> = bin
            .call_sites
            .iter()
            .filter(|s| s.key.callee == "popcorn_migrate_point")
            .collect();
        assert_eq!(to_migrate.len(), 1, "{}", bin.isa);
        assert_eq!(to_migrate[0].key.caller, "recurse");
    }
    // Every call site of the application matches across the pair, except helper calls.
    for s in b.x86.call_sites.iter() {
        if b.x86.debug.function(&s.key.callee).is_some() {
            assert!(
                b.a64.call_sites.by_key(&s.key).is_some(),
                "{s} has no aarch64 match"
            );
        }
    }
}

#[test]
fn x86_to_aarch64_to_x86_round_trip() {
    let b = bins();
    let p = recurse_pair();
    let (_x, xs) = X86Proc::start(&p.x86, "7");
    let (_a, a_native) = A64Proc::start(&p.a64, "7", a64_stop(b));

    let xframes = migration_frames(&xs, &b.x86).unwrap();
    assert_eq!(xframes.len(), 21, "recurse x20 + main");
    assert_eq!(xframes.last().unwrap().function.name, "main");

    // x86_64 -> aarch64, placed where the real aarch64 thread's main frame is.
    let placement = StackPlacement::from_snapshot(&a_native, &b.a64).unwrap();
    let to_a64 = translate(&xs, &b.x86, &b.a64, &placement, &MAP).unwrap();
    assert_eq!(to_a64.frames.len(), 21);
    // main's `e` (getenv) points at the environment strings above main: reported, unchanged.
    assert_eq!(to_a64.warnings.len(), 1, "{:?}", to_a64.warnings);
    assert!(
        to_a64.warnings[0].starts_with("main.e = "),
        "{:?}",
        to_a64.warnings
    );
    let xv = frame_values(&xs, &b.x86).unwrap();
    let av = frame_values(&to_a64.snapshot, &b.a64).unwrap();
    assert_same_values(&xv, &av, "x86 vs translated aarch64", &[]);
    // Same program, same seed, run natively on aarch64: identical state.
    let nv = frame_values(&a_native, &b.a64).unwrap();
    // `h` and main.result are assigned after the call and not yet initialized: garbage differs; main.e points
    // at the environment strings, which are per process (reported as a warning).
    assert_same_values(
        &nv,
        &av,
        "native aarch64 vs translated aarch64",
        &["h", "e", "result"],
    );
    // Frame chain of the translated snapshot equals the native aarch64 one.
    let nf = migration_frames(&a_native, &b.a64).unwrap();
    let tf = migration_frames(&to_a64.snapshot, &b.a64).unwrap();
    for (n, t) in nf.iter().zip(&tf) {
        assert_eq!(
            (n.cfa, n.caller_pc, n.caller_fp, n.site.ret_addr),
            (t.cfa, t.caller_pc, t.caller_fp, t.site.ret_addr)
        );
    }
    let nr = migration_point_return(&a_native, &b.a64).unwrap();
    assert_eq!(
        (
            to_a64.snapshot.regs.pc(),
            to_a64.snapshot.regs.sp(),
            to_a64.snapshot.regs.fp()
        ),
        (nr.pc(), nr.sp(), nr.fp())
    );

    // Check a few values explicitly (through the aarch64 DWARF).
    let inner = &av[0];
    let get = |n: &str| inner.vars.iter().find(|v| v.name == n).unwrap();
    assert_eq!(get("depth").bytes, 20i32.to_le_bytes());
    assert_eq!(get("d").bytes.len(), 8);
    assert_eq!(
        get("me").pointers[1].1,
        PointerTarget::Stack {
            frame: 0,
            variable: "depth".into(),
            offset: 0
        }
    );
    assert_eq!(
        get("parent").pointers[0].1,
        PointerTarget::Stack {
            frame: 1,
            variable: "me".into(),
            offset: 0
        }
    );
    assert_eq!(
        get("p_glob").pointers[0].1,
        PointerTarget::Symbol {
            name: "g_table".into(),
            offset: 16
        }
    );
    assert_eq!(
        get("fn").pointers[0].1,
        PointerTarget::Symbol {
            name: "mix".into(),
            offset: 0
        }
    );

    // aarch64 -> x86_64 back onto the original x86 stack: identical to the original.
    let back_place = StackPlacement::from_snapshot(&xs, &b.x86).unwrap();
    let back = translate(&to_a64.snapshot, &b.a64, &b.x86, &back_place, &MAP).unwrap();
    // main.e now holds the original x86_64 address (outside the aarch64 stack): unchanged, and
    // correct again on the way back.
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    let bv = frame_values(&back.snapshot, &b.x86).unwrap();
    assert_same_values(&xv, &bv, "x86 vs round-tripped x86", &[]);
    let orig = migration_point_return(&xs, &b.x86).unwrap();
    assert_eq!(
        (
            back.snapshot.regs.pc(),
            back.snapshot.regs.sp(),
            back.snapshot.regs.fp()
        ),
        (orig.pc(), orig.sp(), orig.fp())
    );
    let of = migration_frames(&back.snapshot, &b.x86).unwrap();
    for (o, t) in xframes.iter().zip(&of) {
        assert_eq!(
            (o.cfa, o.caller_pc, o.caller_fp),
            (t.cfa, t.caller_pc, t.caller_fp)
        );
    }
    // Every variable byte is identical to the original stack (pointers included).
    for (fo, fr) in xframes.iter().zip(&of) {
        for v in fo
            .function
            .vars
            .iter()
            .filter(|v| v.in_scope(fo.site.call_addr))
        {
            if let popcorn_isa::dwarf::Location::FrameOffset(o) = v.location {
                let size = b.x86.debug.size_of(v.ty).unwrap();
                let a = fo.cfa.wrapping_add_signed(o);
                assert_eq!(
                    xs.stack.read(a, size),
                    back.snapshot
                        .stack
                        .read(fr.cfa.wrapping_add_signed(o), size),
                    "{}",
                    v.name
                );
            }
        }
    }
}

#[test]
fn migrated_x86_thread_finishes_on_aarch64() {
    let b = bins();
    let p = recurse_pair();
    let expected = common::native_output(&p.x86, "7");
    assert!(expected.starts_with("result "), "{expected}");
    let (_x, xs) = X86Proc::start(&p.x86, "7");
    // The destination runs with a different seed: only migrated state can produce `expected`.
    let (a, a_own) = A64Proc::start(&p.a64, "12345", a64_stop(b));
    let placement = StackPlacement::from_snapshot(&a_own, &b.a64).unwrap();
    let t = translate(&xs, &b.x86, &b.a64, &placement, &MAP).unwrap();
    assert_eq!(a.resume_with(&t.snapshot), expected);
}

#[test]
fn migrated_aarch64_thread_finishes_on_x86() {
    let b = bins();
    let p = recurse_pair();
    let expected = common::native_output(&p.x86, "31");
    let (_a, a_snap) = A64Proc::start(&p.a64, "31", a64_stop(b));
    let (x, x_own) = X86Proc::start(&p.x86, "999");
    let placement = StackPlacement::from_snapshot(&x_own, &b.x86).unwrap();
    let t = translate(&a_snap, &b.a64, &b.x86, &placement, &MAP).unwrap();
    assert_eq!(x.resume_with(&t.snapshot), expected);
}

#[test]
fn unaligned_binaries_are_refused_by_default() {
    let b = bins();
    let p = recurse_pair();
    let (_x, xs) = X86Proc::start(&p.x86, "7");
    let (_a, an) = A64Proc::start(&p.a64, "7", a64_stop(b));
    let placement = StackPlacement::from_snapshot(&an, &b.a64).unwrap();
    let err = translate(&xs, &b.x86, &b.a64, &placement, &Options::default()).unwrap_err();
    assert!(matches!(err, XlateError::NotAligned { .. }), "{err}");
    assert!(err.to_string().contains("popcorn build"), "{err}");
}

#[test]
fn call_site_mismatch_names_function_and_line() {
    let b = bins();
    let p = recurse_pair();
    let shifted = common::build("recurse", &["-DSHIFT_LINES"]);
    let shifted_a64 = Binary::load(&shifted.a64).unwrap();
    let (_x, xs) = X86Proc::start(&p.x86, "7");
    let (_a, an) = A64Proc::start(
        &shifted.a64,
        "7",
        shifted_a64.symbol(MIGRATE_STOP).unwrap().addr,
    );
    let placement = StackPlacement::from_snapshot(&an, &shifted_a64).unwrap();
    let err = translate(&xs, &b.x86, &shifted_a64, &placement, &MAP).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, XlateError::NoMatchingCallSite { .. }),
        "{msg}"
    );
    assert!(
        msg.starts_with("call site recurse.c:")
            && msg.contains(" in recurse ")
            && msg.ends_with("has no match in the aarch64 binary"),
        "{msg}"
    );
}

#[test]
fn translation_time_per_frame() {
    let b = bins();
    let p = recurse_pair();
    let (_x, xs) = X86Proc::start(&p.x86, "7");
    let (_a, an) = A64Proc::start(&p.a64, "7", a64_stop(b));
    let placement = StackPlacement::from_snapshot(&an, &b.a64).unwrap();
    let n = 200;
    let frames = migration_frames(&xs, &b.x86).unwrap().len();
    let t0 = Instant::now();
    for _ in 0..n {
        std::hint::black_box(translate(&xs, &b.x86, &b.a64, &placement, &MAP).unwrap());
    }
    let per_frame = t0.elapsed().as_secs_f64() * 1e6 / (n * frames) as f64;
    let t0 = Instant::now();
    let _ = Binary::load(&p.a64).unwrap();
    let load = t0.elapsed();
    println!("translation x86_64 -> aarch64: {per_frame:.2} us/frame ({frames} frames); loading the aarch64 binary: {load:?}");
    let floor = if cfg!(debug_assertions) { 500.0 } else { 50.0 };
    assert!(per_frame < floor, "{per_frame} us/frame");
}

#[test]
fn aarch64_thread_stopped_deep_in_libc_unwinds_to_the_same_state() {
    let b = bins();
    let p = recurse_pair();
    let deep = b
        .a64
        .symbols
        .iter()
        .find(|s| s.name.starts_with("__pthread_kill_implementation"))
        .map(|s| s.addr)
        .unwrap_or_else(|| b.a64.symbol("raise").unwrap().addr);
    let (_a1, at_stop) = A64Proc::start(&p.a64, "5", a64_stop(b));
    let (_a2, in_libc) = A64Proc::start(&p.a64, "5", deep);
    assert_ne!(at_stop.regs.pc(), in_libc.regs.pc());
    // Same registers after the migration point returns: SP, FP, PC and the callee-saved ones
    // (caller-saved registers and flags differ: libc ran in between).
    let want = migration_point_return(&at_stop, &b.a64).unwrap();
    let got = migration_point_return(&in_libc, &b.a64).unwrap();
    assert_eq!(
        (want.pc(), want.sp(), want.fp()),
        (got.pc(), got.sp(), got.fp())
    );
    for n in 19..=28 {
        assert_eq!(want.get(n), got.get(n), "x{n}");
    }
    let v1 = frame_values(&at_stop, &b.a64).unwrap();
    let v2 = frame_values(&in_libc, &b.a64).unwrap();
    assert_same_values(
        &v1,
        &v2,
        "stopped in libc vs at __popcorn_migrate_stop",
        &["h", "result"],
    );
}

#[test]
fn cfi_at_call_sites_of_real_binaries() {
    use popcorn_isa::cfi::{CfaRule, RegRule};
    let b = bins();
    for (bin, cfa_reg) in [(&b.x86, 6u16), (&b.a64, 31u16)] {
        let site = bin
            .call_sites
            .iter()
            .find(|s| s.key.caller == "recurse" && s.key.callee == "popcorn_migrate_point")
            .unwrap();
        let row = bin.cfi.lookup(site.ret_addr - 1).unwrap();
        let CfaRule::RegOffset { reg, offset } = row.cfa else {
            panic!("{row:?}")
        };
        assert_eq!(reg, cfa_reg, "{}", bin.isa);
        assert!(offset > 0);
        assert!(matches!(row.rule(bin.isa.dwarf_fp()), RegRule::Offset(o) if o < 0));
        assert!(matches!(row.rule(bin.isa.dwarf_ra()), RegRule::Offset(o) if o < 0));
        let f = bin.debug.function("recurse").unwrap();
        let size = bin.frame_size_at(f, site.ret_addr).unwrap();
        assert!(
            size >= 0x100 && size % 16 == 0,
            "{}: frame size {size:#x}",
            bin.isa
        );
    }
}

#[test]
fn migrated_x86_thread_finishes_in_a_fresh_aarch64_process_stopped_at_main() {
    let b = bins();
    let p = recurse_pair();
    let expected = common::native_output(&p.x86, "4242");
    let (_x, xs) = X86Proc::start(&p.x86, "4242");
    // A fresh destination stopped at the entry of main (nothing of the program has run).
    let main = b.a64.debug.function("main").unwrap().low;
    let (a, at_main) = A64Proc::start(&p.a64, "1", main);
    let placement = StackPlacement::at_function_entry(&at_main, &b.a64).unwrap();
    assert_eq!(
        placement.outer_cfa,
        at_main.regs.sp(),
        "aarch64: CFA = sp at entry"
    );
    let t = translate(&xs, &b.x86, &b.a64, &placement, &MAP).unwrap();
    assert_eq!(a.resume_with(&t.snapshot), expected);
    // Not at the entry of an application function (here: in libc): refused with a message.
    let raise = b.a64.symbol("raise").unwrap().addr;
    let (_a2, at_stop) = A64Proc::start(&p.a64, "1", raise);
    let err = StackPlacement::at_function_entry(&at_stop, &b.a64).unwrap_err();
    assert!(err.to_string().contains("not at the entry"), "{err}");
}

#[test]
fn thread_entry_is_the_outermost_frame() {
    // Both sides under qemu (-g) here: ptrace of a stopping non-main thread is more harness
    // than this test needs.
    let p = common::build("threads", &["-pthread"]);
    let x86 = Binary::load(&p.x86).unwrap();
    let a64 = Binary::load(&p.a64).unwrap();
    let expected = common::native_output(&p.x86, "11");
    assert!(expected.starts_with("thread result "), "{expected}");
    let (_x, xs) = common::QemuProc::start_isa(
        popcorn_isa::Isa::X86_64,
        &p.x86,
        "11",
        x86.symbol(MIGRATE_STOP).unwrap().addr,
    );
    let frames = migration_frames(&xs, &x86).unwrap();
    let names: Vec<&str> = frames.iter().map(|f| f.function.name.as_str()).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert_eq!(names.last(), Some(&"worker"), "{names:?}");
    let (a, a_own) = A64Proc::start(&p.a64, "500", a64.symbol(MIGRATE_STOP).unwrap().addr);
    let placement = StackPlacement::from_snapshot(&a_own, &a64).unwrap();
    let t = translate(&xs, &x86, &a64, &placement, &MAP).unwrap();
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert_same_values(
        &frame_values(&xs, &x86).unwrap(),
        &frame_values(&t.snapshot, &a64).unwrap(),
        "threads",
        &[],
    );
    assert_eq!(a.resume_with(&t.snapshot), expected);
}

#[test]
fn same_isa_translation_is_the_identity() {
    let b = bins();
    let p = recurse_pair();
    let (_x, xs) = X86Proc::start(&p.x86, "9");
    // Same binary on both sides: aligned by definition, so the strict default policy applies.
    let placement = StackPlacement::from_snapshot(&xs, &b.x86).unwrap();
    let t = translate(&xs, &b.x86, &b.x86, &placement, &Options::default()).unwrap();
    let orig = migration_point_return(&xs, &b.x86).unwrap();
    assert_eq!(
        (
            t.snapshot.regs.pc(),
            t.snapshot.regs.sp(),
            t.snapshot.regs.fp()
        ),
        (orig.pc(), orig.sp(), orig.fp())
    );
    assert_same_values(
        &frame_values(&xs, &b.x86).unwrap(),
        &frame_values(&t.snapshot, &b.x86).unwrap(),
        "x86 -> x86",
        &[],
    );
    // Every byte of every translated variable and of every saved FP/RA slot is unchanged.
    let frames = migration_frames(&xs, &b.x86).unwrap();
    for f in &frames {
        for off in [-16i64, -8] {
            let a = f.cfa.wrapping_add_signed(off);
            assert_eq!(
                xs.stack.read_u64(a),
                t.snapshot.stack.read_u64(a),
                "{} slot {off}",
                f.function.name
            );
        }
    }
}

#[test]
fn frame_with_a_live_temporary_is_refused() {
    let p = common::build("unsafe", &[]);
    let x86 = Binary::load(&p.x86).unwrap();
    let a64 = Binary::load(&p.a64).unwrap();
    // First stop: main -> temporaries -> step -> popcorn_migrate_point, while `a * 3` is live
    // in rbx across the call to step() (and main's partial sum across temporaries()).
    let (_x, xs) = X86Proc::start(&p.x86, "0");
    let names: Vec<String> = migration_frames(&xs, &x86)
        .unwrap()
        .iter()
        .map(|f| f.function.name.clone())
        .collect();
    assert_eq!(names, ["step", "temporaries", "main"]);
    let (_a, an) = A64Proc::start(&p.a64, "0", a64.symbol(MIGRATE_STOP).unwrap().addr);
    let placement = StackPlacement::from_snapshot(&an, &a64).unwrap();
    let err = translate(&xs, &x86, &a64, &placement, &MAP).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, XlateError::Unsupported { .. }), "{msg}");
    // main keeps `temporaries(1, 2)`'s result in rbx across the next calls as well; the
    // outermost offending frame is reported first.
    assert!(
        msg.starts_with("main (unsafe.c:28) in the x86_64 binary: the frame saves rbx"),
        "{msg}"
    );
}

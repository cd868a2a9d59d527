//! The static pair checker over real binaries.

mod common;

use popcorn_isa::{check_pair, Binary, Isa};

#[test]
fn clean_program_has_no_problems_except_alignment() {
    let p = common::recurse_pair();
    let x = Binary::load(&p.x86).unwrap();
    let a = Binary::load(&p.a64).unwrap();
    let problems = check_pair(&x, &a, false);
    assert!(problems.is_empty(), "{problems:#?}");
    let mig = popcorn_isa::check::migratable_functions(&x);
    assert!(mig.contains("recurse") && mig.contains("main"), "{mig:?}");
    assert!(!mig.contains("mix"));
    // Plain builds are not aligned: reported per symbol.
    let problems = check_pair(&x, &a, true);
    assert!(
        problems
            .iter()
            .any(|p| p.function == "recurse" && p.what.contains("not aligned")),
        "{problems:#?}"
    );
}

#[test]
fn unsafe_constructs_are_reported_with_function_and_line() {
    let p = common::build("unsafe", &[]);
    let x = Binary::load(&p.x86).unwrap();
    let a = Binary::load(&p.a64).unwrap();
    let problems = check_pair(&x, &a, false);
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    let has = |isa: Isa, f: &str, what: &str| {
        problems
            .iter()
            .any(|p| p.isa == isa && p.function == f && p.what.contains(what))
    };
    assert!(has(Isa::X86_64, "temporaries", "saves rbx"), "{text:#?}");
    assert!(has(Isa::Aarch64, "temporaries", "saves x19"), "{text:#?}");
    assert!(
        has(
            Isa::X86_64,
            "stack_args",
            "parameter a7 is passed on the stack"
        ),
        "{text:#?}"
    );
    assert!(
        has(
            Isa::Aarch64,
            "stack_args",
            "parameter a9 is passed on the stack"
        ),
        "{text:#?}"
    );
    assert!(
        has(Isa::X86_64, "with_long_double", "long double"),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("unsafe.c:10: in temporaries (x86_64): saves rbx")),
        "{text:#?}"
    );
    assert!(!problems.iter().any(|p| p.function == "step"), "{text:#?}");
}

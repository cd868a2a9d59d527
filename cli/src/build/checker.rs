//! Checker: finds call sites whose state cannot be translated.
//!
//! At -O0 gcc keeps named variables in their stack slots (described by
//! DWARF), but an unnamed expression temporary that must survive a call
//! (`x = f(a) + g(b);`) goes to a callee-saved register: rbx, r12–r15 on
//! x86_64, x19–x28 (and d8–d15 for floating point) on aarch64. DWARF does not
//! describe it, so a frame suspended at that call cannot be rebuilt on the
//! other ISA. This module scans gcc's assembly output of one ISA, function by
//! function, for a callee-saved register written, then a call, then read,
//! and reports the call's source line (from the `.loc` directives).

use super::asm::Item;
use super::layout::Isa;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One untranslatable call site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: u32,
    pub function: String,
    /// The call across which the value lives (callee name, or `*` if indirect).
    pub callee: String,
    /// The register holding the value, e.g. `rbx`, `x19`.
    pub register: String,
    pub isa: Isa,
}

/// Families of callee-saved registers other than the frame pointer.
fn callee_saved(isa: Isa, reg: &str) -> Option<&'static str> {
    match isa {
        Isa::X86_64 => {
            let r = reg.strip_prefix('%')?;
            Some(match r {
                "rbx" | "ebx" | "bx" | "bl" | "bh" => "rbx",
                _ => {
                    let n = r.strip_prefix('r')?;
                    let digits: String = n.chars().take_while(|c| c.is_ascii_digit()).collect();
                    let suffix = &n[digits.len()..];
                    if !matches!(suffix, "" | "d" | "w" | "b") {
                        return None;
                    }
                    match digits.as_str() {
                        "12" => "r12",
                        "13" => "r13",
                        "14" => "r14",
                        "15" => "r15",
                        _ => return None,
                    }
                }
            })
        }
        Isa::Aarch64 => {
            const X: [&str; 10] = [
                "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28",
            ];
            const V: [&str; 8] = ["d8", "d9", "d10", "d11", "d12", "d13", "d14", "d15"];
            let (prefix, num) = reg.split_at(reg.find(|c: char| c.is_ascii_digit())?);
            let n: usize = num.parse().ok()?;
            match prefix {
                "x" | "w" if (19..=28).contains(&n) => Some(X[n - 19]),
                "d" | "s" | "h" | "b" | "q" | "v" if (8..=15).contains(&n) => Some(V[n - 8]),
                _ => None,
            }
        }
    }
}

/// Splits an operand list at top-level commas (not inside () or []).
pub(super) fn operands(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = s[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}

/// Register-like tokens in an operand.
fn tokens(op: &str) -> impl Iterator<Item = &str> {
    op.split(|c: char| !(c.is_ascii_alphanumeric() || c == '%'))
        .filter(|t| !t.is_empty())
}

fn regs_in(isa: Isa, op: &str) -> Vec<&'static str> {
    tokens(op).filter_map(|t| callee_saved(isa, t)).collect()
}

/// (registers read, registers written) among the callee-saved ones.
fn uses_defs(isa: Isa, mnemonic: &str, ops: &[&str]) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut uses = Vec::new();
    let mut defs = Vec::new();
    match isa {
        Isa::X86_64 => {
            let m = mnemonic;
            if ops.len() == 1 {
                let op = ops[0];
                let bare = !op.contains('(');
                if m.starts_with("pop") || m.starts_with("set") {
                    if bare {
                        defs.extend(regs_in(isa, op));
                    } else {
                        uses.extend(regs_in(isa, op));
                    }
                } else if ["inc", "dec", "neg", "not"]
                    .iter()
                    .any(|p| m.starts_with(p))
                    && bare
                {
                    uses.extend(regs_in(isa, op));
                    defs.extend(regs_in(isa, op));
                } else {
                    uses.extend(regs_in(isa, op));
                }
            } else if let Some((dst, srcs)) = ops.split_last() {
                let zeroing = (m.starts_with("xor") || m.starts_with("sub"))
                    && srcs.len() == 1
                    && srcs[0] == *dst;
                if !zeroing {
                    for s in srcs {
                        uses.extend(regs_in(isa, s));
                    }
                }
                let bare = !dst.contains('(');
                let compare = ["cmp", "test", "bt"].iter().any(|p| m.starts_with(p));
                let pure_write = ["mov", "lea", "cvt", "set", "pop"]
                    .iter()
                    .any(|p| m.starts_with(p));
                if !bare || compare {
                    uses.extend(regs_in(isa, dst));
                } else if pure_write || zeroing {
                    defs.extend(regs_in(isa, dst));
                } else {
                    uses.extend(regs_in(isa, dst));
                    defs.extend(regs_in(isa, dst));
                }
            }
        }
        Isa::Aarch64 => {
            let m = mnemonic;
            let read_all = m.starts_with("st")
                || m.starts_with("cmp")
                || m.starts_with("cmn")
                || m.starts_with("tst")
                || m.starts_with("ccm")
                || m.starts_with("fcmp")
                || m.starts_with("fccmp")
                || m == "cbz"
                || m == "cbnz"
                || m == "tbz"
                || m == "tbnz"
                || matches!(m, "b" | "bl" | "blr" | "br" | "ret")
                || m.starts_with("b.")
                || m.starts_with("prfm");
            if read_all {
                for o in ops {
                    uses.extend(regs_in(isa, o));
                }
            } else if m.starts_with("ld") {
                for o in ops {
                    if o.starts_with('[') {
                        uses.extend(regs_in(isa, o));
                    } else {
                        defs.extend(regs_in(isa, o));
                    }
                }
            } else if let Some((dst, srcs)) = ops.split_first() {
                for s in srcs {
                    uses.extend(regs_in(isa, s));
                }
                if m.starts_with("movk")
                    || m.starts_with("bfi")
                    || m.starts_with("bfxil")
                    || m == "ins"
                {
                    uses.extend(regs_in(isa, dst));
                }
                defs.extend(regs_in(isa, dst));
            }
        }
    }
    (uses, defs)
}

/// If the instruction is a call: its callee (`*` for indirect calls).
pub(super) fn call_target(isa: Isa, mnemonic: &str, ops: &[&str]) -> Option<String> {
    let target = ops.first().copied().unwrap_or("");
    match isa {
        Isa::X86_64 if mnemonic == "call" || mnemonic == "callq" => {
            if target.starts_with('*') {
                Some("*".to_owned())
            } else {
                Some(target.trim_end_matches("@PLT").to_owned())
            }
        }
        Isa::Aarch64 if mnemonic == "bl" => Some(target.to_owned()),
        Isa::Aarch64 if mnemonic == "blr" => Some("*".to_owned()),
        _ => None,
    }
}

/// `.file N "name"` or `.file N "dir" "name"` → (N, path).
pub(super) fn parse_file(rest: &str) -> Option<(u32, String)> {
    let rest = rest.trim();
    let (num, strs) = rest.split_once(char::is_whitespace)?;
    let n: u32 = num.parse().ok()?;
    let parts: Vec<&str> = strs.split('"').filter(|s| !s.trim().is_empty()).collect();
    let name = match parts.as_slice() {
        [name] => (*name).to_owned(),
        [dir, name] if !name.starts_with('/') && n != 0 => format!("{dir}/{name}"),
        [_, name] => (*name).to_owned(),
        _ => return None,
    };
    Some((n, name))
}

#[derive(Clone)]
struct Pending {
    callee: String,
    file: Option<std::rc::Rc<str>>,
    line: u32,
}

/// What one ISA's assembly of one source says.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Values held in a callee-saved register across a call, one per call.
    pub findings: Vec<Finding>,
    /// Function → functions it calls directly (`*` for an indirect call).
    pub calls: BTreeMap<String, BTreeSet<String>>,
    /// Functions that grow their frame by a run-time amount (alloca, VLA):
    /// (file, line, function).
    pub dynamic_frames: Vec<(String, u32, String)>,
}

/// Whether the instruction moves the stack pointer by a register amount
/// (`subq %rax, %rsp`, `sub sp, sp, x0`): alloca or a variable-length array.
fn grows_stack_dynamically(isa: Isa, mnemonic: &str, ops: &[&str]) -> bool {
    match isa {
        Isa::X86_64 => {
            (mnemonic.starts_with("sub") || mnemonic.starts_with("add"))
                && ops.len() == 2
                && ops[1] == "%rsp"
                && ops[0].starts_with('%')
        }
        Isa::Aarch64 => {
            (mnemonic == "sub" || mnemonic == "add")
                && ops.len() >= 3
                && ops[0] == "sp"
                && ops[2].starts_with('x')
        }
    }
}

/// Scans one ISA's assembly of one source. `display` maps a `.file` path
/// to the name to print (e.g. as the user wrote it); others print as is.
pub fn check(isa: Isa, asm: &str, display: &dyn Fn(&str) -> String) -> Analysis {
    let mut findings = Vec::new();
    let mut calls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dynamic_frames = Vec::new();
    // Per written register: the calls made since the write.
    let mut state: HashMap<&'static str, Vec<Pending>> = HashMap::new();
    let name = |f: &Option<std::rc::Rc<str>>| f.as_deref().map_or_else(|| "?".to_owned(), display);
    for (_, item) in super::asm::lines(asm) {
        let insn = match item {
            Item::ProcStart | Item::ProcEnd => {
                state.clear();
                continue;
            }
            Item::Other => continue,
            Item::Insn(i) => i,
        };
        let (func, mnemonic, ops) = (insn.function, insn.mnemonic, &insn.ops[..]);
        if grows_stack_dynamically(isa, mnemonic, ops) {
            let site = (name(&insn.file), insn.line, func.to_owned());
            if !dynamic_frames.contains(&site) {
                dynamic_frames.push(site);
            }
        }
        let (uses, defs) = uses_defs(isa, mnemonic, ops);
        for r in uses {
            for p in state.get(r).into_iter().flatten() {
                let f = Finding {
                    file: name(&p.file),
                    line: p.line,
                    function: func.to_owned(),
                    callee: p.callee.clone(),
                    register: r.to_owned(),
                    isa,
                };
                if !findings.contains(&f) {
                    findings.push(f);
                }
            }
        }
        if let Some(callee) = call_target(isa, mnemonic, ops) {
            calls
                .entry(func.to_owned())
                .or_default()
                .insert(callee.clone());
            let p = Pending {
                callee,
                file: insn.file.clone(),
                line: insn.line,
            };
            for pending in state.values_mut() {
                pending.push(p.clone());
            }
            // A call defines nothing callee-saved (that is the point).
            continue;
        }
        for r in defs {
            // Written: nothing is held across a call yet.
            state.insert(r, Vec::new());
        }
    }
    Analysis {
        findings,
        calls,
        dynamic_frames,
    }
}

/// Whether `name` looks like gcc's name for a static local (`count.0`).
fn is_static_local(name: &str) -> bool {
    let Some((base, num)) = name.rsplit_once('.') else {
        return false;
    };
    base.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit())
        && base.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Static locals (`name.N`) → the functions whose code refers to them. gcc
/// numbers static locals per file; the two builds must agree on which
/// number is whose, or pairing them by name would swap variables.
pub fn static_local_users(asm: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut function: Option<String> = None;
    for raw in asm.lines() {
        let line = raw.trim();
        if line.starts_with(".cfi_endproc") {
            function = None;
            continue;
        }
        if line.starts_with('.') || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        if let Some(label) = line.strip_suffix(':') {
            if !label.starts_with('.') && !label.contains(char::is_whitespace) {
                function = Some(label.to_owned());
            }
            continue;
        }
        let Some(func) = &function else {
            continue;
        };
        let (_, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        for tok in rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
            if is_static_local(tok) {
                users
                    .entry(tok.to_owned())
                    .or_default()
                    .insert(func.clone());
            }
        }
    }
    users
}

/// Functions from which a migration point can be reached: `roots` and every
/// function that calls one of them, directly or through others, or makes an
/// indirect call (which might). Only calls to these need translatable state.
pub fn reaching(calls: &BTreeMap<String, BTreeSet<String>>, roots: &[&str]) -> BTreeSet<String> {
    let mut reach: BTreeSet<String> = roots.iter().map(|s| (*s).to_owned()).collect();
    reach.insert("*".to_owned());
    loop {
        let before = reach.len();
        for (f, callees) in calls {
            if !reach.contains(f) && callees.iter().any(|c| reach.contains(c)) {
                reach.insert(f.clone());
            }
        }
        if reach.len() == before {
            return reach;
        }
    }
}

/// Merges the two ISAs' findings into one message per call site, in
/// (file, line) order: `file:line: in function F: …`.
pub fn report(findings: &[Finding]) -> Vec<String> {
    // (file, line, function, callee) → registers.
    type Site = (String, u32, String, String);
    let mut by_site: Vec<(Site, Vec<String>)> = Vec::new();
    for f in findings {
        let key = (f.file.clone(), f.line, f.function.clone(), f.callee.clone());
        let reg = format!("{} ({})", f.register, f.isa);
        match by_site.iter_mut().find(|(k, _)| *k == key) {
            Some((_, regs)) => {
                if !regs.contains(&reg) {
                    regs.push(reg);
                }
            }
            None => by_site.push((key, vec![reg])),
        }
    }
    by_site.sort_by(|a, b| (&a.0 .0, a.0 .1).cmp(&(&b.0 .0, b.0 .1)));
    by_site
        .into_iter()
        .map(|((file, line, function, callee), regs)| {
            let call = if callee == "*" {
                "an indirect call".to_owned()
            } else {
                format!("the call to {callee}")
            };
            format!(
                "{file}:{line}: in function {function}: an unnamed temporary is kept in {} across {call}, \
                 where it cannot be migrated; rewrite the expression so the call's result goes to a named variable first",
                regs.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(s: &str) -> String {
        s.to_owned()
    }

    // gcc 12 -O0 x86_64 for `x = a*3 + f(b);` at line 12 of t.c.
    const X86: &str = "\t.file\t\"t.c\"
\t.file 1 \"t.c\"
\t.section\t.text.main,\"ax\",@progbits
\t.globl\tmain
\t.type\tmain, @function
main:
.LFB9:
\t.loc 1 10 16
\t.cfi_startproc
\tpushq\t%rbp
\tmovq\t%rsp, %rbp
\tpushq\t%rbx
\tsubq\t$56, %rsp
\t.loc 1 12 8
\tmovl\t-20(%rbp), %edx
\tleal\t(%rax,%rdx), %ebx
\t.loc 1 12 13
\tmovl\t-24(%rbp), %eax
\tmovl\t%eax, %edi
\tcall\tf
\t.loc 1 12 5
\taddl\t%ebx, %eax
\tmovl\t%eax, -28(%rbp)
\t.loc 1 15 3
\tcall\tprintf@PLT
\t.loc 1 17 1
\tmovq\t-8(%rbp), %rbx
\tleave
\tret
\t.cfi_endproc
";

    const A64: &str = "\t.file\t\"t.c\"
\t.file 1 \"t.c\"
\t.type\tmain, %function
main:
\t.loc 1 10 16
\t.cfi_startproc
\tstp\tx29, x30, [sp, -64]!
\tmov\tx29, sp
\tstr\tx19, [sp, 16]
\tstr\td8, [sp, 24]
\t.loc 1 13 7
\tldr\tw0, [sp, 60]
\tbl\tf
\tmov\tw19, w0
\t.loc 1 13 14
\tldr\tw0, [sp, 56]
\tbl\tg
\t.loc 1 13 5
\tadd\tw0, w19, w0
\t.loc 1 14 14
\tbl\tfd
\tfmov\td8, d0
\tbl\tfd
\tfadd\td0, d8, d0
\tblr\tx1
\tldr\td8, [sp, 24]
\tldr\tx19, [sp, 16]
\tldp\tx29, x30, [sp], 64
\tret
\t.cfi_endproc
";

    #[test]
    fn x86_temporary_in_rbx_across_call() {
        let f = check(Isa::X86_64, X86, &same).findings;
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].file, "t.c");
        assert_eq!(f[0].line, 12);
        assert_eq!(f[0].function, "main");
        assert_eq!(f[0].callee, "f");
        assert_eq!(f[0].register, "rbx");
    }

    #[test]
    fn aarch64_integer_and_float_temporaries() {
        let f = check(Isa::Aarch64, A64, &same).findings;
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(
            (f[0].line, f[0].callee.as_str(), f[0].register.as_str()),
            (13, "g", "x19")
        );
        assert_eq!(
            (f[1].line, f[1].callee.as_str(), f[1].register.as_str()),
            (14, "fd", "d8")
        );
    }

    #[test]
    fn prologue_saves_and_epilogue_restores_are_not_findings() {
        let clean = "\t.file 1 \"c.c\"\nmain:\n\t.cfi_startproc\n\tpushq\t%rbx\n\t.loc 1 3 1\n\tcall\tf\n\tmovq\t-8(%rbp), %rbx\n\tret\n\t.cfi_endproc\n";
        assert!(check(Isa::X86_64, clean, &same).findings.is_empty());
        let a = "\t.file 1 \"c.c\"\nmain:\n\t.cfi_startproc\n\tstp\tx19, x20, [sp, 16]\n\tbl\tf\n\tldp\tx19, x20, [sp, 16]\n\tret\n\t.cfi_endproc\n";
        assert!(check(Isa::Aarch64, a, &same).findings.is_empty());
    }

    #[test]
    fn value_used_before_any_call_is_fine_and_state_resets_per_function() {
        let x = "\t.file 1 \"c.c\"\nf:\n\t.cfi_startproc\n\tmovl\t$1, %r12d\n\taddl\t%r12d, %eax\n\t.cfi_endproc\ng:\n\t.cfi_startproc\n\tcall\th\n\tmovl\t%r12d, %eax\n\t.cfi_endproc\n";
        assert!(check(Isa::X86_64, x, &same).findings.is_empty());
    }

    #[test]
    fn memory_operands_and_indirect_calls() {
        let x = "\t.file 1 \"c.c\"\nf:\n\t.cfi_startproc\n\t.loc 1 7 2\n\tleaq\t8(%rax), %r13\n\tcall\t*%rdx\n\tmovl\t%eax, (%r13)\n\t.cfi_endproc\n";
        let f = check(Isa::X86_64, x, &same).findings;
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].line, f[0].callee.as_str(), f[0].register.as_str()),
            (7, "*", "r13")
        );
        let zero = "\t.file 1 \"c.c\"\nf:\n\t.cfi_startproc\n\tmovl\t$1, %ebx\n\tcall\tg\n\txorl\t%ebx, %ebx\n\t.cfi_endproc\n";
        assert!(check(Isa::X86_64, zero, &same).findings.is_empty());
    }

    #[test]
    fn inline_asm_is_skipped_and_files_are_named() {
        let x = "\t.file 0 \"/src\" \"m.c\"\n\t.file 1 \"m.c\"\n\t.file 2 \"/usr/include/h.h\"\nf:\n\t.cfi_startproc\n#APP\n\tmovq $1, %rbx\n#NO_APP\n\tcall\tg\n\t.loc 2 4 1\n\tmovl\t$1, %ebx\n\tcall\tg\n\taddl\t%ebx, %eax\n\t.cfi_endproc\n";
        let f = check(Isa::X86_64, x, &|p| format!("<{p}>")).findings;
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].file, "</usr/include/h.h>");
        assert_eq!(f[0].line, 4);
    }

    #[test]
    fn every_call_between_write_and_read_is_reported() {
        let x = "\t.file 1 \"c.c\"\nf:\n\t.cfi_startproc\n\t.loc 1 3 1\n\tmovl\t$1, %ebx\n\tcall\tputs\n\t.loc 1 4 1\n\tcall\tg\n\taddl\t%ebx, %eax\n\t.cfi_endproc\n";
        let a = check(Isa::X86_64, x, &same);
        let callees: Vec<&str> = a.findings.iter().map(|f| f.callee.as_str()).collect();
        assert_eq!(callees, ["puts", "g"]);
        assert_eq!(a.calls["f"].iter().collect::<Vec<_>>(), ["g", "puts"]);
    }

    #[test]
    fn reaching_follows_callers_and_indirect_calls() {
        let mut calls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut add = |f: &str, cs: &[&str]| {
            calls.insert(f.into(), cs.iter().map(|c| (*c).to_owned()).collect());
        };
        add("main", &["work", "printf"]);
        add("work", &["step"]);
        add("step", &["popcorn_migrate_point"]);
        add("leaf", &["printf"]);
        add("viaptr", &["*"]);
        let r = reaching(&calls, &["popcorn_migrate_point"]);
        for f in ["main", "work", "step", "viaptr", "popcorn_migrate_point"] {
            assert!(r.contains(f), "{f}");
        }
        assert!(!r.contains("leaf") && !r.contains("printf"));
    }

    #[test]
    fn static_locals_are_attributed_to_their_functions() {
        let x = "f:\n\t.cfi_startproc\n\tmovl\tcalls.1(%rip), %eax\n\taddl\t$1, x.2+4(%rip)\n\t.cfi_endproc\ng:\n\t.cfi_startproc\n\tmovl\tcalls.0(%rip), %eax\n\tmovsd\t.LC0(%rip), %xmm0\n\t.cfi_endproc\ncalls.0:\n\t.long 5\n";
        let a = "f:\n\t.cfi_startproc\n\tadrp\tx0, calls.1\n\tadd\tx0, x0, :lo12:calls.1\n\tadrp\tx1, x.2\n\t.cfi_endproc\ng:\n\t.cfi_startproc\n\tadrp\tx0, calls.0\n\t.cfi_endproc\n";
        let ux = static_local_users(x);
        assert_eq!(ux, static_local_users(a));
        assert_eq!(ux["calls.1"].iter().collect::<Vec<_>>(), ["f"]);
        assert_eq!(ux["calls.0"].iter().collect::<Vec<_>>(), ["g"]);
        assert!(ux.contains_key("x.2"));
        assert!(!ux.keys().any(|k| k.starts_with(".LC")));
        assert!(!is_static_local("1.5") && !is_static_local(".L.3") && !is_static_local("a.b"));
        assert!(is_static_local("a_1.5"));
    }

    #[test]
    fn alloca_and_vla_frames_are_found() {
        let x = "\t.file 1 \"v.c\"\ng:\n\t.cfi_startproc\n\tsubq\t$32, %rsp\n\t.loc 1 4 13\n\tsubq\t%rax, %rsp\n\tmovq\t%rbx, %rsp\n\t.cfi_endproc\n";
        let a = "\t.file 1 \"v.c\"\ng:\n\t.cfi_startproc\n\tstp\tx29, x30, [sp, -48]!\n\t.loc 1 4 13\n\tsub\tsp, sp, x0\n\tmov\tsp, x29\n\tsub\tsp, sp, #16\n\t.cfi_endproc\n";
        for (isa, text) in [(Isa::X86_64, x), (Isa::Aarch64, a)] {
            let d = check(isa, text, &same).dynamic_frames;
            assert_eq!(d, [("v.c".to_owned(), 4, "g".to_owned())], "{isa}");
        }
    }

    #[test]
    fn register_families() {
        for r in ["%rbx", "%ebx", "%bl", "%r12", "%r13d", "%r14w", "%r15b"] {
            assert!(callee_saved(Isa::X86_64, r).is_some(), "{r}");
        }
        for r in ["%rax", "%rbp", "%rsp", "%r11", "%r8d", "%xmm8", "rbx"] {
            assert!(callee_saved(Isa::X86_64, r).is_none(), "{r}");
        }
        for r in ["x19", "w28", "d8", "s15", "v9", "q10"] {
            assert!(callee_saved(Isa::Aarch64, r).is_some(), "{r}");
        }
        for r in ["x18", "x29", "x30", "w0", "d7", "d16", "sp", "xzr"] {
            assert!(callee_saved(Isa::Aarch64, r).is_none(), "{r}");
        }
    }

    #[test]
    fn report_merges_isas_and_sorts() {
        let mk = |isa, line, reg: &str| Finding {
            file: "t.c".into(),
            line,
            function: "main".into(),
            callee: "f".into(),
            register: reg.into(),
            isa,
        };
        let r = report(&[
            mk(Isa::X86_64, 13, "rbx"),
            mk(Isa::X86_64, 12, "rbx"),
            mk(Isa::Aarch64, 12, "x19"),
        ]);
        assert_eq!(r.len(), 2);
        assert!(r[0].starts_with("t.c:12: in function main: an unnamed temporary is kept in rbx (x86_64), x19 (aarch64) across the call to f"));
        assert!(r[0].ends_with(
            "rewrite the expression so the call's result goes to a named variable first"
        ));
        assert!(r[1].starts_with("t.c:13:"));
    }
}

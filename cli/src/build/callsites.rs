//! Call sites that can be suspended during a migration (calls to functions
//! that reach a migration point), matched across the two ISAs, with their
//! return addresses in both executables.
//!
//! A local label `__popcorn_ret_u<unit>_<n>` is inserted into gcc's assembly
//! right after each such call (its address is the return address); after
//! linking the labels are read from the symbol tables and stripped. Sites
//! match by the translator's key ([`popcorn_isa::KeyAssigner`]: caller,
//! callee, line, column, ordinal): both ISAs expand one source in the same
//! order, and ISA-only helper calls (memcpy for struct copies, soft-float)
//! have other callees.

use super::asm::Item;
use super::checker::call_target;
use super::layout::Isa;
use popcorn_isa::{CallSiteKey, KeyAssigner, INDIRECT_CALLEE};
use std::collections::{BTreeMap, BTreeSet};

/// Prefix of the inserted labels.
pub const LABEL_PREFIX: &str = "__popcorn_ret_";

/// One call site in one ISA's assembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The translator's key (callee [`INDIRECT_CALLEE`] for an indirect call).
    pub key: CallSiteKey,
    pub file: String,
    /// The label at its return address.
    pub label: String,
}

/// Inserts a label after every call to a function in `reach` (and every
/// indirect call). Returns the new assembly and the sites, in order.
pub fn annotate(
    isa: Isa,
    asm: &str,
    unit: usize,
    reach: &BTreeSet<String>,
    display: &dyn Fn(&str) -> String,
) -> (String, Vec<Site>) {
    let mut out = String::with_capacity(asm.len() + 1024);
    let mut sites = Vec::new();
    let mut keys = KeyAssigner::default();
    for (raw, item) in super::asm::lines(asm) {
        out.push_str(raw);
        out.push('\n');
        let Item::Insn(insn) = item else {
            continue;
        };
        let (func, mnemonic, ops) = (insn.function, insn.mnemonic, &insn.ops[..]);
        let Some(callee) = call_target(isa, mnemonic, ops) else {
            continue;
        };
        if !reach.contains(&callee) {
            continue;
        }
        let callee = if callee == "*" {
            INDIRECT_CALLEE
        } else {
            &callee
        };
        let label = format!("{LABEL_PREFIX}u{unit}_{}", sites.len());
        out.push_str(&label);
        out.push_str(":\n");
        sites.push(Site {
            key: keys.key(func, callee, insn.line, insn.column),
            file: insn.file.as_deref().map_or_else(|| "?".to_owned(), display),
            label,
        });
    }
    (out, sites)
}

/// A call site present in both builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub x86: Site,
    pub a64: Site,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("{file}:{line}:{column}: in function {function}: call {ordinal} to {callee} on that line exists only in the {isa} build")]
    OnlyIn {
        file: String,
        line: u32,
        column: u32,
        function: String,
        callee: String,
        ordinal: u32,
        isa: Isa,
    },
}

/// Matches the sites of one source's two builds by key.
pub fn pair(x86: &[Site], a64: &[Site]) -> Result<Vec<Pair>, Vec<PairError>> {
    let a_map: BTreeMap<&CallSiteKey, &Site> = a64.iter().map(|s| (&s.key, s)).collect();
    let mut used = BTreeSet::new();
    let mut pairs = Vec::new();
    let mut errors = Vec::new();
    let only = |s: &Site, isa| PairError::OnlyIn {
        file: s.file.clone(),
        line: s.key.line,
        column: s.key.column,
        function: s.key.caller.clone(),
        callee: s.key.callee.clone(),
        ordinal: s.key.ordinal,
        isa,
    };
    for x in x86 {
        match a_map.get(&x.key) {
            Some(a) => pairs.push(Pair {
                x86: x.clone(),
                a64: (*a).clone(),
            }),
            None => errors.push(only(x, Isa::X86_64)),
        }
        used.insert(&x.key);
    }
    for a in a64 {
        if !used.contains(&a.key) {
            errors.push(only(a, Isa::Aarch64));
        }
    }
    if errors.is_empty() {
        Ok(pairs)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(s: &str) -> String {
        s.to_owned()
    }

    fn reach(names: &[&str]) -> BTreeSet<String> {
        names
            .iter()
            .map(|s| (*s).to_owned())
            .chain(["*".to_owned()])
            .collect()
    }

    const X86: &str = "\t.file 1 \"m.c\"
main:
\t.cfi_startproc
\t.loc 1 5 3
\tcall\twork
\t.loc 1 6 3
\tcall\tprintf@PLT
\t.loc 1 7 3 is_stmt 0
\tcall\twork
\tcall\t*%rdx
#APP
\tcall\twork
#NO_APP
\tret
\t.cfi_endproc
";
    const A64: &str = "\t.file 1 \"m.c\"
main:
\t.cfi_startproc
\t.loc 1 5 3
\tbl\twork
\t.loc 1 6 3
\tbl\tprintf
\t.loc 1 7 3
\tbl\tmemcpy
\tbl\twork
\tblr\tx1
\tret
\t.cfi_endproc
";

    #[test]
    fn keys_are_the_translators() {
        let (_, sites) = annotate(Isa::X86_64, X86, 0, &reach(&["work"]), &same);
        let mut keys = KeyAssigner::default();
        let expected: Vec<CallSiteKey> = [("work", 5, 3), ("work", 7, 3), (INDIRECT_CALLEE, 7, 3)]
            .iter()
            .map(|&(callee, line, column)| keys.key("main", callee, line, column))
            .collect();
        let got: Vec<CallSiteKey> = sites.into_iter().map(|s| s.key).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn labels_follow_reaching_calls_only() {
        let (out, sites) = annotate(Isa::X86_64, X86, 2, &reach(&["work"]), &same);
        assert_eq!(sites.len(), 3);
        assert!(out.contains("\tcall\twork\n__popcorn_ret_u2_0:\n\t.loc 1 6 3\n"));
        assert!(out.contains("\tcall\t*%rdx\n__popcorn_ret_u2_2:\n#APP\n"));
        // Inline asm and non-reaching calls get no label.
        assert_eq!(out.matches(LABEL_PREFIX).count(), 3);
        assert_eq!(
            (
                sites[1].key.callee.as_str(),
                sites[1].key.ordinal,
                sites[1].key.line,
                sites[1].key.column
            ),
            ("work", 0, 7, 3)
        );
        assert_eq!(sites[2].key.callee, INDIRECT_CALLEE);
        assert_eq!(sites[0].file, "m.c");
    }

    #[test]
    fn pairs_across_isas_ignoring_isa_only_helpers() {
        let r = reach(&["work", "memcpy"]);
        let (_, x) = annotate(Isa::X86_64, X86, 0, &r, &same);
        let (_, a) = annotate(Isa::Aarch64, A64, 0, &r, &same);
        // memcpy is aarch64-only: an error when it can reach a migration point.
        let errs = pair(&x, &a).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .to_string()
            .contains("call 0 to memcpy on that line exists only in the aarch64 build"));
        let r = reach(&["work"]);
        let (_, x) = annotate(Isa::X86_64, X86, 0, &r, &same);
        let (_, a) = annotate(Isa::Aarch64, A64, 0, &r, &same);
        let pairs = pair(&x, &a).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[1].x86.label, "__popcorn_ret_u0_1");
        assert_eq!(pairs[1].a64.label, "__popcorn_ret_u0_1");
    }

    #[test]
    fn line_disagreement_is_an_error() {
        let r = reach(&["work"]);
        let (_, x) = annotate(Isa::X86_64, X86, 0, &r, &same);
        let (_, mut a) = annotate(Isa::Aarch64, A64, 0, &r, &same);
        a[0].key.line = 99;
        let errs = pair(&x, &a).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(matches!(
            (&errs[0], &errs[1]),
            (
                PairError::OnlyIn {
                    line: 5,
                    isa: Isa::X86_64,
                    ..
                },
                PairError::OnlyIn {
                    line: 99,
                    isa: Isa::Aarch64,
                    ..
                }
            )
        ));
    }
}

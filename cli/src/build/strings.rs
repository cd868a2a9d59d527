//! String literals: gcc puts every anonymous literal (`.LC0: .string "…"`)
//! of a file into one `.rodata` section, next to ISA-specific constants
//! (x86_64's floating-point constants, for one). A pointer to a literal can
//! be migrated, so each literal present in both builds gets its own section
//! (`.rodata.pcstr.N`, the same N on both ISAs) by rewriting the assembly
//! gcc produced; literals found in one build only (initializers that the
//! other ISA builds with immediate moves) stay where they are.

use std::collections::HashMap;

/// An anonymous string literal in gcc's assembly output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Literal {
    /// Its local label, e.g. `.LC3`.
    pub label: String,
    /// Its data directives, normalized (`.string "abc"` …), one per line.
    pub content: String,
}

/// The section a `.section`/`.text`/`.data`/`.bss` directive switches to.
fn section_of(line: &str) -> Option<String> {
    let t = line.trim();
    for simple in [".text", ".data", ".bss"] {
        if t == simple {
            return Some(simple.to_owned());
        }
    }
    let rest = t.strip_prefix(".section")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let name = rest.trim().split(',').next()?.trim().trim_matches('"');
    Some(name.to_owned())
}

fn holds_literals(section: &str) -> bool {
    section == ".rodata" || (section.starts_with(".rodata") && section.contains(".str"))
}

fn data_directive(line: &str) -> Option<String> {
    let t = line.trim();
    for d in [".string", ".ascii"] {
        if let Some(rest) = t.strip_prefix(d) {
            if rest.starts_with(char::is_whitespace) {
                return Some(format!("{d} {}", rest.trim()));
            }
        }
    }
    None
}

fn literal_label(line: &str) -> Option<&str> {
    let t = line.trim();
    let label = t.strip_suffix(':')?;
    let num = label.strip_prefix(".LC")?;
    (!num.is_empty() && num.bytes().all(|b| b.is_ascii_digit())).then_some(label)
}

fn is_align(line: &str) -> bool {
    let t = line.trim();
    [".align", ".p2align", ".balign"].iter().any(|d| {
        t.strip_prefix(d)
            .is_some_and(|r| r.starts_with(char::is_whitespace))
    })
}

/// A literal found by `scan`: where its label is, how many data lines
/// follow, and the alignment directive just before it, if any.
struct Found {
    literal: Literal,
    at: usize,
    lines: usize,
    align: Option<usize>,
}

/// Literals of one assembly file, in order.
fn scan(asm: &str) -> Vec<Found> {
    let lines: Vec<&str> = asm.lines().collect();
    let mut out = Vec::new();
    let mut section = String::from(".text");
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(s) = section_of(line) {
            section = s;
        } else if let Some(label) = literal_label(line).filter(|_| holds_literals(&section)) {
            let body: Vec<String> = lines[i + 1..]
                .iter()
                .map_while(|l| data_directive(l))
                .collect();
            if !body.is_empty() {
                let n = body.len();
                out.push(Found {
                    literal: Literal {
                        label: label.to_owned(),
                        content: body.join("\n"),
                    },
                    at: i,
                    lines: n,
                    align: (i > 0 && is_align(lines[i - 1])).then(|| i - 1),
                });
                i += 1 + n;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// The anonymous string literals of an assembly file, in order.
pub fn find(asm: &str) -> Vec<Literal> {
    scan(asm).into_iter().map(|f| f.literal).collect()
}

/// Pairs the literals of the two builds of one source by content (the k-th
/// occurrence of a content with the k-th), and names each pair's section.
/// Returns label → section name for each side.
pub fn pair(x86: &[Literal], a64: &[Literal]) -> [HashMap<String, String>; 2] {
    let mut by_content: HashMap<&str, Vec<&str>> = HashMap::new();
    for l in a64 {
        by_content.entry(&l.content).or_default().push(&l.label);
    }
    let mut taken: HashMap<&str, usize> = HashMap::new();
    let mut maps = [HashMap::new(), HashMap::new()];
    let mut n = 0;
    for l in x86 {
        let k = taken.entry(&l.content).or_insert(0);
        if let Some(a_label) = by_content.get(l.content.as_str()).and_then(|v| v.get(*k)) {
            let name = format!(".rodata.pcstr.{n}");
            n += 1;
            maps[0].insert(l.label.clone(), name.clone());
            maps[1].insert((*a_label).to_owned(), name);
        }
        *k += 1;
    }
    maps
}

/// Moves each literal named in `sections` (label → section) into its own
/// section, leaving everything else untouched.
pub fn rewrite(asm: &str, sections: &HashMap<String, String>) -> String {
    let found = scan(asm);
    let mut starts: HashMap<usize, (&str, usize, Option<usize>)> = HashMap::new();
    for f in &found {
        if let Some(sec) = sections.get(&f.literal.label) {
            starts.insert(f.at, (sec.as_str(), f.lines, f.align));
        }
    }
    let mut out = String::with_capacity(asm.len() + 64 * starts.len());
    let lines: Vec<&str> = asm.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if let Some((sec, n, align)) = starts.get(&i) {
            out.push_str(&format!("\t.pushsection\t{sec},\"a\"\n"));
            // Keep the literal's alignment (in this ISA's own spelling).
            if let Some(a) = align {
                out.push_str(lines[*a]);
                out.push('\n');
            }
            for l in &lines[i..=i + n] {
                out.push_str(l);
                out.push('\n');
            }
            out.push_str("\t.popsection\n");
            i += n + 1;
        } else {
            out.push_str(lines[i]);
            out.push('\n');
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: &str = "\t.section\t.rodata\n.LC0:\n\t.string\t\"alpha\"\n.LC1:\n\t.string\t\"beta\"\n\t.align 8\n.LC2:\n\t.long\t0\n\t.long\t1072693248\n\t.text\n.LC9:\n\t.string\t\"not rodata\"\n";
    const A64: &str = "\t.section\t.rodata\n\t.align\t3\n.LC0:\n\t.string\t\"beta\"\n\t.align\t3\n.LC1:\n\t.ascii\t\"al\"\n\t.string\t\"pha\"\n.LC2:\n\t.string\t\"alpha\"\n";

    #[test]
    fn finds_only_string_literals_in_rodata() {
        let x = find(X86);
        assert_eq!(x.len(), 2);
        assert_eq!(x[0].label, ".LC0");
        assert_eq!(x[0].content, ".string \"alpha\"");
        let a = find(A64);
        assert_eq!(a.len(), 3);
        assert_eq!(a[1].content, ".ascii \"al\"\n.string \"pha\"");
    }

    #[test]
    fn pairs_by_content_not_by_label() {
        let [mx, ma] = pair(&find(X86), &find(A64));
        assert_eq!(mx[".LC0"], ".rodata.pcstr.0");
        assert_eq!(ma[".LC2"], ".rodata.pcstr.0");
        assert_eq!(mx[".LC1"], ".rodata.pcstr.1");
        assert_eq!(ma[".LC0"], ".rodata.pcstr.1");
        // "al" "pha" is a different spelling: not paired.
        assert!(!ma.contains_key(".LC1"));
    }

    #[test]
    fn repeated_contents_pair_in_order() {
        let x = "\t.section .rodata\n.LC0:\n\t.string \"a\"\n.LC1:\n\t.string \"a\"\n";
        let a = "\t.section .rodata\n.LC5:\n\t.string \"a\"\n";
        let [mx, ma] = pair(&find(x), &find(a));
        assert_eq!(mx.len(), 1);
        assert_eq!(mx[".LC0"], ".rodata.pcstr.0");
        assert_eq!(ma[".LC5"], ".rodata.pcstr.0");
    }

    #[test]
    fn rewrite_keeps_the_alignment_before_a_literal() {
        let mut m = HashMap::new();
        m.insert(".LC0".to_owned(), ".rodata.pcstr.0".to_owned());
        let out = rewrite(A64, &m);
        assert!(out.contains(
            "\t.pushsection\t.rodata.pcstr.0,\"a\"\n\t.align\t3\n.LC0:\n\t.string\t\"beta\"\n\t.popsection\n"
        ));
    }

    #[test]
    fn rewrite_wraps_only_named_literals() {
        let mut m = HashMap::new();
        m.insert(".LC1".to_owned(), ".rodata.pcstr.7".to_owned());
        let out = rewrite(X86, &m);
        assert!(out.contains(
            "\t.pushsection\t.rodata.pcstr.7,\"a\"\n.LC1:\n\t.string\t\"beta\"\n\t.popsection\n"
        ));
        assert!(out.contains(".LC0:\n\t.string\t\"alpha\"\n\t.pushsection"));
        assert_eq!(rewrite(X86, &HashMap::new()), X86);
    }
}

//! One pass over gcc's assembly output: each line with, for instructions of
//! a function outside inline asm, the function, mnemonic, operands and the
//! source position of the last `.loc`.

use super::checker::{operands, parse_file};
use std::collections::HashMap;
use std::rc::Rc;

/// An instruction of a function.
#[derive(Debug, Clone)]
pub struct Insn<'a> {
    pub function: &'a str,
    pub mnemonic: &'a str,
    pub ops: Vec<&'a str>,
    /// The `.file` path of the current `.loc`, if declared.
    pub file: Option<Rc<str>>,
    pub line: u32,
    pub column: u32,
}

/// What one line of assembly is.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    /// `.cfi_startproc`.
    ProcStart,
    /// `.cfi_endproc`.
    ProcEnd,
    Insn(Insn<'a>),
    /// Anything else (directives, labels, comments, inline asm).
    Other,
}

/// Iterator over `(raw line, item)`.
pub struct Lines<'a> {
    lines: std::str::Lines<'a>,
    files: HashMap<u32, Rc<str>>,
    function: Option<&'a str>,
    loc: (u32, u32, u32),
    in_inline_asm: bool,
}

/// Scans `asm` line by line.
pub fn lines(asm: &str) -> Lines<'_> {
    Lines {
        lines: asm.lines(),
        files: HashMap::new(),
        function: None,
        loc: (0, 0, 0),
        in_inline_asm: false,
    }
}

impl<'a> Lines<'a> {
    fn item(&mut self, raw: &'a str) -> Item<'a> {
        let line = raw.trim();
        if line.starts_with("#APP") || line.starts_with("// #APP") {
            self.in_inline_asm = true;
            return Item::Other;
        }
        if line.starts_with("#NO_APP") || line.starts_with("// #NO_APP") {
            self.in_inline_asm = false;
            return Item::Other;
        }
        if self.in_inline_asm || line.is_empty() || line.starts_with('#') || line.starts_with("//")
        {
            return Item::Other;
        }
        if let Some(rest) = line.strip_prefix(".file") {
            if let Some((n, name)) = parse_file(rest) {
                self.files.insert(n, name.into());
            }
            return Item::Other;
        }
        if let Some(rest) = line.strip_prefix(".loc") {
            let nums: Vec<u32> = rest
                .split_whitespace()
                .take(3)
                .map_while(|t| t.parse().ok())
                .collect();
            if nums.len() >= 2 {
                self.loc = (nums[0], nums[1], nums.get(2).copied().unwrap_or(0));
            }
            return Item::Other;
        }
        if line.starts_with(".cfi_startproc") {
            return Item::ProcStart;
        }
        if line.starts_with(".cfi_endproc") {
            self.function = None;
            return Item::ProcEnd;
        }
        if line.starts_with('.') {
            return Item::Other;
        }
        if let Some(label) = line.strip_suffix(':') {
            if !label.starts_with('.') && !label.contains(char::is_whitespace) {
                self.function = Some(label);
            }
            return Item::Other;
        }
        let Some(function) = self.function else {
            return Item::Other;
        };
        let (mnemonic, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        Item::Insn(Insn {
            function,
            mnemonic,
            ops: operands(rest),
            file: self.files.get(&self.loc.0).cloned(),
            line: self.loc.1,
            column: self.loc.2,
        })
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = (&'a str, Item<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let raw = self.lines.next()?;
        Some((raw, self.item(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_functions_and_inline_asm() {
        let asm = "\t.file 1 \"m.c\"\nf:\n\t.cfi_startproc\n\t.loc 1 5 3\n\tcall\tg\n#APP\n\tcall\tg\n#NO_APP\n\t.cfi_endproc\n\tcall\tg\n";
        let insns: Vec<Insn> = lines(asm)
            .filter_map(|(_, i)| match i {
                Item::Insn(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(insns.len(), 1);
        let i = &insns[0];
        assert_eq!(
            (
                i.function,
                i.mnemonic,
                &i.ops[..],
                i.file.as_deref(),
                i.line,
                i.column
            ),
            ("f", "call", &["g"][..], Some("m.c"), 5, 3)
        );
    }
}

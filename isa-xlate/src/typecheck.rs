//! Type checks on the DWARF of a linked executable (for `popcorn build`,
//! which runs them on the x86_64 one): state whose
//! representation differs between the ISAs (`long double`: x87 80-bit on
//! x86_64, IEEE binary128 on aarch64; `va_list`) or that lives in stack slots
//! DWARF does not describe (structs over 16 bytes passed or returned by
//! value: copies and hidden result pointers). Globals are always checked;
//! parameters and locals only in functions whose frames can be suspended.

use gimli::{constants, AttributeValue, EndianSlice, LittleEndian, UnitOffset};
use object::{Object, ObjectSection};
use std::collections::BTreeSet;
use std::path::Path;

type R<'a> = EndianSlice<'a, LittleEndian>;

/// One refused declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: u64,
    /// Empty for globals.
    pub function: String,
    pub reason: String,
}

impl Problem {
    /// A warning does not fail the build.
    pub fn is_warning(&self) -> bool {
        self.reason.starts_with("warning: ")
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (tag, reason) = match self.reason.strip_prefix("warning: ") {
            Some(r) => ("warning: ", r),
            None => ("", self.reason.as_str()),
        };
        if self.function.is_empty() {
            write!(f, "{}:{}: {tag}{reason}", self.file, self.line)
        } else {
            write!(
                f,
                "{}:{}: {tag}in function {}: {reason}",
                self.file, self.line, self.function
            )
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Object(String, object::Error),
    #[error("{0}: bad DWARF: {1}")]
    Dwarf(String, gimli::Error),
}

/// What a type is, as far as migration cares.
#[derive(Debug, Default, Clone)]
struct TypeFacts {
    /// Contains a `long double` (directly, or in a member or element).
    long_double: bool,
    /// Is or contains a `va_list` or a `jmp_buf` (what to call it).
    isa_specific: Option<&'static str>,
    /// A pointer to a stdio `FILE`.
    file_pointer: bool,
    /// A struct or union (after typedefs and qualifiers), with its size.
    aggregate_size: Option<u64>,
}

const MAX_DEPTH: u32 = 24;

fn name_of(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    e: &gimli::DebuggingInformationEntry<R<'_>>,
) -> String {
    e.attr_value(constants::DW_AT_name)
        .and_then(|v| dwarf.attr_string(unit, v).ok())
        .map(|s| String::from_utf8_lossy(s.slice()).into_owned())
        .unwrap_or_default()
}

fn type_ref(e: &gimli::DebuggingInformationEntry<R<'_>>) -> Option<UnitOffset> {
    match e.attr_value(constants::DW_AT_type)? {
        AttributeValue::UnitRef(o) => Some(o),
        _ => None,
    }
}

fn facts(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    offset: UnitOffset,
    depth: u32,
) -> Result<TypeFacts, gimli::Error> {
    let mut f = TypeFacts::default();
    if depth > MAX_DEPTH {
        return Ok(f);
    }
    let e = unit.entry(offset)?;
    let name = name_of(dwarf, unit, &e);
    match name.as_str() {
        "va_list" | "__builtin_va_list" | "__gnuc_va_list" | "__va_list" | "__va_list_tag" => {
            f.isa_specific = Some("a va_list");
        }
        "jmp_buf" | "sigjmp_buf" | "__jmp_buf_tag" | "__jmp_buf" => {
            f.isa_specific = Some("a jmp_buf");
        }
        _ => {}
    }
    let size = e
        .attr_value(constants::DW_AT_byte_size)
        .and_then(|v| v.udata_value());
    match e.tag() {
        constants::DW_TAG_base_type => {
            let float = matches!(
                e.attr_value(constants::DW_AT_encoding),
                Some(AttributeValue::Encoding(constants::DW_ATE_float))
                    | Some(AttributeValue::Encoding(constants::DW_ATE_complex_float))
            );
            // long double: 16 bytes (complex: 32); _Float128 is the same on both.
            if float && name.contains("long double") {
                f.long_double = true;
            }
        }
        constants::DW_TAG_typedef
        | constants::DW_TAG_const_type
        | constants::DW_TAG_volatile_type
        | constants::DW_TAG_restrict_type
        | constants::DW_TAG_atomic_type => {
            if let Some(t) = type_ref(&e) {
                let inner = facts(dwarf, unit, t, depth + 1)?;
                f.long_double |= inner.long_double;
                f.isa_specific = f.isa_specific.or(inner.isa_specific);
                f.file_pointer = inner.file_pointer;
                f.aggregate_size = inner.aggregate_size;
            }
        }
        constants::DW_TAG_pointer_type => {
            f.file_pointer = type_ref(&e).is_some_and(|t| is_file(dwarf, unit, t, 0));
        }
        constants::DW_TAG_array_type => {
            if let Some(t) = type_ref(&e) {
                let inner = facts(dwarf, unit, t, depth + 1)?;
                f.long_double |= inner.long_double;
                f.isa_specific = f.isa_specific.or(inner.isa_specific);
            }
        }
        constants::DW_TAG_structure_type | constants::DW_TAG_union_type => {
            f.aggregate_size = Some(size.unwrap_or(0));
            let mut tree = unit.entries_tree(Some(offset))?;
            let root = tree.root()?;
            let mut children = root.children();
            let mut members = Vec::new();
            while let Some(child) = children.next()? {
                if child.entry().tag() == constants::DW_TAG_member {
                    if let Some(t) = type_ref(child.entry()) {
                        members.push(t);
                    }
                }
            }
            for t in members {
                let inner = facts(dwarf, unit, t, depth + 1)?;
                f.long_double |= inner.long_double;
                f.isa_specific = f.isa_specific.or(inner.isa_specific);
            }
        }
        _ => {}
    }
    Ok(f)
}

/// Whether the type at `offset` is stdio's `FILE` (`struct _IO_FILE`).
fn is_file(
    dwarf: &gimli::Dwarf<R<'_>>,
    unit: &gimli::Unit<R<'_>>,
    offset: UnitOffset,
    depth: u32,
) -> bool {
    let Ok(e) = unit.entry(offset) else {
        return false;
    };
    match e.tag() {
        constants::DW_TAG_structure_type => name_of(dwarf, unit, &e) == "_IO_FILE",
        constants::DW_TAG_typedef
        | constants::DW_TAG_const_type
        | constants::DW_TAG_volatile_type
            if depth < MAX_DEPTH =>
        {
            type_ref(&e).is_some_and(|t| is_file(dwarf, unit, t, depth + 1))
        }
        _ => false,
    }
}

/// Checks the executable's DWARF. `suspendable(name)` says whether a
/// function's frames can be suspended during a migration.
pub fn check(exe: &Path, suspendable: &dyn Fn(&str) -> bool) -> Result<Vec<Problem>, DwarfError> {
    let shown = exe.display().to_string();
    let data = std::fs::read(exe).map_err(|e| DwarfError::Read(shown.clone(), e))?;
    let file = object::File::parse(&*data).map_err(|e| DwarfError::Object(shown.clone(), e))?;
    let load = |id: gimli::SectionId| -> Result<R<'_>, gimli::Error> {
        let bytes = file
            .section_by_name(id.name())
            .and_then(|s| s.data().ok())
            .unwrap_or(&[]);
        Ok(EndianSlice::new(bytes, LittleEndian))
    };
    let dwarf = gimli::Dwarf::load(load).map_err(|e| DwarfError::Dwarf(shown.clone(), e))?;
    walk(&dwarf)
        .map(|problems| {
            problems
                .into_iter()
                .filter(|(p, in_frame)| !in_frame || suspendable(&p.function))
                .map(|(p, _)| p)
                .collect()
        })
        .map_err(|e| DwarfError::Dwarf(shown, e))
}

/// Every problem, with whether it is about a frame (parameter, local,
/// return value) rather than a global.
fn walk(dwarf: &gimli::Dwarf<R<'_>>) -> Result<Vec<(Problem, bool)>, gimli::Error> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut headers = dwarf.units();
    while let Some(header) = headers.next()? {
        let unit = dwarf.unit(header)?;
        let mut cu_name = String::new();
        // (depth, name) of the enclosing subprogram.
        let mut func: Option<(isize, String, u64)> = None;
        let mut entries = unit.entries();
        while let Some(e) = entries.next_dfs()? {
            let depth = e.depth();
            if func.as_ref().is_some_and(|(d, _, _)| depth <= *d) {
                func = None;
            }
            let line = e
                .attr_value(constants::DW_AT_decl_line)
                .and_then(|v| v.udata_value())
                .or(func.as_ref().map(|(_, _, l)| *l))
                .unwrap_or(0);
            let name = name_of(dwarf, &unit, e);
            let mut found: Vec<(String, String, bool)> = Vec::new();
            let mut problem = |function: &str, reason: String, in_frame: bool| {
                found.push((function.to_owned(), reason, in_frame));
            };
            match e.tag() {
                constants::DW_TAG_compile_unit => cu_name = name.clone(),
                // Declarations of library functions have no code here.
                constants::DW_TAG_subprogram if e.attr_value(constants::DW_AT_low_pc).is_none() => {
                }
                constants::DW_TAG_subprogram => {
                    if let Some(t) = type_ref(e) {
                        let f = facts(dwarf, &unit, t, 0)?;
                        if f.aggregate_size.is_some_and(|s| s > 16) {
                            problem(&name, format!(
                                "returns a {}-byte struct by value (through a hidden pointer no debug information describes); return it through a pointer parameter instead",
                                f.aggregate_size.unwrap_or(0)
                            ), true);
                        }
                    }
                    func = Some((depth, name, line));
                }
                constants::DW_TAG_unspecified_parameters => {
                    if let Some((d, f, _)) = &func {
                        if depth == d + 1 {
                            let f = f.clone();
                            problem(
                                &f,
                                "the function is variadic (its argument save area cannot be translated); pass an array instead".into(),
                                true,
                            );
                        }
                    }
                }
                // Only objects with storage (not declarations).
                constants::DW_TAG_formal_parameter | constants::DW_TAG_variable
                    if e.attr_value(constants::DW_AT_location).is_none() => {}
                constants::DW_TAG_formal_parameter | constants::DW_TAG_variable => {
                    let Some(t) = type_ref(e) else { continue };
                    let f = facts(dwarf, &unit, t, 0)?;
                    let is_param = e.tag() == constants::DW_TAG_formal_parameter;
                    let local_static =
                        e.attr_value(constants::DW_AT_location)
                            .and_then(|v| match v {
                                AttributeValue::Exprloc(x) => x.0.slice().first().copied(),
                                _ => None,
                            })
                            == Some(constants::DW_OP_addr.0);
                    let what = if is_param { "parameter" } else { "variable" };
                    match &func {
                        Some((_, fname, _)) if !local_static => {
                            let fname = fname.clone();
                            if f.long_double {
                                problem(&fname, format!("{what} {name} holds a long double, whose representation differs between x86_64 and aarch64"), true);
                            }
                            if let Some(kind) = f.isa_specific {
                                problem(&fname, format!("{what} {name} is {kind}, whose layout differs between x86_64 and aarch64"), true);
                            }
                            if f.file_pointer {
                                problem(&fname, format!("warning: {what} {name} is a FILE *, which does not survive a migration (stdio state stays with the other ISA's libc)"), true);
                            }
                            if is_param && f.aggregate_size.is_some_and(|s| s > 16) {
                                problem(&fname, format!(
                                    "parameter {name} is a {}-byte struct passed by value (copied to a stack slot no debug information describes); pass a pointer instead",
                                    f.aggregate_size.unwrap_or(0)
                                ), true);
                            }
                        }
                        // Globals and static locals: migrated with the data window.
                        _ => {
                            if f.long_double {
                                problem("", format!("global {name} holds a long double, whose representation differs between x86_64 and aarch64"), false);
                            }
                            if let Some(kind) = f.isa_specific {
                                problem("", format!("global {name} is {kind}, whose layout differs between x86_64 and aarch64"), false);
                            }
                            if f.file_pointer {
                                problem("", format!("warning: global {name} is a FILE *, which does not survive a migration (stdio state stays with the other ISA's libc)"), false);
                            }
                        }
                    }
                }
                _ => {}
            }
            for (function, reason, in_frame) in found {
                let p = Problem {
                    file: cu_name.clone(),
                    line,
                    function,
                    reason,
                };
                if seen.insert(p.to_string()) {
                    out.push((p, in_frame));
                }
            }
        }
    }
    Ok(out)
}

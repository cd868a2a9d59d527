//! DWARF of one binary, read once into owned data: functions with their frame base, named
//! locals/params (`DW_OP_fbreg` locations, lexical scopes, types), globals, a type arena and the
//! line table. Also owns type layout comparison across binaries and pointer-slot discovery.

use crate::error::{Result, XlateError};
use crate::regs::Isa;
use gimli::{AttributeValue, EndianSlice, LittleEndian, Operation};
use std::collections::HashMap;

type R<'a> = EndianSlice<'a, LittleEndian>;

/// Index into [`DebugInfo::types`].
pub type TypeId = usize;

/// Encoding of a base type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseEncoding {
    /// Signed integer.
    Signed,
    /// Unsigned integer.
    Unsigned,
    /// `char` that is signed.
    SignedChar,
    /// `char` that is unsigned.
    UnsignedChar,
    /// `_Bool`.
    Boolean,
    /// IEEE float / double (or x87/binary128 long double, by size).
    Float,
    /// Anything else (complex, UTF, decimal float), raw `DW_ATE_*`.
    Other(u8),
}

/// A resolved type (typedefs, const and volatile are looked through).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    /// Scalar.
    Base {
        /// C name.
        name: String,
        /// Size in bytes.
        size: u64,
        /// Encoding.
        encoding: BaseEncoding,
    },
    /// Any pointer (data or function), 8 bytes.
    Pointer,
    /// Struct or class.
    Struct {
        /// Tag name (may be empty).
        name: String,
        /// Size in bytes.
        size: u64,
        /// Members with offsets.
        members: Vec<Member>,
    },
    /// Union: copied as bytes, pointers inside are not fixed.
    Union {
        /// Tag name.
        name: String,
        /// Size in bytes.
        size: u64,
    },
    /// Array of `count` elements (all dimensions multiplied).
    Array {
        /// Element type.
        elem: TypeId,
        /// Total number of elements.
        count: u64,
    },
    /// Enumeration.
    Enum {
        /// Tag name.
        name: String,
        /// Size in bytes.
        size: u64,
    },
    /// Something the translator cannot copy (VLAs, function types, unknown tags).
    Unsupported(String),
}

/// A struct member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Name (may be empty for anonymous members).
    pub name: String,
    /// Byte offset inside the struct.
    pub offset: u64,
    /// Type.
    pub ty: TypeId,
}

/// Where a variable lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `DW_OP_fbreg offset`: frame base + offset.
    FrameOffset(i64),
    /// `DW_OP_addr`: a static address (function-local statics, globals).
    Address(u64),
    /// No location (optimized out / declaration).
    None,
    /// Anything else (location lists, registers, computed values): not translatable.
    Other(String),
}

/// A named local or parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Name.
    pub name: String,
    /// Whether it is a formal parameter.
    pub is_param: bool,
    /// `DW_AT_decl_line`.
    pub decl_line: u32,
    /// `DW_AT_decl_column`.
    pub decl_column: u32,
    /// Location.
    pub location: Location,
    /// Type.
    pub ty: TypeId,
    /// Address ranges of the innermost enclosing lexical block; empty = whole function.
    pub scope: Vec<(u64, u64)>,
}

impl Variable {
    /// Whether the variable is in scope at `pc`.
    pub fn in_scope(&self, pc: u64) -> bool {
        self.scope.is_empty() || self.scope.iter().any(|&(lo, hi)| lo <= pc && pc < hi)
    }
}

/// How the frame base (`DW_AT_frame_base`) is computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameBase {
    /// `DW_OP_call_frame_cfa` (gcc's choice).
    Cfa,
    /// `DW_OP_bregN offset`.
    RegOffset {
        /// DWARF register.
        reg: u16,
        /// Offset.
        offset: i64,
    },
    /// Missing or unsupported.
    Other,
}

/// A function with DWARF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Name.
    pub name: String,
    /// Entry address.
    pub low: u64,
    /// One past the end.
    pub high: u64,
    /// Source file (as recorded by the compiler).
    pub file: String,
    /// Declaration line.
    pub decl_line: u32,
    /// Frame base.
    pub frame_base: FrameBase,
    /// Params and locals, in DWARF order.
    pub vars: Vec<Variable>,
}

/// A global variable with a static address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    /// Name.
    pub name: String,
    /// Address.
    pub addr: u64,
    /// Type.
    pub ty: TypeId,
}

/// One line-table row: `addr` starts `file:line:column`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineRow {
    /// Address.
    pub addr: u64,
    /// Index into [`DebugInfo::files`].
    pub file: u32,
    /// Line (0 = none).
    pub line: u32,
    /// Column (0 = left edge).
    pub column: u32,
    /// This row ends a sequence (no code at `addr`).
    pub end_sequence: bool,
}

/// Everything read from `.debug_*`.
#[derive(Clone, Debug, Default)]
pub struct DebugInfo {
    /// Functions sorted by `low`.
    pub functions: Vec<Function>,
    /// Type arena.
    pub types: Vec<Type>,
    /// Globals.
    pub globals: Vec<Global>,
    /// Line rows sorted by address.
    pub lines: Vec<LineRow>,
    /// File names referenced by line rows.
    pub files: Vec<String>,
}

/// Raw DIE data gathered in the first pass over a unit.
struct Raw {
    tag: gimli::DwTag,
    children: Vec<usize>,
    name: Option<String>,
    byte_size: Option<u64>,
    encoding: Option<u8>,
    type_ref: Option<usize>,
    ranges: Vec<(u64, u64)>,
    location: Option<Location>,
    frame_base: Option<FrameBase>,
    member_offset: Option<u64>,
    count: Option<Result<u64, ()>>,
    decl_line: u32,
    decl_column: u32,
    decl_file: u64,
    declaration: bool,
}

impl Default for Raw {
    fn default() -> Self {
        Raw {
            tag: gimli::DwTag(0),
            children: Vec::new(),
            name: None,
            byte_size: None,
            encoding: None,
            type_ref: None,
            ranges: Vec::new(),
            location: None,
            frame_base: None,
            member_offset: None,
            count: None,
            decl_line: 0,
            decl_column: 0,
            decl_file: 0,
            declaration: false,
        }
    }
}

impl DebugInfo {
    /// Read DWARF from section contents (`load(name)` returns a section's bytes or empty).
    pub fn parse<'a>(isa: Isa, load: impl Fn(&str) -> &'a [u8]) -> Result<Self> {
        let err = |e: gimli::Error| XlateError::Dwarf {
            isa,
            msg: e.to_string(),
        };
        let dwarf = gimli::Dwarf::load(|id| -> gimli::Result<R<'a>> {
            Ok(EndianSlice::new(load(id.name()), LittleEndian))
        })
        .map_err(err)?;
        let mut out = DebugInfo::default();
        let mut units = dwarf.units();
        while let Some(header) = units.next().map_err(err)? {
            let unit = dwarf.unit(header).map_err(err)?;
            out.parse_unit(&dwarf, &unit).map_err(err)?;
        }
        out.functions.sort_by_key(|f| f.low);
        out.lines.sort_by_key(|r| (r.addr, !r.end_sequence));
        Ok(out)
    }

    fn parse_unit(
        &mut self,
        dwarf: &gimli::Dwarf<R<'_>>,
        unit: &gimli::Unit<R<'_>>,
    ) -> gimli::Result<()> {
        // Line table first: file names are needed for functions.
        let mut file_names: HashMap<u64, u32> = HashMap::new();
        let mut unit_files: Vec<(u64, String)> = Vec::new();
        if let Some(program) = unit.line_program.clone() {
            let header = program.header().clone();
            let mut index = 0u64;
            while let Some(f) = header.file(index) {
                let name = dwarf
                    .attr_string(unit, f.path_name())
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                unit_files.push((index, name));
                index += 1;
                if index > 100_000 {
                    break;
                }
            }
            let mut rows = program.rows();
            while let Some((_, row)) = rows.next_row()? {
                let fi = row.file_index();
                let file = match file_names.get(&fi) {
                    Some(&i) => i,
                    None => {
                        let name = unit_files
                            .iter()
                            .find(|(i, _)| *i == fi)
                            .map(|(_, n)| n.clone())
                            .unwrap_or_else(|| "?".into());
                        let i = self.intern_file(name);
                        file_names.insert(fi, i);
                        i
                    }
                };
                self.lines.push(LineRow {
                    addr: row.address(),
                    file,
                    line: row.line().map(|l| l.get() as u32).unwrap_or(0),
                    column: match row.column() {
                        gimli::ColumnType::LeftEdge => 0,
                        gimli::ColumnType::Column(c) => c.get() as u32,
                    },
                    end_sequence: row.end_sequence(),
                });
            }
        }
        let file_name = |fi: u64| {
            unit_files
                .iter()
                .find(|(i, _)| *i == fi)
                .map(|(_, n)| n.clone())
                .unwrap_or_default()
        };

        // Pass 1: raw DIE tree.
        let mut raws: Vec<Raw> = Vec::new();
        let mut by_offset: HashMap<usize, usize> = HashMap::new();
        let mut parents: Vec<usize> = Vec::new();
        let mut entries = unit.entries();
        let mut roots = Vec::new();
        while let Some(entry) = entries.next_dfs()? {
            let depth = usize::try_from(entry.depth()).unwrap_or(0);
            parents.truncate(depth);
            let idx = raws.len();
            let mut raw = Raw {
                tag: entry.tag(),
                ..Raw::default()
            };
            for attr in entry.attrs() {
                let v = attr.value();
                match attr.name() {
                    gimli::DW_AT_name => {
                        raw.name = dwarf
                            .attr_string(unit, v)
                            .ok()
                            .map(|s| s.to_string_lossy().into_owned())
                    }
                    gimli::DW_AT_byte_size => raw.byte_size = v.udata_value(),
                    gimli::DW_AT_encoding => {
                        if let AttributeValue::Encoding(e) = v {
                            raw.encoding = Some(e.0)
                        }
                    }
                    gimli::DW_AT_type => {
                        if let AttributeValue::UnitRef(o) = v {
                            raw.type_ref = Some(o.0)
                        }
                    }
                    gimli::DW_AT_location => raw.location = Some(location(unit, v)),
                    gimli::DW_AT_frame_base => raw.frame_base = Some(frame_base(unit, v)),
                    gimli::DW_AT_data_member_location => raw.member_offset = v.udata_value(),
                    gimli::DW_AT_count | gimli::DW_AT_upper_bound => {
                        let plus = u64::from(attr.name() == gimli::DW_AT_upper_bound);
                        raw.count = Some(v.udata_value().map(|n| n + plus).ok_or(()));
                    }
                    gimli::DW_AT_decl_line => raw.decl_line = v.udata_value().unwrap_or(0) as u32,
                    gimli::DW_AT_decl_column => {
                        raw.decl_column = v.udata_value().unwrap_or(0) as u32
                    }
                    gimli::DW_AT_decl_file => raw.decl_file = v.udata_value().unwrap_or(0),
                    gimli::DW_AT_declaration => raw.declaration = true,
                    _ => {}
                }
            }
            if matches!(
                raw.tag,
                gimli::DW_TAG_subprogram | gimli::DW_TAG_lexical_block
            ) {
                let mut it = dwarf.die_ranges(unit, entry)?;
                while let Some(r) = it.next()? {
                    if r.begin < r.end {
                        raw.ranges.push((r.begin, r.end));
                    }
                }
            }
            by_offset.insert(entry.offset().0, idx);
            match parents.last() {
                Some(&p) => raws[p].children.push(idx),
                None => roots.push(idx),
            }
            raws.push(raw);
            parents.push(idx);
        }

        // Pass 2: types (memoized), functions, globals.
        let mut memo: HashMap<usize, TypeId> = HashMap::new();
        let mut resolve = |this: &mut DebugInfo, off: Option<usize>| -> TypeId {
            this.resolve_type(&raws, &by_offset, &mut memo, off, 0)
        };
        for (i, raw) in raws.iter().enumerate() {
            match raw.tag {
                gimli::DW_TAG_subprogram if !raw.declaration && !raw.ranges.is_empty() => {
                    let low = raw.ranges.iter().map(|r| r.0).min().unwrap_or(0);
                    let high = raw.ranges.iter().map(|r| r.1).max().unwrap_or(0);
                    let mut vars = Vec::new();
                    let mut stack: Vec<(usize, Vec<(u64, u64)>)> = vec![(i, Vec::new())];
                    while let Some((node, scope)) = stack.pop() {
                        for &c in &raws[node].children {
                            let cr = &raws[c];
                            match cr.tag {
                                gimli::DW_TAG_formal_parameter | gimli::DW_TAG_variable => {
                                    let ty = resolve(self, cr.type_ref);
                                    vars.push(Variable {
                                        name: cr.name.clone().unwrap_or_default(),
                                        is_param: cr.tag == gimli::DW_TAG_formal_parameter,
                                        decl_line: cr.decl_line,
                                        decl_column: cr.decl_column,
                                        location: cr.location.clone().unwrap_or(Location::None),
                                        ty,
                                        scope: scope.clone(),
                                    });
                                }
                                gimli::DW_TAG_lexical_block => {
                                    stack.push((c, cr.ranges.clone()));
                                }
                                _ => {}
                            }
                        }
                    }
                    vars.sort_by_key(|v| (!v.is_param, v.decl_line, v.decl_column));
                    self.functions.push(Function {
                        name: raw.name.clone().unwrap_or_default(),
                        low,
                        high,
                        file: file_name(raw.decl_file),
                        decl_line: raw.decl_line,
                        frame_base: raw.frame_base.clone().unwrap_or(FrameBase::Other),
                        vars,
                    });
                }
                gimli::DW_TAG_variable if roots.contains(&i) || is_cu_child(&raws, &roots, i) => {
                    if let Some(Location::Address(addr)) = raw.location {
                        let ty = resolve(self, raw.type_ref);
                        self.globals.push(Global {
                            name: raw.name.clone().unwrap_or_default(),
                            addr,
                            ty,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn intern_file(&mut self, name: String) -> u32 {
        if let Some(i) = self.files.iter().position(|f| *f == name) {
            return i as u32;
        }
        self.files.push(name);
        (self.files.len() - 1) as u32
    }

    fn push_type(&mut self, t: Type) -> TypeId {
        self.types.push(t);
        self.types.len() - 1
    }

    fn resolve_type(
        &mut self,
        raws: &[Raw],
        by_offset: &HashMap<usize, usize>,
        memo: &mut HashMap<usize, TypeId>,
        off: Option<usize>,
        depth: u32,
    ) -> TypeId {
        let Some(off) = off else {
            return self.push_type(Type::Unsupported("void".into()));
        };
        if let Some(&t) = memo.get(&off) {
            return t;
        }
        if depth > 64 {
            return self.push_type(Type::Unsupported("type nesting too deep".into()));
        }
        let Some(&idx) = by_offset.get(&off) else {
            return self.push_type(Type::Unsupported(format!("dangling type ref {off:#x}")));
        };
        let raw = &raws[idx];
        let name = raw.name.clone().unwrap_or_default();
        let ty = match raw.tag {
            gimli::DW_TAG_typedef
            | gimli::DW_TAG_const_type
            | gimli::DW_TAG_volatile_type
            | gimli::DW_TAG_restrict_type
            | gimli::DW_TAG_atomic_type => {
                let t = self.resolve_type(raws, by_offset, memo, raw.type_ref, depth + 1);
                memo.insert(off, t);
                return t;
            }
            gimli::DW_TAG_base_type => Type::Base {
                name,
                size: raw.byte_size.unwrap_or(0),
                encoding: match raw.encoding.unwrap_or(0) {
                    0x02 => BaseEncoding::Boolean,
                    0x04 => BaseEncoding::Float,
                    0x05 => BaseEncoding::Signed,
                    0x06 => BaseEncoding::SignedChar,
                    0x07 => BaseEncoding::Unsigned,
                    0x08 => BaseEncoding::UnsignedChar,
                    e => BaseEncoding::Other(e),
                },
            },
            gimli::DW_TAG_pointer_type | gimli::DW_TAG_reference_type => Type::Pointer,
            gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type => {
                if raw.declaration {
                    Type::Unsupported(format!("incomplete struct {name}"))
                } else {
                    let mut members = Vec::new();
                    for &c in &raw.children {
                        let m = &raws[c];
                        if m.tag == gimli::DW_TAG_member {
                            let ty =
                                self.resolve_type(raws, by_offset, memo, m.type_ref, depth + 1);
                            members.push(Member {
                                name: m.name.clone().unwrap_or_default(),
                                offset: m.member_offset.unwrap_or(0),
                                ty,
                            });
                        }
                    }
                    Type::Struct {
                        name,
                        size: raw.byte_size.unwrap_or(0),
                        members,
                    }
                }
            }
            gimli::DW_TAG_union_type => Type::Union {
                name,
                size: raw.byte_size.unwrap_or(0),
            },
            gimli::DW_TAG_enumeration_type => Type::Enum {
                name,
                size: raw.byte_size.unwrap_or(4),
            },
            gimli::DW_TAG_array_type => {
                let elem = self.resolve_type(raws, by_offset, memo, raw.type_ref, depth + 1);
                let mut count: Option<u64> = Some(1);
                for &c in &raw.children {
                    if raws[c].tag == gimli::DW_TAG_subrange_type {
                        count = match (count, &raws[c].count) {
                            (Some(n), Some(Ok(k))) => n.checked_mul(*k),
                            _ => None,
                        };
                    }
                }
                match count {
                    Some(count) => Type::Array { elem, count },
                    None => Type::Unsupported("variable-length or unbounded array".into()),
                }
            }
            gimli::DW_TAG_subroutine_type => Type::Unsupported("function type".into()),
            t => Type::Unsupported(format!("{t}")),
        };
        let id = self.push_type(ty);
        memo.insert(off, id);
        id
    }

    /// Size of a type in bytes.
    pub fn size_of(&self, ty: TypeId) -> Option<u64> {
        match self.types.get(ty)? {
            Type::Base { size, .. }
            | Type::Struct { size, .. }
            | Type::Union { size, .. }
            | Type::Enum { size, .. } => Some(*size),
            Type::Pointer => Some(8),
            Type::Array { elem, count } => self.size_of(*elem)?.checked_mul(*count),
            Type::Unsupported(_) => None,
        }
    }

    /// Mark the bytes of `ty` (placed at `base` in `mask`) that belong to members rather than
    /// padding; unions and enums count as fully used.
    pub fn mark_data_bytes(&self, ty: TypeId, base: u64, mask: &mut [bool]) {
        let mut mark = |lo: u64, len: u64| {
            let lo = lo as usize;
            let hi = (lo + len as usize).min(mask.len());
            if lo < hi {
                mask[lo..hi].fill(true);
            }
        };
        match self.types.get(ty) {
            Some(Type::Struct { members, .. }) => {
                for m in members {
                    self.mark_data_bytes(m.ty, base + m.offset, mask);
                }
            }
            Some(Type::Array { elem, count }) => {
                let esize = self.size_of(*elem).unwrap_or(0);
                for i in 0..*count {
                    self.mark_data_bytes(*elem, base + i * esize, mask);
                }
            }
            Some(_) => mark(base, self.size_of(ty).unwrap_or(0)),
            None => {}
        }
    }

    /// The function containing `pc`.
    pub fn function_at(&self, pc: u64) -> Option<&Function> {
        let i = self.functions.partition_point(|f| f.low <= pc);
        let f = self.functions.get(i.checked_sub(1)?)?;
        (pc < f.high).then_some(f)
    }

    /// The function named `name`.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// `(file, line, column)` of the instruction at `addr`.
    pub fn line_at(&self, addr: u64) -> Option<(&str, u32, u32)> {
        let i = self.lines.partition_point(|r| r.addr <= addr);
        let row = self.lines.get(i.checked_sub(1)?)?;
        if row.end_sequence {
            return None;
        }
        let file = self.files.get(row.file as usize)?;
        Some((file.as_str(), row.line, row.column))
    }
}

fn is_cu_child(raws: &[Raw], roots: &[usize], i: usize) -> bool {
    roots
        .iter()
        .any(|&r| raws[r].tag == gimli::DW_TAG_compile_unit && raws[r].children.contains(&i))
}

fn location(unit: &gimli::Unit<R<'_>>, v: AttributeValue<R<'_>>) -> Location {
    let Some(expr) = v.exprloc_value() else {
        return Location::Other("location list".into());
    };
    let mut ops = expr.operations(unit.encoding());
    let first = match ops.next() {
        Ok(Some(op)) => op,
        Ok(None) => return Location::None,
        Err(e) => return Location::Other(e.to_string()),
    };
    if !matches!(ops.next(), Ok(None)) {
        return Location::Other("multi-operation location expression".into());
    }
    match first {
        Operation::FrameOffset { offset } => Location::FrameOffset(offset),
        Operation::Address { address } => Location::Address(address),
        op => Location::Other(format!("{op:?}")),
    }
}

fn frame_base(unit: &gimli::Unit<R<'_>>, v: AttributeValue<R<'_>>) -> FrameBase {
    let Some(expr) = v.exprloc_value() else {
        return FrameBase::Other;
    };
    let mut ops = expr.operations(unit.encoding());
    match (ops.next(), ops.next()) {
        (Ok(Some(Operation::CallFrameCFA)), Ok(None)) => FrameBase::Cfa,
        (
            Ok(Some(Operation::RegisterOffset {
                register, offset, ..
            })),
            Ok(None),
        ) => FrameBase::RegOffset {
            reg: register.0,
            offset,
        },
        _ => FrameBase::Other,
    }
}

/// Largest stack object the translator copies (bytes).
const MAX_OBJECT: u64 = 1 << 30;
/// Most pointer slots inside one object.
const MAX_POINTER_SLOTS: u64 = 1 << 20;

/// Layout facts about one variable's type, checked against the other binary's type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Size in bytes.
    pub size: u64,
    /// Offsets of 8-byte pointer slots inside the object (struct members, array elements).
    pub pointers: Vec<u64>,
}

/// Compare a type of binary `a` with a type of binary `b`: same size, same member offsets,
/// same scalar encodings (no `long double`, same `char` signedness). Returns the layout (with
/// pointer slots) or a description of the first difference.
pub fn compatible_layout(
    a: &DebugInfo,
    ta: TypeId,
    b: &DebugInfo,
    tb: TypeId,
) -> Result<Layout, String> {
    let mut layout = Layout::default();
    compare(a, ta, b, tb, 0, "", &mut layout)?;
    layout.size = a.size_of(ta).ok_or("type of unknown size")?;
    Ok(layout)
}

fn compare(
    a: &DebugInfo,
    ta: TypeId,
    b: &DebugInfo,
    tb: TypeId,
    base: u64,
    path: &str,
    out: &mut Layout,
) -> Result<(), String> {
    let (Some(x), Some(y)) = (a.types.get(ta), b.types.get(tb)) else {
        return Err("dangling type id".into());
    };
    let at = |what: String| {
        if path.is_empty() {
            what
        } else {
            format!("{path}: {what}")
        }
    };
    match (x, y) {
        (
            Type::Base {
                name,
                size: s1,
                encoding: e1,
            },
            Type::Base {
                size: s2,
                encoding: e2,
                ..
            },
        ) => {
            if s1 != s2 {
                return Err(at(format!(
                    "{name} is {s1} bytes here but {s2} bytes there"
                )));
            }
            if *e1 == BaseEncoding::Float && *s1 > 8 {
                return Err(at(format!(
                    "{name} ({s1}-byte float) has a different representation on x86_64 (x87) and aarch64 (binary128)"
                )));
            }
            if e1 != e2 {
                return Err(at(format!(
                    "{name} has encoding {e1:?} here but {e2:?} there (build both with -fsigned-char)"
                )));
            }
            Ok(())
        }
        (Type::Pointer, Type::Pointer) => {
            out.pointers.push(base);
            Ok(())
        }
        (Type::Enum { size: s1, name, .. }, Type::Enum { size: s2, .. }) if s1 == s2 => {
            let _ = name;
            Ok(())
        }
        (Type::Union { size: s1, .. }, Type::Union { size: s2, .. }) if s1 == s2 => Ok(()),
        (
            Type::Struct {
                name,
                size: s1,
                members: m1,
            },
            Type::Struct {
                size: s2,
                members: m2,
                ..
            },
        ) => {
            if s1 != s2 || m1.len() != m2.len() {
                return Err(at(format!(
                    "struct {name} is {s1} bytes with {} members here but {s2} bytes with {} there",
                    m1.len(),
                    m2.len()
                )));
            }
            for (p, q) in m1.iter().zip(m2) {
                if p.offset != q.offset || p.name != q.name {
                    return Err(at(format!(
                        "struct {name} member {} at offset {} here but {} at {} there",
                        p.name, p.offset, q.name, q.offset
                    )));
                }
                let sub = if path.is_empty() {
                    p.name.clone()
                } else {
                    format!("{path}.{}", p.name)
                };
                compare(a, p.ty, b, q.ty, base + p.offset, &sub, out)?;
            }
            Ok(())
        }
        (
            Type::Array {
                elem: e1,
                count: c1,
            },
            Type::Array {
                elem: e2,
                count: c2,
            },
        ) => {
            if c1 != c2 {
                return Err(at(format!("array of {c1} elements here but {c2} there")));
            }
            let esize = a
                .size_of(*e1)
                .ok_or_else(|| at("array element of unknown size".into()))?;
            if esize.checked_mul(*c1).is_none_or(|n| n > MAX_OBJECT) {
                return Err(at(format!(
                    "array of {c1} elements of {esize} bytes is too large"
                )));
            }
            let mut one = Layout::default();
            compare(a, *e1, b, *e2, 0, &format!("{path}[]"), &mut one)?;
            if !one.pointers.is_empty() {
                if c1.saturating_mul(one.pointers.len() as u64) > MAX_POINTER_SLOTS {
                    return Err(at(format!(
                        "array of {c1} elements holds too many pointers to fix up"
                    )));
                }
                for i in 0..*c1 {
                    out.pointers
                        .extend(one.pointers.iter().map(|p| base + i * esize + p));
                }
            }
            Ok(())
        }
        (Type::Unsupported(w), _) | (_, Type::Unsupported(w)) => {
            Err(at(format!("unsupported type: {w}")))
        }
        (x, y) => Err(at(format!("type {} here but {} there", kind(x), kind(y)))),
    }
}

fn kind(t: &Type) -> String {
    match t {
        Type::Base { name, .. } => name.clone(),
        Type::Pointer => "pointer".into(),
        Type::Struct { name, .. } => format!("struct {name}"),
        Type::Union { name, .. } => format!("union {name}"),
        Type::Array { count, .. } => format!("array[{count}]"),
        Type::Enum { name, .. } => format!("enum {name}"),
        Type::Unsupported(w) => w.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(types: Vec<Type>) -> DebugInfo {
        DebugInfo {
            types,
            ..DebugInfo::default()
        }
    }

    fn int(size: u64) -> Type {
        Type::Base {
            name: "int".into(),
            size,
            encoding: BaseEncoding::Signed,
        }
    }

    #[test]
    fn struct_with_pointers_and_arrays() {
        // 0 int, 1 pointer, 2 struct {int a; ptr p; ptr q[2];}, 3 array[3] of 2
        let types = vec![
            int(4),
            Type::Pointer,
            Type::Array { elem: 1, count: 2 },
            Type::Struct {
                name: "s".into(),
                size: 32,
                members: vec![
                    Member {
                        name: "a".into(),
                        offset: 0,
                        ty: 0,
                    },
                    Member {
                        name: "p".into(),
                        offset: 8,
                        ty: 1,
                    },
                    Member {
                        name: "q".into(),
                        offset: 16,
                        ty: 2,
                    },
                ],
            },
            Type::Array { elem: 3, count: 3 },
        ];
        let a = info(types.clone());
        let b = info(types);
        let l = compatible_layout(&a, 4, &b, 4).unwrap();
        assert_eq!(l.size, 96);
        assert_eq!(l.pointers, vec![8, 16, 24, 40, 48, 56, 72, 80, 88]);
        assert_eq!(
            compatible_layout(&a, 0, &b, 0).unwrap(),
            Layout {
                size: 4,
                pointers: vec![]
            }
        );
    }

    #[test]
    fn differences_are_reported() {
        let a = info(vec![
            int(4),
            Type::Base {
                name: "long double".into(),
                size: 16,
                encoding: BaseEncoding::Float,
            },
            Type::Base {
                name: "char".into(),
                size: 1,
                encoding: BaseEncoding::SignedChar,
            },
            Type::Struct {
                name: "__va_list_tag".into(),
                size: 24,
                members: vec![],
            },
            Type::Unsupported("variable-length or unbounded array".into()),
        ]);
        let b = info(vec![
            int(8),
            Type::Base {
                name: "long double".into(),
                size: 16,
                encoding: BaseEncoding::Float,
            },
            Type::Base {
                name: "char".into(),
                size: 1,
                encoding: BaseEncoding::UnsignedChar,
            },
            Type::Struct {
                name: "__va_list".into(),
                size: 32,
                members: vec![],
            },
            Type::Pointer,
        ]);
        assert!(compatible_layout(&a, 0, &b, 0)
            .unwrap_err()
            .contains("4 bytes here but 8"));
        assert!(compatible_layout(&a, 1, &b, 1).unwrap_err().contains("x87"));
        assert!(compatible_layout(&a, 2, &b, 2)
            .unwrap_err()
            .contains("-fsigned-char"));
        assert!(compatible_layout(&a, 3, &b, 3)
            .unwrap_err()
            .contains("24 bytes"));
        assert!(compatible_layout(&a, 4, &b, 4)
            .unwrap_err()
            .contains("variable-length"));
        assert!(compatible_layout(&a, 0, &b, 4)
            .unwrap_err()
            .contains("pointer"));
    }

    #[test]
    fn padding_is_not_data() {
        let d = info(vec![
            int(4),
            Type::Base {
                name: "char".into(),
                size: 1,
                encoding: BaseEncoding::SignedChar,
            },
            Type::Struct {
                name: "s".into(),
                size: 8,
                members: vec![
                    Member {
                        name: "c".into(),
                        offset: 0,
                        ty: 1,
                    },
                    Member {
                        name: "i".into(),
                        offset: 4,
                        ty: 0,
                    },
                ],
            },
            Type::Array { elem: 2, count: 2 },
        ]);
        let mut mask = vec![false; 16];
        d.mark_data_bytes(3, 0, &mut mask);
        let want: Vec<bool> = [1, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1]
            .iter()
            .map(|&b| b == 1)
            .collect();
        assert_eq!(mask, want);
    }

    #[test]
    fn member_offsets_must_match() {
        let mk = |off| {
            info(vec![
                int(4),
                Type::Struct {
                    name: "s".into(),
                    size: 8,
                    members: vec![Member {
                        name: "x".into(),
                        offset: off,
                        ty: 0,
                    }],
                },
            ])
        };
        let err = compatible_layout(&mk(0), 1, &mk(4), 1).unwrap_err();
        assert!(
            err.contains("member x at offset 0 here but x at 4"),
            "{err}"
        );
    }

    #[test]
    fn scope_and_lookup() {
        let v = Variable {
            name: "i".into(),
            is_param: false,
            decl_line: 1,
            decl_column: 1,
            location: Location::FrameOffset(-20),
            ty: 0,
            scope: vec![(0x10, 0x20)],
        };
        assert!(v.in_scope(0x10) && !v.in_scope(0x20));
        let d = DebugInfo {
            functions: vec![
                Function {
                    name: "a".into(),
                    low: 0x10,
                    high: 0x20,
                    file: "x.c".into(),
                    decl_line: 1,
                    frame_base: FrameBase::Cfa,
                    vars: vec![],
                },
                Function {
                    name: "b".into(),
                    low: 0x30,
                    high: 0x40,
                    file: "x.c".into(),
                    decl_line: 2,
                    frame_base: FrameBase::Cfa,
                    vars: vec![],
                },
            ],
            lines: vec![
                LineRow {
                    addr: 0x10,
                    file: 0,
                    line: 3,
                    column: 5,
                    end_sequence: false,
                },
                LineRow {
                    addr: 0x18,
                    file: 0,
                    line: 4,
                    column: 0,
                    end_sequence: false,
                },
                LineRow {
                    addr: 0x20,
                    file: 0,
                    line: 0,
                    column: 0,
                    end_sequence: true,
                },
            ],
            files: vec!["x.c".into()],
            ..DebugInfo::default()
        };
        assert_eq!(d.function_at(0x1f).map(|f| f.name.as_str()), Some("a"));
        assert!(d.function_at(0x25).is_none());
        assert_eq!(d.function_at(0x30).map(|f| f.name.as_str()), Some("b"));
        assert_eq!(d.line_at(0x17), Some(("x.c", 3, 5)));
        assert_eq!(d.line_at(0x18), Some(("x.c", 4, 0)));
        assert_eq!(d.line_at(0x20), None);
        assert!(d.function("b").is_some());
    }
}

//! Symbol tables: the per-symbol sections of a relocatable object (what
//! the layout places) and the addresses in a linked executable (what the
//! build verifies and records).

use super::layout::{Region, Section, Sym, SymKind};
use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SectionKind, SymbolKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SHF_WRITE: u64 = 0x1;
const SHF_ALLOC: u64 = 0x2;
const SHF_EXECINSTR: u64 = 0x4;
const SHF_TLS: u64 = 0x400;

/// Prefix of the sections `strings` gives to string literals.
pub const STRING_SECTION_PREFIX: &str = ".rodata.pcstr.";

#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an ELF file I understand: {msg}")]
    Parse { path: PathBuf, msg: String },
    #[error("{source_file}: thread-local variable {symbol} is not supported (its address differs per ISA)")]
    ThreadLocal { source_file: String, symbol: String },
}

fn sh_flags(flags: SectionFlags) -> u64 {
    match flags {
        SectionFlags::Elf { sh_flags } => sh_flags,
        _ => 0,
    }
}

fn load(path: &Path) -> Result<Vec<u8>, SymbolError> {
    std::fs::read(path).map_err(|source| SymbolError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse<'a>(path: &Path, data: &'a [u8]) -> Result<object::File<'a>, SymbolError> {
    object::File::parse(data).map_err(|e| SymbolError::Parse {
        path: path.to_owned(),
        msg: e.to_string(),
    })
}

/// The sections of object `path` (built from `source_file`, object number
/// `object_index`) that hold named functions or variables, or one string
/// literal. Sections with nothing nameable (literal pools, jump tables,
/// unwind tables) stay ISA-private and are not listed.
pub fn read_object(
    path: &Path,
    object_index: usize,
    source_file: &str,
) -> Result<Vec<Section>, SymbolError> {
    let data = load(path)?;
    let file = parse(path, &data)?;
    let mut by_section: HashMap<object::SectionIndex, Vec<Sym>> = HashMap::new();
    for sym in file.symbols() {
        let Some(index) = sym.section_index() else {
            continue;
        };
        let kind = match sym.kind() {
            SymbolKind::Text => SymKind::Function,
            SymbolKind::Data | SymbolKind::Tls => SymKind::Object,
            _ => continue,
        };
        let name = sym.name().unwrap_or("");
        if name.is_empty() || name.starts_with('$') || name.starts_with(".L") {
            continue;
        }
        if sym.kind() == SymbolKind::Tls {
            return Err(SymbolError::ThreadLocal {
                source_file: source_file.to_owned(),
                symbol: name.to_owned(),
            });
        }
        by_section.entry(index).or_default().push(Sym {
            name: name.to_owned(),
            offset: sym.address(),
            size: sym.size(),
            kind,
            global: sym.is_global(),
        });
    }
    let mut out = Vec::new();
    for section in file.sections() {
        let flags = sh_flags(section.flags());
        if flags & SHF_ALLOC == 0 {
            continue;
        }
        let name = section.name().unwrap_or("").to_owned();
        let mut symbols = by_section.remove(&section.index()).unwrap_or_default();
        if name.starts_with(STRING_SECTION_PREFIX) {
            symbols = vec![Sym {
                name: name.clone(),
                offset: 0,
                size: section.size(),
                kind: SymKind::String,
                global: false,
            }];
        }
        if symbols.is_empty() {
            continue;
        }
        if flags & SHF_TLS != 0 {
            return Err(SymbolError::ThreadLocal {
                source_file: source_file.to_owned(),
                symbol: symbols[0].name.clone(),
            });
        }
        symbols.sort_by(|a, b| (a.offset, &a.name).cmp(&(b.offset, &b.name)));
        let region = if flags & SHF_EXECINSTR != 0 {
            Region::Text
        } else if flags & SHF_WRITE != 0 {
            Region::Data
        } else {
            Region::Rodata
        };
        out.push(Section {
            object: object_index,
            name,
            region,
            nobits: section.kind() == SectionKind::UninitializedData,
            size: section.size(),
            align: section.align().max(1),
            symbols,
        });
    }
    Ok(out)
}

/// Addresses in a linked executable.
#[derive(Debug, Default)]
pub struct Linked {
    /// Section name → (address, size).
    pub sections: HashMap<String, (u64, u64)>,
    /// Global symbol name → address.
    pub globals: HashMap<String, u64>,
    /// Local symbols starting with the prefix given to `read_linked` → address.
    pub labels: HashMap<String, u64>,
}

pub fn read_linked(path: &Path, label_prefix: &str) -> Result<Linked, SymbolError> {
    let data = load(path)?;
    let file = parse(path, &data)?;
    let mut linked = Linked::default();
    for s in file.sections() {
        if let Ok(name) = s.name() {
            linked
                .sections
                .insert(name.to_owned(), (s.address(), s.size()));
        }
    }
    for sym in file.symbols() {
        let Ok(name) = sym.name() else {
            continue;
        };
        if sym.section_index().is_none() {
            continue;
        }
        if sym.is_global() {
            linked.globals.insert(name.to_owned(), sym.address());
        } else if name.starts_with(label_prefix) {
            linked.labels.insert(name.to_owned(), sym.address());
        }
    }
    Ok(linked)
}

//! Common layout: pairs the per-symbol sections of the two ISAs' objects and
//! gives each pair one address, valid in both binaries. Pure (no I/O).
//!
//! Windows, in this order, each starting on its own page: text (code),
//! read-only data (constants, string literals), writable data (initialized
//! data, then zero-initialized). Every section is aligned to the larger of
//! its two alignments and takes the larger of its two sizes.

use std::collections::{BTreeMap, BTreeSet};

pub use popcorn_isa::Isa;

/// Which window a section goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Text,
    Rodata,
    Data,
}

impl Region {
    pub fn name(self) -> &'static str {
        match self {
            Region::Text => "text",
            Region::Rodata => "rodata",
            Region::Data => "data",
        }
    }
}

/// What a symbol is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SymKind {
    Function,
    Object,
    /// An anonymous string literal (no symbol; the section itself).
    String,
}

/// A symbol defined in a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sym {
    pub name: String,
    pub offset: u64,
    pub size: u64,
    pub kind: SymKind,
    pub global: bool,
}

/// One per-symbol section of one object file of one ISA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Index of the source (object file) it comes from.
    pub object: usize,
    /// Section name in the object (`.text.main`, `.bss.count.0`, ...).
    pub name: String,
    pub region: Region,
    /// Zero-initialized (no file contents).
    pub nobits: bool,
    pub size: u64,
    pub align: u64,
    pub symbols: Vec<Sym>,
}

/// A section present in both ISAs' builds, ready to be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub object: usize,
    pub name: String,
    pub region: Region,
    pub nobits: bool,
    /// Per ISA (indexed by `Isa::index`).
    pub sizes: [u64; 2],
    pub aligns: [u64; 2],
    pub symbols: Vec<Sym>,
}

/// Why two builds cannot share one layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("{what} exists only in the {isa} build (section {section})")]
    OnlyIn {
        what: String,
        section: String,
        isa: Isa,
        object: usize,
    },
    #[error("section {section} is {x86} data on x86_64 but {a64} data on aarch64")]
    Region {
        section: String,
        x86: &'static str,
        a64: &'static str,
    },
    #[error("section {section} defines {x86:?} on x86_64 but {a64:?} on aarch64")]
    Symbols {
        section: String,
        x86: Vec<String>,
        a64: Vec<String>,
    },
    #[error("symbol {symbol} is at offset {x86} of its section on x86_64 but {a64} on aarch64")]
    Offset { symbol: String, x86: u64, a64: u64 },
    #[error("string literal section {section} is {x86} bytes on x86_64 but {a64} on aarch64")]
    StringSize { section: String, x86: u64, a64: u64 },
}

fn sym_names(s: &Section) -> Vec<String> {
    let mut v: Vec<String> = s.symbols.iter().map(|y| y.name.clone()).collect();
    v.sort();
    v
}

fn describe(s: &Section) -> String {
    match s.symbols.first() {
        Some(sym) if sym.kind == SymKind::Function => format!("function {}", sym.name),
        Some(sym) if sym.kind == SymKind::String => "string literal".to_owned(),
        Some(sym) => format!("variable {}", sym.name),
        None => "section".to_owned(),
    }
}

/// Pairs the sections of the two builds by (object, section name). The
/// result keeps the x86_64 order (then aarch64-only order for none: those
/// are errors). Every mismatch is reported, not just the first.
pub fn pair(x86: &[Section], a64: &[Section]) -> Result<Vec<Item>, Vec<Mismatch>> {
    let key = |s: &Section| (s.object, s.name.clone());
    let a_map: BTreeMap<(usize, String), &Section> = a64.iter().map(|s| (key(s), s)).collect();
    let x_keys: BTreeSet<(usize, String)> = x86.iter().map(key).collect();
    let mut errors = Vec::new();
    let mut items = Vec::new();
    for x in x86 {
        let Some(a) = a_map.get(&key(x)) else {
            errors.push(Mismatch::OnlyIn {
                what: describe(x),
                section: x.name.clone(),
                isa: Isa::X86_64,
                object: x.object,
            });
            continue;
        };
        if x.region != a.region {
            errors.push(Mismatch::Region {
                section: x.name.clone(),
                x86: x.region.name(),
                a64: a.region.name(),
            });
            continue;
        }
        let (xn, an) = (sym_names(x), sym_names(a));
        if xn != an {
            errors.push(Mismatch::Symbols {
                section: x.name.clone(),
                x86: xn,
                a64: an,
            });
            continue;
        }
        let mut ok = true;
        for xs in &x.symbols {
            if let Some(asym) = a.symbols.iter().find(|s| s.name == xs.name) {
                if asym.offset != xs.offset {
                    errors.push(Mismatch::Offset {
                        symbol: xs.name.clone(),
                        x86: xs.offset,
                        a64: asym.offset,
                    });
                    ok = false;
                }
            }
        }
        let is_string = x.symbols.iter().any(|s| s.kind == SymKind::String);
        if is_string && x.size != a.size {
            errors.push(Mismatch::StringSize {
                section: x.name.clone(),
                x86: x.size,
                a64: a.size,
            });
            ok = false;
        }
        if !ok {
            continue;
        }
        // Per-ISA symbol sizes are kept by name; the item lists x86's order.
        let symbols = x
            .symbols
            .iter()
            .map(|s| {
                let a_size = a
                    .symbols
                    .iter()
                    .find(|y| y.name == s.name)
                    .map_or(0, |y| y.size);
                Sym {
                    size: s.size.max(a_size),
                    ..s.clone()
                }
            })
            .collect();
        items.push(Item {
            object: x.object,
            name: x.name.clone(),
            region: x.region,
            nobits: x.nobits && a.nobits,
            sizes: [x.size, a.size],
            aligns: [x.align.max(1), a.align.max(1)],
            symbols,
        });
    }
    for a in a64 {
        if !x_keys.contains(&key(a)) {
            errors.push(Mismatch::OnlyIn {
                what: describe(a),
                section: a.name.clone(),
                isa: Isa::Aarch64,
                object: a.object,
            });
        }
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}

/// A section's place in both binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub item: Item,
    pub address: u64,
    /// Bytes reserved: the larger of the two sizes.
    pub size: u64,
    pub align: u64,
}

/// One window: [start, end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Window {
    pub start: u64,
    pub end: u64,
}

/// The whole common layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// In address order.
    pub placed: Vec<Placed>,
    pub text: Window,
    pub rodata: Window,
    pub data: Window,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("section {section}: alignment {align} is not a power of two")]
    BadAlign { section: String, align: u64 },
    #[error("page size {0:#x} is not a power of two")]
    BadPage(u64),
    #[error("the application does not fit below {limit:#x}")]
    TooBig { limit: u64 },
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    v.checked_add(a - 1).map(|x| x & !(a - 1))
}

/// Places `items` from `base` upwards: text, then read-only data on the next
/// page, then writable data (initialized first, zero-initialized last) on the
/// next page. Within a window items keep their input order. Everything must
/// end at or below `limit`.
pub fn compute(items: &[Item], base: u64, page: u64, limit: u64) -> Result<Layout, LayoutError> {
    if !page.is_power_of_two() {
        return Err(LayoutError::BadPage(page));
    }
    for it in items {
        for &a in &it.aligns {
            if !a.is_power_of_two() {
                return Err(LayoutError::BadAlign {
                    section: it.name.clone(),
                    align: a,
                });
            }
        }
    }
    let too_big = LayoutError::TooBig { limit };
    let regions = [Region::Text, Region::Rodata, Region::Data];
    let mut placed = Vec::with_capacity(items.len());
    let mut windows = [Window::default(); 3];
    let mut cursor = align_up(base, page).ok_or(too_big.clone())?;
    for (w, region) in regions.iter().enumerate() {
        let start = cursor;
        // Writable: initialized data, then bss.
        let passes: &[Option<bool>] = if *region == Region::Data {
            &[Some(false), Some(true)]
        } else {
            &[None]
        };
        for pass in passes {
            for it in items
                .iter()
                .filter(|i| i.region == *region && (pass.is_none() || *pass == Some(i.nobits)))
            {
                let align = it.aligns[0].max(it.aligns[1]);
                let size = it.sizes[0].max(it.sizes[1]);
                let address = align_up(cursor, align).ok_or(too_big.clone())?;
                cursor = address.checked_add(size).ok_or(too_big.clone())?;
                placed.push(Placed {
                    item: it.clone(),
                    address,
                    size,
                    align,
                });
            }
        }
        windows[w] = Window { start, end: cursor };
        cursor = align_up(cursor, page).ok_or(too_big.clone())?;
    }
    if windows[2].end > limit || cursor > limit {
        return Err(too_big);
    }
    Ok(Layout {
        placed,
        text: windows[0],
        rodata: windows[1],
        data: windows[2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec(object: usize, name: &str, region: Region, size: u64, align: u64, sym: &str) -> Section {
        let kind = match region {
            Region::Text => SymKind::Function,
            _ if name.contains("pcstr") => SymKind::String,
            _ => SymKind::Object,
        };
        Section {
            object,
            name: name.to_owned(),
            region,
            nobits: name.starts_with(".bss"),
            size,
            align,
            symbols: vec![Sym {
                name: sym.to_owned(),
                offset: 0,
                size,
                kind,
                global: true,
            }],
        }
    }

    fn item(name: &str, region: Region, sizes: [u64; 2], aligns: [u64; 2]) -> Item {
        Item {
            object: 0,
            name: name.to_owned(),
            region,
            nobits: name.starts_with(".bss"),
            sizes,
            aligns,
            symbols: vec![],
        }
    }

    const PAGE: u64 = 0x10000;
    const BASE: u64 = 0x1000_0000;
    const LIMIT: u64 = 0x20_0000_0000;

    #[test]
    fn pairs_by_object_and_name_and_takes_both_sizes() {
        let x = vec![
            sec(0, ".text.main", Region::Text, 40, 1, "main"),
            sec(0, ".data.g", Region::Data, 8, 8, "g"),
        ];
        let a = vec![
            sec(0, ".data.g", Region::Data, 8, 8, "g"),
            sec(0, ".text.main", Region::Text, 52, 4, "main"),
        ];
        let items = pair(&x, &a).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].name, ".text.main");
        assert_eq!(items[0].sizes, [40, 52]);
        assert_eq!(items[0].aligns, [1, 4]);
        assert_eq!(items[0].symbols[0].size, 52);
    }

    #[test]
    fn same_name_in_two_objects_is_two_items() {
        let x = vec![
            sec(0, ".text.helper", Region::Text, 10, 1, "helper"),
            sec(1, ".text.helper", Region::Text, 12, 1, "helper"),
        ];
        let a = vec![
            sec(1, ".text.helper", Region::Text, 16, 4, "helper"),
            sec(0, ".text.helper", Region::Text, 20, 4, "helper"),
        ];
        let items = pair(&x, &a).unwrap();
        assert_eq!(items[0].sizes, [10, 20]);
        assert_eq!(items[1].sizes, [12, 16]);
    }

    #[test]
    fn one_sided_symbols_are_all_reported() {
        let x = vec![
            sec(0, ".text.main", Region::Text, 4, 1, "main"),
            sec(0, ".text.only_x", Region::Text, 4, 1, "only_x"),
        ];
        let a = vec![
            sec(0, ".text.main", Region::Text, 4, 4, "main"),
            sec(0, ".data.only_a", Region::Data, 4, 4, "only_a"),
        ];
        let errs = pair(&x, &a).unwrap_err();
        assert_eq!(errs.len(), 2);
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(text[0].contains("function only_x exists only in the x86_64 build"));
        assert!(text[1].contains("variable only_a exists only in the aarch64 build"));
    }

    #[test]
    fn region_symbol_offset_and_string_mismatches() {
        let x = vec![
            sec(0, ".data.g", Region::Data, 4, 4, "g"),
            sec(0, ".data.h", Region::Data, 4, 4, "h"),
            sec(
                0,
                ".rodata.pcstr.0",
                Region::Rodata,
                6,
                1,
                ".rodata.pcstr.0",
            ),
        ];
        let mut a = vec![
            sec(0, ".data.g", Region::Rodata, 4, 4, "g"),
            sec(0, ".data.h", Region::Data, 4, 4, "h"),
            sec(
                0,
                ".rodata.pcstr.0",
                Region::Rodata,
                7,
                1,
                ".rodata.pcstr.0",
            ),
        ];
        a[1].symbols[0].offset = 4;
        let errs = pair(&x, &a).unwrap_err();
        assert!(matches!(errs[0], Mismatch::Region { .. }));
        assert!(matches!(errs[1], Mismatch::Offset { x86: 0, a64: 4, .. }));
        assert!(matches!(
            errs[2],
            Mismatch::StringSize { x86: 6, a64: 7, .. }
        ));
        let mut a2 = x.clone();
        a2[1].symbols[0].name = "other".into();
        let errs = pair(&x, &a2).unwrap_err();
        assert!(matches!(errs[0], Mismatch::Symbols { .. }));
    }

    #[test]
    fn empty_input_gives_empty_windows_on_pages() {
        let l = compute(&[], BASE, PAGE, LIMIT).unwrap();
        assert!(l.placed.is_empty());
        assert_eq!(
            l.text,
            Window {
                start: BASE,
                end: BASE
            }
        );
        assert_eq!(l.rodata.start, BASE);
        assert_eq!(l.data.start, BASE);
    }

    #[test]
    fn windows_are_page_separated_and_ordered() {
        let items = vec![
            item(".bss.z", Region::Data, [4, 4], [4, 4]),
            item(".text.main", Region::Text, [0x30, 0x44], [1, 4]),
            item(".data.g", Region::Data, [8, 8], [8, 8]),
            item(".rodata.t", Region::Rodata, [16, 16], [8, 8]),
            item(".text.f", Region::Text, [0x11, 0x18], [16, 4]),
        ];
        let l = compute(&items, BASE, PAGE, LIMIT).unwrap();
        let names: Vec<&str> = l.placed.iter().map(|p| p.item.name.as_str()).collect();
        assert_eq!(
            names,
            [".text.main", ".text.f", ".rodata.t", ".data.g", ".bss.z"]
        );
        assert_eq!(l.placed[0].address, BASE);
        assert_eq!(l.placed[0].size, 0x44);
        // 0x44 rounded to 16.
        assert_eq!(l.placed[1].address, BASE + 0x50);
        assert_eq!(
            l.text,
            Window {
                start: BASE,
                end: BASE + 0x68
            }
        );
        assert_eq!(l.rodata.start, BASE + PAGE);
        assert_eq!(l.placed[2].address, BASE + PAGE);
        assert_eq!(l.data.start, BASE + 2 * PAGE);
        assert_eq!(l.placed[3].address, BASE + 2 * PAGE);
        // bss after initialized data.
        assert_eq!(l.placed[4].address, BASE + 2 * PAGE + 8);
        assert_eq!(l.data.end, BASE + 2 * PAGE + 12);
    }

    #[test]
    fn no_overlap_and_every_alignment_honoured() {
        // A deterministic pseudo-random mix of sizes and alignments.
        let mut items = Vec::new();
        let mut seed = 12345u64;
        for i in 0..300 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let region = match seed >> 62 {
                0 | 1 => Region::Text,
                2 => Region::Rodata,
                _ => Region::Data,
            };
            let s0 = (seed >> 8) % 5000;
            let s1 = (seed >> 24) % 5000;
            let a0 = 1u64 << ((seed >> 40) % 7);
            let a1 = 1u64 << ((seed >> 48) % 7);
            let name = if region == Region::Data && i % 3 == 0 {
                format!(".bss.v{i}")
            } else {
                format!(".x.{i}")
            };
            items.push(item(&name, region, [s0, s1], [a0, a1]));
        }
        let l = compute(&items, BASE, PAGE, LIMIT).unwrap();
        assert_eq!(l.placed.len(), items.len());
        let mut prev_end = 0;
        let mut prev_region = Region::Text;
        for p in &l.placed {
            assert_eq!(p.address % p.item.aligns[0], 0);
            assert_eq!(p.address % p.item.aligns[1], 0);
            assert!(p.size >= p.item.sizes[0] && p.size >= p.item.sizes[1]);
            assert!(p.address >= prev_end, "overlap at {}", p.item.name);
            if p.item.region != prev_region {
                // A new window starts on a fresh page.
                assert_eq!(p.address % PAGE, 0);
                assert!(p.address >= align_up(prev_end, PAGE).unwrap());
            }
            prev_end = p.address + p.size;
            prev_region = p.item.region;
        }
        for w in [l.text, l.rodata, l.data] {
            assert_eq!(w.start % PAGE, 0);
            assert!(w.end >= w.start);
        }
        assert!(l.text.end <= l.rodata.start && l.rodata.end <= l.data.start);
    }

    #[test]
    fn rejects_bad_alignment_page_and_overflow() {
        let bad = vec![item(".text.f", Region::Text, [4, 4], [3, 4])];
        assert!(matches!(
            compute(&bad, BASE, PAGE, LIMIT),
            Err(LayoutError::BadAlign { align: 3, .. })
        ));
        assert!(matches!(
            compute(&[], BASE, 3000, LIMIT),
            Err(LayoutError::BadPage(3000))
        ));
        let big = vec![item(".data.big", Region::Data, [1 << 40, 4], [8, 8])];
        assert!(matches!(
            compute(&big, BASE, PAGE, LIMIT),
            Err(LayoutError::TooBig { .. })
        ));
        let huge = vec![item(".data.big", Region::Data, [u64::MAX - 8, 4], [8, 8])];
        assert!(compute(&huge, BASE, PAGE, LIMIT).is_err());
    }

    #[test]
    fn empty_region_still_leaves_the_others_on_separate_pages() {
        let items = vec![
            item(".text.main", Region::Text, [0x10, 0x20], [1, 4]),
            item(".bss.z", Region::Data, [0x2000, 0x2000], [32, 32]),
        ];
        let l = compute(&items, BASE, PAGE, LIMIT).unwrap();
        assert_eq!(
            l.rodata,
            Window {
                start: BASE + PAGE,
                end: BASE + PAGE
            }
        );
        // An empty window takes no page of its own.
        assert_eq!(l.data.start, BASE + PAGE);
        assert_eq!(l.placed[1].address, BASE + PAGE);
        assert_eq!(l.data.end, BASE + PAGE + 0x2000);
    }

    #[test]
    fn large_text_pushes_data_to_later_pages() {
        let items = vec![
            item(".text.big", Region::Text, [PAGE + 1, 3], [1, 4]),
            item(".rodata.r", Region::Rodata, [1, 1], [1, 1]),
            item(".data.d", Region::Data, [1, 1], [1, 1]),
        ];
        let l = compute(&items, BASE, PAGE, LIMIT).unwrap();
        assert_eq!(l.text.end, BASE + PAGE + 1);
        assert_eq!(l.rodata.start, BASE + 2 * PAGE);
        assert_eq!(l.data.start, BASE + 3 * PAGE);
    }

    #[test]
    fn unaligned_base_is_rounded_to_a_page() {
        let items = vec![item(".text.f", Region::Text, [1, 1], [1, 1])];
        let l = compute(&items, BASE + 5, PAGE, LIMIT).unwrap();
        assert_eq!(l.placed[0].address, BASE + PAGE);
    }

    #[test]
    fn kinds_offsets_and_bss_flag_survive_pairing() {
        let mut x = sec(0, ".data.pair", Region::Data, 16, 8, "first");
        x.symbols.push(Sym {
            name: "second".into(),
            offset: 8,
            size: 8,
            kind: SymKind::Object,
            global: false,
        });
        let a = x.clone();
        let s = sec(
            0,
            ".rodata.pcstr.0",
            Region::Rodata,
            6,
            1,
            ".rodata.pcstr.0",
        );
        let b = sec(0, ".bss.z", Region::Data, 4, 4, "z");
        let items = pair(&[x, s.clone(), b.clone()], &[b, a, s]).unwrap();
        assert_eq!(items[0].symbols[1].offset, 8);
        assert!(!items[0].symbols[1].global);
        assert_eq!(items[1].symbols[0].kind, SymKind::String);
        assert!(items[2].nobits && !items[0].nobits);
        let l = compute(&items, BASE, PAGE, LIMIT).unwrap();
        let names: Vec<&str> = l.placed.iter().map(|p| p.item.name.as_str()).collect();
        assert_eq!(names, [".rodata.pcstr.0", ".data.pair", ".bss.z"]);
        // No text: read-only data starts the first window.
        assert_eq!(l.placed[0].address, BASE);
        assert_eq!(l.placed[1].address, BASE + PAGE);
    }

    #[test]
    fn identical_inputs_give_identical_layouts() {
        let items = vec![
            item(".text.a", Region::Text, [5, 9], [1, 4]),
            item(".data.b", Region::Data, [3, 3], [1, 1]),
        ];
        assert_eq!(
            compute(&items, BASE, PAGE, LIMIT).unwrap(),
            compute(&items, BASE, PAGE, LIMIT).unwrap()
        );
    }
}

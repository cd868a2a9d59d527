//! Reading a `popcorn build` program's `APP.popcorn.json` (format in
//! docs/CROSS_ISA.md, written by `popcorn build`): its executables, where
//! its data and heap are, and how its runtime stops at a migration point
//! ([`MigrationPoint`]), which is the contract between the runtime, the
//! agent and this crate.

use crate::regs::Isa;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Format tag `popcorn build` writes.
const FORMAT: &str = "popcorn-build/1";

#[derive(Debug, Deserialize)]
struct Window {
    start: u64,
    end: u64,
}

#[derive(Debug, Deserialize)]
struct Layout {
    data: Window,
}

#[derive(Debug, Deserialize)]
struct Arena {
    address: u64,
    size: u64,
}

#[derive(Debug, Deserialize)]
struct Stop {
    address: u64,
    resume_pc: u64,
}

#[derive(Debug, Deserialize)]
struct Runtime {
    symbols: BTreeMap<String, u64>,
    stop: BTreeMap<Isa, Stop>,
}

#[derive(Debug, Deserialize)]
struct Symbol {
    name: String,
    address: u64,
    sizes: BTreeMap<Isa, u64>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    format: String,
    binaries: BTreeMap<Isa, String>,
    layout: Layout,
    arena: Arena,
    runtime: Runtime,
    symbols: Vec<Symbol>,
}

/// How the popcorn runtime in a program stops for a migration, on one ISA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationPoint {
    /// `__popcorn_migrate_request`: non-zero asks for a stop at the next
    /// migration point.
    pub request_flag: u64,
    /// The breakpoint instruction the thread stops at.
    pub stop_insn: u64,
    /// Where to continue to resume in place (past the breakpoint).
    pub resume_pc: u64,
    /// Code between the runtime's last look at the flag and the breakpoint
    /// (`[start, end)` of `popcorn_migrate_point` and
    /// `__popcorn_migrate_stop`): a thread stopped there may still trap
    /// after the flag is cleared, so it is stepped out first.
    pub window: Vec<(u64, u64)>,
}

impl MigrationPoint {
    /// Whether `pc` lies in [`MigrationPoint::window`].
    pub fn in_window(&self, pc: u64) -> bool {
        self.window.iter().any(|&(s, e)| pc >= s && pc < e)
    }
}

/// A program built with `popcorn build`.
#[derive(Debug)]
pub struct App {
    /// The `APP.popcorn.json` file.
    pub metadata: PathBuf,
    meta: Metadata,
}

/// Metadata file of an executable named `APP.<isa>`: `APP.popcorn.json`.
pub fn metadata_path(exe: &Path) -> Option<PathBuf> {
    let name = exe.file_name()?.to_str()?;
    let stem = [".x86_64", ".aarch64"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))?;
    Some(exe.with_file_name(format!("{stem}.popcorn.json")))
}

impl App {
    /// Reads `APP.popcorn.json`.
    pub fn load(metadata: &Path) -> Result<App, String> {
        let text = std::fs::read(metadata).map_err(|e| format!("{}: {e}", metadata.display()))?;
        let meta: Metadata = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: not popcorn build metadata: {e}", metadata.display()))?;
        if meta.format != FORMAT {
            return Err(format!(
                "{}: format {:?}, this agent reads {FORMAT:?}; rebuild with this version's `popcorn build`",
                metadata.display(),
                meta.format
            ));
        }
        Ok(App {
            metadata: metadata.to_owned(),
            meta,
        })
    }

    /// The program whose executable is `exe`, if `popcorn build` made it.
    pub fn for_executable(exe: &Path) -> Result<App, String> {
        let not_built = || {
            format!(
                "{} was not built with `popcorn build` (no APP.popcorn.json next to it), so it has no migration points",
                exe.display()
            )
        };
        let meta = metadata_path(exe).ok_or_else(not_built)?;
        if !meta.exists() {
            return Err(not_built());
        }
        App::load(&meta)
    }

    /// The executable for `isa`.
    pub fn binary(&self, isa: Isa) -> Result<PathBuf, String> {
        let name = self
            .meta
            .binaries
            .get(&isa)
            .ok_or_else(|| format!("{} has no {isa} executable", self.metadata.display()))?;
        let path = self.metadata.with_file_name(name);
        if !path.exists() {
            return Err(format!(
                "{} is missing on this node (programs must be at the same path on every node)",
                path.display()
            ));
        }
        Ok(path)
    }

    fn symbol(&self, name: &str) -> Result<&Symbol, String> {
        self.meta
            .symbols
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("{}: no symbol {name}", self.metadata.display()))
    }

    /// Address of a runtime variable or function (`__popcorn_*`, the same
    /// on every ISA).
    pub fn runtime_symbol(&self, name: &str) -> Result<u64, String> {
        self.meta
            .runtime
            .symbols
            .get(name)
            .copied()
            .ok_or_else(|| format!("{}: no runtime symbol {name}", self.metadata.display()))
    }

    /// The entry of `main` (same address on every ISA).
    pub fn main(&self) -> Result<u64, String> {
        Ok(self.symbol("main")?.address)
    }

    /// How the runtime stops on `isa`.
    pub fn migration_point(&self, isa: Isa) -> Result<MigrationPoint, String> {
        let m = &self.meta;
        let missing = |what: &str| format!("{}: no {what}", self.metadata.display());
        let stop = m
            .runtime
            .stop
            .get(&isa)
            .ok_or_else(|| missing(&format!("stop for {isa}")))?;
        let flag = self.runtime_symbol("__popcorn_migrate_request")?;
        let mut window = Vec::new();
        for f in ["popcorn_migrate_point", "__popcorn_migrate_stop"] {
            let s = self.symbol(f)?;
            let size = s.sizes.get(&isa).copied().unwrap_or(0);
            window.push((s.address, s.address + size));
        }
        Ok(MigrationPoint {
            request_flag: flag,
            stop_insn: stop.address,
            resume_pc: stop.resume_pc,
            window,
        })
    }

    /// Memory that moves with the program: the writable data window and
    /// the heap arena `(start, length)`; only the arena's used part (its
    /// allocator's high-water mark at `arena + 8`) is read.
    pub fn data_window(&self) -> (u64, u64) {
        let w = &self.meta.layout.data;
        (w.start, w.end.saturating_sub(w.start))
    }

    /// `(address, size)` of the heap arena.
    pub fn arena(&self) -> (u64, u64) {
        (self.meta.arena.address, self.meta.arena.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_membership() {
        let p = MigrationPoint {
            request_flag: 0x10,
            stop_insn: 0x2004,
            resume_pc: 0x2005,
            window: vec![(0x1000, 0x1040), (0x2000, 0x2010)],
        };
        assert!(p.in_window(0x1000));
        assert!(p.in_window(0x103f));
        assert!(!p.in_window(0x1040));
        assert!(p.in_window(0x2004));
        assert!(!p.in_window(0x2010));
        assert!(!p.in_window(0));
    }

    #[test]
    fn metadata_next_to_either_executable() {
        assert_eq!(
            metadata_path(Path::new("/a/b/app.x86_64")),
            Some(PathBuf::from("/a/b/app.popcorn.json"))
        );
        assert_eq!(
            metadata_path(Path::new("app.aarch64")),
            Some(PathBuf::from("app.popcorn.json"))
        );
        assert_eq!(metadata_path(Path::new("/bin/sleep")), None);
    }

    #[test]
    fn reads_what_popcorn_build_writes() {
        let json = r#"{"format":"popcorn-build/1","app":"app",
          "binaries":{"aarch64":"app.aarch64","x86_64":"app.x86_64"},
          "layout":{"page_size":65536,"text":{"start":1,"end":2},"rodata":{"start":3,"end":4},"data":{"start":4096,"end":4296}},
          "arena":{"address":412316860416,"size":1073741824},
          "runtime":{"symbols":{"__popcorn_migrate_request":4200},
            "stop":{"aarch64":{"address":100,"instruction":"brk #0","signal":"SIGTRAP","resume_pc":104},
                    "x86_64":{"address":101,"instruction":"int3","signal":"SIGTRAP","resume_pc":102}}},
          "symbols":[{"name":"main","kind":"function","address":50,"size":8,"sizes":{"x86_64":6,"aarch64":8}},
            {"name":"popcorn_migrate_point","address":200,"sizes":{"x86_64":42,"aarch64":72}},
            {"name":"__popcorn_migrate_stop","address":96,"sizes":{"x86_64":8,"aarch64":12}}],
          "call_sites":[]}"#;
        let dir = std::env::temp_dir().join(format!("popcorn-app-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = dir.join("app.popcorn.json");
        std::fs::write(&meta, json).unwrap();
        let app = App::load(&meta).unwrap();
        assert_eq!(app.main().unwrap(), 50);
        assert_eq!(app.data_window(), (4096, 200));
        assert_eq!(app.arena(), (0x6000000000, 1 << 30));
        let p = app.migration_point(Isa::X86_64).unwrap();
        assert_eq!((p.request_flag, p.stop_insn, p.resume_pc), (4200, 101, 102));
        assert_eq!(p.window, vec![(200, 242), (96, 104)]);
        let p = app.migration_point(Isa::Aarch64).unwrap();
        assert_eq!(p.window, vec![(200, 272), (96, 108)]);
        assert!(app.binary(Isa::X86_64).unwrap_err().contains("missing"));
        std::fs::write(&meta, json.replace("popcorn-build/1", "popcorn-build/9")).unwrap();
        assert!(App::load(&meta).unwrap_err().contains("rebuild"));
        std::fs::write(&meta, "{}").unwrap();
        assert!(App::load(&meta)
            .unwrap_err()
            .contains("not popcorn build metadata"));
        assert!(App::for_executable(&dir.join("other.x86_64"))
            .unwrap_err()
            .contains("was not built with `popcorn build`"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

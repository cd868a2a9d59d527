//! `popcorn build SRC.c… -o APP`: builds a C program for x86_64 and aarch64
//! with every function, global and string literal at the same address in
//! both executables, links the popcorn runtime (migration points, heap
//! arena), rejects call sites the translator cannot handle, and writes
//! `APP.popcorn.json` for the agent and the translator.
//!
//! Steps: compile to assembly (both ISAs) → check → give string literals
//! their own sections → assemble → read the objects' per-symbol sections →
//! common layout → rename the sections (objcopy) → link with
//! `--section-start` → verify the addresses in both executables → metadata.

pub mod asm;
pub mod callsites;
pub mod checker;
pub mod layout;
pub mod metadata;
pub mod runtime;
pub mod strings;
pub mod symbols;
pub mod toolchain;

use anyhow::{bail, Context, Result};
use layout::{Isa, Layout, SymKind};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use toolchain::Toolchain;

/// Start of the text window (64 MiB); read-only and writable data follow on
/// their own pages. Close enough to libc (at 0x400000) for aarch64's `bl`
/// (±128 MiB), so the linker adds no veneers that would move sections, and
/// far enough above it for any static libc image.
pub const TEXT_BASE: u64 = 0x400_0000;
/// Window alignment: 64 KiB, the largest page size of either ISA.
pub const PAGE_SIZE: u64 = 0x1_0000;

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// C source files.
    #[arg(required_unless_present = "write_runtime")]
    pub sources: Vec<PathBuf>,
    /// Output name: writes OUT.x86_64, OUT.aarch64 and OUT.popcorn.json
    /// (default: the first source's name without .c).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Add an include directory (as gcc -I).
    #[arg(short = 'I', value_name = "DIR")]
    pub include: Vec<PathBuf>,
    /// Define a macro (as gcc -D).
    #[arg(short = 'D', value_name = "NAME[=VALUE]")]
    pub define: Vec<String>,
    /// Link a library (as gcc -l), e.g. -l m.
    #[arg(short = 'l', value_name = "LIB")]
    pub libs: Vec<String>,
    /// Check every call site, not only those on a path to a migration point.
    #[arg(long)]
    pub check_all_calls: bool,
    /// Only write the runtime (popcorn.h, popcorn_rt.c) into DIR, e.g. for
    /// an editor's include path.
    #[arg(long, value_name = "DIR")]
    pub write_runtime: Option<PathBuf>,
    /// Keep the intermediate files (assembly, objects) in OUT.popcorn-build/.
    #[arg(long)]
    pub keep: bool,
}

/// One compilation unit: a user source or the runtime.
struct Unit {
    /// As the user wrote it (what messages show).
    display: String,
    path: PathBuf,
}

/// Per-ISA file names for unit `i`.
fn unit_file(work: &Path, isa: Isa, i: usize, ext: &str) -> PathBuf {
    work.join(isa.name()).join(format!("u{i}.{ext}"))
}

/// The output section a pinned section becomes (unique per object, and
/// outside every pattern of the default linker script).
fn output_section(object: usize, name: &str) -> String {
    format!(".pc{object}{name}")
}

pub fn run(args: BuildArgs) -> Result<i32> {
    if let Some(dir) = &args.write_runtime {
        runtime::write(dir).with_context(|| format!("write the runtime to {}", dir.display()))?;
        println!(
            "wrote {} and {} to {}",
            runtime::HEADER_NAME,
            runtime::SOURCE_NAME,
            dir.display()
        );
        return Ok(0);
    }
    for s in &args.sources {
        if !s.is_file() {
            bail!("no such source file: {}", s.display());
        }
    }
    let output = match &args.output {
        Some(o) => o.clone(),
        None => {
            let first = &args.sources[0];
            first.with_extension("")
        }
    };
    let app = output
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .context("the output name (-o) must name a file")?;
    let with_suffix = |suffix: &str| {
        let mut s = output.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    let work = with_suffix(".popcorn-build");

    let tools = [
        Toolchain::find(Isa::X86_64)?,
        Toolchain::find(Isa::Aarch64)?,
    ];
    let version = |t: &Toolchain| t.cc_version.rsplit(' ').next().unwrap_or("").to_owned();
    if version(&tools[0]) != version(&tools[1]) {
        eprintln!(
            "popcorn build: warning: different compilers ({} / {}); the builds may not match",
            tools[0].cc_version, tools[1].cc_version
        );
    }

    let _ = std::fs::remove_dir_all(&work);
    let rt_dir = work.join("runtime");
    runtime::write(&rt_dir)
        .with_context(|| format!("write the runtime to {}", rt_dir.display()))?;
    for isa in Isa::ALL {
        std::fs::create_dir_all(work.join(isa.name()))
            .with_context(|| format!("create {}", work.display()))?;
    }
    let mut units: Vec<Unit> = args
        .sources
        .iter()
        .map(|p| Unit {
            display: p.display().to_string(),
            path: p.clone(),
        })
        .collect();
    units.push(Unit {
        display: format!("{} (popcorn runtime)", runtime::SOURCE_NAME),
        path: rt_dir.join(runtime::SOURCE_NAME),
    });

    let result = build(&args, &tools, &units, &work, &rt_dir, &output, &app);
    if !args.keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    let summary = result?;
    println!("{summary}");
    Ok(0)
}

fn user_flags(args: &BuildArgs, rt_dir: &Path) -> Vec<String> {
    let mut f = Vec::new();
    for d in &args.define {
        f.push(format!("-D{d}"));
    }
    for i in &args.include {
        f.push(format!("-I{}", i.display()));
    }
    f.push(format!("-I{}", rt_dir.display()));
    f
}

fn compile_flags(isa: Isa) -> Vec<String> {
    toolchain::COMMON_FLAGS
        .iter()
        .chain(toolchain::isa_flags(isa))
        .map(|s| (*s).to_owned())
        .collect()
}

/// Compiles every unit to assembly for one ISA; returns the warnings.
fn compile_isa(tc: &Toolchain, units: &[Unit], work: &Path, user: &[String]) -> Result<String> {
    let mut warnings = String::new();
    for (i, u) in units.iter().enumerate() {
        let mut a: Vec<String> = compile_flags(tc.isa);
        a.extend(user.iter().cloned());
        a.push("-S".into());
        a.push("-o".into());
        a.push(unit_file(work, tc.isa, i, "s").display().to_string());
        a.push(u.path.display().to_string());
        let w = tc.run(&tc.cc, &a, &format!("compiling {}", u.display))?;
        warnings.push_str(&w);
    }
    Ok(warnings)
}

/// How `.file` paths of unit `u` are shown: the unit's own path as the
/// user wrote it (or as the runtime), others as they are.
fn display_for(u: &Unit) -> impl Fn(&str) -> String + '_ {
    let shown = u.path.display().to_string();
    move |f: &str| {
        if f == shown {
            u.display.clone()
        } else {
            f.to_owned()
        }
    }
}

fn read_text(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))
}

#[allow(clippy::too_many_arguments)]
fn build(
    args: &BuildArgs,
    tools: &[Toolchain; 2],
    units: &[Unit],
    work: &Path,
    rt_dir: &Path,
    output: &Path,
    app: &str,
) -> Result<String> {
    let user = user_flags(args, rt_dir);

    // 1. Compile to assembly, both ISAs at once.
    let results: Vec<Result<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = tools
            .iter()
            .map(|tc| s.spawn(|| compile_isa(tc, units, work, &user)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("compiler thread panicked"))
            })
            .collect()
    });
    let mut warned = String::new();
    for r in results {
        let w = r?;
        if !w.trim().is_empty() && w != warned {
            eprint!("{w}");
            warned = w;
        }
    }

    // 2. The checker, on both ISAs' assembly.
    let mut asm: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    let mut findings = Vec::new();
    let mut calls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dynamic_frames: Vec<(String, u32, String)> = Vec::new();
    for tc in tools {
        for (i, u) in units.iter().enumerate() {
            let text = read_text(&unit_file(work, tc.isa, i, "s"))?;
            let a = checker::check(tc.isa, &text, &display_for(u));
            findings.extend(a.findings);
            for d in a.dynamic_frames {
                if !dynamic_frames.contains(&d) {
                    dynamic_frames.push(d);
                }
            }
            for (f, cs) in a.calls {
                calls.entry(f).or_default().extend(cs);
            }
            asm[tc.isa.index()].push(text);
        }
    }
    // gcc numbers static locals (`count.0`) per file: both builds must agree.
    for (i, u) in units.iter().enumerate() {
        let ux = checker::static_local_users(&asm[0][i]);
        let ua = checker::static_local_users(&asm[1][i]);
        if ux != ua {
            bail!(
                "{}: the two compilers number static local variables differently \
                 (x86_64: {ux:?}, aarch64: {ua:?}); use the same gcc version for both ISAs",
                u.display
            );
        }
    }
    let reach = checker::reaching(&calls, runtime::MIGRATION_ROOTS);
    if !args.check_all_calls {
        findings.retain(|f| reach.contains(&f.callee));
    }
    if !args.check_all_calls {
        dynamic_frames.retain(|(_, _, f)| reach.contains(f));
    }
    if !findings.is_empty() || !dynamic_frames.is_empty() {
        let mut lines = checker::report(&findings);
        for (file, line, function) in &dynamic_frames {
            lines.push(format!(
                "{file}:{line}: in function {function}: the frame grows by a run-time amount \
                 (alloca or a variable-length array), which cannot be translated; use malloc instead"
            ));
        }
        for l in &lines {
            eprintln!("{l}");
        }
        bail!(
            "{} place{} in the program cannot be migrated (see above); nothing was built",
            lines.len(),
            if lines.len() == 1 { "" } else { "s" }
        );
    }

    // 3. String literals into their own sections, labels at the return
    // addresses of calls that can be suspended; assemble.
    let mut site_pairs: Vec<(usize, callsites::Pair)> = Vec::new();
    let mut site_errors = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let lx = strings::find(&asm[0][i]);
        let la = strings::find(&asm[1][i]);
        let maps = strings::pair(&lx, &la);
        let mut sites: [Vec<callsites::Site>; 2] = [Vec::new(), Vec::new()];
        for tc in tools {
            let k = tc.isa.index();
            let rewritten = strings::rewrite(&asm[k][i], &maps[k]);
            let (rewritten, s) =
                callsites::annotate(tc.isa, &rewritten, i, &reach, &display_for(u));
            sites[k] = s;
            let s = unit_file(work, tc.isa, i, "pc.s");
            std::fs::write(&s, rewritten).with_context(|| format!("write {}", s.display()))?;
            let o = unit_file(work, tc.isa, i, "o");
            let a: Vec<String> = vec![
                "-c".into(),
                "-o".into(),
                o.display().to_string(),
                s.display().to_string(),
            ];
            tc.run(&tc.cc, &a, &format!("assembling {}", u.display))?;
        }
        match callsites::pair(&sites[0], &sites[1]) {
            Ok(p) => site_pairs.extend(p.into_iter().map(|p| (i, p))),
            Err(e) => site_errors.extend(e),
        }
    }
    if !site_errors.is_empty() {
        for e in &site_errors {
            eprintln!("{e}");
        }
        bail!("the x86_64 and aarch64 builds have different call sites (see above)");
    }

    // 4. Per-symbol sections of both builds, paired.
    let mut sections: [Vec<layout::Section>; 2] = [Vec::new(), Vec::new()];
    for tc in tools {
        for (i, u) in units.iter().enumerate() {
            let o = unit_file(work, tc.isa, i, "o");
            sections[tc.isa.index()].extend(symbols::read_object(&o, i, &u.display)?);
        }
    }
    let items = match layout::pair(&sections[0], &sections[1]) {
        Ok(items) => items,
        Err(errors) => {
            for e in &errors {
                match e {
                    layout::Mismatch::OnlyIn { object, .. } => {
                        eprintln!("{}: {e}", units[*object].display)
                    }
                    _ => eprintln!("{e}"),
                }
            }
            bail!("the x86_64 and aarch64 builds define different symbols (see above)");
        }
    };

    // 5. One address per section.
    let layout = layout::compute(&items, TEXT_BASE, PAGE_SIZE, runtime::ARENA_BASE)?;

    // 6. Rename, link, verify.
    let mut linked = Vec::new();
    for tc in tools {
        let exe = with_ext(output, tc.isa.name());
        link(tc, units.len(), work, &layout, &exe, &args.libs)?;
        let l = symbols::read_linked(&exe, callsites::LABEL_PREFIX)?;
        verify(tc.isa, &exe, &layout, &l)?;
        // The return-address labels were only for us.
        let strip = [
            "--wildcard".to_owned(),
            format!("--strip-symbol={}*", callsites::LABEL_PREFIX),
            exe.display().to_string(),
        ];
        tc.run(&tc.objcopy, &strip, "objcopy --strip-symbol")?;
        linked.push(l);
    }

    // 7. Types that cannot cross (long double, va_list, big structs by value).
    let x86_exe = with_ext(output, Isa::X86_64.name());
    let suspendable = |f: &str| {
        args.check_all_calls || (reach.contains(f) && !runtime::MIGRATION_ROOTS.contains(&f))
    };
    let (warnings, problems): (Vec<_>, Vec<_>) =
        popcorn_isa::typecheck::check(&x86_exe, &suspendable)?
            .into_iter()
            .partition(|p| p.is_warning());
    for w in &warnings {
        eprintln!("{w}");
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        for isa in Isa::ALL {
            let _ = std::fs::remove_file(with_ext(output, isa.name()));
        }
        bail!(
            "{} declaration{} cannot be migrated (see above); nothing was built",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
    }

    // 8. Runtime symbols and metadata.
    let mut rt_symbols = BTreeMap::new();
    for name in runtime::SYMBOLS {
        let x = linked[0].globals.get(*name);
        let a = linked[1].globals.get(*name);
        match (x, a) {
            (Some(x), Some(a)) if x == a => {
                rt_symbols.insert((*name).to_owned(), *x);
            }
            _ => bail!(
                "runtime symbol {name} is not at one address in both executables ({x:?}, {a:?})"
            ),
        }
    }
    let mut stop = BTreeMap::new();
    for tc in tools {
        let l = &linked[tc.isa.index()];
        let address = *l
            .globals
            .get(runtime::STOP_LABEL)
            .with_context(|| format!("{} has no {}", tc.isa, runtime::STOP_LABEL))?;
        let (instruction, resume_pc) = match tc.isa {
            Isa::X86_64 => ("int3", address + 1),
            Isa::Aarch64 => ("brk #0", address + 4),
        };
        stop.insert(
            tc.isa.name(),
            metadata::Stop {
                address,
                instruction,
                signal: "SIGTRAP",
                resume_pc,
            },
        );
    }
    let mut call_sites = Vec::with_capacity(site_pairs.len());
    for (unit, p) in &site_pairs {
        let x = linked[0].labels.get(&p.x86.label);
        let a = linked[1].labels.get(&p.a64.label);
        let (Some(x), Some(a)) = (x, a) else {
            bail!("label {} missing from an executable", p.x86.label);
        };
        call_sites.push(metadata::CallSite {
            function: p.x86.key.caller.clone(),
            source: *unit,
            callee: p.x86.key.callee.clone(),
            ordinal: p.x86.key.ordinal,
            file: p.x86.file.clone(),
            line: p.x86.key.line,
            column: p.x86.key.column,
            return_address: metadata::IsaAddresses {
                x86_64: *x,
                aarch64: *a,
            },
        });
    }
    let mut meta = metadata_for(args, tools, units, &layout, app, rt_symbols, stop, &user);
    meta.call_sites = call_sites;
    let json_path = with_ext(output, "popcorn.json");
    let json = serde_json::to_string_pretty(&meta)?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;

    let count = |k: SymKind| meta.symbols.iter().filter(|s| s.kind == k).count();
    Ok(format!(
        "popcorn build: {app}.x86_64 + {app}.aarch64: {} functions, {} variables, {} strings at common addresses \
         (text {:#x}-{:#x}, rodata {:#x}-{:#x}, data {:#x}-{:#x}; heap arena {:#x}); metadata {}",
        count(SymKind::Function),
        count(SymKind::Object),
        count(SymKind::String),
        layout.text.start,
        layout.text.end,
        layout.rodata.start,
        layout.rodata.end,
        layout.data.start,
        layout.data.end,
        runtime::ARENA_BASE,
        json_path.display()
    ))
}

fn with_ext(output: &Path, ext: &str) -> PathBuf {
    let mut s = output.to_path_buf().into_os_string();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Renames every pinned section of every object (objcopy) and links with
/// one `--section-start` per section (through a response file).
fn link(
    tc: &Toolchain,
    n_units: usize,
    work: &Path,
    layout: &Layout,
    exe: &Path,
    libs: &[String],
) -> Result<()> {
    let mut objects = Vec::new();
    for i in 0..n_units {
        let input = unit_file(work, tc.isa, i, "o");
        let out = unit_file(work, tc.isa, i, "pinned.o");
        let mut a: Vec<String> = Vec::new();
        for p in layout.placed.iter().filter(|p| p.item.object == i) {
            a.push("--rename-section".into());
            a.push(format!(
                "{}={}",
                p.item.name,
                output_section(i, &p.item.name)
            ));
        }
        a.push(input.display().to_string());
        a.push(out.display().to_string());
        tc.run(&tc.objcopy, &a, "objcopy")?;
        objects.push(out);
    }
    let mut rsp = String::new();
    for f in toolchain::LINK_FLAGS {
        rsp.push_str(f);
        rsp.push('\n');
    }
    rsp.push_str(&format!("-o\n{}\n", quote(&exe.display().to_string())));
    for o in &objects {
        rsp.push_str(&quote(&o.display().to_string()));
        rsp.push('\n');
    }
    for p in &layout.placed {
        rsp.push_str(&format!(
            "-Wl,--section-start={}={:#x}\n",
            output_section(p.item.object, &p.item.name),
            p.address
        ));
    }
    for l in libs {
        rsp.push_str(&format!("-l{l}\n"));
    }
    let rsp_path = work.join(tc.isa.name()).join("link.rsp");
    std::fs::write(&rsp_path, rsp).with_context(|| format!("write {}", rsp_path.display()))?;
    match tc.run(&tc.cc, [format!("@{}", rsp_path.display())], "linking") {
        Ok(_) => Ok(()),
        Err(toolchain::ToolError::Failed { output, .. })
            if output.contains("cannot find -lc") || output.contains("crt1.o") =>
        {
            let package = match tc.isa {
                Isa::X86_64 => "libc6-dev",
                Isa::Aarch64 => "libc6-dev-arm64-cross",
            };
            bail!(
                "linking failed for {}: no static C library; install it with: apt-get install {package}\n{output}",
                tc.isa
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// Quotes a path for a gcc response file.
fn quote(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_owned()
    }
}

/// Every pinned section landed at its address; every global symbol in it too.
fn verify(isa: Isa, exe: &Path, layout: &Layout, l: &symbols::Linked) -> Result<()> {
    for p in &layout.placed {
        let out = output_section(p.item.object, &p.item.name);
        match l.sections.get(&out) {
            Some((addr, _)) if *addr == p.address => {}
            Some((addr, _)) => bail!(
                "{}: section {out} is at {addr:#x}, not {:#x} ({isa})",
                exe.display(),
                p.address
            ),
            None if p.item.sizes[isa.index()] == 0 => {}
            None => bail!("{}: section {out} is missing ({isa})", exe.display()),
        }
        for s in p
            .item
            .symbols
            .iter()
            .filter(|s| s.global && s.kind != SymKind::String)
        {
            let want = p.address + s.offset;
            if let Some(got) = l.globals.get(&s.name) {
                if *got != want {
                    bail!(
                        "{}: {} is at {got:#x}, not {want:#x} ({isa})",
                        exe.display(),
                        s.name
                    );
                }
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn metadata_for(
    args: &BuildArgs,
    tools: &[Toolchain; 2],
    units: &[Unit],
    layout: &Layout,
    app: &str,
    rt_symbols: BTreeMap<String, u64>,
    stop: BTreeMap<&'static str, metadata::Stop>,
    user: &[String],
) -> metadata::Metadata {
    let mut user_shown: Vec<String> = user
        .iter()
        .filter(|f| {
            !f.starts_with("-I")
                || args
                    .include
                    .iter()
                    .any(|i| **f == format!("-I{}", i.display()))
        })
        .cloned()
        .collect();
    user_shown.extend(args.libs.iter().map(|l| format!("-l{l}")));
    let symbols = layout
        .placed
        .iter()
        .flat_map(|p| {
            p.item.symbols.iter().map(move |s| metadata::Symbol {
                name: s.name.clone(),
                kind: s.kind,
                global: s.global,
                source: p.item.object,
                region: p.item.region,
                section: p.item.name.clone(),
                output_section: output_section(p.item.object, &p.item.name),
                address: p.address + s.offset,
                size: if p.item.symbols.len() == 1 {
                    p.size
                } else {
                    s.size
                },
                sizes: metadata::IsaSizes {
                    x86_64: p.item.sizes[0],
                    aarch64: p.item.sizes[1],
                },
            })
        })
        .collect();
    metadata::Metadata {
        format: metadata::FORMAT,
        app: app.to_owned(),
        binaries: Isa::ALL
            .iter()
            .map(|i| (i.name(), format!("{app}.{}", i.name())))
            .collect(),
        sources: units.iter().map(|u| u.display.clone()).collect(),
        flags: metadata::Flags {
            compile: toolchain::COMMON_FLAGS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            link: toolchain::LINK_FLAGS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            x86_64: toolchain::isa_flags(Isa::X86_64)
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            aarch64: toolchain::isa_flags(Isa::Aarch64)
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            user: user_shown,
        },
        tools: tools
            .iter()
            .map(|t| {
                (
                    t.isa.name(),
                    metadata::Tools {
                        cc: t.cc.display().to_string(),
                        cc_version: t.cc_version.clone(),
                        ld_version: t.ld_version.clone(),
                    },
                )
            })
            .collect(),
        layout: metadata::LayoutInfo {
            page_size: PAGE_SIZE,
            text: layout.text,
            rodata: layout.rodata,
            data: layout.data,
        },
        arena: metadata::Arena {
            address: runtime::ARENA_BASE,
            size: runtime::ARENA_SIZE,
        },
        runtime: metadata::Runtime {
            symbols: rt_symbols,
            stop,
        },
        symbols,
        call_sites: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sections_are_unique_per_object() {
        assert_eq!(output_section(0, ".text.main"), ".pc0.text.main");
        assert_ne!(output_section(1, ".text.f"), output_section(11, ".text.f"));
    }

    #[test]
    fn response_file_quoting() {
        assert_eq!(quote("/a/b.o"), "/a/b.o");
        assert_eq!(quote("/a b/c\"d"), "\"/a b/c\\\"d\"");
    }

    #[test]
    fn exe_names() {
        assert_eq!(
            with_ext(Path::new("/x/app"), "x86_64"),
            PathBuf::from("/x/app.x86_64")
        );
        assert_eq!(
            with_ext(Path::new("app.v2"), "popcorn.json"),
            PathBuf::from("app.v2.popcorn.json")
        );
    }
}

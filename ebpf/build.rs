//! Compiles every `src/bpf/*.bpf.c` into `$OUT_DIR/<name>.bpf.o` with clang
//! (`-target bpf`); the library embeds the objects with `include_bytes`.
//! Needs Debian `clang` and `libbpf-dev` (for `<bpf/bpf_helpers.h>`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let clang = std::env::var("BPF_CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=BPF_CLANG");
    println!("cargo:rerun-if-changed=src/bpf");
    // clang -target bpf does not search the multiarch folder, where
    // <asm/types.h> lives on Debian.
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let target_arch = match arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => other,
    };
    let mut sources: Vec<PathBuf> = std::fs::read_dir("src/bpf")
        .expect("read src/bpf")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for src in sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let name = src.file_name().expect("file name").to_string_lossy();
        let obj = out.join(name.replace(".bpf.c", ".bpf.o"));
        compile(&clang, &src, &obj, &multiarch, target_arch);
    }
}

fn compile(clang: &str, src: &Path, obj: &Path, multiarch: &str, target_arch: &str) {
    let status = Command::new(clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{target_arch}"))
        .arg(format!("-I{multiarch}"))
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {clang}: {e} (apt-get install clang libbpf-dev, or set BPF_CLANG)")
        });
    assert!(
        status.success(),
        "{clang} failed on {} (is libbpf-dev installed?)",
        src.display()
    );
}

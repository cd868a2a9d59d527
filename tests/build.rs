//! Compiles every `programs/*.c` into `$OUT_DIR/<name>` with gcc, so tests
//! can run them through `popcorn_tests::program("<name>")`.

use std::path::Path;
use std::process::Command;

fn main() {
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let dir = Path::new("programs");
    println!("cargo:rerun-if-changed=programs");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut sources: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    for src in sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let name = src
            .file_stem()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let bin = Path::new(&out).join(&name);
        let status = Command::new("gcc")
            .args(["-O1", "-g", "-pthread", "-Wall", "-o"])
            .arg(&bin)
            .arg(&src)
            .status()
            .expect("run gcc (is it installed?)");
        assert!(status.success(), "gcc failed on {}", src.display());
    }
}

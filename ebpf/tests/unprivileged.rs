//! Without privilege the tracer refuses to load with an "unavailable" error
//! (so the agent can run without tracing and say why). The test re-runs
//! itself as user `nobody`.

use std::os::unix::process::CommandExt;
use std::process::Command;

use popcorn_ebpf::Tracer;

const ROLE: &str = "POPCORN_EBPF_TEST_UNPRIVILEGED";
const NOBODY: u32 = 65534;

#[test]
fn loading_without_privilege_is_reported_as_unavailable() {
    if std::env::var_os(ROLE).is_some() {
        // The child, running as nobody.
        match Tracer::load() {
            Ok(_) => panic!("loaded eBPF without privilege"),
            Err(e) => {
                assert!(e.is_unavailable(), "not reported as unavailable: {e:?}");
                println!("UNAVAILABLE: {e}");
            }
        }
        return;
    }
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "loading_without_privilege_is_reported_as_unavailable",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, "1")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("re-run the test as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("UNAVAILABLE: ").map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no verdict from the child: {stdout}"));
    assert!(line.contains("CAP_BPF"), "{line}");
    eprintln!("{line}");
}

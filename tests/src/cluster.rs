//! A local cluster for one test: `popcorn cluster up` on creation, `down`
//! on drop (also when the test panics). Each test uses its own cluster name,
//! so test binaries can run side by side.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestCluster {
    name: String,
    dir: PathBuf,
    bin_dir: PathBuf,
}

/// target/debug (or release), where cargo put `popcorn` and `popcorn-agent`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> → target/debug
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .expect("test executable in target/<profile>/deps")
}

impl TestCluster {
    pub fn up(name: &str, nodes: usize) -> Result<TestCluster> {
        let bin_dir = bin_dir();
        for b in ["popcorn", "popcorn-agent"] {
            if !bin_dir.join(b).exists() {
                bail!("{} is missing: run `cargo build --workspace` before the tests", bin_dir.join(b).display());
            }
        }
        let c = TestCluster {
            name: format!("t{name}"),
            dir: PathBuf::from(format!("/run/popcorn-test-{name}")),
            bin_dir,
        };
        // Leftovers of an earlier crashed run.
        c.cluster_cmd("down", &[]).output()?;
        let out = c.cluster_cmd("up", &["--nodes", &nodes.to_string()]).output()?;
        if !out.status.success() {
            bail!("cluster up failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(c)
    }

    fn cluster_cmd(&self, verb: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin("popcorn"));
        cmd.args(["cluster", verb, "--name", &self.name, "--dir"])
            .arg(&self.dir)
            .args(extra);
        cmd
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("cluster.toml")
    }

    /// `popcorn --config … --node NODE ARGS` from the host (the control
    /// socket is visible from every namespace).
    pub fn popcorn_direct(&self, node: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin("popcorn"));
        cmd.arg("--config")
            .arg(self.config_path())
            .args(["--node", node])
            .args(args)
            .env_remove("POPCORN_NODE")
            .env_remove("POPCORN_CONFIG");
        cmd
    }

    /// `popcorn ARGS` run inside the node's namespaces.
    pub fn popcorn(&self, node: &str, args: &[&str]) -> Command {
        let mut cmd = self.cluster_cmd("exec", &[node, "--"]);
        cmd.arg(self.bin("popcorn")).args(args);
        cmd
    }

    /// Host PID of the node's agent.
    pub fn agent_pid(&self, node: &str) -> Result<i32> {
        let socket = self.dir.join("run").join(format!("{node}.sock"));
        for entry in std::fs::read_dir("/proc")? {
            let Ok(pid) = entry?.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let is_agent = args.first().is_some_and(|a| a.ends_with(b"popcorn-agent"))
                && args.windows(2).any(|w| w[0] == b"--node" && w[1] == node.as_bytes())
                && args.iter().any(|a| a == &self.config_path().to_string_lossy().as_bytes());
            // The init (PID 1 in the node) runs the same command line; the
            // agent is its child.
            if is_agent && ns_pid(pid) != Some(1) {
                return Ok(pid);
            }
        }
        bail!("no agent for node {node} (socket {})", socket.display())
    }

    /// SIGKILLs the node's agent and waits until its socket stops answering.
    pub fn kill_agent(&self, node: &str) {
        if let Ok(pid) = self.agent_pid(node) {
            // SAFETY: plain kill(2) of a process we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let socket = self.dir.join("run").join(format!("{node}.sock"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            assert!(std::time::Instant::now() < deadline, "agent {node} did not die");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Starts the node's agent again (`popcorn cluster restart`).
    pub fn start_agent(&self, node: &str) -> Result<()> {
        let out = self.cluster_cmd("restart", &[node]).output()?;
        if !out.status.success() {
            bail!("restart {node}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Host PID of the process that node `node` knows as `ns_pid`.
    pub fn host_pid(&self, node: &str, ns_pid_in_node: &str) -> String {
        let agent = self.agent_pid(node).expect("agent running");
        let ns = std::fs::read_link(format!("/proc/{agent}/ns/pid")).expect("agent pid ns");
        let found = (|| -> Result<Option<String>> {
            for entry in std::fs::read_dir("/proc")? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if name.parse::<i32>().is_err() {
                    continue;
                }
                if std::fs::read_link(format!("/proc/{name}/ns/pid")).ok().as_ref() != Some(&ns) {
                    continue;
                }
                if ns_pid(name.parse().unwrap_or(0)) == ns_pid_in_node.trim().parse().ok() {
                    return Ok(Some(name));
                }
            }
            Ok(None)
        })()
        .context("scanning /proc");
        match found {
            Ok(Some(p)) => p,
            other => panic!("no host pid for {node}:{ns_pid_in_node}: {other:?}"),
        }
    }
}

/// A process's PID in its innermost PID namespace.
pub fn ns_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        match self.cluster_cmd("down", &[]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("cluster down failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("cluster down failed: {e}"),
        }
    }
}

//! A local cluster for one test: `popcorn cluster up` on creation, `down`
//! on drop (also when the test panics). Each test uses its own cluster name,
//! so tests and test binaries can run side by side.
//!
//! The tests run the built `popcorn` and `popcorn-agent` binaries from the
//! cargo target directory: run `cargo build --workspace` before
//! `cargo test` (`make test` does), and run the tests as root.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct TestCluster {
    name: String,
    dir: PathBuf,
    bin_dir: PathBuf,
}

/// target/debug (or release), where cargo put `popcorn` and `popcorn-agent`:
/// the parent of target/<profile>/deps/, which holds the test executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("test executable in a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_owned()
    } else {
        dir.to_owned()
    }
}

/// The cluster name the harness uses for a test name.
pub fn cluster_name(test: &str) -> String {
    format!("t{test}")
}

/// The directory of a test cluster.
pub fn cluster_dir(test: &str) -> PathBuf {
    PathBuf::from(format!("/run/popcorn-test-{test}"))
}

/// The network namespace of a node (see cli/src/cluster/local.rs).
pub fn netns_name(cluster: &str, node: &str) -> String {
    format!("pc-{cluster}-{node}")
}

impl TestCluster {
    /// `popcorn cluster up --name t<NAME> --dir /run/popcorn-test-<NAME>
    /// --nodes N`, after removing what a crashed earlier run left. NAME: 1-9
    /// of a-z, 0-9, unique per test.
    pub fn up(name: &str, nodes: usize) -> Result<TestCluster> {
        TestCluster::up_with(name, nodes, &[])
    }

    /// [`TestCluster::up`] with more `cluster up` arguments (`--isa c=aarch64`).
    pub fn up_with(name: &str, nodes: usize, extra: &[&str]) -> Result<TestCluster> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the cluster tests create namespaces: run them as root");
        }
        let bin_dir = bin_dir();
        for b in ["popcorn", "popcorn-agent"] {
            if !bin_dir.join(b).exists() {
                bail!(
                    "{} is missing: run `cargo build --workspace` before the tests",
                    bin_dir.join(b).display()
                );
            }
        }
        let c = TestCluster {
            name: cluster_name(name),
            dir: cluster_dir(name),
            bin_dir,
        };
        let out = c.cluster_cmd("down", &[]).output()?;
        if !out.status.success() {
            bail!(
                "cleaning up an earlier cluster {} failed: {}",
                c.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = c
            .cluster_cmd("up", &[&["--nodes", &nodes.to_string()], extra].concat())
            .output()?;
        if !out.status.success() {
            // `up` removes what it created when it fails; no Drop needed.
            bail!(
                "cluster up failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        Ok(c)
    }

    /// `popcorn cluster VERB --name … --dir … EXTRA`.
    pub fn cluster_cmd(&self, verb: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin("popcorn"));
        cmd.args(["cluster", verb, "--name", &self.name, "--dir"])
            .arg(&self.dir)
            .args(extra)
            .env_remove("POPCORN_NODE")
            .env_remove("POPCORN_CONFIG");
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

    pub fn netns(&self, node: &str) -> String {
        netns_name(&self.name, node)
    }

    /// `popcorn --config … --node NODE ARGS` from the host (the control
    /// socket is visible from every namespace; PIDs are the node's).
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

    /// `popcorn ARGS` run inside the node's network, PID and mount
    /// namespaces (`popcorn cluster exec NODE -- popcorn ARGS`).
    pub fn popcorn(&self, node: &str, args: &[&str]) -> Command {
        let mut cmd = self.cluster_cmd("exec", &[node, "--"]);
        cmd.arg(self.bin("popcorn")).args(args);
        cmd
    }

    /// Any command run inside the node's namespaces.
    pub fn exec(&self, node: &str, command: &[&str]) -> Command {
        let mut cmd = self.cluster_cmd("exec", &[node, "--"]);
        cmd.args(command);
        cmd
    }

    /// Host PID of the `unshare` that `up` recorded for the node.
    fn recorded_pid(&self, node: &str) -> Option<i32> {
        let text = std::fs::read(self.dir.join("state.json")).ok()?;
        let state: serde_json::Value = serde_json::from_slice(&text).ok()?;
        state["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["name"] == node)?["pid"]
            .as_i64()
            .map(|p| p as i32)
    }

    fn is_our_agent(&self, pid: i32, node: &str) -> bool {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let config = self.config_path();
        let config = config.to_string_lossy();
        args.first().is_some_and(|a| a.ends_with(b"popcorn-agent"))
            && args
                .windows(2)
                .any(|w| w[0] == b"--node" && w[1] == node.as_bytes())
            && args.iter().any(|a| *a == config.as_bytes())
    }

    /// Host PID of the node's agent. The node's PID 1 is the child of the
    /// recorded `unshare`; when the agent keeps a small init as PID 1, the
    /// agent is that init's child running the same command line.
    pub fn agent_pid(&self, node: &str) -> Result<i32> {
        let candidates: Vec<i32> = match self.recorded_pid(node) {
            Some(unshare) => {
                let mut found = Vec::new();
                for init in children(unshare) {
                    found.extend(children(init));
                    found.push(init);
                }
                found
            }
            // No state file (a "crashed" cluster): scan /proc.
            None => std::fs::read_dir("/proc")?
                .filter_map(|e| e.ok()?.file_name().to_string_lossy().parse().ok())
                .collect(),
        };
        // Prefer the agent proper over its init (PID 1 in the node).
        let agents: Vec<i32> = candidates
            .into_iter()
            .filter(|&p| alive(p) && self.is_our_agent(p, node))
            .collect();
        agents
            .iter()
            .copied()
            .find(|&p| ns_pid(p) != Some(1))
            .or_else(|| agents.first().copied())
            .with_context(|| format!("no running agent for node {node} of cluster {}", self.name))
    }

    /// SIGKILLs the node's agent and waits until its socket stops answering.
    pub fn kill_agent(&self, node: &str) {
        if let Ok(pid) = self.agent_pid(node) {
            // SAFETY: plain kill(2) of a process the cluster started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let socket = self.dir.join("run").join(format!("{node}.sock"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            assert!(Instant::now() < deadline, "agent {node} did not die");
            std::thread::sleep(Duration::from_millis(20));
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

    /// Host PID of the process that node `node` knows as `ns_pid_in_node`.
    pub fn host_pid(&self, node: &str, ns_pid_in_node: &str) -> String {
        let agent = self.agent_pid(node).expect("agent running");
        let ns = std::fs::read_link(format!("/proc/{agent}/ns/pid")).expect("agent pid ns");
        let want: Option<i32> = ns_pid_in_node.trim().parse().ok();
        let found = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_string_lossy().parse::<i32>().ok())
            .find(|&p| {
                std::fs::read_link(format!("/proc/{p}/ns/pid"))
                    .ok()
                    .as_ref()
                    == Some(&ns)
                    && ns_pid(p) == want
            });
        match found {
            Some(p) => p.to_string(),
            None => panic!("no host pid for {node}:{ns_pid_in_node}"),
        }
    }
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
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
            Ok(out) => eprintln!(
                "cluster down {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cluster down {} failed: {e}", self.name),
        }
    }
}

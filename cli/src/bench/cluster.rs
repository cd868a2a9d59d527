//! A temporary local cluster for the benchmarks (`popcorn cluster up` with
//! its own name and directory), removed on drop.

use anyhow::{anyhow, bail, Result};
use popcorn_proto::control::{MigrationReport, NodeStatus};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Cluster {
    pub exe: PathBuf,
    name: String,
    dir: String,
    keep: bool,
}

impl Cluster {
    /// `popcorn cluster up --nodes N EXTRA…` as `name` in `dir`; waits
    /// until node a is linked to every other node.
    pub fn up(
        exe: &Path,
        name: &str,
        dir: &str,
        nodes: usize,
        extra: &[&str],
        keep: bool,
    ) -> Result<Cluster> {
        let c = Cluster {
            exe: exe.to_owned(),
            name: name.to_owned(),
            dir: dir.to_owned(),
            keep,
        };
        let _ = c.cluster(&["down"]).output();
        let n = nodes.to_string();
        let mut args = vec!["up", "--nodes", n.as_str()];
        args.extend_from_slice(extra);
        let out = c.cluster(&args).output()?;
        if !out.status.success() {
            bail!("cluster up: {}", String::from_utf8_lossy(&out.stderr));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status: Vec<NodeStatus> =
                serde_json::from_slice(&c.popcorn("a", &["nodes", "--json"]).output()?.stdout)
                    .unwrap_or_default();
            let up = status.iter().filter(|n| n.rtt_us.is_some()).count();
            if up + 1 == nodes {
                return Ok(c);
            }
            if Instant::now() > deadline {
                bail!("the bench cluster's peer links did not come up");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn cluster(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("cluster")
            .arg(args[0])
            .args(["--name", &self.name, "--dir", &self.dir])
            .args(&args[1..]);
        cmd
    }

    pub fn popcorn(&self, node: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args([
            "--config",
            &format!("{}/cluster.toml", self.dir),
            "--node",
            node,
        ])
        .args(args)
        .env_remove("POPCORN_NODE");
        cmd
    }

    /// A command run inside a node's namespaces.
    pub fn exec(&self, node: &str, args: &[&str]) -> Command {
        let mut cmd = self.cluster(&["exec", node, "--"]);
        cmd.args(args);
        cmd
    }

    /// The node's IP address.
    pub fn address(&self, node: &str) -> Result<String> {
        let nodes: Vec<NodeStatus> =
            serde_json::from_slice(&self.popcorn("a", &["nodes", "--json"]).output()?.stdout)?;
        let n = nodes
            .iter()
            .find(|n| n.name == node)
            .ok_or_else(|| anyhow!("no node {node}"))?;
        Ok(n.address.split(':').next().unwrap_or_default().to_owned())
    }

    /// `popcorn --node FROM migrate PID --to TO --json EXTRA…`.
    pub fn migrate(
        &self,
        from: &str,
        pid: i32,
        to: &str,
        extra: &[&str],
    ) -> Result<MigrationReport> {
        let pid = pid.to_string();
        let mut args = vec!["migrate", pid.as_str(), "--to", to, "--json"];
        args.extend_from_slice(extra);
        let out = self.popcorn(from, &args).output()?;
        if !out.status.success() {
            bail!("migrate: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "the cluster stays up: popcorn cluster down --name {} --dir {}",
                self.name, self.dir
            );
            return;
        }
        let _ = self.cluster(&["down"]).output();
    }
}

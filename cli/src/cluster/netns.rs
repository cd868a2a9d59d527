//! The `ip`, `unshare` and `nsenter` commands the local cluster is built from.

use anyhow::{anyhow, bail, Context, Result};
use std::process::{Command, Stdio};

/// Runs a command, failing with its stderr.
pub fn cmd(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!(
                "`{program}` not found: install it (apt-get install {})",
                package_of(program)
            ),
            _ => anyhow!("cannot run {program}: {e}"),
        })?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn package_of(program: &str) -> &'static str {
    match program {
        "ip" => "iproute2",
        "unshare" | "nsenter" => "util-linux",
        _ => "the package that provides it",
    }
}

pub fn ip(args: &[&str]) -> Result<String> {
    cmd("ip", args)
}

/// Network namespaces whose name starts with `prefix`.
pub fn netns_with_prefix(prefix: &str) -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

/// Host interfaces whose name starts with `prefix`.
pub fn links_with_prefix(prefix: &str) -> Result<Vec<String>> {
    Ok(ip(&["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect())
}

/// Whether a host interface of that name exists.
pub fn link_exists(name: &str) -> Result<bool> {
    Ok(links_with_prefix(name)?.iter().any(|l| l == name))
}

/// Processes inside a network namespace.
pub fn netns_pids(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

pub fn check_tools() -> Result<()> {
    for (tool, args) in [
        ("ip", ["-V"]),
        ("unshare", ["--version"]),
        ("nsenter", ["--version"]),
    ] {
        cmd(tool, &args).context("the local cluster needs iproute2 and util-linux")?;
    }
    Ok(())
}

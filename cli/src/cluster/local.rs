//! Local test clusters: every node is a network namespace (a veth on the
//! cluster's bridge, its own address), a PID namespace and a mount namespace
//! (for its own /proc), with its own agent. Several clusters with different
//! names coexist; everything is named after the cluster so that `down` finds
//! it again, also when the state file is lost.
//!
//! Names, for cluster NAME (1-10 of a-z0-9, so it never contains '-'):
//! - network namespace of node X: `pc-NAME-X`
//! - bridge: `pc-NAME`; host end of node X's veth: `pc-NAME-X` (≤ 15 bytes);
//!   the node's end is `eth0` inside its namespace
//! - subnet `10.77.K.0/24`, K derived from NAME (0 for the default cluster);
//!   the i-th node (1-based) is `10.77.K.(10+i)`

use super::netns::{self, ip};
use super::{init, DEFAULT_NAME};
use anyhow::{anyhow, bail, Context, Result};
use popcorn_proto::config::{ClusterConfig, Isa, NodeConfig, DEFAULT_PEER_PORT};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Most nodes of a local cluster (named a…z).
const MAX_NODES: usize = 26;
/// How long `up` waits for every agent's control socket.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(15);

/// What `up` created, for `down`, `exec` and `restart` (DIR/state.json).
#[derive(Serialize, Deserialize)]
struct State {
    name: String,
    subnet: String,
    bridge: String,
    nodes: Vec<NodeState>,
}

#[derive(Serialize, Deserialize)]
struct NodeState {
    name: String,
    netns: String,
    /// Host end of the node's veth pair (on the bridge).
    veth: String,
    address: String,
    /// Host PID of the `unshare` whose child is the node's PID 1 (the agent).
    pid: i32,
}

pub(super) fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 10
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        bail!(
            "cluster name '{name}' must be 1-10 characters of a-z and 0-9 \
             (it prefixes interface names, which are limited to 15 bytes)"
        );
    }
    Ok(())
}

/// Prefix of every namespace and host interface of a cluster but its bridge.
fn prefix(cluster: &str) -> String {
    format!("pc-{cluster}-")
}

fn netns_name(cluster: &str, node: &str) -> String {
    format!("{}{node}", prefix(cluster))
}

fn veth_name(cluster: &str, node: &str) -> String {
    format!("{}{node}", prefix(cluster))
}

fn bridge_name(cluster: &str) -> String {
    format!("pc-{cluster}")
}

/// The third octet of the cluster's subnet: 0 for the default cluster, else
/// 1-254 from a hash of the name (distinct clusters are on distinct bridges,
/// so even a collision would not mix their traffic).
fn subnet_index(cluster: &str) -> u8 {
    if cluster == DEFAULT_NAME {
        return 0;
    }
    // FNV-1a: stable across builds, unlike std's hasher.
    let h = cluster.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    });
    (h % 254) as u8 + 1
}

fn node_address(cluster: &str, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, subnet_index(cluster), 11 + i as u8)
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("`popcorn cluster {what}` creates namespaces and interfaces: run it as root (sudo)");
    }
    Ok(())
}

pub(super) fn up(count: usize, isas: &[(String, Isa)], name: &str, dir: &Path) -> Result<()> {
    check_name(name)?;
    if !(1..=MAX_NODES).contains(&count) {
        bail!("--nodes must be between 1 and {MAX_NODES}");
    }
    for (node, _) in isas {
        if !(0..count).any(|i| node_name(i) == *node) {
            bail!(
                "--isa {node}=…: the cluster's nodes are {}",
                (0..count).map(node_name).collect::<Vec<_>>().join(", ")
            );
        }
    }
    require_root("up")?;
    netns::check_tools()?;
    let existing = netns::netns_with_prefix(&prefix(name))?;
    let bridge = bridge_name(name);
    if !existing.is_empty() || netns::link_exists(&bridge)? {
        bail!(
            "cluster '{name}' is already up ({}): run `popcorn cluster down --name {name}` first",
            if existing.is_empty() {
                format!("bridge {bridge}")
            } else {
                existing.join(", ")
            }
        );
    }
    let agent = agent_binary()?;
    info!(cluster = name, nodes = count, dir = %dir.display(), agent = %agent.display(), "cluster up");
    let Err(e) = create(count, isas, name, dir, &agent) else {
        return Ok(());
    };
    warn!("cluster up failed; removing what it created");
    match down(name, dir) {
        Ok(()) => Err(e.context(format!(
            "cannot start cluster '{name}' (removed what was created)"
        ))),
        Err(d) => Err(e.context(format!(
            "cannot start cluster '{name}', and removing what was created failed too: {d:#}"
        ))),
    }
}

/// Node `i`'s name: a, b, c, …
fn node_name(i: usize) -> String {
    ((b'a' + i as u8) as char).to_string()
}

fn create(
    count: usize,
    isas: &[(String, Isa)],
    name: &str,
    dir: &Path,
    agent: &Path,
) -> Result<()> {
    // Files of an earlier cluster in this directory would mislead `exec`.
    let _ = std::fs::remove_file(dir.join("state.json"));
    let _ = std::fs::remove_dir_all(dir.join("run"));
    for d in ["logs", "nodes", "run"] {
        std::fs::create_dir_all(dir.join(d))
            .with_context(|| format!("cannot create {}", dir.join(d).display()))?;
    }
    let nodes: Vec<NodeConfig> = (0..count)
        .map(|i| {
            let name_i = node_name(i);
            let isa = isas
                .iter()
                .find(|(n, _)| *n == name_i)
                .map_or(Isa::native(), |(_, isa)| *isa);
            NodeConfig {
                name: name_i,
                address: SocketAddr::from((node_address(name, i), DEFAULT_PEER_PORT)),
                isa,
            }
        })
        .collect();
    let config = init(dir, name, nodes, &dir.join("run"), true)?;
    let bridge = bridge_name(name);
    let mut state = State {
        name: name.to_owned(),
        subnet: format!("10.77.{}.0/24", subnet_index(name)),
        bridge: bridge.clone(),
        nodes: Vec::new(),
    };
    write_state(dir, &state)?;
    ip(&["link", "add", &bridge, "type", "bridge"])?;
    ip(&["link", "set", &bridge, "up"])?;
    // Bridged frames must not go through the host's iptables (Docker's
    // FORWARD policy would drop them). The key exists only with br_netfilter.
    let nf = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if std::fs::read_to_string(nf).is_ok_and(|v| v.trim() == "1") {
        match std::fs::write(nf, "0") {
            Ok(()) => info!("set net.bridge.bridge-nf-call-iptables=0"),
            Err(e) => warn!("cannot set net.bridge.bridge-nf-call-iptables=0: {e}"),
        }
    }
    for node in &config.nodes {
        let ns = netns_name(name, &node.name);
        let veth = veth_name(name, &node.name);
        debug!(node = %node.name, %ns, %veth, "creating node network");
        ip(&["netns", "add", &ns])?;
        state.nodes.push(NodeState {
            name: node.name.clone(),
            netns: ns.clone(),
            veth: veth.clone(),
            address: node.address.to_string(),
            pid: 0,
        });
        write_state(dir, &state)?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip(&["link", "set", &veth, "master", &bridge, "up"])?;
        let cidr = format!("{}/24", node.address.ip());
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    }
    for n in &mut state.nodes {
        n.pid = start_agent(agent, dir, &n.netns, &n.name)?;
    }
    write_state(dir, &state)?;
    let deadline = Instant::now() + AGENT_START_TIMEOUT;
    for n in &state.nodes {
        wait_for_agent(&config, dir, &n.name, n.pid, deadline)?;
    }
    println!(
        "cluster '{name}' is up: {count} node(s) on 10.77.{}.0/24",
        subnet_index(name)
    );
    for n in &state.nodes {
        println!(
            "  {}  {:<16}  netns {:<14}  socket {}",
            n.name,
            n.address,
            n.netns,
            config.control_socket(&n.name).display()
        );
    }
    let (name_arg, config_arg) = if dir == Path::new(super::DEFAULT_DIR) {
        (String::new(), String::new())
    } else {
        (
            format!(" --name {name} --dir {}", dir.display()),
            format!(" --config {}", dir.join("cluster.toml").display()),
        )
    };
    println!(
        "try `popcorn{config_arg} --node a nodes`, run a command inside a node with \
         `popcorn cluster exec a{name_arg} -- CMD`, and remove it with `popcorn cluster down{name_arg}`"
    );
    Ok(())
}

/// `popcorn-agent` next to this `popcorn`, else on PATH.
fn agent_binary() -> Result<PathBuf> {
    if let Ok(exe) = std::env::current_exe() {
        let beside = exe.with_file_name("popcorn-agent");
        if beside.is_file() {
            return Ok(beside);
        }
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("popcorn-agent"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            anyhow!(
                "popcorn-agent not found next to popcorn or on PATH: \
                 build it with `cargo build --workspace`"
            )
        })
}

/// Starts a node's agent in its network namespace and new PID and mount
/// namespaces, detached, logging to DIR/logs/NODE.log. Returns the host PID
/// of `unshare` (also written to DIR/nodes/NODE.pid).
fn start_agent(agent: &Path, dir: &Path, ns: &str, node: &str) -> Result<i32> {
    let log_path = dir.join("logs").join(format!("{node}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let config = dir.join("cluster.toml");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .args(["unshare", "--pid", "--fork", "--mount", "--mount-proc"])
        .args(["--propagation", "private", "--"])
        .arg(agent)
        .args(["start", "--config"])
        .arg(&config)
        .args(["--node", node])
        .env_remove("POPCORN_NODE")
        .env_remove("POPCORN_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the agent from our
    // terminal and session, so it outlives this command.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start the agent of node '{node}'"))?;
    let pid = child.id() as i32;
    let pid_file = dir.join("nodes").join(format!("{node}.pid"));
    std::fs::write(&pid_file, format!("{pid}\n"))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    debug!(node, pid, "agent started");
    Ok(pid)
}

fn log_tail(dir: &Path, node: &str) -> String {
    let log =
        std::fs::read_to_string(dir.join("logs").join(format!("{node}.log"))).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.is_empty() {
        "(the log is empty)".into()
    } else {
        tail
    }
}

fn wait_for_agent(
    config: &ClusterConfig,
    dir: &Path,
    node: &str,
    pid: i32,
    deadline: Instant,
) -> Result<()> {
    let socket = config.control_socket(node);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        let why = if !alive(pid) {
            "exited"
        } else if Instant::now() > deadline {
            "did not open its control socket in time"
        } else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        bail!(
            "the agent of node '{node}' {why} ({}); the end of {}:\n{}",
            socket.display(),
            dir.join("logs").join(format!("{node}.log")).display(),
            log_tail(dir, node)
        );
    }
    debug!(node, "agent answers");
    Ok(())
}

fn write_state(dir: &Path, state: &State) -> Result<()> {
    let path = dir.join("state.json");
    let text = serde_json::to_string_pretty(state)?;
    std::fs::write(&path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

fn read_state(name: &str, dir: &Path) -> Option<State> {
    let state: State = serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?)
        .map_err(|e| warn!("ignoring {}: {e}", dir.join("state.json").display()))
        .ok()?;
    (state.name == name).then_some(state)
}

pub(super) fn down(name: &str, dir: &Path) -> Result<()> {
    check_name(name)?;
    require_root("down")?;
    // Everything a cluster runs lives in its nodes' network namespaces, so
    // the namespaces alone tell what to stop, with or without state.json.
    let namespaces = netns::netns_with_prefix(&prefix(name))?;
    let mut pids = Vec::new();
    for ns in &namespaces {
        pids.extend(netns::netns_pids(ns));
    }
    info!(
        cluster = name,
        namespaces = namespaces.len(),
        processes = pids.len(),
        "cluster down"
    );
    terminate(&pids);
    let mut failed = Vec::new();
    for ns in &namespaces {
        // Anything started meanwhile (a restart racing with us).
        let late = netns::netns_pids(ns);
        if !late.is_empty() {
            terminate(&late);
        }
        if let Err(e) = ip(&["netns", "del", ns]) {
            failed.push(format!("{e:#}"));
        }
    }
    let bridge = bridge_name(name);
    for link in netns::links_with_prefix(&prefix(name))? {
        // Deleting a veth end deletes its peer; a link can vanish meanwhile.
        if let Err(e) = ip(&["link", "del", &link]) {
            if netns::link_exists(&link)? {
                failed.push(format!("{e:#}"));
            }
        }
    }
    if netns::link_exists(&bridge)? {
        if let Err(e) = ip(&["link", "del", &bridge]) {
            failed.push(format!("{e:#}"));
        }
    }
    if !failed.is_empty() {
        bail!(
            "could not remove all of cluster '{name}':\n  {}\nrun `popcorn cluster down --name {name}` again",
            failed.join("\n  ")
        );
    }
    match dir_owner(dir) {
        Some(other) if other != name => warn!(
            "left {} alone: it belongs to cluster '{other}' (pass that cluster's --dir)",
            dir.display()
        ),
        _ => remove_dir(dir),
    }
    Ok(())
}

/// The cluster a directory's files belong to, if they say.
fn dir_owner(dir: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Named {
        name: String,
    }
    if let Some(state) = std::fs::read(dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<Named>(&t).ok())
    {
        return Some(state.name);
    }
    Some(
        ClusterConfig::load(&dir.join("cluster.toml"))
            .ok()?
            .cluster
            .name,
    )
}

/// Removes what `up` writes in DIR, then DIR if nothing else is in it.
fn remove_dir(dir: &Path) {
    for f in ["state.json", "cluster.toml"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    for d in ["pki", "logs", "run", "nodes"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!("left {} in place: {e}", dir.display()),
    }
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// SIGTERM, up to 2 s of grace, then SIGKILL, then up to 2 s for them to go.
fn terminate(pids: &[i32]) {
    let pids: Vec<i32> = pids.iter().copied().filter(|&p| p > 1).collect();
    let signal_all = |sig| {
        for &p in &pids {
            if alive(p) {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(p, sig) };
            }
        }
    };
    let wait = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    signal_all(libc::SIGTERM);
    wait(Duration::from_secs(2));
    signal_all(libc::SIGKILL);
    wait(Duration::from_secs(2));
    for &p in &pids {
        if alive(p) {
            warn!(pid = p, "process survived SIGKILL");
        }
    }
}

/// A process's PID inside its own PID namespace.
fn ns_pid_of(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Host PID of the node's PID 1 (the agent, or the init the agent keeps as
/// PID 1): the child of the recorded `unshare`, else found in the netns.
fn node_init_pid(name: &str, dir: &Path, node: &str) -> Result<i32> {
    let recorded = read_state(name, dir)
        .and_then(|s| s.nodes.into_iter().find(|n| n.name == node))
        .map(|n| n.pid)
        .filter(|&p| p > 0);
    let candidates = match recorded {
        Some(pid) => children(pid),
        None => netns::netns_pids(&netns_name(name, node)),
    };
    candidates
        .into_iter()
        .find(|&p| alive(p) && ns_pid_of(p) == Some(1))
        .ok_or_else(|| {
            anyhow!(
                "the agent of node '{node}' (cluster '{name}') is not running: see {} and \
                 start it again with `popcorn cluster restart {node} --name {name} --dir {}`",
                dir.join("logs").join(format!("{node}.log")).display(),
                dir.display()
            )
        })
}

fn load_config(name: &str, dir: &Path) -> Result<ClusterConfig> {
    let path = dir.join("cluster.toml");
    if !path.exists() {
        bail!(
            "cluster '{name}' is not up ({} does not exist): start it with \
             `popcorn cluster up --name {name} --dir {}`",
            path.display(),
            dir.display()
        );
    }
    Ok(ClusterConfig::load(&path)?)
}

pub(super) fn exec(node: &str, name: &str, dir: &Path, command: &[String]) -> Result<i32> {
    check_name(name)?;
    require_root("exec")?;
    let config = load_config(name, dir)?;
    config.node(node)?;
    let init = node_init_pid(name, dir, node)?;
    let mut cmd = Command::new("nsenter");
    cmd.args(["--target", &init.to_string(), "--net", "--pid", "--mount"]);
    // Entering a mount namespace resets the working directory to its root;
    // keep ours when the node sees it (its mounts are a copy of the host's).
    if let Ok(cwd) = std::env::current_dir() {
        let inside =
            Path::new(&format!("/proc/{init}/root")).join(cwd.strip_prefix("/").unwrap_or(&cwd));
        if inside.is_dir() {
            cmd.arg(format!("--wd={}", cwd.display()));
        }
    }
    cmd.arg("--")
        .args(command)
        .env("POPCORN_CONFIG", dir.join("cluster.toml"))
        .env("POPCORN_NODE", node);
    debug!(node, init, ?command, "exec");
    let status = cmd.status().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("`nsenter` not found: apt-get install util-linux"),
        _ => anyhow!("cannot run nsenter: {e}"),
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

pub(super) fn restart(node: &str, name: &str, dir: &Path) -> Result<()> {
    check_name(name)?;
    require_root("restart")?;
    let config = load_config(name, dir)?;
    config.node(node)?;
    let mut state = read_state(name, dir).ok_or_else(|| {
        anyhow!(
            "{} is missing or not cluster '{name}''s: recreate the cluster with \
             `popcorn cluster down --name {name}` and `popcorn cluster up`",
            dir.join("state.json").display()
        )
    })?;
    let agent = agent_binary()?;
    let n = state
        .nodes
        .iter_mut()
        .find(|n| n.name == node)
        .ok_or_else(|| {
            anyhow!(
                "node '{node}' is not in {}",
                dir.join("state.json").display()
            )
        })?;
    // The node's PID namespace ends with its PID 1: stop it all.
    terminate(&netns::netns_pids(&n.netns));
    let _ = std::fs::remove_file(config.control_socket(node));
    n.pid = start_agent(&agent, dir, &n.netns, node)?;
    let pid = n.pid;
    write_state(dir, &state)?;
    wait_for_agent(
        &config,
        dir,
        node,
        pid,
        Instant::now() + AGENT_START_TIMEOUT,
    )?;
    println!("restarted the agent of node '{node}'");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_fit_interface_names() {
        assert!(check_name("popcorn").is_ok());
        assert!(check_name("abcdefghij").is_ok());
        assert!(check_name("abcdefghijk").is_err());
        assert!(check_name("Bad").is_err());
        assert!(check_name("a-b").is_err());
        assert!(check_name("").is_err());
        let longest = "abcdefghij";
        assert!(veth_name(longest, "z").len() <= 15);
        assert!(bridge_name(longest).len() <= 15);
        // One cluster's prefix never matches another cluster's names.
        assert!(!veth_name("t1", "a").starts_with(&prefix("t")));
        assert!(!bridge_name("t1").starts_with(&prefix("t")));
        assert!(!netns_name("tx", "a").starts_with(&prefix("t")));
    }

    #[test]
    fn subnets() {
        assert_eq!(node_address(DEFAULT_NAME, 0), Ipv4Addr::new(10, 77, 0, 11));
        for name in ["a", "tlife", "tcrash", "tpeer", "abcdefghij", "zzzzzzzzzz"] {
            let k = subnet_index(name);
            assert!((1..=254).contains(&k), "{name}: {k}");
            assert_eq!(k, subnet_index(name));
            assert_eq!(node_address(name, 2), Ipv4Addr::new(10, 77, k, 13));
        }
        assert_ne!(subnet_index("tlife"), subnet_index("tcrash"));
    }
}

//! `popcorn cluster`: credentials for a real cluster (`init`), and local
//! test clusters (`up`, `down`, `exec`, `restart`) whose nodes are network +
//! PID + mount namespaces on this machine, each with its own agent.

mod netns;
mod pki;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use netns::{ip, netns_pids, netns_with_prefix};
use popcorn_proto::config::{
    valid_node_name, ClusterConfig, ClusterSection, Isa, NodeConfig, DEFAULT_PEER_PORT,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_NAME: &str = "popcorn";
const DEFAULT_DIR: &str = "/run/popcorn-cluster";
/// Most nodes of a local cluster (named a…z).
const MAX_NODES: usize = 26;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Write a cluster file and credentials (a CA and one certificate per node).
    Init {
        /// Where to write cluster.toml and pki/.
        #[arg(long)]
        dir: PathBuf,
        /// Cluster name (peers of another cluster are refused).
        #[arg(long)]
        name: String,
        /// A member node as NAME=IP:PORT[,ISA]; repeat for each node.
        #[arg(long = "member", required = true)]
        nodes: Vec<String>,
        /// Replace existing credentials.
        #[arg(long)]
        force: bool,
    },
    /// Start a local cluster: N namespaced nodes, each with its own agent.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Cluster name; prefixes every namespace and interface (≤ 10 of a-z0-9).
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Remove a local cluster: agents, namespaces, interfaces, files.
    Down {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Run a command inside a node's namespaces (POPCORN_NODE set to it).
    Exec {
        node: String,
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Restart one node's agent (after it died or its credentials changed).
    Restart {
        node: String,
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
}

pub fn run(cmd: ClusterCommand) -> Result<i32> {
    match cmd {
        ClusterCommand::Init {
            dir,
            name,
            nodes,
            force,
        } => {
            let nodes = nodes
                .iter()
                .map(|n| parse_node(n))
                .collect::<Result<Vec<_>>>()?;
            let config = init(&dir, &name, nodes, &dir.join("run"), force)?;
            println!(
                "wrote {} and credentials for {} in {}",
                dir.join("cluster.toml").display(),
                config.node_names(),
                dir.join("pki").display()
            );
            Ok(0)
        }
        ClusterCommand::Up { nodes, name, dir } => up(nodes, &name, &dir).map(|()| 0),
        ClusterCommand::Down { name, dir } => down(&name, &dir).map(|()| 0),
        ClusterCommand::Exec {
            node,
            name,
            dir,
            command,
        } => exec(&node, &name, &dir, &command),
        ClusterCommand::Restart { node, name, dir } => restart(&node, &name, &dir).map(|()| 0),
    }
}

/// "a=10.0.0.1:7077,aarch64" → node.
fn parse_node(spec: &str) -> Result<NodeConfig> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("--member {spec}: expected NAME=IP:PORT[,ISA]"))?;
    let (addr, isa) = match rest.split_once(',') {
        Some((a, i)) => (a, i.parse::<Isa>().map_err(|e| anyhow!("--member {spec}: {e}"))?),
        None => (rest, Isa::native()),
    };
    let address: SocketAddr = addr
        .parse()
        .or_else(|_| format!("{addr}:{DEFAULT_PEER_PORT}").parse())
        .map_err(|_| anyhow!("--member {spec}: '{addr}' is not an IP:PORT address"))?;
    if !valid_node_name(name) {
        bail!("--member {spec}: node names are 1-32 characters of a-z, 0-9, '-' or '_'");
    }
    Ok(NodeConfig {
        name: name.to_owned(),
        address,
        isa,
    })
}

/// Writes DIR/cluster.toml and DIR/pki/.
fn init(dir: &Path, name: &str, nodes: Vec<NodeConfig>, run_dir: &Path, force: bool) -> Result<ClusterConfig> {
    let pki_dir = dir.join("pki");
    let config = ClusterConfig {
        cluster: ClusterSection {
            name: name.to_owned(),
            pki_dir: pki_dir.clone(),
            run_dir: run_dir.to_owned(),
            this: None,
            heartbeat_ms: 500,
        },
        nodes,
    };
    // Validate exactly as the agent will.
    let text = config.to_toml();
    let config = ClusterConfig::parse(&text, &dir.join("cluster.toml"))?;
    if pki_dir.join("ca.crt").exists() && !force {
        bail!(
            "{} already holds a cluster CA; pass --force to replace it (every node then needs new credentials)",
            pki_dir.display()
        );
    }
    std::fs::create_dir_all(&pki_dir).with_context(|| format!("cannot create {}", pki_dir.display()))?;
    let ca = pki::Ca::generate(name)?;
    pki::write_file(&pki_dir.join("ca.crt"), &ca.cert_pem, false)?;
    pki::write_file(&pki_dir.join("ca.key"), &ca.key_pem, true)?;
    for n in &config.nodes {
        let cert = ca.issue(&n.name, n.address.ip())?;
        let (crt, key) = config.node_cert_paths(&n.name);
        pki::write_file(&crt, &cert.cert_pem, false)?;
        pki::write_file(&key, &cert.key_pem, true)?;
    }
    pki::write_file(&dir.join("cluster.toml"), &text, false)?;
    Ok(config)
}

/// What `up` created, for `down`, `exec` and `restart`.
#[derive(Serialize, Deserialize)]
struct State {
    name: String,
    bridge: String,
    nodes: Vec<NodeState>,
}

#[derive(Serialize, Deserialize)]
struct NodeState {
    name: String,
    netns: String,
    veth: String,
    address: String,
    /// Host PID of the `unshare` that holds the node's PID namespace.
    pid: i32,
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 10 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        bail!("cluster name '{name}' must be 1-10 characters of a-z and 0-9 (it prefixes interface names)");
    }
    Ok(())
}

fn netns_name(cluster: &str, node: &str) -> String {
    format!("{cluster}-{node}")
}

fn bridge_name(cluster: &str) -> String {
    format!("pcb{cluster}")
}

fn veth_prefix(cluster: &str) -> String {
    format!("pcv{cluster}")
}

fn up(count: usize, name: &str, dir: &Path) -> Result<()> {
    check_name(name)?;
    if !(1..=MAX_NODES).contains(&count) {
        bail!("--nodes must be between 1 and {MAX_NODES}");
    }
    netns::check_tools()?;
    let existing = netns_with_prefix(&format!("{name}-"))?;
    if !existing.is_empty() {
        bail!(
            "cluster '{name}' is already up ({}): run `popcorn cluster down --name {name}` first",
            existing.join(", ")
        );
    }
    let agent = agent_binary()?;
    let result = (|| {
        std::fs::create_dir_all(dir.join("logs"))?;
        let nodes: Vec<NodeConfig> = (0..count)
            .map(|i| NodeConfig {
                name: ((b'a' + i as u8) as char).to_string(),
                address: SocketAddr::from(([10, 77, 0, 11 + i as u8], DEFAULT_PEER_PORT)),
                isa: Isa::native(),
            })
            .collect();
        let config = init(dir, name, nodes, &dir.join("run"), true)?;
        let bridge = bridge_name(name);
        let _ = ip(&["link", "del", &bridge]);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["link", "set", &bridge, "up"])?;
        // Bridged frames must not be filtered by the host's iptables.
        let _ = std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "0");
        let mut state = State {
            name: name.to_owned(),
            bridge: bridge.clone(),
            nodes: Vec::new(),
        };
        for (i, node) in config.nodes.iter().enumerate() {
            let ns = netns_name(name, &node.name);
            let veth = format!("{}{i}", veth_prefix(name));
            let peer = format!("pct{name}{i}");
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
            ip(&["link", "set", &peer, "netns", &ns])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            ip(&["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
            let cidr = format!("{}/24", node.address.ip());
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            state.nodes.push(NodeState {
                name: node.name.clone(),
                netns: ns,
                veth,
                address: node.address.to_string(),
                pid: 0,
            });
        }
        for n in &mut state.nodes {
            n.pid = start_agent(&agent, dir, &n.netns, &n.name)?;
        }
        write_state(dir, &state)?;
        for n in &state.nodes {
            wait_for_agent(&config, dir, &n.name)?;
        }
        println!("cluster '{name}' is up: {count} node(s)");
        for n in &state.nodes {
            println!(
                "  {}  {:<16} netns {:<12} socket {}",
                n.name,
                n.address,
                n.netns,
                config.control_socket(&n.name).display()
            );
        }
        println!(
            "talk to a node with `popcorn --config {} --node a nodes`, or run inside it with `popcorn cluster exec a -- CMD`",
            dir.join("cluster.toml").display()
        );
        Ok(())
    })();
    if let Err(e) = result {
        let _ = down(name, dir);
        return Err(e);
    }
    Ok(())
}

fn agent_binary() -> Result<PathBuf> {
    let beside = std::env::current_exe()?.with_file_name("popcorn-agent");
    if beside.exists() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("popcorn-agent")).find(|p| p.exists()))
        .ok_or_else(|| anyhow!("popcorn-agent not found next to popcorn or on PATH: build it with `cargo build --workspace`"))
}

/// Starts a node's agent in its network namespace and new PID and mount
/// namespaces, detached, logging to DIR/logs/NODE.log. Returns the host PID.
fn start_agent(agent: &Path, dir: &Path, ns: &str, node: &str) -> Result<i32> {
    let log_path = dir.join("logs").join(format!("{node}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let config = dir.join("cluster.toml");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "unshare", "--pid", "--fork", "--mount", "--mount-proc"])
        .args(["--propagation", "private", "--"])
        .arg(agent)
        .args(["start", "--config"])
        .arg(&config)
        .args(["--node", node])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the agent from our
    // terminal and session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().context("cannot start the agent")?;
    Ok(child.id() as i32)
}

fn wait_for_agent(config: &ClusterConfig, dir: &Path, node: &str) -> Result<()> {
    let socket = config.control_socket(node);
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("logs").join(format!("{node}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            bail!(
                "the agent of node '{node}' did not open {} within 15 s; its log ends with:\n{}",
                socket.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn write_state(dir: &Path, state: &State) -> Result<()> {
    std::fs::write(dir.join("state.json"), serde_json::to_string_pretty(state)?)
        .with_context(|| format!("cannot write {}", dir.join("state.json").display()))
}

fn read_state(dir: &Path) -> Option<State> {
    serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()
}

fn down(name: &str, dir: &Path) -> Result<()> {
    check_name(name)?;
    // Processes first: recorded ones, then whatever lives in the namespaces.
    let mut pids: Vec<i32> = read_state(dir)
        .map(|s| s.nodes.iter().map(|n| n.pid).filter(|&p| p > 0).collect())
        .unwrap_or_default();
    let namespaces = netns_with_prefix(&format!("{name}-"))?;
    for ns in &namespaces {
        pids.extend(netns_pids(ns));
    }
    terminate(&pids);
    for ns in &namespaces {
        terminate(&netns_pids(ns));
        ip(&["netns", "del", ns])?;
    }
    if netns::links_with_prefix(&bridge_name(name))?.contains(&bridge_name(name)) {
        ip(&["link", "del", &bridge_name(name)])?;
    }
    for link in netns::links_with_prefix(&veth_prefix(name))? {
        let _ = ip(&["link", "del", &link]);
    }
    // Only what `up` creates; never a user's other files.
    for f in ["state.json", "cluster.toml"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    for d in ["pki", "logs", "run"] {
        let _ = std::fs::remove_dir_all(dir.join(d));
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// SIGTERM, up to 2 s of grace, then SIGKILL.
fn terminate(pids: &[i32]) {
    let alive = |p: i32| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(p);
    for &p in pids {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(p, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in pids {
        if alive(p) {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// Host PID of a node's PID-namespace init (PID 1 inside the node).
fn node_init_pid(name: &str, dir: &Path, node: &str) -> Result<i32> {
    let ns = netns_name(name, node);
    let candidates: Vec<i32> = match read_state(dir).and_then(|s| s.nodes.into_iter().find(|n| n.name == node)) {
        Some(n) => std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", n.pid))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        None => netns_pids(&ns),
    };
    candidates
        .into_iter()
        .find(|&p| ns_pid_of(p) == Some(1))
        .ok_or_else(|| anyhow!("node '{node}' of cluster '{name}' is not running (start it with `popcorn cluster restart {node} --name {name}`)"))
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

fn exec(node: &str, name: &str, dir: &Path, command: &[String]) -> Result<i32> {
    let config = dir.join("cluster.toml");
    let init = node_init_pid(name, dir, node)?;
    let status = Command::new("nsenter")
        .args(["--target", &init.to_string(), "--net", "--pid", "--mount", "--"])
        .args(command)
        .env("POPCORN_CONFIG", &config)
        .env("POPCORN_NODE", node)
        .status()
        .context("cannot run nsenter (apt-get install util-linux)")?;
    Ok(status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    }))
}

fn restart(node: &str, name: &str, dir: &Path) -> Result<()> {
    let mut state = read_state(dir).ok_or_else(|| anyhow!("no cluster '{name}' in {}: run `popcorn cluster up`", dir.display()))?;
    let config = ClusterConfig::load(&dir.join("cluster.toml"))?;
    let agent = agent_binary()?;
    let n = state
        .nodes
        .iter_mut()
        .find(|n| n.name == node)
        .ok_or_else(|| anyhow!("unknown node '{node}': the cluster has {}", config.node_names()))?;
    terminate(&[n.pid]);
    // The old namespace's processes die with its init; wait for the socket to go.
    let _ = std::fs::remove_file(config.control_socket(node));
    n.pid = start_agent(&agent, dir, &n.netns, node)?;
    write_state(dir, &state)?;
    wait_for_agent(&config, dir, node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs() {
        let n = parse_node("a=10.0.0.1:7000").unwrap();
        assert_eq!((n.name.as_str(), n.address.port(), n.isa), ("a", 7000, Isa::native()));
        let n = parse_node("arm=10.0.0.2,aarch64").unwrap();
        assert_eq!((n.address.port(), n.isa), (DEFAULT_PEER_PORT, Isa::Aarch64));
        assert!(parse_node("a").is_err());
        assert!(parse_node("a=nowhere").is_err());
        assert!(parse_node("a=10.0.0.1,sparc").is_err());
        assert!(parse_node("A=10.0.0.1").is_err());
    }

    #[test]
    fn cluster_names_fit_interface_names() {
        assert!(check_name("popcorn").is_ok());
        assert!(check_name("abcdefghij").is_ok());
        assert!(check_name("abcdefghijk").is_err());
        assert!(check_name("Bad").is_err());
        assert!(check_name("").is_err());
        let longest = format!("{}{}", veth_prefix("abcdefghij"), MAX_NODES - 1);
        assert!(longest.len() <= 15, "{longest}");
        assert!(format!("pctabcdefghij{}", MAX_NODES - 1).len() <= 15);
        assert!(bridge_name("abcdefghij").len() <= 15);
    }

    #[test]
    fn init_writes_a_loadable_cluster() {
        let dir = std::env::temp_dir().join(format!("popcorn-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nodes = vec![parse_node("a=10.1.0.1:7077").unwrap(), parse_node("b=10.1.0.2:7077").unwrap()];
        init(&dir, "t", nodes.clone(), &dir.join("run"), false).unwrap();
        let config = ClusterConfig::load(&dir.join("cluster.toml")).unwrap();
        assert_eq!(config.nodes, nodes);
        for f in ["ca.crt", "ca.key", "a.crt", "a.key", "b.crt", "b.key"] {
            assert!(dir.join("pki").join(f).exists(), "{f}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("pki/a.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second init must not silently replace the CA.
        let e = init(&dir, "t", nodes.clone(), &dir.join("run"), false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        init(&dir, "t", nodes, &dir.join("run"), true).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

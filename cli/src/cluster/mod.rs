//! `popcorn cluster`: credentials for a real cluster (`init`), and local
//! test clusters (`up`, `down`, `exec`, `restart`) whose nodes are network +
//! PID + mount namespaces on this machine, each with its own agent.

mod local;
mod netns;
mod pki;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use popcorn_proto::config::{
    valid_node_name, ClusterConfig, ClusterSection, Isa, NodeConfig, DEFAULT_PEER_PORT,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Name of the local cluster when `--name` is not given.
pub const DEFAULT_NAME: &str = "popcorn";
/// Its directory; `cluster.toml` there is the CLI's and agent's fallback
/// cluster file (`LOCAL_CLUSTER_CONFIG_PATH`).
pub const DEFAULT_DIR: &str = "/run/popcorn-cluster";

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Write a cluster file and credentials (a CA and one certificate per node).
    Init {
        /// Where to write cluster.toml and pki/.
        #[arg(long)]
        dir: PathBuf,
        /// Cluster name.
        #[arg(long)]
        name: String,
        /// A member node as NAME=IP:PORT[,ISA] (ISA: x86_64 or aarch64); repeat for
        /// each node. (Named --member because --node selects the node to talk to.)
        #[arg(long = "member", value_name = "NAME=IP:PORT[,ISA]", required = true)]
        nodes: Vec<String>,
        /// Replace an existing CA (every node then needs its new credentials).
        #[arg(long)]
        force: bool,
    },
    /// Start a local cluster: N namespaced nodes (a, b, c, …), each with its own agent.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Declare a node's ISA, e.g. `--isa b=aarch64` (default: this
        /// machine's); repeatable.
        #[arg(long = "isa", value_name = "NODE=ISA", value_parser = parse_node_isa)]
        isas: Vec<(String, Isa)>,
        /// Cluster name: 1-10 of a-z, 0-9; prefixes its namespaces and interfaces.
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        /// Where the cluster file, credentials, sockets, logs and state go.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Remove a local cluster: agents, namespaces, interfaces, files (also after a crash).
    Down {
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Run a command inside a node's network, PID and mount namespaces
    /// (with POPCORN_CONFIG and POPCORN_NODE set); exits with its status.
    Exec {
        node: String,
        #[arg(long, default_value = DEFAULT_NAME)]
        name: String,
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            required = true,
            value_name = "CMD"
        )]
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

/// Runs a `popcorn cluster` command; returns the process exit code.
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
            println!(
                "copy cluster.toml, ca.crt and each node's <node>.crt/<node>.key to that node; \
                 keep ca.key offline"
            );
            Ok(0)
        }
        ClusterCommand::Up {
            nodes,
            isas,
            name,
            dir,
        } => local::up(nodes, &isas, &name, &dir).map(|()| 0),
        ClusterCommand::Down { name, dir } => local::down(&name, &dir).map(|()| 0),
        ClusterCommand::Exec {
            node,
            name,
            dir,
            command,
        } => local::exec(&node, &name, &dir, &command),
        ClusterCommand::Restart { node, name, dir } => {
            local::restart(&node, &name, &dir).map(|()| 0)
        }
    }
}

/// "b=aarch64" → (node, ISA).
fn parse_node_isa(spec: &str) -> Result<(String, Isa)> {
    let (name, isa) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("--isa {spec}: expected NODE=ISA, e.g. b=aarch64"))?;
    let isa = isa
        .parse::<Isa>()
        .map_err(|e| anyhow!("--isa {spec}: {e}"))?;
    Ok((name.to_owned(), isa))
}

/// "a=10.0.0.1:7077,aarch64" → node. The port defaults to 7077, the ISA to
/// this machine's.
fn parse_node(spec: &str) -> Result<NodeConfig> {
    let (name, rest) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("--member {spec}: expected NAME=IP:PORT[,ISA]"))?;
    let (addr, isa) = match rest.split_once(',') {
        Some((a, i)) => (
            a,
            i.parse::<Isa>()
                .map_err(|e| anyhow!("--member {spec}: {e}"))?,
        ),
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

/// Writes DIR/cluster.toml and DIR/pki/ (CA and one certificate per node).
fn init(
    dir: &Path,
    name: &str,
    nodes: Vec<NodeConfig>,
    run_dir: &Path,
    force: bool,
) -> Result<ClusterConfig> {
    let pki_dir = dir.join("pki");
    let config = ClusterConfig {
        cluster: ClusterSection {
            name: name.to_owned(),
            pki_dir: pki_dir.clone(),
            run_dir: run_dir.to_owned(),
            this: None,
            heartbeat_ms: 500,
            tracing: true,
            metrics_port: popcorn_proto::config::DEFAULT_METRICS_PORT,
        },
        nodes,
    };
    // Validate exactly as the agent will.
    let path = dir.join("cluster.toml");
    let text = config.to_toml();
    let config = ClusterConfig::parse(&text, &path)?;
    if pki_dir.join("ca.crt").exists() && !force {
        bail!(
            "{} already holds a cluster CA; pass --force to replace it \
             (every node then needs its new credentials)",
            pki_dir.display()
        );
    }
    pki::create_private_dir(&pki_dir)?;
    let ca = pki::Ca::generate(name)?;
    pki::write_file(&config.ca_cert_path(), &ca.cert_pem, false)?;
    pki::write_file(&pki_dir.join("ca.key"), &ca.key_pem, true)?;
    for n in &config.nodes {
        let cert = ca.issue(&n.name, n.address.ip())?;
        let (crt, key) = config.node_cert_paths(&n.name);
        pki::write_file(&crt, &cert.cert_pem, false)?;
        pki::write_file(&key, &cert.key_pem, true)?;
    }
    pki::write_file(&path, &text, false).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(dir = %dir.display(), cluster = name, nodes = config.nodes.len(), "cluster initialised");
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_specs() {
        let n = parse_node("a=10.0.0.1:7000").unwrap();
        assert_eq!(
            (n.name.as_str(), n.address.port(), n.isa),
            ("a", 7000, Isa::native())
        );
        let n = parse_node("arm=10.0.0.2,aarch64").unwrap();
        assert_eq!((n.address.port(), n.isa), (DEFAULT_PEER_PORT, Isa::Aarch64));
        let n = parse_node("b=10.0.0.3:7001,x86_64").unwrap();
        assert_eq!((n.address.port(), n.isa), (7001, Isa::X86_64));
        assert!(parse_node("a").is_err());
        assert!(parse_node("a=nowhere").is_err());
        assert!(parse_node("a=10.0.0.1,sparc").is_err());
        assert!(parse_node("A=10.0.0.1").is_err());
    }

    #[test]
    fn node_isa_specs() {
        assert_eq!(
            parse_node_isa("b=aarch64").unwrap(),
            ("b".to_owned(), Isa::Aarch64)
        );
        let e = parse_node_isa("b").unwrap_err().to_string();
        assert!(e.contains("expected NODE=ISA"), "{e}");
        let e = parse_node_isa("b=mips").unwrap_err().to_string();
        assert!(e.contains("unknown ISA 'mips'"), "{e}");
    }

    #[test]
    fn init_writes_a_loadable_cluster() {
        let dir = std::env::temp_dir().join(format!("popcorn-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nodes = vec![
            parse_node("a=10.1.0.1:7077").unwrap(),
            parse_node("b=10.1.0.2:7077").unwrap(),
        ];
        init(&dir, "t", nodes.clone(), &dir.join("run"), false).unwrap();
        let config = ClusterConfig::load(&dir.join("cluster.toml")).unwrap();
        assert_eq!(config.nodes, nodes);
        assert_eq!(config.cluster.this, None);
        assert_eq!(config.control_socket("a"), dir.join("run/a.sock"));
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| {
            std::fs::metadata(dir.join("pki").join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        for f in ["ca.crt", "a.crt", "b.crt"] {
            assert_eq!(mode(f), 0o644, "{f}");
        }
        for f in ["ca.key", "a.key", "b.key"] {
            assert_eq!(mode(f), 0o600, "{f}");
        }
        // A second init must not silently replace the CA.
        let ca = std::fs::read(dir.join("pki/ca.crt")).unwrap();
        let e = init(&dir, "t", nodes.clone(), &dir.join("run"), false).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read(dir.join("pki/ca.crt")).unwrap(), ca);
        init(&dir, "t", nodes, &dir.join("run"), true).unwrap();
        assert_ne!(std::fs::read(dir.join("pki/ca.crt")).unwrap(), ca);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

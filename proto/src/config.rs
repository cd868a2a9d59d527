//! The cluster file: which nodes exist, where they listen, which ISA they run,
//! and where each agent keeps its credentials and control socket.
//!
//! ```toml
//! [cluster]
//! name = "demo"
//! pki_dir = "/etc/popcorn/pki"   # ca.crt, <node>.crt, <node>.key
//! run_dir = "/run/popcorn"       # control sockets: <run_dir>/<node>.sock
//! this = "a"                     # optional; `--node` overrides
//!
//! [[node]]
//! name = "a"
//! address = "10.77.0.11:7077"
//! isa = "x86_64"
//! ```

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the agent and CLI look for the cluster file unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/popcorn/cluster.toml";
/// The cluster file written by `popcorn cluster up` (used when the default is absent).
pub const LOCAL_CLUSTER_CONFIG_PATH: &str = "/run/popcorn-cluster/cluster.toml";
/// Environment variable naming the cluster file.
pub const CONFIG_ENV: &str = "POPCORN_CONFIG";
/// Environment variable naming the node the CLI talks to.
pub const NODE_ENV: &str = "POPCORN_NODE";
/// Name of the only node when no cluster file exists.
pub const SOLO_NODE: &str = "local";
/// Default peer port.
pub const DEFAULT_PEER_PORT: u16 = 7077;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read cluster file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed cluster file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid cluster file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("unknown node '{node}': the cluster has {known}")]
    UnknownNode { node: String, known: String },
    #[error(
        "no node selected: pass --node NAME, set {NODE_ENV}, or set `this` in the cluster file"
    )]
    NoNodeSelected,
}

/// Instruction set of a node (the translator's own type).
pub use popcorn_isa::Isa;

/// One cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    /// Peer TCP address (ip:port) other agents connect to.
    pub address: SocketAddr,
    pub isa: Isa,
}

/// Cluster-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub name: String,
    pub pki_dir: PathBuf,
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    #[serde(default)]
    pub this: Option<String>,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Trace managed processes with eBPF (CPU, faults, fork/exit).
    #[serde(default = "default_tracing")]
    pub tracing: bool,
    /// TCP port, on each node's address, of the Prometheus metrics
    /// endpoint; 0 turns it off.
    #[serde(default = "default_metrics_port")]
    pub metrics_port: u16,
}

fn default_tracing() -> bool {
    true
}

/// The usual port of a Prometheus exporter that has no registered one.
pub const DEFAULT_METRICS_PORT: u16 = 9464;

fn default_metrics_port() -> u16 {
    DEFAULT_METRICS_PORT
}

fn default_run_dir() -> PathBuf {
    PathBuf::from("/run/popcorn")
}

fn default_heartbeat_ms() -> u64 {
    500
}

/// The parsed and validated cluster file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub cluster: ClusterSection,
    #[serde(rename = "node", default)]
    pub nodes: Vec<NodeConfig>,
}

impl ClusterConfig {
    /// Parses and validates cluster-file text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ClusterConfig, ConfigError> {
        let config: ClusterConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned()
                + &e.span()
                    .map(|s| format!(" (at line {})", line_of(text, s.start)))
                    .unwrap_or_default(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Reads, parses and validates a cluster file.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        ClusterConfig::parse(&text, path)
    }

    /// The configuration of a cluster of one: this machine, no peers.
    pub fn solo() -> ClusterConfig {
        ClusterConfig {
            cluster: ClusterSection {
                name: SOLO_NODE.to_owned(),
                pki_dir: PathBuf::from("/etc/popcorn/pki"),
                run_dir: default_run_dir(),
                this: Some(SOLO_NODE.to_owned()),
                heartbeat_ms: default_heartbeat_ms(),
                tracing: default_tracing(),
                metrics_port: default_metrics_port(),
            },
            nodes: vec![NodeConfig {
                name: SOLO_NODE.to_owned(),
                address: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PEER_PORT)),
                isa: Isa::native(),
            }],
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if self.nodes.is_empty() {
            return Err(invalid("no [[node]] entries".into()));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !valid_node_name(&n.name) {
                return Err(invalid(format!(
                    "node name '{}' must be 1-32 characters of a-z, 0-9, '-' or '_'",
                    n.name
                )));
            }
            if let Some(dup) = self.nodes[..i].iter().find(|m| m.name == n.name) {
                return Err(invalid(format!("node '{}' is listed twice", dup.name)));
            }
            if let Some(dup) = self.nodes[..i].iter().find(|m| m.address == n.address) {
                return Err(invalid(format!(
                    "nodes '{}' and '{}' share the address {}",
                    dup.name, n.name, n.address
                )));
            }
        }
        if self.cluster.heartbeat_ms == 0 {
            return Err(invalid("heartbeat_ms must be positive".into()));
        }
        if let Some(this) = &self.cluster.this {
            self.node(this)?;
        }
        Ok(())
    }

    /// Looks a node up by name.
    pub fn node(&self, name: &str) -> Result<&NodeConfig, ConfigError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| ConfigError::UnknownNode {
                node: name.to_owned(),
                known: self.node_names(),
            })
    }

    /// "a, b and c" for messages.
    pub fn node_names(&self) -> String {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        match names.as_slice() {
            [] => "no nodes".into(),
            [one] => format!("only '{one}'"),
            [init @ .., last] => format!(
                "{} and '{last}'",
                init.iter()
                    .map(|n| format!("'{n}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Picks this node: an explicit choice wins, then `this` in the file,
    /// then the only node of a one-node cluster.
    pub fn select_node(&self, explicit: Option<&str>) -> Result<&NodeConfig, ConfigError> {
        match explicit.or(self.cluster.this.as_deref()) {
            Some(name) => self.node(name),
            None if self.nodes.len() == 1 => Ok(&self.nodes[0]),
            None => Err(ConfigError::NoNodeSelected),
        }
    }

    /// The control socket of a node's agent.
    pub fn control_socket(&self, node: &str) -> PathBuf {
        self.cluster.run_dir.join(format!("{node}.sock"))
    }

    /// CA certificate of the cluster.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.cluster.pki_dir.join("ca.crt")
    }

    /// Certificate and key of one node.
    pub fn node_cert_paths(&self, node: &str) -> (PathBuf, PathBuf) {
        (
            self.cluster.pki_dir.join(format!("{node}.crt")),
            self.cluster.pki_dir.join(format!("{node}.key")),
        )
    }

    /// Serializes back to TOML (used by `popcorn cluster init`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// The cluster file to use: an explicit path, `$POPCORN_CONFIG`, the default
/// path if it exists, else the local test cluster's file.
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit
        .map(Path::to_owned)
        .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
    {
        return p;
    }
    let default = PathBuf::from(DEFAULT_CONFIG_PATH);
    let local = PathBuf::from(LOCAL_CLUSTER_CONFIG_PATH);
    if !default.exists() && local.exists() {
        local
    } else {
        default
    }
}

/// Loads the cluster file; when none was named and the default is absent,
/// falls back to a cluster of one.
pub fn load_or_solo(explicit: Option<&Path>) -> Result<ClusterConfig, ConfigError> {
    let named = explicit.is_some() || std::env::var_os(CONFIG_ENV).is_some();
    let path = config_path(explicit);
    if !named && !path.exists() {
        return Ok(ClusterConfig::solo());
    }
    ClusterConfig::load(&path)
}

/// Node names are used in file names and certificate names.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[cluster]
name = "t"
pki_dir = "/tmp/pki"
this = "b"

[[node]]
name = "a"
address = "10.0.0.1:7077"
isa = "x86_64"

[[node]]
name = "b"
address = "10.0.0.2:7077"
isa = "aarch64"
"#;

    fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn parses_good_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[1].isa, Isa::Aarch64);
        assert_eq!(c.cluster.run_dir, PathBuf::from("/run/popcorn"));
        assert_eq!(c.cluster.heartbeat_ms, 500);
        assert_eq!(c.select_node(None).unwrap().name, "b");
        assert_eq!(c.select_node(Some("a")).unwrap().name, "a");
        assert_eq!(c.control_socket("a"), PathBuf::from("/run/popcorn/a.sock"));
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn unknown_node_lists_known() {
        let c = parse(GOOD).unwrap();
        let e = c.node("z").unwrap_err().to_string();
        assert_eq!(e, "unknown node 'z': the cluster has 'a' and 'b'");
    }

    #[test]
    fn rejects_malformed() {
        let e = parse("[cluster\nname=").unwrap_err().to_string();
        assert!(e.starts_with("malformed cluster file test.toml"), "{e}");
        let e = parse(&GOOD.replace("aarch64", "mips"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed"), "{e}");
        let e = parse(&GOOD.replace("10.0.0.2:7077", "nonsense"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("malformed"), "{e}");
        let e = parse(&GOOD.replace("isa = \"aarch64\"", "isa = \"aarch64\"\ncolour = 1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn rejects_invalid() {
        let dup = GOOD
            .replace("name = \"b\"", "name = \"a\"")
            .replace("this = \"b\"", "");
        assert!(parse(&dup)
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        let addr = GOOD.replace("10.0.0.2", "10.0.0.1");
        assert!(parse(&addr)
            .unwrap_err()
            .to_string()
            .contains("share the address"));
        let this = GOOD.replace("this = \"b\"", "this = \"q\"");
        assert!(parse(&this)
            .unwrap_err()
            .to_string()
            .contains("unknown node 'q'"));
        let name = GOOD
            .replace("name = \"b\"", "name = \"B/x\"")
            .replace("this = \"b\"", "");
        assert!(parse(&name).unwrap_err().to_string().contains("must be"));
        let none = "[cluster]\nname='x'\npki_dir='/p'\n";
        assert!(parse(none).unwrap_err().to_string().contains("no [[node]]"));
    }

    #[test]
    fn selection_rules() {
        let c = parse(&GOOD.replace("this = \"b\"", "")).unwrap();
        assert!(matches!(
            c.select_node(None),
            Err(ConfigError::NoNodeSelected)
        ));
        let solo = ClusterConfig::solo();
        assert_eq!(solo.select_node(None).unwrap().name, SOLO_NODE);
    }

    #[test]
    fn node_names() {
        assert!(valid_node_name("node-1_a"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("A"));
        assert!(!valid_node_name("a.b"));
        assert!(!valid_node_name(&"x".repeat(33)));
    }
}

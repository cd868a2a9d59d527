//! Agent start-up and shutdown: load the cluster file, open the control
//! socket, start the peer links, serve until SIGTERM/SIGINT.

use crate::control::{self, Agent};
use crate::migrate::Migrations;
use crate::monitor::{prometheus, Monitor};
use crate::peers::{self, Peers};
use crate::table::ProcessTable;
use crate::tls::TlsIdentity;
use anyhow::{bail, Context, Result};
use popcorn_proto::config::load_or_solo;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use tokio::net::UnixListener;
use tracing::info;

pub fn run(config_path: Option<&Path>, node: Option<&str>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the agent must run as root (it traces other users' processes): use `sudo popcorn-agent start`");
    }
    let config = Arc::new(load_or_solo(config_path)?);
    let me = config.select_node(node)?.clone();
    let tls = if config.nodes.len() > 1 {
        Some(TlsIdentity::load(&config, &me.name)?)
    } else {
        None
    };
    claim_pid_range(&config, &me.name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let socket = config.control_socket(&me.name);
        let listener = bind_control(&socket)?;
        let peers = Arc::new(Peers::new(config.clone(), me.name.clone()));
        let table = Arc::new(ProcessTable::default());
        let (inbox_tx, inbox_rx) = tokio::sync::mpsc::unbounded_channel();
        let (exits_tx, exits_rx) = tokio::sync::mpsc::unbounded_channel();
        peers.set_inbox(inbox_tx);
        table.set_exit_sink(exits_tx);
        let monitor = Monitor::start(
            me.name.clone(),
            me.isa,
            config.cluster.tracing,
            table.clone(),
            peers.clone(),
        );
        let migrations = Migrations::new(
            me.name.clone(),
            peers.clone(),
            table.clone(),
            monitor.clone(),
        );
        migrations.start(inbox_rx, exits_rx);
        if let Some(tls) = tls {
            peers::start(peers.clone(), tls, me.address).await?;
        }
        let agent = Arc::new(Agent {
            config: config.clone(),
            node: me.name.clone(),
            peers,
            table,
            migrations,
            monitor: monitor.clone(),
        });
        if config.cluster.metrics_port != 0 {
            let addr = std::net::SocketAddr::new(me.address.ip(), config.cluster.metrics_port);
            prometheus::start(addr, monitor, agent.peers.clone()).await;
        }
        info!(node = %me.name, cluster = %config.cluster.name, socket = %socket.display(), "agent started");
        let server = tokio::spawn(control::serve(listener, agent));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        info!("shutting down");
        server.abort();
        let _ = std::fs::remove_file(&socket);
        Ok(())
    })
}

/// In a node's own PID namespace (the local cluster), makes new PIDs start
/// at this node's share of the PID space, so a process migrating in keeps
/// its PID without colliding with the node's own (Popcorn gives each node a
/// PID range the same way). Node i of n starts at (i+1)·pid_max/(n+1).
fn claim_pid_range(config: &popcorn_proto::config::ClusterConfig, node: &str) {
    let nested = crate::init::in_node_pid_namespace();
    let Some(index) = config.nodes.iter().position(|n| n.name == node) else {
        return;
    };
    if !nested || config.nodes.len() < 2 {
        return;
    }
    let read = |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let (Some(pid_max), Some(last)) = (
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/ns_last_pid"),
    ) else {
        return;
    };
    let base = (index as u64 + 1) * (pid_max / (config.nodes.len() as u64 + 1));
    if last >= base {
        return;
    }
    match std::fs::write("/proc/sys/kernel/ns_last_pid", base.to_string()) {
        Ok(()) => info!(node, base, "PIDs of this node start at {base}"),
        Err(e) => tracing::warn!("cannot set this node's PID range: {e}"),
    }
}

/// Binds the control socket, refusing to steal one a live agent serves.
fn bind_control(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "an agent is already running for this node (control socket {} answers); stop it first",
            path.display()
        );
    }
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    // Everyone may connect; each request is checked against SO_PEERCRED.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

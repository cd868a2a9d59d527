//! The control socket: one JSON request per connection from the `popcorn`
//! CLI, the caller identified by SO_PEERCRED. Only root or the owner of a
//! process may act on it.

use crate::migrate::Migrations;
use crate::monitor::Monitor;
use crate::peers::Peers;
use crate::supervisor::{self, Launch};
use crate::table::ProcessTable;
use popcorn_proto::config::ClusterConfig;
use popcorn_proto::control::{
    decode_line, encode_line, Health, ProcessInfo, ProcessStateKind, Reply, Request, RunRequest,
    MAX_LINE,
};
use popcorn_proto::fdpass::recv_with_fds;
use popcorn_proto::monitor::{ClusterView, NodeView};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

/// What request handlers share.
pub struct Agent {
    pub config: Arc<ClusterConfig>,
    pub node: String,
    pub peers: Arc<Peers>,
    pub table: Arc<ProcessTable>,
    pub migrations: Arc<Migrations>,
    pub monitor: Arc<Monitor>,
}

/// Accepts control connections forever.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let agent = agent.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle_conn(stream, agent).await {
                        debug!("control connection: {e}");
                    }
                });
            }
            Err(e) => {
                warn!("accepting a control connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A control connection: JSON lines in both directions, descriptors
/// collected from whatever arrives.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Conn {
    /// Next line, or `None` at end of stream. Cancel-safe.
    async fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "control line too long",
                ));
            }
            self.stream.readable().await?;
            let mut chunk = [0u8; 8192];
            let fds = &mut self.fds;
            let stream = &self.stream;
            match stream.try_io(Interest::READABLE, || {
                recv_with_fds(stream.as_fd(), &mut chunk, fds)
            }) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    async fn send(&mut self, reply: &Reply) -> io::Result<()> {
        self.stream.write_all(&encode_line(reply)).await
    }
}

/// Who is asking.
#[derive(Clone, Copy)]
struct Caller {
    uid: u32,
    gid: u32,
}

/// Every node's figures: this one's, and those of the peers whose link is
/// up, asked in parallel.
async fn cluster_view(agent: &Arc<Agent>) -> ClusterView {
    let mut asks = tokio::task::JoinSet::new();
    for (i, status) in agent.peers.status().into_iter().enumerate() {
        let agent = agent.clone();
        asks.spawn(async move {
            let report = match status.health {
                Health::Local => Some(agent.monitor.report()),
                Health::Up => match agent.migrations.node_report(&status.name).await {
                    Ok(r) => Some(r),
                    Err(e) => {
                        debug!(node = %status.name, "figures of a peer: {e}");
                        None
                    }
                },
                Health::Down => None,
            };
            (i, NodeView { status, report })
        });
    }
    let mut nodes = asks.join_all().await;
    nodes.sort_by_key(|(i, _)| *i);
    let nodes = nodes.into_iter().map(|(_, v)| v).collect();
    ClusterView::merge(&agent.node, crate::monitor::unix_ms(), nodes)
}

fn error(message: impl Into<String>) -> Reply {
    Reply::Error {
        message: message.into(),
    }
}

async fn handle_conn(stream: UnixStream, agent: Arc<Agent>) -> io::Result<()> {
    let cred = stream.peer_cred()?;
    let caller = Caller {
        uid: cred.uid(),
        gid: cred.gid(),
    };
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        fds: Vec::new(),
    };
    let Some(line) = conn.read_line().await? else {
        return Ok(());
    };
    let request: Request = match decode_line(&line) {
        Ok(r) => r,
        Err(e) => {
            return conn
                .send(&error(format!(
                    "{e}; is the popcorn CLI the same version as the agent?"
                )))
                .await
        }
    };
    debug!(uid = caller.uid, ?request, "control request");
    let reply = match request {
        Request::Nodes => Reply::Nodes {
            nodes: agent.peers.status(),
        },
        Request::Ps => Reply::Ps {
            processes: agent.table.list(&agent.node),
        },
        Request::Top => Reply::Cluster(cluster_view(&agent).await),
        Request::Run(run) => return handle_run(conn, agent, caller, run).await,
        Request::Signal { .. } => error("`signal` is only valid on a `run` connection"),
        Request::Kill { pid, signal } => match check_access(&agent, caller, pid, "signal") {
            Err(e) => error(e),
            Ok(()) => kill(&agent, pid, signal).await,
        },
        Request::Migrate(req) => match check_access(&agent, caller, req.pid, "migrate") {
            Err(e) => error(e),
            Ok(()) => match agent.migrations.migrate(&req).await {
                Ok(report) => Reply::Migrated(report),
                Err(e) => error(e),
            },
        },
        Request::Freeze { pid } => match check_access(&agent, caller, pid, "freeze") {
            Err(e) => error(e),
            Ok(()) => freeze(&agent, pid).await,
        },
        Request::Thaw { pid } => match check_access(&agent, caller, pid, "thaw") {
            Err(e) => error(e),
            Ok(()) => match agent.table.handle(pid) {
                None => error(format!("process {pid} is not frozen")),
                Some(h) => match h.thaw().await {
                    Ok(()) => Reply::Thawed { pid },
                    Err(e) => error(e),
                },
            },
        },
        Request::Inspect { pid } => match check_access(&agent, caller, pid, "inspect") {
            Err(e) => error(e),
            Ok(()) => inspect(&agent, pid).await,
        },
    };
    conn.send(&reply).await
}

/// Refuses unknown processes and callers who are neither root nor owner.
/// A process this node is home of counts wherever it runs.
fn check_access(agent: &Agent, caller: Caller, pid: i32, verb: &str) -> Result<(), String> {
    let node = &agent.node;
    if pid <= 0 {
        return Err(format!("invalid PID {pid}"));
    }
    let managed = agent
        .table
        .info(pid)
        .filter(|i| i.state != ProcessStateKind::Exited)
        .map(|i| i.uid);
    let Some(owner) = managed.or_else(|| popcorn_checkpoint::process_owner_uid(pid).ok()) else {
        return Err(format!(
            "no process with PID {pid} on node '{node}' (PIDs are per node: see `popcorn --node {node} ps`)"
        ));
    };
    if caller.uid != 0 && caller.uid != owner {
        return Err(format!(
            "permission denied: process {pid} belongs to uid {owner}; only root or its owner may {verb} it"
        ));
    }
    if pid == std::process::id() as i32 {
        return Err(format!("process {pid} is this node's popcorn agent"));
    }
    Ok(())
}

async fn kill(agent: &Agent, pid: i32, signal: i32) -> Reply {
    let managed = agent
        .table
        .info(pid)
        .is_some_and(|i| i.state != ProcessStateKind::Exited);
    let result = if managed {
        agent.migrations.signal(pid, signal).await
    } else {
        // SAFETY: plain kill(2) of a process the caller may signal.
        match unsafe { libc::kill(pid, signal) } {
            0 => Ok(()),
            _ => Err(format!(
                "cannot send signal {signal} to {pid}: {}",
                io::Error::last_os_error()
            )),
        }
    };
    match result {
        Ok(()) => Reply::Done,
        Err(e) => error(e),
    }
}

async fn freeze(agent: &Agent, pid: i32) -> Reply {
    let handle = match agent.table.handle(pid) {
        Some(h) => h,
        None => match supervisor::attach(pid, agent.table.events()) {
            Ok(h) => {
                agent.table.add_attached(pid, h.clone());
                h
            }
            Err(e) => return error(e),
        },
    };
    match handle.freeze().await {
        Ok(threads) => Reply::Frozen { pid, threads },
        Err(e) => error(e),
    }
}

async fn inspect(agent: &Agent, pid: i32) -> Reply {
    let handle = match agent.table.handle(pid) {
        Some(h) => h,
        None => match supervisor::attach(pid, agent.table.events()) {
            Ok(h) => h,
            Err(e) => return error(e),
        },
    };
    match handle.inspect().await {
        Ok(state) => Reply::Inspect { state },
        Err(e) => error(e),
    }
}

async fn handle_run(
    mut conn: Conn,
    agent: Arc<Agent>,
    caller: Caller,
    run: RunRequest,
) -> io::Result<()> {
    for n in &run.nodes {
        if let Err(e) = agent.config.node(n) {
            return conn.send(&error(e.to_string())).await;
        }
    }
    if !run.nodes.is_empty() && !run.nodes.contains(&agent.node) {
        return conn
            .send(&error(format!(
                "this agent is node '{}', which is not in --nodes {}: the first node to run on must be the one you talk to (use `popcorn --node NAME run ...`)",
                agent.node,
                run.nodes.join(",")
            )))
            .await;
    }
    let fds = std::mem::take(&mut conn.fds);
    let Ok(stdio) = <[OwnedFd; 3]>::try_from(fds) else {
        return conn
            .send(&error(
                "`run` needs exactly three descriptors (stdin, stdout, stderr) attached",
            ))
            .await;
    };
    let nodes = if run.nodes.is_empty() {
        vec![agent.node.clone()]
    } else {
        run.nodes.clone()
    };
    let launch = Launch {
        program: run.program.clone(),
        argv: run.argv.clone(),
        env: run.env,
        cwd: run.cwd,
        uid: caller.uid,
        gid: caller.gid,
        stdio,
    };
    let (pid, pidfd, handle, registered) = match supervisor::launch(launch, agent.table.events()) {
        Ok(s) => s,
        Err(e) => return conn.send(&error(e)).await,
    };
    info!(pid, program = %run.program, uid = caller.uid, "started");
    let info = ProcessInfo {
        pid,
        uid: caller.uid,
        argv: run.argv,
        origin: agent.node.clone(),
        node: agent.node.clone(),
        nodes,
        state: ProcessStateKind::Running,
        threads: 1,
        exit: None,
    };
    let mut exit = agent.table.insert(info, handle, pidfd);
    agent.monitor.manage(pid);
    agent.migrations.serve_migrate_calls(pid, &run.program);
    registered.done();
    conn.send(&Reply::Started { pid }).await?;
    let mut client_gone = false;
    loop {
        tokio::select! {
            changed = exit.changed() => {
                let status = *exit.borrow_and_update();
                if let Some(status) = status {
                    info!(pid, ?status, "exited");
                    if !client_gone {
                        conn.send(&Reply::Exited { status }).await?;
                    }
                    return Ok(());
                }
                if changed.is_err() {
                    return Ok(());
                }
            }
            line = conn.read_line(), if !client_gone => {
                match line {
                    Ok(Some(line)) => match decode_line::<Request>(&line) {
                        Ok(Request::Signal { signal }) => {
                            if let Err(e) = agent.migrations.signal(pid, signal).await {
                                debug!(pid, signal, "forwarding signal: {e}");
                            }
                        }
                        Ok(other) => {
                            conn.send(&error(format!("unexpected request on a run connection: {other:?}"))).await?;
                        }
                        Err(e) => conn.send(&error(e.to_string())).await?,
                    },
                    // The client went away: the program keeps running.
                    Ok(None) | Err(_) => client_gone = true,
                }
            }
        }
    }
}

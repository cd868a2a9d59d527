//! Peer links: one authenticated TLS connection to every other node,
//! heartbeats over it, and the health table `popcorn nodes` reports.
//!
//! Of each pair, the node with the smaller name dials and the other accepts,
//! so a pair never holds two links. A dialer retries forever with backoff.
//!
//! A link multiplexes everything between two agents: heartbeats, calls
//! awaiting an answer (matched by `req_id`), page requests of post-copy
//! (many in flight; served here from processes exported to that peer),
//! notices and relayed stdio, which go to the agent's [`Inbound`] queue.

use crate::sync::lock;
use crate::tls::{check_peer_name, server_name, TlsIdentity};
use crate::traffic::Traffic;
use anyhow::{anyhow, bail, Context, Result};
use popcorn_proto::config::{ClusterConfig, Isa, NodeConfig};
use popcorn_proto::control::{Health, NodeStatus};
use popcorn_proto::wire::{decode_frame, encode_frame, frame_len, PeerMessage};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, info, warn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Heartbeats missed before a link is declared dead.
const MISSED_HEARTBEATS: u32 = 6;

#[derive(Debug, Default, Clone)]
struct PeerState {
    up: bool,
    link_id: u64,
    rtt_us: Option<f64>,
    last_seen: Option<Instant>,
    error: Option<String>,
}

/// A message from a peer for the agent to handle.
#[derive(Debug)]
pub enum Inbound {
    /// Answer with [`Peers::answer`].
    Call {
        from: String,
        req_id: u64,
        body: Vec<u8>,
    },
    Notice {
        from: String,
        body: Vec<u8>,
    },
    Stdio {
        from: String,
        pid: i32,
        fd: u8,
        offset: u64,
        data: Vec<u8>,
    },
}

/// An async caller waiting for an `Answer` body, or why there is none.
type Waiter = oneshot::Sender<Result<Vec<u8>, String>>;

/// An established link: its outgoing queue and who waits on it.
struct Link {
    id: u64,
    out: mpsc::Sender<PeerMessage>,
    pending: Mutex<HashMap<u64, Waiter>>,
}

impl Link {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        lock(&self.pending)
    }
}

/// Health of every other node, shared by the links and the control server;
/// the way to send to them.
pub struct Peers {
    config: Arc<ClusterConfig>,
    this: String,
    table: Mutex<HashMap<String, PeerState>>,
    next_link: AtomicU64,
    next_req: AtomicU64,
    epoch: Instant,
    links: Mutex<HashMap<String, Arc<Link>>>,
    inbox: OnceLock<mpsc::UnboundedSender<Inbound>>,
    tls_client: OnceLock<Arc<rustls::ClientConfig>>,
    /// `(peer, pid)`: processes whose memory `peer` may read (post-copy).
    exports: Mutex<HashSet<(String, i32)>>,
    /// Pages carried over the page channels, per process.
    pub traffic: Traffic,
}

impl Peers {
    pub fn new(config: Arc<ClusterConfig>, this: String) -> Peers {
        let table = config
            .nodes
            .iter()
            .filter(|n| n.name != this)
            .map(|n| {
                let state = PeerState {
                    error: Some("not connected yet".into()),
                    ..PeerState::default()
                };
                (n.name.clone(), state)
            })
            .collect();
        Peers {
            config,
            this,
            table: Mutex::new(table),
            next_link: 1.into(),
            next_req: 1.into(),
            epoch: Instant::now(),
            links: Mutex::new(HashMap::new()),
            inbox: OnceLock::new(),
            tls_client: OnceLock::new(),
            exports: Mutex::new(HashSet::new()),
            traffic: Traffic::default(),
        }
    }

    /// Where calls, notices and stdio from peers go (set once, at start).
    pub fn set_inbox(&self, tx: mpsc::UnboundedSender<Inbound>) {
        let _ = self.inbox.set(tx);
    }

    fn link(&self, peer: &str) -> Option<Arc<Link>> {
        lock(&self.links).get(peer).cloned()
    }

    fn link_or_err(&self, peer: &str) -> Result<Arc<Link>, String> {
        self.config.node(peer).map_err(|e| e.to_string())?;
        self.link(peer).ok_or_else(|| {
            let why = self
                .lock()
                .get(peer)
                .and_then(|s| s.error.clone())
                .unwrap_or_else(|| "no link".into());
            format!("node '{peer}' is not reachable ({why}); check `popcorn nodes`")
        })
    }

    /// Refuses names that are not in the cluster file.
    pub fn known(&self, peer: &str) -> Result<(), String> {
        self.config
            .node(peer)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The ISA a node of the cluster file declares.
    pub fn isa_of(&self, node: &str) -> Result<Isa, String> {
        self.config
            .node(node)
            .map(|n| n.isa)
            .map_err(|e| e.to_string())
    }

    /// The name of the cluster file's `i`-th node (from 0): Popcorn's node
    /// ids.
    pub fn node_name_at(&self, i: usize) -> Option<String> {
        self.config.nodes.get(i).map(|n| n.name.clone())
    }

    /// Refuses unknown nodes and nodes without an established link.
    pub fn reachable(&self, peer: &str) -> Result<(), String> {
        self.link_or_err(peer).map(|_| ())
    }

    pub fn next_req_id(&self) -> u64 {
        self.next_req.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `body` to `peer` and waits for its answer, at most `timeout`;
    /// fails at once when the link goes down.
    pub async fn call(
        &self,
        peer: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let link = self.link_or_err(peer)?;
        let req_id = self.next_req_id();
        let (tx, rx) = oneshot::channel();
        link.pending().insert(req_id, tx);
        if link
            .out
            .send(PeerMessage::Call { req_id, body })
            .await
            .is_err()
        {
            link.pending().remove(&req_id);
            return Err(format!("the link to '{peer}' closed"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(format!("the link to '{peer}' closed")),
            Err(_) => {
                link.pending().remove(&req_id);
                Err(format!(
                    "node '{peer}' did not answer within {} s",
                    timeout.as_secs()
                ))
            }
        }
    }

    /// Sends any frame to `peer` (answers, notices, stdio).
    pub async fn send(&self, peer: &str, msg: PeerMessage) -> Result<(), String> {
        let link = self.link_or_err(peer)?;
        link.out
            .send(msg)
            .await
            .map_err(|_| format!("the link to '{peer}' closed"))
    }

    pub async fn answer(&self, peer: &str, req_id: u64, body: Vec<u8>) -> Result<(), String> {
        self.send(peer, PeerMessage::Answer { req_id, body }).await
    }

    /// Where and how to open a page channel to `peer` (see
    /// `migrate::channel`).
    pub fn page_channel_target(
        &self,
        peer: &str,
    ) -> Result<(SocketAddr, Arc<rustls::ClientConfig>), String> {
        let node = self.config.node(peer).map_err(|e| e.to_string())?;
        let tls = self
            .tls_client
            .get()
            .ok_or_else(|| "this node has no peers (one-node cluster)".to_owned())?;
        Ok((node.address, tls.clone()))
    }

    pub fn cluster_name(&self) -> &str {
        &self.config.cluster.name
    }

    pub fn this_node(&self) -> &str {
        &self.this
    }

    /// Lets `peer` read the memory of (frozen) process `pid`.
    pub fn export(&self, peer: &str, pid: i32) {
        lock(&self.exports).insert((peer.to_owned(), pid));
    }

    pub fn unexport(&self, peer: &str, pid: i32) {
        lock(&self.exports).remove(&(peer.to_owned(), pid));
    }

    pub fn exported(&self, peer: &str, pid: i32) -> bool {
        lock(&self.exports).contains(&(peer.to_owned(), pid))
    }

    fn attach_link(&self, peer: &str, id: u64, out: mpsc::Sender<PeerMessage>) -> Arc<Link> {
        let link = Arc::new(Link {
            id,
            out,
            pending: Mutex::new(HashMap::new()),
        });
        let old = lock(&self.links).insert(peer.to_owned(), link.clone());
        if let Some(old) = old {
            fail_all(&old, peer);
        }
        link
    }

    fn detach_link(&self, peer: &str, link: &Arc<Link>) {
        {
            let mut links = lock(&self.links);
            if links.get(peer).is_some_and(|l| l.id == link.id) {
                links.remove(peer);
            }
        }
        fail_all(link, peer);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PeerState>> {
        lock(&self.table)
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.config.cluster.heartbeat_ms)
    }

    /// Status of every node, this one first.
    pub fn status(&self) -> Vec<NodeStatus> {
        let table = self.lock();
        let stale = self.heartbeat() * 3;
        self.config
            .nodes
            .iter()
            .map(|n| {
                if n.name == self.this {
                    return NodeStatus {
                        name: n.name.clone(),
                        address: n.address.to_string(),
                        isa: n.isa,
                        health: Health::Local,
                        rtt_us: None,
                        last_seen_ms: None,
                        error: None,
                    };
                }
                let s = table.get(&n.name).cloned().unwrap_or_default();
                let fresh = s.last_seen.is_some_and(|t| t.elapsed() < stale);
                let health = if s.up && fresh {
                    Health::Up
                } else {
                    Health::Down
                };
                NodeStatus {
                    name: n.name.clone(),
                    address: n.address.to_string(),
                    isa: n.isa,
                    health,
                    rtt_us: s.rtt_us,
                    last_seen_ms: s.last_seen.map(|t| t.elapsed().as_millis() as u64),
                    error: match health {
                        Health::Down => s.error.or_else(|| Some("heartbeats stopped".into())),
                        _ => None,
                    },
                }
            })
            .collect()
    }

    fn link_up(&self, peer: &str) -> u64 {
        let id = self
            .next_link
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut t = self.lock();
        let s = t.entry(peer.to_owned()).or_default();
        s.up = true;
        s.link_id = id;
        s.last_seen = Some(Instant::now());
        s.error = None;
        id
    }

    fn link_down(&self, peer: &str, link_id: Option<u64>, error: String) {
        let mut t = self.lock();
        let s = t.entry(peer.to_owned()).or_default();
        if link_id.is_none_or(|id| id == s.link_id) {
            s.up = false;
            s.error = Some(error);
        }
    }

    fn heard(&self, peer: &str, link_id: u64, rtt_us: Option<f64>) {
        let mut t = self.lock();
        if let Some(s) = t.get_mut(peer) {
            if s.link_id == link_id {
                s.last_seen = Some(Instant::now());
                if rtt_us.is_some() {
                    s.rtt_us = rtt_us;
                }
            }
        }
    }

    /// Names a node by the IP a connection came from, for refusal messages.
    fn node_at(&self, addr: SocketAddr) -> Option<String> {
        self.config
            .nodes
            .iter()
            .find(|n| n.address.ip() == addr.ip() && n.name != self.this)
            .map(|n| n.name.clone())
    }
}

/// Starts the listener and one dialer per node this one is to dial.
pub async fn start(peers: Arc<Peers>, tls: TlsIdentity, listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for peers on {listen}"))?;
    info!(%listen, "listening for peers");
    let _ = peers.tls_client.set(tls.client.clone());
    let acceptor = TlsAcceptor::from(tls.server.clone());
    tokio::spawn(accept_loop(peers.clone(), listener, acceptor));
    let connector = TlsConnector::from(tls.client.clone());
    let to_dial: Vec<NodeConfig> = peers
        .config
        .nodes
        .iter()
        .filter(|n| n.name.as_str() > peers.this.as_str())
        .cloned()
        .collect();
    for node in to_dial {
        tokio::spawn(dial_loop(peers.clone(), connector.clone(), node));
    }
    Ok(())
}

async fn accept_loop(peers: Arc<Peers>, listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("accepting a peer connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peers = peers.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match accept_one(&peers, tcp, acceptor).await {
                Ok(()) => {}
                Err(e) => {
                    warn!(%from, "refused peer connection: {e:#}");
                    if let Some(node) = peers.node_at(from) {
                        peers.link_down(&node, None, format!("refused its connection: {e:#}"));
                    }
                }
            }
        });
    }
}

async fn accept_one(peers: &Arc<Peers>, tcp: TcpStream, acceptor: TlsAcceptor) -> Result<()> {
    tcp.set_nodelay(true)?;
    let mut tls = tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| anyhow!("TLS handshake timed out"))?
        .context("TLS handshake failed")?;
    let hello = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut tls))
        .await
        .map_err(|_| anyhow!("no hello"))??;
    let (cluster, node, page_pid) = match hello {
        PeerMessage::Hello { cluster, node } => (cluster, node, None),
        PeerMessage::PageHello { cluster, node, pid } => (cluster, node, Some(pid)),
        _ => bail!("first frame was not a hello"),
    };
    if cluster != peers.config.cluster.name {
        bail!(
            "peer belongs to cluster '{cluster}', not '{}'",
            peers.config.cluster.name
        );
    }
    peers.config.node(&node)?;
    if node == peers.this {
        bail!("peer claims to be this node ('{node}')");
    }
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow!("peer presented no certificate"))?
        .clone();
    check_peer_name(&cert, &node)?;
    if let Some(pid) = page_pid {
        if !peers.exported(&node, pid) {
            bail!("'{node}' asked for the memory of process {pid}, which is not migrating to it");
        }
        // The channel is served synchronously on a thread of its own.
        let (tcp, conn) = tls.into_inner();
        let tcp = tcp.into_std()?;
        tcp.set_nonblocking(false)?;
        let stream = rustls::StreamOwned::new(conn, tcp);
        let peers = peers.clone();
        std::thread::Builder::new()
            .name(format!("pages-{pid}"))
            .spawn(move || {
                crate::migrate::channel::serve(&peers, &node, pid, stream, Vec::new())
            })?;
        return Ok(());
    }
    write_frame(&mut tls, &hello_of(peers)).await?;
    let id = peers.link_up(&node);
    info!(peer = %node, "peer link up (accepted)");
    let err = run_link(peers, &node, id, tls).await;
    info!(peer = %node, "peer link down: {err:#}");
    peers.link_down(&node, Some(id), format!("link lost: {err:#}"));
    Ok(())
}

async fn dial_loop(peers: Arc<Peers>, connector: TlsConnector, node: NodeConfig) {
    let mut backoff = Duration::from_millis(200);
    let mut last_error = String::new();
    loop {
        match dial_one(&peers, &connector, &node).await {
            Ok((id, err)) => {
                info!(peer = %node.name, "peer link down: {err:#}");
                peers.link_down(&node.name, Some(id), format!("link lost: {err:#}"));
                backoff = Duration::from_millis(200);
                last_error.clear();
            }
            Err(e) => {
                let message = format!("{e:#}");
                // Log each new reason once; retries with the same one are quiet.
                if message != last_error {
                    warn!(peer = %node.name, "cannot link to peer: {message}");
                    last_error = message.clone();
                } else {
                    debug!(peer = %node.name, "cannot link to peer: {message}");
                }
                peers.link_down(&node.name, None, message);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Connects and runs a link; `Ok` carries the error that ended an
/// established link, `Err` a failure to establish one.
async fn dial_one(
    peers: &Arc<Peers>,
    connector: &TlsConnector,
    node: &NodeConfig,
) -> Result<(u64, anyhow::Error)> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(node.address))
        .await
        .map_err(|_| anyhow!("connecting to {} timed out", node.address))?
        .with_context(|| format!("cannot connect to {}", node.address))?;
    tcp.set_nodelay(true)?;
    let mut tls = tokio::time::timeout(
        CONNECT_TIMEOUT,
        connector.connect(server_name(&node.name)?, tcp),
    )
    .await
    .map_err(|_| anyhow!("TLS handshake with {} timed out", node.address))?
    .with_context(|| format!("TLS handshake with {} failed", node.address))?;
    write_frame(&mut tls, &hello_of(peers)).await?;
    let hello = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut tls))
        .await
        .map_err(|_| anyhow!("no hello from {}", node.name))??;
    match hello {
        PeerMessage::Hello {
            cluster,
            node: name,
        } if cluster == peers.config.cluster.name && name == node.name => {}
        other => bail!("unexpected hello from {}: {other:?}", node.address),
    }
    let id = peers.link_up(&node.name);
    info!(peer = %node.name, "peer link up (dialed)");
    Ok((id, run_link(peers, &node.name, id, tls).await))
}

fn hello_of(peers: &Peers) -> PeerMessage {
    PeerMessage::Hello {
        cluster: peers.config.cluster.name.clone(),
        node: peers.this.clone(),
    }
}

/// Runs an established link until it fails; returns why.
async fn run_link<S>(peers: &Arc<Peers>, peer: &str, link_id: u64, stream: S) -> anyhow::Error
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<PeerMessage>(256);
    let link = peers.attach_link(peer, link_id, out_tx.clone());
    let (in_tx, mut in_rx) = mpsc::channel::<Result<PeerMessage>>(256);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if write_frame(&mut wr, &m).await.is_err() {
                break;
            }
        }
    });
    // Reading a frame is not cancel-safe, so it gets a task of its own.
    let reader = tokio::spawn(async move {
        loop {
            let frame = read_frame(&mut rd).await;
            let failed = frame.is_err();
            if in_tx.send(frame).await.is_err() || failed {
                break;
            }
        }
    });
    let hb = peers.heartbeat();
    let mut ticker = tokio::time::interval(hb);
    let mut seq = 0u64;
    let mut last_frame = Instant::now();
    let err = loop {
        tokio::select! {
            _ = ticker.tick() => {
                if last_frame.elapsed() > hb * MISSED_HEARTBEATS {
                    break anyhow!("no frame for {MISSED_HEARTBEATS} heartbeats");
                }
                seq += 1;
                if out_tx.send(PeerMessage::Ping { seq, sent_ns: peers.now_ns() }).await.is_err() {
                    break anyhow!("peer link writer stopped");
                }
            }
            frame = in_rx.recv() => {
                last_frame = Instant::now();
                match frame {
                    None => break anyhow!("peer link reader stopped"),
                    Some(Err(e)) => break e,
                    Some(Ok(PeerMessage::Ping { seq, sent_ns })) => {
                        peers.heard(peer, link_id, None);
                        if out_tx.send(PeerMessage::Pong { seq, sent_ns }).await.is_err() {
                            break anyhow!("peer link writer stopped");
                        }
                    }
                    Some(Ok(PeerMessage::Pong { sent_ns, .. })) => {
                        let rtt = peers.now_ns().saturating_sub(sent_ns) as f64 / 1000.0;
                        peers.heard(peer, link_id, Some(rtt));
                    }
                    Some(Ok(PeerMessage::Answer { req_id, body })) => deliver(&link, req_id, body),
                    Some(Ok(PeerMessage::Call { req_id, body })) => {
                        to_inbox(peers, Inbound::Call { from: peer.to_owned(), req_id, body });
                    }
                    Some(Ok(PeerMessage::Notice { body })) => {
                        to_inbox(peers, Inbound::Notice { from: peer.to_owned(), body });
                    }
                    Some(Ok(PeerMessage::Stdio { pid, fd, offset, data })) => {
                        to_inbox(peers, Inbound::Stdio { from: peer.to_owned(), pid, fd, offset, data });
                    }
                    Some(Ok(other)) => break anyhow!("protocol error: unexpected {}", kind_name(&other)),
                }
            }
        }
    };
    peers.detach_link(peer, &link);
    writer.abort();
    reader.abort();
    err
}

fn to_inbox(peers: &Peers, msg: Inbound) {
    match peers.inbox.get() {
        Some(tx) => {
            let _ = tx.send(msg);
        }
        None => debug!("no inbox: dropped {msg:?}"),
    }
}

fn fail_all(link: &Link, peer: &str) {
    let waiters: Vec<(u64, Waiter)> = link.pending().drain().collect();
    for (_, w) in waiters {
        let _ = w.send(Err(format!("the link to '{peer}' was lost")));
    }
}

/// Hands an answer to whoever waits for `req_id`.
fn deliver(link: &Link, req_id: u64, body: Vec<u8>) {
    match link.pending().remove(&req_id) {
        Some(tx) => {
            let _ = tx.send(Ok(body));
        }
        None => debug!(req_id, "answer to a call nobody waits for"),
    }
}

fn kind_name(m: &PeerMessage) -> &'static str {
    match m {
        PeerMessage::Hello { .. } => "hello",
        PeerMessage::PageHello { .. } => "page channel hello",
        PeerMessage::Ping { .. } => "ping",
        PeerMessage::Pong { .. } => "pong",
        PeerMessage::PageRequest { .. } => "page request",
        PeerMessage::PageData { .. } => "page data",
        PeerMessage::PageError { .. } => "page error",
        PeerMessage::Call { .. } => "call",
        PeerMessage::Answer { .. } => "answer",
        PeerMessage::Notice { .. } => "notice",
        PeerMessage::Stdio { .. } => "stdio",
    }
}

async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R) -> Result<PeerMessage> {
    let mut header = [0u8; 4];
    rd.read_exact(&mut header)
        .await
        .context("peer closed the link")?;
    let total = frame_len(header)?;
    let mut buf = vec![0u8; total];
    buf[..4].copy_from_slice(&header);
    rd.read_exact(&mut buf[4..])
        .await
        .context("peer closed the link mid-frame")?;
    match decode_frame(&buf)? {
        Some((msg, _)) => Ok(msg),
        None => bail!("incomplete frame"),
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(wr: &mut W, msg: &PeerMessage) -> std::io::Result<()> {
    wr.write_all(&encode_frame(msg)).await?;
    wr.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcorn_proto::config::ClusterSection;
    use std::path::PathBuf;

    fn cluster() -> Arc<ClusterConfig> {
        let node = |name: &str, ip: u8| NodeConfig {
            name: name.into(),
            address: SocketAddr::from(([10, 0, 0, ip], 7077)),
            isa: Isa::X86_64,
        };
        Arc::new(ClusterConfig {
            cluster: ClusterSection {
                name: "t".into(),
                pki_dir: PathBuf::from("/nonexistent"),
                run_dir: PathBuf::from("/nonexistent"),
                this: None,
                heartbeat_ms: 100,
                tracing: true,
                metrics_port: popcorn_proto::config::DEFAULT_METRICS_PORT,
            },
            nodes: vec![node("a", 1), node("b", 2), node("c", 3)],
        })
    }

    fn health(p: &Peers, name: &str) -> NodeStatus {
        p.status().into_iter().find(|n| n.name == name).unwrap()
    }

    #[test]
    fn health_follows_links_and_heartbeats() {
        let p = Peers::new(cluster(), "b".into());
        assert_eq!(health(&p, "b").health, Health::Local);
        let a = health(&p, "a");
        assert_eq!(a.health, Health::Down);
        assert_eq!(a.error.as_deref(), Some("not connected yet"));

        let id = p.link_up("a");
        p.heard("a", id, Some(42.0));
        let a = health(&p, "a");
        assert_eq!(a.health, Health::Up);
        assert_eq!(a.rtt_us, Some(42.0));
        assert_eq!(a.error, None);

        // A stale link ending must not mark a newer link down.
        let newer = p.link_up("a");
        p.link_down("a", Some(id), "old link lost".into());
        assert_eq!(health(&p, "a").health, Health::Up);
        // Heartbeats from the old link are ignored.
        p.heard("a", id, Some(1.0));
        assert_eq!(health(&p, "a").rtt_us, Some(42.0));
        p.link_down("a", Some(newer), "link lost: reset".into());
        let a = health(&p, "a");
        assert_eq!(a.health, Health::Down);
        assert_eq!(a.error.as_deref(), Some("link lost: reset"));
    }

    #[test]
    fn silence_means_down() {
        let p = Peers::new(cluster(), "a".into());
        p.link_up("c");
        assert_eq!(health(&p, "c").health, Health::Up);
        std::thread::sleep(Duration::from_millis(350));
        let c = health(&p, "c");
        assert_eq!(c.health, Health::Down);
        assert_eq!(c.error.as_deref(), Some("heartbeats stopped"));
    }

    #[test]
    fn refusals_are_attributed_by_address() {
        let p = Peers::new(cluster(), "a".into());
        assert_eq!(
            p.node_at(SocketAddr::from(([10, 0, 0, 3], 5555)))
                .as_deref(),
            Some("c")
        );
        assert_eq!(p.node_at(SocketAddr::from(([10, 0, 0, 1], 5555))), None);
        assert_eq!(p.node_at(SocketAddr::from(([10, 9, 9, 9], 5555))), None);
    }
}

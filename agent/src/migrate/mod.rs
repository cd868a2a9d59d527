//! Live migration of whole processes between agents (DESIGN §5): the
//! messages agents exchange, and the per-node state of processes that have
//! moved — stdio hubs at their home, relays where they run, restores
//! waiting for their commit, pagers still pulling memory.
//!
//! - [`outgoing`]: `popcorn migrate` at the node a process runs on.
//! - [`incoming`]: the destination's restore, commit and abort.
//! - [`pager`]: the destination's userfaultfd server (post-copy).
//! - [`relay`]: stdin/stdout/stderr between the home node and the host.

pub mod channel;
pub mod cross_isa;
pub mod incoming;
pub mod outgoing;
pub mod pager;
pub mod relay;

use crate::monitor::Monitor;
use crate::peers::{Inbound, Peers};
use crate::sync::lock;
use crate::table::ProcessTable;
use popcorn_checkpoint::ProcessState;
use popcorn_proto::control::{ExitStatus, MigrateRequest, MigrationReport};
use popcorn_proto::monitor::NodeReport;
use popcorn_proto::wire::PeerMessage;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// How long a caller waits for a peer's answer during a migration.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A file descriptor reopened at the destination by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReopen {
    pub fd: i32,
    pub path: String,
    /// `O_*` flags as open(2) takes them (creation flags removed).
    pub flags: u32,
    pub pos: u64,
}

/// Everything the destination needs to restore a process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    /// Node whose agent started the process and owns its terminal.
    pub home: String,
    pub uid: u32,
    pub argv: Vec<String>,
    pub nodes: Vec<String>,
    pub files: Vec<FileReopen>,
    /// Unread stdin (none on the first move from home: the hub starts
    /// reading the real stdin where the process stopped).
    #[serde(default)]
    pub stdin: relay::StdinBacklog,
    /// Pull pages in the background (else only on fault).
    #[serde(default = "yes")]
    pub background_push: bool,
    /// `(address, length)` of the pages attached after the JSON, in order:
    /// populated pages of private file mappings, which a userfaultfd cannot
    /// serve and which must be in place before the process runs.
    #[serde(default)]
    pub attached: Vec<(u64, u64)>,
    pub state: ProcessState,
}

fn yes() -> bool {
    true
}

/// Calls between agents (JSON in a `Call` frame).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum PeerCall {
    /// Restore this process, stopped; answer `Ready` or `Error`.
    Offer(Box<Offer>),
    /// Start this program (built with `popcorn build`) for this node's ISA
    /// and keep it at `main` for the offer that follows; answer `Prepared`
    /// or `Error`.
    PrepareCrossIsa(Box<cross_isa::CrossIsaStart>),
    /// Continue the prepared program with this thread and memory, stopped;
    /// answer `Ready` or `Error`.
    CrossIsaOffer(Box<cross_isa::CrossIsaOffer>),
    /// Let the restored process run; answer `Resumed`.
    Commit { pid: i32 },
    /// Forget the restored process (the origin keeps it).
    Abort { pid: i32 },
    /// This node's live figures; answer `Report`.
    Report,
    /// A user's `popcorn migrate` received by the process's home node,
    /// forwarded to the node it runs on.
    Migrate(MigrateRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum PeerAnswer {
    Ready {
        pages_at_origin: u64,
        pages_zero: u64,
        restore_us: u64,
    },
    Prepared,
    Resumed,
    Aborted,
    Migrated(MigrationReport),
    Report(Box<NodeReport>),
    Error {
        message: String,
    },
}

/// One-way messages between agents (JSON in a `Notice` frame).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum PeerNotice {
    /// To the home node: the process ended where it ran.
    Exited { pid: i32, status: ExitStatus },
    /// To the host: deliver a signal.
    Signal { pid: i32, signal: i32 },
    /// To the home node: the process now runs on `node`.
    Moved { pid: i32, node: String },
    /// To the origin: every page has arrived; drop the frozen copy.
    PushDone { pid: i32 },
    /// To the destination, once the process runs there: which pages of its
    /// anonymous mappings the origin ever populated (the rest is zero).
    Populated { pid: i32, vmas: Vec<PopulatedVma> },
}

/// One anonymous mapping at the origin and its populated `(start, len)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopulatedVma {
    pub start: u64,
    pub end: u64,
    pub populated: Vec<(u64, u64)>,
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain data types cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Splits a call body into the call (JSON) and the bytes attached after it.
fn decode_answer(body: &[u8]) -> Result<PeerAnswer, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed answer: {e}"))
}

fn decode_call(body: &[u8]) -> Result<(PeerCall, &[u8]), serde_json::Error> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<PeerCall>();
    let call = match values.next() {
        Some(c) => c?,
        None => return Err(serde::de::Error::custom("empty call")),
    };
    let end = values.byte_offset();
    Ok((call, &body[end..]))
}

/// How long `popcorn top` waits for a node's figures.
const REPORT_TIMEOUT: Duration = Duration::from_secs(1);

/// Per-node migration state; see the module documentation.
pub struct Migrations {
    pub node: String,
    pub peers: Arc<Peers>,
    pub table: Arc<ProcessTable>,
    rt: tokio::runtime::Handle,
    /// Home side: stdio of processes that have left home at least once.
    hubs: Mutex<HashMap<i32, Arc<relay::Hub>>>,
    /// Host side: relayed stdio of processes running here.
    hosted: Mutex<HashMap<i32, Arc<relay::HostRelay>>>,
    /// Restored here, waiting for the origin's commit.
    incoming: Mutex<HashMap<i32, incoming::Pending>>,
    /// Pagers of processes whose memory is still partly at their origin,
    /// with a flag that turns `true` once every page has arrived.
    pagers: Mutex<HashMap<i32, (watch::Receiver<bool>, pager::PagerHandle)>>,
    /// Processes migrated from here: where they went (for late stdin) and
    /// the frozen copy serving their pages.
    moved: Mutex<HashMap<i32, outgoing::Departed>>,
    /// Live figures: restored processes are traced, migrations logged.
    pub monitor: Arc<Monitor>,
    /// `APP.popcorn.json` of programs running here that arrived from
    /// another ISA (an emulated one's executable is qemu's).
    apps: Mutex<HashMap<i32, std::path::PathBuf>>,
    /// Programs started here for a move between ISAs, waiting at `main`
    /// for the offer.
    preparing: Mutex<HashMap<i32, cross_isa::Prepared>>,
}

impl Migrations {
    pub fn new(
        node: String,
        peers: Arc<Peers>,
        table: Arc<ProcessTable>,
        monitor: Arc<Monitor>,
    ) -> Arc<Migrations> {
        Arc::new(Migrations {
            node,
            peers,
            table,
            rt: tokio::runtime::Handle::current(),
            hubs: Mutex::default(),
            hosted: Mutex::default(),
            incoming: Mutex::default(),
            pagers: Mutex::default(),
            moved: Mutex::default(),
            monitor,
            apps: Mutex::default(),
            preparing: Mutex::default(),
        })
    }

    /// Serves peer calls, notices and stdio, and relayed processes' exits.
    pub fn start(
        self: &Arc<Self>,
        mut inbox: mpsc::UnboundedReceiver<Inbound>,
        mut exits: mpsc::UnboundedReceiver<(i32, Option<ExitStatus>)>,
    ) {
        self.watch_migrate_calls();
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(msg) = inbox.recv().await {
                me.inbound(msg).await;
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((pid, status)) = exits.recv().await {
                let me = me.clone();
                tokio::spawn(async move { me.relayed_exit(pid, status).await });
            }
        });
    }

    async fn inbound(self: &Arc<Self>, msg: Inbound) {
        match msg {
            Inbound::Call { from, req_id, body } => {
                let me = self.clone();
                tokio::spawn(async move {
                    let answer = match decode_call(&body) {
                        Ok((call, attached)) => me.call(&from, call, attached).await,
                        Err(e) => PeerAnswer::Error {
                            message: format!(
                                "malformed call: {e}; are both agents the same version?"
                            ),
                        },
                    };
                    if let Err(e) = me.peers.answer(&from, req_id, encode(&answer)).await {
                        warn!(peer = %from, "answering a call: {e}");
                    }
                });
            }
            Inbound::Notice { from, body } => match serde_json::from_slice::<PeerNotice>(&body) {
                Ok(n) => self.notice(&from, n).await,
                Err(e) => warn!(peer = %from, "malformed notice: {e}"),
            },
            Inbound::Stdio {
                from,
                pid,
                fd,
                offset,
                data,
            } => self.stdio(&from, pid, fd, offset, data).await,
        }
    }

    /// The live figures of node `peer`.
    pub async fn node_report(&self, peer: &str) -> Result<NodeReport, String> {
        let body = self
            .peers
            .call(peer, encode(&PeerCall::Report), REPORT_TIMEOUT)
            .await?;
        match decode_answer(&body)? {
            PeerAnswer::Report(r) => Ok(*r),
            PeerAnswer::Error { message } => Err(message),
            other => Err(format!("unexpected answer from {peer}: {other:?}")),
        }
    }

    async fn call(self: &Arc<Self>, from: &str, call: PeerCall, attached: &[u8]) -> PeerAnswer {
        let r = match call {
            PeerCall::Offer(offer) => self.accept_offer(from, *offer, attached).await,
            PeerCall::PrepareCrossIsa(start) => self.prepare_cross_isa(from, *start).await,
            PeerCall::CrossIsaOffer(offer) => self.accept_cross_isa(from, *offer, attached).await,
            PeerCall::Commit { pid } => self.commit(from, pid).await,
            PeerCall::Abort { pid } => Ok(self.abort(pid, "the origin aborted the migration")),
            PeerCall::Report => Ok(PeerAnswer::Report(Box::new(self.monitor.report()))),
            PeerCall::Migrate(req) => self.migrate(&req).await.map(PeerAnswer::Migrated),
        };
        r.unwrap_or_else(|message| PeerAnswer::Error { message })
    }

    async fn notice(self: &Arc<Self>, from: &str, n: PeerNotice) {
        debug!(peer = %from, ?n, "notice");
        match n {
            PeerNotice::Exited { pid, status } => match self.hub(pid) {
                Some(hub) => hub.exited(status),
                None => warn!(pid, peer = %from, "exit of a process this node is not home of"),
            },
            PeerNotice::Signal { pid, signal } => {
                if let Err(e) = self.signal(pid, signal).await {
                    warn!(pid, signal, "forwarded signal: {e}");
                }
            }
            PeerNotice::Moved { pid, node } => {
                if let Some(hub) = self.hub(pid) {
                    hub.set_location(&node);
                }
                self.table.set_node(pid, &node);
            }
            PeerNotice::PushDone { pid } => {
                // Freeing a large frozen copy takes a while: not inline.
                let me = self.clone();
                let from = from.to_owned();
                tokio::spawn(async move { me.push_done(&from, pid).await });
            }
            PeerNotice::Populated { pid, vmas } => match lock(&self.pagers).get(&pid) {
                Some((_, pager)) => pager.populated(vmas),
                None => debug!(pid, "population map for a process whose pages are all here"),
            },
        }
    }

    async fn stdio(self: &Arc<Self>, from: &str, pid: i32, fd: u8, offset: u64, data: Vec<u8>) {
        if fd == 0 {
            if let Some(relay) = lock(&self.hosted).get(&pid).cloned() {
                relay.stdin(offset, data);
                return;
            }
            let moved = lock(&self.moved).get(&pid).map(|d| d.to.clone());
            match moved {
                Some(to) => {
                    let msg = PeerMessage::Stdio {
                        pid,
                        fd,
                        offset,
                        data,
                    };
                    if let Err(e) = self.peers.send(&to, msg).await {
                        warn!(pid, "forwarding stdin to {to}: {e}");
                    }
                }
                None => debug!(pid, peer = %from, "stdin for a process not here"),
            }
            return;
        }
        match self.hub(pid) {
            Some(hub) => hub.output(fd, data),
            None => debug!(pid, peer = %from, "output of a process this node is not home of"),
        }
    }

    fn hub(&self, pid: i32) -> Option<Arc<relay::Hub>> {
        lock(&self.hubs).get(&pid).cloned()
    }

    /// Sends a signal to `pid` wherever it runs.
    pub async fn signal(&self, pid: i32, signal: i32) -> Result<(), String> {
        let Some(info) = self.table.info(pid) else {
            return Err(format!("process {pid} is not managed here"));
        };
        if info.node == self.node {
            let (_, pidfd) = self
                .table
                .managed(pid)
                .ok_or_else(|| format!("process {pid} has exited"))?;
            return crate::sys::pidfd_send_signal(std::os::fd::AsFd::as_fd(&*pidfd), signal)
                .map_err(|e| format!("cannot send signal {signal} to {pid}: {e}"));
        }
        let body = encode(&PeerNotice::Signal { pid, signal });
        self.peers
            .send(&info.node, PeerMessage::Notice { body })
            .await
    }

    /// A relayed process ended here: let its output drain, then tell its
    /// home (here or remote).
    async fn relayed_exit(self: &Arc<Self>, pid: i32, status: Option<ExitStatus>) {
        let status = status.unwrap_or(ExitStatus::Signal(libc::SIGKILL));
        let relay = lock(&self.hosted).remove(&pid);
        let home = match &relay {
            Some(r) => r.home().to_owned(),
            None => self.table.info(pid).map(|i| i.origin).unwrap_or_default(),
        };
        if let Some(r) = relay {
            let _ =
                tokio::task::spawn_blocking(move || r.wait_outputs(Duration::from_secs(3))).await;
        }
        info!(pid, ?status, %home, "migrated process exited");
        if home == self.node {
            if let Some(hub) = self.hub(pid) {
                hub.exited(status);
            }
            return;
        }
        self.table.remove(pid);
        let body = encode(&PeerNotice::Exited { pid, status });
        if let Err(e) = self.peers.send(&home, PeerMessage::Notice { body }).await {
            warn!(pid, %home, "cannot report the exit: {e}");
        }
    }

    /// The hub finished writing a process's output: it has ended.
    pub(crate) fn hub_finished(&self, pid: i32, status: ExitStatus) {
        lock(&self.hubs).remove(&pid);
        self.table.finish(pid, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_migrate_wire_form_is_stable() {
        let call = PeerCall::Migrate(MigrateRequest {
            pid: 9,
            to: "c".into(),
            no_push: false,
            wait: true,
        });
        let body = encode(&call);
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            "{\"call\":\"migrate\",\"pid\":9,\"to\":\"c\",\"no_push\":false,\"wait\":true}"
        );
        match decode_call(b"{\"call\":\"migrate\",\"pid\":9,\"to\":\"c\"}").unwrap() {
            (PeerCall::Migrate(req), rest) => {
                assert_eq!(
                    (req.pid, req.to.as_str(), req.no_push, req.wait),
                    (9, "c", false, false)
                );
                assert!(rest.is_empty());
            }
            (other, _) => panic!("decoded {other:?}"),
        }
    }
}

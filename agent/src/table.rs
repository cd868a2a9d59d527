//! The agent's process table: programs it launched or is home of (shown by
//! `popcorn ps`, with the node each runs on), migrated processes it hosts,
//! and other processes it currently holds frozen, each with the handle of
//! its supervisor thread.

use crate::supervisor::{Events, Handle};
use popcorn_proto::control::{ExitStatus, ProcessInfo, ProcessStateKind};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::{mpsc, watch};

/// Exited entries kept for `ps` before the oldest are dropped.
const KEEP_EXITED: usize = 64;

pub struct Managed {
    pub info: ProcessInfo,
    pub handle: Handle,
    pub pidfd: Arc<OwnedFd>,
    exit_tx: watch::Sender<Option<ExitStatus>>,
    /// Its standard streams are relayed pipes (it has migrated): its exit
    /// goes through the relay so the output drains first.
    relayed: bool,
}

impl Managed {
    fn new(
        info: ProcessInfo,
        handle: Handle,
        pidfd: OwnedFd,
        relayed: bool,
    ) -> (Managed, watch::Receiver<Option<ExitStatus>>) {
        let (exit_tx, rx) = watch::channel(None);
        let entry = Managed {
            info,
            handle,
            pidfd: Arc::new(pidfd),
            exit_tx,
            relayed,
        };
        (entry, rx)
    }
}

#[derive(Default)]
struct Inner {
    managed: BTreeMap<i32, Managed>,
    attached: HashMap<i32, Handle>,
    exited_order: Vec<i32>,
}

/// Exits of relayed processes, for the migration layer.
pub type ExitSink = mpsc::UnboundedSender<(i32, Option<ExitStatus>)>;

#[derive(Default)]
pub struct ProcessTable {
    inner: Mutex<Inner>,
    relayed_exits: OnceLock<ExitSink>,
}

impl ProcessTable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Records a launched process.
    pub fn insert(
        &self,
        info: ProcessInfo,
        handle: Handle,
        pidfd: OwnedFd,
    ) -> watch::Receiver<Option<ExitStatus>> {
        let (entry, rx) = Managed::new(info, handle, pidfd, false);
        let mut inner = self.lock();
        inner.exited_order.retain(|&p| p != entry.info.pid);
        inner.managed.insert(entry.info.pid, entry);
        rx
    }

    /// Where exits of relayed processes go (set once, at start).
    pub fn set_exit_sink(&self, tx: ExitSink) {
        let _ = self.relayed_exits.set(tx);
    }

    /// Records a process restored here by a migration: updates its entry
    /// at its home node, or creates one.
    pub fn insert_hosted(&self, info: ProcessInfo, handle: Handle, pidfd: OwnedFd) {
        let mut inner = self.lock();
        inner.exited_order.retain(|&p| p != info.pid);
        match inner.managed.get_mut(&info.pid) {
            Some(m) => {
                m.info.node = info.node;
                m.info.state = ProcessStateKind::Running;
                m.handle = handle;
                m.pidfd = Arc::new(pidfd);
                m.relayed = true;
            }
            None => {
                let (entry, _) = Managed::new(info, handle, pidfd, true);
                inner.managed.insert(entry.info.pid, entry);
            }
        }
    }

    /// The entry of `pid`, if any.
    pub fn info(&self, pid: i32) -> Option<ProcessInfo> {
        self.lock().managed.get(&pid).map(|m| m.info.clone())
    }

    /// `pid` now runs on `node`.
    pub fn set_node(&self, pid: i32, node: &str) {
        if let Some(m) = self.lock().managed.get_mut(&pid) {
            m.info.node = node.to_owned();
            m.info.state = ProcessStateKind::Running;
        }
    }

    /// Forgets a process that left (this node is not its home).
    pub fn remove(&self, pid: i32) {
        self.lock().managed.remove(&pid);
    }

    /// A process ended (wherever it ran): record it and wake `popcorn run`.
    pub fn finish(&self, pid: i32, status: ExitStatus) {
        let mut inner = self.lock();
        let Some(m) = inner.managed.get_mut(&pid) else {
            return;
        };
        m.info.state = ProcessStateKind::Exited;
        m.info.exit = Some(status);
        m.info.threads = 0;
        let _ = m.exit_tx.send(Some(status));
        inner.exited_order.push(pid);
        while inner.exited_order.len() > KEEP_EXITED {
            let old = inner.exited_order.remove(0);
            inner.managed.remove(&old);
        }
    }

    /// Snapshot for `ps`, with live thread counts of local processes.
    /// `this` is the node answering.
    pub fn list(&self, this: &str) -> Vec<ProcessInfo> {
        let inner = self.lock();
        inner
            .managed
            .values()
            .map(|m| {
                let mut info = m.info.clone();
                if info.state != ProcessStateKind::Exited && info.node == this {
                    info.threads = crate::sys::thread_count(info.pid);
                }
                info
            })
            .collect()
    }

    /// Handle and pidfd of a live launched process.
    pub fn managed(&self, pid: i32) -> Option<(Handle, Arc<OwnedFd>)> {
        let inner = self.lock();
        inner
            .managed
            .get(&pid)
            .filter(|m| m.info.state != ProcessStateKind::Exited)
            .map(|m| (m.handle.clone(), m.pidfd.clone()))
    }

    /// The supervisor already controlling `pid`, launched or attached.
    pub fn handle(&self, pid: i32) -> Option<Handle> {
        self.managed(pid)
            .map(|(h, _)| h)
            .or_else(|| self.lock().attached.get(&pid).cloned())
    }

    pub fn add_attached(&self, pid: i32, handle: Handle) {
        self.lock().attached.insert(pid, handle);
    }

    /// Event sink handed to supervisors.
    pub fn events(self: &Arc<Self>) -> TableEvents {
        TableEvents(self.clone())
    }
}

/// Applies supervisor reports to the table.
pub struct TableEvents(Arc<ProcessTable>);

impl Events for TableEvents {
    fn frozen(&self, pid: i32, frozen: bool) {
        let mut inner = self.0.lock();
        if let Some(m) = inner.managed.get_mut(&pid) {
            m.info.state = if frozen {
                ProcessStateKind::Frozen
            } else {
                ProcessStateKind::Running
            };
        } else if !frozen {
            inner.attached.remove(&pid);
        }
    }

    fn exited(&self, pid: i32, status: Option<ExitStatus>) {
        let relayed = {
            let mut inner = self.0.lock();
            inner.attached.remove(&pid);
            inner.managed.get(&pid).is_some_and(|m| m.relayed)
        };
        if relayed {
            if let Some(tx) = self.0.relayed_exits.get() {
                let _ = tx.send((pid, status));
                return;
            }
        }
        self.0
            .finish(pid, status.unwrap_or(ExitStatus::Signal(libc::SIGKILL)));
    }
}

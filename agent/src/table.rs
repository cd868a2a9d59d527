//! The agent's process table: programs it launched (shown by `popcorn ps`)
//! and other processes it currently holds frozen, each with the handle of
//! its supervisor thread.

use crate::supervisor::{Events, Handle};
use popcorn_proto::control::{ExitStatus, ProcessInfo, ProcessStateKind};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Exited entries kept for `ps` before the oldest are dropped.
const KEEP_EXITED: usize = 64;

pub struct Managed {
    pub info: ProcessInfo,
    pub handle: Handle,
    pub pidfd: Arc<OwnedFd>,
    exit_tx: watch::Sender<Option<ExitStatus>>,
}

#[derive(Default)]
struct Inner {
    managed: BTreeMap<i32, Managed>,
    attached: HashMap<i32, Handle>,
    exited_order: Vec<i32>,
}

#[derive(Default)]
pub struct ProcessTable {
    inner: Mutex<Inner>,
}

impl ProcessTable {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a launched process.
    pub fn insert(
        &self,
        info: ProcessInfo,
        handle: Handle,
        pidfd: OwnedFd,
    ) -> watch::Receiver<Option<ExitStatus>> {
        let (exit_tx, rx) = watch::channel(None);
        let mut inner = self.lock();
        inner.exited_order.retain(|&p| p != info.pid);
        inner.managed.insert(
            info.pid,
            Managed {
                info,
                handle,
                pidfd: Arc::new(pidfd),
                exit_tx,
            },
        );
        rx
    }

    /// Snapshot for `ps`, with live thread counts.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let inner = self.lock();
        inner
            .managed
            .values()
            .map(|m| {
                let mut info = m.info.clone();
                if info.state != ProcessStateKind::Exited {
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
        let mut inner = self.0.lock();
        inner.attached.remove(&pid);
        let Some(m) = inner.managed.get_mut(&pid) else {
            return;
        };
        m.info.state = ProcessStateKind::Exited;
        m.info.exit = status;
        m.info.threads = 0;
        let _ = m
            .exit_tx
            .send(status.or(Some(ExitStatus::Signal(libc::SIGKILL))));
        inner.exited_order.push(pid);
        while inner.exited_order.len() > KEEP_EXITED {
            let old = inner.exited_order.remove(0);
            inner.managed.remove(&old);
        }
    }
}

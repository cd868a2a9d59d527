//! `popcorn migrate` on the node a process runs on: preflight (nothing
//! changed yet), freeze, capture, offer to the destination, commit; on any
//! failure before the destination confirms it runs, the process is thawed
//! where it was. Afterwards this node keeps the frozen copy as the page
//! source until the destination has pulled every page.

use super::relay::Hub;
use super::{
    decode_answer, encode, lock, FileReopen, Migrations, Offer, PeerAnswer, PeerCall, PeerNotice,
    PopulatedVma, CALL_TIMEOUT,
};
use crate::supervisor::Handle;
use popcorn_checkpoint::{Backing, FdKind, FdState, PageScan, ProcessState, Vma};
use popcorn_proto::control::{MigrateRequest, MigrationReport, ProcessStateKind};
use popcorn_proto::wire::PeerMessage;
use popcorn_proto::wire::PAGE_SIZE;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long a migration waits for the process's previous move to finish
/// pulling memory.
const PREVIOUS_MOVE_WAIT: Duration = Duration::from_secs(60);
/// How long `migrate --wait` waits for the memory transfer.
const TRANSFER_WAIT: Duration = Duration::from_secs(600);

/// A process migrating or migrated from here, until its destination has
/// all its pages.
pub struct Departed {
    pub to: String,
    /// The frozen copy serving pages; discarded on `PushDone` once the
    /// migration is committed.
    pub shadow: Option<Handle>,
    pub committed: bool,
    /// `PushDone` arrived before the commit was confirmed.
    pub push_done: bool,
    /// Turns `true` once the frozen copy is discarded (after `PushDone`).
    pub done: tokio::sync::watch::Sender<bool>,
}

/// Character devices reopened by path: the same on every Linux machine.
const SAME_EVERYWHERE: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Most bytes of private file pages sent with an offer (more are fetched).
const MAX_ATTACHED: u64 = 8 << 20;

/// Populated pages of private, non-executable file mappings, read from the
/// frozen process: `(ranges, their bytes)`.
fn attach_file_pages(pid: i32, state: &ProcessState) -> (Vec<(u64, u64)>, Vec<u8>) {
    let mut ranges = Vec::new();
    let mut data = Vec::new();
    for v in &state.vmas {
        let private = v.perms.as_bytes().get(3) == Some(&b'p');
        if v.backing != Backing::File || !private || v.executable() {
            continue;
        }
        for r in &v.populated {
            let len = r.pages * PAGE_SIZE as u64;
            if data.len() as u64 + len > MAX_ATTACHED {
                return (ranges, data);
            }
            let at = data.len();
            data.resize(at + len as usize, 0);
            match popcorn_checkpoint::read_memory(pid, r.start, &mut data[at..]) {
                Ok(n) if n as u64 == len => ranges.push((r.start, len)),
                _ => data.truncate(at),
            }
        }
    }
    (ranges, data)
}

/// Refuses descriptors that cannot move; regular files and directories are
/// reopened at the destination by path. fds 0–2 are always relayed.
pub fn carried_files(fds: &[FdState], node: &str) -> Result<Vec<FileReopen>, String> {
    let mut out = Vec::new();
    for f in fds.iter().filter(|f| f.fd > 2) {
        let mut reopenable = false;
        let kind = match &f.kind {
            FdKind::File | FdKind::Directory if !f.target.ends_with(" (deleted)") => {
                reopenable = true;
                "file".to_owned()
            }
            // Devices that are the same on every Linux machine.
            FdKind::Device if SAME_EVERYWHERE.contains(&f.target.as_str()) => {
                reopenable = true;
                "device".to_owned()
            }
            FdKind::File | FdKind::Directory => "deleted file".to_owned(),
            FdKind::Pipe => "pipe".into(),
            FdKind::Socket => "socket".into(),
            FdKind::AnonInode(name) => format!("{name} descriptor"),
            FdKind::Tty => "terminal".into(),
            FdKind::Device => "device".into(),
            FdKind::Memfd(_) => "memfd".into(),
            FdKind::Other => "special file".into(),
        };
        if reopenable {
            let creation = (libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY) as u32;
            out.push(FileReopen {
                fd: f.fd,
                path: f.target.clone(),
                flags: f.flags & !creation,
                pos: f.pos,
            });
            continue;
        }
        return Err(format!(
            "fd {} is a {kind} ({}): popcorn carries standard streams and regular files only, so the process stays on node '{node}'; close that descriptor before migrating",
            f.fd, f.target
        ));
    }
    Ok(out)
}

impl Migrations {
    /// Moves `pid` to `to`; see the module documentation.
    pub async fn migrate(
        self: &Arc<Self>,
        req: &MigrateRequest,
    ) -> Result<MigrationReport, String> {
        let MigrateRequest {
            pid,
            ref to,
            no_push,
            wait,
        } = *req;
        let to = to.as_str();
        let info = self
            .table
            .info(pid)
            .filter(|i| i.state != ProcessStateKind::Exited)
            .ok_or_else(|| {
                format!(
                    "process {pid} is not managed by node '{}': only programs started with `popcorn run` can migrate (see `popcorn ps`)",
                    self.node
                )
            })?;
        self.peers.known(to)?;
        if info.node != self.node {
            if info.node == to {
                return Err(format!("process {pid} already runs on node '{to}'"));
            }
            // Ask the node it runs on.
            let call = encode(&PeerCall::Migrate(req.clone()));
            let body = self.peers.call(&info.node, call, CALL_TIMEOUT * 2).await?;
            return match decode_answer(&body)? {
                PeerAnswer::Migrated(r) => Ok(r),
                PeerAnswer::Error { message } => Err(message),
                other => Err(format!("unexpected answer from {}: {other:?}", info.node)),
            };
        }
        if to == self.node {
            return Err(format!("process {pid} already runs on node '{to}'"));
        }
        let (here, there) = (self.peers.isa_of(&self.node)?, self.peers.isa_of(to)?);
        self.peers.reachable(to)?;
        let pending = lock(&self.pagers).get(&pid).map(|(done, _)| done.clone());
        if let Some(mut done) = pending {
            let wait = done.wait_for(|d| *d);
            if tokio::time::timeout(PREVIOUS_MOVE_WAIT, wait)
                .await
                .is_err()
            {
                return Err(format!(
                    "process {pid} is still receiving its memory from its previous node; try again later"
                ));
            }
        }
        if here != there || lock(&self.apps).contains_key(&pid) {
            let (handle, _) = self
                .table
                .managed(pid)
                .ok_or_else(|| format!("process {pid} has exited"))?;
            return self
                .migrate_across(pid, to, (here, there), info, handle)
                .await;
        }
        let fds = popcorn_checkpoint::read_fds(pid).map_err(|e| e.to_string())?;
        carried_files(&fds, &self.node)?;
        let (handle, _) = self
            .table
            .managed(pid)
            .ok_or_else(|| format!("process {pid} has exited"))?;
        let t0 = Instant::now();
        let threads = handle.freeze().await?;
        match self
            .migrate_frozen(pid, to, &handle, t0, threads, no_push)
            .await
        {
            Ok(mut r) if wait => {
                let resumed = Instant::now();
                let done = lock(&self.moved).get(&pid).map(|d| d.done.subscribe());
                if let Some(mut done) = done {
                    let all = done.wait_for(|d| *d);
                    if tokio::time::timeout(TRANSFER_WAIT, all).await.is_err() {
                        return Err(format!(
                            "process {pid} runs on '{to}', but its memory was not all there after {} s",
                            TRANSFER_WAIT.as_secs()
                        ));
                    }
                }
                r.transfer_ms = Some(resumed.elapsed().as_millis() as u64);
                Ok(r)
            }
            Ok(r) => Ok(r),
            Err(e) => {
                self.peers.unexport(to, pid);
                lock(&self.moved).remove(&pid);
                if let Some(r) = lock(&self.hosted).get(&pid) {
                    r.resume_stdin();
                }
                if let Err(t) = handle.thaw().await {
                    warn!(pid, "thaw after a failed migration: {t}");
                }
                warn!(pid, %to, "migration failed: {e}");
                Err(format!(
                    "{e}; process {pid} keeps running on node '{}'",
                    self.node
                ))
            }
        }
    }

    async fn migrate_frozen(
        self: &Arc<Self>,
        pid: i32,
        to: &str,
        handle: &Handle,
        t0: Instant,
        threads: usize,
        no_push: bool,
    ) -> Result<MigrationReport, String> {
        let info = self
            .table
            .info(pid)
            .ok_or_else(|| format!("process {pid} vanished from the table"))?;
        let frozen_us = t0.elapsed().as_micros() as u64;
        let state = handle.capture(PageScan::FileMappings).await?;
        let captured_us = t0.elapsed().as_micros() as u64;
        let files = carried_files(&state.fds, &self.node)?;
        let (real_stdio, stdin) = self.prepare_stdio(pid, handle).await?;
        self.peers.export(to, pid);
        self.departing(pid, to, handle);
        let (attached, data) = attach_file_pages(pid, &state);
        let anonymous: Vec<Vma> = state
            .vmas
            .iter()
            .filter(|v| v.backing == Backing::Anonymous)
            .cloned()
            .collect();
        let offer = Offer {
            home: info.origin.clone(),
            uid: info.uid,
            argv: info.argv.clone(),
            nodes: info.nodes.clone(),
            files,
            stdin,
            background_push: !no_push,
            attached,
            state,
        };
        let mut body = encode(&PeerCall::Offer(Box::new(offer)));
        body.extend_from_slice(&data);
        let offer_bytes = body.len() as u64;
        let sent_us = t0.elapsed().as_micros() as u64;
        match decode_answer(&self.peers.call(to, body, CALL_TIMEOUT).await?)? {
            PeerAnswer::Ready { restore_us, .. } => {
                info!(
                    pid,
                    frozen_us,
                    captured_us,
                    sent_us,
                    restore_us,
                    ready_us = t0.elapsed().as_micros() as u64,
                    "restored at the destination"
                );
            }
            PeerAnswer::Error { message } => {
                return Err(format!("node '{to}' could not restore it: {message}"))
            }
            other => return Err(format!("unexpected answer from {to}: {other:?}")),
        };
        self.commit_at(pid, to).await?;
        let downtime = t0.elapsed();
        let (pages_at_origin, pages_zero) = self.send_population_map(pid, to, anonymous).await;

        let discard_now = self.settle_departure(pid, to, &info, real_stdio).await;
        if discard_now {
            self.push_done(to, pid).await;
        }
        let report = MigrationReport {
            pid,
            from: self.node.clone(),
            to: to.to_owned(),
            threads,
            downtime_us: downtime.as_micros() as u64,
            bytes_before_resume: offer_bytes,
            pages_at_origin,
            pages_zero,
            transfer_ms: None,
        };
        Ok(self.migrated(report))
    }

    /// Logs and records a migration that left this node.
    pub(super) fn migrated(&self, report: MigrationReport) -> MigrationReport {
        info!(?report, "migrated");
        self.monitor.record_migration(&report);
        report
    }

    /// Standard streams of a process about to leave: its relay's pending
    /// output written and unread stdin taken back (it runs away from home
    /// already), or the real stdin/stdout/stderr to hand to a new hub (it
    /// leaves home for the first time).
    pub(super) async fn prepare_stdio(
        &self,
        pid: i32,
        handle: &Handle,
    ) -> Result<(Option<[OwnedFd; 3]>, super::relay::StdinBacklog), String> {
        let relay = lock(&self.hosted).get(&pid).cloned();
        Ok(match relay {
            Some(r) => {
                let backlog = tokio::task::spawn_blocking(move || {
                    r.flush_outputs(Duration::from_millis(500));
                    r.hold_stdin()
                })
                .await
                .unwrap_or_default();
                (None, backlog)
            }
            None => (Some(self.take_stdio(handle).await?), Default::default()),
        })
    }

    /// Records that `pid` is leaving for `to`, its frozen copy here held by
    /// `handle` until discarded.
    pub(super) fn departing(&self, pid: i32, to: &str, handle: &Handle) {
        lock(&self.moved).insert(
            pid,
            Departed {
                to: to.to_owned(),
                shadow: Some(handle.clone()),
                committed: false,
                push_done: false,
                done: tokio::sync::watch::Sender::new(false),
            },
        );
    }

    /// After the destination confirmed it runs `pid`: output and stdin go
    /// there, the home node and the table learn where it is. Returns
    /// whether every page had already arrived (discard the copy now).
    pub(super) async fn settle_departure(
        self: &Arc<Self>,
        pid: i32,
        to: &str,
        info: &popcorn_proto::control::ProcessInfo,
        real_stdio: Option<[OwnedFd; 3]>,
    ) -> bool {
        match real_stdio {
            Some(real) => {
                let hub = Hub::start(self, pid, real, to);
                lock(&self.hubs).insert(pid, hub);
            }
            None => {
                // The hub here (if this is home) sends stdin there first.
                if let Some(hub) = self.hub(pid) {
                    hub.set_location(to);
                }
                if let Some(r) = lock(&self.hosted).remove(&pid) {
                    r.forward_stdin(to);
                }
            }
        }
        let discard_now = match lock(&self.moved).get_mut(&pid) {
            Some(d) => {
                d.committed = true;
                d.push_done
            }
            None => false,
        };
        if info.origin == self.node {
            if let Some(hub) = self.hub(pid) {
                hub.set_location(to);
            }
            self.table.set_node(pid, to);
        } else {
            self.table.remove(pid);
            if info.origin != to {
                let body = encode(&PeerNotice::Moved {
                    pid,
                    node: to.to_owned(),
                });
                if let Err(e) = self
                    .peers
                    .send(&info.origin, PeerMessage::Notice { body })
                    .await
                {
                    warn!(pid, "telling the home node about the move: {e}");
                }
            }
        }
        discard_now
    }

    /// Scans which pages of the (frozen) anonymous mappings were ever
    /// populated and tells `to`, which zero-fills the rest locally. Done
    /// after the resume: the scan costs ~10 ms per GiB. Returns the pages
    /// `(to fetch, never touched)`.
    pub(super) async fn send_population_map(
        &self,
        pid: i32,
        to: &str,
        mut vmas: Vec<Vma>,
    ) -> (u64, u64) {
        let scanned = tokio::task::spawn_blocking(move || {
            popcorn_checkpoint::scan_populated(pid, &mut vmas).map(|()| vmas)
        })
        .await;
        let vmas = match scanned {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                warn!(
                    pid,
                    "scanning populated pages: {e}; {to} fetches every page"
                );
                return (0, 0);
            }
            Err(e) => {
                warn!(pid, "scanning populated pages: {e}");
                return (0, 0);
            }
        };
        let page = PAGE_SIZE as u64;
        let populated: u64 = vmas
            .iter()
            .flat_map(|v| &v.populated)
            .map(|r| r.pages)
            .sum();
        let total: u64 = vmas.iter().map(|v| v.len() / page).sum();
        let map = vmas
            .iter()
            .map(|v| PopulatedVma {
                start: v.start,
                end: v.end,
                populated: v
                    .populated
                    .iter()
                    .map(|r| (r.start, r.pages * page))
                    .collect(),
            })
            .collect();
        let body = encode(&PeerNotice::Populated { pid, vmas: map });
        if let Err(e) = self.peers.send(to, PeerMessage::Notice { body }).await {
            warn!(pid, "sending the population map to {to}: {e}");
        }
        (populated, total.saturating_sub(populated))
    }

    /// Commits the restore at `to`. When the answer is lost, asks again
    /// with an abort: the destination either confirms it runs the process
    /// or drops it, so exactly one copy goes on.
    pub(super) async fn commit_at(&self, pid: i32, to: &str) -> Result<(), String> {
        let commit = self
            .peers
            .call(to, encode(&PeerCall::Commit { pid }), CALL_TIMEOUT)
            .await;
        let error = match commit.and_then(|b| decode_answer(&b)) {
            Ok(PeerAnswer::Resumed) => return Ok(()),
            Ok(PeerAnswer::Error { message }) => message,
            Ok(other) => format!("unexpected answer: {other:?}"),
            Err(e) => e,
        };
        let abort = self
            .peers
            .call(to, encode(&PeerCall::Abort { pid }), Duration::from_secs(5))
            .await;
        if let Ok(PeerAnswer::Resumed) = abort.and_then(|b| decode_answer(&b)) {
            return Ok(());
        }
        Err(format!("node '{to}' did not confirm the restore: {error}"))
    }

    /// Duplicates the real stdin/stdout/stderr of a process leaving home
    /// (`/dev/null` for one it closed).
    async fn take_stdio(&self, handle: &Handle) -> Result<[OwnedFd; 3], String> {
        let mut out = Vec::with_capacity(3);
        for fd in 0..3 {
            let f = match handle.dup_fd(fd).await {
                Ok(f) => f,
                Err(_) => std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .map(OwnedFd::from)
                    .map_err(|e| format!("/dev/null: {e}"))?,
            };
            out.push(f);
        }
        out.try_into()
            .map_err(|_| "three standard streams expected".to_owned())
    }

    /// The destination has every page: the frozen copy here can go.
    pub(super) async fn push_done(&self, from: &str, pid: i32) {
        self.peers.unexport(from, pid);
        let shadow = {
            let mut moved = lock(&self.moved);
            match moved.get_mut(&pid) {
                Some(d) if d.to == from && d.committed => d.shadow.take(),
                Some(d) if d.to == from => {
                    d.push_done = true;
                    None
                }
                _ => None,
            }
        };
        if let Some(h) = shadow {
            match h.discard().await {
                Ok(()) => info!(pid, "frozen copy discarded: {from} has every page"),
                Err(e) => warn!(pid, "discarding the frozen copy: {e}"),
            }
            if let Some(d) = lock(&self.moved).get(&pid) {
                d.done.send_replace(true);
            }
        }
    }

    /// Waits until a frozen copy of `pid` left here by an earlier migration
    /// is gone (it holds the PID a returning process needs).
    pub(super) async fn wait_released(&self, pid: i32) {
        let release = lock(&self.moved)
            .get(&pid)
            .filter(|d| d.committed)
            .map(|d| d.done.subscribe());
        if let Some(mut r) = release {
            let _ = tokio::time::timeout(CALL_TIMEOUT, r.wait_for(|d| *d)).await;
        }
    }
}

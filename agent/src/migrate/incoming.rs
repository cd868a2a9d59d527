//! The destination of a migration: restore the offered process, stopped,
//! with its memory served by a pager (answer `Ready`); let it run on the
//! origin's commit (`Resumed`); kill it on an abort or when no commit comes.

use super::channel::PageChannel;
use super::pager::{self, PagerHandle, PagerSpec};
use super::relay::HostRelay;
use super::{encode, lock, Migrations, Offer, PeerAnswer, PeerNotice};
use crate::supervisor::{self, Commit, Handle, Restored};
use popcorn_checkpoint::restore::{lay_out, restore_process_state, spawn_worker, WorkerSpec};
use popcorn_checkpoint::FrozenProcess;
use popcorn_dsm::uffd::Uffd;
use popcorn_proto::control::{ProcessInfo, ProcessStateKind};
use popcorn_proto::wire::PeerMessage;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long a restored process waits for the origin's commit.
const COMMIT_WAIT: Duration = Duration::from_secs(20);

const SYS_USERFAULTFD: i64 = 323;
const SYS_CLOSE: i64 = 3;

/// A restore waiting for its commit.
pub struct Pending {
    pub from: String,
    pub commit: Commit,
    pub handle: Handle,
    pub pidfd: OwnedFd,
    /// The pager and its all-pages-here flag (post-copy restores).
    pub pager: Option<(PagerHandle, watch::Receiver<bool>)>,
    pub relay: Arc<HostRelay>,
    pub info: ProcessInfo,
    /// `APP.popcorn.json` of a program that arrived from another ISA.
    pub app: Option<std::path::PathBuf>,
}

/// Opens the files the process had, by path, at their offsets.
fn reopen(files: &[super::FileReopen], node: &str) -> Result<Vec<(OwnedFd, i32)>, String> {
    let mut out = Vec::new();
    for f in files {
        let path = CString::new(f.path.as_bytes())
            .map_err(|_| format!("fd {}: path {:?} contains NUL", f.fd, f.path))?;
        let flags = (f.flags as i32) | libc::O_CLOEXEC;
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let fd = unsafe { libc::open(path.as_ptr(), flags) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!(
                "fd {}: cannot open {} on node '{node}': {e} (files are reopened by path; it must exist there too)",
                f.fd, f.path
            ));
        }
        // SAFETY: open returned a new descriptor we now own.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        if f.flags as i32 & libc::O_APPEND == 0 {
            // SAFETY: plain lseek on our own descriptor.
            if unsafe { libc::lseek(fd, f.pos as libc::off_t, libc::SEEK_SET) } < 0 {
                let e = std::io::Error::last_os_error();
                return Err(format!("fd {}: seeking {} to {}: {e}", f.fd, f.path, f.pos));
            }
        }
        out.push((owned, f.fd));
    }
    Ok(out)
}

/// Creates a userfaultfd inside the stopped worker and takes it over.
pub(super) fn uffd_in(worker: &mut FrozenProcess) -> Result<Uffd, String> {
    let tid = worker.pid();
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let fd = worker
        .inject_syscall(tid, SYS_USERFAULTFD, [flags, 0, 0, 0, 0, 0])
        .map_err(|e| e.to_string())?;
    if fd < 0 {
        return Err(format!(
            "userfaultfd failed in the worker: {} (is vm.unprivileged_userfaultfd or CAP_SYS_PTRACE missing?)",
            std::io::Error::from_raw_os_error(-fd as i32)
        ));
    }
    let ours = worker.dup_fd(fd as i32).map_err(|e| e.to_string())?;
    worker
        .inject_syscall(tid, SYS_CLOSE, [fd as u64, 0, 0, 0, 0, 0])
        .map_err(|e| e.to_string())?;
    Uffd::adopt_postcopy(ours).map_err(|e| e.to_string())
}

impl Migrations {
    pub(super) async fn accept_offer(
        self: &Arc<Self>,
        from: &str,
        offer: Offer,
        attached: &[u8],
    ) -> Result<PeerAnswer, String> {
        let started = Instant::now();
        let pid = offer.state.pid;
        self.admit(pid).await?;
        let (relay, ends) = HostRelay::start(self, pid, &offer.home, offer.stdin.clone())
            .map_err(|e| format!("cannot create the standard stream pipes: {e}"))?;
        let mut fds: Vec<(OwnedFd, i32)> = ends.into_iter().zip(0..).collect();
        fds.extend(reopen(&offer.files, &self.node)?);

        let (done_tx, done_rx) = watch::channel(false);
        let me = self.clone();
        let origin = from.to_owned();
        let state = offer.state;
        let mut pages = Vec::with_capacity(offer.attached.len());
        let mut at = 0usize;
        for &(addr, len) in &offer.attached {
            let Some(bytes) = attached.get(at..at + len as usize) else {
                return Err("the offer's attached pages are truncated".into());
            };
            pages.push((addr, bytes.to_vec()));
            at += len as usize;
        }
        let background_push = offer.background_push;
        let setup = move || -> Result<(Restored, PagerHandle), String> {
            let spec = WorkerSpec {
                pid_ns: None,
                pid: Some(pid),
                fds: fds.iter().map(|(f, n)| (f.as_raw_fd(), *n)).collect(),
            };
            let t = Instant::now();
            let mut w = spawn_worker(&spec).map_err(|e| e.to_string())?;
            drop(fds);
            let spawned_us = t.elapsed().as_micros() as u64;
            let layout = lay_out(&mut w.process, &state).map_err(|e| e.to_string())?;
            let laid_out_us = t.elapsed().as_micros() as u64;
            let uffd = uffd_in(&mut w.process)?;
            for &(s, e) in &layout.anonymous {
                uffd.register(s, e - s)
                    .map_err(|e| format!("userfaultfd register {s:#x}: {e}"))?;
            }
            let registered_us = t.elapsed().as_micros() as u64;
            let (_, eager) = layout.split_copy();
            // Attached pages first; anything else is fetched now.
            let (sent, missing): (Vec<_>, Vec<_>) = eager.iter().partition(|&&(s, l)| {
                pages
                    .iter()
                    .any(|(a, d)| *a <= s && s + l <= *a + d.len() as u64)
            });
            let mut channel = PageChannel::open(&me.peers, &origin, pid)?;
            let fetched = pager::fetch_now(&mut channel, pid, &missing)?;
            for (addr, data) in pages
                .iter()
                .filter(|(a, d)| {
                    sent.iter()
                        .any(|&(s, l)| *a <= s && s + l <= *a + d.len() as u64)
                })
                .chain(fetched.iter())
            {
                popcorn_checkpoint::write_memory(w.process.pid(), *addr, data)
                    .map_err(|e| format!("writing {addr:#x} in the worker: {e}"))?;
            }
            let eager_us = t.elapsed().as_micros() as u64;
            let spec = PagerSpec {
                pid: w.process.pid(),
                origin: origin.clone(),
                peers: me.peers.clone(),
                channel,
                uffd,
                regions: layout.anonymous.clone(),
                // The origin's population map of anonymous memory comes
                // after the resume; until then every page may hold data.
                at_origin: layout.anonymous.iter().map(|&(s, e)| (s, e - s)).collect(),
                background_push,
            };
            let pager_me = me.clone();
            let pager_origin = origin.clone();
            let pager = pager::start(spec, move |send_done| {
                pager_me.pager_finished(pid, &pager_origin, send_done);
                let _ = done_tx.send(true);
            })?;
            let restored =
                restore_process_state(&mut w.process, &state, &layout).map_err(|e| e.to_string());
            if let Err(e) = restored {
                pager.stop();
                return Err(e);
            }
            info!(
                pid,
                spawned_us,
                laid_out_us,
                registered_us,
                eager_us,
                restored_us = t.elapsed().as_micros() as u64,
                "restore steps"
            );
            Ok((Restored::Native(w.process), pager))
        };
        let events = self.table.events();
        let restored = tokio::task::spawn_blocking(move || supervisor::restore(setup, events))
            .await
            .map_err(|e| format!("restore thread: {e}"))??;
        let (wpid, pidfd, handle, commit, pager) = restored;
        let answer = PeerAnswer::Ready {
            pages_at_origin: pager.pages_at_origin,
            pages_zero: pager.pages_zero,
            restore_us: started.elapsed().as_micros() as u64,
        };
        info!(
            pid,
            wpid,
            from,
            us = started.elapsed().as_micros() as u64,
            "restored, waiting for commit"
        );
        let info = self.arriving(pid, offer.uid, offer.argv, offer.home, offer.nodes);
        self.pending(
            pid,
            Pending {
                from: from.to_owned(),
                commit,
                handle,
                pidfd,
                pager: Some((pager, done_rx)),
                relay,
                info,
                app: None,
            },
        );
        Ok(answer)
    }

    /// Refuses a process that runs here or is being restored here already;
    /// waits until a frozen copy left here earlier has released its PID.
    pub(super) async fn admit(&self, pid: i32) -> Result<(), String> {
        if let Some(i) = self.table.info(pid) {
            if i.node == self.node && i.state != ProcessStateKind::Exited {
                return Err(format!(
                    "process {pid} already runs on node '{}'",
                    self.node
                ));
            }
        }
        self.wait_released(pid).await;
        // A program this node dropped a moment ago may still be dying.
        let deadline = Instant::now() + Duration::from_secs(5);
        while popcorn_checkpoint::process_exists(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if lock(&self.incoming).contains_key(&pid) {
            return Err(format!(
                "a migration of process {pid} to '{}' is already under way",
                self.node
            ));
        }
        Ok(())
    }

    /// The table entry of a process arriving here.
    pub(super) fn arriving(
        &self,
        pid: i32,
        uid: u32,
        argv: Vec<String>,
        origin: String,
        nodes: Vec<String>,
    ) -> ProcessInfo {
        ProcessInfo {
            pid,
            uid,
            argv,
            origin,
            node: self.node.clone(),
            nodes,
            state: ProcessStateKind::Running,
            threads: 0,
            exit: None,
        }
    }

    /// Keeps a restore until the origin commits it, or kills it after
    /// [`COMMIT_WAIT`].
    pub(super) fn pending(self: &Arc<Self>, pid: i32, p: Pending) {
        lock(&self.incoming).insert(pid, p);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(COMMIT_WAIT).await;
            me.abort(pid, "no commit from the origin");
        });
    }

    pub(super) async fn commit(
        self: &Arc<Self>,
        from: &str,
        pid: i32,
    ) -> Result<PeerAnswer, String> {
        let p = {
            let mut incoming = lock(&self.incoming);
            match incoming.remove(&pid) {
                Some(p) if p.from == from => p,
                Some(p) => {
                    incoming.insert(pid, p);
                    return Err(format!("process {pid} is being migrated by another node"));
                }
                None => {
                    return Err(format!(
                        "no restore of process {pid} waits on '{}' (it timed out)",
                        self.node
                    ))
                }
            }
        };
        let home = p.info.origin.clone();
        lock(&self.hosted).insert(pid, p.relay);
        if let Some((pager, done)) = p.pager {
            pager.resume();
            if !*done.borrow() {
                lock(&self.pagers).insert(pid, (done, pager));
            }
        }
        if let Some(app) = p.app {
            lock(&self.apps).insert(pid, app);
        }
        lock(&self.moved).remove(&pid);
        self.table.insert_hosted(p.info, p.handle, p.pidfd);
        self.monitor.manage(pid);
        p.commit.go();
        info!(pid, from, "resumed");
        if home == self.node {
            if let Some(hub) = self.hub(pid) {
                hub.set_location(&self.node);
            }
        } else if home != from {
            let body = encode(&PeerNotice::Moved {
                pid,
                node: self.node.clone(),
            });
            if let Err(e) = self.peers.send(&home, PeerMessage::Notice { body }).await {
                warn!(pid, %home, "telling the home node about the move: {e}");
            }
        }
        Ok(PeerAnswer::Resumed)
    }

    /// Drops a restore that was not committed (the worker is killed).
    /// Answers `Resumed` if it had been committed already.
    pub(super) fn abort(&self, pid: i32, why: &str) -> PeerAnswer {
        if self.drop_preparation(pid) {
            warn!(pid, "prepared program dropped: {why}");
            return PeerAnswer::Aborted;
        }
        let Some(p) = lock(&self.incoming).remove(&pid) else {
            let runs = self
                .table
                .info(pid)
                .is_some_and(|i| i.node == self.node && i.state != ProcessStateKind::Exited);
            return if runs {
                PeerAnswer::Resumed
            } else {
                PeerAnswer::Aborted
            };
        };
        warn!(pid, from = %p.from, "migration abandoned: {why}");
        if let Some((pager, _)) = p.pager {
            pager.stop();
        }
        drop(p.commit);
        PeerAnswer::Aborted
    }

    /// Runs on the pager thread when it ends.
    pub(super) fn pager_finished(&self, pid: i32, origin: &str, send_done: bool) {
        lock(&self.pagers).remove(&pid);
        if !send_done {
            return;
        }
        let body = encode(&PeerNotice::PushDone { pid });
        if let Err(e) = self
            .rt
            .block_on(self.peers.send(origin, PeerMessage::Notice { body }))
        {
            warn!(pid, %origin, "telling the origin every page arrived: {e}");
        }
    }
}

//! The node a program leaves: preflight, prepare the destination, stop at
//! a migration point, offer, commit; on failure the program continues where
//! it stopped and the destination drops what it prepared.

use super::{CrossIsaOffer, CrossIsaStart, STOP_WAIT};
use crate::migrate::{decode_answer, encode, lock, Migrations, PeerAnswer, PeerCall, CALL_TIMEOUT};
use crate::supervisor::Handle;
use popcorn_checkpoint::xisa;
use popcorn_checkpoint::Vma;
use popcorn_isa::{App, Isa, ThreadSnapshot};
use popcorn_proto::control::{MigrationReport, ProcessInfo};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Memory pages: the arena's used part is rounded up to this.
const PAGE: u64 = 4096;

/// `NAME=value` entries of a process's environment.
fn environment(pid: i32) -> Result<Vec<String>, String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| format!("reading the environment of {pid}: {e}"))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect())
}

/// The origin's mapping holding the heap arena, cut to its used part, for
/// the population map.
fn heap_vma(pid: i32, (start, len): (u64, u64)) -> Option<Vma> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let vmas = popcorn_checkpoint::procfs::maps::parse_maps(&text).ok()?;
    let mut v = vmas
        .into_iter()
        .find(|v| v.start <= start && start < v.end)?;
    v.start = start;
    v.end = v.end.min(start + len);
    Some(v)
}

impl Migrations {
    /// The `popcorn build` program process `pid` runs.
    pub(super) fn app_of(&self, pid: i32) -> Result<App, String> {
        if let Some(meta) = lock(&self.apps).get(&pid).cloned() {
            return App::load(&meta);
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .map_err(|e| format!("process {pid}: {e}"))?;
        App::for_executable(&exe)
    }

    /// How the destination starts `pid` (read while it runs).
    fn start_spec(&self, pid: i32, info: &ProcessInfo, app: &App) -> Result<CrossIsaStart, String> {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map_err(|e| format!("process {pid}: cwd: {e}"))?;
        let (uid, gid) = popcorn_checkpoint::process_owner(pid).map_err(|e| e.to_string())?;
        Ok(CrossIsaStart {
            pid,
            home: info.origin.clone(),
            uid,
            gid,
            argv: info.argv.clone(),
            env: environment(pid)?,
            cwd: cwd.to_string_lossy().into_owned(),
            nodes: info.nodes.clone(),
            app: app.metadata.clone(),
        })
    }

    /// Moves `pid`, running here on ISA `here`, to `to`, whose ISA is
    /// `there`; see the module documentation.
    pub(in crate::migrate) async fn migrate_across(
        self: &Arc<Self>,
        pid: i32,
        to: &str,
        (here, there): (Isa, Isa),
        info: ProcessInfo,
        handle: Handle,
    ) -> Result<MigrationReport, String> {
        let node = self.node.clone();
        let refuse = |why: String| {
            format!(
                "cannot move process {pid} from {here} to {there}: {why}; it keeps running on '{node}'"
            )
        };
        let app = self.app_of(pid).map_err(refuse)?;
        app.binary(there).map_err(refuse)?;
        let point = app.migration_point(here).map_err(refuse)?;
        if lock(&self.apps).get(&pid).is_none() {
            // Launched here natively: the fds are the program's own.
            let threads = crate::sys::thread_count(pid);
            if threads > 1 {
                return Err(refuse(format!(
                    "it has {threads} threads and a move between ISAs works for single-threaded programs only"
                )));
            }
            let fds = popcorn_checkpoint::read_fds(pid).map_err(|e| refuse(e.to_string()))?;
            if let Some(f) = crate::migrate::outgoing::carried_files(&fds, &node)
                .map_err(refuse)?
                .first()
            {
                return Err(refuse(format!(
                    "fd {} is open ({}) and a move between ISAs carries the standard streams only",
                    f.fd, f.path
                )));
            }
        }
        let start = self.start_spec(pid, &info, &app).map_err(refuse)?;
        if let Err(e) = self.prepare_at(to, &start).await {
            self.drop_prepared(pid, to).await;
            return Err(refuse(e));
        }
        let thread = match handle
            .stop_at_migration_point(point.clone(), STOP_WAIT)
            .await
        {
            Ok(t) => t,
            Err(e) => {
                self.drop_prepared(pid, to).await;
                return Err(refuse(e));
            }
        };
        let t0 = Instant::now();
        match self
            .offer_across(to, start, &info, &handle, &app, thread, t0)
            .await
        {
            Ok(r) => Ok(r),
            Err(e) => {
                self.peers.unexport(to, pid);
                lock(&self.moved).remove(&pid);
                if let Some(r) = lock(&self.hosted).get(&pid) {
                    r.resume_stdin();
                }
                if let Err(t) = handle.resume_at_migration_point(point).await {
                    warn!(pid, "resuming after a failed migration: {t}");
                }
                self.drop_prepared(pid, to).await;
                warn!(pid, %to, "cross-ISA migration failed: {e}");
                Err(format!("{e}; process {pid} keeps running on node '{node}'"))
            }
        }
    }

    /// Has `to` start the program and run it to `main`.
    async fn prepare_at(&self, to: &str, start: &CrossIsaStart) -> Result<(), String> {
        let call = encode(&PeerCall::PrepareCrossIsa(Box::new(start.clone())));
        match decode_answer(&self.peers.call(to, call, CALL_TIMEOUT).await?)? {
            PeerAnswer::Prepared => Ok(()),
            PeerAnswer::Error { message } => {
                Err(format!("node '{to}' could not start it: {message}"))
            }
            other => Err(format!("unexpected answer from {to}: {other:?}")),
        }
    }

    /// Tells `to` to drop what it prepared (best effort).
    async fn drop_prepared(&self, pid: i32, to: &str) {
        let call = encode(&PeerCall::Abort { pid });
        if let Err(e) = self.peers.call(to, call, Duration::from_secs(5)).await {
            warn!(pid, %to, "dropping the prepared program: {e}");
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn offer_across(
        self: &Arc<Self>,
        to: &str,
        start: CrossIsaStart,
        info: &ProcessInfo,
        handle: &Handle,
        app: &App,
        thread: ThreadSnapshot,
        t0: Instant,
    ) -> Result<MigrationReport, String> {
        let pid = start.pid;
        let (data, data_len) = app.data_window();
        let (arena, arena_size) = app.arena();
        let memory = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let err = |e: popcorn_checkpoint::Error| e.to_string();
            let top = xisa::read_memory(pid, arena + 8, 8).map_err(err)?;
            let top = u64::from_le_bytes(top.try_into().unwrap_or_default());
            let used = top.clamp(PAGE, arena_size).div_ceil(PAGE) * PAGE;
            let data_bytes = xisa::read_memory(pid, data, data_len as usize).map_err(err)?;
            Ok((used, data_bytes))
        })
        .await
        .map_err(|e| format!("reading the program's memory: {e}"))??;
        let (used, data_bytes) = memory;
        let heap = (arena, used);
        let (real_stdio, stdin) = self.prepare_stdio(pid, handle).await?;
        self.departing(pid, to, handle);
        let offer = CrossIsaOffer {
            start,
            stdin,
            regs: serde_json::to_string(&thread.regs)
                .map_err(|e| format!("encoding the registers: {e}"))?,
            attached: vec![
                (thread.stack.base, thread.stack.bytes.len() as u64),
                (data, data_len),
            ],
            heap,
        };
        let mut body = encode(&PeerCall::CrossIsaOffer(Box::new(offer)));
        body.extend_from_slice(&thread.stack.bytes);
        body.extend_from_slice(&data_bytes);
        let offer_bytes = body.len() as u64;
        self.peers.export(to, pid);
        match decode_answer(&self.peers.call(to, body, CALL_TIMEOUT).await?)? {
            PeerAnswer::Ready { restore_us, .. } => {
                info!(pid, restore_us, "translated and written at the destination")
            }
            PeerAnswer::Error { message } => {
                return Err(format!("node '{to}' could not continue it: {message}"))
            }
            other => return Err(format!("unexpected answer from {to}: {other:?}")),
        }
        self.commit_at(pid, to).await?;
        let downtime = t0.elapsed();
        let discard_now = self.settle_departure(pid, to, info, real_stdio).await;
        lock(&self.apps).remove(&pid);
        let (pages_at_origin, pages_zero) = match heap_vma(pid, heap) {
            Some(v) => self.send_population_map(pid, to, vec![v]).await,
            None => (0, 0),
        };
        if discard_now {
            self.push_done(to, pid).await;
        }
        let report = MigrationReport {
            pid,
            from: self.node.clone(),
            to: to.to_owned(),
            threads: 1,
            downtime_us: downtime.as_micros() as u64,
            bytes_before_resume: offer_bytes,
            pages_at_origin,
            pages_zero,
            transfer_ms: None,
        };
        Ok(self.migrated(report))
    }
}

//! The destination's post-copy server for one migrated process: a plain
//! thread owning the userfaultfd created inside the worker and the page
//! channel to the origin. Faults become page requests (many in flight on
//! the channel), pages the
//! origin never touched are zero-filled here, and while the program does
//! not fault a background pusher pulls the rest in growing batches. When
//! every page is here the origin is told and the uffd is closed, so the
//! process no longer depends on the origin.
//!
//! Fault replies are installed on the pager thread at once; background
//! batches go to an installer thread, so the next batch is received while
//! the previous one is copied in (see [`Installer`]).

use super::channel::{PageChannel, Reply};
use super::PopulatedVma;
use crate::peers::Peers;
use crate::sync::lock;
use crate::sys::{self, EventFd};
use crate::traffic::ProcessTraffic;
use popcorn_dsm::postcopy::{Action, PageRange, Postcopy};
use popcorn_dsm::uffd::{Event, Uffd, UffdError};
use popcorn_dsm::PAGE_SIZE;
use popcorn_proto::wire::{PeerMessage, MAX_PAGE_DATA};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Background requests in flight at once.
const PUSH_IN_FLIGHT: usize = 4;
/// Background batches received but not installed yet, at most.
const INSTALL_QUEUE: usize = 4;
/// Bytes per `UFFDIO_COPY` of the installer: the pager, which must read the
/// uffd's events before a fault can be served, waits at most one chunk
/// (tens of microseconds).
const INSTALL_CHUNK: usize = 128 << 10;
/// Pages fetched per fault (the faulting one and the next ones).
const FAULT_WINDOW: u64 = 1;
/// How long the origin may stay unreachable before the process is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// How long the pager busy-polls after a fault or a reply before sleeping.
const SPIN: Duration = Duration::from_micros(200);
/// How often a broken page channel is reopened.
const RECONNECT_EVERY: Duration = Duration::from_millis(200);

/// Largest request (4 MiB), well inside one `PageData` frame.
const MAX_REQUEST_PAGES: u64 = 1024;
const _: () = assert!(MAX_REQUEST_PAGES * PAGE_SIZE <= MAX_PAGE_DATA as u64);

/// Everything a pager needs.
pub struct PagerSpec {
    pub pid: i32,
    pub origin: String,
    /// To reopen the channel if it breaks.
    pub peers: Arc<Peers>,
    pub channel: PageChannel,
    pub uffd: Uffd,
    /// Registered regions `(start, end)`.
    pub regions: Vec<(u64, u64)>,
    /// `(start, len)` ranges whose content is at the origin.
    pub at_origin: Vec<(u64, u64)>,
    /// Pull pages in the background, not only on fault.
    pub background_push: bool,
}

/// How long the pusher waits for the origin's population map before it
/// pulls everything.
const MAP_WAIT: Duration = Duration::from_secs(2);

/// Controls a running pager.
pub struct PagerHandle {
    stop: Arc<AtomicBool>,
    aborted: Arc<AtomicBool>,
    resumed: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    maps: mpsc::Sender<Vec<PopulatedVma>>,
    pub stats: Arc<ProcessTraffic>,
    pub pages_at_origin: u64,
    pub pages_zero: u64,
}

impl PagerHandle {
    /// The process runs: start the background transfer (held back until
    /// then so the link is free for the restore and the commit).
    pub fn resume(&self) {
        self.resumed.store(true, Ordering::Relaxed);
        self.wake.wake();
    }

    /// The origin's population map of the anonymous mappings.
    pub fn populated(&self, vmas: Vec<PopulatedVma>) {
        let _ = self.maps.send(vmas);
        self.wake.wake();
    }

    /// Ends the pager (the restore was abandoned).
    pub fn stop(&self) {
        self.aborted.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
        self.wake.wake();
    }
}

/// The pagers of one migration: the process's and those of children it
/// forks before its memory has all arrived (each child has its own uffd and
/// page state). `on_done` runs when the last one ends.
struct Family {
    live: AtomicUsize,
    /// Ends every pager of the family (abort, or the process is gone).
    stop: Arc<AtomicBool>,
    /// The restore was abandoned: the origin keeps the process.
    aborted: Arc<AtomicBool>,
    on_done: Mutex<Option<OnDone>>,
}

/// Runs once every pager of a migration has ended (`true`: not aborted, so
/// the origin's copy is no longer needed).
type OnDone = Box<dyn FnOnce(bool) + Send>;

impl Family {
    fn finished(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            let done = lock(&self.on_done).take();
            if let Some(f) = done {
                f(!self.aborted.load(Ordering::Relaxed));
            }
        }
    }
}

fn spawn(mut p: Pager, name: String) -> Result<(), String> {
    let family = p.family.clone();
    family.live.fetch_add(1, Ordering::AcqRel);
    let ours = family.clone();
    let started = std::thread::Builder::new().name(name).spawn(move || {
        let ended = p.run(&ours.stop.clone());
        if ended == End::ProcessGone {
            // Forked children cannot tell when they are gone: they end
            // with the process (their missing pages had the same source).
            ours.stop.store(true, Ordering::Relaxed);
        }
        ours.finished();
    });
    match started {
        Ok(_) => Ok(()),
        Err(e) => {
            family.live.fetch_sub(1, Ordering::AcqRel);
            Err(format!("cannot start a pager thread: {e}"))
        }
    }
}

/// Builds the page state and starts the pager thread; `on_done` runs on
/// that thread once every page has arrived (or the process is gone).
pub fn start(
    spec: PagerSpec,
    on_done: impl FnOnce(bool) + Send + 'static,
) -> Result<PagerHandle, String> {
    let mut pc = Postcopy::new();
    pc.set_fault_window(FAULT_WINDOW);
    for &(s, e) in &spec.regions {
        pc.add_region(s, e).map_err(|e| e.to_string())?;
    }
    for &(s, len) in &spec.at_origin {
        pc.mark_at_origin(s, s + len).map_err(|e| e.to_string())?;
    }
    let c = pc.counts();
    let wake = Arc::new(EventFd::new().map_err(|e| format!("eventfd: {e}"))?);
    let (maps_tx, maps) = mpsc::channel();
    let handle = PagerHandle {
        stop: Arc::new(AtomicBool::new(false)),
        aborted: Arc::new(AtomicBool::new(false)),
        resumed: Arc::new(AtomicBool::new(false)),
        wake: wake.clone(),
        maps: maps_tx,
        stats: spec.peers.traffic.of(spec.pid),
        pages_at_origin: c.at_origin,
        pages_zero: c.not_touched,
    };
    let family = Arc::new(Family {
        live: AtomicUsize::new(0),
        stop: handle.stop.clone(),
        aborted: handle.aborted.clone(),
        on_done: Mutex::new(Some(Box::new(on_done))),
    });
    let p = Pager {
        channel: Some(spec.channel),
        spec: PagerConfig {
            pid: spec.pid,
            origin: spec.origin,
            peers: spec.peers,
            uffd: Arc::new(spec.uffd),
            background_push: spec.background_push,
            forked: false,
        },
        family,
        next_req: 1,
        refetch: Vec::new(),
        last_connect: Instant::now(),
        pc,
        wake,
        inflight: HashMap::new(),
        remaps: Vec::new(),
        resumed: handle.resumed.clone(),
        resumed_at: None,
        maps,
        map_known: false,
        stats: handle.stats.clone(),
        failing_since: None,
        installing: Vec::new(),
        gate: Arc::default(),
        installer: None,
        busy: Busy::default(),
    };
    spawn(p, format!("pager-{}", spec.pid))?;
    Ok(handle)
}

/// What stays of the [`PagerSpec`] in the running pager.
struct PagerConfig {
    pid: i32,
    origin: String,
    peers: Arc<Peers>,
    /// Shared with the installer thread.
    uffd: Arc<Uffd>,
    background_push: bool,
    /// The pager of a forked child: `pid` is its parent's (the pages come
    /// from the parent's copy at the origin), so its liveness is unknown.
    forked: bool,
}

/// Why a pager ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    ProcessGone,
    Stopped,
    Failed,
}

struct Pager {
    spec: PagerConfig,
    family: Arc<Family>,
    /// `None` while broken (reopened every [`RECONNECT_EVERY`]).
    channel: Option<PageChannel>,
    next_req: u64,
    /// Fault fetches lost with a broken channel: asked again on reconnect.
    refetch: Vec<PageRange>,
    last_connect: Instant,
    pc: Postcopy,
    wake: Arc<EventFd>,
    /// Request id → (destination range, is a background batch).
    inflight: HashMap<u64, (PageRange, bool)>,
    /// `(new start, old start, len)` of regions the program moved (mremap):
    /// their pages are fetched from the old address at the origin.
    remaps: Vec<(u64, u64, u64)>,
    /// The process runs (background transfer allowed).
    resumed: Arc<AtomicBool>,
    resumed_at: Option<Instant>,
    maps: mpsc::Receiver<Vec<PopulatedVma>>,
    /// The origin's population map arrived (or was waited for long enough).
    map_known: bool,
    stats: Arc<ProcessTraffic>,
    failing_since: Option<Instant>,
    /// `(start, end)` of pages that arrived (`Present` in `pc`) but are not
    /// installed yet by this thread: a fork while they are copied in leaves
    /// the child without them (the installer's are in its queue).
    installing: Vec<(u64, u64)>,
    /// Held while reading uffd events and by the installer per copy.
    gate: Arc<Mutex<Gate>>,
    /// Started with the first background batch.
    installer: Option<Installer>,
    /// Where the pager's time went, logged when every page has arrived.
    busy: Busy,
}

/// Time spent polling, receiving (reading, decrypting, framing, including
/// installing fault replies) and installing fault replies (`UFFDIO_COPY`)
/// on the pager thread.
#[derive(Default)]
struct Busy {
    waiting: Duration,
    receiving: Duration,
    installing: Duration,
}

impl Pager {
    /// Serves until every page is here, the process is gone, the family is
    /// stopped, or serving fails; the installer thread has ended on return.
    fn run(&mut self, stop: &AtomicBool) -> End {
        let end = self.serve(stop);
        self.installer = None;
        end
    }

    fn serve(&mut self, stop: &AtomicBool) -> End {
        let pid = self.spec.pid;
        let started = Instant::now();
        let mut last_active = Instant::now() - SPIN;
        loop {
            if stop.load(Ordering::Relaxed) {
                return End::Stopped;
            }
            if let Some(inst) = &mut self.installer {
                for (id, buf) in inst.finished() {
                    if let Some(ch) = &mut self.channel {
                        ch.recycle(buf);
                    }
                    let mut g = lock(&self.gate);
                    if inst.pending.is_empty() {
                        g.cancelled.clear();
                    }
                    drop(g);
                    debug!(id, "batch installed");
                }
            }
            let installs = self.installer.as_ref().map_or(0, |i| i.pending.len());
            if self.pc.remaining() == 0 && self.inflight.is_empty() && installs == 0 {
                let c = self.pc.counts();
                let (batch_ms, batch_copy_ms) = self.installer.as_ref().map_or((0, 0), |i| {
                    (
                        i.busy_ns.load(Ordering::Relaxed) / 1_000_000,
                        i.copy_ns.load(Ordering::Relaxed) / 1_000_000,
                    )
                });
                info!(
                    pid,
                    ms = started.elapsed().as_millis() as u64,
                    present = c.present,
                    faults = self.stats.faults.load(Ordering::Relaxed),
                    waiting_ms = self.busy.waiting.as_millis() as u64,
                    receiving_ms = self
                        .busy
                        .receiving
                        .saturating_sub(self.busy.installing)
                        .as_millis() as u64,
                    installing_ms = self.busy.installing.as_millis() as u64,
                    installer_busy_ms = batch_ms,
                    installer_copy_ms = batch_copy_ms,
                    "every page has arrived"
                );
                return End::Complete;
            }
            let fault_pending = self.inflight.values().any(|(_, push)| !push);
            let ready = {
                let mut fds: Vec<BorrowedFd<'_>> = vec![self.spec.uffd.as_fd(), self.wake.fd()];
                if let Some(ch) = &self.channel {
                    fds.push(ch.as_fd());
                }
                // Busy-poll while a fault waits and for a moment after one: a
                // sleeping CPU takes tens of microseconds to wake in a VM, per
                // fault. Not for background batches: the installer and the
                // origin need the CPU more.
                let wait = if fault_pending || last_active.elapsed() < SPIN {
                    Duration::ZERO
                } else {
                    Duration::from_millis(100)
                };
                let t = Instant::now();
                let r = sys::poll_readable(&fds, Some(wait));
                self.busy.waiting += t.elapsed();
                r
            };
            let ready = match ready {
                Ok(r) => r,
                Err(e) => {
                    warn!(pid, "pager poll: {e}");
                    return End::Failed;
                }
            };
            let (faults_ready, woken, data_ready) =
                (ready[0], ready[1], ready.get(2).copied().unwrap_or(false));
            if woken {
                self.wake.drain();
            }
            if faults_ready || (data_ready && fault_pending) {
                last_active = Instant::now();
            }
            if !ready.iter().any(|r| *r)
                && !self.spec.forked
                && !popcorn_checkpoint::process_exists(pid)
            {
                debug!(pid, "process gone: pager ends");
                return End::ProcessGone;
            }
            let mut faulted = false;
            if faults_ready {
                match self.read_events() {
                    Ok(f) => faulted = f,
                    Err(e) => {
                        warn!(pid, "pager: {e}");
                        return End::Failed;
                    }
                }
            }
            if data_ready {
                let t = Instant::now();
                self.receive();
                self.busy.receiving += t.elapsed();
            }
            while let Ok(vmas) = self.maps.try_recv() {
                self.apply_map(&vmas);
            }
            if self.channel.is_none() {
                self.reconnect();
            }
            if !faulted {
                self.push();
            }
            if let Some(since) = self.failing_since {
                if since.elapsed() > GIVE_UP_AFTER {
                    warn!(
                        pid,
                        origin = %self.spec.origin,
                        "the origin has not served pages for {} s: killing the process, whose memory cannot be completed",
                        GIVE_UP_AFTER.as_secs()
                    );
                    // SAFETY: plain integer arguments.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return End::Failed;
                }
            }
        }
    }

    /// Replies on the channel; a broken channel puts its requests back.
    fn receive(&mut self) {
        let Some(mut ch) = self.channel.take() else {
            return;
        };
        let mut spare = Vec::new();
        let got = ch.receive(|frame| match frame {
            Reply::PageData { req_id, data, .. } => {
                if let Some(buf) = self.arrived(req_id, Ok(data)) {
                    spare.push(buf);
                }
            }
            Reply::Other(PeerMessage::PageError { req_id, message }) => {
                self.arrived(req_id, Err(message));
            }
            Reply::Other(other) => debug!("unexpected frame on a page channel: {other:?}"),
        });
        for buf in spare {
            ch.recycle(buf);
        }
        match got {
            Ok(()) => {
                self.channel = Some(ch);
                // Faults read while the channel was lent out wait here.
                self.request_refetch();
            }
            Err(e) => self.channel_lost(&e.to_string()),
        }
    }

    /// Asks again for the fault fetches that could not be sent.
    fn request_refetch(&mut self) {
        for r in std::mem::take(&mut self.refetch) {
            if let Ok(Action::Fetch(r)) = self.pc.on_fault(r.start) {
                self.request(r, false);
            }
        }
    }

    fn channel_lost(&mut self, why: &str) {
        warn!(pid = self.spec.pid, origin = %self.spec.origin, "page channel lost: {why}");
        self.channel = None;
        self.failing_since.get_or_insert_with(Instant::now);
        for (_, (range, push)) in std::mem::take(&mut self.inflight) {
            let _ = self.pc.on_fetch_failed(range);
            if !push {
                self.refetch.push(range);
            }
        }
    }

    fn reconnect(&mut self) {
        if self.last_connect.elapsed() < RECONNECT_EVERY {
            return;
        }
        self.last_connect = Instant::now();
        match PageChannel::open(&self.spec.peers, &self.spec.origin, self.spec.pid) {
            Ok(ch) => {
                info!(pid = self.spec.pid, origin = %self.spec.origin, "page channel reopened");
                self.channel = Some(ch);
                self.request_refetch();
            }
            Err(e) => debug!(pid = self.spec.pid, "reopening the page channel: {e}"),
        }
    }

    /// Reads every pending uffd event; true if any was a fault.
    fn read_events(&mut self) -> Result<bool, UffdError> {
        let mut faulted = false;
        // No installer copy runs while events are read: the program's
        // `madvise`/`munmap` goes on once its event is read, and a copy
        // after that would put stale data over the zeros it wants.
        let gate = self.gate.clone();
        let mut gate = lock(&gate);
        while let Some(ev) = self.spec.uffd.read_event()? {
            match ev {
                Event::PageFault { addr, .. } => {
                    faulted = true;
                    self.stats.faults.fetch_add(1, Ordering::Relaxed);
                    self.fault(addr);
                }
                Event::Remove { start, end } | Event::Unmap { start, end } => {
                    self.pc.on_discard(start, end);
                    self.cancel_installs(&mut gate, start, end);
                }
                Event::Remap { from, to, len } => {
                    self.cancel_installs(&mut gate, from, from + len);
                    self.remap(from, to, len)
                }
                Event::Fork { ufd } => {
                    // SAFETY: the event installed this descriptor for us to own.
                    let fd = unsafe { OwnedFd::from_raw_fd(ufd) };
                    if let Err(e) = self.fork_pager(fd) {
                        warn!(
                            pid = self.spec.pid,
                            "fork during post-copy: {e}; the child's missing pages read as zero"
                        );
                    }
                }
                Event::Unknown(kind) => debug!(kind, "unknown uffd event"),
            }
        }
        Ok(faulted)
    }

    /// Queued background batches must not fill `[start, end)` any more.
    fn cancel_installs(&self, gate: &mut Gate, start: u64, end: u64) {
        let Some(inst) = &self.installer else {
            return;
        };
        if let Some(&(last, _)) = inst.pending.back() {
            gate.cancelled.push(Cancel {
                start,
                end,
                upto: last,
            });
        }
    }

    /// The page at `addr` is in a batch the installer has not finished: its
    /// copy will wake whoever waits for it.
    fn installer_has(&self, addr: u64) -> bool {
        self.installer.as_ref().is_some_and(|i| {
            i.pending
                .iter()
                .any(|(_, rs)| rs.iter().any(|&(s, e)| s <= addr && addr < e))
        })
    }

    fn fault(&mut self, addr: u64) {
        let page = addr & !(PAGE_SIZE - 1);
        match self.pc.on_fault(addr) {
            Ok(Action::ZeroFill(r)) => self.zero(r.start, r.bytes()),
            Ok(Action::Fetch(r)) => {
                self.stats.remote_faults.fetch_add(1, Ordering::Relaxed);
                self.request(r, false)
            }
            Ok(Action::AlreadyInFlight) => {}
            Ok(Action::Present(r)) => {
                if !self.installer_has(r.start) {
                    let _ = self.spec.uffd.wake(r.start, r.bytes());
                }
            }
            // Memory the program added after migrating (a grown stack, a
            // moved region's new tail): it starts as zeros.
            Err(_) => self.zero(page, PAGE_SIZE),
        }
    }

    fn zero(&self, start: u64, len: u64) {
        match self.spec.uffd.zeropage(start, len) {
            Ok(_) => {
                self.stats
                    .zero_pages
                    .fetch_add(len / PAGE_SIZE, Ordering::Relaxed);
            }
            Err(e) => {
                debug!(start, len, "zeropage: {e}");
                let _ = self.spec.uffd.wake(start, len);
            }
        }
    }

    /// The child's page state: the parent's, except that pages marked
    /// arrived but not installed yet (the fork interrupted their copy) are
    /// missing in the child too, so still to fetch from the origin.
    fn child_pages(&self) -> Postcopy {
        let mut pc = self.pc.fork_child();
        let queued = self
            .installer
            .iter()
            .flat_map(|i| i.pending.iter().flat_map(|(_, rs)| rs.iter()));
        for &(start, end) in self.installing.iter().chain(queued) {
            pc.on_discard(start, end);
            if let Err(e) = pc.mark_at_origin(start, end) {
                debug!(start, end, "child page state: {e}");
            }
        }
        pc
    }

    /// Serves a child the process forked with its own pager: the child's
    /// missing pages are the parent's, still at the origin.
    fn fork_pager(&mut self, ufd: OwnedFd) -> Result<(), String> {
        let channel = PageChannel::open(&self.spec.peers, &self.spec.origin, self.spec.pid)?;
        let (_, maps) = mpsc::channel();
        let child = Pager {
            spec: PagerConfig {
                pid: self.spec.pid,
                origin: self.spec.origin.clone(),
                peers: self.spec.peers.clone(),
                uffd: Arc::new(Uffd::adopt_forked(ufd, &self.spec.uffd)),
                background_push: self.spec.background_push,
                forked: true,
            },
            family: self.family.clone(),
            channel: Some(channel),
            next_req: 1,
            refetch: Vec::new(),
            last_connect: Instant::now(),
            pc: self.child_pages(),
            wake: Arc::new(EventFd::new().map_err(|e| format!("eventfd: {e}"))?),
            inflight: HashMap::new(),
            remaps: self.remaps.clone(),
            resumed: Arc::new(AtomicBool::new(true)),
            resumed_at: None,
            maps,
            map_known: true,
            stats: self.stats.clone(),
            failing_since: None,
            installing: Vec::new(),
            gate: Arc::default(),
            installer: None,
            busy: Busy::default(),
        };
        info!(
            pid = self.spec.pid,
            remaining = child.pc.remaining(),
            "forked during post-copy: serving the child"
        );
        spawn(child, format!("pager-{}-child", self.spec.pid))
    }

    /// Where the origin has the page now at `addr` here.
    fn origin_addr(&self, addr: u64) -> u64 {
        for &(to, from, len) in self.remaps.iter().rev() {
            if addr >= to && addr < to + len {
                return addr - to + from;
            }
        }
        addr
    }

    fn request(&mut self, r: PageRange, push: bool) {
        for part in requests(r) {
            let req_id = self.next_req;
            let msg = PeerMessage::PageRequest {
                req_id,
                pid: self.spec.pid,
                addr: self.origin_addr(part.start),
                pages: part.pages as u32,
            };
            let Some(ch) = self.channel.as_mut() else {
                let _ = self.pc.on_fetch_failed(part);
                if !push {
                    self.refetch.push(part);
                }
                continue;
            };
            self.next_req += 1;
            self.inflight.insert(req_id, (part, push));
            if let Err(e) = ch.send(&msg) {
                self.channel_lost(&e.to_string());
            }
        }
    }

    /// A reply: installs a fault's pages here and hands a background
    /// batch to the installer. Returns the buffer if it is free again.
    fn arrived(&mut self, req_id: u64, data: Result<Vec<u8>, String>) -> Option<Vec<u8>> {
        let Some((range, push)) = self.inflight.remove(&req_id) else {
            return data.ok();
        };
        let data = match data {
            Ok(d) if d.len() as u64 == range.bytes() => d,
            Ok(d) => {
                warn!(
                    pid = self.spec.pid,
                    "origin sent {} bytes for {} pages",
                    d.len(),
                    range.pages
                );
                let _ = self.pc.on_fetch_failed(range);
                return Some(d);
            }
            Err(message) => {
                warn!(pid = self.spec.pid, origin = %self.spec.origin, "page fetch failed: {message}");
                self.failing_since.get_or_insert_with(Instant::now);
                let _ = self.pc.on_fetch_failed(range);
                return None;
            }
        };
        self.failing_since = None;
        self.stats
            .pages_in
            .fetch_add(range.pages, Ordering::Relaxed);
        let runs = match self.pc.on_pages_arrived(range) {
            Ok(r) => r,
            Err(e) => {
                debug!("arrival outside the regions: {e}");
                return Some(data);
            }
        };
        if runs.is_empty() {
            return Some(data);
        }
        if push {
            match self.queue_install(range.start, runs, data) {
                Ok(()) => return None,
                // No installer thread: installed here.
                Err((runs, data)) => {
                    self.install_runs(range.start, runs, &data);
                    return Some(data);
                }
            }
        }
        self.install_runs(range.start, runs, &data);
        Some(data)
    }

    /// Hands a batch to the installer thread (started on first use);
    /// gives it back if the thread cannot be started.
    #[allow(clippy::type_complexity)]
    fn queue_install(
        &mut self,
        base: u64,
        runs: Vec<PageRange>,
        data: Vec<u8>,
    ) -> Result<(), (Vec<PageRange>, Vec<u8>)> {
        if self.installer.is_none() {
            match Installer::start(
                self.spec.uffd.clone(),
                self.gate.clone(),
                self.wake.clone(),
                self.spec.pid,
            ) {
                Ok(i) => self.installer = Some(i),
                Err(e) => {
                    warn!(pid = self.spec.pid, "cannot start an installer thread: {e}");
                    return Err((runs, data));
                }
            }
        }
        let Some(inst) = &mut self.installer else {
            return Err((runs, data));
        };
        inst.queue(base, &runs, data).map_err(|data| (runs, data))
    }

    /// Installs `runs` of a reply starting at `base` on this thread.
    fn install_runs(&mut self, base: u64, runs: Vec<PageRange>, data: &[u8]) {
        // Installed in order; a fork handled meanwhile (install reads the
        // events when the copy meets a changing map) sees what is left.
        self.installing = runs
            .iter()
            .rev()
            .map(|r| (r.start, r.start + r.bytes()))
            .collect();
        for run in runs {
            let off = (run.start - base) as usize;
            let bytes = &data[off..off + run.bytes() as usize];
            self.install(run.start, bytes);
            self.installing.pop();
        }
    }

    fn install(&mut self, start: u64, bytes: &[u8]) {
        let t = Instant::now();
        self.install_pages(start, bytes);
        self.busy.installing += t.elapsed();
    }

    fn install_pages(&mut self, start: u64, bytes: &[u8]) {
        loop {
            match self.spec.uffd.copy(start, bytes) {
                Ok(_) => return,
                // Events are pending (the map is changing): read them first.
                Err(UffdError::Again { .. }) => {
                    if let Err(e) = self.read_events() {
                        warn!(pid = self.spec.pid, "pager: {e}");
                        return;
                    }
                }
                Err(e) => {
                    // Unmapped meanwhile (ENOENT) and the like: nothing to fill.
                    debug!(start, "UFFDIO_COPY: {e}");
                    return;
                }
            }
        }
    }

    /// Pages the origin never populated become local zero-fills.
    fn apply_map(&mut self, vmas: &[PopulatedVma]) {
        let mut zeroed = 0;
        for v in vmas {
            let mut at = v.start;
            for &(s, len) in &v.populated {
                if s > at {
                    zeroed += self.pc.on_origin_untouched(at, s);
                }
                at = at.max(s + len);
            }
            if at < v.end {
                zeroed += self.pc.on_origin_untouched(at, v.end);
            }
        }
        self.map_known = true;
        debug!(
            pid = self.spec.pid,
            zeroed,
            remaining = self.pc.remaining(),
            "population map applied"
        );
    }

    /// Background batches while the program does not fault, once it runs
    /// and the population map is known.
    fn push(&mut self) {
        if !self.resumed.load(Ordering::Relaxed) {
            return;
        }
        let since = *self.resumed_at.get_or_insert_with(Instant::now);
        if !self.map_known && since.elapsed() < MAP_WAIT {
            return;
        }
        if !self.spec.background_push {
            return;
        }
        // Fill the pipeline: several requests in flight, a few batches
        // waiting for the installer.
        loop {
            let pushing = self.inflight.values().filter(|(_, p)| *p).count();
            let installs = self.installer.as_ref().map_or(0, |i| i.pending.len());
            if pushing >= PUSH_IN_FLIGHT
                || installs >= INSTALL_QUEUE
                || self.failing_since.is_some()
                || self.channel.is_none()
            {
                return;
            }
            let batch = self.pc.next_push_batch();
            if batch.is_empty() {
                return;
            }
            for r in batch {
                self.request(r, true);
            }
        }
    }

    /// The program moved `[from, from+len)` to `to`: pages still at the
    /// origin are fetched from their old address and installed at the new.
    fn remap(&mut self, from: u64, to: u64, len: u64) {
        let mut missing = Vec::new();
        let mut a = from;
        while a < from + len {
            use popcorn_dsm::postcopy::PageState;
            if matches!(
                self.pc.state(a),
                Some(PageState::AtOrigin | PageState::InFlight)
            ) {
                missing.push(a - from + to);
            }
            a += PAGE_SIZE;
        }
        self.pc.on_discard(from, from + len);
        if missing.is_empty() {
            return;
        }
        if let Err(e) = self.pc.add_region(to, to + len) {
            warn!(
                pid = self.spec.pid,
                "mremap during post-copy: {e}; moved pages may read as zero"
            );
            return;
        }
        for p in missing {
            let _ = self.pc.mark_at_origin(p, p + PAGE_SIZE);
        }
        self.remaps.push((to, self.origin_addr(from), len));
    }
}

/// State shared by a pager and its installer, under one lock: the pager
/// holds it while reading uffd events, the installer while it copies one
/// chunk. So an event that changes the map (`madvise(MADV_DONTNEED)`,
/// `munmap`, `mremap`, fork) is never read while a copy runs, and the
/// installer sees the pages such an event took back before its next copy.
#[derive(Default)]
struct Gate {
    cancelled: Vec<Cancel>,
}

/// `[start, end)` must not be filled by batches up to `upto` (ones queued
/// before the event; later batches were asked for after it).
#[derive(Debug, Clone, Copy)]
struct Cancel {
    start: u64,
    end: u64,
    upto: u64,
}

/// A background batch for the installer: `data` holds the reply, `runs`
/// the `(address, offset in data, bytes)` to copy in.
struct Job {
    id: u64,
    data: Vec<u8>,
    runs: Vec<(u64, usize, usize)>,
}

/// The installer thread of one pager: copies background batches into the
/// process (`UFFDIO_COPY`) while the pager receives the next one, in
/// [`INSTALL_CHUNK`]s so a fault never waits behind a whole batch.
struct Installer {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<(u64, Vec<u8>)>,
    /// Batches queued and not finished: `(id, [(start, end)])`, in order.
    pending: VecDeque<(u64, Vec<(u64, u64)>)>,
    next_id: u64,
    quit: Arc<AtomicBool>,
    /// Time spent on batches, and inside `UFFDIO_COPY`.
    busy_ns: Arc<AtomicU64>,
    copy_ns: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Installer {
    fn start(
        uffd: Arc<Uffd>,
        gate: Arc<Mutex<Gate>>,
        wake: Arc<EventFd>,
        pid: i32,
    ) -> std::io::Result<Installer> {
        let (jobs, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let quit = Arc::new(AtomicBool::new(false));
        let busy_ns = Arc::new(AtomicU64::new(0));
        let copy_ns = Arc::new(AtomicU64::new(0));
        let w = Worker {
            uffd,
            gate,
            quit: quit.clone(),
            busy_ns: busy_ns.clone(),
            copy_ns: copy_ns.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("install-{pid}"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let t = Instant::now();
                    let ok = w.install(&job);
                    w.busy_ns
                        .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    if !ok || done_tx.send((job.id, job.data)).is_err() {
                        return;
                    }
                    wake.wake();
                }
            })?;
        Ok(Installer {
            jobs: Some(jobs),
            done,
            pending: VecDeque::new(),
            next_id: 1,
            quit,
            busy_ns,
            copy_ns,
            thread: Some(thread),
        })
    }

    /// Queues `runs` of a reply starting at `base`; gives the data back if
    /// the thread is gone.
    fn queue(&mut self, base: u64, runs: &[PageRange], data: Vec<u8>) -> Result<(), Vec<u8>> {
        let Some(jobs) = &self.jobs else {
            return Err(data);
        };
        let id = self.next_id;
        let job = Job {
            id,
            data,
            runs: runs
                .iter()
                .map(|r| (r.start, (r.start - base) as usize, r.bytes() as usize))
                .collect(),
        };
        let ranges = runs.iter().map(|r| (r.start, r.end())).collect();
        match jobs.send(job) {
            Ok(()) => {
                self.next_id += 1;
                self.pending.push_back((id, ranges));
                Ok(())
            }
            Err(mpsc::SendError(job)) => {
                self.jobs = None;
                Err(job.data)
            }
        }
    }

    /// Batches finished since the last call, with their buffers.
    fn finished(&mut self) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Ok((id, buf)) = self.done.try_recv() {
            self.pending.retain(|(p, _)| *p != id);
            out.push((id, buf));
        }
        out
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The installer thread's side.
struct Worker {
    uffd: Arc<Uffd>,
    gate: Arc<Mutex<Gate>>,
    quit: Arc<AtomicBool>,
    busy_ns: Arc<AtomicU64>,
    copy_ns: Arc<AtomicU64>,
}

impl Worker {
    /// Copies a batch in; false if told to quit.
    fn install(&self, job: &Job) -> bool {
        for &(addr, off, len) in &job.runs {
            let mut at = 0;
            while at < len {
                if self.quit.load(Ordering::Relaxed) {
                    return false;
                }
                let n = (len - at).min(INSTALL_CHUNK);
                let start = addr + at as u64;
                let gate = lock(&self.gate);
                let t = Instant::now();
                let mut again = false;
                for (s, e) in uncancelled(start, start + n as u64, job.id, &gate.cancelled) {
                    let o = off + (s - addr) as usize;
                    match self.uffd.copy(s, &job.data[o..o + (e - s) as usize]) {
                        Ok(_) => {}
                        Err(UffdError::Again { .. }) => {
                            again = true;
                            break;
                        }
                        // Unmapped meanwhile (ENOENT) and the like.
                        Err(e) => debug!(start = s, "UFFDIO_COPY: {e}"),
                    }
                }
                self.copy_ns
                    .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                drop(gate);
                if again {
                    // Events are pending: the pager reads them, then this
                    // chunk is tried again (pages already in are skipped).
                    std::thread::yield_now();
                    continue;
                }
                at += n;
            }
        }
        true
    }
}

/// The parts of `[start, end)` that batch `job` may still fill.
fn uncancelled(start: u64, end: u64, job: u64, cancelled: &[Cancel]) -> Vec<(u64, u64)> {
    let mut parts = vec![(start, end)];
    for c in cancelled.iter().filter(|c| job <= c.upto) {
        let mut next = Vec::with_capacity(parts.len() + 1);
        // Whole pages, as the page state counts a discard.
        let cs = c.start & !(PAGE_SIZE - 1);
        let ce = c.end.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        for (s, e) in parts {
            if ce <= s || e <= cs {
                next.push((s, e));
                continue;
            }
            if s < cs {
                next.push((s, cs));
            }
            if ce < e {
                next.push((ce, e));
            }
        }
        parts = next;
    }
    parts
}

/// `r` cut into requests of at most [`MAX_REQUEST_PAGES`].
fn requests(r: PageRange) -> impl Iterator<Item = PageRange> {
    (0..r.pages)
        .step_by(MAX_REQUEST_PAGES as usize)
        .map(move |i| PageRange {
            start: r.start + i * PAGE_SIZE,
            pages: (r.pages - i).min(MAX_REQUEST_PAGES),
        })
}

/// Fetches `ranges` (`(start, len)`) of `pid` over `ch` and returns their
/// bytes, for the few pages that must be in place before the worker runs.
pub fn fetch_now(
    ch: &mut PageChannel,
    pid: i32,
    ranges: &[(u64, u64)],
) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let mut asked = HashMap::new();
    let mut req_id = 0u64;
    for &(start, len) in ranges {
        let whole = PageRange {
            start,
            pages: len / PAGE_SIZE,
        };
        for part in requests(whole) {
            req_id += 1;
            let msg = PeerMessage::PageRequest {
                req_id,
                pid,
                addr: part.start,
                pages: part.pages as u32,
            };
            ch.send(&msg).map_err(|e| format!("page channel: {e}"))?;
            asked.insert(req_id, part.start);
        }
    }
    let deadline = Instant::now() + super::CALL_TIMEOUT;
    let mut out = Vec::with_capacity(asked.len());
    while !asked.is_empty() {
        if Instant::now() > deadline {
            return Err("the origin did not send the process's memory".into());
        }
        sys::poll_readable(&[ch.as_fd()], Some(Duration::from_millis(100)))
            .map_err(|e| format!("poll: {e}"))?;
        let mut failed = None;
        ch.receive(|frame| match frame {
            Reply::PageData { req_id, data, .. } => {
                if let Some(addr) = asked.remove(&req_id) {
                    out.push((addr, data));
                }
            }
            Reply::Other(PeerMessage::PageError { message, .. }) => {
                failed = Some(format!("fetching memory: {message}"));
            }
            Reply::Other(_) => {}
        })
        .map_err(|e| format!("page channel: {e}"))?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancelled_ranges_are_cut_out_of_older_batches_only() {
        let c = |start, end, upto| Cancel { start, end, upto };
        assert_eq!(uncancelled(0x1000, 0x9000, 1, &[]), [(0x1000, 0x9000)]);
        let cs = [
            c(0x3000, 0x4000, 2),
            c(0x6800, 0x7001, 3),
            c(0x0, 0x2000, 1),
        ];
        // Batch 1: every cancel applies; unaligned ends cover whole pages.
        assert_eq!(
            uncancelled(0x1000, 0x9000, 1, &cs),
            [(0x2000, 0x3000), (0x4000, 0x6000), (0x8000, 0x9000)]
        );
        // Batch 3 was queued after the first two events.
        assert_eq!(
            uncancelled(0x1000, 0x9000, 3, &cs),
            [(0x1000, 0x6000), (0x8000, 0x9000)]
        );
        assert_eq!(uncancelled(0x1000, 0x9000, 4, &cs), [(0x1000, 0x9000)]);
        assert!(uncancelled(0x3000, 0x4000, 2, &cs).is_empty());
    }

    #[test]
    fn ranges_are_cut_into_bounded_requests() {
        let r = |start, pages| PageRange { start, pages };
        assert_eq!(requests(r(0x1000, 0)).count(), 0);
        assert_eq!(requests(r(0x1000, 3)).collect::<Vec<_>>(), [r(0x1000, 3)]);
        let m = MAX_REQUEST_PAGES;
        let parts: Vec<_> = requests(r(0x1000, 2 * m + 5)).collect();
        assert_eq!(
            parts,
            [
                r(0x1000, m),
                r(0x1000 + m * PAGE_SIZE, m),
                r(0x1000 + 2 * m * PAGE_SIZE, 5)
            ]
        );
    }
}

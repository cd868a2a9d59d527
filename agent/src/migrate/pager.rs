//! The destination's post-copy server for one migrated process: a plain
//! thread owning the userfaultfd created inside the worker and the page
//! channel to the origin. Faults become page requests (many in flight on
//! the channel), pages the
//! origin never touched are zero-filled here, and while the program does
//! not fault a background pusher pulls the rest in growing batches. When
//! every page is here the origin is told and the uffd is closed, so the
//! process no longer depends on the origin.
//!
//! Pages are installed as they are decrypted, a TLS record (four pages) at a
//! time, straight from rustls's buffer while it is still in cache: no copy
//! into a reply buffer, and a fault never waits behind a whole batch.

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
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Background requests in flight at once.
const PUSH_IN_FLIGHT: usize = 4;
/// Pages fetched per fault (the faulting one and the next ones).
const FAULT_WINDOW: u64 = 1;
/// How long the origin may stay unreachable before the process is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// How long the pager busy-polls after a fault or a reply before sleeping.
const SPIN: Duration = Duration::from_micros(200);
/// How often a broken page channel is reopened.
const RECONNECT_EVERY: Duration = Duration::from_millis(200);

/// Largest request (4 MiB, background batches are smaller), well inside
/// one `PageData` frame.
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
            uffd: spec.uffd,
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
    uffd: Uffd,
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
    /// installed yet: a fork while they are copied in leaves the child
    /// without them.
    installing: Vec<(u64, u64)>,
    /// Where the pager's time went, logged when every page has arrived.
    busy: Busy,
}

/// Time spent polling, receiving (reading, decrypting, framing, including
/// installing) and installing pages (`UFFDIO_COPY`).
#[derive(Default)]
struct Busy {
    waiting: Duration,
    receiving: Duration,
    installing: Duration,
}

impl Pager {
    /// Serves until every page is here, the process is gone, the family is
    /// stopped, or serving fails.
    fn run(&mut self, stop: &AtomicBool) -> End {
        let pid = self.spec.pid;
        let started = Instant::now();
        let mut last_active = Instant::now() - SPIN;
        loop {
            if stop.load(Ordering::Relaxed) {
                return End::Stopped;
            }
            if self.pc.remaining() == 0 && self.inflight.is_empty() {
                let c = self.pc.counts();
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
                // fault. Not for background batches: the origin may need this
                // CPU (both nodes can share a machine).
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
        match ch.receive(|frame| match frame {
            Reply::PagesStart { req_id, len, .. } => self.reply_starts(req_id, len),
            Reply::Pages {
                req_id,
                offset,
                data,
            } => self.arrived(req_id, offset, data),
            Reply::PagesEnd { req_id } => {
                self.inflight.remove(&req_id);
            }
            Reply::Other(PeerMessage::PageError { req_id, message }) => {
                self.fetch_failed(req_id, &message)
            }
            Reply::Other(other) => debug!("unexpected frame on a page channel: {other:?}"),
        }) {
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
        while let Some(ev) = self.spec.uffd.read_event()? {
            match ev {
                Event::PageFault { addr, .. } => {
                    faulted = true;
                    self.stats.faults.fetch_add(1, Ordering::Relaxed);
                    self.fault(addr);
                }
                Event::Remove { start, end } | Event::Unmap { start, end } => {
                    self.pc.on_discard(start, end);
                }
                Event::Remap { from, to, len } => self.remap(from, to, len),
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
                let _ = self.spec.uffd.wake(r.start, r.bytes());
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
        for &(start, end) in &self.installing {
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
                uffd: Uffd::adopt_forked(ufd, &self.spec.uffd),
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

    /// A reply for `req_id` starts with `len` bytes of pages.
    fn reply_starts(&mut self, req_id: u64, len: usize) {
        let Some(&(range, _)) = self.inflight.get(&req_id) else {
            return;
        };
        if len as u64 != range.bytes() {
            warn!(
                pid = self.spec.pid,
                "origin sends {len} bytes for {} pages", range.pages
            );
            // Its pages are ignored (no longer in flight).
            self.inflight.remove(&req_id);
            let _ = self.pc.on_fetch_failed(range);
            return;
        }
        self.failing_since = None;
        self.stats
            .pages_in
            .fetch_add(range.pages, Ordering::Relaxed);
    }

    fn fetch_failed(&mut self, req_id: u64, message: &str) {
        let Some((range, _)) = self.inflight.remove(&req_id) else {
            return;
        };
        warn!(pid = self.spec.pid, origin = %self.spec.origin, "page fetch failed: {message}");
        self.failing_since.get_or_insert_with(Instant::now);
        let _ = self.pc.on_fetch_failed(range);
    }

    /// Whole pages of the reply to `req_id`, `offset` bytes into it, arrived:
    /// installed now, straight from the decrypted record.
    fn arrived(&mut self, req_id: u64, offset: usize, data: &[u8]) {
        let Some(&(range, _)) = self.inflight.get(&req_id) else {
            return;
        };
        let part = PageRange {
            start: range.start + offset as u64,
            pages: data.len() as u64 / PAGE_SIZE,
        };
        if part.pages == 0 || part.end() > range.end() {
            return;
        }
        let runs = match self.pc.on_pages_arrived(part) {
            Ok(r) => r,
            Err(e) => {
                debug!("arrival outside the regions: {e}");
                return;
            }
        };
        // Installed in order; a fork handled meanwhile (install reads the
        // events when the copy meets a changing map) sees what is left.
        self.installing.clear();
        self.installing
            .extend(runs.iter().rev().map(|r| (r.start, r.start + r.bytes())));
        for run in runs {
            let off = (run.start - part.start) as usize;
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
        // Fill the pipeline at once: several requests in flight.
        loop {
            let pushing = self.inflight.values().filter(|(_, p)| *p).count();
            if pushing >= PUSH_IN_FLIGHT || self.failing_since.is_some() || self.channel.is_none() {
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
    let mut filling: HashMap<u64, (u64, Vec<u8>)> = HashMap::new();
    while !asked.is_empty() || !filling.is_empty() {
        if Instant::now() > deadline {
            return Err("the origin did not send the process's memory".into());
        }
        sys::poll_readable(&[ch.as_fd()], Some(Duration::from_millis(100)))
            .map_err(|e| format!("poll: {e}"))?;
        let mut failed = None;
        ch.receive(|frame| match frame {
            Reply::PagesStart { req_id, len, .. } => {
                if let Some(addr) = asked.remove(&req_id) {
                    filling.insert(req_id, (addr, vec![0; len]));
                }
            }
            Reply::Pages {
                req_id,
                offset,
                data,
            } => {
                if let Some((_, buf)) = filling.get_mut(&req_id) {
                    if let Some(to) = buf.get_mut(offset..offset + data.len()) {
                        to.copy_from_slice(data);
                    }
                }
            }
            Reply::PagesEnd { req_id } => {
                if let Some(done) = filling.remove(&req_id) {
                    out.push(done);
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

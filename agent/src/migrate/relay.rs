//! Standard streams of migrated processes. Once a process has left its
//! home node, its fds 0–2 are pipes held by the agent of whichever node
//! runs it (a [`HostRelay`]), and the home agent keeps the real stdin,
//! stdout and stderr (a [`Hub`]): output travels host → home in order,
//! stdin home → host. Exits go through the same path after the output, so
//! `popcorn run` prints everything before it returns the status.

use super::{lock, Migrations};
use popcorn_proto::control::ExitStatus;
use popcorn_proto::wire::{PeerMessage, MAX_BODY};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

const CHUNK: usize = 64 << 10;

/// A pipe `(read end, write end)`, both close-on-exec.
pub fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut p = [0 as RawFd; 2];
    // SAFETY: `p` is a valid array of two fds for the kernel to fill.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

/// Bytes waiting in a pipe (FIONREAD).
fn pending_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to a live location.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } == -1 {
        return 0;
    }
    n.max(0) as usize
}

/// Reads up to `buf.len()` bytes; retries on EINTR.
fn read_fd(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

enum HubEvent {
    Output(u8, Vec<u8>),
    Exited(ExitStatus),
}

/// The home side: the real standard streams of a process that has left.
pub struct Hub {
    events: mpsc::Sender<HubEvent>,
    location: Arc<Mutex<String>>,
}

impl Hub {
    /// Takes over the real streams `[stdin, stdout, stderr]` of `pid`, which
    /// now runs on `location`.
    pub fn start(m: &Arc<Migrations>, pid: i32, real: [OwnedFd; 3], location: &str) -> Arc<Hub> {
        let [stdin, stdout, stderr] = real;
        let (tx, rx) = mpsc::channel();
        let location = Arc::new(Mutex::new(location.to_owned()));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let m = m.clone();
            let stop = stop.clone();
            move || {
                let mut out = [File::from(stdout), File::from(stderr)];
                while let Ok(ev) = rx.recv() {
                    match ev {
                        HubEvent::Output(fd, data) => {
                            let f = &mut out[usize::from(fd == 2)];
                            if let Err(e) = f.write_all(&data) {
                                debug!(pid, fd, "writing relayed output: {e}");
                            }
                        }
                        HubEvent::Exited(status) => {
                            stop.store(true, Ordering::Relaxed);
                            m.hub_finished(pid, status);
                            return;
                        }
                    }
                }
            }
        };
        let reader = {
            let m = m.clone();
            let location = location.clone();
            move || {
                let fd = stdin.as_raw_fd();
                let mut buf = vec![0u8; CHUNK];
                let mut offset = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let ready = crate::sys::poll_readable(
                        &[stdin.as_fd()],
                        Some(Duration::from_millis(200)),
                    );
                    if !ready.is_ok_and(|r| r[0]) {
                        continue;
                    }
                    let data = match read_fd(fd, &mut buf) {
                        Ok(n) => buf[..n].to_vec(),
                        Err(e) => {
                            debug!(pid, "reading stdin: {e}");
                            Vec::new()
                        }
                    };
                    let eof = data.is_empty();
                    let to = lock(&location).clone();
                    let len = data.len() as u64;
                    m.deliver_stdin(pid, &to, offset, data);
                    offset += len;
                    if eof {
                        return;
                    }
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name(format!("hub-out-{pid}"))
            .spawn(writer)
        {
            warn!(pid, "cannot start the output relay: {e}");
        }
        if let Err(e) = std::thread::Builder::new()
            .name(format!("hub-in-{pid}"))
            .spawn(reader)
        {
            warn!(pid, "cannot start the stdin relay: {e}");
        }
        Arc::new(Hub {
            events: tx,
            location,
        })
    }

    pub fn output(&self, fd: u8, data: Vec<u8>) {
        if !data.is_empty() {
            let _ = self.events.send(HubEvent::Output(fd, data));
        }
    }

    pub fn exited(&self, status: ExitStatus) {
        let _ = self.events.send(HubEvent::Exited(status));
    }

    pub fn set_location(&self, node: &str) {
        *lock(&self.location) = node.to_owned();
    }
}

enum StdinOp {
    /// Bytes at this offset of the stream (empty: end of file there).
    Data(u64, Vec<u8>),
    /// The process is frozen for a migration: take what it did not read
    /// out of the pipe and keep later bytes aside.
    Hold(mpsc::Sender<StdinBacklog>),
    /// The migration failed: put the unread bytes back.
    Resume,
    /// The stream continues from this backlog (a relay made before the
    /// process's stdin position was known).
    Begin(StdinBacklog),
    /// The process left: later bytes go to this node.
    Forward(String),
}

/// Where a process's stdin stands when it moves: the bytes it has not
/// read, from stream offset `start`, and whether the stream ended after.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StdinBacklog {
    pub start: u64,
    pub bytes: Vec<u8>,
    pub eof: bool,
}

/// The host side: the pipes a migrated process has for fds 0–2.
pub struct HostRelay {
    home: String,
    stdin: Mutex<mpsc::Sender<StdinOp>>,
    outputs: [Arc<OwnedFd>; 2],
    done: Arc<(Mutex<u8>, Condvar)>,
}

impl HostRelay {
    /// Creates the pipes, stdin starting with `backlog`; returns the relay
    /// and the worker's ends `[stdin, stdout, stderr]`.
    pub fn start(
        m: &Arc<Migrations>,
        pid: i32,
        home: &str,
        backlog: StdinBacklog,
    ) -> std::io::Result<(Arc<HostRelay>, [OwnedFd; 3])> {
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let drain = in_r.try_clone()?;
        let (tx, rx) = mpsc::channel();
        let outputs = [Arc::new(out_r), Arc::new(err_r)];
        let done = Arc::new((Mutex::new(0u8), Condvar::new()));
        let writer = {
            let m = m.clone();
            move || {
                let mut w = StdinWriter {
                    pid,
                    next: backlog.start,
                    pending: std::collections::BTreeMap::new(),
                    pipe: Some(File::from(in_w)),
                    drain,
                    held: None,
                    forward: None,
                };
                w.begin(backlog);
                w.run(&m, rx)
            }
        };
        std::thread::Builder::new()
            .name(format!("relay-in-{pid}"))
            .spawn(writer)?;
        for (i, fd) in outputs.iter().enumerate() {
            let fd = fd.clone();
            let m = m.clone();
            let home = home.to_owned();
            let done = done.clone();
            std::thread::Builder::new()
                .name(format!("relay-out-{pid}"))
                .spawn(move || {
                    let mut buf = vec![0u8; CHUNK];
                    let stream = i as u8 + 1;
                    loop {
                        match read_fd(fd.as_raw_fd(), &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => m.deliver_output(pid, &home, stream, buf[..n].to_vec()),
                        }
                    }
                    let (count, cv) = &*done;
                    *lock(count) += 1;
                    cv.notify_all();
                })?;
        }
        let relay = Arc::new(HostRelay {
            home: home.to_owned(),
            stdin: Mutex::new(tx),
            outputs,
            done,
        });
        Ok((relay, [in_r, out_w, err_w]))
    }

    pub fn home(&self) -> &str {
        &self.home
    }

    /// Stdin bytes at `offset` of the stream (empty: end of file).
    pub fn stdin(&self, offset: u64, data: Vec<u8>) {
        let _ = lock(&self.stdin).send(StdinOp::Data(offset, data));
    }

    /// The process is frozen to migrate: its unread stdin, taken out of
    /// the pipe (see [`HostRelay::resume_stdin`] and
    /// [`HostRelay::forward_stdin`]).
    pub fn hold_stdin(&self) -> StdinBacklog {
        let (tx, rx) = mpsc::channel();
        if lock(&self.stdin).send(StdinOp::Hold(tx)).is_err() {
            return StdinBacklog::default();
        }
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default()
    }

    /// Stdin continues from `backlog` (for a relay started before the
    /// process stopped, with an empty one).
    pub fn begin_stdin(&self, backlog: StdinBacklog) {
        let _ = lock(&self.stdin).send(StdinOp::Begin(backlog));
    }

    /// The migration failed: the unread stdin goes back into the pipe.
    pub fn resume_stdin(&self) {
        let _ = lock(&self.stdin).send(StdinOp::Resume);
    }

    /// The process left for `node`: stdin bytes from now on go there.
    pub fn forward_stdin(&self, node: &str) {
        let _ = lock(&self.stdin).send(StdinOp::Forward(node.to_owned()));
    }

    /// Waits (at most `timeout`) until the output pipes are empty, e.g.
    /// after a freeze, so what was written before reaches home first.
    pub fn flush_outputs(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .outputs
                .iter()
                .all(|fd| pending_bytes(fd.as_raw_fd()) == 0)
            {
                // The readers may still be sending their last chunk.
                std::thread::sleep(Duration::from_millis(2));
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits (at most `timeout`) until both outputs reached end of file.
    pub fn wait_outputs(&self, timeout: Duration) {
        let (count, cv) = &*self.done;
        let guard = lock(count);
        let _ = cv.wait_timeout_while(guard, timeout, |n| *n < 2);
    }
}

/// Writes stdin into the process's pipe in stream order, whatever order
/// the chunks arrive in (directly from the hub, or forwarded by the node
/// the process left).
struct StdinWriter {
    pid: i32,
    /// Offset of the next byte the pipe gets.
    next: u64,
    pending: std::collections::BTreeMap<u64, Vec<u8>>,
    /// `None` once the stream ended (the process reads end of file).
    pipe: Option<File>,
    /// A duplicate of the pipe's read end, to take unread bytes back.
    drain: OwnedFd,
    /// While a migration is under way: the unread bytes taken back.
    held: Option<StdinBacklog>,
    forward: Option<String>,
}

impl StdinWriter {
    fn run(&mut self, m: &Migrations, rx: mpsc::Receiver<StdinOp>) {
        while let Ok(op) = rx.recv() {
            match op {
                StdinOp::Data(offset, data) => match &self.forward {
                    Some(to) => m.deliver_stdin(self.pid, to, offset, data),
                    None => self.accept(offset, data),
                },
                StdinOp::Hold(reply) => {
                    let backlog = self.take_unread();
                    let _ = reply.send(backlog.clone());
                    self.held = Some(backlog);
                }
                StdinOp::Resume => {
                    if let Some(b) = self.held.take() {
                        self.begin(b);
                    }
                }
                StdinOp::Begin(b) => self.begin(b),
                StdinOp::Forward(to) => {
                    self.held = None;
                    self.pipe = None;
                    for (offset, data) in std::mem::take(&mut self.pending) {
                        m.deliver_stdin(self.pid, &to, offset, data);
                    }
                    self.forward = Some(to);
                }
            }
        }
    }

    /// The stream continues at `b.start` with `b`'s bytes.
    fn begin(&mut self, b: StdinBacklog) {
        self.next = b.start;
        if !b.bytes.is_empty() {
            self.accept(b.start, b.bytes);
        }
        if b.eof {
            self.pipe = None;
        }
        self.flush();
    }

    fn accept(&mut self, offset: u64, data: Vec<u8>) {
        if data.is_empty() || offset + data.len() as u64 > self.next {
            self.pending.insert(offset, data);
        }
        if self.held.is_none() {
            self.flush();
        }
    }

    /// Writes every chunk that continues the stream.
    fn flush(&mut self) {
        while let Some((&offset, _)) = self.pending.first_key_value() {
            if offset > self.next {
                return;
            }
            let Some((offset, data)) = self.pending.pop_first() else {
                return;
            };
            if data.is_empty() {
                self.pipe = None;
                continue;
            }
            let skip = (self.next - offset) as usize;
            if skip >= data.len() {
                continue;
            }
            if let Some(p) = self.pipe.as_mut() {
                let mut p: &File = p;
                if let Err(e) = p.write_all(&data[skip..]) {
                    debug!(pid = self.pid, "writing stdin: {e}");
                }
            }
            self.next = offset + data.len() as u64;
        }
    }

    /// Reads back what is in the pipe (the process is frozen: it was never
    /// read) and later chunks stay pending.
    fn take_unread(&mut self) -> StdinBacklog {
        let n = pending_bytes(self.drain.as_raw_fd());
        let mut bytes = vec![0u8; n];
        if n > 0 {
            match read_fd(self.drain.as_raw_fd(), &mut bytes) {
                Ok(got) => bytes.truncate(got),
                Err(_) => bytes.clear(),
            }
        }
        StdinBacklog {
            start: self.next - bytes.len() as u64,
            bytes,
            eof: self.pipe.is_none(),
        }
    }
}

impl Migrations {
    /// Sends stdin bytes at `offset` to the node hosting `pid` (from a
    /// plain thread).
    pub(crate) fn deliver_stdin(&self, pid: i32, to: &str, offset: u64, data: Vec<u8>) {
        if to == self.node {
            if let Some(r) = lock(&self.hosted).get(&pid).cloned() {
                r.stdin(offset, data);
                return;
            }
            // It has just left (the hub learns where a moment later).
            let Some(gone_to) = lock(&self.moved).get(&pid).map(|d| d.to.clone()) else {
                debug!(pid, "stdin for a process that runs nowhere");
                return;
            };
            self.send_stdio_blocking(pid, &gone_to, 0, offset, data);
            return;
        }
        self.send_stdio_blocking(pid, to, 0, offset, data);
    }

    /// Sends output of `pid` to its home (from a plain thread).
    pub(crate) fn deliver_output(&self, pid: i32, home: &str, fd: u8, data: Vec<u8>) {
        if home == self.node {
            if let Some(hub) = self.hub(pid) {
                hub.output(fd, data);
            }
            return;
        }
        self.send_stdio_blocking(pid, home, fd, 0, data);
    }

    fn send_stdio_blocking(&self, pid: i32, to: &str, fd: u8, offset: u64, data: Vec<u8>) {
        let chunks: Vec<Vec<u8>> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(MAX_BODY).map(<[u8]>::to_vec).collect()
        };
        let mut offset = offset;
        for data in chunks {
            let len = data.len() as u64;
            let msg = PeerMessage::Stdio {
                pid,
                fd,
                offset,
                data,
            };
            offset += len;
            if let Err(e) = self.rt.block_on(self.peers.send(to, msg)) {
                warn!(pid, fd, "relaying a standard stream to {to}: {e}");
            }
        }
    }
}

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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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

/// Waits up to `ms` for `fd` to be readable (or hung up).
fn readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
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
                while !stop.load(Ordering::Relaxed) {
                    if !readable(fd, 200) {
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
                    m.deliver_stdin(pid, &to, data);
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
    Data(Vec<u8>),
    /// The process left: send what it did not read, and what comes later,
    /// to this node.
    Forward(String),
}

/// The host side: the pipes a migrated process has for fds 0–2.
pub struct HostRelay {
    home: String,
    stdin: Mutex<mpsc::Sender<StdinOp>>,
    outputs: [Arc<OwnedFd>; 2],
    done: Arc<(Mutex<u8>, Condvar)>,
}

impl HostRelay {
    /// Creates the pipes; returns the relay and the worker's ends
    /// `[stdin, stdout, stderr]`.
    pub fn start(
        m: &Arc<Migrations>,
        pid: i32,
        home: &str,
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
            move || stdin_writer(&m, pid, File::from(in_w), drain, rx)
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

    /// Stdin bytes for the process (empty: end of file).
    pub fn stdin(&self, data: Vec<u8>) {
        let _ = lock(&self.stdin).send(StdinOp::Data(data));
    }

    /// From now on stdin goes to `node`, starting with what is unread here.
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

fn stdin_writer(
    m: &Arc<Migrations>,
    pid: i32,
    pipe_w: File,
    drain: OwnedFd,
    rx: mpsc::Receiver<StdinOp>,
) {
    let mut local = Some(pipe_w);
    let mut forward: Option<String> = None;
    while let Ok(op) = rx.recv() {
        match op {
            StdinOp::Data(data) => {
                if let Some(to) = &forward {
                    m.deliver_stdin(pid, to, data);
                } else if data.is_empty() {
                    local = None;
                } else if let Some(w) = local.as_mut() {
                    let mut w: &File = w;
                    if let Err(e) = w.write_all(&data) {
                        debug!(pid, "writing stdin: {e}");
                    }
                }
            }
            StdinOp::Forward(to) => {
                // The process is frozen: what is in the pipe was never read.
                let n = pending_bytes(drain.as_raw_fd());
                if n > 0 {
                    let mut buf = vec![0u8; n];
                    if let Ok(got) = read_fd(drain.as_raw_fd(), &mut buf) {
                        buf.truncate(got);
                        m.deliver_stdin(pid, &to, buf);
                    }
                }
                if local.take().is_none() {
                    m.deliver_stdin(pid, &to, Vec::new());
                }
                forward = Some(to);
            }
        }
    }
}

impl Migrations {
    /// Sends stdin bytes to the node hosting `pid` (from a plain thread).
    pub(crate) fn deliver_stdin(&self, pid: i32, to: &str, data: Vec<u8>) {
        if to == self.node {
            if let Some(r) = lock(&self.hosted).get(&pid) {
                r.stdin(data);
            }
            return;
        }
        self.send_stdio_blocking(pid, to, 0, data);
    }

    /// Sends output of `pid` to its home (from a plain thread).
    pub(crate) fn deliver_output(&self, pid: i32, home: &str, fd: u8, data: Vec<u8>) {
        if home == self.node {
            if let Some(hub) = self.hub(pid) {
                hub.output(fd, data);
            }
            return;
        }
        self.send_stdio_blocking(pid, home, fd, data);
    }

    fn send_stdio_blocking(&self, pid: i32, to: &str, fd: u8, data: Vec<u8>) {
        let chunks: Vec<Vec<u8>> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(MAX_BODY).map(<[u8]>::to_vec).collect()
        };
        for data in chunks {
            let msg = PeerMessage::Stdio { pid, fd, data };
            if let Err(e) = self.rt.block_on(self.peers.send(to, msg)) {
                warn!(pid, fd, "relaying a standard stream to {to}: {e}");
            }
        }
    }
}

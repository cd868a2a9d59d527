//! Page channels: one dedicated mutual-TLS connection per migration, from
//! the destination's pager to a page-server thread at the origin. Both ends
//! are plain threads doing synchronous I/O (rustls over std sockets), so a
//! remote fault costs one wake-up each way; the shared peer link would add
//! hops through async tasks and queue faults behind other traffic.

use crate::peers::Peers;
use popcorn_proto::wire::{
    decode_frame, decode_frame_ref, encode_frame, frame_len, page_data_header, FrameRef,
    PeerMessage, WireError, MAX_PAGE_DATA, PAGE_DATA_HEADER, PAGE_SIZE,
};
use rustls::{ClientConnection, ServerConnection, StreamOwned};
use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{debug, info};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes read from the socket per syscall.
const RAW_READ: usize = 256 << 10;

/// The destination's end: send requests, collect replies when readable.
pub struct PageChannel {
    conn: ClientConnection,
    sock: TcpStream,
    /// Bytes read from the socket, before decryption.
    raw: Vec<u8>,
    /// Decrypted bytes cut into frames.
    frames: Splitter,
}

/// What the origin sent, as it is decrypted. A `PageData` frame comes in
/// pieces of whole pages, borrowed from the decrypted record (the origin
/// puts four pages in each record, so nothing is copied): its start, each
/// piece, its end.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    PagesStart {
        req_id: u64,
        addr: u64,
        len: usize,
    },
    Pages {
        req_id: u64,
        /// Bytes into the frame's data (whole pages).
        offset: usize,
        data: &'a [u8],
    },
    PagesEnd {
        req_id: u64,
    },
    Other(PeerMessage),
}

impl PageChannel {
    /// Connects to `origin` for the memory of `pid` (blocking).
    pub fn open(peers: &Peers, origin: &str, pid: i32) -> Result<PageChannel, String> {
        let (addr, config) = peers.page_channel_target(origin)?;
        let sock = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("page channel to {origin} ({addr}): {e}"))?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(CONNECT_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let name = crate::tls::server_name(origin).map_err(|e| e.to_string())?;
        let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut ch = PageChannel {
            conn,
            sock,
            raw: vec![0; RAW_READ],
            frames: Splitter::default(),
        };
        while ch.conn.is_handshaking() {
            ch.conn
                .complete_io(&mut ch.sock)
                .map_err(|e| format!("page channel TLS handshake with {origin}: {e}"))?;
        }
        ch.sock.set_read_timeout(None).map_err(|e| e.to_string())?;
        let hello = PeerMessage::PageHello {
            cluster: peers.cluster_name().to_owned(),
            node: peers.this_node().to_owned(),
            pid,
        };
        ch.send(&hello).map_err(|e| e.to_string())?;
        ch.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(ch)
    }

    /// Sends one frame, waiting while the socket is full.
    pub fn send(&mut self, msg: &PeerMessage) -> io::Result<()> {
        self.conn.writer().write_all(&encode_frame(msg))?;
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_fd(&self.sock, libc::POLLOUT)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what the socket has, up to one buffer (call when it is
    /// readable; the caller polls again, so faults and new requests are
    /// not held up behind a long stream), and hands each complete frame to
    /// `on_frame` as soon as it is decrypted. An error means the channel is
    /// gone.
    pub fn receive(&mut self, mut on_frame: impl FnMut(Reply<'_>)) -> io::Result<()> {
        loop {
            // One big read per syscall: rustls reads at most 4 KiB at a time,
            // so it is fed from this buffer instead of the socket.
            let n = match self.sock.read(&mut self.raw) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the origin closed the page channel",
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut tls = &self.raw[..n];
            while !tls.is_empty() {
                self.conn.read_tls(&mut tls)?;
                self.conn
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let mut r = self.conn.reader();
                loop {
                    let used = match r.fill_buf() {
                        Ok([]) => break,
                        Ok(chunk) => {
                            self.frames
                                .push(chunk, &mut on_frame)
                                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                            chunk.len()
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    };
                    r.consume(used);
                }
            }
            return Ok(());
        }
    }
}

impl AsFd for PageChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Cuts a decrypted byte stream into frames. `PageData` payloads are handed
/// on in place, a page that straddles two records being gathered in a
/// bounce page; other frames are gathered in a small head buffer and
/// decoded there.
#[derive(Default)]
struct Splitter {
    /// The start of the current frame (whole, unless it is page data).
    head: Vec<u8>,
    /// The page data being received.
    body: Option<Body>,
}

struct Body {
    req_id: u64,
    len: usize,
    /// Bytes received so far.
    filled: usize,
    /// The received part of a page split between records.
    bounce: Vec<u8>,
}

impl Splitter {
    /// Takes all of `bytes`, handing every frame (or piece of page data)
    /// it completes to `on_frame`.
    fn push(
        &mut self,
        mut bytes: &[u8],
        on_frame: &mut impl FnMut(Reply<'_>),
    ) -> Result<(), WireError> {
        loop {
            if let Some(b) = &mut self.body {
                let left = b.len - b.filled;
                if left > 0 && bytes.is_empty() {
                    return Ok(());
                }
                if !b.bounce.is_empty() {
                    let take = (PAGE_SIZE - b.bounce.len()).min(bytes.len());
                    b.bounce.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    b.filled += take;
                    if b.bounce.len() == PAGE_SIZE {
                        on_frame(Reply::Pages {
                            req_id: b.req_id,
                            offset: b.filled - PAGE_SIZE,
                            data: &b.bounce,
                        });
                        b.bounce.clear();
                    }
                } else if left > 0 {
                    let n = left.min(bytes.len());
                    let whole = n - n % PAGE_SIZE;
                    if whole > 0 {
                        on_frame(Reply::Pages {
                            req_id: b.req_id,
                            offset: b.filled,
                            data: &bytes[..whole],
                        });
                        b.filled += whole;
                        bytes = &bytes[whole..];
                    } else {
                        b.bounce.extend_from_slice(&bytes[..n]);
                        b.filled += n;
                        bytes = &bytes[n..];
                    }
                }
                if b.filled == b.len && b.bounce.is_empty() {
                    on_frame(Reply::PagesEnd { req_id: b.req_id });
                    self.body = None;
                }
                continue;
            }
            let Some(need) = self.step(on_frame)? else {
                continue;
            };
            if bytes.is_empty() {
                return Ok(());
            }
            let take = (need - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
    }

    /// Acts on the gathered head: `Some(n)` while it needs `n` bytes in all
    /// to go on, `None` once it became a frame or the start of a payload.
    fn step(&mut self, on_frame: &mut impl FnMut(Reply<'_>)) -> Result<Option<usize>, WireError> {
        let h = &self.head;
        if h.len() < 4 {
            return Ok(Some(4));
        }
        let total = frame_len([h[0], h[1], h[2], h[3]])?;
        let first = PAGE_DATA_HEADER.min(total);
        if h.len() < first {
            return Ok(Some(first));
        }
        if let Some((req_id, addr, len)) = page_data_start(h, total)? {
            self.head.clear();
            on_frame(Reply::PagesStart { req_id, addr, len });
            self.body = Some(Body {
                req_id,
                len,
                filled: 0,
                bounce: Vec::new(),
            });
            return Ok(None);
        }
        if h.len() < total {
            return Ok(Some(total));
        }
        match decode_frame_ref(h)? {
            // A page-data frame of another shape (not reached: the version
            // byte is checked first, and decoding rejects other versions).
            Some((FrameRef::PageData { req_id, addr, data }, _)) => {
                on_frame(Reply::PagesStart {
                    req_id,
                    addr,
                    len: data.len(),
                });
                if !data.is_empty() {
                    on_frame(Reply::Pages {
                        req_id,
                        offset: 0,
                        data,
                    });
                }
                on_frame(Reply::PagesEnd { req_id });
            }
            Some((FrameRef::Other(m), _)) => on_frame(Reply::Other(m)),
            None => return Err(WireError::Truncated),
        }
        self.head.clear();
        Ok(None)
    }
}

/// `(req_id, addr, payload bytes)` if `head` (at least [`PAGE_DATA_HEADER`]
/// bytes of a `total`-byte frame) starts a `PageData` frame of this wire
/// version; anything else is left to the full decoder.
fn page_data_start(head: &[u8], total: usize) -> Result<Option<(u64, u64, usize)>, WireError> {
    let ours = page_data_header(0, 0, 0);
    if head.len() < PAGE_DATA_HEADER || head[4..6] != ours[4..6] {
        return Ok(None);
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&head[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let n = u32::from_be_bytes([head[22], head[23], head[24], head[25]]) as usize;
    if !n.is_multiple_of(PAGE_SIZE) || n > MAX_PAGE_DATA {
        return Err(WireError::PageData(n));
    }
    match total.cmp(&(PAGE_DATA_HEADER + n)) {
        std::cmp::Ordering::Less => Err(WireError::Truncated),
        std::cmp::Ordering::Greater => Err(WireError::Trailing(total - PAGE_DATA_HEADER - n)),
        std::cmp::Ordering::Equal => Ok(Some((word(6), word(14), n))),
    }
}

fn wait_fd(sock: &TcpStream, events: i16) {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 100) };
}

/// The origin's end, on its own thread: answers page requests for `pid`
/// from `peer` until the channel closes. `stream` is past the TLS handshake
/// and the `PageHello`; `pending` holds plaintext read after the hello.
pub fn serve(
    peers: &Peers,
    peer: &str,
    pid: i32,
    mut stream: StreamOwned<ServerConnection, TcpStream>,
    mut pending: Vec<u8>,
) {
    info!(peer, pid, "page channel open");
    // A whole reply is encrypted per write (no 64 KiB limit): its records
    // then hold exactly four pages each, and the socket gets large writes.
    stream.conn.set_buffer_limit(None);
    let mut chunk = vec![0u8; 64 * 1024];
    // Pages are read into one reused buffer and written straight from it.
    let mut pages_buf = Vec::new();
    let traffic = peers.traffic.of(pid);
    // Where the server's time goes: reading the frozen process, sending
    // (encrypting, writing the socket), waiting for requests.
    let (mut reading, mut sending, mut waiting) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    // Spin for the next request only after a fault-sized one: background
    // batches come back to back anyway, and a spinning CPU is one the
    // destination's pager cannot use (both may share a machine).
    let mut spin = true;
    let end = loop {
        let mut at = 0;
        let mut written = Ok(());
        while written.is_ok() {
            match decode_frame(&pending[at..]) {
                Ok(Some((msg, n))) => {
                    at += n;
                    let PeerMessage::PageRequest {
                        req_id,
                        pid: p,
                        addr,
                        pages,
                    } = msg
                    else {
                        debug!(peer, "unexpected frame on a page channel: {msg:?}");
                        continue;
                    };
                    spin = pages <= FAULT_SIZED;
                    let t = std::time::Instant::now();
                    let read = if p == pid {
                        read_pages(peers, peer, pid, addr, pages, &mut pages_buf)
                    } else {
                        Err(format!("this channel serves process {pid}, not {p}"))
                    };
                    let t2 = std::time::Instant::now();
                    reading += t2 - t;
                    written = match read {
                        Ok(len) => {
                            traffic
                                .pages_out
                                .fetch_add(u64::from(pages), Ordering::Relaxed);
                            pages_buf[..PAGE_DATA_HEADER]
                                .copy_from_slice(&page_data_header(req_id, addr, len));
                            if pages <= 1 {
                                // A fault's page leaves with its header: one
                                // TLS record, one TCP segment.
                                stream.write_all(&pages_buf[..PAGE_DATA_HEADER + len])
                            } else {
                                // The header in a record of its own, so each
                                // following record is four whole pages that
                                // the pager installs in place.
                                stream
                                    .write_all(&pages_buf[..PAGE_DATA_HEADER])
                                    .and_then(|()| {
                                        stream.write_all(
                                            &pages_buf[PAGE_DATA_HEADER..PAGE_DATA_HEADER + len],
                                        )
                                    })
                            }
                        }
                        Err(message) => stream
                            .write_all(&encode_frame(&PeerMessage::PageError { req_id, message })),
                    };
                    sending += t2.elapsed();
                }
                Ok(None) => break,
                Err(e) => {
                    pending.clear();
                    at = 0;
                    debug!(peer, "garbage on a page channel: {e}");
                    break;
                }
            }
        }
        pending.drain(..at);
        if let Err(e) = written.and_then(|()| stream.flush()) {
            break e;
        }
        let t = std::time::Instant::now();
        if spin {
            spin_until_readable(&mut stream);
        }
        let got = stream.read(&mut chunk);
        waiting += t.elapsed();
        match got {
            Ok(0) => break io::Error::new(io::ErrorKind::UnexpectedEof, "closed"),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break e,
        }
    };
    info!(
        peer,
        pid,
        reading_ms = reading.as_millis() as u64,
        sending_ms = sending.as_millis() as u64,
        waiting_ms = waiting.as_millis() as u64,
        "page channel closed: {end}"
    );
}

/// How long the page server busy-polls for the next request before it
/// sleeps in `read`: faults come in bursts, and a sleeping CPU takes tens
/// of microseconds to wake in a VM.
const SPIN: Duration = Duration::from_micros(200);
/// Requests of at most this many pages are faults (the pager's background
/// batches are larger).
const FAULT_SIZED: u32 = 8;

fn spin_until_readable(stream: &mut StreamOwned<ServerConnection, TcpStream>) {
    let buffered = match stream.conn.process_new_packets() {
        Ok(st) => st.plaintext_bytes_to_read() > 0,
        Err(_) => true,
    };
    if buffered {
        return;
    }
    let until = std::time::Instant::now() + SPIN;
    while std::time::Instant::now() < until {
        let ready = crate::sys::poll_readable(&[stream.sock.as_fd()], Some(Duration::ZERO));
        if ready.map_or(true, |r| r[0]) {
            return;
        }
        // Yield rather than spin: the destination's pager and the program
        // it wakes may be waiting for this CPU (measured here with both
        // nodes on one 2-vCPU machine: the same p50, a p99 mostly under
        // 100 µs instead of often ~4 ms, a scheduler tick).
        std::thread::yield_now();
    }
}

/// Reads the pages of a request into `buf` after room for the `PageData`
/// header, only for a process exported to `peer`; returns how many bytes
/// of pages.
fn read_pages(
    peers: &Peers,
    peer: &str,
    pid: i32,
    addr: u64,
    pages: u32,
    buf: &mut Vec<u8>,
) -> Result<usize, String> {
    let len = pages as usize * PAGE_SIZE;
    if !peers.exported(peer, pid) {
        return Err(format!("process {pid} is not being migrated to '{peer}'"));
    }
    if len == 0 || len > MAX_PAGE_DATA || !addr.is_multiple_of(PAGE_SIZE as u64) {
        return Err(format!("bad page request: {pages} pages at {addr:#x}"));
    }
    if buf.len() < PAGE_DATA_HEADER + len {
        buf.resize(PAGE_DATA_HEADER + len, 0);
    }
    match popcorn_checkpoint::read_memory(pid, addr, &mut buf[PAGE_DATA_HEADER..][..len]) {
        Ok(n) if n == len => Ok(len),
        Ok(n) => Err(format!(
            "process {pid}: only {n} of {len} bytes readable at {addr:#x}"
        )),
        Err(e) => Err(format!(
            "process {pid}: reading {len} bytes at {addr:#x}: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the splitter hands on, page data reassembled.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Got {
        Pages {
            req_id: u64,
            addr: u64,
            data: Vec<u8>,
        },
        Other(PeerMessage),
    }

    fn pages(req_id: u64, addr: u64, n: usize) -> (Vec<u8>, Got) {
        let data: Vec<u8> = (0..n * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
        let mut frame = page_data_header(req_id, addr, data.len()).to_vec();
        frame.extend_from_slice(&data);
        (frame, Got::Pages { req_id, addr, data })
    }

    /// The frames of `stream` fed in pieces of `cut` bytes; also checks
    /// that every piece of page data is whole, aligned pages, in order.
    fn split(stream: &[u8], cut: usize) -> Result<Vec<Got>, WireError> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        let mut current: Option<(u64, u64, Vec<u8>)> = None;
        for piece in stream.chunks(cut) {
            s.push(piece, &mut |r| match r {
                Reply::PagesStart { req_id, addr, len } => {
                    assert!(current.is_none());
                    current = Some((req_id, addr, Vec::with_capacity(len)));
                }
                Reply::Pages {
                    req_id,
                    offset,
                    data,
                } => {
                    let (id, _, buf) = current.as_mut().expect("started");
                    assert_eq!(*id, req_id);
                    assert_eq!(offset, buf.len(), "in order");
                    assert!(!data.is_empty() && data.len() % PAGE_SIZE == 0);
                    buf.extend_from_slice(data);
                }
                Reply::PagesEnd { req_id } => {
                    let (id, addr, data) = current.take().expect("started");
                    assert_eq!(id, req_id);
                    out.push(Got::Pages { req_id, addr, data });
                }
                Reply::Other(m) => out.push(Got::Other(m)),
            })?;
        }
        assert!(s.head.is_empty() && s.body.is_none(), "nothing left over");
        Ok(out)
    }

    #[test]
    fn frames_come_out_whole_however_the_stream_is_cut() {
        let (f1, r1) = pages(1, 0x1000, 3);
        let err = PeerMessage::PageError {
            req_id: 2,
            message: "x".into(),
        };
        let f2 = encode_frame(&err);
        let (f3, r3) = pages(3, 0x8000, 0);
        let long = PeerMessage::PageError {
            req_id: 4,
            message: "a longer message than a page-data header".into(),
        };
        let f4 = encode_frame(&long);
        let (f5, r5) = pages(5, 0x9000, 1);
        let stream = [f1, f2, f3, f4, f5].concat();
        for cut in [1, 3, 4, 7, 26, 27, 4096, 5000, stream.len()] {
            let got = split(&stream, cut).unwrap();
            let want = [
                r1.clone(),
                Got::Other(err.clone()),
                r3.clone(),
                Got::Other(long.clone()),
                r5.clone(),
            ];
            assert_eq!(got, want, "cut {cut}");
        }
    }

    #[test]
    fn records_of_whole_pages_are_handed_on_in_place() {
        // As the origin sends a batch: the header, then records of 4 pages.
        let (frame, _) = pages(7, 0x10000, 8);
        let mut s = Splitter::default();
        let mut pieces = Vec::new();
        let mut feed = |bytes: &[u8]| {
            s.push(bytes, &mut |r| {
                if let Reply::Pages { offset, data, .. } = r {
                    pieces.push((offset, data.as_ptr() as usize - bytes.as_ptr() as usize));
                }
            })
            .unwrap()
        };
        feed(&frame[..PAGE_DATA_HEADER]);
        for rec in frame[PAGE_DATA_HEADER..].chunks(4 * PAGE_SIZE) {
            feed(rec);
        }
        // Each piece is a whole record, at its start: no bounce.
        assert_eq!(pieces, [(0, 0), (4 * PAGE_SIZE, 0)]);
    }

    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn random_frames_in_random_pieces() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for round in 0..50 {
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for id in 0..1 + next() % 6 {
                if next().is_multiple_of(3) {
                    let m = PeerMessage::PageError {
                        req_id: id,
                        message: "e".repeat((next() % 40) as usize),
                    };
                    stream.extend(encode_frame(&m));
                    want.push(Got::Other(m));
                } else {
                    let (f, g) = pages(id, 0x1000 * id, (next() % 9) as usize);
                    stream.extend(f);
                    want.push(g);
                }
            }
            // Pieces of random sizes, as TLS records of any length.
            let mut s = Splitter::default();
            let mut got = Vec::new();
            let mut current: Option<(u64, u64, Vec<u8>)> = None;
            let mut at = 0;
            while at < stream.len() {
                let n = (1 + next() % 20_000) as usize;
                let piece = &stream[at..(at + n).min(stream.len())];
                at += piece.len();
                s.push(piece, &mut |r| match r {
                    Reply::PagesStart { req_id, addr, .. } => {
                        current = Some((req_id, addr, Vec::new()))
                    }
                    Reply::Pages { offset, data, .. } => {
                        let (_, _, buf) = current.as_mut().expect("started");
                        assert_eq!(offset, buf.len());
                        assert_eq!(data.len() % PAGE_SIZE, 0);
                        buf.extend_from_slice(data);
                    }
                    Reply::PagesEnd { .. } => {
                        let (req_id, addr, data) = current.take().expect("started");
                        got.push(Got::Pages { req_id, addr, data });
                    }
                    Reply::Other(m) => got.push(Got::Other(m)),
                })
                .unwrap();
            }
            assert_eq!(got, want, "round {round}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let (valid, _) = pages(1, 0x1000, 2);
        for _ in 0..2000 {
            let mut bytes = valid.clone();
            // Flip a few bytes, often in the header, and cut anywhere.
            for _ in 0..1 + next() % 4 {
                let i = (next() % 40).min(bytes.len() as u64 - 1) as usize;
                bytes[i] = next() as u8;
            }
            bytes.truncate((next() % (bytes.len() as u64 + 1)) as usize);
            let mut s = Splitter::default();
            for piece in bytes.chunks(1 + (next() % 5000) as usize) {
                if s.push(piece, &mut |_| {}).is_err() {
                    break;
                }
            }
        }
    }

    #[test]
    fn bad_page_data_is_an_error() {
        let mut h = page_data_header(1, 0x1000, PAGE_SIZE);
        h[25] = 1; // not whole pages
        assert!(matches!(split(&h, 100), Err(WireError::PageData(_))));
        let mut h = page_data_header(1, 0x1000, PAGE_SIZE).to_vec();
        h[3] += 4; // frame longer than its data
        assert!(matches!(split(&h, 100), Err(WireError::Trailing(4))));
    }
}

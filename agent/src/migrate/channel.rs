//! Page channels: one dedicated mutual-TLS connection per migration, from
//! the destination's pager to a page-server thread at the origin. Both ends
//! are plain threads doing synchronous I/O (rustls over std sockets), so a
//! remote fault costs one wake-up each way; the shared peer link would add
//! hops through async tasks and queue faults behind other traffic.

use crate::peers::Peers;
use popcorn_proto::wire::{
    decode_frame, decode_frame_ref, encode_frame, page_data_header, FrameRef, PeerMessage,
    MAX_PAGE_DATA, PAGE_DATA_HEADER, PAGE_SIZE,
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
    /// Decrypted bytes; frames before `consumed` were handed out.
    inbuf: Vec<u8>,
    consumed: usize,
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
            inbuf: Vec::new(),
            consumed: 0,
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

    /// Reads what the socket has (call when it is readable) and hands each
    /// complete frame to `on_frame`, page data borrowed from the receive
    /// buffer. An error means the channel is gone.
    pub fn receive(&mut self, mut on_frame: impl FnMut(FrameRef<'_>)) -> io::Result<()> {
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
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut tls = &self.raw[..n];
            while !tls.is_empty() {
                self.conn.read_tls(&mut tls)?;
                self.conn
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                drain_plaintext(self.conn.reader(), &mut self.inbuf)?;
            }
        }
        let mut at = self.consumed;
        while let Some((frame, n)) = decode_frame_ref(&self.inbuf[at..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            on_frame(frame);
            at += n;
        }
        // Compact only once most of the buffer is consumed: moving a large
        // partial frame to the front after every reply would copy it again.
        if at == self.inbuf.len() {
            self.inbuf.clear();
            self.consumed = 0;
        } else if at > self.inbuf.len() / 2 {
            self.inbuf.drain(..at);
            self.consumed = 0;
        } else {
            self.consumed = at;
        }
        Ok(())
    }
}

impl AsFd for PageChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Moves every decrypted byte into `buf`, straight from rustls's buffer.
fn drain_plaintext(mut r: impl BufRead, buf: &mut Vec<u8>) -> io::Result<()> {
    loop {
        let n = match r.fill_buf() {
            Ok([]) => return Ok(()),
            Ok(chunk) => {
                buf.extend_from_slice(chunk);
                chunk.len()
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        r.consume(n);
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
    let mut chunk = vec![0u8; 64 * 1024];
    // Pages are read into one reused buffer and written straight from it.
    let mut pages_buf = Vec::new();
    let traffic = peers.traffic.of(pid);
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
                    let read = if p == pid {
                        read_pages(peers, peer, pid, addr, pages, &mut pages_buf)
                    } else {
                        Err(format!("this channel serves process {pid}, not {p}"))
                    };
                    written = match read {
                        Ok(len) => {
                            traffic
                                .pages_out
                                .fetch_add(u64::from(pages), Ordering::Relaxed);
                            // Header and pages leave in one write: one TLS
                            // record and one TCP segment for a single page.
                            pages_buf[..PAGE_DATA_HEADER]
                                .copy_from_slice(&page_data_header(req_id, addr, len));
                            stream.write_all(&pages_buf[..PAGE_DATA_HEADER + len])
                        }
                        Err(message) => stream
                            .write_all(&encode_frame(&PeerMessage::PageError { req_id, message })),
                    };
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
        spin_until_readable(&mut stream);
        match stream.read(&mut chunk) {
            Ok(0) => break io::Error::new(io::ErrorKind::UnexpectedEof, "closed"),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break e,
        }
    };
    info!(peer, pid, "page channel closed: {end}");
}

/// How long the page server busy-polls for the next request before it
/// sleeps in `read`: faults come in bursts, and a sleeping CPU takes tens
/// of microseconds to wake in a VM.
const SPIN: Duration = Duration::from_micros(200);

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
        std::hint::spin_loop();
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

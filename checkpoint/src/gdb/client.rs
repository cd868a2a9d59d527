//! A client of a GDB remote stub (qemu-user's `-g PORT` or `-g PATH`): the
//! thread control of a node whose workers run emulated. Blocking, one
//! request at a time, over TCP (with TCP_NODELAY: without it each round
//! trip waits ~40 ms for delayed ACKs) or a Unix socket, no-ack mode when
//! the stub offers it.

use super::packet::{encode, hex, parse_stop, unhex, Decoder, Frame, StopReply};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest memory transfer per packet (qemu answers reads of up to ~2 KiB
/// per `m` request).
const MAX_CHUNK: usize = 2048;
/// Packet size assumed when the stub does not say (`PacketSize=`).
const DEFAULT_PACKET_SIZE: usize = 1024;
/// Room for the command, address and length around the hex payload.
const PACKET_OVERHEAD: usize = 64;
/// How long a request waits for its answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    #[error("GDB stub at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("GDB stub connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("GDB stub did not answer {what} within {secs} s")]
    Timeout { what: String, secs: u64 },
    #[error("GDB stub closed the connection")]
    Closed,
    #[error("GDB stub: unexpected answer to {request}: {answer}")]
    Protocol { request: String, answer: String },
    #[error("GDB stub refused {request} (error {code})")]
    Refused { request: String, code: String },
}

/// The connection to a stub.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(bytes),
            Stream::Unix(s) => s.write_all(bytes),
        }
    }
}

/// Connects with `connect` until it succeeds or `timeout` passes (the stub
/// may still be starting).
fn retry<S>(
    addr: String,
    timeout: Duration,
    mut connect: impl FnMut() -> std::io::Result<S>,
) -> Result<S, GdbError> {
    let deadline = Instant::now() + timeout;
    loop {
        match connect() {
            Ok(s) => return Ok(s),
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => return Err(GdbError::Connect { addr, source }),
        }
    }
}

/// A connection to one stub, which controls one emulated process.
pub struct GdbClient {
    stream: Stream,
    decoder: Decoder,
    /// Still acknowledging packets (no-ack mode not negotiated).
    acks: bool,
    /// A packet that arrived in place of an acknowledgement.
    early: Option<Vec<u8>>,
    /// Bytes of memory per `m`/`M` packet, within the stub's packet size.
    chunk: usize,
    /// The stub's process when it is qemu-user, which reads the socket
    /// only between guest instructions blocks at signals: it is
    /// interrupted with SIGINT instead of the protocol's `0x03`.
    qemu_pid: Option<i32>,
}

/// The `PacketSize=` (hex) of a `qSupported` answer.
fn packet_size(features: &[u8]) -> Option<usize> {
    String::from_utf8_lossy(features)
        .split(';')
        .find_map(|f| usize::from_str_radix(f.strip_prefix("PacketSize=")?, 16).ok())
}

fn printable(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    if s.len() > 80 {
        format!("{}…", &s[..s.floor_char_boundary(80)])
    } else {
        s.into_owned()
    }
}

impl GdbClient {
    /// Connects (retrying until `timeout`: the stub may still be starting)
    /// and negotiates.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<GdbClient, GdbError> {
        let stream = retry(addr.to_string(), timeout, || {
            TcpStream::connect_timeout(&addr, timeout)
        })?;
        stream.set_nodelay(true)?;
        Self::negotiate(Stream::Tcp(stream))
    }

    /// Connects to a stub listening on the Unix socket `path` (qemu-user's
    /// `-g PATH`), retrying until `timeout`, and negotiates.
    pub fn connect_unix(path: &Path, timeout: Duration) -> Result<GdbClient, GdbError> {
        let stream = retry(path.display().to_string(), timeout, || {
            UnixStream::connect(path)
        })?;
        Self::negotiate(Stream::Unix(stream))
    }

    fn negotiate(stream: Stream) -> Result<GdbClient, GdbError> {
        let mut c = GdbClient {
            stream,
            decoder: Decoder::default(),
            acks: true,
            early: None,
            chunk: MAX_CHUNK,
            qemu_pid: None,
        };
        let features = c.request(b"qSupported:swbreak+;vContSupported+;xmlRegisters=aarch64")?;
        let size = packet_size(&features).unwrap_or(DEFAULT_PACKET_SIZE);
        c.chunk = (size.saturating_sub(PACKET_OVERHEAD) / 2).clamp(16, MAX_CHUNK);
        // qemu answers `p`/`P` only once the target description was read.
        c.target_description()?;
        if c.request(b"QStartNoAckMode")? == b"OK" {
            c.acks = false;
        }
        Ok(c)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), GdbError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// The next frame, waiting until `deadline` (`None`: forever).
    fn frame(&mut self, what: &[u8], deadline: Option<Instant>) -> Result<Frame, GdbError> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.decoder.next_frame() {
                return Ok(f);
            }
            let wait = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(GdbError::Timeout {
                            what: printable(what),
                            secs: REPLY_TIMEOUT.as_secs(),
                        });
                    }
                    Some(left)
                }
                None => None,
            };
            self.stream.set_read_timeout(wait)?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(GdbError::Closed),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends a packet (again on `-`, in ack mode).
    fn send(&mut self, payload: &[u8]) -> Result<(), GdbError> {
        let packet = encode(payload);
        self.write(&packet)?;
        if !self.acks {
            return Ok(());
        }
        let deadline = Some(Instant::now() + REPLY_TIMEOUT);
        for _ in 0..3 {
            match self.frame(payload, deadline)? {
                Frame::Ack => return Ok(()),
                Frame::Nack => self.write(&packet)?,
                // An answer before the ack: keep it for `recv`.
                Frame::Packet(p) => {
                    self.early = Some(p);
                    return Ok(());
                }
                Frame::Corrupt => return Ok(()),
            }
        }
        Err(GdbError::Protocol {
            request: printable(payload),
            answer: "refused three times".into(),
        })
    }

    /// The next packet (acknowledged in ack mode).
    fn recv(&mut self, what: &[u8], deadline: Option<Instant>) -> Result<Vec<u8>, GdbError> {
        if let Some(p) = self.early.take() {
            if self.acks {
                self.write(b"+")?;
            }
            return Ok(p);
        }
        loop {
            match self.frame(what, deadline)? {
                Frame::Packet(p) => {
                    if self.acks {
                        self.write(b"+")?;
                    }
                    return Ok(p);
                }
                Frame::Corrupt if self.acks => self.write(b"-")?,
                Frame::Corrupt => {
                    return Err(GdbError::Protocol {
                        request: printable(what),
                        answer: "a corrupt packet".into(),
                    })
                }
                Frame::Ack | Frame::Nack => {}
            }
        }
    }

    /// One request and its answer; `Exx` answers become [`GdbError::Refused`].
    fn request(&mut self, payload: &[u8]) -> Result<Vec<u8>, GdbError> {
        self.send(payload)?;
        let answer = self.recv(payload, Some(Instant::now() + REPLY_TIMEOUT))?;
        if answer.len() == 3 && answer[0] == b'E' {
            return Err(GdbError::Refused {
                request: printable(payload),
                code: printable(&answer[1..]),
            });
        }
        Ok(answer)
    }

    fn expect_ok(&mut self, payload: &[u8]) -> Result<(), GdbError> {
        match self.request(payload)? {
            a if a == b"OK" => Ok(()),
            a => Err(GdbError::Protocol {
                request: printable(payload),
                answer: printable(&a),
            }),
        }
    }

    fn stop_from(&self, request: &[u8], answer: &[u8]) -> Result<StopReply, GdbError> {
        parse_stop(answer).ok_or_else(|| GdbError::Protocol {
            request: printable(request),
            answer: printable(answer),
        })
    }

    /// The stub's target description (`target.xml`), which names the
    /// architecture and its register sets.
    pub fn target_description(&mut self) -> Result<String, GdbError> {
        let mut xml = Vec::new();
        loop {
            let req = format!(
                "qXfer:features:read:target.xml:{:x},{:x}",
                xml.len(),
                self.chunk
            );
            let a = self.request(req.as_bytes())?;
            match a.split_first() {
                Some((b'm', part)) => xml.extend_from_slice(part),
                Some((b'l', part)) => {
                    xml.extend_from_slice(part);
                    return Ok(String::from_utf8_lossy(&xml).into_owned());
                }
                // No description offered.
                None => return Ok(String::new()),
                Some(_) => {
                    return Err(GdbError::Protocol {
                        request: req,
                        answer: printable(&a),
                    })
                }
            }
        }
    }

    /// Why the process is stopped.
    pub fn stop_reason(&mut self) -> Result<StopReply, GdbError> {
        let a = self.request(b"?")?;
        self.stop_from(b"?", &a)
    }

    /// The general registers in the stub's `g` layout (see [`super::aarch64`]).
    pub fn read_registers(&mut self) -> Result<Vec<u8>, GdbError> {
        let a = self.request(b"g")?;
        unhex(&a).ok_or_else(|| GdbError::Protocol {
            request: "g".into(),
            answer: printable(&a),
        })
    }

    pub fn write_registers(&mut self, regs: &[u8]) -> Result<(), GdbError> {
        self.expect_ok(format!("G{}", hex(regs)).as_bytes())
    }

    /// One register by the stub's number (also those outside `g`, such as
    /// the vector registers).
    pub fn read_register(&mut self, n: usize) -> Result<Vec<u8>, GdbError> {
        let req = format!("p{n:x}");
        let a = self.request(req.as_bytes())?;
        unhex(&a).ok_or_else(|| GdbError::Protocol {
            request: req,
            answer: printable(&a),
        })
    }

    pub fn write_register(&mut self, n: usize, value: &[u8]) -> Result<(), GdbError> {
        self.expect_ok(format!("P{n:x}={}", hex(value)).as_bytes())
    }

    pub fn read_memory(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, GdbError> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = addr + out.len() as u64;
            let n = (len - out.len()).min(self.chunk);
            let req = format!("m{at:x},{n:x}");
            let a = self.request(req.as_bytes())?;
            match unhex(&a) {
                Some(bytes) if !bytes.is_empty() && bytes.len() <= n => out.extend(bytes),
                _ => {
                    return Err(GdbError::Protocol {
                        request: req,
                        answer: printable(&a),
                    })
                }
            }
        }
        Ok(out)
    }

    pub fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), GdbError> {
        let size = self.chunk;
        for (i, chunk) in data.chunks(size).enumerate() {
            let at = addr + (i * size) as u64;
            let req = format!("M{at:x},{:x}:{}", chunk.len(), hex(chunk));
            self.expect_ok(req.as_bytes())?;
        }
        Ok(())
    }

    /// Sets a software breakpoint (`Z0`) of `kind` bytes (4 on aarch64, 1 on
    /// x86_64) at `addr`.
    pub fn set_breakpoint(&mut self, addr: u64, kind: u8) -> Result<(), GdbError> {
        self.expect_ok(format!("Z0,{addr:x},{kind:x}").as_bytes())
    }

    /// Removes a breakpoint set by [`GdbClient::set_breakpoint`] (`z0`).
    pub fn remove_breakpoint(&mut self, addr: u64, kind: u8) -> Result<(), GdbError> {
        self.expect_ok(format!("z0,{addr:x},{kind:x}").as_bytes())
    }

    /// Lets the process run; [`GdbClient::wait_stop`] reads how it stops.
    pub fn resume(&mut self) -> Result<(), GdbError> {
        self.send(b"c")
    }

    /// Lets the process run, delivering signal `sig` (GDB's numbering, as
    /// the stop reply gave it).
    pub fn resume_with_signal(&mut self, sig: u8) -> Result<(), GdbError> {
        self.send(format!("C{sig:02x}").as_bytes())
    }

    /// Executes one instruction; [`GdbClient::wait_stop`] reads the stop.
    pub fn step(&mut self) -> Result<(), GdbError> {
        self.send(b"s")
    }

    /// A stop reply if one arrives within `timeout`, else `None` (the
    /// process keeps running).
    pub fn poll_stop(&mut self, timeout: Duration) -> Result<Option<StopReply>, GdbError> {
        match self.wait_stop(Some(timeout)) {
            Ok(s) => Ok(Some(s)),
            Err(GdbError::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a reply already arrived with an earlier read (polling the
    /// descriptor would not show it).
    pub fn has_buffered(&self) -> bool {
        self.early.is_some() || !self.decoder.is_empty()
    }

    /// The connection's descriptor, to poll for a stop reply (see
    /// [`GdbClient::has_buffered`] first).
    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match &self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// The stub is qemu-user running as process `pid` (see
    /// [`GdbClient::interrupt`]).
    pub fn set_qemu_pid(&mut self, pid: i32) {
        self.qemu_pid = Some(pid);
    }

    /// Stops a running process (the stub answers with a stop reply): SIGINT
    /// to qemu-user (a spinning guest never reads the socket), `0x03` to
    /// other stubs.
    pub fn interrupt(&mut self) -> Result<(), GdbError> {
        match self.qemu_pid {
            Some(pid) => Ok(crate::sys::misc::kill(pid, libc::SIGINT)?),
            None => self.write(&[0x03]),
        }
    }

    /// Waits for the stop reply after [`GdbClient::resume`] or
    /// [`GdbClient::interrupt`] (`None`: however long it runs).
    pub fn wait_stop(&mut self, timeout: Option<Duration>) -> Result<StopReply, GdbError> {
        let a = self.recv(b"c", timeout.map(|t| Instant::now() + t))?;
        self.stop_from(b"c", &a)
    }

    /// Kills the process; the stub exits.
    pub fn kill(mut self) -> Result<(), GdbError> {
        self.send(b"k")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_size_from_features() {
        assert_eq!(
            packet_size(b"PacketSize=1000;qXfer:features:read+"),
            Some(4096)
        );
        assert_eq!(packet_size(b"qXfer:features:read+"), None);
        assert_eq!(packet_size(b"PacketSize=zz"), None);
    }
}

//! Binary frames between agents (inside TLS).
//!
//! Frame: `u32` big-endian length of what follows, `u8` version, `u8` kind,
//! payload. Integers are big-endian; strings are a `u16` length and UTF-8.
//! [`decode_frame`] never panics, whatever the bytes.

/// Version spoken by this build.
pub const WIRE_VERSION: u8 = 1;
/// Largest frame body accepted (a batch of pages fits easily).
pub const MAX_FRAME: usize = 16 << 20;

/// Messages exchanged between agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    /// First frame on a link, both ways: who is speaking.
    Hello {
        cluster: String,
        node: String,
    },
    /// Heartbeat; `sent_ns` is the sender's monotonic clock, echoed back.
    Ping {
        seq: u64,
        sent_ns: u64,
    },
    Pong {
        seq: u64,
        sent_ns: u64,
    },
    /// Post-copy: the destination asks the origin for `pages` pages of
    /// process `pid` starting at page-aligned `addr`. Many may be in flight.
    PageRequest {
        req_id: u64,
        pid: i32,
        addr: u64,
        pages: u32,
    },
    /// The pages for request `req_id` (or a pushed batch), starting at
    /// `addr`; `data.len()` is a multiple of [`PAGE_SIZE`] and at most
    /// [`MAX_PAGE_DATA`] (senders split larger batches).
    PageData {
        req_id: u64,
        addr: u64,
        data: Vec<u8>,
    },
    /// Request `req_id` cannot be served (process gone, address unmapped…).
    PageError {
        req_id: u64,
        message: String,
    },
    /// First frame of a page channel (instead of `Hello`): a dedicated
    /// connection for the memory of process `pid`, migrating from the
    /// receiver to the sender.
    PageHello {
        cluster: String,
        node: String,
        pid: i32,
    },
    /// A request the sender waits an [`PeerMessage::Answer`] for; `body` is
    /// JSON the agents agree on (migration offers and commits).
    Call {
        req_id: u64,
        body: Vec<u8>,
    },
    /// The answer to call `req_id`.
    Answer {
        req_id: u64,
        body: Vec<u8>,
    },
    /// A one-way JSON message (exit of a migrated process, a signal for it).
    Notice {
        body: Vec<u8>,
    },
    /// Bytes of standard stream `fd` (0, 1 or 2) of migrated process `pid`,
    /// relayed between the node it runs on and its home; empty `data` is
    /// end of stream. `offset` is the position of `data` in the stream
    /// (stdin chunks can reach a new host by two paths and are put back in
    /// order by it).
    Stdio {
        pid: i32,
        fd: u8,
        offset: u64,
        data: Vec<u8>,
    },
}

/// Page size of [`PeerMessage::PageData`] payloads.
pub const PAGE_SIZE: usize = 4096;
/// Largest `PageData` payload: whole pages that fit in a frame with its header.
pub const MAX_PAGE_DATA: usize = MAX_FRAME - PAGE_SIZE;

const KIND_HELLO: u8 = 1;
const KIND_PING: u8 = 2;
const KIND_PONG: u8 = 3;
const KIND_PAGE_REQUEST: u8 = 4;
const KIND_PAGE_DATA: u8 = 5;
const KIND_PAGE_ERROR: u8 = 6;
const KIND_CALL: u8 = 7;
const KIND_ANSWER: u8 = 8;
const KIND_NOTICE: u8 = 9;
const KIND_STDIO: u8 = 10;
const KIND_PAGE_HELLO: u8 = 11;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error(
        "peer speaks wire version {0}, this agent speaks {WIRE_VERSION}: upgrade the older agent"
    )]
    Version(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLong(usize),
    #[error("frame shorter than its header")]
    Short,
    #[error("frame payload truncated")]
    Truncated,
    #[error("{0} unexpected bytes after the payload")]
    Trailing(usize),
    #[error("string in frame is not UTF-8")]
    Utf8,
    #[error("page data of {0} bytes is not whole pages or exceeds {MAX_PAGE_DATA} bytes")]
    PageData(usize),
}

/// Largest body of a `Call`/`Answer`/`Notice`/`Stdio` frame.
pub const MAX_BODY: usize = MAX_FRAME - 64;

/// Bytes of a `PageData` frame before its data.
pub const PAGE_DATA_HEADER: usize = 4 + 2 + 8 + 8 + 4;

/// The start of a `PageData` frame carrying `len` bytes: a sender can write
/// it and then the data itself, without building the whole frame.
pub fn page_data_header(req_id: u64, addr: u64, len: usize) -> [u8; PAGE_DATA_HEADER] {
    let mut h = [0u8; PAGE_DATA_HEADER];
    let body_len = (PAGE_DATA_HEADER - 4 + len) as u32;
    h[..4].copy_from_slice(&body_len.to_be_bytes());
    h[4] = WIRE_VERSION;
    h[5] = KIND_PAGE_DATA;
    h[6..14].copy_from_slice(&req_id.to_be_bytes());
    h[14..22].copy_from_slice(&addr.to_be_bytes());
    h[22..26].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

/// Encodes one message as a complete frame.
pub fn encode_frame(msg: &PeerMessage) -> Vec<u8> {
    let mut body = vec![WIRE_VERSION];
    match msg {
        PeerMessage::Hello { cluster, node } => {
            body.push(KIND_HELLO);
            put_str(&mut body, cluster);
            put_str(&mut body, node);
        }
        PeerMessage::Ping { seq, sent_ns } => {
            body.push(KIND_PING);
            body.extend_from_slice(&seq.to_be_bytes());
            body.extend_from_slice(&sent_ns.to_be_bytes());
        }
        PeerMessage::Pong { seq, sent_ns } => {
            body.push(KIND_PONG);
            body.extend_from_slice(&seq.to_be_bytes());
            body.extend_from_slice(&sent_ns.to_be_bytes());
        }
        PeerMessage::PageRequest {
            req_id,
            pid,
            addr,
            pages,
        } => {
            body.push(KIND_PAGE_REQUEST);
            body.extend_from_slice(&req_id.to_be_bytes());
            body.extend_from_slice(&pid.to_be_bytes());
            body.extend_from_slice(&addr.to_be_bytes());
            body.extend_from_slice(&pages.to_be_bytes());
        }
        PeerMessage::PageData { req_id, addr, data } => {
            debug_assert!(data.len() <= MAX_PAGE_DATA && data.len().is_multiple_of(PAGE_SIZE));
            let mut frame = Vec::with_capacity(PAGE_DATA_HEADER + data.len());
            frame.extend_from_slice(&page_data_header(*req_id, *addr, data.len()));
            frame.extend_from_slice(data);
            return frame;
        }
        PeerMessage::PageError { req_id, message } => {
            body.push(KIND_PAGE_ERROR);
            body.extend_from_slice(&req_id.to_be_bytes());
            put_str(&mut body, message);
        }
        PeerMessage::PageHello { cluster, node, pid } => {
            body.push(KIND_PAGE_HELLO);
            put_str(&mut body, cluster);
            put_str(&mut body, node);
            body.extend_from_slice(&pid.to_be_bytes());
        }
        PeerMessage::Call { req_id, body: b } => {
            body.push(KIND_CALL);
            body.extend_from_slice(&req_id.to_be_bytes());
            put_bytes(&mut body, b);
        }
        PeerMessage::Answer { req_id, body: b } => {
            body.push(KIND_ANSWER);
            body.extend_from_slice(&req_id.to_be_bytes());
            put_bytes(&mut body, b);
        }
        PeerMessage::Notice { body: b } => {
            body.push(KIND_NOTICE);
            put_bytes(&mut body, b);
        }
        PeerMessage::Stdio {
            pid,
            fd,
            offset,
            data,
        } => {
            body.push(KIND_STDIO);
            body.extend_from_slice(&pid.to_be_bytes());
            body.push(*fd);
            body.extend_from_slice(&offset.to_be_bytes());
            put_bytes(&mut body, data);
        }
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Decodes the first frame in `buf`. `Ok(None)` means more bytes are needed;
/// `Ok(Some((msg, n)))` consumed `n` bytes.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(PeerMessage, usize)>, WireError> {
    let Some(body) = frame_body(buf)? else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, 4 + body.len())))
}

/// The body of the first frame in `buf`, once all of it is there.
fn frame_body(buf: &[u8]) -> Result<Option<&[u8]>, WireError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLong(len));
    }
    if len < 2 {
        return Err(WireError::Short);
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some(body))
}

/// A decoded frame whose page data stays in the caller's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameRef<'a> {
    PageData {
        req_id: u64,
        addr: u64,
        data: &'a [u8],
    },
    Other(PeerMessage),
}

/// [`decode_frame`] without copying `PageData` payloads (megabytes per
/// frame during a background transfer).
pub fn decode_frame_ref(buf: &[u8]) -> Result<Option<(FrameRef<'_>, usize)>, WireError> {
    let Some(body) = frame_body(buf)? else {
        return Ok(None);
    };
    let len = body.len();
    if body[0] == WIRE_VERSION && body[1] == KIND_PAGE_DATA {
        let mut r = Reader { buf: &body[2..] };
        let req_id = r.u64()?;
        let addr = r.u64()?;
        let n = r.u32()? as usize;
        if !n.is_multiple_of(PAGE_SIZE) || n > MAX_PAGE_DATA {
            return Err(WireError::PageData(n));
        }
        let data = r.take(n)?;
        if !r.buf.is_empty() {
            return Err(WireError::Trailing(r.buf.len()));
        }
        return Ok(Some((FrameRef::PageData { req_id, addr, data }, 4 + len)));
    }
    Ok(Some((FrameRef::Other(decode_body(body)?), 4 + len)))
}

/// Length of the frame starting at `buf`, once its header is there; lets a
/// reader size its buffer before decoding.
pub fn frame_len(header: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLong(len));
    }
    Ok(4 + len)
}

fn decode_body(body: &[u8]) -> Result<PeerMessage, WireError> {
    let mut r = Reader { buf: body };
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let msg = match r.u8()? {
        KIND_HELLO => PeerMessage::Hello {
            cluster: r.string()?,
            node: r.string()?,
        },
        KIND_PING => PeerMessage::Ping {
            seq: r.u64()?,
            sent_ns: r.u64()?,
        },
        KIND_PONG => PeerMessage::Pong {
            seq: r.u64()?,
            sent_ns: r.u64()?,
        },
        KIND_PAGE_REQUEST => PeerMessage::PageRequest {
            req_id: r.u64()?,
            pid: r.u32()? as i32,
            addr: r.u64()?,
            pages: r.u32()?,
        },
        KIND_PAGE_DATA => {
            let req_id = r.u64()?;
            let addr = r.u64()?;
            let n = r.u32()? as usize;
            if !n.is_multiple_of(PAGE_SIZE) || n > MAX_PAGE_DATA {
                return Err(WireError::PageData(n));
            }
            PeerMessage::PageData {
                req_id,
                addr,
                data: r.take(n)?.to_vec(),
            }
        }
        KIND_PAGE_ERROR => PeerMessage::PageError {
            req_id: r.u64()?,
            message: r.string()?,
        },
        KIND_PAGE_HELLO => PeerMessage::PageHello {
            cluster: r.string()?,
            node: r.string()?,
            pid: r.u32()? as i32,
        },
        KIND_CALL => PeerMessage::Call {
            req_id: r.u64()?,
            body: r.bytes()?,
        },
        KIND_ANSWER => PeerMessage::Answer {
            req_id: r.u64()?,
            body: r.bytes()?,
        },
        KIND_NOTICE => PeerMessage::Notice { body: r.bytes()? },
        KIND_STDIO => PeerMessage::Stdio {
            pid: r.u32()? as i32,
            fd: r.u8()?,
            offset: r.u64()?,
            data: r.bytes()?,
        },
        other => return Err(WireError::UnknownKind(other)),
    };
    if !r.buf.is_empty() {
        return Err(WireError::Trailing(r.buf.len()));
    }
    Ok(msg)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Truncate to what a u16 length can say, on a character boundary.
    let mut n = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    let bytes = &s.as_bytes()[..n];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A `u32` length and the bytes; callers keep bodies under [`MAX_BODY`].
fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    debug_assert!(b.len() <= MAX_BODY);
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }

    fn string(&mut self) -> Result<String, WireError> {
        let b = self.take(2)?;
        let n = u16::from_be_bytes([b[0], b[1]]) as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| WireError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<PeerMessage> {
        vec![
            PeerMessage::Hello {
                cluster: "c".into(),
                node: "node-a".into(),
            },
            PeerMessage::Hello {
                cluster: String::new(),
                node: "é".into(),
            },
            PeerMessage::Ping {
                seq: 0,
                sent_ns: u64::MAX,
            },
            PeerMessage::Pong { seq: 7, sent_ns: 9 },
            PeerMessage::PageRequest {
                req_id: 1,
                pid: -1,
                addr: 0x7fff_f000,
                pages: u32::MAX,
            },
            PeerMessage::PageData {
                req_id: u64::MAX,
                addr: 0x40_0000,
                data: Vec::new(),
            },
            PeerMessage::PageData {
                req_id: 3,
                addr: 0x40_1000,
                data: (0..2 * PAGE_SIZE).map(|i| (i * 7) as u8).collect(),
            },
            PeerMessage::PageError {
                req_id: 4,
                message: "process 12 gone: ESRCH".into(),
            },
            PeerMessage::PageHello {
                cluster: "c".into(),
                node: "b".into(),
                pid: 77,
            },
            PeerMessage::Call {
                req_id: 5,
                body: br#"{"offer":1}"#.to_vec(),
            },
            PeerMessage::Answer {
                req_id: 5,
                body: Vec::new(),
            },
            PeerMessage::Notice {
                body: b"{}".to_vec(),
            },
            PeerMessage::Stdio {
                pid: 42,
                fd: 1,
                offset: 1 << 40,
                data: b"hello\n".to_vec(),
            },
        ]
    }

    #[test]
    fn page_data_limits() {
        let frame = |body: &[u8]| {
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(body);
            f
        };
        let mut body = vec![1, KIND_PAGE_DATA];
        body.extend_from_slice(&[0; 16]);
        let mut odd = body.clone();
        odd.extend_from_slice(&100u32.to_be_bytes());
        odd.extend_from_slice(&[0; 100]);
        assert_eq!(decode_frame(&frame(&odd)), Err(WireError::PageData(100)));
        let mut huge = body.clone();
        huge.extend_from_slice(&((MAX_PAGE_DATA + PAGE_SIZE) as u32).to_be_bytes());
        assert_eq!(
            decode_frame(&frame(&huge)),
            Err(WireError::PageData(MAX_PAGE_DATA + PAGE_SIZE))
        );
        // The largest payload fits in a frame.
        let big = PeerMessage::PageData {
            req_id: 0,
            addr: 0,
            data: vec![0xab; MAX_PAGE_DATA],
        };
        let f = encode_frame(&big);
        assert!(f.len() - 4 <= MAX_FRAME);
        assert_eq!(decode_frame(&f).unwrap(), Some((big, f.len())));
        // Overlong strings are cut on a character boundary and still decode.
        let long = PeerMessage::PageError {
            req_id: 0,
            message: "é".repeat(40_000),
        };
        let Some((PeerMessage::PageError { message, .. }, _)) =
            decode_frame(&encode_frame(&long)).unwrap()
        else {
            panic!("PageError expected");
        };
        assert_eq!(message.len(), u16::MAX as usize - 1);
    }

    #[test]
    fn round_trip_every_kind() {
        for m in samples() {
            let f = encode_frame(&m);
            assert_eq!(decode_frame(&f).unwrap(), Some((m.clone(), f.len())));
            let mut hdr = [0u8; 4];
            hdr.copy_from_slice(&f[..4]);
            assert_eq!(frame_len(hdr).unwrap(), f.len());
        }
    }

    #[test]
    fn borrowed_decoding_agrees_with_owned() {
        for m in samples() {
            let f = encode_frame(&m);
            let (r, n) = decode_frame_ref(&f).unwrap().unwrap();
            assert_eq!(n, f.len());
            match (r, &m) {
                (
                    FrameRef::PageData { req_id, addr, data },
                    PeerMessage::PageData {
                        req_id: q,
                        addr: a,
                        data: d,
                    },
                ) => {
                    assert_eq!((req_id, addr, data), (*q, *a, d.as_slice()));
                }
                (FrameRef::Other(o), m) => assert_eq!(&o, m),
                (r, m) => panic!("{r:?} decoded from {m:?}"),
            }
            for cut in 0..f.len() {
                assert_eq!(decode_frame_ref(&f[..cut]).unwrap(), None);
            }
        }
        let mut bad = encode_frame(&PeerMessage::PageData {
            req_id: 1,
            addr: 0,
            data: vec![0; PAGE_SIZE],
        });
        bad[25] = 1; // length field no longer whole pages
        assert!(decode_frame_ref(&bad).is_err());
    }

    #[test]
    fn partial_frames_need_more() {
        for m in samples() {
            let f = encode_frame(&m);
            for cut in 0..f.len() {
                assert_eq!(decode_frame(&f[..cut]).unwrap(), None, "cut at {cut}");
            }
        }
    }

    #[test]
    fn back_to_back_frames() {
        let mut buf = Vec::new();
        for m in samples() {
            buf.extend(encode_frame(&m));
        }
        let mut got = Vec::new();
        let mut at = 0;
        while let Some((m, n)) = decode_frame(&buf[at..]).unwrap() {
            got.push(m);
            at += n;
        }
        assert_eq!(got, samples());
        assert_eq!(at, buf.len());
    }

    #[test]
    fn rejects_bad_frames() {
        let frame = |body: &[u8]| {
            let mut f = (body.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(body);
            f
        };
        assert_eq!(decode_frame(&frame(&[2, 2])), Err(WireError::Version(2)));
        assert_eq!(
            decode_frame(&frame(&[1, 99])),
            Err(WireError::UnknownKind(99))
        );
        assert_eq!(decode_frame(&frame(&[1])), Err(WireError::Short));
        assert_eq!(
            decode_frame(&frame(&[1, KIND_PING, 0])),
            Err(WireError::Truncated)
        );
        let mut ping = encode_frame(&PeerMessage::Ping { seq: 1, sent_ns: 2 })[4..].to_vec();
        ping.push(0);
        assert_eq!(decode_frame(&frame(&ping)), Err(WireError::Trailing(1)));
        assert_eq!(
            decode_frame(&frame(&[1, KIND_HELLO, 0, 2, 0xff, 0xff, 0, 0])),
            Err(WireError::Utf8)
        );
        assert_eq!(
            decode_frame(&[0xff, 0xff, 0xff, 0xff]),
            Err(WireError::TooLong(0xffff_ffff))
        );
    }

    /// Random bytes and random corruptions of valid frames never panic and
    /// never claim more bytes than were given.
    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid: Vec<Vec<u8>> = samples().iter().map(encode_frame).collect();
        for i in 0..200_000 {
            let mut buf = if i % 2 == 0 {
                let n = (next() % 64) as usize;
                (0..n).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                valid[(next() % valid.len() as u64) as usize].clone()
            };
            if i % 2 == 1 && !buf.is_empty() {
                let at = (next() % buf.len() as u64) as usize;
                buf[at] = next() as u8;
            }
            if let Ok(Some((_, n))) = decode_frame(&buf) {
                assert!(n <= buf.len());
            }
            if let Ok(Some((_, n))) = decode_frame_ref(&buf) {
                assert!(n <= buf.len());
            }
        }
    }
}

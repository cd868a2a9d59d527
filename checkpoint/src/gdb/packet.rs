//! The GDB remote serial protocol's framing, as pure functions: packets
//! `$data#cs` with `}` escapes and run-length encoding, acknowledgements,
//! and the hex encodings the commands use.

/// One thing read from the stub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+`: the last packet arrived intact.
    Ack,
    /// `-`: the last packet must be sent again.
    Nack,
    /// A packet's payload, unescaped and expanded.
    Packet(Vec<u8>),
    /// A packet whose checksum did not match.
    Corrupt,
}

/// A packet ready to send: `$` + escaped payload + `#` + checksum.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.push(b'$');
    let mut sum: u8 = 0;
    for &b in payload {
        if matches!(b, b'$' | b'#' | b'}' | b'*') {
            out.push(b'}');
            out.push(b ^ 0x20);
            sum = sum.wrapping_add(b'}').wrapping_add(b ^ 0x20);
        } else {
            out.push(b);
            sum = sum.wrapping_add(b);
        }
    }
    out.push(b'#');
    out.extend_from_slice(format!("{sum:02x}").as_bytes());
    out
}

/// Splits a byte stream into frames; keeps what is incomplete.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether bytes that arrived are still unread.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete frame, if one has arrived. Noise between frames
    /// (anything but `+`, `-`, `$`) is skipped.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let first = *self.buf.first()?;
            match first {
                b'+' => {
                    self.buf.remove(0);
                    return Some(Frame::Ack);
                }
                b'-' => {
                    self.buf.remove(0);
                    return Some(Frame::Nack);
                }
                b'$' | b'%' => break,
                _ => {
                    self.buf.remove(0);
                }
            }
        }
        let hash = self.buf.iter().position(|&b| b == b'#')?;
        if self.buf.len() < hash + 3 {
            return None;
        }
        let raw: Vec<u8> = self.buf[1..hash].to_vec();
        let given = std::str::from_utf8(&self.buf[hash + 1..hash + 3])
            .ok()
            .and_then(|s| u8::from_str_radix(s, 16).ok());
        self.buf.drain(..hash + 3);
        let sum = raw.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        if given != Some(sum) {
            return Some(Frame::Corrupt);
        }
        Some(match unescape(&raw) {
            Some(p) => Frame::Packet(p),
            None => Frame::Corrupt,
        })
    }
}

/// Undoes `}` escapes and expands `X*n` runs (n = count - 29 repeats of X).
fn unescape(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'}' => {
                out.push(*raw.get(i + 1)? ^ 0x20);
                i += 2;
            }
            b'*' => {
                let last = *out.last()?;
                let n = raw.get(i + 1)?.checked_sub(29)?;
                out.extend(std::iter::repeat_n(last, n as usize));
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Bytes of a hex string (`xx` for an unavailable register reads as 0).
pub fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|c| match c {
            b"xx" => Some(0),
            _ => u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok(),
        })
        .collect()
}

/// What a stop reply (`S`, `T`, `W`, `X`) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReply {
    /// Stopped by a signal (GDB's numbering: 5 = SIGTRAP, 2 = SIGINT).
    Signal(u8),
    /// Exited with this status.
    Exited(u8),
    /// Killed by this signal.
    Terminated(u8),
}

pub fn parse_stop(p: &[u8]) -> Option<StopReply> {
    let (&kind, rest) = p.split_first()?;
    let n = u8::from_str_radix(std::str::from_utf8(rest.get(..2)?).ok()?, 16).ok()?;
    match kind {
        b'S' | b'T' => Some(StopReply::Signal(n)),
        b'W' => Some(StopReply::Exited(n)),
        b'X' => Some(StopReply::Terminated(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<Frame> {
        let mut d = Decoder::default();
        d.push(bytes);
        std::iter::from_fn(|| d.next_frame()).collect()
    }

    #[test]
    fn encodes_with_checksum_and_escapes() {
        assert_eq!(encode(b"g"), b"$g#67");
        assert_eq!(encode(b"?"), b"$?#3f");
        assert_eq!(encode(b""), b"$#00");
        // '#', '$', '}' and '*' are escaped as '}' + (b ^ 0x20).
        let e = encode(b"a#b$c}d*");
        assert_eq!(&e[..13], b"$a}\x03b}\x04c}]d}\x0a");
        assert_eq!(decode_all(&e), vec![Frame::Packet(b"a#b$c}d*".to_vec())]);
    }

    #[test]
    fn decodes_acks_packets_noise_and_partial_input() {
        let mut d = Decoder::default();
        d.push(b"+\r\n$O");
        assert_eq!(d.next_frame(), Some(Frame::Ack));
        assert_eq!(d.next_frame(), None);
        d.push(b"K#9");
        assert_eq!(d.next_frame(), None);
        d.push(b"a-");
        assert_eq!(d.next_frame(), Some(Frame::Packet(b"OK".to_vec())));
        assert_eq!(d.next_frame(), Some(Frame::Nack));
        assert_eq!(d.next_frame(), None);
    }

    #[test]
    fn bad_checksums_and_escapes_are_corrupt() {
        assert_eq!(decode_all(b"$OK#00"), vec![Frame::Corrupt]);
        assert_eq!(decode_all(b"$OK#zz"), vec![Frame::Corrupt]);
        // A trailing escape with nothing after it.
        let sum = b'}';
        assert_eq!(
            decode_all(format!("$}}#{sum:02x}").as_bytes()),
            vec![Frame::Corrupt]
        );
    }

    #[test]
    fn expands_run_length_encoding() {
        // "0* " = '0' then 32-29 = 3 more: "0000".
        let raw = b"0* ";
        let sum = raw.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        let wire = format!("$0* #{sum:02x}");
        assert_eq!(
            decode_all(wire.as_bytes()),
            vec![Frame::Packet(b"0000".to_vec())]
        );
        // A run with nothing before it is corrupt.
        let sum = b"* ".iter().fold(0u8, |s, &b| s.wrapping_add(b));
        assert_eq!(
            decode_all(format!("$* #{sum:02x}").as_bytes()),
            vec![Frame::Corrupt]
        );
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(unhex(b"00ab10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(unhex(b"xx01"), Some(vec![0, 1]));
        assert_eq!(unhex(b"0"), None);
        assert_eq!(unhex(b"zz"), None);
    }

    #[test]
    fn stop_replies() {
        assert_eq!(parse_stop(b"S05"), Some(StopReply::Signal(5)));
        assert_eq!(parse_stop(b"T02thread:p1.1;"), Some(StopReply::Signal(2)));
        assert_eq!(parse_stop(b"W03"), Some(StopReply::Exited(3)));
        assert_eq!(parse_stop(b"X09"), Some(StopReply::Terminated(9)));
        assert_eq!(parse_stop(b"OK"), None);
        assert_eq!(parse_stop(b"S"), None);
    }
}

//! `/proc/PID/auxv`: the ELF auxiliary vector as `(type, value)` pairs.

/// Parses native-endian 64-bit `(a_type, a_val)` pairs up to (not including)
/// `AT_NULL`. A truncated trailing pair is ignored.
pub fn parse(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for pair in bytes.chunks_exact(16) {
        let (t, v) = pair.split_at(8);
        let t = u64::from_ne_bytes(t.try_into().unwrap_or([0; 8]));
        let v = u64::from_ne_bytes(v.try_into().unwrap_or([0; 8]));
        if t == 0 {
            break;
        }
        out.push((t, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(pairs: &[(u64, u64)]) -> Vec<u8> {
        pairs
            .iter()
            .flat_map(|(t, v)| t.to_ne_bytes().into_iter().chain(v.to_ne_bytes()))
            .collect()
    }

    #[test]
    fn stops_at_at_null() {
        let b = encode(&[(6, 4096), (25, 0x7ffd_0000), (0, 0), (7, 7)]);
        assert_eq!(parse(&b), vec![(6, 4096), (25, 0x7ffd_0000)]);
    }

    #[test]
    fn empty_truncated_and_missing_terminator() {
        assert!(parse(&[]).is_empty());
        assert!(parse(&[1, 2, 3]).is_empty());
        let mut b = encode(&[(3, 0x40)]);
        b.extend_from_slice(&[9; 10]);
        assert_eq!(parse(&b), vec![(3, 0x40)]);
    }

    #[test]
    fn real_auxv_of_self_has_pagesz() {
        let b = std::fs::read("/proc/self/auxv").unwrap();
        let v = parse(&b);
        assert!(v.contains(&(libc::AT_PAGESZ, 4096)));
    }
}

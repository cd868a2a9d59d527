//! Mirrors of the structs shared with `bpf/tracer.bpf.c` and the decoding of
//! ring-buffer records (pure; sizes asserted here and in the C file).

use crate::snapshot::ProcessEvent;

/// Per thread, per CPU (`struct thread_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ThreadStats {
    pub tgid: u32,
    pub ns_tgid: u32,
    pub ns_tid: u32,
    pub _pad: u32,
    pub oncpu_ns: u64,
    pub runq_ns: u64,
    pub faults: u64,
    pub switches: u64,
    pub cached_range: u64,
    pub cached_faults: u64,
}

/// Per thread, shared by all CPUs (`struct thread_state`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ThreadState {
    pub on_since: u64,
    pub queued_since: u64,
    pub tgid: u32,
    pub exited: u32,
    pub ns_tgid: u32,
    pub ns_tid: u32,
}

/// Key of the per-process fault counts by address range (`struct range_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct RangeKey {
    pub tgid: u32,
    pub ns_tgid: u32,
    pub range: u64,
}

const _: () = assert!(std::mem::size_of::<ThreadStats>() == 64);
const _: () = assert!(std::mem::size_of::<ThreadState>() == 32);
const _: () = assert!(std::mem::size_of::<RangeKey>() == 16);

/// One record of the `ns_pids` iterator: a process's global tgid and its
/// tgid in the loader's PID namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NsPid {
    pub tgid: u32,
    pub ns_tgid: u32,
}

const _: () = assert!(std::mem::size_of::<NsPid>() == 8);

/// Decodes the output of the `ns_pids` iterator.
pub(crate) fn decode_ns_pids(b: &[u8]) -> Vec<NsPid> {
    b.chunks_exact(8)
        .map(|c| NsPid {
            tgid: u32_at(c, 0),
            ns_tgid: u32_at(c, 4),
        })
        .collect()
}

// SAFETY: plain `#[repr(C)]` integers with explicit padding fields: every
// bit pattern is valid and there are no implicit padding bytes.
unsafe impl aya::Pod for ThreadStats {}
// SAFETY: as above.
unsafe impl aya::Pod for ThreadState {}
// SAFETY: as above.
unsafe impl aya::Pod for RangeKey {}

/// Indexes of the `COUNTERS` per-CPU array.
pub(crate) const CNT_RING_DROPS: u32 = 0;
pub(crate) const CNT_EVENTS: u32 = 1;
pub(crate) const CNT_MAP_FULL: u32 = 2;

const EV_FORK: u32 = 1;
const EV_EXEC: u32 = 2;
const EV_EXIT: u32 = 3;

/// Size of `struct event`.
pub(crate) const EVENT_SIZE: usize = 152;
const COMM: std::ops::Range<usize> = 40..56;
const FILENAME: std::ops::Range<usize> = 56..152;

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

/// A NUL-terminated C string from a fixed-size field (lossy UTF-8).
fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Decodes one ring-buffer record into ids of the loader's PID namespace;
/// `None` for a short or unknown record.
pub(crate) fn decode_event(b: &[u8]) -> Option<ProcessEvent> {
    if b.len() < EVENT_SIZE {
        return None;
    }
    let (kind, aux) = (u32_at(b, 0), u32_at(b, 12));
    let ts_ns = u64_at(b, 16);
    let (tgid, tid, parent) = (u32_at(b, 24), u32_at(b, 28), u32_at(b, 32));
    let comm = c_str(&b[COMM]);
    Some(match kind {
        EV_FORK => ProcessEvent::Fork {
            parent_tgid: parent,
            child_tgid: tgid,
            comm,
            ts_ns,
        },
        EV_EXEC => ProcessEvent::Exec {
            tgid,
            tid,
            comm,
            filename: c_str(&b[FILENAME]),
            ts_ns,
        },
        EV_EXIT => ProcessEvent::Exit {
            tgid,
            tid,
            exit_code: aux as i32,
            comm,
            ts_ns,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record with global ids offset by 1000 from the namespace ones.
    fn record(kind: u32, tgid: u32, tid: u32, aux: u32, comm: &str, file: &str) -> Vec<u8> {
        let mut b = vec![0u8; EVENT_SIZE];
        b[0..4].copy_from_slice(&kind.to_ne_bytes());
        b[4..8].copy_from_slice(&(tgid + 1000).to_ne_bytes());
        b[8..12].copy_from_slice(&(tid + 1000).to_ne_bytes());
        b[12..16].copy_from_slice(&aux.to_ne_bytes());
        b[16..24].copy_from_slice(&77u64.to_ne_bytes());
        b[24..28].copy_from_slice(&tgid.to_ne_bytes());
        b[28..32].copy_from_slice(&tid.to_ne_bytes());
        if kind == EV_FORK {
            b[32..36].copy_from_slice(&aux.to_ne_bytes());
        }
        b[COMM.start..COMM.start + comm.len()].copy_from_slice(comm.as_bytes());
        b[FILENAME.start..FILENAME.start + file.len()].copy_from_slice(file.as_bytes());
        b
    }

    #[test]
    fn decodes_each_kind() {
        assert_eq!(
            decode_event(&record(EV_FORK, 10, 10, 9, "sh", "")),
            Some(ProcessEvent::Fork {
                parent_tgid: 9,
                child_tgid: 10,
                comm: "sh".into(),
                ts_ns: 77
            })
        );
        assert_eq!(
            decode_event(&record(EV_EXEC, 10, 10, 10, "ls", "/bin/ls")),
            Some(ProcessEvent::Exec {
                tgid: 10,
                tid: 10,
                comm: "ls".into(),
                filename: "/bin/ls".into(),
                ts_ns: 77
            })
        );
        assert_eq!(
            decode_event(&record(EV_EXIT, 10, 11, 256, "ls", "")),
            Some(ProcessEvent::Exit {
                tgid: 10,
                tid: 11,
                exit_code: 256,
                comm: "ls".into(),
                ts_ns: 77
            })
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode_event(&[0u8; 8]), None);
        assert_eq!(decode_event(&record(9, 1, 1, 0, "", "")), None);
    }

    #[test]
    fn comm_without_nul_uses_the_whole_field() {
        let b = record(EV_FORK, 1, 1, 0, "0123456789abcdef", "");
        match decode_event(&b) {
            Some(ProcessEvent::Fork { comm, .. }) => assert_eq!(comm, "0123456789abcdef"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[cfg(test)]
mod ns_tests {
    use super::*;

    #[test]
    fn decodes_iterator_records_and_ignores_a_partial_one() {
        let mut b = Vec::new();
        for (g, n) in [(100u32, 1u32), (101, 2)] {
            b.extend_from_slice(&g.to_ne_bytes());
            b.extend_from_slice(&n.to_ne_bytes());
        }
        b.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            decode_ns_pids(&b),
            vec![
                NsPid {
                    tgid: 100,
                    ns_tgid: 1
                },
                NsPid {
                    tgid: 101,
                    ns_tgid: 2
                }
            ]
        );
    }
}

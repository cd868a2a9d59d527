//! Plain data read from the kernel maps: per-thread figures, per-process
//! fault counts by address range, and process life-cycle events.

/// Cumulative figures of one thread since its process became managed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadFigures {
    pub tgid: u32,
    pub tid: u32,
    /// Time on a CPU, including the slice in progress at the snapshot.
    pub oncpu_ns: u64,
    /// Time runnable but waiting in a run queue (wake-up or preemption to
    /// switch-in).
    pub runq_wait_ns: u64,
    /// User page faults.
    pub faults: u64,
    /// Times the thread was switched out.
    pub switches: u64,
    /// The thread has exited: this is its last appearance.
    pub exited: bool,
}

/// User page faults of one process in one aligned address range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeFaults {
    pub tgid: u32,
    /// First address of the range (aligned to `1 << range_shift`).
    pub start: u64,
    pub faults: u64,
}

/// One read of the kernel maps, figures summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// When it was taken, CLOCK_MONOTONIC ns (the clock of the BPF side).
    pub at_ns: u64,
    /// log2 of the size of a fault range.
    pub range_shift: u32,
    /// Processes managed at the time, including children followed in the
    /// kernel.
    pub managed: Vec<u32>,
    /// Sorted by (tgid, tid).
    pub threads: Vec<ThreadFigures>,
    /// Sorted by (tgid, start).
    pub fault_ranges: Vec<RangeFaults>,
}

impl Snapshot {
    /// The threads of one process.
    pub fn threads_of(&self, tgid: u32) -> impl Iterator<Item = &ThreadFigures> {
        self.threads.iter().filter(move |t| t.tgid == tgid)
    }

    /// Fault ranges of one process.
    pub fn ranges_of(&self, tgid: u32) -> impl Iterator<Item = &RangeFaults> {
        self.fault_ranges.iter().filter(move |r| r.tgid == tgid)
    }

    /// Total user page faults of one process (sum over its threads).
    pub fn process_faults(&self, tgid: u32) -> u64 {
        self.threads_of(tgid).map(|t| t.faults).sum()
    }

    /// Size in bytes of one fault range.
    pub fn range_size(&self) -> u64 {
        1u64 << self.range_shift.min(63)
    }
}

/// A fork, exec or exit of a managed process, from the ring buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessEvent {
    /// A managed process forked: the child is now managed too.
    Fork {
        parent_tgid: u32,
        child_tgid: u32,
        comm: String,
        ts_ns: u64,
    },
    /// A managed process called execve; `filename` is truncated to 95 bytes.
    Exec {
        tgid: u32,
        tid: u32,
        comm: String,
        filename: String,
        ts_ns: u64,
    },
    /// The last thread of a managed process exited; it is no longer managed.
    /// `exit_code` is in `wait` status form.
    Exit {
        tgid: u32,
        tid: u32,
        exit_code: i32,
        comm: String,
        ts_ns: u64,
    },
}

impl ProcessEvent {
    /// The process the event is about (the child for a fork).
    pub fn tgid(&self) -> u32 {
        match self {
            ProcessEvent::Fork { child_tgid, .. } => *child_tgid,
            ProcessEvent::Exec { tgid, .. } | ProcessEvent::Exit { tgid, .. } => *tgid,
        }
    }
}

/// Counters of the BPF side, summed over CPUs, since load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events lost because the ring buffer was full.
    pub ring_drops: u64,
    /// Events written to the ring buffer.
    pub events: u64,
    /// Updates refused because a map was full (figures lost).
    pub map_full: u64,
}

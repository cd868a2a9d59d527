//! Loading and attaching the programs, the managed set, and reading the
//! kernel maps into snapshots and events.

use std::collections::{BTreeSet, HashMap as StdHashMap};
use std::os::fd::{AsFd, BorrowedFd};

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::{BtfTracePoint, Iter};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::error::EbpfError;
use crate::raw::{self, RangeKey, ThreadState, ThreadStats};
use crate::snapshot::{Counters, ProcessEvent, RangeFaults, Snapshot, ThreadFigures};

static TRACER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.bpf.o"));

const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// Every hook: (program, BTF tracepoint, required). `page_fault_user` is an
/// x86-only tracepoint: without it tracing runs with zero fault counts.
pub const HOOKS: &[(&str, &str, bool)] = &[
    ("page_fault_user", "page_fault_user", false),
    ("sched_switch", "sched_switch", true),
    ("sched_wakeup", "sched_wakeup", true),
    ("sched_wakeup_new", "sched_wakeup_new", true),
    ("sched_process_fork", "sched_process_fork", true),
    ("sched_process_exec", "sched_process_exec", true),
    ("sched_process_exit", "sched_process_exit", true),
];

/// Tunables of the BPF side, fixed at load.
#[derive(Clone, Copy, Debug)]
pub struct TracerConfig {
    /// Ring-buffer bytes waiting before the BPF side forces a wake-up;
    /// below it, writers never wake the reader (it polls).
    pub wake_threshold: u64,
    /// log2 of the size of the address ranges faults are counted by.
    pub range_shift: u32,
    /// Threads traced at once (exited ones count until the next snapshot).
    pub max_threads: u32,
    /// (process, address range) fault counters.
    pub max_ranges: u32,
}

impl Default for TracerConfig {
    fn default() -> Self {
        TracerConfig {
            wake_threshold: 64 * 1024,
            range_shift: 21,
            max_threads: 32768,
            max_ranges: 65536,
        }
    }
}

/// The loaded and attached tracer. Dropping it detaches every program.
pub struct Tracer {
    /// Global tgid -> tgid in our PID namespace.
    managed: HashMap<MapData, u32, u32>,
    /// One byte per pid below `fast_len`: the filter the BPF side reads.
    managed_fast: Array<MapData, u8>,
    fast_len: u32,
    threads: PerCpuHashMap<MapData, u32, ThreadStats>,
    state: HashMap<MapData, u32, ThreadState>,
    ranges: PerCpuHashMap<MapData, RangeKey, u64>,
    counters: PerCpuArray<MapData, u64>,
    events: RingBuf<MapData>,
    range_shift: u32,
    missing_hooks: Vec<&'static str>,
    /// Not in the initial PID namespace: ids are translated.
    translate: bool,
    // Owns the programs and their links; last so maps are released first.
    bpf: Ebpf,
}

/// PROC_PID_INIT_INO: the inode of the initial PID namespace.
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// Whether this process is in the initial PID namespace (assumed when
/// `/proc/self/ns/pid` cannot be read).
fn in_initial_pid_ns() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino() == INIT_PID_NS_INO)
        .unwrap_or(true)
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> EbpfError {
    move |source| EbpfError::Map { name, source }
}

fn take<T>(bpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = bpf
        .take_map(name)
        .ok_or(EbpfError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(map_err(name))
}

/// Collects a map iterator, skipping entries deleted while iterating.
fn collect<K, V>(
    name: &'static str,
    it: impl Iterator<Item = Result<(K, V), MapError>>,
) -> Result<Vec<(K, V)>, EbpfError> {
    let mut out = Vec::new();
    for item in it {
        match item {
            Ok(kv) => out.push(kv),
            Err(MapError::KeyNotFound) => {}
            Err(source) => return Err(EbpfError::Map { name, source }),
        }
    }
    Ok(out)
}

fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) | Err(MapError::ElementNotFound) => Ok(()),
        other => other,
    }
}

/// Size of the fast managed filter: `kernel.pid_max` (pids are below it).
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(1 << 22)
        .clamp(1024, 1 << 22)
}

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Tracer {
    /// Loads and attaches everything with the default configuration.
    /// On a machine that cannot trace the error's
    /// [`is_unavailable`](EbpfError::is_unavailable) is true.
    pub fn load() -> Result<Tracer, EbpfError> {
        Tracer::load_with(TracerConfig::default())
    }

    /// Loads and attaches everything.
    pub fn load_with(config: TracerConfig) -> Result<Tracer, EbpfError> {
        if !std::path::Path::new(BTF_PATH).exists() {
            return Err(EbpfError::NoBtf { path: BTF_PATH });
        }
        let btf = Btf::from_sys_fs()?;
        let fast_len = pid_max();
        let translate = !in_initial_pid_ns();
        let translate_flag = u32::from(translate);
        let mut bpf = EbpfLoader::new()
            .btf(Some(&btf))
            .map_max_entries("MANAGED_FAST", fast_len)
            .map_max_entries("THREADS", config.max_threads)
            .map_max_entries("THREAD_STATE", config.max_threads)
            .map_max_entries("FAULT_RANGES", config.max_ranges)
            .override_global("WAKE_THRESHOLD", &config.wake_threshold, true)
            .override_global("RANGE_SHIFT", &config.range_shift, true)
            .override_global("TRANSLATE", &translate_flag, true)
            .load(TRACER_OBJ)
            .map_err(|e| EbpfError::Load(e).classify())?;

        let mut missing_hooks = Vec::new();
        for &(name, hook, required) in HOOKS {
            match attach(&mut bpf, &btf, name, hook).map_err(EbpfError::classify) {
                Ok(()) => {}
                Err(e) if !required && !e.is_unavailable() => {
                    tracing::warn!(error = %e, hook, "optional eBPF hook not attached; its figures stay zero");
                    missing_hooks.push(hook);
                }
                Err(e) => return Err(e),
            }
        }
        let iter: &mut Iter = bpf
            .program_mut("ns_pids")
            .ok_or(EbpfError::Missing {
                kind: "program",
                name: "ns_pids",
            })?
            .try_into()
            .map_err(|source| program_err("ns_pids", source))?;
        iter.load("task", &btf)
            .map_err(|source| program_err("ns_pids", source).classify())?;
        let mut tracer = Tracer {
            managed: take(&mut bpf, "MANAGED")?,
            managed_fast: take(&mut bpf, "MANAGED_FAST")?,
            fast_len,
            threads: take(&mut bpf, "THREADS")?,
            state: take(&mut bpf, "THREAD_STATE")?,
            ranges: take(&mut bpf, "FAULT_RANGES")?,
            counters: take(&mut bpf, "COUNTERS")?,
            events: take(&mut bpf, "EVENTS")?,
            range_shift: config.range_shift,
            missing_hooks,
            translate,
            bpf,
        };
        if translate {
            // The first iteration teaches the BPF side our PID namespace,
            // before any entry is created.
            tracer.ns_pids()?;
        }
        tracing::info!(
            hooks = HOOKS.len() - tracer.missing_hooks.len(),
            missing = ?tracer.missing_hooks,
            translate,
            "eBPF tracer attached"
        );
        Ok(tracer)
    }

    /// Hooks that could not attach (optional ones only).
    pub fn missing_hooks(&self) -> &[&'static str] {
        &self.missing_hooks
    }

    /// (global tgid, tgid in our PID namespace) of every process visible in
    /// our namespace, from the `ns_pids` BPF iterator.
    fn ns_pids(&mut self) -> Result<Vec<raw::NsPid>, EbpfError> {
        use std::io::Read;
        let iter: &mut Iter = self
            .bpf
            .program_mut("ns_pids")
            .ok_or(EbpfError::Missing {
                kind: "program",
                name: "ns_pids",
            })?
            .try_into()
            .map_err(|source| program_err("ns_pids", source))?;
        let link_id = iter
            .attach()
            .map_err(|source| program_err("ns_pids", source))?;
        let link = iter
            .take_link(link_id)
            .map_err(|source| program_err("ns_pids", source))?;
        let mut file = link.into_file().map_err(|e| EbpfError::Iterator {
            reason: e.to_string(),
        })?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(|e| EbpfError::Iterator {
                reason: e.to_string(),
            })?;
        Ok(raw::decode_ns_pids(&buf))
    }

    /// The kernel's global tgid of process `tgid` of our namespace.
    fn global_tgid(&mut self, tgid: u32) -> Result<u32, EbpfError> {
        if !self.translate {
            return Ok(tgid);
        }
        self.ns_pids()?
            .into_iter()
            .find(|p| p.ns_tgid == tgid)
            .map(|p| p.tgid)
            .ok_or(EbpfError::NoSuchProcess(tgid))
    }

    /// Starts tracing process `tgid` (as this process sees it); the
    /// processes it forks from now on are followed inside the kernel.
    pub fn manage(&mut self, tgid: u32) -> Result<(), EbpfError> {
        if tgid == 0 {
            return Err(EbpfError::InvalidTgid(tgid));
        }
        let global = self.global_tgid(tgid)?;
        self.managed
            .insert(global, tgid, 0)
            .map_err(map_err("MANAGED"))?;
        self.set_fast(global, 1)
    }

    /// Stops tracing `tgid` and forgets its figures (its children stay
    /// managed). Not an error if it was not managed.
    pub fn unmanage(&mut self, tgid: u32) -> Result<(), EbpfError> {
        for (global, _) in self
            .managed_pairs()?
            .into_iter()
            .filter(|&(_, ns)| ns == tgid)
        {
            self.set_fast(global, 0)?;
            ignore_missing(self.managed.remove(&global)).map_err(map_err("MANAGED"))?;
        }
        let tids: Vec<u32> = collect("THREAD_STATE", self.state.iter())?
            .into_iter()
            .filter(|(_, s)| s.ns_tgid == tgid)
            .map(|(tid, _)| tid)
            .collect();
        let stat_tids: Vec<u32> = collect("THREADS", self.threads.iter())?
            .into_iter()
            .filter(|(_, v)| v.iter().any(|s| s.tgid != 0 && s.ns_tgid == tgid))
            .map(|(tid, _)| tid)
            .collect();
        for tid in &tids {
            ignore_missing(self.state.remove(tid)).map_err(map_err("THREAD_STATE"))?;
        }
        for tid in &stat_tids {
            ignore_missing(self.threads.remove(tid)).map_err(map_err("THREADS"))?;
        }
        let keys: Vec<RangeKey> = collect("FAULT_RANGES", self.ranges.iter())?
            .into_iter()
            .filter(|(k, _)| k.ns_tgid == tgid)
            .map(|(k, _)| k)
            .collect();
        for k in &keys {
            ignore_missing(self.ranges.remove(k)).map_err(map_err("FAULT_RANGES"))?;
        }
        Ok(())
    }

    fn set_fast(&mut self, tgid: u32, on: u8) -> Result<(), EbpfError> {
        if tgid < self.fast_len {
            self.managed_fast
                .set(tgid, on, 0)
                .map_err(map_err("MANAGED_FAST"))?;
        }
        Ok(())
    }

    /// (global tgid, tgid in our namespace) of every managed process.
    fn managed_pairs(&self) -> Result<Vec<(u32, u32)>, EbpfError> {
        collect("MANAGED", self.managed.iter())
    }

    /// The managed tgids (as this process sees them), sorted.
    pub fn managed(&self) -> Result<Vec<u32>, EbpfError> {
        let mut v: Vec<u32> = self
            .managed_pairs()?
            .into_iter()
            .map(|(_, ns)| ns)
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Whether `tgid` is managed now.
    pub fn is_managed(&self, tgid: u32) -> Result<bool, EbpfError> {
        Ok(self.managed_pairs()?.iter().any(|&(_, ns)| ns == tgid))
    }

    /// Reads the figures of every managed thread, summed over CPUs. Threads
    /// that exited and processes no longer managed appear one last time
    /// (`exited`), then their entries are removed from the kernel maps.
    pub fn snapshot(&mut self) -> Result<Snapshot, EbpfError> {
        // Order matters. Fault ranges before the per-thread range caches: a
        // cache flushed in between is missed once, never counted twice.
        // Per-thread sums before the timestamps, so a slice ending in
        // between is never counted twice. The managed set last, so a child
        // forked meanwhile is never taken for a dead process.
        let ranges = collect("FAULT_RANGES", self.ranges.iter())?;
        let stats = collect("THREADS", self.threads.iter())?;
        let states: StdHashMap<u32, ThreadState> = collect("THREAD_STATE", self.state.iter())?
            .into_iter()
            .collect();
        let at_ns = monotonic_ns();
        let pairs = self.managed_pairs()?;
        let managed: BTreeSet<u32> = pairs.iter().map(|&(global, _)| global).collect();

        let mut range_faults: StdHashMap<(u32, u64), u64> = StdHashMap::new();
        let mut dead_ranges = Vec::new();
        for (key, per_cpu) in &ranges {
            *range_faults.entry((key.ns_tgid, key.range)).or_default() +=
                per_cpu.iter().sum::<u64>();
            if !managed.contains(&key.tgid) {
                dead_ranges.push(*key);
            }
        }
        for (_, per_cpu) in &stats {
            for s in per_cpu.iter().filter(|s| s.cached_faults > 0) {
                *range_faults.entry((s.ns_tgid, s.cached_range)).or_default() += s.cached_faults;
            }
        }
        let shift = self.range_shift.min(63);
        let mut fault_ranges: Vec<RangeFaults> = range_faults
            .into_iter()
            .filter(|&((ns_tgid, _), _)| ns_tgid != 0)
            .map(|((tgid, range), faults)| RangeFaults {
                tgid,
                start: range << shift,
                faults,
            })
            .collect();
        fault_ranges.sort_unstable_by_key(|r| (r.tgid, r.start));

        // Keyed by global tid; the figures carry our namespace's ids.
        let mut threads: StdHashMap<u32, (u32, ThreadFigures)> = StdHashMap::new();
        for (tid, per_cpu) in &stats {
            let mut global_tgid = 0;
            let mut f = ThreadFigures::default();
            for s in per_cpu.iter() {
                if s.tgid != 0 {
                    global_tgid = s.tgid;
                    f.tgid = s.ns_tgid;
                    f.tid = s.ns_tid;
                }
                f.oncpu_ns += s.oncpu_ns;
                f.runq_wait_ns += s.runq_ns;
                f.faults += s.faults;
                f.switches += s.switches;
            }
            threads.insert(*tid, (global_tgid, f));
        }
        for (tid, st) in &states {
            let (global_tgid, f) = threads.entry(*tid).or_default();
            if *global_tgid == 0 {
                *global_tgid = st.tgid;
                f.tgid = st.ns_tgid;
                f.tid = st.ns_tid;
            }
            if st.on_since != 0 && at_ns > st.on_since {
                f.oncpu_ns += at_ns - st.on_since;
            }
            f.exited = st.exited != 0;
        }
        let mut finished = Vec::new();
        let mut out = Vec::with_capacity(threads.len());
        for (tid, (global_tgid, mut f)) in threads {
            if !managed.contains(&global_tgid) {
                f.exited = true;
            }
            if f.exited {
                finished.push(tid);
            }
            if f.tgid != 0 {
                out.push(f);
            }
        }
        out.sort_unstable_by_key(|t| (t.tgid, t.tid));
        let threads = out;

        // Forget what was just reported for the last time.
        for tid in &finished {
            ignore_missing(self.threads.remove(tid)).map_err(map_err("THREADS"))?;
            ignore_missing(self.state.remove(tid)).map_err(map_err("THREAD_STATE"))?;
        }
        for k in &dead_ranges {
            ignore_missing(self.ranges.remove(k)).map_err(map_err("FAULT_RANGES"))?;
        }

        Ok(Snapshot {
            at_ns,
            range_shift: self.range_shift,
            managed: {
                let mut m: Vec<u32> = pairs.iter().map(|&(_, ns)| ns).collect();
                m.sort_unstable();
                m
            },
            threads,
            fault_ranges,
        })
    }

    /// Every fork/exec/exit event waiting in the ring buffer. Call it every
    /// few ms (or when [`AsFd`] polls readable): the BPF side wakes the
    /// reader only past its fill threshold.
    pub fn drain_events(&mut self) -> Vec<ProcessEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            match raw::decode_event(&item) {
                Some(e) => out.push(e),
                None => tracing::warn!(len = item.len(), "undecodable eBPF event skipped"),
            }
        }
        out
    }

    /// Counters of the BPF side since load, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, EbpfError> {
        let sum = |idx: u32| -> Result<u64, EbpfError> {
            let v = self.counters.get(&idx, 0).map_err(map_err("COUNTERS"))?;
            Ok(v.iter().sum())
        };
        Ok(Counters {
            ring_drops: sum(raw::CNT_RING_DROPS)?,
            events: sum(raw::CNT_EVENTS)?,
            map_full: sum(raw::CNT_MAP_FULL)?,
        })
    }
}

/// The ring buffer's fd: readable once the BPF side forces a wake-up.
impl AsFd for Tracer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }
}

fn program_err(name: &'static str, source: aya::programs::ProgramError) -> EbpfError {
    EbpfError::Program {
        name,
        hook: name,
        source,
    }
}

fn attach(
    bpf: &mut Ebpf,
    btf: &Btf,
    name: &'static str,
    hook: &'static str,
) -> Result<(), EbpfError> {
    let program: &mut BtfTracePoint = bpf
        .program_mut(name)
        .ok_or(EbpfError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| EbpfError::Program { name, hook, source })?;
    program
        .load(hook, btf)
        .map_err(|source| EbpfError::Program { name, hook, source })?;
    program
        .attach()
        .map_err(|source| EbpfError::Program { name, hook, source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tracer_can_move_between_threads() {
        fn is_send<T: Send>() {}
        is_send::<super::Tracer>();
    }
}

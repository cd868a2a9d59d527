//! Post-copy over a real userfaultfd: a uffd is created *inside* a frozen
//! process by syscall injection, taken with pidfd_getfd, and this test serves
//! the process's faults (plain loads and faults inside write(2), several
//! threads on the same pages) driven by `popcorn_dsm::postcopy`.

use popcorn_checkpoint::FrozenProcess;
use popcorn_dsm::postcopy::{Action, PageRange, Postcopy};
use popcorn_dsm::uffd::{Event, Uffd, UffdError};
use popcorn_dsm::PAGE_SIZE;
use popcorn_tests::programs::Running;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SYS_CLOSE: i64 = 3;
const SYS_USERFAULTFD: i64 = 323;
const LEN: u64 = 4 << 20;
const PAGES: u64 = LEN / PAGE_SIZE;
const THREADS: usize = 3;

/// Page `i`'s content "at the origin": never zero, different per page.
fn origin_page(i: u64) -> Vec<u8> {
    (0..PAGE_SIZE / 8)
        .flat_map(|j| (((i << 32) | j) ^ 0x9e37_79b9_7f4a_7c15).to_ne_bytes())
        .collect()
}

/// Pages never touched at the origin: zero-filled locally.
fn untouched(i: u64) -> bool {
    i % 5 == 2
}

fn fnv(pages: impl Iterator<Item = Vec<u8>>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in pages {
        for w in p.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = (h ^ u64::from_ne_bytes(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

#[derive(Debug, Default)]
struct Stats {
    faults: u64,
    zero_fills: u64,
    fetches: u64,
    merged: u64,
    present_wakes: u64,
    pushed_pages: u64,
    existed: u64,
}

/// Installs `range` (pages of the region at `base`) as if it had just
/// arrived from the origin.
fn deliver(u: &Uffd, pc: &mut Postcopy, base: u64, range: PageRange, st: &mut Stats) {
    for run in pc.on_pages_arrived(range).expect("arrival in region") {
        let data: Vec<u8> = (0..run.pages)
            .flat_map(|k| origin_page((run.start - base) / PAGE_SIZE + k))
            .collect();
        loop {
            match u.copy(run.start, &data) {
                Ok(f) => {
                    st.existed += f.existed;
                    break;
                }
                // Events pending (none are expected here): read, then retry.
                Err(UffdError::Again { .. }) => {
                    if let Some(ev) = u.read_event().expect("read") {
                        panic!("unexpected event {ev:?}");
                    }
                }
                Err(e) => panic!("copy {:#x}: {e}", run.start),
            }
        }
    }
}

/// Background batches the test server sends at most (so faults still need
/// the "origin" however slowly the program starts).
const MAX_BATCHES: usize = 3;

/// Serves faults until `stop`: fetches are "in flight" until the next loop
/// iteration so concurrent faults on one page merge; when idle, the pusher
/// sends one batch (at most [`MAX_BATCHES`]).
fn serve(u: Uffd, mut pc: Postcopy, base: u64, stop: Arc<AtomicBool>) -> (Stats, Postcopy) {
    let mut st = Stats::default();
    let mut batches = 0;
    while !stop.load(Ordering::Relaxed) {
        let ready = u.poll(2).expect("poll");
        let mut in_flight = Vec::new();
        if ready {
            while let Some(ev) = u.read_event().expect("read event") {
                let Event::PageFault { addr, .. } = ev else {
                    panic!("unexpected event {ev:?}");
                };
                st.faults += 1;
                match pc.on_fault(addr).expect("fault in region") {
                    Action::ZeroFill(r) => {
                        st.zero_fills += 1;
                        let f = u.zeropage(r.start, r.bytes()).expect("zeropage");
                        st.existed += f.existed;
                    }
                    Action::Fetch(r) => {
                        st.fetches += 1;
                        in_flight.push(r);
                    }
                    Action::AlreadyInFlight => st.merged += 1,
                    Action::Present(r) => {
                        st.present_wakes += 1;
                        u.wake(r.start, r.bytes()).expect("wake");
                    }
                }
            }
        } else if batches < MAX_BATCHES {
            let batch = pc.next_push_batch();
            batches += 1;
            st.pushed_pages += batch.iter().map(|r| r.pages).sum::<u64>();
            in_flight.extend(batch);
        }
        for r in in_flight {
            deliver(&u, &mut pc, base, r, &mut st);
        }
    }
    (st, pc)
}

#[test]
fn serves_a_frozen_process_faults_through_an_injected_uffd() {
    let threads = THREADS.to_string();
    let mut r = Running::start("uffd_reader", &[threads.as_str()]);
    let line = r.wait_line(|l| l.starts_with("addr "), Duration::from_secs(30));
    let base = u64::from_str_radix(&line[5..], 16).expect("hex address");
    r.wait_for("ready", Duration::from_secs(30));

    // Create the uffd inside the target, take it, drop the target's copy.
    let mut f = FrozenProcess::freeze(r.pid()).expect("freeze");
    let tid = f.tids()[0];
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    let fd = f
        .inject_syscall(tid, SYS_USERFAULTFD, [flags, 0, 0, 0, 0, 0])
        .expect("inject userfaultfd");
    assert!(fd >= 0, "userfaultfd in target: {fd}");
    let ours = f.dup_fd(fd as i32).expect("pidfd_getfd");
    let closed = f
        .inject_syscall(tid, SYS_CLOSE, [fd as u64, 0, 0, 0, 0, 0])
        .expect("inject close");
    assert_eq!(closed, 0);
    assert!(
        !std::path::Path::new(&format!("/proc/{}/fd/{fd}", r.pid())).exists(),
        "target still holds the uffd"
    );

    // Handshake and register from this process: it acts on the target's mm.
    let u = Uffd::adopt_postcopy(ours).expect("UFFDIO_API on the adopted uffd");
    u.register(base, LEN).expect("register the target's region");

    let mut pc = Postcopy::new();
    pc.add_region(base, base + LEN).expect("region");
    for i in (0..PAGES).filter(|&i| !untouched(i)) {
        let a = base + i * PAGE_SIZE;
        pc.mark_at_origin(a, a + PAGE_SIZE).expect("mark");
    }
    let expected_zeros = (0..PAGES).filter(|&i| untouched(i)).count();
    let at_origin = PAGES - expected_zeros as u64;
    assert_eq!(pc.remaining(), at_origin);

    f.thaw().expect("thaw");
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || serve(u, pc, base, stop))
    };

    // Let the pusher send a batch or two while the program is idle.
    std::thread::sleep(Duration::from_millis(5));
    r.write_stdin(b"go\n");
    let mut sums = BTreeMap::new();
    let mut zeros = BTreeMap::new();
    while sums.len() < THREADS || zeros.len() < THREADS {
        let l = r.wait_line(
            |l| l.starts_with("sum ") || l.starts_with("zeros "),
            Duration::from_secs(60),
        );
        let parts: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "{l}");
        if parts[0] == "sum" {
            sums.insert(parts[1].to_string(), parts[2].to_string());
        } else {
            zeros.insert(parts[1].to_string(), parts[2].parse::<usize>().expect("n"));
        }
    }
    let (status, _) = r.finish(Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    let (st, pc) = server.join().expect("server thread");
    eprintln!("served: {st:?}, counts {:?}", pc.counts());
    assert!(status.success(), "uffd_reader: {status}");

    let want = fnv((0..PAGES).map(|i| {
        if untouched(i) {
            vec![0u8; PAGE_SIZE as usize]
        } else {
            origin_page(i)
        }
    }));
    for (t, s) in &sums {
        assert_eq!(
            u64::from_str_radix(s, 16).expect("hex sum"),
            want,
            "thread {t} saw different memory"
        );
    }
    for (t, z) in &zeros {
        assert_eq!(*z, expected_zeros, "thread {t}: zero pages");
    }
    // Every untouched page was zero-filled locally, never fetched.
    assert_eq!(st.zero_fills, expected_zeros as u64);
    assert!(st.fetches > 0, "no fault needed the origin: {st:?}");
    assert_eq!(pc.counts().in_flight, 0);
}

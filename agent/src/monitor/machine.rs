//! Figures of the machine a node runs on, from /proc: load, CPU busy time,
//! memory. Parsers are pure; [`MachineSampler`] keeps the previous CPU
//! times to turn them into a busy percentage.

use popcorn_proto::monitor::MachineFigures;

/// Cumulative CPU time of all CPUs, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// The aggregate `cpu` line of /proc/stat.
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total - idle,
        total,
    })
}

/// Number of CPUs listed in /proc/stat.
pub fn parse_cpu_count(text: &str) -> u32 {
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u32
}

/// The 1-minute load average of /proc/loadavg.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// (MemTotal, MemAvailable) in KiB from /proc/meminfo.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// Busy percentage between two readings.
pub fn busy_percent(prev: CpuTimes, cur: CpuTimes) -> f64 {
    let total = cur.total.saturating_sub(prev.total);
    if total == 0 {
        return 0.0;
    }
    100.0 * cur.busy.saturating_sub(prev.busy) as f64 / total as f64
}

/// Reads the machine's figures, keeping CPU times between calls.
#[derive(Default)]
pub struct MachineSampler {
    prev: Option<CpuTimes>,
}

impl MachineSampler {
    pub fn sample(&mut self) -> MachineFigures {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let stat = read("/proc/stat");
        let cur = parse_stat(&stat);
        let cpu_busy_percent = match (self.prev, cur) {
            (Some(p), Some(c)) => busy_percent(p, c),
            _ => 0.0,
        };
        self.prev = cur;
        let (mem_total_kib, mem_available_kib) = parse_meminfo(&read("/proc/meminfo"));
        MachineFigures {
            cpus: parse_cpu_count(&stat),
            load1: parse_loadavg(&read("/proc/loadavg")).unwrap_or(0.0),
            cpu_busy_percent,
            mem_total_kib,
            mem_available_kib,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 5 50 800 40 3 2 0 0 0\n\
                        cpu0 50 2 25 400 20 1 1 0 0 0\n\
                        cpu1 50 3 25 400 20 2 1 0 0 0\n\
                        intr 12345\nctxt 999\n";

    #[test]
    fn stat_counts_idle_and_iowait_as_not_busy() {
        let t = parse_stat(STAT).unwrap();
        assert_eq!(t.total, 1000);
        assert_eq!(t.busy, 160);
        assert_eq!(parse_cpu_count(STAT), 2);
        assert_eq!(parse_stat("intr 1\n"), None);
        assert_eq!(parse_stat("cpu  1 x 3 4\n"), None);
        assert_eq!(parse_stat("cpu  1 2\n"), None);
    }

    #[test]
    fn busy_between_readings() {
        let a = CpuTimes {
            busy: 100,
            total: 1000,
        };
        let b = CpuTimes {
            busy: 150,
            total: 1200,
        };
        assert!((busy_percent(a, b) - 25.0).abs() < 1e-9);
        assert_eq!(busy_percent(b, b), 0.0);
        assert_eq!(busy_percent(b, a), 0.0);
    }

    #[test]
    fn loadavg_and_meminfo() {
        assert_eq!(parse_loadavg("0.52 0.40 0.30 1/200 1234\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
        let mem = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_meminfo(mem), (24_000_000, 20_000_000));
        assert_eq!(parse_meminfo("garbage"), (0, 0));
    }

    #[test]
    fn this_machine_reads() {
        let mut s = MachineSampler::default();
        s.sample();
        let m = s.sample();
        assert!(m.cpus >= 1);
        assert!(m.mem_total_kib > 0 && m.mem_available_kib <= m.mem_total_kib);
        assert!((0.0..=100.0).contains(&m.cpu_busy_percent));
    }
}

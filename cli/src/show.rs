//! Human and JSON renderings of agent replies.

use anyhow::{bail, Result};
use popcorn_proto::control::{
    ExitStatus, Health, MigrationReport, NodeStatus, ProcessInfo, ProcessStateKind,
};
use serde_json::Value;

fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<i32> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(0)
}

/// Prints rows as aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

pub fn nodes(nodes: &[NodeStatus], json: bool) -> Result<i32> {
    if json {
        return print_json(nodes);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.address.clone(),
                n.isa.to_string(),
                match n.health {
                    Health::Local => "local (this node)".into(),
                    Health::Up => "up".into(),
                    Health::Down => "DOWN".into(),
                },
                n.rtt_us
                    .filter(|_| n.health == Health::Up)
                    .map_or("-".into(), |r| format!("{:.0} µs", r)),
                n.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["NODE", "ADDRESS", "ISA", "HEALTH", "RTT", "PROBLEM"],
        &rows,
    );
    Ok(0)
}

/// A process's state as `popcorn ps` words it.
pub fn process_state(p: &ProcessInfo) -> String {
    match (p.state, p.exit) {
        (ProcessStateKind::Running, _) => "running".into(),
        (ProcessStateKind::Frozen, _) => "frozen".into(),
        (ProcessStateKind::Exited, Some(ExitStatus::Code(c))) => format!("exited {c}"),
        (ProcessStateKind::Exited, Some(ExitStatus::Signal(s))) => {
            format!("killed {}", signal_name(s))
        }
        (ProcessStateKind::Exited, None) => "exited".into(),
    }
}

pub fn processes(node: &str, procs: &[ProcessInfo], json: bool) -> Result<i32> {
    if json {
        return print_json(procs);
    }
    if procs.is_empty() {
        println!("no processes run through node '{node}'");
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = procs
        .iter()
        .map(|p| {
            vec![
                p.pid.to_string(),
                p.node.clone(),
                p.origin.clone(),
                process_state(p),
                if p.node == node || p.state == ProcessStateKind::Exited {
                    p.threads.to_string()
                } else {
                    "-".into()
                },
                p.uid.to_string(),
                p.argv.join(" "),
            ]
        })
        .collect();
    table(
        &[
            "PID", "NODE", "ORIGIN", "STATE", "THREADS", "UID", "COMMAND",
        ],
        &rows,
    );
    Ok(0)
}

/// What `popcorn migrate` did.
pub fn migration(r: &MigrationReport, json: bool) -> Result<i32> {
    if json {
        return print_json(r);
    }
    println!(
        "migrated process {} ({} thread{}) from {} to {}: downtime {:.2} ms; sent {} KiB of state before resuming; {} pages follow on demand and in the background, {} never-touched pages zero-filled at {}",
        r.pid,
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        r.from,
        r.to,
        r.downtime_us as f64 / 1000.0,
        r.bytes_before_resume.div_ceil(1024),
        r.pages_at_origin,
        r.pages_zero,
        r.to
    );
    if let Some(ms) = r.transfer_ms {
        let mib = r.pages_at_origin as f64 * 4096.0 / (1 << 20) as f64;
        println!(
            "all memory at {} after {ms} ms ({mib:.1} MiB, {:.0} MiB/s)",
            r.to,
            mib / (ms.max(1) as f64 / 1000.0)
        );
    }
    Ok(0)
}

fn hex(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| v.to_string(), |n| format!("{n:#x}"))
}

/// A readable summary of a captured process; `--json` prints all of it.
pub fn inspect(state: &Value, json: bool) -> Result<i32> {
    if json {
        return print_json(state);
    }
    let get = |k: &str| state.get(k).cloned().unwrap_or(Value::Null);
    println!(
        "process {}  exe {}",
        get("pid"),
        get("exe").as_str().unwrap_or("?")
    );
    println!(
        "cwd {}  umask {:o}",
        get("cwd").as_str().unwrap_or("?"),
        get("umask").as_u64().unwrap_or(0)
    );
    if let Some(mm) = state.get("mm").and_then(Value::as_object) {
        let fields: Vec<String> = mm.iter().map(|(k, v)| format!("{k}={}", hex(v))).collect();
        println!("mm: {}", fields.join(" "));
    }
    let threads = get("threads");
    let threads = threads.as_array().cloned().unwrap_or_default();
    println!("\n{} thread(s)", threads.len());
    for t in &threads {
        let regs = t.get("regs").cloned().unwrap_or(Value::Null);
        let r = |k: &str| regs.get(k).map(hex).unwrap_or_else(|| "?".into());
        println!(
            "  tid {:<7} rip {} rsp {} fs_base {} orig_rax {} sigmask {}",
            t.get("tid").cloned().unwrap_or(Value::Null),
            r("rip"),
            r("rsp"),
            r("fs_base"),
            regs.get("orig_rax")
                .and_then(Value::as_u64)
                .map_or("?".into(), |v| (v as i64).to_string()),
            t.get("sigmask").map(hex).unwrap_or_else(|| "?".into()),
        );
    }
    let vmas = get("vmas");
    let vmas = vmas.as_array().cloned().unwrap_or_default();
    println!("\n{} memory area(s)", vmas.len());
    for v in &vmas {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let addr = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .map_or("?".into(), |n| format!("{n:012x}"))
        };
        let name = if s("path").is_empty() {
            s("name")
        } else {
            s("path")
        };
        println!(
            "  {}-{} {} {}",
            addr("start"),
            addr("end"),
            s("perms"),
            name
        );
    }
    let fds = get("fds");
    let fds = fds.as_array().cloned().unwrap_or_default();
    println!("\n{} file descriptor(s)", fds.len());
    for f in &fds {
        println!(
            "  {:<4} {}",
            f.get("fd").cloned().unwrap_or(Value::Null),
            f.get("target").and_then(Value::as_str).unwrap_or("?"),
        );
    }
    Ok(0)
}

const SIGNALS: [(&str, i32); 14] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ABRT", libc::SIGABRT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
];

/// "TERM", "SIGTERM", "term" or "15".
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        bail!("signal number {n} is out of range (1-64)");
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            anyhow::anyhow!("unknown signal '{s}' (use a number or a name like TERM, INT, KILL)")
        })
}

pub fn signal_name(sig: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, v)| *v == sig)
        .map_or_else(|| format!("signal {sig}"), |(n, _)| format!("SIG{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_like_ps() {
        let mut p = ProcessInfo {
            pid: 1,
            uid: 0,
            argv: vec![],
            origin: "a".into(),
            node: "a".into(),
            nodes: vec![],
            state: ProcessStateKind::Running,
            threads: 1,
            exit: None,
        };
        assert_eq!(process_state(&p), "running");
        p.state = ProcessStateKind::Frozen;
        assert_eq!(process_state(&p), "frozen");
        p.state = ProcessStateKind::Exited;
        assert_eq!(process_state(&p), "exited");
        p.exit = Some(ExitStatus::Code(3));
        assert_eq!(process_state(&p), "exited 3");
        p.exit = Some(ExitStatus::Signal(9));
        assert_eq!(process_state(&p), "killed SIGKILL");
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert_eq!(parse_signal("sigkill").unwrap(), 9);
        assert_eq!(parse_signal("2").unwrap(), 2);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("FOO").is_err());
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(40), "signal 40");
    }
}

//! `/proc/PID/stat` and `/proc/PID/task/TID/stat`.

use serde::{Deserialize, Serialize};

/// Fields of `stat` this crate uses (numbering as in proc(5)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    pub mm: MmFields,
}

/// Memory-layout fields of the process (`mm_struct`), as reported by `stat`
/// plus the current program break.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmFields {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    /// Current break (from an injected `brk(0)`; 0 when not captured).
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
}

/// Parses one `stat` line. `comm` may contain spaces and parentheses: it
/// extends to the last `)`.
pub fn parse(text: &str) -> Result<Stat, String> {
    let open = text.find('(').ok_or("no '(' before comm")?;
    let close = text.rfind(')').ok_or("no ')' after comm")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let pid = text[..open]
        .trim()
        .parse()
        .map_err(|_| format!("bad pid {:?}", text[..open].trim()))?;
    let comm = text[open + 1..close].to_owned();
    // Field 3 onwards.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] is field 3; field n is rest[n - 3].
    let field = |n: usize| -> Result<&str, String> {
        rest.get(n - 3)
            .copied()
            .ok_or_else(|| format!("missing field {n}"))
    };
    let num = |n: usize| -> Result<u64, String> {
        field(n)?
            .parse::<u64>()
            .map_err(|_| format!("field {n} is not a number"))
    };
    let int = |n: usize| -> Result<i32, String> {
        field(n)?
            .parse::<i32>()
            .map_err(|_| format!("field {n} is not a number"))
    };
    let state = field(3)?.chars().next().ok_or("empty state")?;
    // Fields 46..52 only exist on newer kernels; treat absence as 0.
    let opt = |n: usize| -> Result<u64, String> {
        if rest.len() > n - 3 {
            num(n)
        } else {
            Ok(0)
        }
    };
    Ok(Stat {
        pid,
        comm,
        state,
        ppid: int(4)?,
        pgrp: int(5)?,
        session: int(6)?,
        mm: MmFields {
            start_code: num(26)?,
            end_code: num(27)?,
            start_stack: num(28)?,
            start_data: opt(45)?,
            end_data: opt(46)?,
            start_brk: opt(47)?,
            brk: 0,
            arg_start: opt(48)?,
            arg_end: opt(49)?,
            env_start: opt(50)?,
            env_end: opt(51)?,
        },
    })
}

/// Only the state letter (field 3), for per-thread stat files.
pub fn parse_state(text: &str) -> Option<char> {
    let close = text.rfind(')')?;
    text[close + 1..].split_whitespace().next()?.chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "4242 (a) b (c)) S 1 4242 4242 34816 4242 4194304 111 0 0 0 5 3 0 0 20 0 3 0 1234 10000000 300 18446744073709551615 94000000000000 94000000100000 140720000000000 0 0 0 0 4096 16384 1 0 0 17 1 0 0 0 0 0 94000000200000 94000000210000 94000001000000 140720000001000 140720000001100 140720000001100 140720000002000 0\n";

    #[test]
    fn parses_fields_with_tricky_comm() {
        let s = parse(SAMPLE).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(s.state, 'S');
        assert_eq!((s.ppid, s.pgrp, s.session), (1, 4242, 4242));
        assert_eq!(s.mm.start_code, 94000000000000);
        assert_eq!(s.mm.end_code, 94000000100000);
        assert_eq!(s.mm.start_stack, 140720000000000);
        assert_eq!(s.mm.start_data, 94000000200000);
        assert_eq!(s.mm.end_data, 94000000210000);
        assert_eq!(s.mm.start_brk, 94000001000000);
        assert_eq!(s.mm.arg_start, 140720000001000);
        assert_eq!(s.mm.arg_end, 140720000001100);
        assert_eq!(s.mm.env_start, 140720000001100);
        assert_eq!(s.mm.env_end, 140720000002000);
        assert_eq!(s.mm.brk, 0);
        assert_eq!(parse_state(SAMPLE), Some('S'));
    }

    #[test]
    fn old_kernel_without_tail_fields() {
        let short: String = SAMPLE
            .split_whitespace()
            .take(46)
            .collect::<Vec<_>>()
            .join(" ");
        // 46 tokens = up to field 44 (comm spans 3 tokens).
        let s = parse(&short).unwrap();
        assert_eq!(s.mm.start_data, 0);
        assert_eq!(s.mm.env_end, 0);
        assert_eq!(s.mm.start_stack, 140720000000000);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("").is_err());
        assert!(parse("12 noparens S 1").is_err());
        assert!(parse("x (a) S 1 2 3").is_err());
        assert!(parse("12 (a) S 1 2").is_err());
        assert!(parse("12 (a) S one 2 3").is_err());
        assert_eq!(parse_state("12 (a)"), None);
    }

    #[test]
    fn real_stat_of_self() {
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        let s = parse(&text).unwrap();
        assert_eq!(s.pid, std::process::id() as i32);
        assert!(s.mm.start_code > 0 && s.mm.start_code < s.mm.end_code);
        assert!(s.mm.arg_start < s.mm.arg_end);
    }
}

//! `/proc/PID/status`: the handful of `Key:\tvalue` lines this crate uses.

/// Parsed fields of `status`. Missing keys keep their default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub state: Option<char>,
    pub tgid: i32,
    pub tracer_pid: i32,
    /// Real, effective, saved, filesystem uid.
    pub uid: [u32; 4],
    /// Real, effective, saved, filesystem gid.
    pub gid: [u32; 4],
    pub umask: Option<u32>,
    pub threads: u32,
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
}

fn hex(v: &str, key: &str) -> Result<u64, String> {
    u64::from_str_radix(v, 16).map_err(|_| format!("{key}: bad hex value {v:?}"))
}

/// Parses the text of a `status` file.
pub fn parse(text: &str) -> Result<Status, String> {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let bad = |what: &str| format!("{key}: bad {what} {value:?}");
        match key {
            "Name" => s.name = value.to_owned(),
            "State" => s.state = value.chars().next(),
            "Tgid" => s.tgid = value.parse().map_err(|_| bad("number"))?,
            "TracerPid" => s.tracer_pid = value.parse().map_err(|_| bad("number"))?,
            "Uid" | "Gid" => {
                let ids: Vec<u32> = value
                    .split_whitespace()
                    .map(|x| x.parse())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad("id list"))?;
                if ids.len() != 4 {
                    return Err(bad("id list"));
                }
                let field = if key == "Uid" { &mut s.uid } else { &mut s.gid };
                field.copy_from_slice(&ids);
            }
            "Umask" => {
                s.umask = Some(u32::from_str_radix(value, 8).map_err(|_| bad("octal umask"))?)
            }
            "Threads" => s.threads = value.parse().map_err(|_| bad("number"))?,
            "SigPnd" => s.sig_pnd = hex(value, key)?,
            "ShdPnd" => s.shd_pnd = hex(value, key)?,
            "SigBlk" => s.sig_blk = hex(value, key)?,
            "SigIgn" => s.sig_ign = hex(value, key)?,
            "SigCgt" => s.sig_cgt = hex(value, key)?,
            _ => {}
        }
    }
    if s.tgid == 0 {
        return Err("no Tgid line".into());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Name:\tsleep me\nUmask:\t0027\nState:\tS (sleeping)\nTgid:\t777\nNgid:\t0\nPid:\t777\nPPid:\t1\nTracerPid:\t55\nUid:\t1000\t1001\t1002\t1003\nGid:\t0\t0\t0\t0\nThreads:\t3\nSigQ:\t0/63428\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\nSigBlk:\t0000000000010000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180000002\n";

    #[test]
    fn parses_all_fields() {
        let s = parse(SAMPLE).unwrap();
        assert_eq!(s.name, "sleep me");
        assert_eq!(s.state, Some('S'));
        assert_eq!(s.tgid, 777);
        assert_eq!(s.tracer_pid, 55);
        assert_eq!(s.uid, [1000, 1001, 1002, 1003]);
        assert_eq!(s.umask, Some(0o027));
        assert_eq!(s.threads, 3);
        assert_eq!(s.shd_pnd, 0x100);
        assert_eq!(s.sig_blk, 0x10000);
        assert_eq!(s.sig_ign, 0x1000);
        assert_eq!(s.sig_cgt, 0x1_8000_0002);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("Tgid:\tx\n").unwrap_err();
        assert!(e.contains("Tgid"), "{e}");
        let e = parse("Tgid:\t1\nSigCgt:\tzz\n").unwrap_err();
        assert!(e.contains("SigCgt"), "{e}");
        let e = parse("Tgid:\t1\nUid:\t1 2\n").unwrap_err();
        assert!(e.contains("Uid"), "{e}");
        let e = parse("Tgid:\t1\nUmask:\t9\n").unwrap_err();
        assert!(e.contains("Umask"), "{e}");
        assert!(parse("").is_err());
    }

    #[test]
    fn missing_optional_keys() {
        let s = parse("Tgid:\t5\nnoise without colon\n").unwrap();
        assert_eq!(s.tgid, 5);
        assert_eq!(s.umask, None);
        assert_eq!(s.sig_cgt, 0);
    }

    #[test]
    fn real_status_of_self() {
        let s = parse(&std::fs::read_to_string("/proc/self/status").unwrap()).unwrap();
        assert_eq!(s.tgid, std::process::id() as i32);
        assert!(s.umask.is_some());
    }
}

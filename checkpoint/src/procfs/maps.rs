//! `/proc/PID/maps` and `/proc/PID/smaps`: the memory map, one [`Vma`] per
//! line, with the `VmFlags` that only `smaps` reports.

use serde::{Deserialize, Serialize};

/// What backs a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backing {
    /// Private anonymous memory (including `[heap]`, `[stack]`, `[anon:NAME]`).
    Anonymous,
    /// `MAP_SHARED | MAP_ANONYMOUS` (`/dev/zero (deleted)`) or SysV shm.
    SharedAnonymous,
    /// A file (including memfds).
    File,
    /// Kernel-provided: `[vdso]`, `[vvar]`, `[vvar_vclock]`, `[vsyscall]`, `[uprobes]`.
    Special,
}

/// Pages of a mapping that are populated (present in RAM or swapped out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRange {
    /// Address of the first page.
    pub start: u64,
    /// Number of consecutive pages.
    pub pages: u64,
}

/// One virtual memory area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// `rwxp` / `rw-s` as in `maps`.
    pub perms: String,
    pub offset: u64,
    /// Device as `major:minor` in hex, as in `maps`.
    pub dev: String,
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`); empty for plain anonymous memory.
    pub name: String,
    pub backing: Backing,
    /// Two-letter `VmFlags` from `smaps` (`rd`, `wr`, `mr`, `gd`, ...).
    pub vm_flags: Vec<String>,
    /// Pages present in RAM (from `pagemap`).
    pub present_pages: u64,
    /// Pages swapped out (from `pagemap`).
    pub swapped_pages: u64,
    /// Ranges of pages that are present or swapped, except, in file
    /// mappings, page cache pages (the file's own content); everything else
    /// was never touched (or was dropped) and reads as zeros / file content.
    pub populated: Vec<PageRange>,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    pub fn readable(&self) -> bool {
        self.perms.as_bytes().first() == Some(&b'r')
    }

    pub fn writable(&self) -> bool {
        self.perms.as_bytes().get(1) == Some(&b'w')
    }

    pub fn executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }

    pub fn shared(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b's')
    }
}

const SPECIAL: &[&str] = &[
    "[vdso]",
    "[vvar]",
    "[vvar_vclock]",
    "[vsyscall]",
    "[uprobes]",
];

/// Decides the backing of a mapping from its inode, name and sharing.
pub fn backing(inode: u64, name: &str) -> Backing {
    if SPECIAL.contains(&name) {
        Backing::Special
    } else if name == "/dev/zero (deleted)" || name.starts_with("/SYSV") {
        Backing::SharedAnonymous
    } else if inode == 0 {
        Backing::Anonymous
    } else {
        Backing::File
    }
}

fn hex(s: &str, what: &str) -> Result<u64, String> {
    u64::from_str_radix(s, 16).map_err(|_| format!("bad {what} {s:?}"))
}

/// Parses one `maps` line (also the header lines of `smaps`).
pub fn parse_line(line: &str) -> Result<Vma, String> {
    // start-end perms offset dev inode [name]; the name may contain spaces.
    let mut rest = line;
    let mut next = || -> Result<&str, String> {
        let t = rest.trim_start_matches(' ');
        let end = t.find(' ').unwrap_or(t.len());
        if end == 0 {
            return Err(format!("truncated maps line {line:?}"));
        }
        let (tok, r) = t.split_at(end);
        rest = r;
        Ok(tok)
    };
    let range = next()?;
    let perms = next()?.to_owned();
    let offset = next()?;
    let dev = next()?.to_owned();
    let inode = next()?;
    let name = rest.trim_start_matches(' ').to_owned();
    let (start, end) = range
        .split_once('-')
        .ok_or_else(|| format!("bad address range {range:?}"))?;
    let (start, end) = (hex(start, "start")?, hex(end, "end")?);
    if end < start {
        return Err(format!("range {range:?} ends before it starts"));
    }
    if perms.len() != 4 {
        return Err(format!("bad permissions {perms:?}"));
    }
    if !dev.contains(':') {
        return Err(format!("bad device {dev:?}"));
    }
    let inode: u64 = inode.parse().map_err(|_| format!("bad inode {inode:?}"))?;
    Ok(Vma {
        start,
        end,
        perms,
        offset: hex(offset, "offset")?,
        dev,
        inode,
        backing: backing(inode, &name),
        name,
        vm_flags: Vec::new(),
        present_pages: 0,
        swapped_pages: 0,
        populated: Vec::new(),
    })
}

/// Parses the whole of `maps`.
pub fn parse_maps(text: &str) -> Result<Vec<Vma>, String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(parse_line)
        .collect()
}

/// The `VmFlags` of a mapping as far as `maps` tells them: `rd`/`wr`/`ex`/
/// `sh` from the permissions, `gd` for the main stack (the one mapping that
/// grows down in practice).
pub fn derived_flags(v: &Vma) -> Vec<String> {
    let p = v.perms.as_bytes();
    let mut f = Vec::new();
    for (i, c, name) in [
        (0, b'r', "rd"),
        (1, b'w', "wr"),
        (2, b'x', "ex"),
        (3, b's', "sh"),
    ] {
        if p.get(i) == Some(&c) {
            f.push(name.to_owned());
        }
    }
    if v.name == "[stack]" {
        f.push("gd".to_owned());
    }
    f
}

/// True for a `smaps` header line (as opposed to a `Key: value` line).
fn is_header(line: &str) -> bool {
    let first = line.split(' ').next().unwrap_or("");
    !first.ends_with(':') && first.contains('-')
}

/// Parses the whole of `smaps`: each mapping with its `VmFlags`.
pub fn parse_smaps(text: &str) -> Result<Vec<Vma>, String> {
    let mut out: Vec<Vma> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if is_header(line) {
            out.push(parse_line(line)?);
        } else if let Some(flags) = line.strip_prefix("VmFlags:") {
            let vma = out
                .last_mut()
                .ok_or_else(|| "VmFlags before the first mapping".to_owned())?;
            vma.vm_flags = flags.split_whitespace().map(str::to_owned).collect();
        } else if out.is_empty() {
            return Err(format!("field line before the first mapping: {line:?}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let v = parse_line(
            "55d4c5a0f000-55d4c5a11000 r-xp 00002000 fd:01 1310730                    /usr/bin/my prog (deleted)",
        )
        .unwrap();
        assert_eq!(v.start, 0x55d4c5a0f000);
        assert_eq!(v.end, 0x55d4c5a11000);
        assert_eq!(v.len(), 0x2000);
        assert_eq!(v.perms, "r-xp");
        assert!(v.readable() && !v.writable() && v.executable() && !v.shared());
        assert_eq!(v.offset, 0x2000);
        assert_eq!(v.dev, "fd:01");
        assert_eq!(v.inode, 1310730);
        assert_eq!(v.name, "/usr/bin/my prog (deleted)");
        assert_eq!(v.backing, Backing::File);

        let v = parse_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(v.name, "");
        assert_eq!(v.backing, Backing::Anonymous);
        let v = parse_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0").unwrap();
        assert_eq!(v.name, "");
        let v = parse_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0    [stack]").unwrap();
        assert_eq!(
            (v.name.as_str(), v.backing),
            ("[stack]", Backing::Anonymous)
        );
        let v = parse_line("7ffd1000-7ffd2000 r-xp 00000000 00:00 0    [vdso]").unwrap();
        assert_eq!(v.backing, Backing::Special);
        let v = parse_line("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]")
            .unwrap();
        assert_eq!(v.start, 0xffffffffff600000);
        assert_eq!(v.backing, Backing::Special);
        let v = parse_line("7f00-8f00 rw-s 00000000 00:01 2055 /dev/zero (deleted)").unwrap();
        assert_eq!(v.backing, Backing::SharedAnonymous);
        assert!(v.shared());
        let v = parse_line("7f00-8f00 rw-s 00000000 00:01 32769 /SYSV00000000 (deleted)").unwrap();
        assert_eq!(v.backing, Backing::SharedAnonymous);
        let v = parse_line("7f00-8f00 rw-p 00000000 00:00 0 [anon:my name]").unwrap();
        assert_eq!(
            (v.name.as_str(), v.backing),
            ("[anon:my name]", Backing::Anonymous)
        );
    }

    #[test]
    fn backing_rules() {
        assert_eq!(backing(0, ""), Backing::Anonymous);
        assert_eq!(backing(0, "[heap]"), Backing::Anonymous);
        assert_eq!(backing(0, "[vvar_vclock]"), Backing::Special);
        assert_eq!(backing(0, "[uprobes]"), Backing::Special);
        assert_eq!(backing(5, "/memfd:x (deleted)"), Backing::File);
        assert_eq!(backing(5, "/lib/libc.so.6"), Backing::File);
    }

    #[test]
    fn rejects_bad_lines() {
        for l in [
            "",
            "zz-10 rw-p 0 00:00 0",
            "10-zz rw-p 0 00:00 0",
            "20-10 rw-p 0 00:00 0",
            "10 rw-p 0 00:00 0",
            "10-20 rw 0 00:00 0",
            "10-20 rw-p x 00:00 0",
            "10-20 rw-p 0 0000 0",
            "10-20 rw-p 0 00:00 x",
            "10-20 rw-p 0 00:00",
        ] {
            assert!(parse_line(l).is_err(), "{l:?} accepted");
        }
    }

    #[test]
    fn derives_flags_from_maps() {
        let stack = parse_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]").unwrap();
        assert_eq!(derived_flags(&stack), ["rd", "wr", "gd"]);
        let shared = parse_line("1000-2000 r-xs 00000000 fd:01 42 /x").unwrap();
        assert_eq!(derived_flags(&shared), ["rd", "ex", "sh"]);
        let none = parse_line("1000-2000 ---p 00000000 00:00 0").unwrap();
        assert!(derived_flags(&none).is_empty());
    }

    #[test]
    fn parses_smaps_with_vmflags() {
        let text = "\
00400000-00401000 r-xp 00000000 fd:01 42                         /bin/x
Size:                  4 kB
Rss:                   4 kB
VmFlags: rd ex mr mw me dw sd
7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
THPeligible:    0
VmFlags: rd wr mr mw me gd ac
7ffe1000-7ffe2000 rw-p 00000000 00:00 0
Size:                  4 kB
";
        let v = parse_smaps(text).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].vm_flags, ["rd", "ex", "mr", "mw", "me", "dw", "sd"]);
        assert_eq!(v[1].name, "[stack]");
        assert!(v[1].vm_flags.iter().any(|f| f == "gd"));
        assert!(v[2].vm_flags.is_empty());
        assert!(parse_smaps("VmFlags: rd\n").is_err());
        assert!(parse_smaps("Size: 4 kB\n").is_err());
        assert!(parse_smaps("").unwrap().is_empty());
    }

    #[test]
    fn real_smaps_of_self_agrees_with_maps() {
        let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap()).unwrap();
        let smaps = parse_smaps(&std::fs::read_to_string("/proc/self/smaps").unwrap()).unwrap();
        assert!(maps.iter().any(|v| v.name == "[stack]"));
        assert!(smaps.iter().all(|v| !v.vm_flags.is_empty()));
        assert!(smaps.iter().any(|v| v.name == "[stack]"));
    }
}

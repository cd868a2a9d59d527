//! `/proc/PID/fdinfo/N` and the classification of `/proc/PID/fd/N` link
//! targets.

use serde::{Deserialize, Serialize};

/// What kind of object a file descriptor refers to, from its link target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "name")]
pub enum FdKind {
    /// A regular file (or one that was unlinked: see `deleted`).
    File,
    Directory,
    Pipe,
    Socket,
    /// `anon_inode:NAME`, e.g. `[eventfd]`, `[eventpoll]`, `inotify`.
    AnonInode(String),
    /// A terminal: `/dev/pts/N`, `/dev/ttyN`, `/dev/tty`, `/dev/console`.
    Tty,
    /// Any other device under `/dev`.
    Device,
    /// `memfd:NAME`.
    Memfd(String),
    /// Anything else (e.g. `net:[...]`, `mnt:[...]`).
    Other,
}

/// Classifies a `/proc/PID/fd/N` link target. `is_dir` comes from a stat of
/// the target when the caller has one.
pub fn classify(target: &str, is_dir: bool) -> FdKind {
    if target.starts_with("pipe:[") {
        FdKind::Pipe
    } else if target.starts_with("socket:[") {
        FdKind::Socket
    } else if let Some(name) = target.strip_prefix("anon_inode:") {
        FdKind::AnonInode(name.to_owned())
    } else if let Some(rest) = target.strip_prefix("/memfd:") {
        let name = rest.strip_suffix(" (deleted)").unwrap_or(rest);
        FdKind::Memfd(name.to_owned())
    } else if target.starts_with("/dev/pts/")
        || target == "/dev/tty"
        || target == "/dev/console"
        || target == "/dev/ptmx"
        || target
            .strip_prefix("/dev/tty")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        FdKind::Tty
    } else if target.starts_with("/dev/") {
        FdKind::Device
    } else if target.starts_with('/') {
        if is_dir {
            FdKind::Directory
        } else {
            FdKind::File
        }
    } else {
        FdKind::Other
    }
}

/// Fields of an `fdinfo` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    pub pos: u64,
    /// Open flags (`O_*`), printed in octal by the kernel.
    pub flags: u32,
    pub mnt_id: Option<u64>,
    pub ino: Option<u64>,
}

/// Parses the text of `/proc/PID/fdinfo/N`.
pub fn parse_fdinfo(text: &str) -> Result<FdInfo, String> {
    let mut info = FdInfo::default();
    let (mut have_pos, mut have_flags) = (false, false);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let bad = || format!("fdinfo {key}: bad value {value:?}");
        match key {
            "pos" => {
                info.pos = value.parse().map_err(|_| bad())?;
                have_pos = true;
            }
            "flags" => {
                info.flags = u32::from_str_radix(value, 8).map_err(|_| bad())?;
                have_flags = true;
            }
            "mnt_id" => info.mnt_id = Some(value.parse().map_err(|_| bad())?),
            "ino" => info.ino = Some(value.parse().map_err(|_| bad())?),
            _ => {}
        }
    }
    if !have_pos || !have_flags {
        return Err("fdinfo lacks pos or flags".into());
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_targets() {
        assert_eq!(classify("pipe:[1234]", false), FdKind::Pipe);
        assert_eq!(classify("socket:[99]", false), FdKind::Socket);
        assert_eq!(
            classify("anon_inode:[eventfd]", false),
            FdKind::AnonInode("[eventfd]".into())
        );
        assert_eq!(
            classify("anon_inode:inotify", false),
            FdKind::AnonInode("inotify".into())
        );
        assert_eq!(
            classify("/memfd:shm (deleted)", false),
            FdKind::Memfd("shm".into())
        );
        assert_eq!(classify("/dev/pts/3", false), FdKind::Tty);
        assert_eq!(classify("/dev/tty", false), FdKind::Tty);
        assert_eq!(classify("/dev/tty1", false), FdKind::Tty);
        assert_eq!(classify("/dev/ttyS0", false), FdKind::Tty);
        assert_eq!(classify("/dev/console", false), FdKind::Tty);
        assert_eq!(classify("/dev/null", false), FdKind::Device);
        assert_eq!(classify("/dev/ttyx/y", false), FdKind::Device);
        assert_eq!(classify("/tmp/a file (deleted)", false), FdKind::File);
        assert_eq!(classify("/tmp", true), FdKind::Directory);
        assert_eq!(classify("net:[4026531840]", false), FdKind::Other);
        assert_eq!(classify("", false), FdKind::Other);
    }

    #[test]
    fn parses_fdinfo() {
        let i = parse_fdinfo("pos:\t12345\nflags:\t02100002\nmnt_id:\t27\nino:\t6789\n").unwrap();
        assert_eq!(i.pos, 12345);
        assert_eq!(i.flags, 0o2100002);
        assert_eq!(i.mnt_id, Some(27));
        assert_eq!(i.ino, Some(6789));
        // eventfd adds more keys; they are ignored.
        let i = parse_fdinfo(
            "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1\neventfd-count:    5\neventfd-id: 3\n",
        )
        .unwrap();
        assert_eq!((i.pos, i.flags), (0, 2));
    }

    #[test]
    fn fdinfo_errors() {
        assert!(parse_fdinfo("").is_err());
        assert!(parse_fdinfo("pos:\t1\n").is_err());
        assert!(parse_fdinfo("pos:\tx\nflags:\t0\n").is_err());
        assert!(parse_fdinfo("pos:\t1\nflags:\t9\n").is_err());
        let i = parse_fdinfo("pos:\t1\nflags:\t0\n").unwrap();
        assert_eq!(i.mnt_id, None);
    }

    #[test]
    fn real_fdinfo_of_self() {
        let text = std::fs::read_to_string("/proc/self/fdinfo/0").unwrap();
        parse_fdinfo(&text).unwrap();
    }
}

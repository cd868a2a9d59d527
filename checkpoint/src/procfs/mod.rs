//! `/proc` access. The submodules are pure parsers over the text or bytes
//! of one file each; this module only does the reading.

pub mod auxv;
pub mod fd;
pub mod maps;
pub mod stat;
pub mod status;

use crate::Error;
use std::io::{self, Read};

/// Reads a whole `/proc` file (they report size 0, so read to EOF).
pub fn read_bytes(path: &str) -> Result<Vec<u8>, Error> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::proc(path, e))?;
    let mut buf = Vec::with_capacity(4096);
    f.read_to_end(&mut buf).map_err(|e| Error::proc(path, e))?;
    Ok(buf)
}

pub fn read_string(path: &str) -> Result<String, Error> {
    let b = read_bytes(path)?;
    String::from_utf8(b).map_err(|_| Error::parse(path, "not UTF-8"))
}

/// `readlink` of a `/proc` symlink, lossily converted to a string.
pub fn read_link(path: &str) -> Result<String, Error> {
    std::fs::read_link(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| Error::proc(path, e))
}

/// Numeric entries of a `/proc` directory (`task/`, `fd/`), sorted.
pub fn list_numeric(path: &str) -> io::Result<Vec<i32>> {
    let mut out: Vec<i32> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect();
    out.sort_unstable();
    Ok(out)
}

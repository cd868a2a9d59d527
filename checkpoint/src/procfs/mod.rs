//! `/proc` access. The submodules are pure parsers over the text or bytes
//! of one file each; this module only does the reading.

pub mod auxv;
pub mod fd;
pub mod maps;
pub mod stat;
pub mod status;

use crate::Error;
use std::cell::RefCell;
use std::io::{self, Read};

thread_local! {
    /// Reused read buffer: fresh memory costs page faults, which dominate
    /// small reads on some machines (about 10 us each in a nested VM).
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Buffers larger than this are not kept between reads.
const KEEP: usize = 4 << 20;

/// Reads a whole `/proc` file into a reused buffer and passes it to `f`.
pub fn with_bytes<R>(path: &str, f: impl FnOnce(&[u8]) -> R) -> Result<R, Error> {
    let read = |buf: &mut Vec<u8>| -> Result<(), Error> {
        buf.clear();
        let mut file = std::fs::File::open(path).map_err(|e| Error::proc(path, e))?;
        file.read_to_end(buf).map_err(|e| Error::proc(path, e))?;
        Ok(())
    };
    BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            read(&mut buf)?;
            let r = f(&buf);
            if buf.capacity() > KEEP {
                *buf = Vec::new();
            }
            Ok(r)
        }
        // Re-entered from `f`: use a fresh buffer.
        Err(_) => {
            let mut buf = Vec::new();
            read(&mut buf)?;
            Ok(f(&buf))
        }
    })
}

/// Like [`with_bytes`] for text files.
pub fn with_text<R>(path: &str, f: impl FnOnce(&str) -> R) -> Result<R, Error> {
    with_bytes(path, |b| std::str::from_utf8(b).map(f))?
        .map_err(|_| Error::parse(path, "not UTF-8"))
}

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

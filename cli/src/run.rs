//! `popcorn run`: start a program through the agent with this terminal's
//! stdio, forward signals to it, and exit with its status.

use crate::client::Target;
use anyhow::{anyhow, bail, Context, Result};
use popcorn_proto::control::{encode_line, Reply, Request, RunRequest};
use popcorn_proto::fdpass::send_with_fds;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Signals forwarded to the program.
const FORWARDED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Finds PROGRAM as a shell would: a path if it has a slash, else on $PATH.
/// Errors carry the shell's exit code (127 not found, 126 not executable).
/// A program built with `popcorn build` may be named without its ISA
/// suffix (`./app` for `./app.x86_64` next to `./app.popcorn.json`).
pub fn resolve_program(program: &str) -> Result<PathBuf, (i32, String)> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        let given = PathBuf::from(program);
        let built = PathBuf::from(format!("{program}.{}", popcorn_isa::Isa::native()));
        let meta = PathBuf::from(format!("{program}.popcorn.json"));
        if !given.exists() && meta.exists() {
            vec![built]
        } else {
            vec![given]
        }
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    let mut not_executable = None;
    for c in candidates {
        match std::fs::metadata(&c) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
                return std::path::absolute(&c).map_err(|e| (126, format!("{program}: {e}")));
            }
            Ok(_) => not_executable = Some(c),
            Err(_) => {}
        }
    }
    match not_executable {
        Some(c) => Err((
            126,
            format!(
                "{}: permission denied (not an executable file)",
                c.display()
            ),
        )),
        None => Err((127, format!("{program}: command not found"))),
    }
}

/// Runs the program; returns the exit code `popcorn run` should exit with.
pub fn run(target: &Target, nodes: Vec<String>, program: &str, args: &[String]) -> Result<i32> {
    let path = match resolve_program(program) {
        Ok(p) => p,
        Err((code, message)) => {
            eprintln!("popcorn: {message}");
            return Ok(code);
        }
    };
    let request = Request::Run(RunRequest {
        program: path.to_string_lossy().into_owned(),
        argv: std::iter::once(program.to_owned())
            .chain(args.iter().cloned())
            .collect(),
        env: std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect(),
        cwd: std::env::current_dir()
            .context("the current directory is gone")?
            .to_string_lossy()
            .into_owned(),
        nodes,
    });
    // Signals are taken by a dedicated thread from here on.
    let forwarded = block_forwarded_signals();
    let mut client = target.connect()?;
    let stdio = stdio_fds()?;
    let fds: Vec<BorrowedFd<'_>> = stdio.iter().map(|f| f.as_fd()).collect();
    let line = encode_line(&request);
    let sent = send_with_fds(client.stream.as_fd(), &line, &fds).context("sending to the agent")?;
    client
        .stream
        .write_all(&line[sent..])
        .context("sending to the agent")?;
    drop(stdio);

    let signal_stream = client.stream.try_clone()?;
    std::thread::spawn(move || forward_signals(forwarded, signal_stream));
    loop {
        match client.recv()? {
            Some(Reply::Started { .. }) => {}
            Some(Reply::Exited { status }) => return Ok(status.shell_code()),
            Some(Reply::Error { message }) => bail!("{message}"),
            Some(other) => bail!("unexpected reply from the agent: {other:?}"),
            None => {
                return Err(anyhow!(
                "lost contact with the agent; the program may still be running (see `popcorn ps`)"
            ))
            }
        }
    }
}

/// Our stdin/stdout/stderr as owned duplicates (/dev/null for closed ones).
fn stdio_fds() -> Result<Vec<OwnedFd>> {
    let ours = [
        std::io::stdin().as_fd().try_clone_to_owned(),
        std::io::stdout().as_fd().try_clone_to_owned(),
        std::io::stderr().as_fd().try_clone_to_owned(),
    ];
    ours.into_iter()
        .map(|fd| match fd {
            Ok(fd) => Ok(fd),
            Err(_) => Ok(OwnedFd::from(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(Path::new("/dev/null"))?,
            )),
        })
        .collect()
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the forwarded signals in this (still single) thread and every
/// thread started after, so only `sigwait` sees them.
fn block_forwarded_signals() -> libc::sigset_t {
    let set = signal_set();
    // SAFETY: set is initialised; a null old set is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    set
}

fn forward_signals(set: libc::sigset_t, mut stream: UnixStream) {
    loop {
        let mut sig = 0;
        // SAFETY: set and sig are live locals.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        if stream
            .write_all(&encode_line(&Request::Signal { signal: sig }))
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_a_shell() {
        let sh = resolve_program("sh").unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(
            resolve_program("/bin/sh").unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(resolve_program("no-such-program-xyz").unwrap_err().0, 127);
        assert_eq!(resolve_program("./no/such/file").unwrap_err().0, 127);
        // A file that exists but is not executable.
        assert_eq!(resolve_program("/etc/passwd").unwrap_err().0, 126);
        // A directory is not a program.
        assert_eq!(resolve_program("/tmp").unwrap_err().0, 126);
    }
}

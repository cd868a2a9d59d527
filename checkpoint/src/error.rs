//! The crate's error type: one enum, every message names the process or
//! thread it is about and, where there is one, the OS error behind it.

use std::io;

/// Everything that can go wrong while freezing, capturing or injecting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("process {pid} does not exist")]
    NoSuchProcess { pid: i32 },

    #[error("{tid} is a thread of process {pid}, not a process")]
    NotAProcess { tid: i32, pid: i32 },

    #[error("process {pid} exited while it was being frozen")]
    ProcessExited { pid: i32 },

    #[error("thread {tid} exited while it was being controlled")]
    ThreadExited { tid: i32 },

    #[error("permission denied tracing {pid}: {source} (tracing needs root or CAP_SYS_PTRACE, and the Yama ptrace_scope setting may forbid it)")]
    PermissionDenied { pid: i32, source: io::Error },

    #[error("process {pid} (thread {tid}) is already traced by process {tracer}; detach the debugger or tracer first")]
    AlreadyTraced { pid: i32, tid: i32, tracer: i32 },

    #[error("cannot freeze process {pid}: it is the calling process")]
    SelfTrace { pid: i32 },

    #[error("thread {tid} of process {pid} did not stop within {secs} s (state {state}); it may be in an uninterruptible kernel wait")]
    StopTimeout {
        pid: i32,
        tid: i32,
        secs: u64,
        state: String,
    },

    #[error("ptrace {op} on thread {tid} failed: {source}")]
    Ptrace {
        op: &'static str,
        tid: i32,
        source: io::Error,
    },

    #[error("waiting for thread {tid} failed: {source}")]
    Wait { tid: i32, source: io::Error },

    #[error("thread {tid} reported an unexpected stop while {doing}: {what}")]
    UnexpectedStop {
        tid: i32,
        doing: &'static str,
        what: String,
    },

    #[error("cannot read {path}: {source}")]
    Proc { path: String, source: io::Error },

    #[error("cannot parse {what}: {detail}")]
    Parse { what: String, detail: String },

    #[error("reading {len} bytes at {addr:#x} in process {pid} failed: {source}")]
    Memory {
        pid: i32,
        addr: u64,
        len: usize,
        source: io::Error,
    },

    #[error("no syscall instruction found in any executable mapping of process {pid}")]
    NoSyscallInstruction { pid: i32 },

    #[error("injected syscall {nr} in thread {tid} failed: {errno}")]
    InjectedSyscall { tid: i32, nr: i64, errno: io::Error },

    #[error("thread {tid} is not part of frozen process {pid}")]
    UnknownThread { pid: i32, tid: i32 },

    #[error("PID {pid} is already taken in the target PID namespace")]
    PidTaken { pid: i32 },

    #[error("cannot restore process {pid}: {detail}")]
    Restore { pid: i32, detail: String },

    #[error("emulated process {pid}: {source}")]
    Gdb {
        pid: i32,
        source: crate::gdb::GdbError,
    },

    #[error("process {pid}: {detail}")]
    MigrationPoint { pid: i32, detail: String },

    #[error("{what} on process {pid} failed: {source}")]
    Os {
        what: &'static str,
        pid: i32,
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn proc(path: impl Into<String>, source: io::Error) -> Error {
        Error::Proc {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse(what: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Parse {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn ptrace(op: &'static str, tid: i32, source: io::Error) -> Error {
        Error::Ptrace { op, tid, source }
    }
}

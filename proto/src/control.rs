//! Messages on an agent's control socket: one JSON object per line.
//!
//! A client sends one [`Request`] and reads [`Reply`] lines. `run` keeps the
//! connection open: the client may send `signal` requests and the agent ends
//! with `exited`. The client's stdin/stdout/stderr travel with the `run` line
//! as SCM_RIGHTS ancillary data.

use crate::config::Isa;
use serde::{Deserialize, Serialize};

/// Longest control line accepted, in bytes.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Cluster members and their health.
    Nodes,
    /// Processes managed by this agent.
    Ps,
    /// Live figures of every node and process of the cluster.
    Top,
    /// Start a program; stdio fds ride along with this line.
    Run(RunRequest),
    /// Forward a signal to the program started on this connection.
    Signal { signal: i32 },
    /// Send a signal to a managed or owned process.
    Kill { pid: i32, signal: i32 },
    /// Stop every thread of a process until `thaw`.
    Freeze { pid: i32 },
    /// Resume a process stopped by `freeze`.
    Thaw { pid: i32 },
    /// Capture a process's state (freezing it briefly if it runs).
    Inspect { pid: i32 },
    /// Move a running process to another node (live, post-copy).
    Migrate(MigrateRequest),
}

/// Which process to move where, and how; the agents forward it unchanged
/// to the node the process runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateRequest {
    pub pid: i32,
    /// Destination node.
    pub to: String,
    /// Fetch pages only on fault (for measuring faults).
    #[serde(default)]
    pub no_push: bool,
    /// Answer once every page has reached the destination.
    #[serde(default)]
    pub wait: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Absolute path of the executable, resolved by the client.
    pub program: String,
    /// argv, including argv[0].
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    /// Nodes that may host the process's threads; empty means any.
    #[serde(default)]
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Error { message: String },
    Nodes { nodes: Vec<NodeStatus> },
    Ps { processes: Vec<ProcessInfo> },
    Started { pid: i32 },
    Exited { status: ExitStatus },
    Frozen { pid: i32, threads: usize },
    Thawed { pid: i32 },
    Inspect { state: serde_json::Value },
    Migrated(MigrationReport),
    Cluster(crate::monitor::ClusterView),
    Done,
}

/// What a migration did, as `popcorn migrate` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    pub pid: i32,
    pub from: String,
    pub to: String,
    pub threads: usize,
    /// Freeze at the origin to running at the destination, microseconds.
    pub downtime_us: u64,
    /// Bytes sent with the process state before it resumed (state and the
    /// few pages of private file mappings).
    pub bytes_before_resume: u64,
    /// Pages the destination will fetch on demand or in the background.
    pub pages_at_origin: u64,
    /// Pages the destination fills with zeros locally (never touched).
    pub pages_zero: u64,
    /// With `wait`: milliseconds from the resume until every page had
    /// reached the destination (on demand and in the background) and the
    /// origin had released its copy.
    #[serde(default)]
    pub transfer_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// The node answering.
    Local,
    /// Authenticated link with recent heartbeats.
    Up,
    /// No link, or heartbeats stopped.
    Down,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: String,
    pub isa: Isa,
    pub health: Health,
    /// Latest heartbeat round trip, microseconds.
    pub rtt_us: Option<f64>,
    /// Milliseconds since the last heartbeat answer.
    pub last_seen_ms: Option<u64>,
    /// Why the link is down, when known.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessStateKind {
    Running,
    Frozen,
    Exited,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: i32,
    pub uid: u32,
    pub argv: Vec<String>,
    /// Node that started it and keeps its authority.
    pub origin: String,
    /// Node where its threads run now.
    pub node: String,
    /// Nodes allowed to host it.
    pub nodes: Vec<String>,
    pub state: ProcessStateKind,
    pub threads: usize,
    pub exit: Option<ExitStatus>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The shell's convention: the code, or 128 + signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    /// Decodes a `waitpid` status word.
    pub fn from_wait_status(status: i32) -> Option<ExitStatus> {
        if status & 0x7f == 0 {
            Some(ExitStatus::Code((status >> 8) & 0xff))
        } else if ((status & 0x7f) + 1) as i8 >= 2 {
            Some(ExitStatus::Signal(status & 0x7f))
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("control message longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("malformed control message: {0}")]
    Json(#[from] serde_json::Error),
}

/// One message as a newline-terminated JSON line.
pub fn encode_line<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain data types cannot fail.
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Parses one line (with or without its newline).
pub fn decode_line<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, LineError> {
    if line.len() > MAX_LINE {
        return Err(LineError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    Ok(serde_json::from_slice(line)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let reqs = [
            Request::Nodes,
            Request::Ps,
            Request::Top,
            Request::Run(RunRequest {
                program: "/bin/echo".into(),
                argv: vec!["echo".into(), "hi".into()],
                env: vec![("A".into(), "b".into())],
                cwd: "/".into(),
                nodes: vec!["a".into()],
            }),
            Request::Signal { signal: 2 },
            Request::Kill { pid: 7, signal: 9 },
            Request::Freeze { pid: 1 },
            Request::Thaw { pid: 1 },
            Request::Inspect { pid: 1 },
            Request::Migrate(MigrateRequest {
                pid: 2,
                to: "b".into(),
                no_push: false,
                wait: true,
            }),
        ];
        for r in reqs {
            let line = encode_line(&r);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(decode_line::<Request>(&line).unwrap(), r);
        }
        let reply = Reply::Exited {
            status: ExitStatus::Signal(9),
        };
        assert_eq!(decode_line::<Reply>(&encode_line(&reply)).unwrap(), reply);
    }

    #[test]
    fn wire_form_is_stable() {
        assert_eq!(
            String::from_utf8(encode_line(&Request::Freeze { pid: 5 })).unwrap(),
            "{\"op\":\"freeze\",\"pid\":5}\n"
        );
        let migrate = Request::Migrate(MigrateRequest {
            pid: 5,
            to: "b".into(),
            no_push: true,
            wait: false,
        });
        assert_eq!(
            String::from_utf8(encode_line(&migrate)).unwrap(),
            "{\"op\":\"migrate\",\"pid\":5,\"to\":\"b\",\"no_push\":true,\"wait\":false}\n"
        );
        assert_eq!(
            decode_line::<Request>(b"{\"op\":\"migrate\",\"pid\":5,\"to\":\"b\"}").unwrap(),
            Request::Migrate(MigrateRequest {
                pid: 5,
                to: "b".into(),
                no_push: false,
                wait: false,
            })
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode_line::<Request>(b"{\"op\":\"explode\"}").is_err());
        assert!(decode_line::<Request>(b"\xff\xfe").is_err());
        assert!(decode_line::<Request>(b"").is_err());
        let long = vec![b' '; MAX_LINE + 1];
        assert!(matches!(
            decode_line::<Request>(&long),
            Err(LineError::TooLong)
        ));
    }

    #[test]
    fn wait_status_decoding() {
        assert_eq!(ExitStatus::from_wait_status(0), Some(ExitStatus::Code(0)));
        assert_eq!(
            ExitStatus::from_wait_status(3 << 8),
            Some(ExitStatus::Code(3))
        );
        assert_eq!(ExitStatus::from_wait_status(9), Some(ExitStatus::Signal(9)));
        assert_eq!(
            ExitStatus::from_wait_status(0x80 | 11),
            Some(ExitStatus::Signal(11))
        );
        // Stopped (0x7f) is not an exit.
        assert_eq!(ExitStatus::from_wait_status((19 << 8) | 0x7f), None);
        assert_eq!(ExitStatus::Signal(15).shell_code(), 143);
        assert_eq!(ExitStatus::Code(3).shell_code(), 3);
    }
}

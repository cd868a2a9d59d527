//! Talking to the agent without stalling the screen: a thread that asks for
//! a [`ClusterView`] every interval, and one thread per migration, each on
//! its own connection, all reporting through one channel.

use crate::client::Target;
use popcorn_proto::control::{MigrateRequest, MigrationReport, Reply, Request};
use popcorn_proto::monitor::ClusterView;
use std::sync::mpsc::Sender;
use std::thread;
use std::time::{Duration, Instant};

/// What the agent threads report.
#[derive(Debug)]
pub enum Update {
    /// A refresh: the view, or why it could not be had.
    View(Result<ClusterView, String>),
    /// The answer to a migration sent from the picker.
    Migrated {
        pid: i32,
        to: String,
        outcome: Result<MigrationReport, String>,
    },
}

/// One `Request::Top`.
pub fn fetch(target: &Target) -> anyhow::Result<ClusterView> {
    match target.call(&Request::Top)? {
        Reply::Cluster(view) => Ok(view),
        other => anyhow::bail!("unexpected reply from the agent: {other:?}"),
    }
}

/// Refreshes every `interval` until the receiver goes away. A failed
/// refresh is reported and retried at the next tick.
pub fn spawn_refresher(target: Target, interval: Duration, tx: Sender<Update>) {
    thread::spawn(move || loop {
        let started = Instant::now();
        let view = fetch(&target).map_err(|e| format!("{e:#}"));
        if tx.send(Update::View(view)).is_err() {
            return;
        }
        thread::sleep(interval.saturating_sub(started.elapsed()));
    });
}

/// Sends one migration (not waiting for the pages) and reports its outcome.
pub fn spawn_migration(target: Target, pid: i32, to: String, tx: Sender<Update>) {
    thread::spawn(move || {
        let request = Request::Migrate(MigrateRequest {
            pid,
            to: to.clone(),
            no_push: false,
            wait: false,
        });
        let outcome = match target.call(&request) {
            Ok(Reply::Migrated(report)) => Ok(report),
            Ok(other) => Err(format!("unexpected reply from the agent: {other:?}")),
            Err(e) => Err(format!("{e:#}")),
        };
        // The monitor may have quit meanwhile.
        let _ = tx.send(Update::Migrated { pid, to, outcome });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use popcorn_proto::control::{decode_line, encode_line};
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::sync::mpsc;

    fn socket_path(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("popcorn-top-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    fn target(path: &std::path::Path) -> Target {
        Target {
            config: None,
            node: Some("a".into()),
            socket: Some(path.to_owned()),
        }
    }

    fn empty_view() -> ClusterView {
        ClusterView {
            node: "a".into(),
            at_unix_ms: 5,
            nodes: vec![],
            processes: vec![],
            migrations: vec![],
        }
    }

    /// A stand-in agent answering `connections` requests with `answer`.
    fn fake_agent(
        path: &std::path::Path,
        connections: usize,
        answer: fn(Request) -> Reply,
    ) -> thread::JoinHandle<Vec<Request>> {
        let listener = UnixListener::bind(path).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        thread::spawn(move || {
            // Gives up after a while so a failing test cannot hang the run.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut seen = Vec::new();
            while seen.len() < connections && Instant::now() < deadline {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                stream.set_nonblocking(false).expect("blocking");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = Vec::new();
                reader.read_until(b'\n', &mut line).expect("read");
                let request: Request = decode_line(&line).expect("request");
                let mut stream = stream;
                stream
                    .write_all(&encode_line(&answer(request.clone())))
                    .expect("write");
                seen.push(request);
            }
            seen
        })
    }

    #[test]
    fn fetch_asks_for_top_and_rejects_other_replies() {
        let path = socket_path("fetch");
        let agent = fake_agent(&path, 1, |r| match r {
            Request::Top => Reply::Cluster(empty_view()),
            _ => Reply::Done,
        });
        assert_eq!(fetch(&target(&path)).ok(), Some(empty_view()));
        assert!(agent.join().is_ok());
        let _ = std::fs::remove_file(&path);
        let agent2 = fake_agent(&path, 1, |_| Reply::Done);
        let e = fetch(&target(&path)).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("unexpected reply")));
        assert_eq!(agent2.join().ok(), Some(vec![Request::Top]));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn refresher_reports_failures_and_keeps_trying() {
        let path = socket_path("refresh");
        let (tx, rx) = mpsc::channel();
        spawn_refresher(target(&path), Duration::from_millis(20), tx);
        // Nobody listens yet: failures arrive, the thread goes on.
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Update::View(Err(e))) => assert!(e.contains("no popcorn agent"), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        let agent = fake_agent(&path, 1, |_| Reply::Cluster(empty_view()));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = None;
        while Instant::now() < deadline {
            if let Ok(Update::View(Ok(v))) = rx.recv_timeout(Duration::from_millis(100)) {
                got = Some(v);
                break;
            }
        }
        assert_eq!(got, Some(empty_view()));
        drop(rx);
        assert!(agent.join().is_ok());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn migration_sends_no_wait_and_reports_the_agents_error() {
        let path = socket_path("migrate");
        let agent = fake_agent(&path, 1, |_| Reply::Error {
            message: "process 7 is frozen".into(),
        });
        let (tx, rx) = mpsc::channel();
        spawn_migration(target(&path), 7, "b".into(), tx);
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Update::Migrated { pid, to, outcome }) => {
                assert_eq!((pid, to.as_str()), (7, "b"));
                assert_eq!(outcome, Err("process 7 is frozen".into()));
            }
            other => panic!("expected the outcome, got {other:?}"),
        }
        assert_eq!(
            agent.join().ok(),
            Some(vec![Request::Migrate(MigrateRequest {
                pid: 7,
                to: "b".into(),
                no_push: false,
                wait: false
            })])
        );
        let _ = std::fs::remove_file(&path);
    }
}

//! Talking to the agent without stalling the screen: a thread that asks for
//! a [`ClusterView`] every interval, and one thread per migration, each on
//! its own connection, all reporting through one channel.

use crate::client::Target;
use popcorn_proto::control::{MigrationReport, Reply, Request};
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
        let request = Request::Migrate {
            pid,
            to: to.clone(),
            no_push: false,
            wait: false,
        };
        let outcome = match target.call(&request) {
            Ok(Reply::Migrated(report)) => Ok(report),
            Ok(other) => Err(format!("unexpected reply from the agent: {other:?}")),
            Err(e) => Err(format!("{e:#}")),
        };
        // The monitor may have quit meanwhile.
        let _ = tx.send(Update::Migrated { pid, to, outcome });
    });
}

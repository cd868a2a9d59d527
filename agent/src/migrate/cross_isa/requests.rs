//! Popcorn-compatible `migrate(nid)` called by a program: the runtime
//! stores the node id in `__popcorn_migrate_target` and waits at migration
//! points until it changes; the agent, which set `__popcorn_agent_present`
//! when it started the program, polls that word in every `popcorn build`
//! program running here and moves the program to node `nid` (the cluster
//! file's order, from 0). The node it lands on sees its own id there and
//! clears the word, which lets `migrate()` return; so does a refusal, with
//! a warning in the log, and the program goes on where it is.

use crate::migrate::{lock, Migrations};
use popcorn_checkpoint::xisa;
use popcorn_isa::App;
use popcorn_proto::control::{MigrateRequest, ProcessStateKind};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How often the programs' request words are read.
const POLL: Duration = Duration::from_millis(20);
/// How often the set of programs to watch is refreshed (in polls).
const REFRESH: u32 = 25;
/// Attempts to set `__popcorn_agent_present` in a starting program, 2 ms
/// apart.
const ENABLE_TRIES: u32 = 250;
/// `__popcorn_migrate_target` when nothing is asked.
const NONE: i32 = -1;

/// Writes a C `int` into process `pid`.
fn write_int(pid: i32, addr: u64, v: i32) -> Result<(), String> {
    xisa::write_memory(pid, addr, &v.to_le_bytes()).map_err(|e| e.to_string())
}

impl Migrations {
    /// Tells a program started here, if `popcorn build` made it, that an
    /// agent serves its `migrate()` calls.
    pub fn serve_migrate_calls(&self, pid: i32, program: &str) {
        let Ok(app) = App::for_executable(std::path::Path::new(program)) else {
            return;
        };
        let Ok(addr) = app.runtime_symbol("__popcorn_agent_present") else {
            return;
        };
        tokio::spawn(async move {
            // The exec may still be mapping the program's segments.
            let mut last = String::new();
            for _ in 0..ENABLE_TRIES {
                match write_int(pid, addr, 1) {
                    Ok(()) => return,
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            warn!(pid, "cannot enable migrate() in the program: {last}");
        });
    }

    /// Polls the `migrate()` requests of the programs running here.
    pub(in crate::migrate) fn watch_migrate_calls(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            // pid → address of its request word (None: not a popcorn build).
            let mut watched: HashMap<i32, Option<u64>> = HashMap::new();
            let busy: Arc<std::sync::Mutex<HashSet<i32>>> = Arc::default();
            let mut round = 0u32;
            loop {
                tokio::time::sleep(POLL).await;
                if round.is_multiple_of(REFRESH) {
                    let here: HashSet<i32> = me
                        .table
                        .list(&me.node)
                        .into_iter()
                        .filter(|p| p.node == me.node && p.state == ProcessStateKind::Running)
                        .map(|p| p.pid)
                        .collect();
                    watched.retain(|pid, _| here.contains(pid));
                    for pid in here {
                        watched.entry(pid).or_insert_with(|| {
                            me.app_of(pid)
                                .and_then(|a| a.runtime_symbol("__popcorn_migrate_target"))
                                .ok()
                        });
                    }
                }
                round = round.wrapping_add(1);
                for (&pid, &addr) in &watched {
                    let Some(addr) = addr else { continue };
                    // Only where it runs (not a frozen copy it left here).
                    let runs_here = me
                        .table
                        .info(pid)
                        .is_some_and(|i| i.node == me.node && i.state == ProcessStateKind::Running);
                    if !runs_here {
                        continue;
                    }
                    let Ok(word) = xisa::read_memory(pid, addr, 4) else {
                        continue;
                    };
                    let nid = i32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                    if nid == NONE || !lock(&busy).insert(pid) {
                        continue;
                    }
                    let me = me.clone();
                    let busy = busy.clone();
                    tokio::spawn(async move {
                        me.migrate_call(pid, addr, nid).await;
                        lock(&busy).remove(&pid);
                    });
                }
            }
        });
    }

    /// Serves one `migrate(nid)` of program `pid`.
    async fn migrate_call(self: &Arc<Self>, pid: i32, addr: u64, nid: i32) {
        let to = usize::try_from(nid)
            .ok()
            .and_then(|i| self.peers.node_name_at(i));
        let outcome = match to {
            Some(to) if to == self.node => Ok(()),
            Some(to) => {
                info!(pid, nid, %to, "the program asked to migrate");
                let req = MigrateRequest {
                    pid,
                    to: to.clone(),
                    no_push: false,
                    wait: false,
                };
                match self.migrate(&req).await {
                    // It runs there now; that node clears the request.
                    Ok(_) => return,
                    Err(e) => Err(e),
                }
            }
            None => Err(format!("migrate({nid}): the cluster has no node {nid}")),
        };
        if let Err(e) = outcome {
            warn!(pid, nid, "migrate() refused: {e}");
        }
        if let Err(e) = write_int(pid, addr, NONE) {
            warn!(pid, "clearing the program's migrate() request: {e}");
        }
    }
}

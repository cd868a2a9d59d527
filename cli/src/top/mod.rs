//! `popcorn top`: a live monitor of the cluster (nodes, processes, their
//! threads and DSM traffic, recent migrations), or one screen of it with
//! `--once` (as text, or as the agent's JSON with `--json`).
//!
//! Laid out like bpftop: [`state`] holds the pure UI state and its rules,
//! [`render`] draws a frame from it, [`agent`] talks to the agent from
//! background threads, [`term`] owns the terminal, and this module runs the
//! event loop that ties them together.

mod agent;
mod format;
mod history;
mod render;
mod state;
mod term;

use crate::client::Target;
use anyhow::{bail, Result};
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use state::{Action, App, Key};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Screen size of `--once` when stdout is not a terminal.
const ONCE_SIZE: (u16, u16) = (160, 48);

/// How long to wait for a key before looking for agent updates.
const TICK: Duration = Duration::from_millis(50);

#[derive(clap::Args)]
pub struct TopArgs {
    /// Milliseconds between refreshes.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    interval: u64,
    /// Print one screen as text and exit, like `top -b -n1`.
    #[arg(long)]
    once: bool,
    /// With --once: print the cluster view as JSON instead.
    #[arg(long)]
    json: bool,
    /// With --once: columns of the screen (default: the terminal's, else 160).
    #[arg(long, value_parser = clap::value_parser!(u16).range(40..))]
    width: Option<u16>,
    /// With --once: rows of the screen (default: the terminal's, else 48).
    #[arg(long, value_parser = clap::value_parser!(u16).range(10..))]
    height: Option<u16>,
}

pub fn run(target: &Target, args: TopArgs) -> Result<i32> {
    if args.json && !args.once {
        bail!("--json needs --once: the live monitor has no JSON form (use `popcorn top --once --json`)");
    }
    if !args.once && (args.width.is_some() || args.height.is_some()) {
        bail!("--width and --height apply to --once only (the live monitor fills the terminal)");
    }
    if args.once {
        return once(target, &args);
    }
    if !std::io::stdout().is_terminal() {
        bail!("the live monitor needs a terminal; use `popcorn top --once` (or --once --json) for output to a pipe or file");
    }
    live(target, args.interval)
}

/// One view, printed as JSON or as one screen of text.
fn once(target: &Target, args: &TopArgs) -> Result<i32> {
    let view = agent::fetch(target)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(0);
    }
    let terminal = std::io::stdout()
        .is_terminal()
        .then(|| crossterm::terminal::size().ok())
        .flatten();
    let (w, h) = terminal.unwrap_or(ONCE_SIZE);
    let mut app = App::new();
    app.update(view);
    print!(
        "{}",
        render::to_text(
            &app,
            None,
            args.width.unwrap_or(w),
            args.height.unwrap_or(h)
        )?
    );
    Ok(0)
}

/// What a key press means to the monitor.
fn key(k: KeyEvent) -> Option<Key> {
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        _ => return None,
    })
}

/// The full-screen monitor, until q, Esc or Ctrl-C (or SIGTERM/SIGHUP,
/// which also give the terminal back; the exit status is then 128 + signal).
fn live(target: &Target, interval_ms: u64) -> Result<i32> {
    let signals = [libc::SIGTERM, libc::SIGHUP].map(|sig| {
        let flag = Arc::new(AtomicBool::new(false));
        // Failing to register only loses the clean exit on that signal.
        let _ = signal_hook::flag::register(sig, flag.clone());
        (sig, flag)
    });
    let (tx, rx) = mpsc::channel();
    agent::spawn_refresher(
        target.clone(),
        Duration::from_millis(interval_ms),
        tx.clone(),
    );
    let mut screen = term::Screen::enter()?;
    let mut app = App::new();
    let mut dirty = true;
    loop {
        if let Some((sig, _)) = signals.iter().find(|(_, f)| f.load(Ordering::Relaxed)) {
            return Ok(128 + sig);
        }
        while let Ok(update) = rx.try_recv() {
            match update {
                agent::Update::View(Ok(view)) => app.update(view),
                agent::Update::View(Err(e)) => app.fetch_failed(e),
                agent::Update::Migrated { pid, to, outcome } => {
                    app.migration_done(pid, &to, outcome)
                }
            }
            dirty = true;
        }
        if dirty {
            screen.draw(|frame| render::draw(frame, &app, Some(interval_ms)))?;
            dirty = false;
        }
        if !event::poll(TICK)? {
            continue;
        }
        dirty = true;
        let Event::Key(k) = event::read()? else {
            continue;
        };
        if k.kind == KeyEventKind::Release {
            continue;
        }
        match key(k).map(|k| app.on_key(k)) {
            Some(Action::Quit) => return Ok(0),
            Some(Action::Migrate { pid, to }) => {
                agent::spawn_migration(target.clone(), pid, to, tx.clone())
            }
            Some(Action::Nothing) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_monitor_keys() {
        let k = |code, modifiers| key(KeyEvent::new(code, modifiers));
        assert_eq!(
            k(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Key::Interrupt)
        );
        assert_eq!(
            k(KeyCode::Char('c'), KeyModifiers::NONE),
            Some(Key::Char('c'))
        );
        assert_eq!(k(KeyCode::Up, KeyModifiers::NONE), Some(Key::Up));
        assert_eq!(k(KeyCode::Down, KeyModifiers::NONE), Some(Key::Down));
        assert_eq!(k(KeyCode::Enter, KeyModifiers::NONE), Some(Key::Enter));
        assert_eq!(k(KeyCode::Esc, KeyModifiers::NONE), Some(Key::Esc));
        assert_eq!(k(KeyCode::F(1), KeyModifiers::NONE), None);
    }
}

//! The terminal while the monitor runs: raw mode and the alternate screen,
//! always given back: on drop (normal exit and errors) and from a panic hook.

use anyhow::{Context, Result};
use ratatui::DefaultTerminal;
use std::ops::{Deref, DerefMut};

/// The full-screen terminal; restores the user's screen when dropped.
pub struct Screen {
    terminal: DefaultTerminal,
}

impl Screen {
    /// Enters raw mode and the alternate screen. `ratatui::try_init` also
    /// installs a panic hook that restores the terminal before the panic
    /// message prints.
    pub fn enter() -> Result<Screen> {
        match ratatui::try_init() {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                // Raw mode may already be on.
                ratatui::restore();
                Err(e).context("cannot set up the terminal (is this a terminal?)")
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        ratatui::restore();
    }
}

impl Deref for Screen {
    type Target = DefaultTerminal;
    fn deref(&self) -> &DefaultTerminal {
        &self.terminal
    }
}

impl DerefMut for Screen {
    fn deref_mut(&mut self) -> &mut DefaultTerminal {
        &mut self.terminal
    }
}

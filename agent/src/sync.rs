//! Mutex access that survives a thread that panicked while holding the
//! lock: the agent's tables stay usable (their updates are single steps).

use std::sync::{Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

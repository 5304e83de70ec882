//! How many watches this adapter holds open on its API server: a hook for the binary's
//! metrics (a gauge it samples), with no metrics library in the adapter.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts the watches open on one cluster's API server: one per watch stream running
/// (including while kube-rs reconnects it after an error). Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct WatchConnections(Arc<AtomicUsize>);

impl WatchConnections {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many watches are open now.
    pub fn open(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more watch until the returned guard is dropped.
    pub(crate) fn hold(&self) -> WatchHeld {
        self.0.fetch_add(1, Ordering::Relaxed);
        WatchHeld(Arc::clone(&self.0))
    }
}

/// One open watch, counted until dropped.
#[derive(Debug)]
pub(crate) struct WatchHeld(Arc<AtomicUsize>);

impl Drop for WatchHeld {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_counts_while_its_guard_lives() {
        let watches = WatchConnections::new();
        let shared = watches.clone();
        let first = watches.hold();
        let second = shared.hold();
        assert_eq!(watches.open(), 2);
        drop(first);
        assert_eq!(shared.open(), 1);
        drop(second);
        assert_eq!(watches.open(), 0);
    }
}

//! Shared helpers for servicekit's integration, process and UI tests.

mod redis_server;
pub use redis_server::RedisServer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A shared, ordered log of what services did, with the (paused) time of each entry.
#[derive(Clone, Debug)]
pub struct Log {
    start: Instant,
    entries: Arc<Mutex<Vec<(Duration, String)>>>,
}

impl Default for Log {
    fn default() -> Self {
        Self::new()
    }
}

impl Log {
    /// An empty log; times are measured from now.
    pub fn new() -> Self {
        Log {
            start: Instant::now(),
            entries: Arc::default(),
        }
    }

    /// Appends an entry.
    pub fn push(&self, what: impl Into<String>) {
        let at = self.start.elapsed();
        self.entries.lock().unwrap().push((at, what.into()));
    }

    /// The entries' texts, in order.
    pub fn lines(&self) -> Vec<String> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// The times of entries equal to `what`.
    pub fn times_of(&self, what: &str) -> Vec<Duration> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s == what)
            .map(|(t, _)| *t)
            .collect()
    }

    /// Index of the first entry equal to `what`; panics if there is none.
    pub fn position(&self, what: &str) -> usize {
        self.lines()
            .iter()
            .position(|s| s == what)
            .unwrap_or_else(|| panic!("`{what}` not in log: {:?}", self.lines()))
    }
}

/// Sets a flag when dropped: proves a future was dropped (its destructors ran).
#[derive(Debug)]
pub struct DropFlag(pub Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A one-thread runtime on tokio's paused clock, for property tests that run a whole
/// async case per input (`#[tokio::test(start_paused = true)]` cannot be used inside
/// `proptest!`).
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

/// Starts `services` on a runner without signal handling; panics on a
/// configuration error.
pub async fn start(services: Vec<servicekit::Service>) -> servicekit::RunnerHandle {
    servicekit::Runner::new()
        .signals(false)
        .services(services)
        .start()
        .await
        .expect("valid configuration")
}

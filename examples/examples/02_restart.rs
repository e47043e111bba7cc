//! A flaky service restarted with exponential backoff until it reaches its restart
//! limit: the runner then shuts everything down and the program exits 1 by itself,
//! naming the service.
//!
//! Run it with `cargo run -p servicekit-examples --example 02_restart`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use servicekit::{ServiceContext, run_services, service};

#[derive(Debug)]
struct ConnectError(u32);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection refused (attempt {})", self.0)
    }
}

impl std::error::Error for ConnectError {}

/// Fails every time, after a short while. Backoff grows from 100 ms up to 1 s; after
/// 4 restarts within 10 s it gives up.
#[service(
    name = "flaky-upstream",
    backoff = "100ms..1s",
    max_restarts = 4,
    within = "10s"
)]
async fn flaky(attempts: Arc<AtomicU32>) -> Result<(), ConnectError> {
    let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
    println!("flaky-upstream: attempt {n}: connecting...");
    tokio::time::sleep(Duration::from_millis(50)).await;
    Err(ConnectError(n))
}

/// A healthy service, stopped gracefully when the flaky one gives up.
#[service(name = "reporter")]
async fn reporter(ctx: ServiceContext) {
    ctx.ready();
    ctx.shutdown_requested().await;
    println!("reporter: asked to stop because another service gave up");
}

#[servicekit::main]
async fn main() -> servicekit::Result<()> {
    let attempts = Arc::new(AtomicU32::new(0));
    run_services([flaky(attempts.clone()), reporter()]).await
}

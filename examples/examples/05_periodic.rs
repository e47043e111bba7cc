//! Periodic services: `every = "..."` runs the body on a fixed period, never two runs
//! at once; a run longer than the period makes the missed ticks be skipped, not
//! caught up.
//!
//! Run it with `cargo run -p servicekit-examples --example 05_periodic`, then press
//! Ctrl+C.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use servicekit::{run_services, service};

/// A quick job every 500 ms.
#[service(name = "metrics", every = "500ms")]
async fn metrics(started: Instant) {
    println!("metrics: tick at {:.1}s", started.elapsed().as_secs_f64());
}

/// A job every 300 ms that sometimes takes 700 ms: ticks in between are skipped.
#[service(name = "compactor", every = "300ms")]
async fn compactor(started: Instant, runs: Arc<AtomicU32>) {
    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
    let slow = n.is_multiple_of(3);
    println!(
        "compactor: run {n} at {:.1}s{}",
        started.elapsed().as_secs_f64(),
        if slow { " (slow: 700ms)" } else { "" }
    );
    if slow {
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

#[servicekit::main]
async fn main() -> servicekit::Result<()> {
    println!("periodic: press Ctrl+C to stop");
    let started = Instant::now();
    run_services([
        metrics(started),
        compactor(started, Arc::new(AtomicU32::new(0))),
    ])
    .await
}

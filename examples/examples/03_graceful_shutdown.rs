//! Graceful shutdown with per-service timeouts.
//!
//! Two services drain their work when asked to stop; a third ignores the request and is
//! aborted after its `shutdown_timeout` of 2 s. One SIGINT: the program exits 1 after
//! about 2 s, naming the hung service. A second SIGINT during that wait aborts at once:
//! exit code 130.
//!
//! Run it with `cargo run -p servicekit-examples --example 03_graceful_shutdown`, then
//! press Ctrl+C once (or twice).

use std::time::Duration;

use servicekit::{ServiceContext, run_services, service};

/// Drains its queue (takes a moment) before returning.
#[service(name = "drainer")]
async fn drainer(ctx: ServiceContext, queued: u32) {
    ctx.ready();
    println!("drainer: running with {queued} queued items");
    ctx.shutdown_requested().await;
    for i in 1..=queued {
        tokio::time::sleep(Duration::from_millis(50)).await;
        println!("drainer: flushed item {i}/{queued}");
    }
    println!("drainer: drained");
}

/// Finishes its current batch, then stops.
#[service(name = "batcher")]
async fn batcher(ctx: ServiceContext) {
    ctx.ready();
    let mut batch = 0u32;
    loop {
        batch += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if ctx.is_shutdown_requested() {
            println!("batcher: finished batch {batch}, stopping");
            return;
        }
    }
}

/// Never looks at its context: aborted after 2 s and reported as hung.
#[service(name = "stubborn", shutdown_timeout = "2s")]
async fn stubborn(ctx: ServiceContext) {
    ctx.ready();
    println!("stubborn: I will ignore shutdown requests");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

#[servicekit::main]
async fn main() -> servicekit::Result<()> {
    println!("graceful_shutdown: press Ctrl+C once to stop gracefully, twice to force");
    run_services([drainer(5), batcher(), stubborn()]).await
}

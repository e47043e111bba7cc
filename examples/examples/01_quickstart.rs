//! The smallest useful servicekit program: two services run side by side until Ctrl+C,
//! then stop gracefully and the program exits 0.
//!
//! Run it with `cargo run -p servicekit-examples --example 01_quickstart` and press
//! Ctrl+C (or send SIGTERM).

use std::time::Duration;

use servicekit::{ServiceContext, run_services, service};

/// Prints a heartbeat every second until shutdown is requested.
#[service(name = "heartbeat")]
async fn heartbeat(ctx: ServiceContext, period: Duration) {
    ctx.ready();
    let mut beats = 0u64;
    while ctx
        .until_shutdown(tokio::time::sleep(period))
        .await
        .is_some()
    {
        beats += 1;
        println!("heartbeat: beat {beats}");
    }
    println!("heartbeat: stopping after {beats} beats");
}

/// Counts jobs; on shutdown it finishes the one in progress.
#[service(name = "worker", restart = "always")]
async fn worker(ctx: ServiceContext) -> anyhow::Result<()> {
    ctx.ready();
    let mut done = 0u32;
    while !ctx.is_shutdown_requested() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        done += 1;
    }
    println!("worker: finished {done} jobs, stopping cleanly");
    Ok(())
}

#[servicekit::main]
async fn main() -> servicekit::Result<()> {
    println!("quickstart: running two services; press Ctrl+C to stop");
    run_services([heartbeat(Duration::from_secs(1)), worker()]).await?;
    println!("quickstart: all services stopped cleanly");
    Ok(())
}

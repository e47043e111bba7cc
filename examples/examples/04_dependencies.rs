//! Dependencies and readiness: `api` starts once `db` is ready, `worker` once `api` is
//! ready; on shutdown they stop in reverse order. SIGHUP restarts all three in
//! dependency order.
//!
//! Run it with `cargo run -p servicekit-examples --example 04_dependencies`, then press
//! Ctrl+C (or `kill -HUP <pid>` first to see a reload).

use std::time::Duration;

use servicekit::{ServiceContext, run_services, service};

#[service(name = "db")]
async fn db(ctx: ServiceContext) {
    println!("db: starting (run {})", ctx.run());
    tokio::time::sleep(Duration::from_millis(200)).await; // opening the pool
    println!("db: ready");
    ctx.ready();
    ctx.shutdown_requested().await;
    println!("db: stopped");
}

#[service(name = "api", after = ["db"])]
async fn api(ctx: ServiceContext, port: u16) {
    println!("api: starting on port {port} (run {})", ctx.run());
    tokio::time::sleep(Duration::from_millis(100)).await; // binding
    println!("api: ready");
    ctx.ready();
    ctx.shutdown_requested().await;
    println!("api: stopped");
}

#[service(name = "worker", after = ["api"])]
async fn worker(ctx: ServiceContext) {
    println!("worker: starting (run {})", ctx.run());
    ctx.ready();
    println!("worker: ready");
    ctx.shutdown_requested().await;
    println!("worker: stopped");
}

#[servicekit::main]
async fn main() -> servicekit::Result<()> {
    // The order given here does not matter: dependencies decide.
    run_services([worker(), api(8080), db()]).await?;
    println!("dependencies: all stopped");
    Ok(())
}

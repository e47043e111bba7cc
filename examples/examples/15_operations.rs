//! Running in production: health, readiness, status, metrics and a live status page
//! over HTTP, systemd's notify protocol (on by default under `#[servicekit::main]`),
//! and a watchdog.
//!
//! ```sh
//! cargo run --example 15_operations            # then open http://127.0.0.1:9090/
//! HTTP_ADDR=0.0.0.0:8080 cargo run --example 15_operations
//! curl -i localhost:9090/readyz; curl localhost:9090/status; curl localhost:9090/metrics
//! ```
//!
//! `db` is ready after a second, `api` after it; `importer` fails now and then and is
//! restarted with backoff (the page shows its restarts and last error); `poller`
//! beats its 2 s watchdog. Ctrl+C stops everything in order.

use std::time::Duration;

use servicekit::ops::http::Http;
use servicekit::{Runner, ServiceContext, service};
use tokio::time::sleep;

#[service(name = "db")]
async fn db(ctx: ServiceContext) {
    sleep(Duration::from_secs(1)).await;
    ctx.ready();
    println!("db: ready");
    ctx.shutdown_requested().await;
}

#[service(name = "api", after = ["db"])]
async fn api(ctx: ServiceContext) {
    ctx.ready();
    println!("api: ready");
    ctx.shutdown_requested().await;
}

#[service(
    name = "importer",
    backoff = "500ms..5s",
    max_restarts = 100,
    within = "1m"
)]
async fn importer(ctx: ServiceContext) -> Result<(), String> {
    ctx.ready();
    let batch = ctx.run();
    match ctx.until_shutdown(sleep(Duration::from_secs(3))).await {
        Some(()) => Err(format!(
            "upstream closed the connection during batch {batch}"
        )),
        None => Ok(()),
    }
}

#[service(name = "poller", watchdog = "2s")]
async fn poller(ctx: ServiceContext) {
    ctx.ready();
    while ctx
        .until_shutdown(sleep(Duration::from_millis(500)))
        .await
        .is_some()
    {
        // ... one round of polling ...
        ctx.heartbeat();
    }
}

#[servicekit::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = std::env::var("HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:9090".into());
    let http = Http::bind(&addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    println!("status page: http://{}/", http.local_addr());
    let report = Runner::new()
        .service(http.service())
        .service(db())
        .service(api())
        .service(importer())
        .service(poller())
        .start()
        .await?
        .wait()
        .await?;
    println!("{report}");
    Ok(())
}

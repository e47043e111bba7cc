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
//! `db` is ready after a second, `api` after it; `api` queues a job every 100 ms on
//! the hub's `jobs` queue, which `importer` works through. `importer` fails now and
//! then and is restarted with backoff (the page shows its restarts and last error;
//! `/metrics` shows `servicekit_queue_depth{hub="main",name="jobs"}` rise while it is
//! down); `poller` beats its 2 s watchdog. Ctrl+C stops everything in order.

use std::time::Duration;

use servicekit::hub::Hub;
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
async fn api(ctx: ServiceContext, hub: Hub<u64>) -> Result<(), servicekit::hub::HubError> {
    let jobs = hub.queue("jobs")?;
    ctx.ready();
    println!("api: ready");
    let mut next = 0;
    while ctx
        .until_shutdown(sleep(Duration::from_millis(100)))
        .await
        .is_some()
    {
        next += 1;
        // A full queue sheds the job; `/metrics` shows how deep it got.
        let _ = jobs.try_send(next);
    }
    Ok(())
}

#[service(
    name = "importer",
    backoff = "500ms..5s",
    max_restarts = 100,
    within = "1m"
)]
async fn importer(ctx: ServiceContext, hub: Hub<u64>) -> Result<(), String> {
    let jobs = hub.queue("jobs").map_err(|e| e.to_string())?.receiver();
    ctx.ready();
    let batch = ctx.run();
    let work = async {
        while let Ok(_job) = jobs.recv().await {
            // ... import the job ...
        }
    };
    match ctx
        .until_shutdown(tokio::time::timeout(Duration::from_secs(3), work))
        .await
    {
        Some(_) => Err(format!(
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
    let hub = Hub::<u64>::with_config(servicekit::hub::HubConfig {
        buffer_size: 1000,
        ..Default::default()
    })?;
    servicekit::ops::channels::export("main", &hub);
    let report = Runner::new()
        .service(http.service())
        .service(db())
        .service(api(hub.clone()))
        .service(importer(hub))
        .service(poller())
        .start()
        .await?
        .wait()
        .await?;
    println!("{report}");
    Ok(())
}

//! Test helper: a program with the HTTP server whose services change state when the
//! process test drops a file in `$STATE_DIR`: `ready` makes `slow` ready, `fail`
//! fails `flaky` once, `hang` hangs `watched` past its watchdog once. `drainer` takes
//! a second to stop. Prints the server's address first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use servicekit::ops::http::Http;
use servicekit::{Runner, Service, ServiceContext};
use tokio::time::sleep;

/// Waits (while the service is not asked to stop) until `file` exists; removes it
/// when `once`. Returns `false` if asked to stop first.
async fn wait_for(ctx: &ServiceContext, file: &Path, once: bool) -> bool {
    loop {
        if file.exists() {
            if once {
                let _ = std::fs::remove_file(file);
            }
            return true;
        }
        if ctx
            .until_shutdown(sleep(Duration::from_millis(20)))
            .await
            .is_none()
        {
            return false;
        }
        ctx.heartbeat();
    }
}

#[servicekit::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = PathBuf::from(std::env::var("STATE_DIR").expect("STATE_DIR"));
    let http = Http::bind("127.0.0.1:0")?;
    println!("http://{}", http.local_addr());
    let d = dir.clone();
    let slow = Service::new("slow", move |ctx| {
        let ready = d.join("ready");
        async move {
            if wait_for(&ctx, &ready, false).await {
                ctx.ready();
                ctx.shutdown_requested().await;
            }
        }
    });
    let d = dir.clone();
    let flaky = Service::new("flaky", move |ctx| {
        let fail = d.join("fail");
        async move {
            ctx.ready();
            if wait_for(&ctx, &fail, true).await {
                return Err("flaky: lost its upstream".to_string());
            }
            Ok(())
        }
    })
    .backoff(Duration::from_millis(100), Duration::from_millis(100));
    let d = dir.clone();
    let watched = Service::new("watched", move |ctx| {
        let hang = d.join("hang");
        async move {
            ctx.ready();
            if wait_for(&ctx, &hang, true).await {
                std::future::pending::<()>().await;
            }
        }
    })
    .watchdog(Duration::from_secs(1))
    .shutdown_timeout(Duration::from_secs(1))
    .backoff(Duration::from_millis(100), Duration::from_millis(100));
    let drainer = Service::new("drainer", |ctx| async move {
        ctx.ready();
        ctx.shutdown_requested().await;
        sleep(Duration::from_secs(1)).await;
    });
    Runner::new()
        .service(http.service())
        .services([slow, flaky, watched, drainer])
        .start()
        .await?
        .wait()
        .await?;
    Ok(())
}

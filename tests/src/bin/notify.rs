//! Test helper: a program for the systemd notify test (`tests/systemd.rs`), which
//! plays the service manager.
//!
//! * `db` is ready after 300 ms, `api` (after `db`) 200 ms later.
//! * `watched` beats every 100 ms under a 1 s watchdog; when the file named by
//!   `STALL` appears it deletes it and hangs, ignoring its stop request (2 s
//!   shutdown timeout), until its hung run is aborted and restarted.
//! * `drainer` takes 2 s to stop.

use std::time::Duration;

use servicekit::{Service, ServiceContext, run_services};
use tokio::time::sleep;

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn ready_after(name: &'static str, after: Duration) -> Service {
    Service::new(name, move |ctx: ServiceContext| async move {
        if ctx.until_shutdown(sleep(after)).await.is_none() {
            return;
        }
        ctx.ready();
        say(&format!("{name} ready"));
        ctx.shutdown_requested().await;
    })
}

#[servicekit::main]
async fn main() -> servicekit::Result<()> {
    let stall = std::env::var_os("STALL").expect("STALL names a file");
    let watched = Service::new("watched", move |ctx| {
        let stall = std::path::PathBuf::from(&stall);
        async move {
            ctx.ready();
            while ctx
                .until_shutdown(sleep(Duration::from_millis(100)))
                .await
                .is_some()
            {
                if std::fs::remove_file(&stall).is_ok() {
                    say("watched stalls");
                    std::future::pending::<()>().await;
                }
                ctx.heartbeat();
            }
        }
    })
    .watchdog(Duration::from_secs(1))
    .shutdown_timeout(Duration::from_secs(2));
    let drainer = Service::new("drainer", |ctx| async move {
        ctx.ready();
        ctx.shutdown_requested().await;
        sleep(Duration::from_secs(2)).await;
        say("drainer drained");
    })
    .shutdown_timeout(Duration::from_secs(5));
    run_services([
        ready_after("db", Duration::from_millis(300)),
        ready_after("api", Duration::from_millis(200)).after(["db"]),
        watched,
        drainer,
    ])
    .await
}

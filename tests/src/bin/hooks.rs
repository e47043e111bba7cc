//! Test helper: programs that used to hang, chosen by the first argument; the process
//! tests run them and check that each exits with its documented code in time.
//!
//! * `display`: a service returns an error whose `Display` panics, and gives up.
//! * `drop`: a service without a context holds a value whose `Drop` panics; it is
//!   dropped when a signal stops the runner.
//! * `block-body`: a service blocks the runtime's only thread forever.
//! * `block-drop`: a service ignores its stop request and holds a value whose `Drop`
//!   blocks forever (a forced shutdown drops it).

use std::time::Duration;

use servicekit::{Restart, Service, ServiceContext};

struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("Drop of the held value exploded");
    }
}

struct BlockOnDrop;

impl Drop for BlockOnDrop {
    fn drop(&mut self) {
        block_forever();
    }
}

/// Blocks the calling thread for good.
fn block_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[derive(Debug)]
struct BadDisplay;

impl std::fmt::Display for BadDisplay {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("Display exploded")
    }
}

impl std::error::Error for BadDisplay {}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[servicekit::main(flavor = "current_thread")]
async fn main() -> servicekit::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let service = match mode.as_str() {
        "display" => Service::without_context("bad-display", || async {
            say("bad-display: failing");
            Err::<(), _>(BadDisplay)
        })
        .restart(Restart::Never),
        "drop" => Service::without_context("bad-drop", || async {
            let _held = PanicOnDrop;
            say("bad-drop: running");
            std::future::pending::<()>().await;
        }),
        "block-body" => Service::without_context("blocker", || async {
            say("blocker: blocking the thread");
            block_forever();
        }),
        "block-drop" => Service::new("stuck", |_ctx: ServiceContext| async {
            let _held = BlockOnDrop;
            say("stuck: ignoring shutdown");
            std::future::pending::<()>().await;
        }),
        other => panic!("unknown mode `{other}`"),
    };
    servicekit::Runner::new()
        .shutdown_timeout(Duration::from_secs(30))
        .service(service)
        .run()
        .await
}

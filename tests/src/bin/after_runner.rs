//! Test helper: runs a runner to its end, then waits, so a test can check that the
//! default signal behaviour is back (the process dies by the signal).

use std::time::Duration;

#[servicekit::main(flavor = "current_thread", tracing = false)]
async fn main() -> servicekit::Result<()> {
    let once = servicekit::Service::without_context("once", || async {
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    servicekit::run_services([once]).await?;
    println!("runner ended");
    tokio::time::sleep(Duration::from_secs(30)).await;
    println!("still alive");
    Ok(())
}

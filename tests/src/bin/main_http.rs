//! Test helper: `#[servicekit::main(http = "...")]` on a fixed port; the process test
//! checks that a port in use ends it before anything starts, and that otherwise the
//! probes answer.

use servicekit::{Service, run_services};

#[servicekit::main(http = "127.0.0.1:39517")]
async fn main() -> servicekit::Result<()> {
    println!("started");
    run_services([Service::new("api", |ctx| async move {
        ctx.ready();
        ctx.shutdown_requested().await
    })])
    .await
}

// The fix the diagnostic of `service_closure_never_returns` suggests compiles.
#![allow(unreachable_code)]
use servicekit::Service;

fn main() {
    let _ended_on_shutdown = Service::new("poller", |ctx| async move {
        while ctx
            .until_shutdown(tokio::time::sleep(std::time::Duration::from_secs(1)))
            .await
            .is_some()
        {}
    });
    let _unit_tail = Service::new("poller", |_ctx| async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        ()
    });
}

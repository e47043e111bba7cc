// A closure body that loops forever has type `!` (edition 2024): the error says what
// to write instead.
use servicekit::Service;

fn main() {
    let _svc = Service::new("poller", |_ctx| async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}

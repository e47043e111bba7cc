//! The tracing span of each service run, in its own test binary: `tracing` caches
//! per call site whether anyone is interested, and tests on other threads of the
//! same process without a subscriber would race with this one's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use servicekit::{Runner, Service};
use tokio::time::sleep;

const MS: Duration = Duration::from_millis(1);

/// What a `tracing` fmt subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Each run's body is polled, and dropped, inside a span naming the service and the
/// run: events of the body (a restart makes run 2) and of its destructors when a
/// service without a context is cancelled carry both.
#[tokio::test(start_paused = true)]
async fn each_run_is_polled_and_dropped_inside_its_span() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    // A current-thread runtime: the subscriber set for this thread sees every poll.
    let _default = tracing::subscriber::set_default(subscriber);

    struct Dropped;
    impl Drop for Dropped {
        fn drop(&mut self) {
            tracing::info!("body dropped");
        }
    }
    let runs = Arc::new(AtomicU32::new(0));
    let svc = Service::without_context("spanned", move || {
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let _guard = Dropped;
            tokio::task::yield_now().await;
            tracing::info!("running");
            if run == 1 {
                return Err("first run fails");
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    })
    .backoff(MS, MS);
    let h = Runner::new()
        .signals(false)
        .service(svc)
        .start()
        .await
        .expect("valid configuration");
    sleep(100 * MS).await;
    h.shutdown();
    h.wait().await.unwrap();

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    for line in [
        "service{name=spanned run=1}: spans: running",
        "service{name=spanned run=1}: spans: body dropped",
        "service{name=spanned run=2}: spans: running",
        "service{name=spanned run=2}: spans: body dropped",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
}

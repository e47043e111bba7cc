//! Periodic services: each run of the service is a loop of the body on a fixed grid.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::BoxError;
use crate::lifecycle::body::IntoServiceResult;
use crate::lifecycle::context::ServiceContext;
use crate::sync::Mutex;

/// Wraps a body closure so each run is a periodic loop of the original body: ticks
/// at `start + k × period`; a run that overruns skips every tick it missed and waits
/// for the next one on the grid (no burst of catch-up runs, no immediate extra run).
/// The loop is boxed, once per run (a periodic run lasts as long as the service).
pub(super) fn periodic<M, F>(
    make: M,
    period: Duration,
    has_context: bool,
) -> impl FnMut(ServiceContext) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
+ Send
+ 'static
where
    M: FnMut(ServiceContext) -> F + Send + 'static,
    F: Future + Send + 'static,
    F::Output: IntoServiceResult,
{
    let inner = Arc::new(Mutex::new(make));
    move |ctx: ServiceContext| -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> {
        let inner = inner.clone();
        Box::pin(async move {
            let start = Instant::now();
            let mut due = start;
            loop {
                let tick = tokio::time::sleep_until(due);
                if has_context {
                    if ctx.until_shutdown(tick).await.is_none() {
                        return Ok(());
                    }
                } else {
                    tick.await;
                }
                // Each tick is a heartbeat, at its start and end: the watchdog
                // catches a tick that takes too long.
                ctx.heartbeat();
                let run = (inner.lock())(ctx.clone());
                run.await.into_service_result()?;
                ctx.heartbeat();
                let elapsed = start.elapsed().as_nanos();
                let k = elapsed / period.as_nanos() + 1;
                due = start
                    + Duration::from_nanos(
                        u64::try_from(k * period.as_nanos()).unwrap_or(u64::MAX),
                    );
            }
        })
    }
}

//! The runners' metrics through the [`metrics`] facade (feature `metrics`): what a
//! program's own recorder (a Prometheus exporter, StatsD, …) then exports. Nothing
//! is recorded until the program installs a recorder; servicekit installs none.
//!
//! With [`enable`] (called by `#[servicekit::main]`), every runner started from
//! then on records, labelled `service`:
//!
//! | metric | kind | |
//! |---|---|---|
//! | `servicekit_service_failures_total` | counter | failed runs, also labelled `kind`: `error`, `panic`, `task_error`, `task_panic`, `hung` |
//! | `servicekit_service_restarts_total` | counter | restart delays begun: after a failure, or a clean end under `restart = "always"` |
//! | `servicekit_service_runs_total` | counter | runs started |
//! | `servicekit_service_ready` | gauge | 1 while the current run is ready |
//! | `servicekit_service_running` | gauge | 1 while a run is going |
//! | `servicekit_service_run_seconds` | histogram | how long each run lasted |
//!
//! and, every second while a runner runs, the depth and lag of the channels and
//! queues of every hub given to [`channels::export`](super::channels::export).
//!
//! # Examples
//!
//! ```
//! // With a recorder installed first (e.g. metrics-exporter-prometheus):
//! servicekit::ops::metrics::enable();
//! ```

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio::time::Instant;

use crate::error::FAILURE_LABELS;
use crate::lifecycle::observe;
use crate::lifecycle::{Event, ServiceState};

/// Records the metrics of every runner started from now on. Calling it again does
/// nothing more.
///
/// # Examples
///
/// ```
/// servicekit::ops::metrics::enable();
/// ```
pub fn enable() {
    static ENABLED: OnceLock<()> = OnceLock::new();
    ENABLED.get_or_init(|| {
        observe::add_observer(|watch| {
            // Subscribed now, before the runner's first event.
            let events = watch
                .bus()
                .subscription::<Event>()
                .capacity(4096)
                .subscribe();
            drop(tokio::spawn(record(watch.finished(), events)));
        });
    });
}

async fn record(
    finished: tokio_util::sync::CancellationToken,
    mut events: crate::bus::Subscription<Event>,
) {
    // When each service's current run began.
    let mut running: HashMap<Arc<str>, Instant> = HashMap::new();
    let mut sample = tokio::time::interval(super::channels::SAMPLE_EVERY);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let received = tokio::select! {
            // Every event published before the runner ended is recorded first.
            biased;
            r = events.recv() => r,
            // A bus given to the runner outlives it.
            () = finished.cancelled() => return,
            _ = sample.tick() => {
                record_channels();
                continue;
            }
        };
        let event = match received {
            Ok(event) => event,
            Err(crate::bus::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "metrics: events were missed");
                continue;
            }
            Err(_) => return,
        };
        match &*event {
            Event::Failed { service, error } => {
                metrics::counter!(
                    "servicekit_service_failures_total",
                    "service" => service.to_string(),
                    "kind" => FAILURE_LABELS[error.label_index()],
                )
                .increment(1);
            }
            Event::Ready { service } => {
                metrics::gauge!("servicekit_service_ready", "service" => service.to_string())
                    .set(1.0);
            }
            Event::State { service, state } => {
                let name = service.to_string();
                if *state == ServiceState::Running {
                    running.insert(service.clone(), Instant::now());
                    metrics::counter!("servicekit_service_runs_total", "service" => name.clone())
                        .increment(1);
                    metrics::gauge!("servicekit_service_running", "service" => name).set(1.0);
                    continue;
                }
                if let Some(began) = running.remove(service) {
                    metrics::histogram!("servicekit_service_run_seconds", "service" => name.clone())
                        .record(began.elapsed().as_secs_f64());
                }
                metrics::gauge!("servicekit_service_running", "service" => name.clone()).set(0.0);
                metrics::gauge!("servicekit_service_ready", "service" => name.clone()).set(0.0);
                if *state == ServiceState::Restarting {
                    metrics::counter!("servicekit_service_restarts_total", "service" => name)
                        .increment(1);
                }
            }
            _ => {}
        }
    }
}

/// The exported hubs' channels and queues, through the facade.
fn record_channels() {
    for sample in super::channels::sample() {
        let labels = [
            ("hub", sample.hub.clone()),
            ("name", sample.stats.name.clone()),
        ];
        for m in sample.metrics() {
            if m.counter {
                metrics::counter!(m.name, &labels).absolute(m.value);
            } else {
                metrics::gauge!(m.name, &labels).set(m.value as f64);
            }
        }
    }
}

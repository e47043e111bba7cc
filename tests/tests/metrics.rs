//! The runners' metrics through the `metrics` facade, caught by a debugging
//! recorder: failures by kind, restarts, runs, readiness and run lengths, and the
//! depth of an exported hub's queue.
//!
//! One test function: the recorder is global.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metrics::{SharedString, Unit};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use servicekit::{Runner, Service};

/// Snapshots of the recorder, taken until a condition holds. A snapshot drains the
/// histograms, so the run lengths are added up across snapshots.
struct Metrics {
    snapshotter: Snapshotter,
    last: Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>,
    run_lengths: usize,
}

impl Metrics {
    /// Takes snapshots until `done` holds, for at most 10 s: the metrics are
    /// recorded by the runner's tasks, and the queue sampled once a second.
    async fn until(&mut self, what: &str, done: impl Fn(&Metrics) -> bool) {
        let began = std::time::Instant::now();
        loop {
            self.last = self.snapshotter.snapshot().into_vec();
            if let Some(DebugValue::Histogram(values)) =
                self.find("servicekit_service_run_seconds", &[FLAKY])
            {
                self.run_lengths += values.len();
            }
            if done(self) {
                return;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "never {what}: {:?} (run lengths: {})",
                self.last,
                self.run_lengths
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&DebugValue> {
        self.last.iter().find_map(|(key, _, _, value)| {
            let k = key.key();
            let matches = k.name() == name
                && labels
                    .iter()
                    .all(|(l, v)| k.labels().any(|kl| kl.key() == *l && kl.value() == *v));
            matches.then_some(value)
        })
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        match self.find(name, labels) {
            Some(DebugValue::Counter(n)) => Some(*n),
            _ => None,
        }
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, labels) {
            Some(DebugValue::Gauge(v)) => Some(v.into_inner()),
            _ => None,
        }
    }
}

const FLAKY: (&str, &str) = ("service", "flaky");
const JOBS: [(&str, &str); 2] = [("hub", "main"), ("name", "jobs")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_restarts_runs_and_readiness_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let mut metrics = Metrics {
        snapshotter: recorder.snapshotter(),
        last: Vec::new(),
        run_lengths: 0,
    };
    recorder.install().expect("the only recorder");
    servicekit::ops::metrics::enable();
    let hub = servicekit::hub::Hub::<u32>::new();
    servicekit::ops::channels::export("main", &hub);
    let jobs = hub.queue("jobs").unwrap();
    jobs.try_send(1).unwrap();

    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let flaky = Service::new("flaky", move |ctx| {
        let n = r.fetch_add(1, Ordering::SeqCst);
        async move {
            match n {
                0 => Err("first run fails".to_owned()),
                1 => panic!("second run panics"),
                _ => {
                    ctx.ready();
                    ctx.shutdown_requested().await;
                    Ok(())
                }
            }
        }
    })
    .backoff(Duration::from_millis(1), Duration::from_millis(1));
    let handle = Runner::new()
        .signals(false)
        .service(flaky)
        .start()
        .await
        .unwrap();
    // The queue is sampled when the runner starts, then every second.
    metrics
        .until("the queue sampled at the start", |m| {
            m.gauge("servicekit_queue_depth", &JOBS) == Some(1.0)
        })
        .await;
    // Two failures, then a third run that is ready.
    metrics
        .until("flaky ready in its third run", |m| {
            m.counter("servicekit_service_runs_total", &[FLAKY]) == Some(3)
                && m.gauge("servicekit_service_ready", &[FLAKY]) == Some(1.0)
        })
        .await;
    jobs.try_send(2).unwrap();
    jobs.try_send(3).unwrap();
    metrics
        .until("the queue sampled again", |m| {
            m.gauge("servicekit_queue_depth", &JOBS) == Some(3.0)
                && m.counter("servicekit_queue_sent_total", &JOBS) == Some(3)
        })
        .await;
    handle.shutdown();
    handle.wait().await.unwrap();
    // The stop is recorded by the metrics' own task, a moment after `wait`.
    metrics
        .until("the stop recorded", |m| {
            m.gauge("servicekit_service_ready", &[FLAKY]) == Some(0.0) && m.run_lengths >= 3
        })
        .await;

    assert_eq!(metrics.run_lengths, 3, "one length per run");
    assert_eq!(
        metrics.counter(
            "servicekit_service_failures_total",
            &[FLAKY, ("kind", "error")]
        ),
        Some(1)
    );
    assert_eq!(
        metrics.counter(
            "servicekit_service_failures_total",
            &[FLAKY, ("kind", "panic")]
        ),
        Some(1)
    );
    assert_eq!(
        metrics.counter("servicekit_service_restarts_total", &[FLAKY]),
        Some(2)
    );
    assert_eq!(
        metrics.counter("servicekit_service_runs_total", &[FLAKY]),
        Some(3)
    );
}

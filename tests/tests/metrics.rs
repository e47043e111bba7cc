//! The runners' metrics through the `metrics` facade, caught by a debugging
//! recorder: failures by kind, restarts, runs, readiness and run lengths, and the
//! depth of an exported hub's queue.
//!
//! One test function: the recorder is global.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use servicekit::{Runner, Service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_restarts_runs_and_readiness_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Sampled when the runner started (depth 1), then every second.
    jobs.try_send(2).unwrap();
    jobs.try_send(3).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    handle.shutdown();
    handle.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, labels: &[(&str, &str)]| -> Option<&DebugValue> {
        snapshot.iter().find_map(|(key, _, _, value)| {
            let k = key.key();
            let matches = k.name() == name
                && labels
                    .iter()
                    .all(|(l, v)| k.labels().any(|kl| kl.key() == *l && kl.value() == *v));
            matches.then_some(value)
        })
    };
    let counter = |name: &str, labels: &[(&str, &str)]| match find(name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {labels:?}: {other:?}"),
    };
    let svc = ("service", "flaky");
    assert_eq!(
        counter(
            "servicekit_service_failures_total",
            &[svc, ("kind", "error")]
        ),
        1
    );
    assert_eq!(
        counter(
            "servicekit_service_failures_total",
            &[svc, ("kind", "panic")]
        ),
        1
    );
    assert_eq!(counter("servicekit_service_restarts_total", &[svc]), 2);
    assert_eq!(counter("servicekit_service_runs_total", &[svc]), 3);
    match find("servicekit_service_run_seconds", &[svc]) {
        Some(DebugValue::Histogram(values)) => assert_eq!(values.len(), 3),
        other => panic!("run lengths: {other:?}"),
    }
    match find("servicekit_service_ready", &[svc]) {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 0.0, "stopped: not ready"),
        other => panic!("ready: {other:?}"),
    }
    let queue = [("hub", "main"), ("name", "jobs")];
    assert_eq!(counter("servicekit_queue_sent_total", &queue), 3);
    match find("servicekit_queue_depth", &queue) {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 3.0),
        other => panic!("queue depth: {other:?}"),
    }
}

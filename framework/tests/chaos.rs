//! Chaos: 1,000 services failing or panicking at random for 10 seconds under a
//! tolerant policy, while other services are added and removed, on a real
//! 2-worker runtime. The runner stays healthy; every failure the bodies counted is
//! in the event stream (seen from the first event, through a bus given to the
//! runner) and in the report; the heap does not grow (< 1 MiB between the end of
//! the warm-up and the end of the run).
//!
//! One test function: the counting allocator counts every thread.

#![cfg(not(servicekit_loom))]

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use servicekit::bus::EventBus;
use servicekit::error::FailureKind;
use servicekit::{Event, Restart, Runner, Service, ServiceContext, ServiceState};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SERVICES: usize = 1_000;
const RUN: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(2);

struct Chaos {
    /// Failures the bodies made (an `Err` returned or a panic).
    failures: AtomicU64,
    /// Set before the shutdown: no body fails any more (a failure once asked to
    /// stop would be a failure to stop, rightly reported as such).
    calm: AtomicBool,
}

/// A body that runs a random 5–100 ms, then fails (40 %), panics (10 %) or goes on.
async fn body(ctx: ServiceContext, chaos: Arc<Chaos>) -> Result<(), String> {
    ctx.ready();
    loop {
        let wait = Duration::from_millis(fastrand::u64(5..100));
        if ctx.until_shutdown(tokio::time::sleep(wait)).await.is_none() {
            return Ok(());
        }
        if chaos.calm.load(Ordering::SeqCst) || ctx.is_shutdown_requested() {
            continue;
        }
        match fastrand::u8(0..10) {
            0..4 => {
                chaos.failures.fetch_add(1, Ordering::SeqCst);
                return Err(format!("random failure in run {}", ctx.run()));
            }
            4 => {
                chaos.failures.fetch_add(1, Ordering::SeqCst);
                panic!("random panic in run {}", ctx.run());
            }
            _ => {}
        }
    }
}

fn chaotic(name: String, chaos: &Arc<Chaos>) -> Service {
    let chaos = chaos.clone();
    Service::new(name, move |ctx| body(ctx, chaos.clone()))
        .restart(Restart::OnFailure)
        .backoff(Duration::from_millis(1), Duration::from_millis(20))
        .max_restarts(u32::MAX, Duration::from_secs(1))
}

#[test]
fn a_thousand_chaotic_services_and_a_churn_of_others_leave_the_runner_healthy() {
    // Panics are expected by the thousand: keep their messages off stderr.
    std::panic::set_hook(Box::new(|_| {}));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let chaos = Arc::new(Chaos {
            failures: AtomicU64::new(0),
            calm: AtomicBool::new(false),
        });
        // Every event from the first, with room enough never to lag.
        let bus = EventBus::new();
        let mut events = bus.subscription::<Event>().capacity(1 << 20).subscribe();
        let seen = Arc::new(AtomicU64::new(0));
        let lagged = Arc::new(AtomicU64::new(0));
        let (s, l) = (seen.clone(), lagged.clone());
        let counter = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ev) => {
                        if let Event::Failed { .. } = *ev {
                            s.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(servicekit::bus::RecvError::Lagged(n)) => {
                        l.fetch_add(n, Ordering::SeqCst);
                    }
                    Err(_) => return,
                }
            }
        });
        let handle = Arc::new(
            Runner::new()
                .signals(false)
                .bus(bus.clone())
                .services((0..SERVICES).map(|i| chaotic(format!("chaos-{i}"), &chaos)))
                .start()
                .await
                .unwrap(),
        );
        let began = Instant::now();

        // The churn: services added and removed the whole time, one every 10 ms
        // (each removal leaves its slot behind: see BENCHMARKS.md).
        let stop_churn = Arc::new(AtomicBool::new(false));
        let churn = {
            let (handle, chaos, stop) = (handle.clone(), chaos.clone(), stop_churn.clone());
            tokio::spawn(async move {
                let mut removed_restarts = 0u64;
                let mut stop_failed = 0u64;
                let mut added = 0u64;
                let mut live = std::collections::VecDeque::new();
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("churn-{added}");
                    let mut svc = chaotic(name.clone(), &chaos);
                    if added.is_multiple_of(4) {
                        svc = svc.after([format!("chaos-{}", added % SERVICES as u64)]);
                    }
                    handle.add(svc).unwrap();
                    added += 1;
                    live.push_back(name);
                    if live.len() > 20 {
                        let name = live.pop_front().unwrap();
                        let report = handle.remove(&name).await.unwrap();
                        assert!(report.state.is_terminal(), "{report}");
                        removed_restarts += u64::from(report.restarts);
                        stop_failed += u64::from(report.state == ServiceState::Failed);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (added, removed_restarts, stop_failed)
            })
        };

        tokio::time::sleep(WARM_UP).await;
        let region = Region::new(GLOBAL);
        tokio::time::sleep(RUN - WARM_UP).await;
        let c = region.change();
        let growth = c.bytes_allocated as i64 - c.bytes_deallocated as i64
            + c.bytes_reallocated.max(0) as i64;
        stop_churn.store(true, Ordering::SeqCst);
        let (added, removed_restarts, removed_failed) = churn.await.unwrap();

        // Healthy: every chaotic service is running or about to run again.
        for s in handle.status().iter().take(SERVICES) {
            assert!(
                matches!(s.state, ServiceState::Running | ServiceState::Restarting | ServiceState::Starting),
                "{}: {}",
                s.name,
                s.state
            );
        }
        chaos.calm.store(true, Ordering::SeqCst);
        // A run that was about to fail has done so (its wait is under 100 ms), and
        // its restart is under way.
        tokio::time::sleep(Duration::from_millis(150)).await;
        handle.shutdown();
        let outcome = handle.wait().await;
        // The bus was given to the runner, so it stays open after it: close it to
        // end the subscription.
        bus.close();
        counter.await.unwrap();
        let failures = chaos.failures.load(Ordering::SeqCst);

        // A removed service may fail on its own while its stop is being asked for:
        // that is a failure to stop, reported in the error, not a restart.
        let (report, stop_failures) = match &outcome {
            Ok(report) => (report.clone(), 0),
            Err(e) => {
                let report = e.report().expect("a report").clone();
                let stop_failures = e
                    .failures()
                    .iter()
                    .filter(|f| matches!(f.kind(), FailureKind::StopFailed { .. }))
                    .count() as u64;
                assert_eq!(stop_failures, e.failures().len() as u64, "{e}");
                assert_eq!(stop_failures, removed_failed, "{e}");
                (report, stop_failures)
            }
        };
        let restarts: u64 = report.services().iter().map(|s| u64::from(s.restarts)).sum();
        println!(
            "{failures} failures in {:?}, {added} services added and removed, heap growth {growth} B",
            began.elapsed()
        );
        assert!(failures > 10_000, "too few failures to mean much: {failures}");
        assert_eq!(lagged.load(Ordering::SeqCst), 0);
        assert_eq!(seen.load(Ordering::SeqCst), failures, "every failure is an event");
        assert_eq!(
            restarts + removed_restarts + stop_failures,
            failures,
            "every failure is in the report (restarts of the services left, of those removed, failures to stop)"
        );
        assert!(added > 400, "{added}");
        assert!(growth < 1 << 20, "the heap grew by {growth} B");
        assert_eq!(report.services().len(), SERVICES + 20);
    });
}

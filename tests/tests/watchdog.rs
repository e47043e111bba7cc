//! The watchdog, on tokio's paused clock: a run that goes longer than its watchdog
//! without a heartbeat is asked to stop, aborted after its shutdown timeout,
//! reported as hung with the time of its last heartbeat, and restarted per its
//! policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use servicekit::error::{ConfigError, FailureKind};
use servicekit::{Error, Event, Restart, Runner, Service, ServiceState};
use servicekit_tests::{DropFlag, Log, start};
use tokio::time::{Instant, sleep};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// Collects the hung failures of `service` from an event stream, until it ends.
async fn hung_errors(
    mut events: servicekit::lifecycle::Events,
) -> Vec<Arc<servicekit::error::ServiceError>> {
    let mut hung = Vec::new();
    while let Some(ev) = events.next().await {
        if let Event::Failed { error, .. } = ev {
            assert!(error.is_hung(), "only hangs fail here: {error}");
            hung.push(error);
        }
    }
    hung
}

#[tokio::test(start_paused = true)]
async fn a_run_that_stops_beating_is_stopped_reported_and_restarted() {
    let t0 = Instant::now();
    let log = Log::new();
    let l = log.clone();
    let svc = Service::new("poller", move |ctx| {
        let l = l.clone();
        async move {
            l.push(format!("start {}", ctx.run()));
            ctx.ready();
            // Three beats, 200 ms apart, then stuck (but it does stop when asked).
            for _ in 0..3 {
                sleep(200 * MS).await;
                ctx.heartbeat();
            }
            ctx.shutdown_requested().await;
            l.push(format!("stopped {}", ctx.run()));
        }
    })
    .watchdog(SEC)
    .backoff(100 * MS, 100 * MS)
    .max_restarts(u32::MAX, SEC);
    let h = start(vec![svc]).await;
    let events = h.events();
    sleep(Duration::from_millis(3500)).await;
    h.shutdown();
    let status = h.wait().await;
    status.expect("hangs that were restarted are not the runner's failure");

    // Each run beats for 600 ms, is hung 1 s later, stops at once and restarts after
    // the 100 ms backoff: runs start every 1.7 s.
    assert_eq!(log.times_of("start 1"), [Duration::ZERO]);
    assert_eq!(log.times_of("stopped 1"), [1600 * MS]);
    assert_eq!(log.times_of("start 2"), [1700 * MS]);
    assert_eq!(log.times_of("stopped 2"), [3300 * MS]);
    assert_eq!(log.times_of("start 3"), [3400 * MS]);

    let hung = hung_errors(events).await;
    assert_eq!(hung.len(), 2, "{hung:?}");
    assert_eq!(hung[0].run(), 1);
    assert_eq!(hung[0].last_heartbeat(), Some(t0 + 600 * MS));
    assert_eq!(hung[1].run(), 2);
    assert_eq!(hung[1].last_heartbeat(), Some(t0 + 2300 * MS));
    assert_eq!(
        hung[0].to_string(),
        "service `poller` run 1 hung: no heartbeat for 1s (watchdog 1s)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_run_that_ignores_its_stop_is_aborted_after_its_timeout_then_restarted() {
    let runs = Arc::new(AtomicU32::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let (r, d) = (runs.clone(), dropped.clone());
    let log = Log::new();
    let l = log.clone();
    let svc = Service::new("stuck", move |ctx| {
        let n = r.fetch_add(1, Ordering::SeqCst) + 1;
        l.push(format!("start {n}"));
        let flag = DropFlag(d.clone());
        async move {
            let _flag = flag;
            if n == 1 {
                // Never beats, never returns, ignores its stop request.
                std::future::pending::<()>().await;
            }
            ctx.shutdown_requested().await;
        }
    })
    .watchdog(SEC)
    .shutdown_timeout(2 * SEC)
    .backoff(100 * MS, 100 * MS);
    let h = start(vec![svc]).await;
    let mut events = h.events();
    sleep(2900 * MS).await;
    assert!(
        !dropped.load(Ordering::SeqCst),
        "aborted before its timeout"
    );
    assert_eq!(h.status()[0].state, ServiceState::Stopping);
    sleep(300 * MS).await;
    // Hung at 1 s, asked to stop, aborted at 3 s (its future dropped), restarted
    // at 3.1 s: the service lives on, the runner is not shut down.
    assert!(
        dropped.load(Ordering::SeqCst),
        "the hung run's future was dropped"
    );
    assert_eq!(log.times_of("start 2"), [3100 * MS], "{:?}", log.lines());
    let status = &h.status()[0];
    assert_eq!(status.state, ServiceState::Running);
    assert_eq!(status.runs, 2);
    assert_eq!(status.restarts, 1);
    assert!(status.last_error.as_ref().is_some_and(|e| e.is_hung()));
    h.shutdown();
    h.wait().await.expect("run 2 stops when asked");
    let mut states = Vec::new();
    while let Some(ev) = events.next().await {
        if let Event::State { state, .. } = ev {
            states.push(state);
        }
    }
    use ServiceState::*;
    let from = states
        .iter()
        .position(|s| *s == Stopping)
        .expect("it stopped");
    assert_eq!(
        states[from..],
        [Stopping, Restarting, Running, Stopping, Stopped],
        "the hang is a restart, not an end"
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_that_keeps_beating_is_never_hung() {
    let svc = Service::new("steady", |ctx| async move {
        ctx.ready();
        while ctx.until_shutdown(sleep(999 * MS)).await.is_some() {
            ctx.heartbeat();
        }
    })
    .watchdog(SEC);
    let h = start(vec![svc]).await;
    sleep(Duration::from_secs(120)).await;
    let status = &h.status()[0];
    assert_eq!((status.state, status.runs), (ServiceState::Running, 1));
    assert!(status.last_error.is_none());
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hang_gives_up_a_service_that_never_restarts_and_escalates() {
    let svc = Service::new("once", |ctx| async move {
        ctx.ready();
        ctx.shutdown_requested().await;
    })
    .watchdog(5 * SEC)
    .restart(Restart::Never);
    let other = Service::new("other", |ctx| async move { ctx.shutdown_requested().await });
    let h = start(vec![svc, other]).await;
    let began = Instant::now();
    let err = h.wait().await.unwrap_err();
    assert_eq!(began.elapsed(), 5 * SEC);
    let [failure] = err.failures() else {
        panic!("one failure: {err}");
    };
    let FailureKind::GaveUp { restarts: 0, error } = failure.kind() else {
        panic!("gave up: {err}");
    };
    assert!(error.is_hung());
    assert_eq!(error.last_heartbeat(), Some(began));
    assert!(matches!(err, Error::Services(_)));
}

#[tokio::test(start_paused = true)]
async fn a_periodic_tick_that_takes_too_long_is_hung() {
    let t0 = Instant::now();
    let ticks = Arc::new(AtomicU32::new(0));
    let log = Log::new();
    let (t, l) = (ticks.clone(), log.clone());
    let svc = Service::without_context("tick", move || {
        let n = t.fetch_add(1, Ordering::SeqCst) + 1;
        l.push(format!("tick {n}"));
        async move {
            if n == 3 {
                sleep(Duration::from_secs(60)).await;
            }
        }
    })
    .every(SEC)
    .watchdog(3 * SEC)
    .backoff(SEC, SEC);
    let h = start(vec![svc]).await;
    let events = h.events();
    sleep(Duration::from_secs(10)).await;
    h.shutdown();
    h.wait().await.unwrap();
    // Ticks at 0, 1, 2 s; the third hangs, is hung at 5 s (its start beat), and
    // dropped at once (no context); the next run ticks at 6 s.
    assert_eq!(log.times_of("tick 3"), [2 * SEC]);
    assert_eq!(log.times_of("tick 4"), [6 * SEC]);
    let hung = hung_errors(events).await;
    assert_eq!(hung.len(), 1);
    assert_eq!(hung[0].last_heartbeat(), Some(t0 + 2 * SEC));
}

#[tokio::test(start_paused = true)]
async fn a_heartbeat_from_an_old_run_does_not_keep_a_new_one_alive() {
    let t0 = Instant::now();
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let svc = Service::new("flaky", move |ctx| {
        let n = r.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n == 1 {
                // A detached task keeps beating with run 1's context, for 3 s.
                let old = ctx.clone();
                tokio::spawn(async move {
                    for _ in 0..30 {
                        sleep(100 * MS).await;
                        old.heartbeat();
                    }
                });
                return Err("first run fails at once");
            }
            ctx.shutdown_requested().await;
            Ok(())
        }
    })
    .watchdog(SEC)
    .backoff(100 * MS, 100 * MS)
    .max_restarts(u32::MAX, SEC);
    let h = start(vec![svc]).await;
    let events = h.events();
    sleep(1500 * MS).await;
    h.shutdown();
    h.wait().await.unwrap();
    let hung = hung_errors_or_returned(events).await;
    // Run 2 started at 100 ms and never beat: hung at 1.1 s.
    assert_eq!(hung, [(2, Some(t0 + 100 * MS))]);
}

/// The hung failures (run, last heartbeat), skipping failures that are not hangs.
async fn hung_errors_or_returned(
    mut events: servicekit::lifecycle::Events,
) -> Vec<(u64, Option<Instant>)> {
    let mut hung = Vec::new();
    while let Some(ev) = events.next().await {
        if let Event::Failed { error, .. } = ev
            && error.is_hung()
        {
            hung.push((error.run(), error.last_heartbeat()));
        }
    }
    hung
}

#[tokio::test]
async fn invalid_watchdogs_are_rejected_before_anything_starts() {
    let cases = [
        (
            Service::without_context("bare", || async {}).watchdog(SEC),
            "needs a `ServiceContext`",
        ),
        (
            Service::new("zero", |_ctx| async {}).watchdog(Duration::ZERO),
            "`watchdog` must be greater than zero",
        ),
        (
            Service::without_context("slow-tick", || async {})
                .every(5 * SEC)
                .watchdog(5 * SEC),
            "must be longer than the period",
        ),
    ];
    for (svc, expected) in cases {
        let name = svc.name().to_owned();
        let err = Runner::new()
            .signals(false)
            .service(svc)
            .start()
            .await
            .unwrap_err();
        let Error::Config(ConfigError::Invalid { service, problem }) = &err else {
            panic!("{name}: {err}");
        };
        assert_eq!(service, &name);
        assert!(problem.contains(expected), "{name}: {problem}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_service_added_later_is_watched_from_its_own_start() {
    let h = start(vec![Service::new("first", |ctx| async move {
        ctx.shutdown_requested().await
    })])
    .await;
    sleep(Duration::from_secs(10)).await;
    let added_at = Instant::now();
    h.add(
        Service::new("late", |ctx| async move {
            while ctx.until_shutdown(sleep(500 * MS)).await.is_some() {
                ctx.heartbeat();
            }
        })
        .watchdog(SEC),
    )
    .unwrap();
    sleep(5 * SEC).await;
    let late = &h.status()[1];
    // Not hung at its first poll (10 s after the runner started), never hung since.
    assert_eq!((late.runs, late.state), (1, ServiceState::Running));
    assert!(late.last_error.is_none());
    assert_eq!(late.uptime, Some(added_at.elapsed()));
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hung_run_aborted_during_a_shutdown_is_reported_as_aborted() {
    let svc = Service::new("stuck", |_ctx| std::future::pending::<()>())
        .watchdog(SEC)
        .shutdown_timeout(2 * SEC);
    let h = start(vec![svc]).await;
    // Hung at 1 s, asked to stop; the shutdown comes while it winds down.
    sleep(1500 * MS).await;
    h.shutdown();
    let err = h.wait().await.unwrap_err();
    let [failure] = err.failures() else {
        panic!("{err}")
    };
    assert!(matches!(failure.kind(), FailureKind::Hung { .. }), "{err}");
    let report = err.report().unwrap();
    assert_eq!(report.services()[0].state, ServiceState::Aborted);
    assert!(report.services()[0].aborted);
}

#[tokio::test(start_paused = true)]
async fn a_watchdog_of_any_length_is_accepted() {
    let svc = Service::new("patient", |ctx| async move {
        ctx.ready();
        ctx.shutdown_requested().await
    })
    .watchdog(Duration::MAX);
    let h = start(vec![svc]).await;
    sleep(Duration::from_secs(3600)).await;
    assert_eq!(h.status()[0].runs, 1);
    h.shutdown();
    h.wait().await.unwrap();
}

//! Supervision rules, on tokio's paused clock: restart policies, backoff bounds,
//! intensity and escalation, panics, periodic services, dependencies and readiness,
//! shutdown timeouts, tied tasks, per-service control, status and events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use servicekit::error::FailureKind;
use servicekit::{
    Error, Event, OnGiveUp, Restart, Runner, RunnerHandle, Service, ServiceContext, ServiceState,
    error::ConfigError, run_services, service,
};
use servicekit_tests::{DropFlag, Log};
use tokio::time::{Instant, sleep};

const MS: Duration = Duration::from_millis(1);

fn runner() -> Runner {
    Runner::new().signals(false)
}

async fn start(services: Vec<Service>) -> RunnerHandle {
    runner()
        .services(services)
        .start()
        .await
        .expect("valid configuration")
}

/// A service that fails every run, logging each start.
fn failing(name: &str, log: &Log) -> Service {
    let log = log.clone();
    let n = name.to_owned();
    Service::without_context(name, move || {
        log.push(format!("{n} start"));
        async { Err::<(), _>("boom") }
    })
}

#[tokio::test(start_paused = true)]
async fn backoff_sequence_stays_within_exact_bounds() {
    let base = 100 * MS;
    let cap = Duration::from_secs(1);
    let mut above_base = 0;
    for _ in 0..20 {
        let log = Log::new();
        let svc = failing("f", &log)
            .backoff(base, cap)
            .max_restarts(u32::MAX, Duration::from_secs(1));
        let h = start(vec![svc]).await;
        sleep(Duration::from_secs(8)).await;
        h.shutdown();
        h.wait().await.unwrap();
        let times = log.times_of("f start");
        assert!(times.len() >= 9, "only {} runs in 8s", times.len());
        for (n, pair) in times.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let ceiling = (base * 2u32.pow(n.min(10) as u32)).min(cap);
            assert!(
                gap >= base && gap <= ceiling,
                "restart {n}: gap {gap:?} not in [{base:?}, {ceiling:?}]"
            );
            if gap > base {
                above_base += 1;
            }
        }
        // The first delay is exactly the base.
        assert_eq!(times[1] - times[0], base);
    }
    assert!(above_base > 50, "no jitter seen: {above_base}");
}

#[tokio::test(start_paused = true)]
async fn backoff_resets_after_a_stable_run() {
    let log = Log::new();
    let l = log.clone();
    let runs = Arc::new(AtomicU32::new(0));
    let svc = Service::without_context("s", move || {
        l.push("start");
        let n = runs.fetch_add(1, Ordering::SeqCst);
        async move {
            if n >= 3 {
                // stable for longer than reset_after, then fails
                sleep(Duration::from_secs(5)).await;
            }
            Err::<(), _>("boom")
        }
    })
    .backoff(100 * MS, Duration::from_secs(10))
    .reset_after(Duration::from_secs(2))
    .max_restarts(u32::MAX, Duration::from_secs(1));
    let h = start(vec![svc]).await;
    sleep(Duration::from_secs(30)).await;
    h.shutdown();
    h.wait().await.unwrap();
    let t = log.times_of("start");
    assert!(t.len() >= 6);
    // Runs 4.. last 5 s and then fail: each delay is back at exactly the base.
    for pair in t[3..].windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_secs(5) + 100 * MS);
    }
}

#[tokio::test(start_paused = true)]
async fn restart_always_reruns_a_clean_return_after_the_base_delay() {
    let log = Log::new();
    let l = log.clone();
    let svc = Service::without_context("loop", move || {
        l.push("run");
        async {}
    })
    .restart(Restart::Always)
    .backoff(Duration::from_secs(1), Duration::from_secs(30))
    .max_restarts(0, Duration::from_secs(60));
    let h = start(vec![svc]).await;
    sleep(Duration::from_millis(10_500)).await;
    h.shutdown();
    h.wait().await.unwrap();
    let t = log.times_of("run");
    // Clean returns do not count towards max_restarts (0 here) and do not grow the delay.
    assert_eq!(t.len(), 11);
    for pair in t.windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_secs(1));
    }
}

#[tokio::test(start_paused = true)]
async fn on_failure_ends_after_a_clean_return_and_the_runner_ends_ok() {
    let log = Log::new();
    let l = log.clone();
    let runs = Arc::new(AtomicU32::new(0));
    let svc = Service::without_context("transient", move || {
        l.push("run");
        let n = runs.fetch_add(1, Ordering::SeqCst);
        async move { if n < 2 { Err("not yet") } else { Ok(()) } }
    });
    let h = start(vec![svc]).await;
    h.wait().await.unwrap();
    assert_eq!(log.lines().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn never_gives_up_at_the_first_failure() {
    let log = Log::new();
    let svc = failing("temp", &log).restart(Restart::Never);
    let err = start(vec![svc]).await.wait().await.unwrap_err();
    assert_eq!(log.lines().len(), 1);
    let f = &err.failures()[0];
    assert_eq!(f.service(), "temp");
    assert!(matches!(f.kind(), FailureKind::GaveUp { restarts: 0, .. }));
    assert_eq!(err.to_string(), "service `temp` failed");
}

#[tokio::test(start_paused = true)]
async fn exceeding_the_restart_intensity_escalates_to_a_runner_shutdown() {
    let log = Log::new();
    let l = log.clone();
    let flaky = failing("flaky", &log)
        .backoff(Duration::ZERO, Duration::ZERO)
        .max_restarts(3, Duration::from_secs(10));
    let other = Service::new("other", move |ctx| {
        let l = l.clone();
        async move {
            ctx.shutdown_requested().await;
            l.push("other asked to stop");
        }
    });
    let began = Instant::now();
    let err = start(vec![flaky, other]).await.wait().await.unwrap_err();
    assert_eq!(began.elapsed(), Duration::ZERO);
    assert_eq!(log.times_of("flaky start").len(), 4);
    assert_eq!(log.lines().last().unwrap(), "other asked to stop");
    assert_eq!(err.failures().len(), 1);
    assert!(matches!(
        err.failures()[0].kind(),
        FailureKind::GaveUp { restarts: 3, .. }
    ));
    assert_eq!(err.to_string(), "service `flaky` gave up after 3 restarts");
    let cause = std::error::Error::source(&err).unwrap();
    assert_eq!(cause.to_string(), "service `flaky` run 4 failed");
    assert_eq!(cause.source().unwrap().to_string(), "boom");
}

#[tokio::test(start_paused = true)]
async fn the_intensity_window_slides() {
    // Failures 11 s apart never put 2 within 10 s: the service keeps being restarted.
    let log = Log::new();
    let l = log.clone();
    let svc = Service::without_context("slow-fail", move || {
        l.push("start");
        async {
            sleep(Duration::from_secs(11)).await;
            Err::<(), _>("boom")
        }
    })
    .backoff(Duration::ZERO, Duration::ZERO)
    .max_restarts(1, Duration::from_secs(10));
    let h = start(vec![svc]).await;
    sleep(Duration::from_secs(61)).await;
    assert_eq!(h.status()[0].state, ServiceState::Running);
    h.shutdown();
    h.wait().await.unwrap();
    assert_eq!(log.lines().len(), 6);

    // 4 s apart: the third failure has 2 others within 10 s and gives up.
    let log = Log::new();
    let l = log.clone();
    let svc = Service::without_context("fast-fail", move || {
        l.push("start");
        async {
            sleep(Duration::from_secs(4)).await;
            Err::<(), _>("boom")
        }
    })
    .backoff(Duration::ZERO, Duration::ZERO)
    .max_restarts(2, Duration::from_secs(10));
    let err = start(vec![svc]).await.wait().await.unwrap_err();
    assert_eq!(log.times_of("start").len(), 3);
    assert!(matches!(
        err.failures()[0].kind(),
        FailureKind::GaveUp { restarts: 2, .. }
    ));
}

/// A service that fails at once with no backoff and no restart limit restarts as
/// fast as it can, but gives its worker back between runs: on a one-thread runtime
/// another task keeps running beside it, and a shutdown ends it. (The runtime runs on
/// its own thread, so a restart loop that never yields fails the test instead of
/// hanging it.)
#[test]
fn a_zero_delay_restart_loop_gives_the_worker_back_and_stops_on_shutdown() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = rt.block_on(async {
            let svc = Service::without_context("spin", || async { Err::<(), _>("at once") })
                .backoff(Duration::ZERO, Duration::ZERO)
                .max_restarts(u32::MAX, Duration::from_secs(1));
            let h = start(vec![svc]).await;
            let mut ticks = 0;
            for _ in 0..100 {
                ticks += 1;
                tokio::task::yield_now().await;
            }
            let restarts = h.status()[0].restarts;
            h.shutdown();
            (ticks, restarts, h.wait().await)
        });
        let _ = done.send(outcome);
    });
    let (ticks, restarts, result) = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the restart loop starved the runtime's only thread");
    assert_eq!(ticks, 100);
    assert!(restarts >= 50, "only {restarts} restarts");
    result.expect("a clean stop");
}

#[tokio::test(start_paused = true)]
async fn on_give_up_ignore_keeps_the_others_and_reports_at_the_end() {
    let log = Log::new();
    let flaky = failing("optional", &log)
        .restart(Restart::Never)
        .on_give_up(OnGiveUp::Ignore);
    let steady = Service::new(
        "steady",
        |ctx| async move { ctx.shutdown_requested().await },
    );
    let h = start(vec![flaky, steady]).await;
    sleep(Duration::from_secs(5)).await;
    let st = h.status();
    assert_eq!(st[0].state, ServiceState::Failed);
    assert_eq!(st[1].state, ServiceState::Running);
    h.shutdown();
    let err = h.wait().await.unwrap_err();
    assert_eq!(err.failures().len(), 1);
    assert_eq!(err.failures()[0].service(), "optional");
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_a_failure_with_its_message() {
    let n = 42;
    let svc = Service::without_context("panicky", move || async move {
        assert!(n != 42, "kaboom {n}");
    })
    .restart(Restart::Never);
    let err = start(vec![svc]).await.wait().await.unwrap_err();
    let FailureKind::GaveUp { error, .. } = err.failures()[0].kind() else {
        panic!("expected a give-up: {err}");
    };
    assert_eq!(error.panic_message(), Some("kaboom 42"));
    assert_eq!(
        error.to_string(),
        "service `panicky` run 1 panicked: kaboom 42"
    );
}

#[tokio::test(start_paused = true)]
async fn the_next_run_starts_only_after_the_previous_one_has_ended() {
    let running = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicU32::new(0));
    let runs = Arc::new(AtomicU32::new(0));
    let (r, o, n) = (running.clone(), overlaps.clone(), runs.clone());
    let svc = Service::new("exclusive", move |ctx| {
        let (r, o, n) = (r.clone(), o.clone(), n.clone());
        async move {
            if r.swap(true, Ordering::SeqCst) {
                o.fetch_add(1, Ordering::SeqCst);
            }
            struct Clear(Arc<AtomicBool>);
            impl Drop for Clear {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::SeqCst);
                }
            }
            let _clear = Clear(r);
            n.fetch_add(1, Ordering::SeqCst);
            // fail quickly, or get stopped by a restart command while sleeping
            if ctx
                .until_shutdown(sleep(Duration::from_millis(50)))
                .await
                .is_none()
            {
                return Ok(());
            }
            Err::<(), _>("again")
        }
    })
    .backoff(Duration::ZERO, Duration::ZERO)
    .max_restarts(u32::MAX, Duration::from_secs(1));
    let h = start(vec![svc]).await;
    for _ in 0..20 {
        sleep(Duration::from_millis(17)).await;
        h.restart("exclusive").unwrap();
    }
    h.shutdown();
    h.wait().await.unwrap();
    assert!(
        runs.load(Ordering::SeqCst) >= 20,
        "runs: {}",
        runs.load(Ordering::SeqCst)
    );
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn periodic_runs_never_overlap_and_skip_missed_ticks() {
    let log = Log::new();
    let l = log.clone();
    let n = Arc::new(AtomicU32::new(0));
    let svc = Service::without_context("tick", move || {
        let l = l.clone();
        let k = n.fetch_add(1, Ordering::SeqCst);
        async move {
            l.push("begin");
            if k == 2 {
                sleep(Duration::from_millis(2500)).await;
            }
            l.push("end");
        }
    })
    .every(Duration::from_secs(1));
    let h = start(vec![svc]).await;
    sleep(Duration::from_millis(6500)).await;
    h.shutdown();
    h.wait().await.unwrap();
    let begins: Vec<u64> = log
        .times_of("begin")
        .iter()
        .map(|d| d.as_millis() as u64)
        .collect();
    // 0, 1, 2 (lasts until 4.5: ticks 3 and 4 are skipped), 5, 6
    assert_eq!(begins, vec![0, 1000, 2000, 5000, 6000]);
    let lines = log.lines();
    for pair in lines.chunks(2).filter(|c| c.len() == 2) {
        assert_eq!(pair, ["begin", "end"], "runs overlapped: {lines:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_periodic_service_with_a_context_stops_between_ticks() {
    #[service(every = "1h")]
    async fn hourly(ctx: ServiceContext, log: Log) {
        log.push(format!("tick {}", ctx.run()));
    }
    let log = Log::new();
    let h = start(vec![hourly(log.clone())]).await;
    sleep(Duration::from_secs(1)).await;
    let began = Instant::now();
    h.shutdown();
    h.wait().await.unwrap();
    assert_eq!(
        began.elapsed(),
        Duration::ZERO,
        "stop must not wait for the next tick"
    );
    assert_eq!(log.lines(), ["tick 1"]);
}

fn tracked(name: &str, log: &Log, ready_after: Duration) -> Service {
    let (l, n) = (log.clone(), name.to_owned());
    Service::new(name, move |ctx| {
        let (l, n) = (l.clone(), n.clone());
        async move {
            l.push(format!("{n} start"));
            sleep(ready_after).await;
            ctx.ready();
            ctx.shutdown_requested().await;
            l.push(format!("{n} stop"));
        }
    })
}

#[tokio::test(start_paused = true)]
async fn dependencies_start_in_order_after_readiness_and_stop_in_reverse() {
    let log = Log::new();
    let db = tracked("db", &log, Duration::from_secs(1));
    let api = tracked("api", &log, Duration::from_secs(2)).after(["db"]);
    let worker = tracked("worker", &log, Duration::ZERO).after(["api"]);
    // Given in the wrong order on purpose.
    let h = start(vec![worker, api, db]).await;
    sleep(Duration::from_secs(10)).await;
    h.shutdown();
    h.wait().await.unwrap();
    assert_eq!(
        log.lines(),
        [
            "db start",
            "api start",
            "worker start",
            "worker stop",
            "api stop",
            "db stop"
        ]
    );
    assert_eq!(log.times_of("api start"), [Duration::from_secs(1)]);
    assert_eq!(log.times_of("worker start"), [Duration::from_secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn a_service_without_context_is_ready_when_started() {
    let log = Log::new();
    let l = log.clone();
    let base = Service::without_context("base", std::future::pending::<()>);
    let dep = Service::without_context("dep", move || {
        l.push("dep start");
        std::future::pending::<()>()
    })
    .after(["base"]);
    let h = start(vec![base, dep]).await;
    sleep(MS).await;
    assert_eq!(log.times_of("dep start"), [Duration::ZERO]);
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_dependency_stops_its_dependents_first_and_they_restart_after_it() {
    let log = Log::new();
    let (l, runs) = (log.clone(), Arc::new(AtomicU32::new(0)));
    let db = Service::new("db", move |ctx| {
        let l = l.clone();
        let n = runs.fetch_add(1, Ordering::SeqCst);
        async move {
            l.push("db start");
            ctx.ready();
            if n == 0 {
                sleep(Duration::from_secs(1)).await;
                l.push("db crash");
                return Err("lost connection");
            }
            ctx.shutdown_requested().await;
            l.push("db stop");
            Ok(())
        }
    })
    .backoff(Duration::from_secs(1), Duration::from_secs(1));
    let api = tracked("api", &log, Duration::ZERO).after(["db"]);
    let h = start(vec![db, api]).await;
    sleep(Duration::from_secs(5)).await;
    h.shutdown();
    h.wait().await.unwrap();
    assert_eq!(
        log.lines(),
        [
            "db start",
            "api start",
            "db crash",
            "api stop",
            "db start",
            "api start",
            "api stop",
            "db stop"
        ]
    );
    assert_eq!(log.times_of("api start")[1], Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn restart_and_stop_one_service_move_its_dependents_along() {
    let log = Log::new();
    let db = tracked("db", &log, Duration::ZERO);
    let api = tracked("api", &log, Duration::ZERO).after(["db"]);
    let other = tracked("other", &log, Duration::ZERO);
    let h = start(vec![db, api, other]).await;
    sleep(MS).await;
    h.restart("db").unwrap();
    sleep(MS).await;
    let lines = log.lines();
    let tail: Vec<&str> = lines.iter().skip(3).map(String::as_str).collect();
    assert_eq!(tail, ["api stop", "db stop", "db start", "api start"]);
    assert_eq!(h.status()[0].runs, 2);

    h.stop("db").unwrap();
    sleep(MS).await;
    let st = h.status();
    assert_eq!(st[0].state, ServiceState::Stopped);
    assert_eq!(
        st[1].state,
        ServiceState::Stopped,
        "a dependent ends with its dependency"
    );
    assert_eq!(st[2].state, ServiceState::Running);
    assert!(h.restart("nope").is_err());
    h.shutdown();
    h.wait().await.unwrap();
    assert_eq!(log.lines().last().unwrap(), "other stop");
}

/// Commands given before the supervisor has taken them: a stop is not undone by a
/// restart that follows it at once (the stronger command is kept).
#[tokio::test(start_paused = true)]
async fn a_stop_followed_at_once_by_a_restart_stays_a_stop() {
    let log = Log::new();
    let h = start(vec![tracked("a", &log, Duration::ZERO)]).await;
    sleep(MS).await;
    h.stop("a").unwrap();
    h.restart("a").unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(h.status()[0].state, ServiceState::Stopped);
    assert_eq!(log.lines(), ["a start", "a stop"]);
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hung_service_is_aborted_after_its_timeout_and_named() {
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let stubborn = Service::new("stubborn", move |_ctx| {
        let guard = DropFlag(d.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        }
    })
    .shutdown_timeout(Duration::from_secs(2));
    let polite = Service::new(
        "polite",
        |ctx| async move { ctx.shutdown_requested().await },
    );
    let h = runner()
        .shutdown_timeout(Duration::from_secs(30))
        .services([stubborn, polite])
        .start()
        .await
        .unwrap();
    sleep(MS).await;
    sleep(MS).await;
    let began = Instant::now();
    let mut events = h.events();
    h.shutdown();
    let err = h.wait().await.unwrap_err();
    assert_eq!(began.elapsed(), Duration::from_secs(2));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the hung future was dropped"
    );
    // It ends in a state that says it was aborted, not `Stopped`.
    let mut last = std::collections::HashMap::new();
    while let Some(ev) = events.next().await {
        if let Event::State { service, state } = ev {
            last.insert(service.to_string(), state);
        }
    }
    assert_eq!(last["stubborn"], ServiceState::Aborted);
    assert_eq!(last["polite"], ServiceState::Stopped);
    assert!(matches!(err.failures()[0].kind(), FailureKind::Hung { .. }));
    assert_eq!(err.failures().len(), 1);
    assert_eq!(err.failures()[0].service(), "stubborn");
    assert_eq!(
        err.to_string(),
        "service `stubborn` did not stop within 2s and was aborted"
    );
}

#[tokio::test(start_paused = true)]
async fn the_runner_default_shutdown_timeout_applies() {
    let stubborn = Service::new("s", |_ctx| std::future::pending::<()>());
    let h = runner()
        .shutdown_timeout(Duration::from_secs(7))
        .service(stubborn)
        .start()
        .await
        .unwrap();
    sleep(MS).await;
    let began = Instant::now();
    h.shutdown();
    assert!(h.wait().await.is_err());
    assert_eq!(began.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn a_service_without_context_is_cancelled_at_once() {
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let svc = Service::without_context("plain", move || {
        let guard = DropFlag(d.clone());
        async move {
            let _guard = guard;
            sleep(Duration::from_secs(3600)).await;
        }
    });
    let h = start(vec![svc]).await;
    sleep(Duration::from_secs(1)).await;
    let began = Instant::now();
    h.shutdown();
    h.wait().await.unwrap();
    assert_eq!(began.elapsed(), Duration::ZERO);
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn tasks_spawned_from_the_context_are_tied_to_the_run() {
    let log = Log::new();
    let l = log.clone();
    let svc = Service::new("spawner", move |ctx| {
        let l = l.clone();
        async move {
            let c = ctx.clone();
            let l2 = l.clone();
            ctx.spawn(async move {
                c.shutdown_requested().await;
                sleep(Duration::from_millis(500)).await;
                l2.push("polite task drained");
            });
            let l3 = l.clone();
            let stubborn = DropFlagLog(l3);
            ctx.spawn(async move {
                let _s = stubborn;
                std::future::pending::<()>().await;
            });
            ctx.shutdown_requested().await;
            l.push("service returned");
        }
    })
    .shutdown_timeout(Duration::from_secs(2));
    struct DropFlagLog(Log);
    impl Drop for DropFlagLog {
        fn drop(&mut self) {
            self.0.push("stubborn task aborted");
        }
    }
    let h = start(vec![svc]).await;
    sleep(MS).await;
    let began = Instant::now();
    let mut events = h.events();
    h.shutdown();
    // The stubborn task is aborted after the timeout, and that is reported: the
    // service did not stop by itself.
    let err = h.wait().await.unwrap_err();
    assert_eq!(began.elapsed(), Duration::from_secs(2));
    assert_eq!(err.failures().len(), 1, "{err}");
    assert!(
        matches!(
            err.failures()[0].kind(),
            FailureKind::TasksHung { tasks: 1, timeout } if *timeout == Duration::from_secs(2)
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "service `spawner`: 1 tied task did not stop within 2s and was aborted"
    );
    let mut last = None;
    while let Some(ev) = events.next().await {
        if let Event::State { state, .. } = ev {
            last = Some(state);
        }
    }
    assert_eq!(last, Some(ServiceState::Aborted));
    assert_eq!(
        log.lines(),
        [
            "service returned",
            "polite task drained",
            "stubborn task aborted"
        ]
    );
    assert_eq!(
        log.times_of("polite task drained"),
        [Duration::from_millis(501)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_tied_task_fails_the_run() {
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let svc = Service::new("s", move |ctx| {
        r.fetch_add(1, Ordering::SeqCst);
        async move {
            ctx.spawn(async { Err::<(), _>("task broke") });
            ctx.shutdown_requested().await;
        }
    })
    .restart(Restart::OnFailure)
    .backoff(Duration::from_secs(1), Duration::from_secs(1))
    .max_restarts(2, Duration::from_secs(60));
    let err = start(vec![svc]).await.wait().await.unwrap_err();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    let cause = std::error::Error::source(&err).unwrap();
    assert_eq!(
        cause.to_string(),
        "a task spawned by service `s` run 3 failed"
    );
    assert_eq!(cause.source().unwrap().to_string(), "task broke");
}

#[tokio::test(start_paused = true)]
async fn status_and_events_follow_every_state_change() {
    let svc = Service::without_context("f", || async { Err::<(), _>("nope") })
        .backoff(Duration::from_secs(1), Duration::from_secs(1))
        .max_restarts(1, Duration::from_secs(60));
    let h = runner().service(svc).start().await.unwrap();
    let mut events = h.events();
    sleep(Duration::from_millis(500)).await;
    let st = &h.status()[0];
    assert_eq!(st.state, ServiceState::Restarting);
    assert_eq!(st.restarts, 1);
    assert_eq!(
        st.last_error.as_ref().unwrap().to_string(),
        "service `f` run 1 failed"
    );
    let err = h.wait().await.unwrap_err();
    assert_eq!(err.failures()[0].service(), "f");
    let mut seen = Vec::new();
    while let Some(ev) = events.next().await {
        match ev {
            Event::State { state, .. } => seen.push(state.to_string()),
            Event::Ready { .. } => seen.push("ready".to_string()),
            Event::Failed { error, .. } => seen.push(format!("failed run {}", error.run())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "running",
            "ready",
            "failed run 1",
            "restarting",
            "running",
            "ready",
            "failed run 2",
            "failed"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn status_reports_uptime_of_the_current_run() {
    let h = start(vec![Service::new("s", |ctx| async move {
        ctx.shutdown_requested().await
    })])
    .await;
    sleep(Duration::from_secs(3)).await;
    let st = &h.status()[0];
    assert_eq!(st.state, ServiceState::Running);
    assert_eq!(st.uptime, Some(Duration::from_secs(3)));
    assert_eq!(st.runs, 1);
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn uptime_counts_from_the_start_of_each_run() {
    // `db` is ready after 1 s; `api` starts only then.
    let db = Service::new("db", |ctx| async move {
        sleep(Duration::from_secs(1)).await;
        ctx.ready();
        ctx.shutdown_requested().await
    });
    let api = Service::new("api", |ctx| async move {
        ctx.ready();
        ctx.shutdown_requested().await
    })
    .after(["db"]);
    let h = start(vec![db, api]).await;
    sleep(Duration::from_secs(3)).await;
    let uptimes = |h: &servicekit::RunnerHandle| {
        h.status()
            .iter()
            .map(|s| (s.runs, s.uptime))
            .collect::<Vec<_>>()
    };
    let secs = |n| Some(Duration::from_secs(n));
    assert_eq!(uptimes(&h), [(1, secs(3)), (1, secs(2))]);
    // A restart at t = 3 s: `db` runs again at once, `api` once `db` is ready again.
    h.restart("db").unwrap();
    sleep(Duration::from_secs(4)).await;
    assert_eq!(uptimes(&h), [(2, secs(4)), (2, secs(3))]);
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_the_handle_shuts_everything_down() {
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let svc = Service::new("s", move |ctx| {
        let guard = DropFlag(d.clone());
        async move {
            ctx.shutdown_requested().await;
            drop(guard);
        }
    });
    let h = start(vec![svc]).await;
    sleep(MS).await;
    drop(h);
    sleep(MS).await;
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_token_starts_a_graceful_shutdown() {
    let token = servicekit::CancellationToken::new();
    let h = runner()
        .shutdown_token(token.clone())
        .service(Service::new("s", |ctx| async move {
            ctx.shutdown_requested().await
        }))
        .start()
        .await
        .unwrap();
    sleep(Duration::from_secs(1)).await;
    token.cancel();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_error_while_stopping_is_reported() {
    let svc = Service::new("s", |ctx| async move {
        ctx.shutdown_requested().await;
        Err::<(), _>("flush failed")
    });
    let h = start(vec![svc]).await;
    sleep(MS).await;
    h.shutdown();
    let err = h.wait().await.unwrap_err();
    assert_eq!(err.to_string(), "service `s` failed while stopping");
    assert!(matches!(
        err.failures()[0].kind(),
        FailureKind::StopFailed { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_the_stop_request_is_not_a_failure_to_stop() {
    // `api` takes 2 s to stop; `db` must wait for it, and fails on its own 1 s into
    // the shutdown, before it is asked to stop.
    let token = servicekit::CancellationToken::new();
    let t = token.clone();
    let db = Service::new("db", move |ctx| {
        let t = t.clone();
        async move {
            ctx.ready();
            t.cancelled().await;
            sleep(Duration::from_secs(1)).await;
            assert!(!ctx.is_shutdown_requested());
            Err::<(), _>("connection lost")
        }
    });
    let api = Service::new("api", |ctx| async move {
        ctx.shutdown_requested().await;
        sleep(Duration::from_secs(2)).await;
    })
    .after(["db"]);
    let h = runner()
        .shutdown_token(token)
        .services([db, api])
        .start()
        .await
        .unwrap();
    let mut events = h.events();
    sleep(MS).await;
    h.shutdown();
    let stopping = Instant::now();
    let status = loop {
        sleep(MS).await;
        let status = h.status();
        if status.iter().all(|s| s.state.is_terminal()) {
            break status;
        }
    };
    // `db` outlived `api`, which took 2 s (checked every millisecond).
    let elapsed = stopping.elapsed();
    assert!(elapsed >= Duration::from_secs(2) && elapsed <= Duration::from_secs(2) + MS);
    h.wait().await.expect("a clean shutdown");
    // Reported as a failure of its run, and the service ends stopped.
    assert_eq!(status[0].state, ServiceState::Stopped);
    assert_eq!(
        status[0].last_error.as_ref().unwrap().to_string(),
        "service `db` run 1 failed"
    );
    let mut failed = Vec::new();
    while let Some(ev) = events.next().await {
        if let Event::Failed { service, .. } = ev {
            failed.push(service.to_string());
        }
    }
    assert_eq!(failed, ["db"]);
}

#[tokio::test(start_paused = true)]
async fn a_ready_from_a_run_being_stopped_does_not_start_its_dependents() {
    // `db` gets ready 1 s into each run, and takes 1 s to flush once asked to stop.
    // Restarted at 0.5 s, its first run still calls `ready()` at 1 s, while it is
    // being stopped: that must not start `api`, whose dependency is going away
    // (it ends at 2 s). `api` starts once the second run is ready, at 3 s.
    let log = Log::new();
    let l = log.clone();
    let db = Service::new("db", move |ctx| {
        let l = l.clone();
        async move {
            l.push(format!("db {} starts", ctx.run()));
            sleep(Duration::from_secs(1)).await;
            ctx.ready();
            ctx.shutdown_requested().await;
            sleep(Duration::from_secs(1)).await;
            l.push(format!("db {} ends", ctx.run()));
        }
    });
    let l = log.clone();
    let api = Service::new("api", move |ctx| {
        let l = l.clone();
        async move {
            l.push(format!("api {} starts", ctx.run()));
            ctx.shutdown_requested().await;
        }
    })
    .after(["db"]);
    let h = start(vec![db, api]).await;
    sleep(Duration::from_millis(500)).await;
    h.restart("db").unwrap();
    sleep(Duration::from_secs(4)).await;
    h.shutdown();
    h.wait().await.unwrap();
    assert_eq!(
        log.lines(),
        [
            "db 1 starts",
            "db 1 ends",
            "db 2 starts",
            "api 1 starts",
            "db 2 ends"
        ]
    );
    assert_eq!(log.times_of("db 1 ends"), [Duration::from_secs(2)]);
    assert_eq!(log.times_of("api 1 starts"), [Duration::from_secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_service_reports_stopping_then_stopped() {
    let h = start(vec![Service::new("s", |ctx| async move {
        ctx.shutdown_requested().await
    })])
    .await;
    let mut events = h.events();
    sleep(MS).await;
    h.shutdown();
    h.wait().await.unwrap();
    let mut seen = Vec::new();
    while let Some(ev) = events.next().await {
        match ev {
            Event::State { state, .. } => seen.push(state),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ServiceState::Running,
            ServiceState::Stopping,
            ServiceState::Stopped
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_task_spawned_as_the_body_stops_gets_the_shutdown_timeout() {
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let svc = Service::new("s", move |ctx| {
        let d = d.clone();
        async move {
            ctx.shutdown_requested().await;
            // A last flush, handed to a tied task as the body returns.
            ctx.spawn(async move {
                sleep(Duration::from_secs(1)).await;
                d.store(true, Ordering::SeqCst);
            });
        }
    })
    .shutdown_timeout(Duration::from_secs(5));
    let h = start(vec![svc]).await;
    sleep(MS).await;
    h.shutdown();
    let stopping = Instant::now();
    h.wait().await.unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(stopping.elapsed(), Duration::from_secs(1));
}

async fn config_error(services: Vec<Service>) -> ConfigError {
    match runner().services(services).start().await {
        Err(Error::Config(e)) => e,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn invalid_configurations_are_rejected_before_anything_starts() {
    let started = Arc::new(AtomicBool::new(false));
    let probe = || {
        let s = started.clone();
        Service::without_context("probe", move || {
            s.store(true, Ordering::SeqCst);
            async {}
        })
    };
    let noop = |n: &str| Service::without_context(n, || async {});

    let e = config_error(vec![probe(), noop("a"), noop("a")]).await;
    assert_eq!(e, ConfigError::DuplicateName("a".into()));
    assert_eq!(e.to_string(), "two services are named `a`");

    let e = config_error(vec![probe(), noop("api").after(["db"])]).await;
    assert_eq!(
        e.to_string(),
        "service `api` depends on `db`, which is not a service of this runner"
    );

    let e = config_error(vec![
        probe(),
        noop("a").after(["b"]),
        noop("b").after(["c"]),
        noop("c").after(["a"]),
    ])
    .await;
    assert_eq!(e.to_string(), "dependency cycle: a -> b -> c -> a");

    let e = config_error(vec![probe(), noop("x").max_restarts(3, Duration::ZERO)]).await;
    assert_eq!(
        e.to_string(),
        "service `x`: `within` must be greater than zero"
    );

    let e = config_error(vec![
        probe(),
        noop("x").backoff(Duration::from_secs(2), Duration::from_secs(1)),
    ])
    .await;
    assert_eq!(
        e.to_string(),
        "service `x`: `backoff` base 2s is greater than its cap 1s"
    );

    let e = config_error(vec![probe(), noop("x").every(Duration::ZERO)]).await;
    assert_eq!(
        e.to_string(),
        "service `x`: `every` must be greater than zero"
    );

    let e = config_error(vec![probe(), noop("")]).await;
    assert_eq!(e, ConfigError::EmptyName);

    let e = config_error(vec![probe(), noop("self").after(["self"])]).await;
    // A one-service cycle (issue 24: it used to be `Invalid`, "it depends on itself").
    assert_eq!(e, ConfigError::Cycle(vec!["self".into(), "self".into()]));
    assert_eq!(e.to_string(), "dependency cycle: self -> self");

    sleep(Duration::from_secs(1)).await;
    assert!(
        !started.load(Ordering::SeqCst),
        "a service started despite the error"
    );
}

#[tokio::test(start_paused = true)]
async fn run_services_returns_once_every_service_has_ended() {
    #[service(restart = "never")]
    async fn once(log: Log, n: u32) {
        sleep(Duration::from_secs(u64::from(n))).await;
        log.push(format!("done {n}"));
    }
    let log = Log::new();
    // run_services installs signal handlers; that is fine in a test process.
    run_services([once(log.clone(), 1), once_named(log.clone())])
        .await
        .unwrap();
    assert_eq!(log.lines(), ["done 1", "named done"]);

    #[service(name = "custom-name", restart = "never")]
    async fn once_named(log: Log) {
        sleep(Duration::from_secs(2)).await;
        log.push("named done");
    }
}

#[tokio::test(start_paused = true)]
async fn macro_services_get_fresh_argument_clones_and_their_settings() {
    #[service(
        name = "counter",
        restart = "always",
        backoff = "1s..1s",
        max_restarts = 0,
        within = "1m",
        on_give_up = "ignore",
        shutdown_timeout = "3s"
    )]
    async fn counter(mut seen: Vec<u64>, ctx: ServiceContext, log: Log) -> Result<(), String> {
        seen.push(ctx.run());
        log.push(format!("{seen:?}"));
        if ctx.run() == 3 {
            return Err("third run fails".into());
        }
        Ok(())
    }
    let log = Log::new();
    let svc = counter(vec![0], log.clone());
    assert_eq!(svc.name(), "counter");
    let h = start(vec![
        svc,
        Service::new("keep", |c| async move { c.shutdown_requested().await }),
    ])
    .await;
    sleep(Duration::from_secs(10)).await;
    // Each run starts from a fresh clone of the argument.
    assert_eq!(log.lines(), ["[0, 1]", "[0, 2]", "[0, 3]"]);
    // max_restarts = 0: the first failure gives up; on_give_up = "ignore" keeps `keep`.
    assert_eq!(h.status()[0].state, ServiceState::Failed);
    assert_eq!(h.status()[1].state, ServiceState::Running);
    h.shutdown();
    assert_eq!(
        h.wait().await.unwrap_err().failures()[0].service(),
        "counter"
    );
}

#[tokio::test(start_paused = true)]
async fn macro_dependencies_and_ready() {
    #[service(name = "db")]
    async fn db(ctx: ServiceContext, log: Log) {
        sleep(Duration::from_secs(1)).await;
        log.push("db ready");
        ctx.ready();
        ctx.shutdown_requested().await;
    }
    #[service(name = "api", after = ["db"])]
    async fn api(log: Log) {
        log.push("api start");
        std::future::pending::<()>().await;
    }
    let log = Log::new();
    let h = start(vec![api(log.clone()), db(log.clone())]).await;
    sleep(Duration::from_secs(2)).await;
    assert_eq!(log.lines(), ["db ready", "api start"]);
    h.shutdown();
    h.wait().await.unwrap();
}

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<ServiceContext>();
    assert_send_sync::<RunnerHandle>();
    assert_send_sync::<Error>();
    assert_send::<Service>();
    assert_send::<servicekit::lifecycle::Events>();
    assert_send_sync::<servicekit::TaskGroup>();
}

/// A panic in the service's closure itself, before it returns the body's future, is
/// a failed run like a panic in the body: restarted per policy, its message kept,
/// and reported by name when the service gives up (it used to end the supervisor
/// task and leave `wait()` hanging).
#[tokio::test(start_paused = true)]
async fn a_panic_while_making_the_body_is_a_failed_run() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = Service::without_context("maker", move || {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("closure boom");
        }
        std::future::pending::<()>()
    })
    .backoff(MS, MS);
    let h = start(vec![svc]).await;
    sleep(100 * MS).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let status = &h.status()[0];
    assert_eq!((status.state, status.restarts), (ServiceState::Running, 1));
    let error = status
        .last_error
        .as_ref()
        .expect("the first run failed")
        .to_string();
    assert!(error.contains("closure boom"), "{error}");
    h.shutdown();
    h.wait().await.unwrap();

    let svc = Service::without_context("maker", || -> std::future::Ready<()> {
        panic!("closure boom")
    })
    .restart(Restart::Never);
    let h = start(vec![svc]).await;
    let err = tokio::time::timeout(Duration::from_secs(5), h.wait())
        .await
        .expect("the runner ends")
        .unwrap_err();
    let err = format!("{:?}", anyhow::Error::from(err));
    assert!(
        err.contains("maker") && err.contains("closure boom"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_restarts_the_others_and_tells_the_hook_services() {
    use servicekit::Reload;
    let runs = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = |name: &'static str| {
        let runs = runs.clone();
        move |ctx: ServiceContext| {
            let runs = runs.clone();
            async move {
                runs.lock()
                    .unwrap()
                    .push(format!("{name} run {}", ctx.run()));
                let mut reloads = ctx.reloads();
                ctx.ready();
                while ctx.until_shutdown(reloads.next()).await.is_some() {
                    runs.lock().unwrap().push(format!("{name} reloaded"));
                }
            }
        }
    };
    // `config` takes reloads; `api` depends on it, restarts; `cache` restarts too.
    let handle = runner()
        .service(Service::new("config", log("config")).reload(Reload::Hook))
        .service(Service::new("api", log("api")).after(["config"]))
        .service(Service::new("cache", log("cache")))
        .start()
        .await
        .unwrap();
    sleep(Duration::from_millis(10)).await;
    handle.reload();
    sleep(Duration::from_millis(10)).await;
    let mut seen = runs.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            "api run 1",
            "api run 2",
            "cache run 1",
            "cache run 2",
            "config reloaded",
            "config run 1"
        ]
    );
    handle.shutdown();
    handle.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_macro_sets_the_reload_hook() {
    #[servicekit::service(reload = "hook")]
    async fn watcher(ctx: ServiceContext) {
        ctx.ready();
        ctx.shutdown_requested().await;
    }
    let handle = runner().service(watcher()).start().await.unwrap();
    sleep(Duration::from_millis(10)).await;
    handle.reload();
    sleep(Duration::from_millis(10)).await;
    assert_eq!(
        handle.status()[0].runs,
        1,
        "a hook service is not restarted"
    );
    handle.shutdown();
    handle.wait().await.unwrap();
}

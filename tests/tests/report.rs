//! The report `wait()` returns, on tokio's paused clock: per service, its final
//! state, runs, restarts, last error, how long its stop took, whether it was
//! aborted and how many tied tasks had to be aborted; "stopped" means its future
//! and its tied tasks were dropped; `status()` stays readable after the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use servicekit::error::FailureKind;
use servicekit::{Error, Restart, Service, ServiceState};
use servicekit_tests::{DropFlag, start};
use tokio::time::sleep;

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn a_clean_shutdown_reports_every_service() {
    let failures = Arc::new(AtomicU32::new(0));
    let f = failures.clone();
    let services = vec![
        // Stops in the poll that asks it.
        Service::new("api", |ctx| async move {
            ctx.ready();
            ctx.shutdown_requested().await;
        }),
        // Takes 300 ms to drain once asked.
        Service::new("drainer", |ctx| async move {
            ctx.ready();
            ctx.shutdown_requested().await;
            sleep(300 * MS).await;
        }),
        // Returns by itself: it was never stopped.
        Service::without_context("oneshot", || async {}),
        // Fails twice, then runs until asked to stop.
        Service::new("flaky", move |ctx| {
            let n = f.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    return Err(format!("attempt {n} failed"));
                }
                ctx.shutdown_requested().await;
                Ok(())
            }
        })
        .backoff(10 * MS, 10 * MS),
        // Depends on a service that never becomes ready: it never starts.
        Service::new("never-ready", |ctx| async move {
            ctx.shutdown_requested().await
        }),
        Service::new(
            "waiting",
            |ctx| async move { ctx.shutdown_requested().await },
        )
        .after(["never-ready"]),
    ];
    let h = start(services).await;
    sleep(Duration::from_secs(1)).await;
    h.shutdown();
    let report = h.wait().await.expect("a clean shutdown");
    let names: Vec<&str> = report.services().iter().map(|s| &*s.name).collect();
    assert_eq!(
        names,
        [
            "api",
            "drainer",
            "oneshot",
            "flaky",
            "never-ready",
            "waiting"
        ]
    );
    let get = |n: &str| report.get(n).unwrap();
    for s in report.services() {
        assert_eq!(s.state, ServiceState::Stopped, "{s}");
        assert!(!s.aborted && s.tasks_aborted == 0, "{s}");
    }
    assert!(report.is_clean());
    assert_eq!(report.unclean().count(), 0);

    assert_eq!(
        (get("api").runs, get("api").stop_duration),
        (1, Some(Duration::ZERO))
    );
    assert_eq!(get("drainer").stop_duration, Some(300 * MS));
    assert_eq!(
        (get("oneshot").runs, get("oneshot").stop_duration),
        (1, None)
    );
    let flaky = get("flaky");
    assert_eq!((flaky.runs, flaky.restarts), (3, 2));
    assert_eq!(
        flaky.last_error.as_ref().map(|e| (e.run(), e.to_string())),
        Some((2, "service `flaky` run 2 failed".to_owned()))
    );
    let waiting = get("waiting");
    assert_eq!((waiting.runs, waiting.stop_duration), (0, None));
    assert!(get("never-ready").last_error.is_none());

    assert_eq!(
        get("flaky").to_string(),
        "`flaky`: stopped after 3 runs, 2 restarts, stopped at once; last error: service `flaky` run 2 failed: attempt 1 failed"
    );

    // The handle is still there: the final states, and the same outcome again.
    let status = h.status();
    assert!(status.iter().all(|s| s.state == ServiceState::Stopped));
    let again = h.wait().await.expect("the same outcome");
    assert_eq!(again.services().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn aborted_runs_and_tied_tasks_are_in_the_report_inside_the_error() {
    let body_dropped = Arc::new(AtomicBool::new(false));
    let task_dropped = Arc::new(AtomicBool::new(false));
    let (bd, td) = (body_dropped.clone(), task_dropped.clone());
    let services = vec![
        // Ignores its stop request: aborted after its 1 s timeout.
        Service::new("stubborn", move |_ctx| {
            let flag = DropFlag(bd.clone());
            async move {
                let _flag = flag;
                std::future::pending::<()>().await;
            }
        })
        .shutdown_timeout(Duration::from_secs(1)),
        // Returns when asked, but a task tied to it does not stop.
        Service::new("spawner", move |ctx| {
            let td = td.clone();
            async move {
                let flag = DropFlag(td);
                ctx.spawn(async move {
                    let _flag = flag;
                    std::future::pending::<()>().await;
                    Ok::<(), std::io::Error>(())
                });
                ctx.ready();
                ctx.shutdown_requested().await;
            }
        })
        .shutdown_timeout(Duration::from_secs(2)),
        Service::new("fine", |ctx| async move { ctx.shutdown_requested().await }),
    ];
    let h = start(services).await;
    sleep(100 * MS).await;
    h.shutdown();
    let err = h.wait().await.unwrap_err();
    // "Stopped" (or aborted) means gone: the body's and the task's futures were
    // dropped before `wait` returned.
    assert!(body_dropped.load(Ordering::SeqCst));
    assert!(task_dropped.load(Ordering::SeqCst));

    assert!(matches!(err, Error::Services(_)), "{err}");
    let kinds: Vec<_> = err
        .failures()
        .iter()
        .map(|f| {
            (
                f.service().to_owned(),
                matches!(f.kind(), FailureKind::Hung { .. }),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 2, "{err}");
    let report = err.report().expect("the error carries the report");
    let stubborn = report.get("stubborn").unwrap();
    assert_eq!(stubborn.state, ServiceState::Aborted);
    assert!(stubborn.aborted);
    assert_eq!(stubborn.stop_duration, Some(Duration::from_secs(1)));
    assert_eq!(stubborn.tasks_aborted, 0);
    let spawner = report.get("spawner").unwrap();
    assert_eq!(spawner.state, ServiceState::Aborted);
    assert!(!spawner.aborted, "its body returned");
    assert_eq!(spawner.tasks_aborted, 1);
    // The task got the run's whole timeout, then a short grace to be dropped in.
    assert!(
        spawner
            .stop_duration
            .is_some_and(|d| d >= Duration::from_secs(2) && d <= Duration::from_millis(2100)),
        "{spawner}"
    );
    let unclean: Vec<&str> = report.unclean().map(|s| &*s.name).collect();
    assert_eq!(unclean, ["stubborn", "spawner"]);
    assert!(report.get("fine").unwrap().is_clean());
    assert_eq!(
        stubborn.to_string(),
        "`stubborn`: aborted after 1 run, stop took 1.000s, its run was aborted"
    );
    assert!(
        spawner.to_string().contains("1 tied task aborted"),
        "{spawner}"
    );
    // And the states are still readable from the handle.
    let states: Vec<_> = h.status().iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            ServiceState::Aborted,
            ServiceState::Aborted,
            ServiceState::Stopped
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_gave_up_service_is_failed_in_the_report_with_its_error() {
    let broken = Service::without_context("broken", || async {
        sleep(10 * MS).await;
        Err::<(), _>("no disk")
    })
    .restart(Restart::Never);
    let other = Service::new("other", |ctx| async move { ctx.shutdown_requested().await });
    let h = start(vec![broken, other]).await;
    let err = h.wait().await.unwrap_err();
    let report = err.report().unwrap();
    let broken = report.get("broken").unwrap();
    assert_eq!(
        (broken.state, broken.runs, broken.restarts),
        (ServiceState::Failed, 1, 0)
    );
    assert!(broken.last_error.is_some());
    assert!(!broken.is_clean());
    // Escalation stopped the other one, cleanly.
    let other = report.get("other").unwrap();
    assert_eq!(
        (other.state, other.runs, other.stop_duration),
        (ServiceState::Stopped, 1, Some(Duration::ZERO))
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_dropped_early_changes_nothing() {
    let h = start(vec![Service::new("s", |ctx| async move {
        ctx.shutdown_requested().await
    })])
    .await;
    // Cancelled while the runner runs: nothing shuts down.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), h.wait())
            .await
            .is_err()
    );
    assert_eq!(h.status()[0].state, ServiceState::Running);
    h.shutdown();
    let report = h.wait().await.unwrap();
    assert_eq!(report.services()[0].state, ServiceState::Stopped);
}

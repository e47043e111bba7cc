//! Services added and removed while the runner runs: the same validation as at
//! start, the same rules afterwards (dependencies both ways, restarts, the report),
//! removal refused while dependents remain; and a stress run adding and removing
//! 1,000 services while others fail and restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use servicekit::error::{ConfigError, RemoveError, UnknownService};
use servicekit::{Restart, Service, ServiceState};
use servicekit_tests::{Log, start};
use tokio::time::sleep;

const MS: Duration = Duration::from_millis(1);

/// A service that logs its starts and stops, ready after `ready_after`.
fn tracked(name: &str, log: &Log, ready_after: Duration) -> Service {
    let (log, n) = (log.clone(), name.to_owned());
    Service::new(name, move |ctx| {
        let (log, n) = (log.clone(), n.clone());
        async move {
            log.push(format!("{n} start"));
            sleep(ready_after).await;
            ctx.ready();
            ctx.shutdown_requested().await;
            log.push(format!("{n} stop"));
        }
    })
}

fn idle(name: &str) -> Service {
    Service::new(name, |ctx| async move {
        ctx.ready();
        ctx.shutdown_requested().await
    })
}

#[tokio::test(start_paused = true)]
async fn an_added_service_waits_for_its_dependency_and_moves_with_it() {
    let log = Log::new();
    let h = start(vec![tracked("db", &log, 100 * MS)]).await;
    sleep(10 * MS).await;
    h.add(tracked("api", &log, MS).after(["db"])).unwrap();
    sleep(200 * MS).await;
    // It started once db was ready.
    assert_eq!(log.times_of("api start"), [100 * MS]);
    // A restart of db stops api first and starts it again once db is ready.
    h.restart("db").unwrap();
    sleep(300 * MS).await;
    assert_eq!(
        log.lines(),
        [
            "db start",
            "api start",
            "api stop",
            "db stop",
            "db start",
            "api start"
        ]
    );
    assert!(log.position("api stop") < log.position("db stop"));
    // A service added later may depend on the added one: a chain db → api → worker.
    h.add(tracked("worker", &log, MS).after(["api"])).unwrap();
    sleep(10 * MS).await;
    h.shutdown();
    let report = h.wait().await.unwrap();
    let runs: Vec<_> = report
        .services()
        .iter()
        .map(|s| (&*s.name, s.runs, s.state))
        .collect();
    assert_eq!(
        runs,
        [
            ("db", 2, ServiceState::Stopped),
            ("api", 2, ServiceState::Stopped),
            ("worker", 1, ServiceState::Stopped)
        ]
    );
    // Stopped in reverse order: worker, api, db.
    let stops: Vec<_> = ["worker stop", "api stop", "db stop"]
        .iter()
        .map(|s| *log.times_of(s).last().unwrap())
        .collect();
    assert!(stops.windows(2).all(|w| w[0] <= w[1]), "{:?}", log.lines());
    assert!(
        log.lines().iter().rposition(|l| l == "worker stop")
            < log.lines().iter().rposition(|l| l == "db stop")
    );
}

#[tokio::test]
async fn add_checks_the_new_service_against_the_running_set() {
    let h = start(vec![idle("db")]).await;
    let cases = [
        (idle("db"), ConfigError::DuplicateName("db".into())),
        (idle(""), ConfigError::EmptyName),
        (
            idle("api").after(["cache"]),
            ConfigError::UnknownDependency {
                service: "api".into(),
                dependency: "cache".into(),
            },
        ),
        (
            idle("loop").after(["loop"]),
            ConfigError::Cycle(vec!["loop".into(), "loop".into()]),
        ),
        (
            idle("bad").backoff(Duration::from_secs(2), Duration::from_secs(1)),
            ConfigError::Invalid {
                service: "bad".into(),
                problem: "`backoff` base 2s is greater than its cap 1s".into(),
            },
        ),
    ];
    for (svc, expected) in cases {
        assert_eq!(h.add(svc).unwrap_err(), expected);
    }
    // Nothing of the rejected ones was kept.
    assert_eq!(h.status().len(), 1);
    h.add(idle("api").after(["db"])).unwrap();
    assert_eq!(h.status().len(), 2);
    h.shutdown();
    assert_eq!(
        h.add(idle("late")).unwrap_err(),
        ConfigError::NotRunning("late".into())
    );
    let report = h.wait().await.unwrap();
    assert_eq!(report.services().len(), 2);
    // And after the end.
    assert_eq!(
        h.add(idle("later")).unwrap_err(),
        ConfigError::NotRunning("later".into())
    );
}

#[tokio::test(start_paused = true)]
async fn remove_refuses_while_dependents_remain_then_forgets_the_service() {
    let h = start(vec![idle("db"), idle("cache").after(["db"]), idle("keep")]).await;
    h.add(idle("api").after(["db"])).unwrap();
    sleep(10 * MS).await;
    // Both the dependent given at start and the one added since are named.
    assert_eq!(
        h.remove("db").await.unwrap_err(),
        RemoveError::HasDependents {
            service: "db".into(),
            dependents: vec!["cache".into(), "api".into()],
        }
    );
    assert_eq!(
        h.remove("nope").await.unwrap_err(),
        RemoveError::Unknown(UnknownService("nope".into()))
    );
    let api = h.remove("api").await.unwrap();
    assert_eq!((api.state, api.runs), (ServiceState::Stopped, 1));
    let cache = h.remove("cache").await.unwrap();
    assert_eq!(cache.state, ServiceState::Stopped);
    let db = h.remove("db").await.unwrap();
    assert_eq!(db.state, ServiceState::Stopped);
    // Forgotten: no status, no commands, and the names are free again.
    let names: Vec<_> = h.status().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["keep"]);
    assert_eq!(h.restart("db"), Err(UnknownService("db".into())));
    h.add(idle("db")).unwrap();
    h.add(idle("api").after(["db"])).unwrap();
    sleep(10 * MS).await;
    let status: Vec<_> = h
        .status()
        .iter()
        .map(|s| (s.name.to_string(), s.runs, s.state))
        .collect();
    assert_eq!(
        status,
        [
            ("keep".to_owned(), 1, ServiceState::Running),
            ("db".to_owned(), 1, ServiceState::Running),
            ("api".to_owned(), 1, ServiceState::Running)
        ]
    );
    h.shutdown();
    let report = h.wait().await.unwrap();
    assert_eq!(report.services().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn removing_a_service_that_ignores_its_stop_waits_for_its_timeout_and_reports_it() {
    let h = start(vec![idle("keep")]).await;
    h.add(
        Service::new("stuck", |_ctx| std::future::pending::<()>())
            .shutdown_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    sleep(10 * MS).await;
    let began = tokio::time::Instant::now();
    let stuck = h.remove("stuck").await.unwrap();
    assert_eq!(began.elapsed(), Duration::from_secs(2));
    assert_eq!(stuck.state, ServiceState::Aborted);
    assert!(stuck.aborted);
    // The runner goes on; the hang is still reported when it ends.
    assert_eq!(h.status().len(), 1);
    h.shutdown();
    let err = h.wait().await.unwrap_err();
    assert_eq!(err.failures().len(), 1, "{err}");
    assert_eq!(err.failures()[0].service(), "stuck");
    assert_eq!(err.report().unwrap().services().len(), 1);
}

#[tokio::test]
async fn a_service_can_be_added_from_a_thread_outside_the_runtime() {
    let h = Arc::new(start(vec![idle("a")]).await);
    let h2 = h.clone();
    std::thread::spawn(move || h2.add(idle("from-thread")).unwrap())
        .join()
        .unwrap();
    for _ in 0..1000 {
        if h.status()
            .iter()
            .any(|s| &*s.name == "from-thread" && s.state == ServiceState::Running)
        {
            break;
        }
        sleep(10 * MS).await;
    }
    assert_eq!(h.status()[1].state, ServiceState::Running);
    h.shutdown();
    h.wait().await.unwrap();
}

/// Adds and removes 1,000 services (some depending on a steady one, some failing at
/// random) while 20 steady services fail and restart; the runner stays healthy and
/// ends with exactly the steady ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_come_and_go_while_others_fail_and_restart() {
    let failures = Arc::new(AtomicU64::new(0));
    // Set before the shutdown: an error returned once asked to stop would be a
    // failure to stop (reported, rightly), not a failure to restart.
    let calm = Arc::new(AtomicBool::new(false));
    let steady: Vec<Service> = (0..20)
        .map(|i| {
            let (failures, calm) = (failures.clone(), calm.clone());
            Service::new(format!("steady-{i}"), move |ctx| {
                let (failures, calm) = (failures.clone(), calm.clone());
                async move {
                    ctx.ready();
                    let wait = Duration::from_millis(fastrand::u64(1..20));
                    if ctx.until_shutdown(sleep(wait)).await.is_some()
                        && fastrand::bool()
                        && !calm.load(Ordering::SeqCst)
                    {
                        failures.fetch_add(1, Ordering::Relaxed);
                        return Err("random failure");
                    }
                    ctx.shutdown_requested().await;
                    Ok(())
                }
            })
            .backoff(MS, 5 * MS)
            .max_restarts(u32::MAX, Duration::from_secs(1))
        })
        .collect();
    let h = Arc::new(start(steady).await);
    let added = Arc::new(AtomicU32::new(0));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (h, added, failures) = (h.clone(), added.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            for i in 0..250 {
                let name = format!("dyn-{w}-{i}");
                let failures = failures.clone();
                let mut svc = Service::new(name.clone(), move |ctx| {
                    let failures = failures.clone();
                    async move {
                        ctx.ready();
                        // Not once asked to stop: that would be a failure to stop.
                        if fastrand::u8(0..4) == 0 && !ctx.is_shutdown_requested() {
                            failures.fetch_add(1, Ordering::Relaxed);
                            panic!("random panic");
                        }
                        ctx.shutdown_requested().await;
                    }
                })
                .backoff(MS, 5 * MS)
                .max_restarts(u32::MAX, Duration::from_secs(1))
                .restart(Restart::OnFailure);
                if i % 3 == 0 {
                    svc = svc.after([format!("steady-{}", i % 20)]);
                }
                h.add(svc).unwrap();
                added.fetch_add(1, Ordering::Relaxed);
                if i % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                let report = h.remove(&name).await.unwrap();
                assert_eq!(&*report.name, name);
                assert!(h.restart(&name).is_err(), "{name} is forgotten");
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(added.load(Ordering::Relaxed), 1000);
    let status = h.status();
    assert_eq!(status.len(), 20);
    assert!(status.iter().all(|s| s.name.starts_with("steady-")));
    assert!(failures.load(Ordering::Relaxed) > 0);
    calm.store(true, Ordering::SeqCst);
    // A run that was about to fail has returned by now (its wait is under 20 ms).
    sleep(30 * MS).await;
    h.shutdown();
    let report = h.wait().await.expect("every failure was restarted");
    assert_eq!(report.services().len(), 20);
    assert!(
        report
            .services()
            .iter()
            .all(|s| s.state == ServiceState::Stopped)
    );
}

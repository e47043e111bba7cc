//! Groups with OTP strategies, on tokio's paused clock: one-for-one, one-for-all,
//! rest-for-one, the group's own restart intensity, giving up and escalating
//! (to a parent group, to the runner, or ignored), nesting, the macro key, and
//! configuration errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use servicekit::error::{ConfigError, FailureKind};
use servicekit::{
    Error, Group, OnGiveUp, Restart, Runner, RunnerHandle, Service, ServiceContext, ServiceState,
    Strategy, service,
};
use tokio::time::sleep;

const MS: Duration = Duration::from_millis(1);

/// A member that runs until asked to stop, except that its first `fail` runs fail
/// after 100 ms.
fn member(name: &str, group: &str, fail: u32) -> Service {
    let runs = Arc::new(AtomicU32::new(0));
    Service::new(name, move |ctx| {
        let n = runs.fetch_add(1, Ordering::SeqCst);
        async move {
            ctx.ready();
            if n < fail {
                sleep(100 * MS).await;
                return Err("boom");
            }
            ctx.shutdown_requested().await;
            Ok(())
        }
    })
    .group(group)
    .backoff(10 * MS, 10 * MS)
    .max_restarts(u32::MAX, Duration::from_secs(60))
}

fn idle(name: &str) -> Service {
    Service::new(name, |ctx| async move {
        ctx.ready();
        ctx.shutdown_requested().await
    })
}

async fn start(runner: Runner) -> RunnerHandle {
    runner
        .signals(false)
        .start()
        .await
        .expect("valid configuration")
}

fn runs(h: &RunnerHandle) -> Vec<(String, u64)> {
    h.status()
        .iter()
        .map(|s| (s.name.to_string(), s.runs))
        .collect()
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(n, r)| (n.to_string(), *r)).collect()
}

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_failed_member() {
    let h = start(
        Runner::new()
            .group(Group::new("g"))
            .service(member("a", "g", 0))
            .service(member("b", "g", 1))
            .service(member("c", "g", 0)),
    )
    .await;
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&h), pairs(&[("a", 1), ("b", 2), ("c", 1)]));
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_every_member() {
    let h = start(
        Runner::new()
            .group(Group::new("g").strategy(Strategy::OneForAll))
            .service(member("a", "g", 0))
            .service(member("b", "g", 1))
            .service(member("c", "g", 0))
            .service(idle("outside")),
    )
    .await;
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        runs(&h),
        pairs(&[("a", 2), ("b", 2), ("c", 2), ("outside", 1)])
    );
    // A restart by the group is not a failure of the others.
    assert_eq!(h.status()[0].restarts, 0);
    assert_eq!(h.status()[1].restarts, 1);
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_members_after_the_failed_one() {
    let h = start(
        Runner::new()
            .group(Group::new("g").strategy(Strategy::RestForOne))
            .service(member("a", "g", 0))
            .service(member("b", "g", 1))
            .service(member("c", "g", 0))
            .service(member("d", "g", 0)),
    )
    .await;
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&h), pairs(&[("a", 1), ("b", 2), ("c", 2), ("d", 2)]));
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn past_its_intensity_a_group_gives_up_and_shuts_the_runner_down() {
    let h = start(
        Runner::new()
            .group(Group::new("g").max_restarts(2, Duration::from_secs(60)))
            .service(member("a", "g", u32::MAX))
            .service(member("b", "g", 0))
            .service(idle("outside")),
    )
    .await;
    let err = h.wait().await.unwrap_err();
    let [failure] = err.failures() else {
        panic!("{err}")
    };
    assert_eq!(failure.service(), "a");
    let FailureKind::GroupGaveUp { group, restarts } = failure.kind() else {
        panic!("{err}")
    };
    assert_eq!((&**group, *restarts), ("g", 2));
    assert_eq!(
        err.to_string(),
        "group `g` gave up after 2 restarts (its last failure: service `a`)"
    );
    // Its third failure: the group allowed two restarts, then it ended failed.
    let a = err.report().unwrap().get("a").unwrap().clone();
    assert_eq!((a.runs, a.restarts, a.state), (3, 2, ServiceState::Failed));
}

#[tokio::test(start_paused = true)]
async fn a_group_that_gives_up_with_ignore_stops_its_members_and_the_rest_runs_on() {
    let h = start(
        Runner::new()
            .group(
                Group::new("optional")
                    .max_restarts(1, Duration::from_secs(60))
                    .on_give_up(OnGiveUp::Ignore),
            )
            .service(member("a", "optional", u32::MAX))
            .service(member("b", "optional", 0))
            .service(idle("core")),
    )
    .await;
    sleep(Duration::from_secs(2)).await;
    let states: Vec<_> = h.status().iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            ServiceState::Failed,
            ServiceState::Stopped,
            ServiceState::Running
        ]
    );
    h.shutdown();
    let err = h.wait().await.unwrap_err();
    assert!(
        matches!(err.failures()[0].kind(), FailureKind::GroupGaveUp { group, restarts: 1 } if &**group == "optional"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_member_that_gives_up_by_its_own_policy_escalates_to_its_group() {
    let h = start(
        Runner::new()
            .group(Group::new("g").on_give_up(OnGiveUp::Ignore))
            .service(member("once", "g", 1).restart(Restart::Never))
            .service(member("b", "g", 0))
            .service(idle("core")),
    )
    .await;
    sleep(Duration::from_secs(1)).await;
    let states: Vec<_> = h.status().iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            ServiceState::Failed,
            ServiceState::Stopped,
            ServiceState::Running
        ]
    );
    h.shutdown();
    let err = h.wait().await.unwrap_err();
    // Its group's give-up, then its own.
    let [group, own] = err.failures() else {
        panic!("{err}")
    };
    assert!(
        matches!(group.kind(), FailureKind::GroupGaveUp { group, .. } if &**group == "g"),
        "{err}"
    );
    assert!(matches!(own.kind(), FailureKind::GaveUp { .. }), "{err}");
    assert_eq!(own.service(), "once");
}

#[tokio::test(start_paused = true)]
async fn a_child_group_that_gives_up_is_restarted_whole_by_its_parent() {
    let h = start(
        Runner::new()
            .group(Group::new("parent").max_restarts(5, Duration::from_secs(60)))
            .group(
                Group::new("child")
                    .parent("parent")
                    .max_restarts(1, Duration::from_secs(60)),
            )
            .service(member("x", "child", 2))
            .service(member("y", "child", 0))
            .service(member("z", "parent", 0)),
    )
    .await;
    sleep(Duration::from_secs(2)).await;
    // x fails twice: the second is one too many for the child, which gives up; the
    // parent takes it as one failed member and restarts the child whole (y too);
    // z, a one-for-one sibling, is left alone.
    assert_eq!(runs(&h), pairs(&[("x", 3), ("y", 2), ("z", 1)]));
    h.shutdown();
    h.wait()
        .await
        .expect("the parent absorbed it: no failure of the runner");
}

#[tokio::test(start_paused = true)]
async fn a_one_for_all_parent_restarts_its_other_members_when_a_child_group_gives_up() {
    let h = start(
        Runner::new()
            .group(Group::new("parent").strategy(Strategy::OneForAll))
            .group(
                Group::new("child")
                    .parent("parent")
                    .max_restarts(0, Duration::from_secs(60)),
            )
            .service(member("x", "child", 1))
            .service(member("z", "parent", 0))
            .service(idle("outside")),
    )
    .await;
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&h), pairs(&[("x", 2), ("z", 2), ("outside", 1)]));
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn escalation_goes_up_until_a_group_takes_it_or_the_runner_stops() {
    let h = start(
        Runner::new()
            .group(Group::new("top").max_restarts(0, Duration::from_secs(60)))
            .group(
                Group::new("mid")
                    .parent("top")
                    .max_restarts(0, Duration::from_secs(60)),
            )
            .group(
                Group::new("leaf")
                    .parent("mid")
                    .max_restarts(0, Duration::from_secs(60)),
            )
            .service(member("x", "leaf", 1))
            .service(idle("outside")),
    )
    .await;
    let err = h.wait().await.unwrap_err();
    let FailureKind::GroupGaveUp { group, .. } = err.failures()[0].kind() else {
        panic!("{err}")
    };
    assert_eq!(&**group, "top");
}

#[service(group = "workers", restart = "always", backoff = "10ms..10ms")]
async fn worker(ctx: ServiceContext) {
    ctx.ready();
    ctx.shutdown_requested().await;
}

#[tokio::test(start_paused = true)]
async fn the_macro_key_puts_a_service_in_a_group() {
    let h = start(
        Runner::new()
            .group(Group::new("workers").strategy(Strategy::OneForAll))
            .service(worker())
            .service(member("flaky", "workers", 1)),
    )
    .await;
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&h), pairs(&[("worker", 2), ("flaky", 2)]));
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test]
async fn groups_are_checked_before_anything_starts() {
    let err = |r: Runner| async move {
        match r.signals(false).start().await {
            Err(Error::Config(e)) => e,
            other => panic!("expected a configuration error, got {other:?}"),
        }
    };
    assert_eq!(
        err(Runner::new().service(idle("a").group("nope"))).await,
        ConfigError::UnknownGroup {
            member: "service `a`".into(),
            group: "nope".into()
        }
    );
    assert_eq!(
        err(Runner::new().group(Group::new("g").parent("nope"))).await,
        ConfigError::UnknownGroup {
            member: "group `g`".into(),
            group: "nope".into()
        }
    );
    assert_eq!(
        err(Runner::new().group(Group::new("g")).group(Group::new("g"))).await,
        ConfigError::DuplicateGroup("g".into())
    );
    assert_eq!(
        err(Runner::new()
            .group(Group::new("a").parent("b"))
            .group(Group::new("b").parent("a")))
        .await,
        ConfigError::GroupCycle(vec!["a".into(), "b".into(), "a".into()])
    );
    assert_eq!(
        err(Runner::new().service(idle("a").group("nope")))
            .await
            .to_string(),
        "service `a` is in group `nope`, which is not defined (define it with `Runner::group`)"
    );
    // And for a service added later.
    let h = start(Runner::new().group(Group::new("g")).service(idle("a"))).await;
    assert_eq!(
        h.add(idle("b").group("other")).unwrap_err(),
        ConfigError::UnknownGroup {
            member: "service `b`".into(),
            group: "other".into()
        }
    );
    h.add(idle("b").group("g")).unwrap();
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_restarted_child_group_starts_with_fresh_windows_all_the_way_down() {
    let h = start(
        Runner::new()
            .group(Group::new("top").max_restarts(5, Duration::from_secs(3600)))
            .group(
                Group::new("mid")
                    .parent("top")
                    .max_restarts(0, Duration::from_secs(3600)),
            )
            .group(
                Group::new("leaf")
                    .parent("mid")
                    .max_restarts(1, Duration::from_secs(3600)),
            )
            .service(member("x", "leaf", 2))
            .service(member("y", "leaf", 0))
            .service(member("w", "mid", 0)),
    )
    .await;
    sleep(Duration::from_secs(1)).await;
    // x's first failure fits leaf's window; its second is one too many: leaf gives
    // up, mid (no room) gives up, top takes mid and restarts it whole.
    assert_eq!(runs(&h), pairs(&[("x", 3), ("y", 2), ("w", 2)]));
    // leaf's window started over: a failure of y now fits it, and moves no one.
    h.add(member("z", "leaf", 1)).unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&h), pairs(&[("x", 3), ("y", 2), ("w", 2), ("z", 2)]));
    h.shutdown();
    h.wait().await.expect("top absorbed it");
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_places_a_child_group_at_its_first_service() {
    let h = start(
        Runner::new()
            .group(Group::new("p").strategy(Strategy::RestForOne))
            .group(Group::new("c").parent("p"))
            .service(member("a", "p", 0))
            .service(member("c1", "c", 0))
            .service(member("b", "p", 1))
            .service(member("c2", "c", 0))
            .service(member("d", "p", 0)),
    )
    .await;
    sleep(Duration::from_secs(1)).await;
    // b (at 2) fails: d (at 4) restarts; the child group sits at c1 (1), before b,
    // so neither of its services restarts.
    assert_eq!(
        runs(&h),
        pairs(&[("a", 1), ("c1", 1), ("b", 2), ("c2", 1), ("d", 2)])
    );
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_member_that_gives_up_under_a_parent_is_brought_back_with_its_group() {
    let h = start(
        Runner::new()
            .group(Group::new("p"))
            .group(Group::new("c").parent("p"))
            .service(member("x", "c", 2).max_restarts(0, Duration::from_secs(60)))
            .service(member("y", "c", 0)),
    )
    .await;
    sleep(Duration::from_secs(1)).await;
    // x gives up at each of its two failures; each time p takes c and restarts
    // it whole: x afresh, and y.
    assert_eq!(runs(&h), pairs(&[("x", 3), ("y", 3)]));
    assert_eq!(h.status()[0].state, ServiceState::Running);
    // Both of x's failures were restarts: its count never goes back.
    assert_eq!(h.status()[0].restarts, 2);
    h.shutdown();
    h.wait().await.expect("the parent took both");
}

#[tokio::test(start_paused = true)]
async fn a_group_restart_follows_the_dependency_rule_and_spares_backoffs() {
    let log = servicekit_tests::Log::new();
    let tracked = |name: &str, fail: u32| {
        let (log, n, runs) = (log.clone(), name.to_owned(), Arc::new(AtomicU32::new(0)));
        Service::new(name, move |ctx| {
            let (log, n) = (log.clone(), n.clone());
            let k = runs.fetch_add(1, Ordering::SeqCst);
            async move {
                log.push(format!("{n} start"));
                ctx.ready();
                if k < fail {
                    sleep(100 * MS).await;
                    log.push(format!("{n} fail"));
                    return Err("boom");
                }
                ctx.shutdown_requested().await;
                log.push(format!("{n} stop"));
                Ok(())
            }
        })
        .group("g")
        .backoff(500 * MS, 500 * MS)
    };
    let h = start(
        Runner::new()
            .group(Group::new("g").strategy(Strategy::OneForAll))
            .service(tracked("db", 0))
            .service(tracked("api", 0).after(["db"]))
            .service(tracked("flaky", 1)),
    )
    .await;
    sleep(Duration::from_secs(2)).await;
    // flaky fails at 100 ms: db restarts (api stops before it and starts after it),
    // and flaky comes back only after its own 500 ms backoff.
    assert_eq!(log.times_of("flaky start"), [Duration::ZERO, 600 * MS]);
    assert_eq!(log.times_of("api start").len(), 2, "{:?}", log.lines());
    assert_eq!(log.times_of("db start").len(), 2, "{:?}", log.lines());
    assert!(log.position("api stop") < log.position("db stop"));
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_service_added_later_takes_part_in_its_group() {
    let h = start(
        Runner::new()
            .group(Group::new("g").strategy(Strategy::OneForAll))
            .service(member("a", "g", 0)),
    )
    .await;
    h.add(member("late", "g", 1)).unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(runs(&h), pairs(&[("a", 2), ("late", 2)]));
    h.shutdown();
    h.wait().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_window_slides() {
    let seen = Arc::new(AtomicU32::new(0));
    let r = seen.clone();
    // Fails every 2 s; the group allows 1 restart per 1.9 s: never too many (and
    // it would be, without the window sliding).
    let svc = Service::new("slow-flaky", move |ctx| {
        r.fetch_add(1, Ordering::SeqCst);
        async move {
            ctx.ready();
            match ctx.until_shutdown(sleep(Duration::from_secs(2))).await {
                Some(()) => Err("boom"),
                None => Ok(()),
            }
        }
    })
    .group("g")
    .backoff(MS, MS)
    .max_restarts(u32::MAX, Duration::from_secs(1));
    let h = start(
        Runner::new()
            .group(Group::new("g").max_restarts(1, Duration::from_millis(1900)))
            .service(svc),
    )
    .await;
    sleep(Duration::from_secs(20)).await;
    assert!(seen.load(Ordering::SeqCst) >= 9);
    assert_eq!(h.status()[0].state, ServiceState::Running);
    h.shutdown();
    h.wait().await.unwrap();
}

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
    // Its third failure: the group allowed two restarts.
    assert_eq!(err.report().unwrap().get("a").unwrap().runs, 3);
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
            ServiceState::Stopped,
            ServiceState::Stopped,
            ServiceState::Running
        ]
    );
    h.shutdown();
    let err = h.wait().await.unwrap_err();
    assert!(
        matches!(err.failures()[0].kind(), FailureKind::GroupGaveUp { .. }),
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
    let kinds: Vec<_> = err
        .failures()
        .iter()
        .map(|f| matches!(f.kind(), FailureKind::GaveUp { .. }))
        .collect();
    // Its own give-up, then its group's.
    assert_eq!(kinds, [true, false], "{err}");
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

//! Groups under randomized failures, against a reference model, on tokio's paused
//! clock (10,000 sequences).
//!
//! A random tree of up to three groups (random strategy, restart intensity and,
//! at the top, `OnGiveUp`), six services each in a random group or none, and a
//! sequence of injected failures, each left to settle. The model, written from
//! `Group`'s documentation, predicts every service's run count and whether it has
//! ended, and the runner's failures: which group gave up at the top, because of
//! which service, and whether the runner shut down.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use servicekit::error::FailureKind;
use servicekit::{
    Group, OnGiveUp, Runner, RunnerHandle, Service, ServiceState, Strategy as GroupStrategy,
};
use tokio::sync::Notify;

const SERVICES: usize = 6;
const GROUPS: usize = 3;

#[derive(Debug, Clone)]
struct Spec {
    strategy: Vec<GroupStrategy>,
    max: Vec<u32>,
    /// A parent among the groups before it, or none.
    parent: Vec<Option<usize>>,
    ignore: Vec<bool>,
    /// Each service's group, or none.
    group: Vec<Option<usize>>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let strategy = prop_oneof![
        Just(GroupStrategy::OneForOne),
        Just(GroupStrategy::OneForAll),
        Just(GroupStrategy::RestForOne)
    ];
    (
        proptest::collection::vec(strategy, GROUPS),
        proptest::collection::vec(0u32..3, GROUPS),
        proptest::collection::vec(0usize..4, GROUPS),
        proptest::collection::vec(prop::bool::weighted(0.7), GROUPS),
        proptest::collection::vec(0usize..GROUPS + 1, SERVICES),
    )
        .prop_map(|(strategy, max, parent, ignore, group)| Spec {
            strategy,
            max,
            parent: parent
                .iter()
                .enumerate()
                .map(|(g, &p)| (p < g).then_some(p))
                .collect(),
            ignore,
            group: group.iter().map(|&g| (g < GROUPS).then_some(g)).collect(),
        })
}

/// What the model expects.
struct Model {
    spec: Spec,
    runs: [u64; SERVICES],
    ended: [bool; SERVICES],
    /// Ended `Failed`: its failure made its group give up at the top.
    failed: [bool; SERVICES],
    /// Restarts counted in each group's window (the window never slides here).
    count: [u32; GROUPS],
    /// (culprit, top group) of each group that gave up with nobody to take it.
    failures: Vec<(usize, usize)>,
    shut_down: bool,
}

impl Model {
    /// Whether a service of group `of` is in group `g`'s subtree; with the child
    /// of `g` it is under, if not directly in `g`.
    fn under(&self, of: Option<usize>, g: usize) -> Option<Option<usize>> {
        let mut cur = of?;
        let mut child = None;
        loop {
            if cur == g {
                return Some(child);
            }
            child = Some(cur);
            cur = self.spec.parent[cur]?;
        }
    }

    fn subtree(&self, g: usize) -> Vec<usize> {
        (0..SERVICES)
            .filter(|&s| self.under(self.spec.group[s], g).is_some())
            .collect()
    }

    /// A service's place among `g`'s members: its own index, or its child group's
    /// first service.
    fn place(&self, s: usize, g: usize) -> usize {
        match self.under(self.spec.group[s], g).expect("in the subtree") {
            None => s,
            Some(child) => self.first_of(child),
        }
    }

    fn first_of(&self, g: usize) -> usize {
        self.subtree(g)
            .into_iter()
            .min()
            .expect("a group with a failing member")
    }

    /// The groups `g` and under it.
    fn groups_under(&self, g: usize) -> Vec<usize> {
        (0..GROUPS)
            .filter(|&h| self.under(Some(h), g).is_some())
            .collect()
    }

    /// A group restarted whole starts with fresh windows, all the way down.
    fn reset(&mut self, g: usize) {
        for h in self.groups_under(g) {
            self.count[h] = 0;
        }
    }

    /// Group `g`'s strategy after a member at `place` failed (`failed_group`, if
    /// that member is a child group): who else restarts; the child groups
    /// restarted start with fresh windows.
    fn strategy(
        &mut self,
        g: usize,
        place: usize,
        failed_group: Option<usize>,
        restart: &mut Vec<usize>,
    ) {
        let chosen: Vec<usize> = match self.spec.strategy[g] {
            GroupStrategy::OneForOne => Vec::new(),
            GroupStrategy::OneForAll => self.subtree(g),
            GroupStrategy::RestForOne => self
                .subtree(g)
                .into_iter()
                .filter(|&s| self.place(s, g) > place)
                .collect(),
        };
        for &s in &chosen {
            if let Some(Some(child)) = self.under(self.spec.group[s], g)
                && Some(child) != failed_group
            {
                self.reset(child);
            }
        }
        restart.extend(chosen);
    }

    fn fail(&mut self, i: usize) {
        let mut restart = vec![i];
        if let Some(g) = self.spec.group[i] {
            if self.count[g] < self.spec.max[g] {
                self.count[g] += 1;
                let place = self.place(i, g);
                self.strategy(g, place, None, &mut restart);
            } else {
                // A group that gives up starts its window over.
                self.count[g] = 0;
                let mut child = g;
                loop {
                    match self.spec.parent[child] {
                        Some(p) if self.count[p] < self.spec.max[p] => {
                            self.count[p] += 1;
                            self.reset(child);
                            restart.extend(self.subtree(child));
                            let place = self.first_of(child);
                            self.strategy(p, place, Some(child), &mut restart);
                            break;
                        }
                        Some(p) => {
                            self.count[p] = 0;
                            child = p;
                        }
                        None => {
                            self.failures.push((i, child));
                            self.failed[i] = true;
                            self.ended[i] = true;
                            if self.spec.ignore[child] {
                                for s in self.subtree(child) {
                                    self.ended[s] = true;
                                }
                            } else {
                                self.shut_down = true;
                            }
                            break;
                        }
                    }
                }
            }
        }
        if self.shut_down {
            return;
        }
        restart.sort_unstable();
        restart.dedup();
        for s in restart {
            if !self.ended[s] {
                self.runs[s] += 1;
            }
        }
    }
}

fn service(i: usize, spec: &Spec, fail: &Arc<Vec<Notify>>) -> Service {
    let fail = fail.clone();
    let mut s = Service::new(format!("s{i}"), move |ctx| {
        let fail = fail.clone();
        async move {
            ctx.ready();
            tokio::select! {
                biased;
                () = ctx.shutdown_requested() => Ok(()),
                () = fail[i].notified() => Err("injected failure"),
            }
        }
    })
    .backoff(Duration::from_millis(1), Duration::from_millis(1))
    .max_restarts(u32::MAX, Duration::from_secs(1));
    if let Some(g) = spec.group[i] {
        s = s.group(format!("g{g}"));
    }
    s
}

async fn settle(handle: &RunnerHandle, model: &Model) -> Result<(), String> {
    let want: Vec<(u64, ServiceState)> = (0..SERVICES)
        .map(|s| {
            let state = if model.failed[s] {
                ServiceState::Failed
            } else if model.ended[s] {
                ServiceState::Stopped
            } else {
                ServiceState::Running
            };
            (model.runs[s], state)
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got: Vec<(u64, ServiceState)> = handle
            .status()
            .iter()
            .take(SERVICES)
            .map(|s| (s.runs, s.state))
            .collect();
        if got == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "runs and states {got:?}, the model expects {want:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn run_case(spec: Spec, fails: Vec<usize>) -> Result<(), String> {
    let notifies: Arc<Vec<Notify>> = Arc::new((0..SERVICES).map(|_| Notify::new()).collect());
    let mut runner = Runner::new().signals(false);
    for g in 0..GROUPS {
        let mut group = Group::new(format!("g{g}"))
            .strategy(spec.strategy[g])
            .max_restarts(spec.max[g], Duration::from_secs(3600))
            .on_give_up(if spec.ignore[g] {
                OnGiveUp::Ignore
            } else {
                OnGiveUp::Shutdown
            });
        if let Some(p) = spec.parent[g] {
            group = group.parent(format!("g{p}"));
        }
        runner = runner.group(group);
    }
    let handle = runner
        .services((0..SERVICES).map(|i| service(i, &spec, &notifies)))
        .service(Service::new("anchor", |ctx| async move {
            ctx.ready();
            ctx.shutdown_requested().await
        }))
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let mut model = Model {
        spec,
        runs: [1; SERVICES],
        ended: [false; SERVICES],
        failed: [false; SERVICES],
        count: [0; GROUPS],
        failures: Vec::new(),
        shut_down: false,
    };
    settle(&handle, &model).await?;
    for i in fails {
        if model.ended[i] {
            continue;
        }
        notifies[i].notify_waiters();
        model.fail(i);
        if model.shut_down {
            break;
        }
        settle(&handle, &model).await?;
    }
    if !model.shut_down {
        handle.shutdown();
    }
    let outcome = tokio::time::timeout(Duration::from_secs(10), handle.wait())
        .await
        .map_err(|_| "the runner did not end".to_owned())?;
    let got: Vec<(String, String)> = match &outcome {
        Ok(_) => Vec::new(),
        Err(e) => e
            .failures()
            .iter()
            .map(|f| match f.kind() {
                FailureKind::GroupGaveUp { group, .. } => {
                    (f.service().to_owned(), group.to_string())
                }
                _ => (f.service().to_owned(), format!("{f}")),
            })
            .collect(),
    };
    let want: Vec<(String, String)> = model
        .failures
        .iter()
        .map(|&(s, g)| (format!("s{s}"), format!("g{g}")))
        .collect();
    if got != want {
        return Err(format!(
            "the runner's failures {got:?}, the model's {want:?}"
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 10_000,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn group_strategies_and_escalation_match_the_model(
        spec in spec(),
        fails in proptest::collection::vec(0..SERVICES, 1..12),
    ) {
        let rt = servicekit_tests::paused_runtime();
        let outcome = rt.block_on(run_case(spec, fails));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

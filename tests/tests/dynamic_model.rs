//! Services added and removed at runtime, under randomized operations, against a
//! reference model.
//!
//! A pool of services `s0..s7` with a random dependency graph (each may depend on
//! services before it); a random subset is given at start, then random `add`,
//! `remove`, `restart`, `stop`, injected failures and pauses. The model predicts
//! the answer of every `add` and `remove` (accepted, or the exact error), which
//! services are listed by `status()` and in which order, and which of them run
//! once things settle; the bodies themselves check the dependency order on every
//! start and stop (a body starts only while its dependencies run, and is stopped
//! only after its dependents have ended). After a graceful shutdown the report
//! lists exactly the services the model has, all stopped, and no body is left.
//!
//! 10,000 sequences on tokio's paused clock (one thread, deterministic and fast),
//! and 200 on a real 2-worker runtime, where the races are.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use servicekit::error::{ConfigError, RemoveError, UnknownService};
use servicekit::{Restart, Runner, RunnerHandle, Service, ServiceState};
use tokio::sync::Notify;

const N: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Remove(usize),
    Restart(usize),
    Stop(usize),
    Fail(usize),
    Pause(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..N).prop_map(Op::Add),
        3 => (0..N).prop_map(Op::Remove),
        2 => (0..N).prop_map(Op::Restart),
        1 => (0..N).prop_map(Op::Stop),
        2 => (0..N).prop_map(Op::Fail),
        2 => (0u64..3).prop_map(Op::Pause),
    ]
}

/// Each service's dependencies (a subset of the services before it), and which
/// services are given at start (closed under dependencies).
fn setup() -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<bool>)> {
    (
        proptest::collection::vec(proptest::collection::vec(any::<bool>(), N), N),
        proptest::collection::vec(any::<bool>(), N),
    )
        .prop_map(|(m, initial)| {
            let deps: Vec<Vec<usize>> = (0..N)
                .map(|i| (0..i).filter(|&j| m[i][j] && (i + j) % 3 != 0).collect())
                .collect();
            let mut given = initial;
            for i in 0..N {
                given[i] = given[i] && deps[i].iter().all(|&d| given[d]);
            }
            (deps, given)
        })
}

struct World {
    deps: Vec<Vec<usize>>,
    alive: Vec<AtomicBool>,
    failed: Vec<AtomicBool>,
    /// Whether service i is in the runner (per the model): dependents are only
    /// the services present.
    present: Vec<AtomicBool>,
    fail: Vec<Notify>,
    violations: Mutex<Vec<String>>,
}

impl World {
    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }

    fn dependents(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        (0..N).filter(move |&d| self.deps[d].contains(&i) && self.present[d].load(Ordering::SeqCst))
    }
}

struct Alive {
    world: Arc<World>,
    i: usize,
    asked_to_stop: bool,
}

impl Drop for Alive {
    fn drop(&mut self) {
        let w = &self.world;
        if self.asked_to_stop {
            for d in w.dependents(self.i) {
                if w.alive[d].load(Ordering::SeqCst) {
                    w.violation(format!(
                        "s{} was stopped while its dependent s{d} ran",
                        self.i
                    ));
                }
            }
        }
        w.alive[self.i].store(false, Ordering::SeqCst);
    }
}

fn service(world: &Arc<World>, i: usize) -> Service {
    let w = world.clone();
    Service::new(format!("s{i}"), move |ctx| {
        let w = w.clone();
        async move {
            for &d in &w.deps[i] {
                if !w.alive[d].load(Ordering::SeqCst) && !w.failed[d].load(Ordering::SeqCst) {
                    w.violation(format!(
                        "s{i} started while its dependency s{d} did not run"
                    ));
                }
            }
            for d in w.dependents(i) {
                if w.alive[d].load(Ordering::SeqCst) {
                    w.violation(format!("s{i} started while its dependent s{d} still ran"));
                }
            }
            if w.alive[i].swap(true, Ordering::SeqCst) {
                w.violation(format!("two bodies of s{i} ran at once"));
            }
            w.failed[i].store(false, Ordering::SeqCst);
            let mut alive = Alive {
                world: w.clone(),
                i,
                asked_to_stop: false,
            };
            ctx.ready();
            tokio::select! {
                biased;
                () = ctx.shutdown_requested() => {
                    alive.asked_to_stop = true;
                    Ok(())
                }
                () = w.fail[i].notified() => {
                    w.failed[i].store(true, Ordering::SeqCst);
                    Err("injected failure")
                }
            }
        }
    })
    .restart(Restart::OnFailure)
    .backoff(Duration::from_millis(1), Duration::from_millis(2))
    .max_restarts(u32::MAX, Duration::from_secs(1))
    .after(world.deps[i].iter().map(|d| format!("s{d}")))
}

/// The model: which services are in the runner (in the order they were added),
/// which were stopped for good, and which of them have ended because a
/// dependency was stopped.
struct Model {
    deps: Vec<Vec<usize>>,
    order: Vec<usize>,
    /// Stopped with `stop` (or, transitively, a dependency was): ended for good.
    ended: [bool; N],
}

impl Model {
    fn present(&self, i: usize) -> bool {
        self.order.contains(&i)
    }

    fn add(&mut self, i: usize) -> Result<(), ConfigError> {
        let name = format!("s{i}");
        if self.present(i) {
            return Err(ConfigError::DuplicateName(name));
        }
        if let Some(&d) = self.deps[i].iter().find(|&&d| !self.present(d)) {
            return Err(ConfigError::UnknownDependency {
                service: name,
                dependency: format!("s{d}"),
            });
        }
        self.order.push(i);
        // A service added under an ended dependency ends at once.
        self.ended[i] = self.deps[i].iter().any(|&d| self.ended[d]);
        Ok(())
    }

    fn remove(&mut self, i: usize) -> Result<(), RemoveError> {
        let name = format!("s{i}");
        if !self.present(i) {
            return Err(UnknownService(name).into());
        }
        let dependents: Vec<String> = self
            .order
            .iter()
            .filter(|&&d| self.deps[d].contains(&i))
            .map(|d| format!("s{d}"))
            .collect();
        if !dependents.is_empty() {
            return Err(RemoveError::HasDependents {
                service: name,
                dependents,
            });
        }
        self.order.retain(|&x| x != i);
        self.ended[i] = false;
        Ok(())
    }

    fn stop(&mut self, i: usize) {
        self.ended[i] = true;
        // Its dependents end too (they cannot run without it), transitively.
        for d in 0..N {
            if self.present(d) && self.deps[d].iter().any(|&x| self.ended[x]) {
                self.ended[d] = true;
            }
        }
    }

    fn running(&self, i: usize) -> bool {
        self.present(i) && !self.ended[i]
    }
}

/// Waits until the runner lists the anchor, then exactly the model's services in
/// order, and the bodies running and the states are what the model expects.
async fn settle_to(world: &World, handle: &RunnerHandle, model: &Model) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let want_names: Vec<String> = model.order.iter().map(|i| format!("s{i}")).collect();
    let want_alive: Vec<bool> = (0..N).map(|i| model.running(i)).collect();
    loop {
        let mut status = handle.status();
        if status.first().is_none_or(|s| &*s.name != "anchor") {
            return Err(format!("the anchor is not listed first: {status:?}"));
        }
        status.remove(0);
        let names: Vec<String> = status.iter().map(|s| s.name.to_string()).collect();
        let alive: Vec<bool> = world
            .alive
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect();
        let states_ok = status.iter().zip(&model.order).all(|(s, &i)| {
            s.state
                == if model.running(i) {
                    ServiceState::Running
                } else {
                    ServiceState::Stopped
                }
        });
        if names == want_names && alive == want_alive && states_ok {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let states: Vec<_> = status
                .iter()
                .map(|s| format!("{}={}", s.name, s.state))
                .collect();
            return Err(format!(
                "the runner lists {states:?} with bodies {alive:?}; the model expects {want_names:?} with {want_alive:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn run_case(
    deps: Vec<Vec<usize>>,
    given: Vec<bool>,
    ops: Vec<Op>,
    settle_first: bool,
) -> Result<(), String> {
    let world = Arc::new(World {
        deps: deps.clone(),
        alive: (0..N).map(|_| AtomicBool::new(false)).collect(),
        failed: (0..N).map(|_| AtomicBool::new(false)).collect(),
        present: (0..N).map(|i| AtomicBool::new(given[i])).collect(),
        fail: (0..N).map(|_| Notify::new()).collect(),
        violations: Mutex::new(Vec::new()),
    });
    // An anchor keeps the runner alive when every pooled service is removed or
    // stopped (a runner whose services have all ended, ends).
    let anchor = Service::new("anchor", |ctx| async move {
        ctx.ready();
        ctx.shutdown_requested().await
    });
    let mut model = Model {
        deps,
        order: Vec::new(),
        ended: [false; N],
    };
    let initial: Vec<usize> = (0..N).filter(|&i| given[i]).collect();
    for &i in &initial {
        model.add(i).expect("closed under dependencies");
    }
    let handle = Runner::new()
        .signals(false)
        .shutdown_timeout(Duration::from_secs(5))
        .service(anchor)
        .services(initial.iter().map(|&i| service(&world, i)))
        .start()
        .await
        .map_err(|e| e.to_string())?;
    settle_to(&world, &handle, &model).await?;
    for op in ops {
        match op {
            Op::Add(i) => {
                let expected = model.add(i);
                if expected.is_ok() {
                    world.present[i].store(true, Ordering::SeqCst);
                }
                let got = handle.add(service(&world, i));
                if got != expected {
                    return Err(format!("add(s{i}) gave {got:?}, the model {expected:?}"));
                }
            }
            Op::Remove(i) => {
                let expected = model.remove(i);
                let got = handle.remove(&format!("s{i}")).await;
                match (&got, &expected) {
                    (Ok(report), Ok(())) => {
                        world.present[i].store(false, Ordering::SeqCst);
                        if !report.state.is_terminal() || report.aborted {
                            return Err(format!("remove(s{i}) left it {report}"));
                        }
                        if world.alive[i].load(Ordering::SeqCst) {
                            return Err(format!("s{i}'s body runs after remove returned"));
                        }
                    }
                    (Err(g), Err(e)) if g == e => {}
                    _ => return Err(format!("remove(s{i}) gave {got:?}, the model {expected:?}")),
                }
            }
            Op::Restart(i) => {
                let got = handle.restart(&format!("s{i}"));
                if got.is_ok() != model.present(i) {
                    return Err(format!("restart(s{i}) gave {got:?}"));
                }
            }
            Op::Stop(i) => {
                let got = handle.stop(&format!("s{i}"));
                if got.is_ok() != model.present(i) {
                    return Err(format!("stop(s{i}) gave {got:?}"));
                }
                if model.present(i) {
                    model.stop(i);
                }
            }
            Op::Fail(i) => {
                if model.running(i) {
                    world.fail[i].notify_waiters();
                }
            }
            Op::Pause(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    }
    if settle_first {
        settle_to(&world, &handle, &model).await?;
    } else {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.shutdown();
    let report = tokio::time::timeout(Duration::from_secs(10), handle.wait())
        .await
        .map_err(|_| "the shutdown did not end".to_owned())?
        .map_err(|e| format!("the shutdown was not clean: {e}"))?;
    let names: Vec<String> = report
        .services()
        .iter()
        .skip(1)
        .map(|s| s.name.to_string())
        .collect();
    let want: Vec<String> = model.order.iter().map(|i| format!("s{i}")).collect();
    if names != want {
        return Err(format!("the report lists {names:?}, the model {want:?}"));
    }
    if let Some(s) = report.services().iter().find(|s| !s.is_clean()) {
        return Err(format!("not clean: {s}"));
    }
    if let Some(i) = world.alive.iter().position(|a| a.load(Ordering::SeqCst)) {
        return Err(format!(
            "s{i}'s body is still running after the runner ended"
        ));
    }
    let violations = world.violations.lock().unwrap().clone();
    if !violations.is_empty() {
        return Err(violations.join("; "));
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
    fn on_the_paused_clock_adds_and_removes_match_the_model(
        (deps, given) in setup(),
        ops in proptest::collection::vec(op(), 1..30),
        settle_first in any::<bool>(),
    ) {
        let rt = servicekit_tests::paused_runtime();
        let outcome = rt.block_on(run_case(deps, given, ops, settle_first));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn on_two_workers_adds_and_removes_match_the_model(
        (deps, given) in setup(),
        ops in proptest::collection::vec(op(), 1..30),
        settle_first in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let outcome = rt.block_on(run_case(deps, given, ops, settle_first));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}

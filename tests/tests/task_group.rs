//! `TaskGroup`: fail-fast and tolerant modes, panics, cancellation, drop, and a
//! randomized model of both modes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use servicekit::{TaskGroup, error::TaskError};
use servicekit_tests::DropFlag;
use tokio::time::{Instant, sleep};

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_the_others_on_the_first_error() {
    let mut group = TaskGroup::new();
    let aborted = Arc::new(AtomicBool::new(false));
    let guard = DropFlag(aborted.clone());
    group.spawn(async move {
        let _guard = guard;
        sleep(Duration::from_secs(3600)).await;
    });
    let token = group.token();
    let polite = Arc::new(AtomicBool::new(false));
    let p = polite.clone();
    group.spawn(async move {
        token.cancelled().await;
        p.store(true, Ordering::SeqCst);
    });
    group.spawn(async {
        sleep(Duration::from_secs(1)).await;
        Err::<(), _>("first failure")
    });
    let began = Instant::now();
    let err = group.wait().await.unwrap_err();
    assert_eq!(began.elapsed(), Duration::from_secs(1));
    assert_eq!(err.errors().len(), 1);
    assert_eq!(
        err.to_string(),
        "1 task failed; first: task failed: first failure"
    );
    assert!(aborted.load(Ordering::SeqCst), "the other task was aborted");
    assert!(group.token().is_cancelled());
    assert!(group.is_empty());
    let _ = polite; // aborted or cancelled: either way it no longer runs
}

#[tokio::test(start_paused = true)]
async fn tolerant_collects_every_error_and_lets_the_rest_finish() {
    let mut group = TaskGroup::tolerant();
    let done = Arc::new(AtomicU32::new(0));
    for i in 0..6u64 {
        let d = done.clone();
        group.spawn(async move {
            sleep(Duration::from_secs(i)).await;
            d.fetch_add(1, Ordering::SeqCst);
            match i % 3 {
                0 => Ok(()),
                1 => Err(format!("task {i} failed")),
                _ => panic!("task {i} panicked"),
            }
        });
    }
    let err = group.wait().await.unwrap_err();
    assert_eq!(done.load(Ordering::SeqCst), 6);
    // Each error with its source: a returned error is the source of `Failed`, not
    // repeated in its message.
    let msgs: Vec<String> = err
        .errors()
        .iter()
        .map(|e| match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        })
        .collect();
    assert_eq!(
        msgs,
        [
            "task failed: task 1 failed",
            "task panicked: task 2 panicked",
            "task failed: task 4 failed",
            "task panicked: task 5 panicked",
        ]
    );
    assert!(matches!(err.errors()[1], TaskError::Panicked(_)));
}

#[tokio::test(start_paused = true)]
async fn a_group_without_failures_waits_for_everything() {
    let mut group = TaskGroup::new();
    let done = Arc::new(AtomicU32::new(0));
    for i in 0..10u64 {
        let d = done.clone();
        group.spawn(async move {
            sleep(Duration::from_millis(i * 10)).await;
            d.fetch_add(1, Ordering::SeqCst);
        });
    }
    assert_eq!(group.len(), 10);
    group.wait().await.unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 10);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_group_aborts_its_tasks() {
    let aborted = Arc::new(AtomicBool::new(false));
    let guard = DropFlag(aborted.clone());
    let mut group = TaskGroup::new();
    group.spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    sleep(Duration::from_millis(1)).await;
    drop(group);
    sleep(Duration::from_millis(1)).await;
    assert!(aborted.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn wait_is_cancel_safe() {
    let mut group = TaskGroup::tolerant();
    group.spawn(async { Err::<(), _>("early") });
    group.spawn(async {
        sleep(Duration::from_secs(10)).await;
    });
    // Time out the first wait after the error was collected but before the end.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), group.wait())
            .await
            .is_err()
    );
    let err = group.wait().await.unwrap_err();
    assert_eq!(
        err.errors().len(),
        1,
        "the error seen by the cancelled wait is kept"
    );
}

mod model {
    //! Random groups on the paused clock against a model: each task sleeps a distinct
    //! time, then succeeds, fails or panics. Tolerant: every failure is collected, in
    //! the order they happened, and every other task finishes. Fail-fast: only the
    //! first failure is reported, at its time, the tasks due later never finish, and
    //! those due earlier did.

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use proptest::prelude::*;
    use servicekit::{TaskGroup, error::TaskError};
    use tokio::time::{Instant, sleep};

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Outcome {
        Ok,
        Err,
        Panic,
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![3 => Just(Outcome::Ok), 1 => Just(Outcome::Err), 1 => Just(Outcome::Panic)]
    }

    fn describe(e: &TaskError) -> String {
        match e {
            TaskError::Failed(e) => format!("err {e}"),
            TaskError::Panicked(m) => format!("panic {m}"),
            other => format!("{other:?}"),
        }
    }

    async fn run(tolerant: bool, tasks: Vec<(u64, Outcome)>) -> Result<(), TestCaseError> {
        let mut group = if tolerant {
            TaskGroup::tolerant()
        } else {
            TaskGroup::new()
        };
        let finished = Arc::new(Mutex::new(Vec::new()));
        for &(ms, out) in &tasks {
            let finished = finished.clone();
            group.spawn(async move {
                sleep(Duration::from_millis(ms)).await;
                finished.lock().unwrap().push(ms);
                match out {
                    Outcome::Ok => Ok(()),
                    Outcome::Err => Err(format!("t{ms}")),
                    Outcome::Panic => panic!("t{ms}"),
                }
            });
        }
        let began = Instant::now();
        let got = group.wait().await;
        let elapsed = began.elapsed();

        let mut by_time = tasks.clone();
        by_time.sort_by_key(|&(ms, _)| ms);
        let failure = |&(ms, out): &(u64, Outcome)| match out {
            Outcome::Ok => None,
            Outcome::Err => Some(format!("err t{ms}")),
            Outcome::Panic => Some(format!("panic t{ms}")),
        };
        let first_failure = by_time.iter().position(|t| failure(t).is_some());
        // What the model expects: the failures reported, the tasks that finished,
        // and when `wait` returns.
        let (want_errors, want_finished, want_elapsed): (Vec<String>, Vec<u64>, u64) =
            match (tolerant, first_failure) {
                (true, _) | (false, None) => (
                    by_time.iter().filter_map(failure).collect(),
                    by_time.iter().map(|t| t.0).collect(),
                    by_time.last().map_or(0, |t| t.0),
                ),
                (false, Some(k)) => (
                    vec![failure(&by_time[k]).unwrap()],
                    by_time[..=k].iter().map(|t| t.0).collect(),
                    by_time[k].0,
                ),
            };
        let got_errors: Vec<String> = match &got {
            Ok(()) => Vec::new(),
            Err(e) => e.errors().iter().map(describe).collect(),
        };
        prop_assert_eq!(got_errors, want_errors);
        // Let anything wrongly left running reach its time before looking.
        sleep(Duration::from_secs(1)).await;
        let mut finished = finished.lock().unwrap().clone();
        finished.sort_unstable();
        prop_assert_eq!(finished, want_finished);
        prop_assert_eq!(elapsed, Duration::from_millis(want_elapsed));
        prop_assert!(group.is_empty());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn groups_match_the_model(
            tolerant in any::<bool>(),
            times in proptest::collection::btree_set(1u64..500, 0..12),
            outcomes in proptest::collection::vec(outcome(), 12),
        ) {
            // Distinct times, spawned latest first.
            let mut tasks: Vec<(u64, Outcome)> = times.into_iter().zip(outcomes).collect();
            tasks.reverse();
            servicekit_tests::paused_runtime().block_on(run(tolerant, tasks))?;
        }
    }
}

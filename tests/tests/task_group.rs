//! `TaskGroup`: fail-fast and tolerant modes, panics, cancellation, drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use servicekit::{TaskError, TaskGroup};
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
    let msgs: Vec<String> = err.errors().iter().map(ToString::to_string).collect();
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

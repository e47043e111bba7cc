//! Races between a service's context and the stop request, on a real 2-worker
//! runtime, with random timing: a stop must reach every way a body can wait for it,
//! whichever comes first.
//!
//! * `ctx.cancellation_token()` taken while the stop is being requested: the token is
//!   cancelled (or comes back cancelled), never left waiting.
//! * `ctx.shutdown_requested()` polled by the body itself, inside a combinator with
//!   its own wakers, and in a tied task, all at once: each one resolves.
//! * `ctx.shutdown_requested()` polled once by the body, then moved into a
//!   combinator: it resolves.
//! * A tied task that fails while the body waits: the run ends.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use servicekit::{OnGiveUp, Restart, Runner, RunnerHandle, Service, ServiceContext};

const SERVICES: usize = 16;
const ROUNDS: usize = 150;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn yields(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// Starts `services` without signal handling, each with 30 s to stop.
async fn start(services: Vec<Service>) -> RunnerHandle {
    Runner::new()
        .signals(false)
        .shutdown_timeout(Duration::from_secs(30))
        .services(services)
        .start()
        .await
        .expect("a valid configuration")
}

/// Starts `services`, lets them run for a random number of yields, shuts down, and
/// asserts that everything stopped cleanly within 10 s: a stop request that is not
/// seen would leave its service hanging until its 30 s shutdown timeout (the bound
/// is far above the milliseconds a stop takes, so a loaded machine does not fail
/// it, and far below the timeout, so a lost wake-up does).
async fn shut_down_after_a_random_moment(services: Vec<Service>) {
    let handle = start(services).await;
    yields(fastrand::usize(0..40)).await;
    handle.shutdown();
    let ended = tokio::time::timeout(Duration::from_secs(10), handle.wait()).await;
    let result = ended.expect("every service saw the stop within 10 s");
    result.expect("a clean stop");
}

/// `ROUNDS` times: starts `SERVICES` services that each run `body`, then shuts them
/// down at a random moment (see [`shut_down_after_a_random_moment`]).
fn race_rounds<F, Fut>(body: F)
where
    F: Fn(ServiceContext) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    runtime().block_on(async {
        for _ in 0..ROUNDS {
            let services = (0..SERVICES)
                .map(|i| Service::new(format!("s{i}"), body.clone()))
                .collect();
            shut_down_after_a_random_moment(services).await;
        }
    });
}

#[test]
fn a_cancellation_token_taken_as_the_stop_arrives_is_cancelled() {
    race_rounds(|ctx| async move {
        yields(fastrand::usize(0..40)).await;
        ctx.cancellation_token().cancelled().await;
    });
}

#[test]
fn every_way_of_waiting_for_the_stop_is_woken() {
    runtime().block_on(async {
        for _ in 0..ROUNDS {
            let woken = Arc::new(AtomicUsize::new(0));
            let started = Arc::new(AtomicUsize::new(0));
            let services = (0..SERVICES)
                .map(|i| {
                    let (woken, started) = (woken.clone(), started.clone());
                    Service::new(format!("s{i}"), move |ctx: ServiceContext| {
                        let woken = woken.clone();
                        started.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let w = woken.clone();
                            let c = ctx.clone();
                            ctx.spawn(async move {
                                c.shutdown_requested().await;
                                w.fetch_add(1, Ordering::SeqCst);
                            });
                            yields(fastrand::usize(0..20)).await;
                            if i % 2 == 0 {
                                // Polled with the combinator's own wakers, not the
                                // task's.
                                let mut set = FuturesUnordered::new();
                                set.push(ctx.shutdown_requested());
                                set.push(ctx.shutdown_requested());
                                set.next().await;
                            } else {
                                // Polled with the task's waker, beside another branch.
                                tokio::select! {
                                    () = ctx.shutdown_requested() => {}
                                    () = std::future::pending::<()>() => {}
                                }
                            }
                            woken.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            shut_down_after_a_random_moment(services).await;
            // A service stopped before its first run never runs; each run that did
            // start was woken twice: in its body and in its tied task.
            assert_eq!(
                woken.load(Ordering::SeqCst),
                2 * started.load(Ordering::SeqCst)
            );
        }
    });
}

#[test]
fn a_shutdown_future_moved_after_a_direct_poll_still_resolves() {
    race_rounds(|ctx| async move {
        // First polled by the body itself (no registration), then handed to a
        // combinator that polls it with its own waker.
        let mut stop = Box::pin(ctx.shutdown_requested());
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(stop.as_mut().poll(cx)));
        if first.await.is_ready() {
            return;
        }
        yields(fastrand::usize(0..20)).await;
        let mut set = FuturesUnordered::new();
        set.push(stop);
        set.next().await;
    });
}

#[test]
fn a_failing_tied_task_ends_a_waiting_run() {
    runtime().block_on(async {
        for _ in 0..ROUNDS {
            let runs = Arc::new(AtomicUsize::new(0));
            let services: Vec<Service> = (0..SERVICES)
                .map(|i| {
                    let runs = runs.clone();
                    Service::new(format!("s{i}"), move |ctx: ServiceContext| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        async move {
                            ctx.spawn(async {
                                yields(fastrand::usize(0..20)).await;
                                Err::<(), _>("task broke")
                            });
                            ctx.shutdown_requested().await;
                        }
                    })
                    .restart(Restart::Never)
                    .on_give_up(OnGiveUp::Ignore)
                })
                .collect();
            let handle = start(services).await;
            // Every run fails through its task and is not restarted: the runner ends
            // by itself, with every service named.
            let ended = tokio::time::timeout(Duration::from_secs(10), handle.wait()).await;
            let err = ended
                .expect("every failed task ended its run within 10 s")
                .expect_err("the runs failed");
            let text = format!("{err:#}");
            for i in 0..SERVICES {
                assert!(
                    text.contains(&format!("service `s{i}` failed;"))
                        || text.ends_with(&format!("service `s{i}` failed")),
                    "{text}"
                );
            }
            assert_eq!(runs.load(Ordering::SeqCst), SERVICES);
        }
    });
}

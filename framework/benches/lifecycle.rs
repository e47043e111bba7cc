//! Lifecycle overhead against a hand-written baseline (tokio::spawn + tokio-util
//! `CancellationToken` + `TaskTracker`), measured in the same run with interleaved
//! repetitions on a 2-worker multi-thread runtime:
//!
//! (a) start, then gracefully stop, 10,000 idle services that wait on their context
//!     (also: the time until every body has started running, servicekit's start
//!     without building its `Service` values, and the stopping call alone);
//! (b) heap bytes per idle service (counting allocator);
//! (c) restarts per second of a service that fails at once with zero backoff.
//!
//! Run: `cargo bench -p servicekit --bench lifecycle` (`-- --reps 21` for more,
//! `-- --no-restarts` to skip (c), `-- --profile-start` to run only servicekit's start/stop
//! for a profiler, `-- --profile-baseline` the baseline's, `-- --services N` for another
//! number of services than 10,000, `-- --current-thread` for the per-service CPU cost
//! on one thread).
//!
//! Medians over many alternating runs of two versions: `framework/benches/lifecycle-ab.sh`.

mod common;
use common::{arg, stats};

use std::alloc::System;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use servicekit::{Restart, Runner, Service};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Services per sample: 10,000, or `--services N`.
static N: LazyLock<usize> = LazyLock::new(|| arg("--services", 10_000));

/// Services (or baseline tasks) whose body has started running in this sample.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static ALL_RUNNING: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Called first thing in each body.
fn mark_running() {
    if RUNNING.fetch_add(1, Ordering::AcqRel) + 1 == *N {
        ALL_RUNNING.notify_one();
    }
}

async fn all_running() {
    while RUNNING.load(Ordering::Acquire) < *N {
        ALL_RUNNING.notified().await;
    }
}

struct Sample {
    start: Duration,
    /// Until every body has started running (each has been polled once).
    running: Duration,
    /// Of `start`, the time spent building the named `Service` values.
    build: Duration,
    stop: Duration,
    /// Of `stop`, the time the stopping call itself took (waking every task).
    wake: Duration,
    bytes_per_service: f64,
}

fn net_bytes(region: &Region<'_, System>) -> f64 {
    let c = region.change();
    (c.bytes_allocated as f64 - c.bytes_deallocated as f64) + (c.bytes_reallocated as f64).max(0.0)
}

async fn settle() {
    // Let every task reach its idle await.
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn baseline_once() -> Sample {
    RUNNING.store(0, Ordering::Release);
    let region = Region::new(GLOBAL);
    let t0 = Instant::now();
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    for _ in 0..*N {
        let token = root.child_token();
        tracker.spawn(async move {
            mark_running();
            token.cancelled().await;
        });
    }
    let start = t0.elapsed();
    all_running().await;
    let running = t0.elapsed();
    settle().await;
    let bytes = net_bytes(&region) / *N as f64;
    let t1 = Instant::now();
    root.cancel();
    let wake = t1.elapsed();
    tracker.close();
    tracker.wait().await;
    let stop = t1.elapsed();
    Sample {
        start,
        running,
        build: Duration::ZERO,
        stop,
        wake,
        bytes_per_service: bytes,
    }
}

async fn servicekit_once() -> Sample {
    RUNNING.store(0, Ordering::Release);
    let region = Region::new(GLOBAL);
    let t0 = Instant::now();
    let services: Vec<Service> = (0..*N)
        .map(|i| {
            Service::new(format!("svc-{i}"), |ctx| async move {
                mark_running();
                ctx.shutdown_requested().await;
            })
        })
        .collect();
    let build = t0.elapsed();
    let handle = Runner::new()
        .signals(false)
        .services(services)
        .start()
        .await
        .expect("valid");
    let start = t0.elapsed();
    all_running().await;
    let running = t0.elapsed();
    if std::env::var_os("LIFECYCLE_DEBUG").is_some() {
        eprintln!(
            "after start: {:.1} B/service",
            net_bytes(&region) / *N as f64
        );
    }
    settle().await;
    let bytes = net_bytes(&region) / *N as f64;
    let t1 = Instant::now();
    handle.shutdown();
    let wake = t1.elapsed();
    handle.wait().await.expect("clean stop");
    let stop = t1.elapsed();
    Sample {
        start,
        running,
        build,
        stop,
        wake,
        bytes_per_service: bytes,
    }
}

async fn servicekit_restarts(window: Duration) -> f64 {
    let svc = Service::without_context("flaky", || async { Err::<(), _>("fail at once") })
        .restart(Restart::OnFailure)
        .backoff(Duration::ZERO, Duration::ZERO)
        .max_restarts(u32::MAX, Duration::from_secs(1));
    let handle = Runner::new()
        .signals(false)
        .service(svc)
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let r0 = handle.status()[0].restarts;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let r1 = handle.status()[0].restarts;
    let rate = f64::from(r1 - r0) / t0.elapsed().as_secs_f64();
    handle.shutdown();
    handle.wait().await.unwrap();
    rate
}

/// What one writes by hand: spawn each attempt, await its JoinHandle (catches panics),
/// count, go again.
async fn baseline_restarts(window: Duration) -> f64 {
    let token = CancellationToken::new();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (t, c) = (token.clone(), count.clone());
    let task = tokio::spawn(async move {
        while !t.is_cancelled() {
            let r = tokio::spawn(async {
                Err::<(), Box<dyn std::error::Error + Send + Sync>>("fail at once".into())
            })
            .await;
            if !matches!(r, Ok(Ok(()))) {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let r0 = count.load(std::sync::atomic::Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let r1 = count.load(std::sync::atomic::Ordering::Relaxed);
    let rate = (r1 - r0) as f64 / t0.elapsed().as_secs_f64();
    token.cancel();
    task.await.unwrap();
    rate
}

fn main() {
    let reps = arg("--reps", 11);
    let rt = common::runtime();
    let only_servicekit = common::flag("--profile-start");
    if only_servicekit || common::flag("--profile-baseline") {
        // One side's start/stop alone, for `perf record` (compare the two profiles).
        rt.block_on(async {
            for _ in 0..reps {
                if only_servicekit {
                    servicekit_once().await;
                } else {
                    baseline_once().await;
                }
            }
        });
        return;
    }
    rt.block_on(async {
        // warm-up
        baseline_once().await;
        servicekit_once().await;

        let (mut b, mut s) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            b.push(baseline_once().await);
            s.push(servicekit_once().await);
        }
        let ms = |v: &[Sample], f: fn(&Sample) -> f64| stats(v.iter().map(f).collect());
        println!(
            "lifecycle bench: {} idle services, {reps} interleaved repetitions, {}",
            *N,
            common::runtime_name()
        );
        println!("(median [min .. max])");
        let show = |label: &str, (m, lo, hi): (f64, f64, f64), unit: &str| {
            println!("  {label:<40} {m:>10.2} {unit} [{lo:.2} .. {hi:.2}]");
        };
        // One measure, both sides: each side's times, the ratio of each interleaved
        // pair, and (noise on a shared machine only ever adds time) the ratio of the
        // two sides' fastest runs.
        let compare =
            |what: &str, ratio_label: &str, fastest_label: &str, f: fn(&Sample) -> Duration| {
                let millis =
                    |v: &[Sample]| stats(v.iter().map(|x| f(x).as_secs_f64() * 1e3).collect());
                show(&format!("(a) {what}, baseline"), millis(&b), "ms");
                show(&format!("(a) {what}, servicekit"), millis(&s), "ms");
                if what == "start" {
                    show(
                        "(a)   of which building Service values",
                        ms(&s, |x| x.build.as_secs_f64() * 1e3),
                        "ms",
                    );
                }
                let pairs = b.iter().zip(&s);
                let ratios = pairs.map(|(x, y)| f(y).as_secs_f64() / f(x).as_secs_f64());
                show(
                    &format!("(a) {what}{ratio_label}"),
                    stats(ratios.collect()),
                    "x",
                );
                let fastest = |v: &[Sample]| v.iter().map(f).min().expect("reps > 0").as_secs_f64();
                println!(
                    "  {:<40} {:>10.2} x",
                    format!("(a) {what}{fastest_label}"),
                    fastest(&s) / fastest(&b)
                );
            };
        compare(
            "start",
            " ratio servicekit/baseline",
            " ratio, fastest runs",
            |x| x.start,
        );
        // The runner's own part of the start: servicekit's start without building the
        // named `Service` values (the baseline builds nothing).
        compare("start() alone", ", ratio", ", fastest", |x| {
            x.start - x.build
        });
        compare("until every body runs", ", ratio", ", fastest", |x| {
            x.running
        });
        compare(
            "stop",
            " ratio servicekit/baseline",
            " ratio, fastest runs",
            |x| x.stop,
        );
        compare("stop call (waking)", ", ratio", ", fastest", |x| x.wake);
        show(
            "(b) bytes per service, baseline",
            ms(&b, |x| x.bytes_per_service),
            "B",
        );
        show(
            "(b) bytes per service, servicekit",
            ms(&s, |x| x.bytes_per_service),
            "B",
        );

        if common::flag("--no-restarts") {
            return;
        }
        let window = Duration::from_millis(300);
        let (mut rb, mut rs) = (Vec::new(), Vec::new());
        for _ in 0..reps.min(7) {
            rb.push(baseline_restarts(window).await);
            rs.push(servicekit_restarts(window).await);
        }
        show("(c) restarts/s, hand-written spawn loop", stats(rb), "/s");
        show("(c) restarts/s, servicekit", stats(rs), "/s");
    });
}

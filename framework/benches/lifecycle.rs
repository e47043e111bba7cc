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
//! First, the cold start a program really pays: 10,000 and 100,000 idle services
//! started once and stopped in a fresh process on a fresh 2-worker runtime per
//! repetition, against bare
//! tokio and tokio-graceful-shutdown (`--cold` for this part alone, `--warm` to skip it);
//! built with `--features http`, also servicekit with an idle HTTP server among the
//! services, against servicekit without (what turning `http` on costs).
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

/// Services per sample of the phase being measured.
static N: AtomicUsize = AtomicUsize::new(0);

fn n() -> usize {
    N.load(Ordering::Relaxed)
}

/// Services (or baseline tasks) whose body has started running in this sample.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static ALL_RUNNING: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Called first thing in each body.
fn mark_running() {
    if RUNNING.fetch_add(1, Ordering::AcqRel) + 1 == n() {
        ALL_RUNNING.notify_one();
    }
}

async fn all_running() {
    while RUNNING.load(Ordering::Acquire) < n() {
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
    for _ in 0..n() {
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
    let bytes = net_bytes(&region) / n() as f64;
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
    servicekit_with(false).await
}

/// servicekit's start and stop, with `http` an idle HTTP server (feature `http`)
/// among the services, as `Runner::http` adds it.
async fn servicekit_with(http: bool) -> Sample {
    RUNNING.store(0, Ordering::Release);
    let region = Region::new(GLOBAL);
    let t0 = Instant::now();
    let services: Vec<Service> = (0..n())
        .map(|i| {
            Service::new(format!("svc-{i}"), |ctx| async move {
                mark_running();
                ctx.shutdown_requested().await;
            })
        })
        .collect();
    let build = t0.elapsed();
    let runner = Runner::new().signals(false).services(services);
    #[cfg(feature = "http")]
    let runner = if http {
        use servicekit::ops::http::RunnerHttp;
        runner.http("127.0.0.1:0").expect("a free port")
    } else {
        runner
    };
    assert!(
        cfg!(feature = "http") || !http,
        "the http side needs --features http"
    );
    let handle = runner.start().await.expect("valid");
    let start = t0.elapsed();
    all_running().await;
    let running = t0.elapsed();
    if std::env::var_os("LIFECYCLE_DEBUG").is_some() {
        eprintln!(
            "after start: {:.1} B/service",
            net_bytes(&region) / n() as f64
        );
    }
    settle().await;
    let bytes = net_bytes(&region) / n() as f64;
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

/// tokio-graceful-shutdown on the same work: a toplevel that starts `n()` named
/// subsystems, each waiting for the shutdown request, stopped through its token.
async fn tgs_once() -> Sample {
    use tokio_graceful_shutdown::{SubsystemBuilder, SubsystemHandle, Toplevel};
    RUNNING.store(0, Ordering::Release);
    let region = Region::new(GLOBAL);
    let t0 = Instant::now();
    let token = CancellationToken::new();
    let top = Toplevel::new_with_shutdown_token(
        async |s: &mut SubsystemHandle| {
            for i in 0..n() {
                s.start(SubsystemBuilder::new(
                    format!("svc-{i}"),
                    async |h: &mut SubsystemHandle| {
                        mark_running();
                        h.on_shutdown_requested().await;
                        Ok::<(), std::convert::Infallible>(())
                    },
                ));
            }
        },
        token.clone(),
    );
    let top = tokio::spawn(top.handle_shutdown_requests(Duration::from_secs(60)));
    let start = t0.elapsed();
    all_running().await;
    let running = t0.elapsed();
    settle().await;
    let bytes = net_bytes(&region) / n() as f64;
    let t1 = Instant::now();
    token.cancel();
    let wake = t1.elapsed();
    top.await.expect("no panic").expect("clean stop");
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

/// The sides of the cold start, by name.
/// One figure of a cold sample (time until every body runs, stop time).
type Measure = fn(&(Duration, Duration)) -> Duration;

/// With `--features http`, a fourth side: servicekit with an idle HTTP server.
const SIDES: [&str; 4] = [
    "bare tokio",
    "servicekit",
    "tokio-graceful-shutdown",
    "servicekit + idle http",
];

fn sides() -> usize {
    if cfg!(feature = "http") { 4 } else { 3 }
}

/// One cold start: side `side` of [`SIDES`] on a fresh runtime, in a process of its
/// own (started by [`cold`]); prints its times in nanoseconds.
fn cold_child(side: usize) {
    let rt = common::runtime();
    let sample = rt.block_on(async {
        match side {
            0 => baseline_once().await,
            1 => servicekit_once().await,
            2 => tgs_once().await,
            _ => servicekit_with(true).await,
        }
    });
    drop(rt);
    println!("{} {}", sample.running.as_nanos(), sample.stop.as_nanos());
}

/// What a program does: start `n()` services once on a fresh 2-worker runtime in a
/// fresh process (fresh heap too), stop them, exit. Each repetition runs the three
/// sides in turn, each in a new process of this binary (`--cold-child SIDE`); only
/// the start and the stop are timed, inside the process.
fn cold(reps: usize) {
    let exe = std::env::current_exe().expect("the bench binary");
    let mut samples: [Vec<(Duration, Duration)>; 4] = Default::default();
    for _ in 0..reps {
        for (side, out) in samples.iter_mut().enumerate().take(sides()) {
            let output = std::process::Command::new(&exe)
                .args([
                    "--cold-child",
                    &side.to_string(),
                    "--services",
                    &n().to_string(),
                ])
                .args(std::env::args().skip_while(|a| a != "--workers").take(2))
                .output()
                .expect("run the bench binary");
            assert!(output.status.success(), "{}: {output:?}", SIDES[side]);
            let text = String::from_utf8(output.stdout).expect("utf-8");
            let mut nanos = text
                .split_whitespace()
                .map(|t| Duration::from_nanos(t.parse().expect("nanoseconds")));
            out.push((nanos.next().expect("running"), nanos.next().expect("stop")));
        }
    }
    println!(
        "lifecycle bench, cold: {} idle services, a fresh process and runtime ({}) per side and repetition, {reps} repetitions",
        n(),
        common::runtime_name()
    );
    println!("(median [min .. max]; ratio = median of each repetition's servicekit/peer)");
    let measures: [(&str, Measure); 3] = [
        ("until every body runs", |x| x.0),
        ("stop", |x| x.1),
        ("start + stop", |x| x.0 + x.1),
    ];
    for (what, f) in measures {
        for (name, v) in SIDES.iter().zip(&samples).take(sides()) {
            let (m, lo, hi) = stats(v.iter().map(|x| f(x).as_secs_f64() * 1e3).collect());
            println!(
                "  {:<50} {m:>10.2} ms [{lo:.2} .. {hi:.2}]",
                format!("{what}, {name}")
            );
        }
        let mut pairs = vec![(1, 0), (1, 2)];
        if sides() == 4 {
            pairs.push((3, 1));
        }
        for (side, peer) in pairs {
            let ratios = samples[side]
                .iter()
                .zip(&samples[peer])
                .map(|(s, p)| f(s).as_secs_f64() / f(p).as_secs_f64());
            let (m, lo, hi) = stats(ratios.collect());
            println!(
                "  {:<50} {m:>10.2} x  [{lo:.2} .. {hi:.2}]",
                format!("{what}, {}/{}", SIDES[side], SIDES[peer])
            );
        }
    }
}

fn main() {
    let reps = arg("--reps", 11);
    if let Some(side) = common::value("--cold-child") {
        N.store(arg("--services", 10_000), Ordering::Relaxed);
        cold_child(side.parse().expect("--cold-child SIDE"));
        return;
    }
    let profile = common::flag("--profile-start") || common::flag("--profile-baseline");
    if common::flag("--cold") || !(common::flag("--warm") || profile) {
        for services in common::value("--services").map_or(vec![10_000, 100_000], |v| {
            vec![v.parse().expect("--services N")]
        }) {
            N.store(services, Ordering::Relaxed);
            cold(reps);
        }
        if common::flag("--cold") {
            return;
        }
    }
    N.store(arg("--services", 10_000), Ordering::Relaxed);
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
            n(),
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

//! Services added to a running runner (`RunnerHandle::add`) against the same
//! services given to `start()`: 10,000 idle services on a fresh 2-worker runtime per
//! repetition (what a program pays), one side then the other, interleaved.
//!
//! For each side: the time to hand the services over (`start()` of all of them, or
//! `add` of each to a runner already running one service), the time until every
//! body has started running, and the heap bytes per service once idle.
//!
//! Run: `cargo bench -p servicekit --bench dynamic` (`-- --reps 21`, `-- --services N`).

mod common;
use common::{arg, stats};

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use servicekit::{Runner, Service};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::sync::Notify;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

struct Sample {
    hand_over: Duration,
    running: Duration,
    bytes_per_service: f64,
}

struct Running {
    count: AtomicUsize,
    all: Notify,
    n: usize,
}

impl Running {
    fn mark(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.all.notify_one();
        }
    }

    async fn wait(&self) {
        while self.count.load(Ordering::Acquire) < self.n {
            self.all.notified().await;
        }
    }
}

fn idle(name: String, running: &Arc<Running>) -> Service {
    let running = running.clone();
    Service::new(name, move |ctx| {
        let running = running.clone();
        async move {
            running.mark();
            ctx.shutdown_requested().await;
        }
    })
}

fn net_bytes(region: &Region<'_, System>) -> f64 {
    let c = region.change();
    (c.bytes_allocated as f64 - c.bytes_deallocated as f64) + (c.bytes_reallocated as f64).max(0.0)
}

/// One repetition on a fresh runtime: `add` (true) or `start` (false).
fn once(n: usize, add: bool) -> Sample {
    let rt = common::runtime();
    rt.block_on(async {
        // The anchor runs on both sides, so the two runners differ only in how the
        // n services got there.
        let running = Arc::new(Running {
            count: AtomicUsize::new(0),
            all: Notify::new(),
            n: n + 1,
        });
        let services: Vec<Service> = (0..n).map(|i| idle(format!("svc-{i}"), &running)).collect();
        let anchor = idle("anchor".into(), &running);
        let region = Region::new(GLOBAL);
        let t0 = Instant::now();
        let handle = if add {
            let handle = Runner::new()
                .signals(false)
                .service(anchor)
                .start()
                .await
                .expect("valid");
            for s in services {
                handle.add(s).expect("valid");
            }
            handle
        } else {
            Runner::new()
                .signals(false)
                .service(anchor)
                .services(services)
                .start()
                .await
                .expect("valid")
        };
        let hand_over = t0.elapsed();
        running.wait().await;
        let running_at = t0.elapsed();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let bytes = net_bytes(&region) / n as f64;
        handle.shutdown();
        handle.wait().await.expect("clean stop");
        Sample {
            hand_over,
            running: running_at,
            bytes_per_service: bytes,
        }
    })
}

fn main() {
    let reps = arg("--reps", 11);
    let n = arg("--services", 10_000);
    once(n, true);
    once(n, false);
    let (mut adds, mut starts) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        adds.push(once(n, true));
        starts.push(once(n, false));
    }
    println!(
        "dynamic bench: {n} idle services added to a running runner vs given to start(), {reps} interleaved repetitions, {}",
        common::runtime_name()
    );
    println!("(median [min .. max])");
    let show = |label: &str, (m, lo, hi): (f64, f64, f64), unit: &str| {
        println!("  {label:<44} {m:>10.2} {unit} [{lo:.2} .. {hi:.2}]");
    };
    let ms = |v: &[Sample], f: fn(&Sample) -> Duration| {
        stats(v.iter().map(|x| f(x).as_secs_f64() * 1e3).collect())
    };
    let ratio = |f: fn(&Sample) -> Duration| {
        stats(
            adds.iter()
                .zip(&starts)
                .map(|(a, s)| f(a).as_secs_f64() / f(s).as_secs_f64())
                .collect(),
        )
    };
    show("hand over, start()", ms(&starts, |x| x.hand_over), "ms");
    show("hand over, add() each", ms(&adds, |x| x.hand_over), "ms");
    show("hand over, ratio add/start", ratio(|x| x.hand_over), "x");
    show(
        "until every body runs, start()",
        ms(&starts, |x| x.running),
        "ms",
    );
    show(
        "until every body runs, add() each",
        ms(&adds, |x| x.running),
        "ms",
    );
    show("until every body runs, ratio", ratio(|x| x.running), "x");
    show(
        "bytes per service, start()",
        stats(starts.iter().map(|x| x.bytes_per_service).collect()),
        "B",
    );
    show(
        "bytes per service, add()",
        stats(adds.iter().map(|x| x.bytes_per_service).collect()),
        "B",
    );
}

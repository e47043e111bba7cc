//! The event bus: the cost of a send nobody listens to (time and allocations), fan-out
//! from one sender to 1, 8 and 64 subscriptions against one `tokio::sync::broadcast`
//! channel per event type (both lossy with lag reported, both sharing each event in
//! an `Arc`), and request/response round trips. One run, interleaved repetitions, a
//! 2-worker multi-thread runtime.
//!
//! Fan-out figures are delivered events per second (events received × the time of
//! the whole run); what each side lost to lag is shown beside it. Every subscriber
//! checks that what it received is in order and that received + lost = sent.
//!
//! Run: `cargo bench -p servicekit --bench event_bus` (`-- --reps 9`, `-- --n 400000`).

mod common;
use common::{arg, stats};

use std::alloc::System;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use servicekit::bus::{EventBus, RecvError};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CAP: usize = 256;

/// The event of the fan-out cases.
struct Tick(u64);

/// An event type nobody subscribes to.
struct Unheard(#[allow(dead_code)] u64);

/// Nanoseconds per send and allocations per send, with no subscriber to the type
/// (the bus has subscribers to another type).
fn send_unheard(n: u64) -> (f64, f64) {
    let bus = EventBus::new();
    let _other = bus.subscribe::<Tick>();
    let region = Region::new(GLOBAL);
    let t0 = Instant::now();
    for i in 0..n {
        bus.send(Unheard(black_box(i)));
    }
    let ns = t0.elapsed().as_nanos() as f64 / n as f64;
    (ns, region.change().allocations as f64 / n as f64)
}

/// The same for `tokio::sync::broadcast` with no receiver (`send` returns an error).
fn tokio_send_unheard(n: u64) -> f64 {
    let (tx, rx) = tokio::sync::broadcast::channel::<Arc<Unheard>>(CAP);
    drop(rx);
    let t0 = Instant::now();
    for i in 0..n {
        // tokio needs the value to send it: the `Arc` is part of its cost.
        let _ = black_box(tx.send(Arc::new(Unheard(black_box(i)))));
    }
    t0.elapsed().as_nanos() as f64 / n as f64
}

/// Returns (delivered per second, fraction lost).
async fn bus_fanout(n: u64, subs: usize) -> (f64, f64) {
    let bus = EventBus::with_capacity(CAP);
    let mut tasks = Vec::new();
    for _ in 0..subs {
        let mut sub = bus.subscribe::<Tick>();
        tasks.push(tokio::spawn(async move {
            let (mut got, mut lost, mut last) = (0u64, 0u64, None::<u64>);
            loop {
                match sub.recv().await {
                    Ok(t) => {
                        assert!(last.is_none_or(|l| t.0 > l), "out of order");
                        last = Some(t.0);
                        got += 1;
                    }
                    Err(RecvError::Lagged(k)) => lost += k,
                    Err(RecvError::Closed | RecvError::CutOff) => break,
                }
            }
            (got, lost)
        }));
    }
    let t0 = Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..n {
            bus.send(Tick(i));
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Dropping the last handle closes the bus.
    });
    producer.await.unwrap();
    collect(tasks, n, t0).await
}

async fn tokio_fanout(n: u64, subs: usize) -> (f64, f64) {
    let (tx, _) = tokio::sync::broadcast::channel::<Arc<Tick>>(CAP);
    let mut tasks = Vec::new();
    for _ in 0..subs {
        let mut r = tx.subscribe();
        tasks.push(tokio::spawn(async move {
            let (mut got, mut lost, mut last) = (0u64, 0u64, None::<u64>);
            loop {
                match r.recv().await {
                    Ok(t) => {
                        assert!(last.is_none_or(|l| t.0 > l), "out of order");
                        last = Some(t.0);
                        got += 1;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => lost += k,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
            (got, lost)
        }));
    }
    let t0 = Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..n {
            let _ = tx.send(Arc::new(Tick(i)));
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    producer.await.unwrap();
    collect(tasks, n, t0).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(u64, u64)>>,
    n: u64,
    t0: Instant,
) -> (f64, f64) {
    let (mut got, mut lost) = (0, 0);
    for t in tasks {
        let (g, l) = t.await.unwrap();
        assert_eq!(g + l, n, "an event was lost without being reported");
        got += g;
        lost += l;
    }
    (
        got as f64 / t0.elapsed().as_secs_f64(),
        lost as f64 / (got + lost) as f64,
    )
}

struct Ask(u64);
struct Answer(u64);

/// Sequential request/response round trips per second through `request`/`respond`.
async fn bus_requests(n: u64) -> f64 {
    let bus = EventBus::new();
    let responder = tokio::spawn(bus.respond(|q: Arc<Ask>| async move { Answer(q.0) }));
    let t0 = Instant::now();
    for i in 0..n {
        let a = bus
            .request::<Ask, Answer>(Ask(i), |a| a.0 == i, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(a.0, i);
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    drop(bus);
    responder.await.unwrap();
    rate
}

/// The same round trips written by hand with one `tokio::sync::mpsc` of requests,
/// each carrying a `oneshot` for its answer (a direct channel, no routing by type).
async fn mpsc_oneshot_requests(n: u64) -> f64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, tokio::sync::oneshot::Sender<u64>)>(CAP);
    let responder = tokio::spawn(async move {
        while let Some((q, reply)) = rx.recv().await {
            let _ = reply.send(q);
        }
    });
    let t0 = Instant::now();
    for i in 0..n {
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send((i, reply)).await.unwrap();
        assert_eq!(answer.await.unwrap(), i);
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    drop(tx);
    responder.await.unwrap();
    rate
}

fn main() {
    let reps = arg("--reps", 5);
    let n = arg("--n", 200_000) as u64;
    let sends = arg("--sends", 10_000_000) as u64;
    let requests = arg("--requests", 50_000) as u64;
    let rt = common::runtime();
    println!(
        "event bus bench: {n} events per fan-out case, capacity {CAP}, {reps} interleaved repetitions, {}",
        common::runtime_name()
    );
    println!("median [min .. max]");

    let (mut ns, mut allocs, mut tokio_ns) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let (t, a) = send_unheard(sends);
        ns.push(t);
        allocs.push(a);
        tokio_ns.push(tokio_send_unheard(sends));
    }
    println!("send with no subscriber ({sends} sends):");
    show("servicekit EventBus::send", ns, "ns");
    show("  allocations per send", allocs, "");
    show("tokio broadcast send, no receiver", tokio_ns, "ns");

    for subs in [1usize, 8, 64] {
        let (mut ours, mut theirs, mut ours_lost, mut theirs_lost, mut ratio) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let (o, ol) = rt.block_on(bus_fanout(n, subs));
            let (t, tl) = rt.block_on(tokio_fanout(n, subs));
            ours.push(o / 1e6);
            theirs.push(t / 1e6);
            ours_lost.push(ol * 100.0);
            theirs_lost.push(tl * 100.0);
            ratio.push(o / t);
        }
        println!("1→{subs}:");
        show("servicekit EventBus (delivered)", ours, "M/s");
        show("  lost to lag", ours_lost, "%");
        show("tokio broadcast per type (delivered)", theirs, "M/s");
        show("  lost to lag", theirs_lost, "%");
        show("servicekit / tokio", ratio, "x");
    }

    let (mut ours, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        ours.push(rt.block_on(bus_requests(requests)) / 1e3);
        direct.push(rt.block_on(mpsc_oneshot_requests(requests)) / 1e3);
    }
    println!("request/response, sequential ({requests} round trips):");
    show("servicekit request + respond", ours, "k/s");
    show("tokio mpsc + oneshot by hand", direct, "k/s");
}

fn show(label: &str, v: Vec<f64>, unit: &str) {
    let (med, min, max) = stats(v);
    let prec = if unit.is_empty() { 3 } else { 2 };
    println!("  {label:<44} {med:>8.prec$} {unit:<3} [{min:.prec$} .. {max:.prec$}]");
}

//! Work queue and pipeline throughput, one run, interleaved repetitions, 2-worker
//! multi-thread runtime:
//!
//! * `Queue` (bound 128) against `kanal`, `flume` and `async-channel`: 1 producer →
//!   1 consumer, and 4 producers → 4 consumers; every item is checked to arrive
//!   exactly once (sum and count).
//! * a 3-stage pipeline (4 workers each, a trivial async fn, 1,000,000 items) against
//!   a hand-written equivalent with tokio mpsc channels and spawned workers, ordered
//!   and unordered; ordered output is checked to be in order.
//!
//! Run: `cargo bench -p servicekit --bench queue` (`-- --reps 7`, `-- --n 500000`;
//! `-- --profile servicekit --p 4` runs only servicekit's `Queue` (or `kanal`, `flume`,
//! `async-channel`) with 4 producers and 4 consumers, for a profiler; `-- --stalls`
//! runs 4P/4C beside a probe task and reports how long that unrelated task waited to
//! run, the cost a queue puts on the rest of the runtime; `-- --workers 1` measures on
//! one worker, where only the operations' own cost shows).

mod common;
use common::{arg, stats};

use std::sync::Arc;
use std::time::Instant;

const CAP: usize = 128;

macro_rules! mpmc_bench {
    ($name:ident, $make:expr, |$tx:ident, $v:ident| $send:expr, |$rx:ident| $recv:expr) => {
        async fn $name(n: u64, producers: u64, consumers: usize) -> f64 {
            let (tx, rx) = $make;
            let t0 = Instant::now();
            let mut cs = Vec::new();
            for _ in 0..consumers {
                let $rx = rx.clone();
                cs.push(tokio::spawn(async move {
                    let (mut count, mut sum) = (0u64, 0u64);
                    while let Some(v) = $recv {
                        count += 1;
                        sum += v;
                    }
                    (count, sum)
                }));
            }
            drop(rx);
            let per = n / producers;
            let mut ps = Vec::new();
            for p in 0..producers {
                let $tx = tx.clone();
                ps.push(tokio::spawn(async move {
                    for $v in p * per..(p + 1) * per {
                        $send;
                    }
                }));
            }
            drop(tx);
            for p in ps {
                p.await.unwrap();
            }
            let (mut count, mut sum) = (0, 0);
            for c in cs {
                let (k, s) = c.await.unwrap();
                count += k;
                sum += s;
            }
            let total = per * producers;
            assert_eq!(count, total);
            assert_eq!(sum, total * (total - 1) / 2);
            total as f64 / t0.elapsed().as_secs_f64()
        }
    };
}

mpmc_bench!(
    servicekit_queue,
    {
        let q = servicekit::Queue::<u64>::bounded(CAP);
        let rx = q.receiver();
        (q, rx)
    },
    |tx, v| tx.send(v).await.unwrap(),
    |rx| rx.recv().await.ok()
);
mpmc_bench!(
    kanal_q,
    kanal::bounded_async::<u64>(CAP),
    |tx, v| tx.send(v).await.unwrap(),
    |rx| rx.recv().await.ok()
);
mpmc_bench!(
    flume_q,
    flume::bounded::<u64>(CAP),
    |tx, v| tx.send_async(v).await.unwrap(),
    |rx| rx.recv_async().await.ok()
);
mpmc_bench!(
    async_channel_q,
    async_channel::bounded::<u64>(CAP),
    |tx, v| tx.send(v).await.unwrap(),
    |rx| rx.recv().await.ok()
);

async fn work(x: u64) -> Result<u64, std::convert::Infallible> {
    Ok(x + 1)
}

async fn servicekit_pipeline(n: u64, ordered: bool) -> f64 {
    let t0 = Instant::now();
    let mut next = 3u64;
    let mk = |name: &'static str| {
        let s = servicekit::stage(name, work).workers(4);
        if ordered { s } else { s.unordered() }
    };
    let report = servicekit::Pipeline::from(futures::stream::iter(0..n))
        .via(mk("a"))
        .via(mk("b"))
        .via(mk("c"))
        .to(move |v: u64| {
            if ordered {
                assert_eq!(v, next);
            }
            next += 1;
            async {}
        })
        .run()
        .await
        .unwrap();
    assert_eq!(report.delivered, n);
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Hand-written: 3 stages × 4 spawned workers sharing a tokio mpsc receiver each
/// (behind a tokio Mutex), bounded channels of 128 between stages; ordered output
/// is restored with sequence numbers and a reorder buffer at the end.
async fn hand_written_pipeline(n: u64, ordered: bool) -> f64 {
    use tokio::sync::{Mutex, mpsc};
    let t0 = Instant::now();
    let (src_tx, src_rx) = mpsc::channel::<(u64, u64)>(CAP);
    let mut rx = Arc::new(Mutex::new(src_rx));
    let mut handles = Vec::new();
    for _ in 0..3 {
        let (tx, next_rx) = mpsc::channel::<(u64, u64)>(CAP);
        for _ in 0..4 {
            let (rx, tx) = (rx.clone(), tx.clone());
            handles.push(tokio::spawn(async move {
                loop {
                    let item = rx.lock().await.recv().await;
                    let Some((seq, v)) = item else { break };
                    let v = work(v).await.unwrap();
                    if tx.send((seq, v)).await.is_err() {
                        break;
                    }
                }
            }));
        }
        rx = Arc::new(Mutex::new(next_rx));
    }
    let producer = tokio::spawn(async move {
        for i in 0..n {
            src_tx.send((i, i)).await.unwrap();
        }
    });
    let mut out = Arc::try_unwrap(rx).ok().unwrap().into_inner();
    let mut count = 0u64;
    if ordered {
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0u64;
        while let Some((seq, v)) = out.recv().await {
            pending.insert(seq, v);
            while let Some(v) = pending.remove(&next) {
                assert_eq!(v, next + 3);
                next += 1;
                count += 1;
            }
        }
    } else {
        while out.recv().await.is_some() {
            count += 1;
        }
    }
    producer.await.unwrap();
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(count, n);
    n as f64 / t0.elapsed().as_secs_f64()
}

/// The queues by their `--profile` names, in the order the reports list them.
const QUEUES: [&str; 4] = ["servicekit", "kanal", "flume", "async-channel"];

/// Runs the MPMC bench of the queue named `which` (one of `QUEUES`).
async fn queue_by_name(which: &str, n: u64, producers: u64, consumers: usize) -> f64 {
    match which {
        "servicekit" => servicekit_queue(n, producers, consumers).await,
        "kanal" => kanal_q(n, producers, consumers).await,
        "flume" => flume_q(n, producers, consumers).await,
        "async-channel" => async_channel_q(n, producers, consumers).await,
        other => panic!("unknown queue {other:?} (expected one of {QUEUES:?})"),
    }
}

/// An unrelated task on the same runtime that yields in a loop until `stop`, and
/// returns the longest time it waited to be run again, and how many waits were over
/// 500 µs.
async fn probe(stop: Arc<std::sync::atomic::AtomicBool>) -> (std::time::Duration, u32) {
    let (mut worst, mut long) = (std::time::Duration::ZERO, 0);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let t = Instant::now();
        tokio::task::yield_now().await;
        let gap = t.elapsed();
        worst = worst.max(gap);
        if gap > std::time::Duration::from_micros(500) {
            long += 1;
        }
    }
    (worst, long)
}

/// `--stalls`: each queue at 4P/4C with the probe beside it, interleaved.
async fn stalls(n: u64, reps: usize) {
    println!("4 producers → 4 consumers beside a probe task that yields in a loop:");
    println!(
        "  items/s, and the probe's longest wait to run again (median [min .. max] over runs)"
    );
    println!("  and its waits over 500 µs (total over runs)");
    let names: [&str; QUEUES.len()] = ["servicekit Queue", "kanal", "flume", "async-channel"];
    let mut rate = vec![Vec::new(); names.len()];
    let mut worst = vec![Vec::new(); names.len()];
    let mut long = vec![0u32; names.len()];
    for _ in 0..reps {
        for (i, _) in names.iter().enumerate() {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let p = tokio::spawn(probe(stop.clone()));
            tokio::task::yield_now().await;
            let x = queue_by_name(QUEUES[i], n, 4, 4).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let (w, l) = p.await.unwrap();
            rate[i].push(x);
            worst[i].push(w.as_secs_f64() * 1e6);
            long[i] += l;
        }
    }
    for (i, name) in names.iter().enumerate() {
        let (m, lo, hi) = stats(rate[i].clone());
        let (wm, wlo, whi) = stats(worst[i].clone());
        println!(
            "  {name:<18} {:>7.2} M/s [{:.2} .. {:.2}]   longest wait {wm:>7.0} µs [{wlo:.0} .. {whi:.0}]   over 500 µs: {}",
            m / 1e6,
            lo / 1e6,
            hi / 1e6,
            long[i]
        );
    }
}

fn show(label: &str, v: Vec<f64>) {
    let (m, lo, hi) = stats(v);
    println!(
        "  {label:<40} {:>8.2} M/s [{:.2} .. {:.2}]",
        m / 1e6,
        lo / 1e6,
        hi / 1e6
    );
}

fn ratio(label: &str, v: Vec<f64>) {
    let (m, lo, hi) = stats(v);
    println!("  {label:<40} {m:>8.2} x   [{lo:.2} .. {hi:.2}]");
}

fn main() {
    let reps = arg("--reps", 7);
    let n = arg("--n", 1_000_000) as u64;
    let rt = common::runtime();
    println!(
        "queue bench: {n} items, bound {CAP}, {reps} interleaved repetitions, {}",
        common::runtime_name()
    );
    println!("items per second, median [min .. max]");
    if common::flag("--stalls") {
        rt.block_on(stalls(n, reps));
        return;
    }
    if let Some(which) = common::value("--profile") {
        // One queue alone, for `perf record`: `-- --profile servicekit --p 4`.
        let p = arg("--p", 4) as u64;
        rt.block_on(async {
            for _ in 0..reps {
                let c = p as usize;
                let x = queue_by_name(&which, n, p, c).await;
                println!("  {which} {p}P/{p}C {:>8.2} M/s", x / 1e6);
            }
        });
        return;
    }
    rt.block_on(async {
        for (p, c) in [(1u64, 1usize), (4, 4)] {
            let (mut s, mut k, mut f, mut a) = (vec![], vec![], vec![], vec![]);
            let (mut rk, mut rf, mut ra) = (vec![], vec![], vec![]);
            for _ in 0..reps {
                let x = servicekit_queue(n, p, c).await;
                let y = kanal_q(n, p, c).await;
                let z = flume_q(n, p, c).await;
                let w = async_channel_q(n, p, c).await;
                rk.push(x / y);
                rf.push(x / z);
                ra.push(x / w);
                s.push(x);
                k.push(y);
                f.push(z);
                a.push(w);
            }
            println!("{p} producer(s) → {c} consumer(s):");
            show("servicekit Queue", s);
            show("kanal", k);
            show("flume", f);
            show("async-channel", a);
            ratio("Queue / kanal", rk);
            ratio("Queue / flume", rf);
            ratio("Queue / async-channel", ra);
        }
        for ordered in [true, false] {
            let (mut s, mut h, mut r) = (vec![], vec![], vec![]);
            for _ in 0..reps {
                let x = servicekit_pipeline(n, ordered).await;
                let y = hand_written_pipeline(n, ordered).await;
                r.push(x / y);
                s.push(x);
                h.push(y);
            }
            println!(
                "3-stage pipeline, 4 workers per stage, {}:",
                if ordered { "ordered" } else { "unordered" }
            );
            show("servicekit Pipeline", s);
            show("hand-written (tokio mpsc + spawn)", h);
            ratio("Pipeline / hand-written", r);
        }
    });
}

//! Broadcast throughput: servicekit `Channel` against `async-broadcast` (overflow off,
//! the lossless peer), `tokio::sync::broadcast` (lossy: what it drops is counted) and
//! one `kanal` channel per customer. One run, interleaved repetitions, a 2-worker
//! multi-thread runtime, buffer 128, 1,000,000 `u64`, 1→1, 1→4 and 1→16 customers.
//! Every case checks that each customer got every message in order (tokio: in order,
//! with the dropped ones counted). Figures are delivered messages per second.
//!
//! Run: `cargo bench -p servicekit --bench channel` (`-- --reps 9`, `-- --n 200000`;
//! `-- --profile-servicekit --customers N` or `-- --profile-kanal --customers N` runs
//! only that library's 1→N case, for a profiler).

mod common;
use common::{arg, stats};

use std::time::Instant;

const CAP: usize = 128;

async fn servicekit(n: u64, customers: usize) -> f64 {
    let ch = servicekit::Channel::bounded(CAP);
    let mut tasks = Vec::new();
    for _ in 0..customers {
        let mut c = ch.connect();
        tasks.push(tokio::spawn(async move {
            let mut expect = 0u64;
            while let Ok(v) = c.recv().await {
                assert_eq!(v, expect);
                expect += 1;
            }
            expect
        }));
    }
    let t0 = Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..n {
            ch.send(i).await.unwrap();
        }
    });
    producer.await.unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap(), n);
    }
    (n as f64 * customers as f64) / t0.elapsed().as_secs_f64()
}

async fn async_broadcast(n: u64, customers: usize) -> f64 {
    let (mut tx, rx) = async_broadcast::broadcast::<u64>(CAP);
    tx.set_overflow(false);
    tx.set_await_active(true);
    let mut tasks = Vec::new();
    for _ in 0..customers {
        let mut r = rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut expect = 0u64;
            while let Ok(v) = r.recv().await {
                assert_eq!(v, expect);
                expect += 1;
            }
            expect
        }));
    }
    drop(rx);
    let t0 = Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..n {
            tx.broadcast(i).await.unwrap();
        }
    });
    producer.await.unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap(), n);
    }
    (n as f64 * customers as f64) / t0.elapsed().as_secs_f64()
}

/// Returns (deliveries per second, fraction dropped).
async fn tokio_broadcast(n: u64, customers: usize) -> (f64, f64) {
    let (tx, _) = tokio::sync::broadcast::channel::<u64>(CAP);
    let mut tasks = Vec::new();
    for _ in 0..customers {
        let mut r = tx.subscribe();
        tasks.push(tokio::spawn(async move {
            let (mut got, mut lost, mut last) = (0u64, 0u64, None::<u64>);
            loop {
                match r.recv().await {
                    Ok(v) => {
                        assert!(last.is_none_or(|l| v > l), "out of order");
                        last = Some(v);
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
            tx.send(i).unwrap();
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    producer.await.unwrap();
    let (mut got, mut lost) = (0, 0);
    for t in tasks {
        let (g, l) = t.await.unwrap();
        assert_eq!(g + l, n);
        got += g;
        lost += l;
    }
    (
        got as f64 / t0.elapsed().as_secs_f64(),
        lost as f64 / (got + lost) as f64,
    )
}

async fn kanal_per_customer(n: u64, customers: usize) -> f64 {
    let mut txs = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..customers {
        let (tx, rx) = kanal::bounded_async::<u64>(CAP);
        txs.push(tx);
        tasks.push(tokio::spawn(async move {
            let mut expect = 0u64;
            while let Ok(v) = rx.recv().await {
                assert_eq!(v, expect);
                expect += 1;
            }
            expect
        }));
    }
    let t0 = Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..n {
            for tx in &txs {
                tx.send(i).await.unwrap();
            }
        }
    });
    producer.await.unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap(), n);
    }
    (n as f64 * customers as f64) / t0.elapsed().as_secs_f64()
}

fn main() {
    let reps = arg("--reps", 7);
    // Only one library's 1→N case, for a profiler.
    let kanal = common::flag("--profile-kanal");
    if kanal || common::flag("--profile-servicekit") {
        let rt = common::runtime();
        let (n, c) = (arg("--n", 1_000_000) as u64, arg("--customers", 1));
        for _ in 0..reps {
            let r = if kanal {
                rt.block_on(kanal_per_customer(n, c))
            } else {
                rt.block_on(servicekit(n, c))
            };
            println!("{:.1} M/s", r / 1e6);
        }
        return;
    }
    let n = arg("--n", 1_000_000) as u64;
    let rt = common::runtime();
    println!(
        "channel bench: {n} u64, buffer {CAP}, {reps} interleaved repetitions, {}",
        common::runtime_name()
    );
    println!("delivered messages per second, median [min .. max]");
    for customers in [1usize, 4, 16] {
        let (mut sk, mut ab, mut tb, mut kn, mut drops) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut r_ab, mut r_kn) = (Vec::new(), Vec::new());
        rt.block_on(async {
            for _ in 0..reps {
                let s = servicekit(n, customers).await;
                let a = async_broadcast(n, customers).await;
                let (t, d) = tokio_broadcast(n, customers).await;
                let k = kanal_per_customer(n, customers).await;
                r_ab.push(s / a);
                r_kn.push(s / k);
                sk.push(s);
                ab.push(a);
                tb.push(t);
                kn.push(k);
                drops.push(d * 100.0);
            }
        });
        println!("1→{customers}:");
        let m = |label: &str, v: Vec<f64>| {
            let (md, lo, hi) = stats(v);
            println!(
                "  {label:<44} {:>8.1} M/s [{:.1} .. {:.1}]",
                md / 1e6,
                lo / 1e6,
                hi / 1e6
            );
        };
        m("servicekit Channel", sk);
        m("async-broadcast (overflow off)", ab);
        m("kanal, one channel per customer", kn);
        m("tokio broadcast (lossy)", tb);
        let (d, dlo, dhi) = stats(drops);
        println!(
            "  {:<44} {d:>8.1} %   [{dlo:.1} .. {dhi:.1}]",
            "  tokio broadcast: messages dropped"
        );
        let (r, rlo, rhi) = stats(r_ab);
        println!(
            "  {:<44} {r:>8.2} x   [{rlo:.2} .. {rhi:.2}]",
            "servicekit / async-broadcast"
        );
        let (r, rlo, rhi) = stats(r_kn);
        println!(
            "  {:<44} {r:>8.2} x   [{rlo:.2} .. {rhi:.2}]",
            "servicekit / kanal"
        );
    }
}

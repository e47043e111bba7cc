//! Named channels: `Hub::broadcast(prefix)` to 1,000 named channels, and the replay of
//! a 10,000-message history to a late reader, each against the same work done by
//! hand with one `tokio::sync::broadcast` channel per name in the same run.
//!
//! * Broadcast: 1,000 channels `sub/0000..0999` plus 1,000 others, one customer each
//!   (buffer 128); 100 broadcasts to `sub/` per repetition, each returning the names
//!   it reached (the peer: a `BTreeMap<String, broadcast::Sender>`, the range of the
//!   prefix, a `send` and the name pushed per channel). Customers are drained between
//!   repetitions, outside the timing. Figure: deliveries per second.
//! * Replay: a channel that kept its last 10,000 messages; a reader connects and reads
//!   all of them (the peer: a `Mutex<VecDeque>` history beside a broadcast channel; the
//!   late reader clones the history and subscribes under the lock, so no message falls
//!   between, then reads the copy). Figure: messages replayed per second.
//!
//! Run: `cargo bench -p servicekit --bench hub` (`-- --reps 9`).

mod common;
use common::{arg, stats};

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use servicekit::hub::{Hub, HubConfig, PrefixConfig};

const CHANNELS: usize = 1_000;
const ROUNDS: u64 = 100;
const HISTORY: usize = 10_000;

fn hub_broadcast() -> f64 {
    let hub = Hub::<u64>::with_config(HubConfig {
        buffer_size: 128,
        ..HubConfig::default()
    })
    .unwrap();
    let mut customers = Vec::new();
    for i in 0..CHANNELS {
        customers.push(hub.connect(&format!("sub/{i:04}")).unwrap());
        customers.push(hub.connect(&format!("other/{i:04}")).unwrap());
    }
    let t0 = Instant::now();
    let mut reached = 0;
    for r in 0..ROUNDS {
        let report = hub.broadcast("sub/", r);
        reached += report.delivered.len();
    }
    let rate = reached as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(reached, CHANNELS * ROUNDS as usize);
    for c in customers.iter_mut().step_by(2) {
        for r in 0..ROUNDS {
            assert_eq!(c.try_recv(), Ok(r));
        }
    }
    rate
}

fn tokio_broadcast() -> f64 {
    let mut senders = BTreeMap::new();
    let mut receivers = Vec::new();
    for i in 0..CHANNELS {
        for prefix in ["sub", "other"] {
            let (tx, rx) = tokio::sync::broadcast::channel::<u64>(128);
            senders.insert(format!("{prefix}/{i:04}"), tx);
            receivers.push(rx);
        }
    }
    let t0 = Instant::now();
    let mut reached = 0;
    for r in 0..ROUNDS {
        let prefix = "sub/";
        let mut delivered = Vec::new();
        for (name, tx) in senders
            .range(prefix.to_string()..)
            .take_while(|(n, _)| n.starts_with(prefix))
        {
            if tx.send(r).is_ok() {
                delivered.push(name.clone());
            }
        }
        reached += delivered.len();
    }
    let rate = reached as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(reached, CHANNELS * ROUNDS as usize);
    rate
}

fn hub_replay() -> f64 {
    let hub = Hub::<u64>::with_config(
        HubConfig::default().with_prefix(PrefixConfig::new("h").persistent(true).replay(HISTORY)),
    )
    .unwrap();
    let ch = hub.channel("history").unwrap();
    for i in 0..HISTORY as u64 + 500 {
        ch.try_send(i).unwrap();
    }
    let t0 = Instant::now();
    let mut late = ch.customer().unbounded().connect();
    let mut n = 0u64;
    while let Ok(v) = late.try_recv() {
        assert_eq!(v, 500 + n);
        n += 1;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(n as usize, HISTORY);
    rate
}

fn tokio_replay() -> f64 {
    let (tx, _) = tokio::sync::broadcast::channel::<u64>(128);
    let history = Mutex::new(VecDeque::with_capacity(HISTORY));
    for i in 0..HISTORY as u64 + 500 {
        let mut h = history.lock().unwrap();
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(i);
        let _ = tx.send(i);
    }
    let t0 = Instant::now();
    let (copy, mut live) = {
        let h = history.lock().unwrap();
        (h.clone(), tx.subscribe())
    };
    let mut n = 0u64;
    for v in copy {
        assert_eq!(v, 500 + n);
        n += 1;
    }
    assert!(live.try_recv().is_err());
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    assert_eq!(n as usize, HISTORY);
    rate
}

fn main() {
    let reps = arg("--reps", 7);
    println!(
        "hub bench: broadcast to {CHANNELS} of {} named channels x {ROUNDS}, replay of {HISTORY}; {reps} interleaved repetitions, one thread",
        2 * CHANNELS
    );
    println!("median [min .. max]");
    let (mut hb, mut tb, mut br) = (Vec::new(), Vec::new(), Vec::new());
    let (mut hr, mut tr, mut rr) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        let (h, t) = (hub_broadcast(), tokio_broadcast());
        hb.push(h / 1e6);
        tb.push(t / 1e6);
        br.push(h / t);
        let (h, t) = (hub_replay(), tokio_replay());
        hr.push(h / 1e6);
        tr.push(t / 1e6);
        rr.push(h / t);
    }
    show("broadcast(prefix), servicekit Hub", hb, "M/s");
    show("by hand, tokio broadcast per name", tb, "M/s");
    show("servicekit / by hand", br, "x");
    show("replay to a late reader, servicekit Hub", hr, "M/s");
    show("by hand, history + tokio broadcast", tr, "M/s");
    show("servicekit / by hand", rr, "x");
}

fn show(label: &str, v: Vec<f64>, unit: &str) {
    let (med, min, max) = stats(v);
    println!("  {label:<44} {med:>8.2} {unit:<3} [{min:.2} .. {max:.2}]");
}

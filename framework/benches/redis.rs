//! `servicekit::redis` against raw redis-rs doing the same work, in the same run,
//! on a `redis-server` this bench starts on a free loopback port:
//!
//! (a) ephemeral throughput: 100,000 messages sent in batches of 64 and received by
//!     one subscriber. servicekit: `send_batch` (one pipeline per batch: the closed
//!     flag checked, then the `PUBLISH`es) and a `RemoteCustomer` (a reader task
//!     keeps the subscription alive and drains it into the customer's bounded
//!     buffer; envelopes decoded). Raw redis-rs, three ways: a pipeline of 64
//!     `PUBLISH` and a `PubSub` stream that decodes each payload, with
//!     - a bare payload, read straight off the stream (which buffers without bound);
//!     - the fields servicekit's envelope carries around the payload (a version, a
//!       kind, an id and the time sent, as an array);
//!     - those fields, and a reader task draining the stream into a bounded buffer
//!       that the consumer reads: the same work as a customer, and the goal's peer.
//! (b) durable throughput with acknowledgements: the same through a stream. Raw:
//!     pipelined `XADD`, a loop of `XREADGROUP COUNT 64` and one `XACK` per batch.
//!     servicekit: `send_batch` and a fan-out customer that acknowledges each message.
//! (c) one-message latency, ephemeral: send one, wait for it; 2,000 times.
//!
//! The payload is the same small struct, JSON-encoded on both sides.
//!
//! Run: `cargo bench -p servicekit --features redis --bench redis` (`-- --reps 9`;
//! with `REDIS_BENCH_CPU=1` it also prints the CPU time the server and the bench
//! process spent on each side of the ephemeral part).

mod common;
use common::{arg, stats};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use servicekit::redis::{Consumer, Options, RedisChannel};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    seq: u64,
    symbol: String,
    price: f64,
}

fn tick(seq: u64) -> Tick {
    Tick {
        seq,
        symbol: "ACME".to_owned(),
        price: 101.25,
    }
}

/// What raw redis-rs sends when it carries what servicekit's envelope does: a
/// version, a kind, an id and the time sent around the payload, as an array.
type RawEnvelope = (u8, String, String, u64, Tick);

fn raw_envelope(seq: u64) -> Vec<u8> {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let id = format!("{:012x}{seq:x}", 0x5eed_u64);
    serde_json::to_vec(&(1u8, "data", id, ts, tick(seq))).unwrap()
}

const MESSAGES: u64 = 100_000;
const BATCH: usize = 64;

struct Server {
    child: Child,
    url: String,
    dir: std::path::PathBuf,
}

impl Server {
    fn start() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("servicekit-bench-redis-{port}"));
        std::fs::create_dir_all(&dir).expect("a directory");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", dir.to_str().expect("UTF-8"), "--save", ""])
            .args(["--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
            dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn flush(url: &str) {
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
}

/// What the raw side of the ephemeral part does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Raw {
    /// Publishes bare payloads and reads them straight off redis-rs's `PubSub`
    /// stream, which buffers without a bound.
    Bare,
    /// The same, each payload inside the fields servicekit's envelope carries.
    Enveloped,
    /// The same work as a servicekit customer: the envelope's fields, and a reader
    /// task that keeps draining the subscription into a bounded buffer (where a
    /// full buffer drops and counts, as a customer's does), which the consumer
    /// reads.
    Same,
}

/// Messages per second through raw pub/sub.
async fn raw_ephemeral(url: &str, raw: Raw) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    // A name per side: a subscriber of an earlier side still going away gets
    // none of this one's messages.
    let name = format!("raw-eph-{raw:?}");
    pubsub.subscribe(&name).await.unwrap();
    let decode = move |msg: redis::Msg| -> Tick {
        if raw == Raw::Bare {
            serde_json::from_slice(msg.get_payload_bytes()).unwrap()
        } else {
            let e: RawEnvelope = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
            e.4
        }
    };
    let mut reader = None;
    let receiver = if raw == Raw::Same {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Tick>(1 << 20);
        reader = Some(tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            let mut lagged = 0u64;
            // Until the consumer has them all and goes (as a customer's reader
            // stops when the customer goes).
            let gone = tx.closed();
            tokio::pin!(gone);
            loop {
                tokio::select! {
                    msg = stream.next() => {
                        if tx.try_send(decode(msg.unwrap())).is_err() {
                            lagged += 1;
                        }
                    }
                    () = &mut gone => break,
                }
            }
            assert_eq!(lagged, 0, "the buffer holds every message");
        }));
        tokio::spawn(async move {
            for n in 0..MESSAGES {
                assert_eq!(rx.recv().await.unwrap().seq, n);
            }
        })
    } else {
        tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            for n in 0..MESSAGES {
                assert_eq!(decode(stream.next().await.unwrap()).seq, n);
            }
        })
    };
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let began = Instant::now();
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(BATCH) {
        let mut pipe = redis::pipe();
        for &seq in chunk {
            let payload = if raw == Raw::Bare {
                serde_json::to_vec(&tick(seq)).unwrap()
            } else {
                raw_envelope(seq)
            };
            pipe.cmd("PUBLISH").arg(&name).arg(payload).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.unwrap();
    }
    receiver.await.unwrap();
    let rate = MESSAGES as f64 / began.elapsed().as_secs_f64();
    if let Some(reader) = reader {
        reader.await.unwrap();
    }
    rate
}

async fn servicekit_ephemeral(url: &str) -> f64 {
    let ch = RedisChannel::<Tick>::open(url, "sk-eph", Options::ephemeral().buffer(1 << 20))
        .await
        .unwrap();
    let mut customer = ch.connect().await.unwrap();
    let receiver = tokio::spawn(async move {
        for n in 0..MESSAGES {
            let m = customer.recv().await.unwrap();
            assert_eq!(m.payload.seq, n);
        }
    });
    send_all(&ch, receiver).await
}

/// Sends every message in batches with servicekit and returns messages per second
/// until `receiver` has them all.
async fn send_all(ch: &RedisChannel<Tick>, receiver: tokio::task::JoinHandle<()>) -> f64 {
    let began = Instant::now();
    let ticks: Vec<Tick> = (0..MESSAGES).map(tick).collect();
    for chunk in ticks.chunks(BATCH) {
        ch.send_batch(chunk).await.unwrap();
    }
    receiver.await.unwrap();
    MESSAGES as f64 / began.elapsed().as_secs_f64()
}

/// Entries per second through a raw stream, read by a group and acknowledged.
async fn raw_durable(url: &str) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("raw-dur")
        .arg("g")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(5)));
    let mut reader = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let mut acker = conn.clone();
    let receiver = tokio::spawn(async move {
        let mut n = 0;
        while n < MESSAGES {
            let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg("c")
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg("raw-dur")
                .arg(">")
                .query_async(&mut reader)
                .await
                .unwrap();
            let mut ids = Vec::new();
            for key in reply.keys {
                for entry in key.ids {
                    let bytes: Vec<u8> = entry.get("e").unwrap();
                    let t: Tick = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(t.seq, n);
                    n += 1;
                    ids.push(entry.id);
                }
            }
            if !ids.is_empty() {
                let _: () = redis::cmd("XACK")
                    .arg("raw-dur")
                    .arg("g")
                    .arg(&ids)
                    .query_async(&mut acker)
                    .await
                    .unwrap();
            }
        }
    });
    let began = Instant::now();
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(BATCH) {
        let mut pipe = redis::pipe();
        for &seq in chunk {
            pipe.cmd("XADD")
                .arg("raw-dur")
                .arg("*")
                .arg("e")
                .arg(serde_json::to_vec(&tick(seq)).unwrap())
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await.unwrap();
    }
    receiver.await.unwrap();
    MESSAGES as f64 / began.elapsed().as_secs_f64()
}

async fn servicekit_durable(url: &str) -> f64 {
    let ch = RedisChannel::<Tick>::open(url, "sk-dur", Options::durable())
        .await
        .unwrap();
    let mut customer = ch.connect_as(Consumer::fan_out("g")).await.unwrap();
    let receiver = tokio::spawn(async move {
        for n in 0..MESSAGES {
            let m = customer.recv().await.unwrap();
            assert_eq!(m.payload.seq, n);
            customer.ack(&m);
        }
    });
    send_all(&ch, receiver).await
}

const ROUND_TRIPS: usize = 2000;

/// Median microseconds from sending one message to receiving it, raw.
async fn raw_latency(url: &str) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("raw-lat").await.unwrap();
    let mut stream = pubsub.into_on_message();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for seq in 0..ROUND_TRIPS as u64 {
        let began = Instant::now();
        let _: () = redis::cmd("PUBLISH")
            .arg("raw-lat")
            .arg(serde_json::to_vec(&tick(seq)).unwrap())
            .query_async(&mut conn)
            .await
            .unwrap();
        let msg = stream.next().await.unwrap();
        let t: Tick = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
        assert_eq!(t.seq, seq);
        samples.push(began.elapsed().as_secs_f64() * 1e6);
    }
    stats(samples).0
}

async fn servicekit_latency(url: &str) -> f64 {
    let ch = RedisChannel::<Tick>::open(url, "sk-lat", Options::ephemeral())
        .await
        .unwrap();
    let mut customer = ch.connect().await.unwrap();
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for seq in 0..ROUND_TRIPS as u64 {
        let began = Instant::now();
        ch.send(&tick(seq)).await.unwrap();
        let m = customer.recv().await.unwrap();
        assert_eq!(m.payload.seq, seq);
        samples.push(began.elapsed().as_secs_f64() * 1e6);
    }
    stats(samples).0
}

fn main() {
    let reps = arg("--reps", 5);
    let server = Server::start();
    let rt = common::runtime();
    let url = server.url.clone();
    if let Some(side) = common::value("--profile") {
        // One side alone, for `perf record`: `bare`, `enveloped`, `same` (raw) or
        // `servicekit`, ephemeral.
        rt.block_on(async {
            for _ in 0..reps {
                let rate = match side.as_str() {
                    "bare" => raw_ephemeral(&url, Raw::Bare).await,
                    "enveloped" => raw_ephemeral(&url, Raw::Enveloped).await,
                    "same" => raw_ephemeral(&url, Raw::Same).await,
                    _ => servicekit_ephemeral(&url).await,
                };
                println!("{side}: {rate:.0} msg/s");
            }
        });
        return;
    }
    // Ephemeral: bare, enveloped, same work (raw), servicekit; durable: raw,
    // servicekit; latency: raw, servicekit.
    let mut results: [Vec<f64>; 8] = Default::default();
    let pid = server.child.id();
    let cpu_of = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        ticks / 100.0
    };
    let me = std::process::id();
    let cpu = move || (cpu_of(pid), cpu_of(me));
    let show_cpu = std::env::var_os("REDIS_BENCH_CPU").is_some();
    rt.block_on(async {
        for _ in 0..reps {
            flush(&url).await;
            let mut spent = Vec::new();
            for (i, raw) in [Raw::Bare, Raw::Enveloped, Raw::Same]
                .into_iter()
                .enumerate()
            {
                let c0 = cpu();
                results[i].push(raw_ephemeral(&url, raw).await);
                spent.push((format!("raw {raw:?}"), c0, cpu()));
            }
            let c0 = cpu();
            results[3].push(servicekit_ephemeral(&url).await);
            spent.push(("servicekit".to_owned(), c0, cpu()));
            if show_cpu {
                let line: Vec<String> = spent
                    .iter()
                    .map(|(side, a, b)| format!("{side} {:.2} s + {:.2} s", b.0 - a.0, b.1 - a.1))
                    .collect();
                eprintln!("CPU (redis-server + bench): {}", line.join(", "));
            }
            flush(&url).await;
            results[4].push(raw_durable(&url).await);
            results[5].push(servicekit_durable(&url).await);
            flush(&url).await;
            results[6].push(raw_latency(&url).await);
            results[7].push(servicekit_latency(&url).await);
        }
    });
    println!(
        "redis bench: {MESSAGES} messages in batches of {BATCH}, {reps} interleaved repetitions, {}",
        common::runtime_name()
    );
    println!("(median [min .. max]; ratio = median of each repetition's servicekit/raw)");
    let row = |label: &str, unit: &str, v: &[f64]| {
        let (m, lo, hi) = stats(v.to_vec());
        println!("  {label:<60} {m:>10.0} {unit} [{lo:.0} .. {hi:.0}]");
    };
    let ratio = |label: &str, sk: &[f64], raw: &[f64]| {
        let (m, lo, hi) = stats(sk.iter().zip(raw).map(|(s, r)| s / r).collect());
        println!("  {label:<60} {m:>10.2} x  [{lo:.2} .. {hi:.2}]");
    };
    let eph = "ephemeral throughput";
    row(
        &format!("{eph}, raw redis-rs, bare payload"),
        "msg/s",
        &results[0],
    );
    row(
        &format!("{eph}, raw redis-rs, envelope fields"),
        "msg/s",
        &results[1],
    );
    row(
        &format!("{eph}, raw redis-rs, same work"),
        "msg/s",
        &results[2],
    );
    row(&format!("{eph}, servicekit"), "msg/s", &results[3]);
    ratio(
        &format!("{eph}, servicekit/raw same work"),
        &results[3],
        &results[2],
    );
    ratio(
        &format!("{eph}, servicekit/raw envelope fields"),
        &results[3],
        &results[1],
    );
    ratio(
        &format!("{eph}, servicekit/raw bare payload"),
        &results[3],
        &results[0],
    );
    for (what, unit, i) in [
        ("durable throughput, acknowledged", "msg/s", 4),
        ("one-message latency, ephemeral (p50)", "µs", 6),
    ] {
        row(&format!("{what}, raw redis-rs"), unit, &results[i]);
        row(&format!("{what}, servicekit"), unit, &results[i + 1]);
        ratio(
            &format!("{what}, servicekit/raw"),
            &results[i + 1],
            &results[i],
        );
    }
}

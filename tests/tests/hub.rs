//! Named channels: get-or-create, prefix broadcast and its report, removal and close,
//! names, queues, replay for late customers (with a reference model and a
//! concurrent run), configuration (and a property test of `from_config`), and byte
//! streams with `tokio::io::copy` and `tokio_util::codec`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use proptest::prelude::*;
use servicekit::channel::{Overflow, RecvError, TryRecvError};
use servicekit::hub::{ConfigError, Hub, HubConfig, HubError, Kind, PrefixConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec};

fn persistent(replay: usize) -> Hub<u64> {
    Hub::with_config(
        HubConfig::default().with_prefix(PrefixConfig::new("p/").persistent(true).replay(replay)),
    )
    .unwrap()
}

#[test]
fn a_name_gives_the_same_channel_and_every_customer_gets_every_message() {
    let hub = Hub::<u64>::new();
    let writer = hub.channel("stage1").unwrap();
    let mut a = hub.connect("stage1").unwrap();
    let mut b = hub.channel("stage1").unwrap().connect();
    writer.try_send(1).unwrap();
    assert_eq!(a.try_recv(), Ok(1));
    assert_eq!(b.try_recv(), Ok(1));
    assert_eq!(hub.channel_count(), 1);
}

#[test]
fn a_queue_gives_each_item_to_one_receiver_and_is_never_a_channel() {
    let hub = Hub::<u64>::new();
    let q = hub.queue("jobs").unwrap();
    let (r1, r2) = (q.receiver(), hub.queue("jobs").unwrap().receiver());
    for i in 0..10 {
        q.try_send(i).unwrap();
    }
    let mut got = Vec::new();
    while let Ok(v) = r1.try_recv() {
        got.push(v);
        if let Ok(v) = r2.try_recv() {
            got.push(v);
        }
    }
    got.sort();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_eq!(
        hub.channel("jobs").unwrap_err(),
        HubError::WrongKind {
            name: "jobs".into(),
            is: Kind::Queue
        }
    );
    hub.channel("events").unwrap();
    assert_eq!(
        hub.queue("events").unwrap_err().to_string(),
        "hub name `events` is a channel"
    );
}

#[test]
fn names_are_checked() {
    let hub = Hub::<u8>::new();
    let reason = |name: &str| match hub.channel(name).unwrap_err() {
        HubError::InvalidName { reason, .. } => reason,
        other => panic!("{other:?}"),
    };
    assert_eq!(reason(""), "it is empty");
    assert_eq!(reason("a\u{7}b"), "it contains a control character");
    assert_eq!(
        reason(&"x".repeat(257)),
        "it is longer than the limit of 256 bytes (hub::MAX_NAME_LEN)"
    );
    assert!(hub.channel(&"x".repeat(256)).is_ok());
    assert!(hub.queue("").is_err());
    // A long name is shortened in the message, at a character boundary (3-byte
    // characters: byte 32 is inside the eleventh).
    match hub.channel(&"€".repeat(300)).unwrap_err() {
        HubError::InvalidName { name, .. } => assert_eq!(name, format!("{}...", "€".repeat(10))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn broadcast_reports_every_channel_under_the_prefix() {
    let hub = Hub::<u64>::with_config(HubConfig {
        buffer_size: 1,
        ..HubConfig::default()
    })
    .unwrap();
    let mut ok = hub.connect("sub/ok").unwrap();
    let _full = hub.connect("sub/full").unwrap();
    hub.channel("sub/full").unwrap().try_send(0).unwrap();
    hub.channel("sub/empty").unwrap();
    hub.channel("sub/closed").unwrap().close();
    let _other = hub.connect("other").unwrap();
    hub.queue("sub/queue").unwrap();
    let report = hub.broadcast("sub/", 7);
    assert_eq!(report.delivered, ["sub/ok"]);
    assert_eq!(report.full, ["sub/full"]);
    assert_eq!(report.no_customers, ["sub/empty"]);
    assert_eq!(report.closed, ["sub/closed"]);
    assert!(!report.is_complete());
    assert_eq!(ok.try_recv(), Ok(7));
}

#[tokio::test]
async fn broadcast_async_waits_for_room_instead_of_skipping() {
    let hub = Hub::<u64>::with_config(HubConfig {
        buffer_size: 1,
        ..HubConfig::default()
    })
    .unwrap();
    let mut subs: Vec<_> = (0..3)
        .map(|i| hub.connect(&format!("s/{i}")).unwrap())
        .collect();
    assert!(hub.broadcast("s/", 0).is_complete());
    let send = hub.broadcast_async("s/", 1);
    let drain = async {
        for s in &mut subs {
            assert_eq!(s.recv().await, Ok(0));
            assert_eq!(s.recv().await, Ok(1));
        }
    };
    let (report, ()) = tokio::join!(send, drain);
    assert_eq!(report.delivered, ["s/0", "s/1", "s/2"]);
}

#[test]
fn list_is_sorted_and_filtered_by_prefix() {
    let hub = Hub::<u8>::new();
    for name in ["b/2", "a", "b/1", "ba", "c"] {
        hub.channel(name).unwrap();
    }
    hub.queue("b/0").unwrap();
    assert_eq!(hub.list("b/"), ["b/0", "b/1", "b/2"]);
    assert_eq!(hub.list("b"), ["b/0", "b/1", "b/2", "ba"]);
    assert_eq!(hub.list(""), ["a", "b/0", "b/1", "b/2", "ba", "c"]);
    assert!(hub.list("z").is_empty());
    assert_eq!(hub.channel_count(), 6);
}

#[tokio::test]
async fn remove_closes_after_draining_and_a_writer_still_holding_it_gets_errors() {
    let hub = Hub::<u64>::new();
    let writer = hub.channel("x").unwrap();
    let mut c = hub.connect("x").unwrap();
    writer.send(1).await.unwrap();
    assert!(hub.remove("x"));
    assert!(!hub.remove("x"));
    assert_eq!(c.recv().await, Ok(1));
    assert_eq!(c.recv().await, Err(RecvError::Closed));
    assert!(writer.send(2).await.unwrap_err().is_closed());
    // The name can be used again: a new channel.
    let fresh = hub.channel("x").unwrap();
    assert!(!fresh.is_closed());
    assert_eq!(hub.channel_count(), 1);
}

#[tokio::test]
async fn close_drains_everything_then_refuses_new_names() {
    let hub = Hub::<u64>::new();
    let mut c = hub.connect("a").unwrap();
    let q = hub.queue("q").unwrap();
    let r = q.receiver();
    hub.channel("a").unwrap().send(1).await.unwrap();
    q.send(2).await.unwrap();
    assert!(hub.close());
    assert!(!hub.close());
    assert_eq!(c.recv().await, Ok(1));
    assert_eq!(c.recv().await, Err(RecvError::Closed));
    assert_eq!(r.recv().await.unwrap(), 2);
    assert!(r.recv().await.is_err());
    assert_eq!(hub.channel("b").unwrap_err(), HubError::Closed);
    assert_eq!(hub.queue("q").unwrap_err(), HubError::Closed);
    assert_eq!(hub.channel_count(), 0);
}

#[test]
fn a_late_customer_gets_the_kept_messages_then_live_ones_exactly_once() {
    let hub = persistent(3);
    let ch = hub.channel("p/events").unwrap();
    for i in 0..10 {
        ch.try_send(i).unwrap(); // nobody connected: kept, not refused
    }
    let mut late = hub
        .channel("p/events")
        .unwrap()
        .customer()
        .unbounded()
        .connect();
    ch.try_send(10).unwrap();
    let mut later = hub
        .channel("p/events")
        .unwrap()
        .customer()
        .unbounded()
        .connect();
    ch.try_send(11).unwrap();
    let drain = |c: &mut servicekit::Customer<u64>| {
        let mut v = Vec::new();
        while let Ok(x) = c.try_recv() {
            v.push(x);
        }
        v
    };
    assert_eq!(drain(&mut late), [7, 8, 9, 10, 11]);
    assert_eq!(drain(&mut later), [8, 9, 10, 11]);
    // Not persistent: a late customer starts empty, and a send waits for customers.
    let plain = hub.channel("plain").unwrap();
    assert!(matches!(
        plain.try_send(1),
        Err(servicekit::channel::TrySendError::NoCustomers(1))
    ));
}

#[test]
fn a_persistent_channel_keeps_at_most_its_replay_depth() {
    let drops = Arc::new(AtomicUsize::new(0));
    #[derive(Clone)]
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let hub = Hub::<Counted>::with_config(HubConfig {
        persistent: true,
        replay: 10,
        ..HubConfig::default()
    })
    .unwrap();
    let ch = hub.channel("h").unwrap();
    for _ in 0..1_000 {
        ch.try_send(Counted(drops.clone())).unwrap();
    }
    // Trimmed in batches of at most 64 sends.
    let kept = 1_000 - drops.load(Ordering::SeqCst);
    assert!((10..=10 + 64).contains(&kept), "kept {kept}");
}

#[tokio::test]
async fn a_late_reader_replays_a_persistent_byte_channel() {
    let hub = Hub::<Bytes>::with_config(HubConfig {
        persistent: true,
        ..HubConfig::default()
    })
    .unwrap();
    let mut w = hub.writer("input").unwrap();
    w.write_all(b"test data").await.unwrap();
    w.shutdown().await.unwrap();
    // The writer closed before the reader came: the data is still there.
    let mut r = hub.reader("input").unwrap();
    let mut all = Vec::new();
    r.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"test data");
}

#[tokio::test]
async fn byte_streams_work_with_copy_and_codec_framing() {
    let hub = Hub::<Bytes>::new();
    // Stage 1 writes lines with a codec; stage 2 copies the bytes through; stage 3
    // reads lines back with a codec, whatever the message boundaries were.
    let mut stage2_in = hub.reader("stage1").unwrap();
    let mut stage2_out = hub.writer("stage2").unwrap();
    let stage3 = FramedRead::new(hub.reader("stage2").unwrap(), LinesCodec::new());
    let mut stage1 = FramedWrite::new(hub.writer("stage1").unwrap(), LinesCodec::new());
    let producer = tokio::spawn(async move {
        for i in 0..100 {
            stage1.send(format!("line {i}")).await.unwrap();
        }
        // Closing the sink shuts the writer down: end of file downstream.
        SinkExt::<String>::close(&mut stage1).await.unwrap();
    });
    let copier = tokio::spawn(async move {
        let n = tokio::io::copy(&mut stage2_in, &mut stage2_out)
            .await
            .unwrap();
        stage2_out.shutdown().await.unwrap();
        n
    });
    let lines: Vec<String> = stage3.map(Result::unwrap).collect().await;
    producer.await.unwrap();
    let copied = copier.await.unwrap();
    assert_eq!(lines.len(), 100);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l, &format!("line {i}"));
    }
    assert_eq!(
        copied as usize,
        lines.iter().map(|l| l.len() + 1).sum::<usize>()
    );
}

#[tokio::test]
async fn read_message_keeps_boundaries_and_small_reads_split_them() {
    let hub = Hub::<Bytes>::new();
    let mut r1 = hub.reader("m").unwrap();
    let mut r2 = hub.reader("m").unwrap();
    let mut w = hub.writer("m").unwrap();
    w.write_all(b"hello").await.unwrap();
    w.write_all(b"world").await.unwrap();
    drop(w); // dropping the writer closes the channel too
    assert_eq!(r1.read_message().await.unwrap().unwrap(), &b"hello"[..]);
    assert_eq!(r1.read_message().await.unwrap().unwrap(), &b"world"[..]);
    assert_eq!(r1.read_message().await.unwrap(), None);
    let mut buf = [0u8; 3];
    let mut got = Vec::new();
    loop {
        let n = r2.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got.concat(), b"helloworld");
    assert_eq!(got[0], b"hel");
}

#[tokio::test]
async fn a_writer_waits_for_a_full_reader_and_fails_once_the_channel_is_gone() {
    let hub = Hub::<Bytes>::with_config(HubConfig {
        buffer_size: 1,
        ..HubConfig::default()
    })
    .unwrap();
    let mut r = hub.reader("slow").unwrap();
    let mut w = hub.writer("slow").unwrap();
    w.write_all(b"1").await.unwrap();
    w.write_all(b"2").await.unwrap(); // accepted, sent in the background
    let third = tokio::time::timeout(Duration::from_millis(50), w.write_all(b"3")).await;
    assert!(
        third.is_err(),
        "the writer did not wait for the full reader"
    );
    assert_eq!(r.read_message().await.unwrap().unwrap(), &b"1"[..]);
    w.write_all(b"3").await.unwrap(); // "2" went out; "3" waits for the next call
    assert_eq!(r.read_message().await.unwrap().unwrap(), &b"2"[..]);
    w.flush().await.unwrap();
    assert_eq!(r.read_message().await.unwrap().unwrap(), &b"3"[..]);
    hub.remove("slow");
    let err = w.write_all(b"4").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
}

#[test]
fn from_config_reads_the_seed_keys_and_prefix_settings() {
    let map = HashMap::from([
        ("buffer_size".to_string(), "100".to_string()),
        ("persistent".to_string(), "true".to_string()),
        ("metrics/*.overflow".to_string(), "drop_oldest".to_string()),
        ("metrics/*.persistent".to_string(), "false".to_string()),
        ("events/*.replay".to_string(), "5".to_string()),
    ]);
    let hub = Hub::<u64>::from_config(&map).unwrap();
    let c = hub.config();
    assert_eq!(c.for_name("events/a").replay, 5);
    assert!(c.for_name("events/a").persistent);
    assert!(!c.for_name("metrics/cpu").persistent);
    assert_eq!(c.for_name("metrics/cpu").overflow, Overflow::DropOldest);
    // The customer a hub connects under `metrics/` drops its oldest instead of
    // blocking the sender.
    let mut m = hub.connect("metrics/cpu").unwrap();
    let ch = hub.channel("metrics/cpu").unwrap();
    for i in 0..150 {
        ch.try_send(i).unwrap();
    }
    assert_eq!(m.try_recv(), Err(TryRecvError::Recv(RecvError::Lagged(50))));
}

#[test]
fn bad_settings_are_rejected_naming_key_and_value() {
    let err = |k: &str, v: &str| -> ConfigError {
        Hub::<u8>::from_config(&HashMap::from([(k.to_string(), v.to_string())])).unwrap_err()
    };
    assert_eq!(
        err("buffer_size", "0").to_string(),
        "hub setting `buffer_size`: must be at least 1, got `0`"
    );
    assert_eq!(
        err("persistent", "maybe").to_string(),
        "hub setting `persistent`: `maybe` is not true or false"
    );
    assert_eq!(
        err("events/*.overflow", "sometimes").to_string(),
        "hub setting `events/*.overflow`: `sometimes` is not block, drop_oldest or disconnect"
    );
    let unknown = err("bufer_size", "1");
    assert_eq!(unknown.key(), "bufer_size");
    assert!(
        unknown.to_string().contains("known: buffer_size"),
        "{unknown}"
    );
    assert_eq!(err("*.replay", "3").key(), "*.replay");
    assert_eq!(err("a/*.colour", "3").key(), "a/*.colour");
}

#[test]
fn the_config_deserializes_with_serde() {
    let json = r#"{
        "buffer_size": 50,
        "prefixes": [
            {"prefix": "events/", "persistent": true, "replay": 20},
            {"prefix": "metrics/", "overflow": "drop_oldest"}
        ]
    }"#;
    let config: HubConfig = serde_json::from_str(json).unwrap();
    assert_eq!(config.buffer_size, 50);
    assert!(!config.persistent);
    assert_eq!(config.for_name("events/x").replay, 20);
    assert_eq!(config.for_name("metrics/x").overflow, Overflow::DropOldest);
    let unknown = serde_json::from_str::<HubConfig>(r#"{"bufer_size": 1}"#).unwrap_err();
    assert!(unknown.to_string().contains("bufer_size"), "{unknown}");
    let bad = serde_json::from_str::<HubConfig>(r#"{"overflow": "never"}"#).unwrap_err();
    assert!(bad.to_string().contains("never"), "{bad}");
    // Deserialized values are checked when the hub is made.
    let zero: HubConfig = serde_json::from_str(r#"{"replay": 0}"#).unwrap();
    assert_eq!(Hub::<u8>::with_config(zero).unwrap_err().key(), "replay");
}

fn key() -> impl Strategy<Value = String> {
    let setting = prop_oneof![
        Just("buffer_size".to_string()),
        Just("persistent".to_string()),
        Just("replay".to_string()),
        Just("overflow".to_string()),
        "[a-z_]{0,12}",
    ];
    prop_oneof![
        setting.clone(),
        ("[a-z/]{0,6}", setting).prop_map(|(p, s)| format!("{p}*.{s}")),
        any::<String>(),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..1000).prop_map(|n| n.to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("drop_oldest".to_string()),
        Just("block".to_string()),
        Just("-1".to_string()),
        Just("99999999999999999999999".to_string()),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Any map: never a panic; a rejection names a key of the map, in its message too.
    #[test]
    fn from_config_never_panics_and_names_the_bad_key(
        map in prop::collection::hash_map(key(), value(), 0..6)
    ) {
        match Hub::<u8>::from_config(&map) {
            Ok(hub) => {
                hub.config().validate().unwrap();
                // Every setting it accepted is usable.
                let mut c = hub.connect("events/x").unwrap();
                let _ = hub.broadcast("", 1);
                let _ = c.try_recv();
            }
            Err(e) => {
                let value = map.get(e.key());
                prop_assert!(value.is_some(), "{} is not a key of the map", e.key());
                let shown = e.to_string();
                prop_assert!(shown.contains(e.key()), "{shown}");
                prop_assert!(shown.contains(value.unwrap().as_str()), "{shown}");
            }
        }
    }
}

// The replay model: a persistent channel, customers connecting and leaving, the
// name removed and made again, against a plain model of what each must receive.

#[derive(Debug, Clone)]
enum Op {
    Send,
    Connect,
    TryRecv(usize),
    Disconnect(usize),
    Remove,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Send),
        2 => Just(Op::Connect),
        6 => any::<usize>().prop_map(Op::TryRecv),
        1 => any::<usize>().prop_map(Op::Disconnect),
        1 => Just(Op::Remove),
    ]
}

struct ModelCustomer {
    queue: std::collections::VecDeque<u64>,
    generation: u64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn replay_agrees_with_the_model(depth in 1usize..6, ops in prop::collection::vec(op(), 1..60)) {
        let hub = persistent(depth);
        let mut channel = hub.channel("p/x").unwrap();
        let mut history = std::collections::VecDeque::new();
        let mut generation = 0u64;
        let mut real: Vec<servicekit::Customer<u64>> = Vec::new();
        let mut model: Vec<ModelCustomer> = Vec::new();
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Send => {
                    channel.try_send(next).unwrap();
                    history.push_back(next);
                    if history.len() > depth {
                        history.pop_front();
                    }
                    for m in model.iter_mut().filter(|m| m.generation == generation) {
                        m.queue.push_back(next);
                    }
                    next += 1;
                }
                Op::Connect => {
                    // The hub's own customer: a bound of the buffer plus the history.
                    real.push(hub.connect("p/x").unwrap());
                    model.push(ModelCustomer { queue: history.clone(), generation });
                }
                Op::TryRecv(i) if !real.is_empty() => {
                    let i = i % real.len();
                    let got = real[i].try_recv();
                    let m = &mut model[i];
                    let want = match m.queue.pop_front() {
                        Some(v) => Ok(v),
                        None if m.generation != generation => Err(TryRecvError::Recv(RecvError::Closed)),
                        None => Err(TryRecvError::Empty),
                    };
                    prop_assert_eq!(got, want, "customer {}", i);
                }
                Op::Disconnect(i) if !real.is_empty() => {
                    let i = i % real.len();
                    real.swap_remove(i);
                    model.swap_remove(i);
                }
                Op::Remove => {
                    prop_assert!(hub.remove("p/x"));
                    channel = hub.channel("p/x").unwrap();
                    history.clear();
                    generation += 1;
                }
                _ => {}
            }
        }
    }
}

/// Sends and connects racing on a multi-thread runtime: every customer receives a
/// run of consecutive messages with no gap and no duplicate, starting no earlier
/// than the replay depth allows, and ending with the last message sent.
#[test]
fn replay_has_no_gap_or_duplicate_while_sends_and_connects_race() {
    const N: u64 = 20_000;
    const DEPTH: usize = 64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let hub = persistent(DEPTH);
        let ch = hub.channel("p/race").unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let sender = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for i in 0..N {
                    ch.send(i).await.unwrap();
                    sent.store(i as usize + 1, Ordering::SeqCst);
                    if i % 97 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                ch.close();
            })
        };
        let mut readers = Vec::new();
        for k in 0..40 {
            let before = sent.load(Ordering::SeqCst) as u64;
            let mut c = hub
                .channel("p/race")
                .unwrap()
                .customer()
                .unbounded()
                .connect();
            let after = sent.load(Ordering::SeqCst) as u64;
            readers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Ok(v) = c.recv().await {
                    got.push(v);
                }
                (before, after, got)
            }));
            if k % 4 == 0 {
                tokio::task::yield_now().await;
            }
        }
        sender.await.unwrap();
        for r in readers {
            let (before, after, got) = r.await.unwrap();
            // The tail at the connect was between `before` and `after + 1` (a send
            // may have been committed before it was counted): the customer starts
            // exactly `DEPTH` before it.
            let first = got[0];
            assert!(
                first >= before.saturating_sub(DEPTH as u64)
                    && first <= (after + 1).saturating_sub(DEPTH as u64),
                "started at {first}, connected between {before} and {after} sent"
            );
            for w in got.windows(2) {
                assert_eq!(w[1], w[0] + 1, "a gap or a duplicate");
            }
            assert_eq!(*got.last().unwrap(), N - 1);
        }
    });
}

#[tokio::test]
async fn broadcast_async_skips_a_channel_whose_full_customers_leave() {
    let hub = Hub::<u64>::with_config(HubConfig {
        buffer_size: 1,
        ..HubConfig::default()
    })
    .unwrap();
    let full = hub.connect("s/0").unwrap();
    hub.broadcast("s/", 0);
    let waiting = tokio::spawn({
        let hub = hub.clone();
        async move { hub.broadcast_async("s/", 1).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished(), "it did not wait for room");
    drop(full);
    let report = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("it waited for a customer instead of skipping")
        .unwrap();
    assert_eq!(report.no_customers, ["s/0"]);
}

#[tokio::test]
async fn the_last_writer_of_a_name_ends_the_stream_and_the_name_starts_a_new_one() {
    let hub = Hub::<Bytes>::new();
    let mut r = hub.reader("log").unwrap();
    let mut a = hub.writer("log").unwrap();
    let mut b = hub.writer("log").unwrap();
    a.write_all(b"a").await.unwrap();
    a.shutdown().await.unwrap(); // b still writes: not the end
    b.write_all(b"b").await.unwrap();
    assert_eq!(
        a.write_all(b"x").await.unwrap_err().kind(),
        std::io::ErrorKind::BrokenPipe
    );
    drop(b); // the last writer: end of file after "b"
    let mut all = Vec::new();
    r.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"ab");
    // The name starts a new stream for the next writer and readers.
    let mut r2 = hub.reader("log").unwrap();
    let mut c = hub.writer("log").unwrap();
    c.write_all(b"again").await.unwrap();
    c.shutdown().await.unwrap();
    let mut again = Vec::new();
    r2.read_to_end(&mut again).await.unwrap();
    assert_eq!(again, b"again");
}

#[tokio::test]
async fn a_writer_dropped_with_a_held_write_still_delivers_it_when_there_is_room() {
    let hub = Hub::<Bytes>::new();
    let mut w = hub.writer("late").unwrap();
    w.write_all(b"held").await.unwrap(); // nobody connected: held by the writer
    let mut r = hub.reader("late").unwrap();
    drop(w); // delivers it now that a reader is there, then ends the stream
    assert_eq!(r.read_message().await.unwrap().unwrap(), &b"held"[..]);
    assert_eq!(r.read_message().await.unwrap(), None);
}

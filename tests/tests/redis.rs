//! `servicekit::redis` against a real `redis-server` that each test starts on its
//! own port: opening (and its errors), both deliveries, fan-out and work queues,
//! acknowledgements, reclaiming, dead letters, replay, the sticky close,
//! malformed messages among good ones, and the bridges of a bus and of a hub.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use servicekit::redis::{
    Codec, Consumer, OpenError, Options, RecvError, RedisChannel, RemoteCustomer, SendError, Start,
};
use servicekit_tests::RedisServer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    item: String,
}

fn order(id: u64) -> Order {
    Order {
        id,
        item: format!("item-{id}"),
    }
}

const WAIT: Duration = Duration::from_secs(5);

/// The next message's payload, skipping nothing: any error fails the test.
async fn next<T: std::fmt::Debug>(c: &mut RemoteCustomer<T>) -> T {
    match c.recv_timeout(WAIT).await {
        Ok(m) => m.payload,
        Err(e) => panic!("expected a message, got {e:?}"),
    }
}

async fn expect_closed<T: std::fmt::Debug>(c: &mut RemoteCustomer<T>) {
    match c.recv_timeout(WAIT).await {
        Err(RecvError::Closed) => {}
        other => panic!("expected closed, got {other:?}"),
    }
}

/// A plain connection to the test's server, for what a foreign or dead client does.
async fn raw_conn(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Reads new entries of `stream` as `consumer` of `group` and never acknowledges
/// them: a consumer that then dies.
async fn take_as(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
    consumer: &str,
) {
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn open_says_what_is_wrong_and_does_not_hang() {
    let err = RedisChannel::<u8>::open("http://x", "a", Options::ephemeral())
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Url { .. }), "{err}");

    // Nothing listens there: refused at once.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let began = std::time::Instant::now();
    let err = RedisChannel::<u8>::open(
        format!("redis://127.0.0.1:{port}/"),
        "a",
        Options::ephemeral(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OpenError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(began.elapsed() < Duration::from_secs(2));

    // A listener that never answers: the connect timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", silent.local_addr().unwrap());
    let options = Options::ephemeral().connect_timeout(Duration::from_millis(300));
    let began = std::time::Instant::now();
    let err = RedisChannel::<u8>::open(url, "a", options)
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Timeout { .. }), "{err}");
    assert!(began.elapsed() < Duration::from_secs(2));

    // A wrong password.
    let server = RedisServer::start_with(&["--requirepass", "right"]);
    let url = format!("redis://:wrong@127.0.0.1:{}/", server.port());
    let err = RedisChannel::<u8>::open(url, "a", Options::ephemeral())
        .await
        .unwrap_err();
    assert!(matches!(err, OpenError::Auth { .. }), "{err}");
    let url = format!("redis://:right@127.0.0.1:{}/", server.port());
    RedisChannel::<u8>::open(url, "a", Options::ephemeral())
        .await
        .expect("the right password");

    // Names that cannot be a hash tag.
    for bad in ["", "a{b}", "a\nb"] {
        let err = RedisChannel::<u8>::open(server.url(), bad, Options::ephemeral())
            .await
            .unwrap_err();
        assert!(matches!(err, OpenError::Name { .. }), "{err}");
    }
}

#[tokio::test]
async fn ephemeral_fans_out_to_every_customer_and_closes_for_everyone() {
    let server = RedisServer::start();
    let ch = RedisChannel::<Order>::open(server.url(), "orders", Options::ephemeral())
        .await
        .unwrap();
    let mut a = ch.connect().await.unwrap();
    let mut b = ch.connect().await.unwrap();
    ch.send(&order(1)).await.unwrap();
    ch.send_batch(&[order(2), order(3)]).await.unwrap();
    for c in [&mut a, &mut b] {
        for id in 1..=3 {
            assert_eq!(next(c).await, order(id));
        }
    }
    // Another process's handle sees the same channel.
    let other = RedisChannel::<Order>::open(server.url(), "orders", Options::ephemeral())
        .await
        .unwrap();
    other.send(&order(4)).await.unwrap();
    assert!(other.close().await.unwrap());
    assert!(!ch.close().await.unwrap(), "closed once");
    // Each drains what came before the close, then sees it.
    for c in [&mut a, &mut b] {
        assert_eq!(next(c).await, order(4));
        expect_closed(c).await;
        assert!(c.is_closed());
    }
    // Sticky: sends fail, a later customer sees the close too.
    assert!(matches!(ch.send(&order(5)).await, Err(SendError::Closed)));
    assert!(matches!(
        ch.send_batch(&[order(5)]).await,
        Err(SendError::Closed)
    ));
    assert!(ch.is_closed().await.unwrap());
    let mut late = ch.connect().await.unwrap();
    expect_closed(&mut late).await;
    // Deleted, the name starts afresh.
    ch.delete().await.unwrap();
    let mut fresh = ch.connect().await.unwrap();
    ch.send(&order(6)).await.unwrap();
    assert_eq!(next(&mut fresh).await, order(6));
}

#[tokio::test]
async fn an_ephemeral_customer_that_falls_behind_is_told_how_many_it_lost() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "fast", Options::ephemeral().buffer(10))
        .await
        .unwrap();
    let mut slow = ch.connect().await.unwrap();
    let all: Vec<u64> = (0..100).collect();
    ch.send_batch(&all).await.unwrap();
    ch.close().await.unwrap();
    // The close comes after the burst on the subscription: once the customer knows
    // of it, its reader has taken everything in.
    let began = std::time::Instant::now();
    while !slow.is_closed() {
        assert!(began.elapsed() < WAIT, "the close never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut got = Vec::new();
    let mut lost = 0;
    loop {
        match slow.recv_timeout(WAIT).await {
            Ok(m) => got.push(m.payload),
            Err(RecvError::Lagged(n)) => lost += n,
            Err(RecvError::Closed) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(got, (90..100).collect::<Vec<_>>(), "the newest are kept");
    assert_eq!(lost, 90);
}

#[tokio::test]
async fn durable_fan_out_groups_each_get_everything_and_resume_where_they_were() {
    let server = RedisServer::start();
    let ch = RedisChannel::<Order>::open(server.url(), "orders", Options::durable())
        .await
        .unwrap();
    let mut billing = ch.connect_as(Consumer::fan_out("billing")).await.unwrap();
    let mut shipping = ch.connect_as(Consumer::fan_out("shipping")).await.unwrap();
    ch.send_batch(&[order(1), order(2)]).await.unwrap();
    for c in [&mut billing, &mut shipping] {
        for id in 1..=2 {
            let msg = c.recv_timeout(WAIT).await.unwrap();
            assert_eq!(msg.payload, order(id));
            assert_eq!(msg.deliveries, 1);
            c.ack(&msg);
        }
    }
    // Billing goes away; what is sent meanwhile waits for its group.
    drop(billing);
    ch.send(&order(3)).await.unwrap();
    assert_eq!(next(&mut shipping).await, order(3));
    let mut billing = ch.connect_as(Consumer::fan_out("billing")).await.unwrap();
    assert_eq!(next(&mut billing).await, order(3));
}

#[tokio::test]
async fn a_work_queue_gives_each_message_to_one_worker() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "jobs", Options::durable())
        .await
        .unwrap();
    let worker = || ch.connect_as(Consumer::work_queue().auto_ack(true).batch(4));
    let (w1, w2) = (worker().await.unwrap(), worker().await.unwrap());
    let jobs: Vec<u64> = (0..200).collect();
    ch.send_batch(&jobs).await.unwrap();
    ch.close().await.unwrap();
    let take = |mut w: RemoteCustomer<u64>| async move {
        let mut got = Vec::new();
        loop {
            match w.recv_timeout(WAIT).await {
                Ok(m) => got.push(m.payload),
                Err(RecvError::Closed) => return got,
                Err(e) => panic!("{e:?}"),
            }
        }
    };
    let (a, b) = tokio::join!(take(w1), take(w2));
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both worked: {} / {}",
        a.len(),
        b.len()
    );
    let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, jobs, "each job once");
}

#[tokio::test]
async fn a_late_customer_replays_from_the_start_or_from_an_id() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(
        server.url(),
        "history",
        Options::durable().codec(Codec::MessagePack),
    )
    .await
    .unwrap();
    // Nobody connected: a durable send is kept.
    ch.send_batch(&[1, 2, 3]).await.unwrap();
    let mut all = ch
        .connect_as(Consumer::fan_out("all").start(Start::Beginning))
        .await
        .unwrap();
    let first = all.recv_timeout(WAIT).await.unwrap();
    assert_eq!(first.payload, 1);
    assert_eq!(next(&mut all).await, 2);
    assert_eq!(next(&mut all).await, 3);
    let mut after = ch
        .connect_as(Consumer::fan_out("after").start(Start::After(first.id.clone())))
        .await
        .unwrap();
    assert_eq!(next(&mut after).await, 2);
    // A plain `connect` starts at new messages.
    let mut now = ch.connect().await.unwrap();
    ch.send(&4).await.unwrap();
    assert_eq!(next(&mut now).await, 4);
    // Closed: each drains, then sees it; a later replaying customer too.
    ch.close().await.unwrap();
    assert_eq!(next(&mut all).await, 4);
    expect_closed(&mut all).await;
    expect_closed(&mut now).await;
    assert_eq!(next(&mut after).await, 3);
    assert_eq!(next(&mut after).await, 4);
    expect_closed(&mut after).await;
    let mut late = ch
        .connect_as(Consumer::fan_out("late").start(Start::Beginning))
        .await
        .unwrap();
    for n in 1..=4 {
        assert_eq!(next(&mut late).await, n);
    }
    expect_closed(&mut late).await;
}

#[tokio::test]
async fn what_a_dead_consumer_left_pending_is_reclaimed_then_dead_lettered() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "work", Options::durable())
        .await
        .unwrap();
    let consumer = || {
        Consumer::work_queue()
            .reclaim_after(Duration::from_millis(200))
            .max_deliveries(2)
    };
    let mut dies = ch.connect_as(consumer()).await.unwrap();
    ch.send_batch(&[1, 2]).await.unwrap();
    // Takes both, acknowledges neither, and dies.
    assert_eq!(next(&mut dies).await, 1);
    assert_eq!(next(&mut dies).await, 2);
    drop(dies);
    // Another worker reclaims them after 200 ms (second delivery), and fails too.
    let mut second = ch.connect_as(consumer()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = second.recv_timeout(WAIT).await.unwrap();
        assert_eq!(m.deliveries, 2);
        got.push(m.payload);
    }
    got.sort_unstable();
    assert_eq!(got, [1, 2]);
    drop(second);
    // A third would be over the limit: they go to the dead letters instead.
    let mut third = ch.connect_as(consumer()).await.unwrap();
    assert!(matches!(
        third.recv_timeout(Duration::from_secs(1)).await,
        Err(RecvError::Timeout)
    ));
    let mut conn = raw_conn(&server).await;
    let began = std::time::Instant::now();
    let dead = loop {
        let dead = ch.dead_letters(10).await.unwrap();
        if dead.len() == 2 {
            break dead;
        }
        assert!(began.elapsed() < WAIT, "{dead:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut payloads: Vec<u64> = dead.iter().map(|d| *d.payload.as_ref().unwrap()).collect();
    payloads.sort_unstable();
    assert_eq!(payloads, [1, 2]);
    for d in &dead {
        assert_eq!((d.group.as_str(), d.deliveries), ("workers", 2), "{d:?}");
        assert_eq!(d.reason, "not acknowledged after 2 deliveries");
    }
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg("{work}:stream")
        .arg("workers")
        .query_async(&mut conn)
        .await
        .unwrap();
    let redis::Value::Array(summary) = pending else {
        panic!("{pending:?}")
    };
    assert_eq!(summary[0], redis::Value::Int(0), "nothing left pending");
}

/// 1,000 malformed payloads among good ones, from another writer: every good one
/// received in order, every bad one reported and counted, and the customer goes on.
#[tokio::test]
async fn malformed_messages_are_reported_and_counted_and_the_good_ones_all_arrive() {
    let server = RedisServer::start();
    let mut conn = raw_conn(&server).await;
    for delivery in ["ephemeral", "durable"] {
        let options = if delivery == "ephemeral" {
            Options::ephemeral().buffer(4096)
        } else {
            Options::durable()
        };
        let name = format!("mixed-{delivery}");
        let ch = RedisChannel::<Order>::open(server.url(), &name, options)
            .await
            .unwrap();
        let mut c = ch.connect().await.unwrap();
        let bad: [&[u8]; 5] = [
            b"not json at all",
            br#"{"v":2,"k":"data","id":"x","ts":0,"p":{"id":1,"item":"a"}}"#,
            br#"{"v":1,"k":"data","id":"x","ts":0,"p":"not an order"}"#,
            br#"{"v":1,"k":"data","id":"x","ts":0}"#,
            b"\x92\x01\x02",
        ];
        let mut sent_bad = 0;
        for i in 0..1000u64 {
            ch.send(&order(i)).await.unwrap();
            let payload = bad[i as usize % bad.len()];
            let _: () = if delivery == "ephemeral" {
                redis::cmd("PUBLISH")
                    .arg(format!("{{{name}}}:pub"))
                    .arg(payload)
                    .query_async(&mut conn)
                    .await
                    .unwrap()
            } else {
                redis::cmd("XADD")
                    .arg(format!("{{{name}}}:stream"))
                    .arg("*")
                    .arg("e")
                    .arg(payload)
                    .query_async::<String>(&mut conn)
                    .await
                    .map(drop)
                    .unwrap()
            };
            sent_bad += 1;
        }
        ch.close().await.unwrap();
        let mut good = Vec::new();
        let mut reported = 0;
        loop {
            match c.recv_timeout(WAIT).await {
                Ok(m) => {
                    good.push(m.payload.id);
                    c.ack(&m);
                }
                Err(RecvError::Decode(e)) => {
                    reported += 1;
                    assert!(!e.reason.is_empty());
                }
                Err(RecvError::Closed) => break,
                Err(e) => panic!("{delivery}: {e:?}"),
            }
        }
        assert_eq!(good, (0..1000).collect::<Vec<_>>(), "{delivery}");
        assert_eq!(reported, sent_bad, "{delivery}");
        assert_eq!(c.malformed(), sent_bad as u64, "{delivery}");
        if delivery == "durable" {
            // Nothing lost: the bad ones are in the dead letters.
            let dead: usize = redis::cmd("XLEN")
                .arg(format!("{{{name}}}:dead"))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(dead, 1000);
            let letters = ch.dead_letters(5).await.unwrap();
            assert_eq!(letters.len(), 5);
            for d in &letters {
                let reason = &d.payload.as_ref().unwrap_err().reason;
                assert_eq!(&d.reason, reason, "{d:?}");
                assert_eq!(d.deliveries, 1, "{d:?}");
            }
        }
    }
}

#[tokio::test]
async fn a_customer_closed_by_its_owner_stops_and_others_go_on() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "c", Options::ephemeral())
        .await
        .unwrap();
    let mut a = ch.connect().await.unwrap();
    let mut b = ch.connect().await.unwrap();
    a.close();
    assert!(a.is_closed());
    expect_closed(&mut a).await;
    ch.send(&1).await.unwrap();
    assert_eq!(next(&mut b).await, 1);
    assert!(!ch.is_closed().await.unwrap());
}

/// Events of one type on one process's bus reach another process's bus (two
/// runners and two buses here), through an ephemeral Redis channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_one_bus_reach_another_through_redis() {
    use servicekit::Runner;
    use servicekit::bus::EventBus;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct LoggedIn {
        user: String,
    }

    let server = RedisServer::start();
    let remote = RedisChannel::<LoggedIn>::open(server.url(), "logins", Options::ephemeral())
        .await
        .unwrap();
    let (here, there) = (EventBus::new(), EventBus::new());
    let mut heard = there.subscribe::<LoggedIn>();
    let a = Runner::new()
        .signals(false)
        .service(remote.forward_events_from(&here))
        .start()
        .await
        .unwrap();
    let b = Runner::new()
        .signals(false)
        .service(remote.forward_events_to(&there, None))
        .start()
        .await
        .unwrap();
    // The inbound bridge is subscribed once its service is ready.
    while !b.status().iter().all(|s| s.ready) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for user in ["ada", "grace"] {
        here.send(LoggedIn { user: user.into() });
    }
    for user in ["ada", "grace"] {
        let event = tokio::time::timeout(WAIT, heard.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.user, user);
    }
    a.shutdown();
    b.shutdown();
    a.wait().await.unwrap();
    b.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_under_a_hub_prefix_reach_another_hub_through_redis() {
    use servicekit::Runner;
    use servicekit::channel::TrySendError;
    use servicekit::hub::Hub;
    use servicekit::redis::HubMessage;

    let server = RedisServer::start();
    let remote = RedisChannel::<HubMessage<u64>>::open(server.url(), "orders", Options::durable())
        .await
        .unwrap();
    let (here, there) = (Hub::<u64>::new(), Hub::<u64>::new());
    let eu = here.channel("orders/eu").unwrap(); // made before the bridge
    let mut eu_there = there.connect("orders/eu").unwrap();
    let mut us_there = there.connect("orders/us").unwrap();
    let mut other_there = there.connect("other").unwrap();
    let a = Runner::new()
        .signals(false)
        .service(remote.forward_hub_from(&here, "orders/"))
        .start()
        .await
        .unwrap();
    let b = Runner::new()
        .signals(false)
        .service(remote.forward_hub_to(&there, Some(Consumer::fan_out("there"))))
        .start()
        .await
        .unwrap();
    while !b.status().iter().all(|s| s.ready) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Made after the bridge started: connected to as they are made, so a send on
    // them does not wait for customers.
    let us = here.channel("orders/us").unwrap();
    let asia = here.channel("orders/asia").unwrap(); // nobody reads it there
    let sends = async {
        for i in 0..50 {
            eu.send(i).await.unwrap();
            asia.send(1000 + i).await.unwrap();
            us.send(100 + i).await.unwrap();
        }
    };
    tokio::time::timeout(WAIT, sends).await.unwrap();
    // Not under the prefix: no bridge customer.
    let other = here.channel("other").unwrap();
    assert!(matches!(
        other.try_send(7),
        Err(TrySendError::NoCustomers(7))
    ));
    // Another program's messages for a queue and for a name the hub refuses are
    // skipped, and the bridge goes on.
    there.queue("orders/jobs").unwrap();
    remote
        .send(&HubMessage::new("orders/jobs", 5))
        .await
        .unwrap();
    remote.send(&HubMessage::new("", 6)).await.unwrap();
    eu.send(50).await.unwrap();
    for i in 0..=50 {
        assert_eq!(
            tokio::time::timeout(WAIT, eu_there.recv()).await.unwrap(),
            Ok(i)
        );
    }
    for i in 100..150 {
        assert_eq!(
            tokio::time::timeout(WAIT, us_there.recv()).await.unwrap(),
            Ok(i)
        );
    }
    assert!(other_there.try_recv().is_err());
    assert!(
        !there.list("").contains(&"orders/asia".to_string()),
        "no name made for messages nobody reads"
    );
    assert!(
        there
            .queue("orders/jobs")
            .unwrap()
            .receiver()
            .try_recv()
            .is_err()
    );
    // The outbound bridge ends with its hub.
    here.close();
    tokio::time::timeout(WAIT, a.wait()).await.unwrap().unwrap();
    b.shutdown();
    b.wait().await.unwrap();
}

/// A burst sent on the local channel and the channel closed at once: the bridge
/// sends all of it, then ends (the close may be seen while it gathers a batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_bridge_sends_a_burst_then_ends_with_its_channel() {
    use servicekit::{Channel, Runner};

    let server = RedisServer::start();
    let remote = RedisChannel::<u64>::open(server.url(), "burst", Options::durable())
        .await
        .unwrap();
    let mut mirror = remote
        .connect_as(Consumer::fan_out("mirror"))
        .await
        .unwrap();
    for round in 0..5u64 {
        let local = Channel::<u64>::bounded(1000);
        let bridge = Runner::new()
            .signals(false)
            .service(remote.forward_from(&local))
            .start()
            .await
            .unwrap();
        for i in 0..100 {
            local.send(round * 100 + i).await.unwrap();
        }
        local.close();
        tokio::time::timeout(WAIT, bridge.wait())
            .await
            .expect("the bridge ends with its channel")
            .unwrap();
        for i in 0..100 {
            assert_eq!(next(&mut mirror).await, round * 100 + i);
        }
    }
}

#[tokio::test]
async fn a_durable_channel_is_trimmed_to_about_its_max_len() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "log", Options::durable().max_len(1000))
        .await
        .unwrap();
    let all: Vec<u64> = (0..10_000).collect();
    ch.send_batch(&all).await.unwrap();
    let mut conn = raw_conn(&server).await;
    let len: usize = redis::cmd("XLEN")
        .arg("{log}:stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    // `MAXLEN ~` trims whole nodes: about the bound, never far below it.
    assert!((1000..1200).contains(&len), "{len} entries kept");
    // What is kept is the newest.
    let mut replay = ch
        .connect_as(Consumer::fan_out("replay").start(Start::Beginning))
        .await
        .unwrap();
    let first = next(&mut replay).await;
    assert_eq!(first, 10_000 - len as u64);
}

/// A fan-out customer that comes back under the same name first gets what its
/// predecessor held, once each (not the whole pending list at every read), then
/// new messages.
#[tokio::test]
async fn a_returning_fan_out_customer_gets_what_was_held_once() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "held", Options::durable())
        .await
        .unwrap();
    let mut first = ch.connect_as(Consumer::fan_out("reports")).await.unwrap();
    ch.send_batch(&(0..10).collect::<Vec<_>>()).await.unwrap();
    for n in 0..10 {
        assert_eq!(next(&mut first).await, n); // never acknowledged
    }
    drop(first);
    let mut again = ch.connect_as(Consumer::fan_out("reports")).await.unwrap();
    ch.send_batch(&(10..15).collect::<Vec<_>>()).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 15 {
        let m = again.recv_timeout(WAIT).await.unwrap();
        // The first ten were delivered before (and so may a later one be, to the
        // first customer's read still waiting at the server).
        assert!(m.payload >= 10 || m.deliveries > 1, "{m:?}");
        got.push(m.payload);
        again.ack(&m);
    }
    assert_eq!(got, (0..15).collect::<Vec<_>>(), "each once, in order");
    // And nothing a second time.
    assert!(matches!(
        again.recv_timeout(Duration::from_millis(1500)).await,
        Err(RecvError::Timeout)
    ));
}

/// Entries a worker holds in its buffer past `reclaim_after` are not taken back
/// from it (its own name's entries are reclaimed only when its customer lacks
/// them).
#[tokio::test]
async fn a_worker_is_not_reclaimed_from_itself() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "slow", Options::durable())
        .await
        .unwrap();
    let mut worker = ch
        .connect_as(
            Consumer::work_queue()
                .reclaim_after(Duration::from_millis(100))
                .prefetch(100),
        )
        .await
        .unwrap();
    ch.send_batch(&(0..50).collect::<Vec<_>>()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for n in 0..50 {
        let m = worker.recv_timeout(WAIT).await.unwrap();
        assert_eq!((m.payload, m.deliveries), (n, 1));
        worker.ack(&m);
    }
    assert!(matches!(
        worker.recv_timeout(Duration::from_millis(500)).await,
        Err(RecvError::Timeout)
    ));
}

/// A closed work queue: a live worker sees `Closed` only after the entries a dead
/// consumer held were reclaimed and handed over.
#[tokio::test]
async fn a_closed_work_queue_ends_only_after_a_dead_workers_entries() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "closing", Options::durable())
        .await
        .unwrap();
    let mut live = ch
        .connect_as(Consumer::work_queue().reclaim_after(Duration::from_millis(300)))
        .await
        .unwrap();
    // Taken by the live worker's reader or by a consumer that reads them by hand
    // and dies (no hand-back, nothing acknowledged).
    let mut conn = raw_conn(&server).await;
    ch.send_batch(&[1, 2, 3]).await.unwrap();
    take_as(&mut conn, "{closing}:stream", "workers", "dead").await;
    ch.close().await.unwrap();
    let mut got = Vec::new();
    loop {
        match live.recv_timeout(WAIT).await {
            Ok(m) => {
                got.push(m.payload);
                live.ack(&m);
            }
            Err(RecvError::Closed) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3], "what the dead consumer held, before closed");
}

/// A message that keeps failing a fixed-name consumer (the process dies at it
/// each time) goes to the dead letters after `max_deliveries`, also when it is
/// only ever delivered to that name again.
#[tokio::test]
async fn a_poison_message_for_a_fixed_name_is_dead_lettered() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "poison", Options::durable())
        .await
        .unwrap();
    let consumer = || {
        Consumer::work_queue()
            .name("w1")
            .max_deliveries(2)
            .start(Start::Beginning)
    };
    ch.send(&7).await.unwrap();
    for attempt in 1..=2 {
        let mut w = ch.connect_as(consumer()).await.unwrap();
        let m = w
            .recv_timeout(WAIT)
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {e:?}"));
        assert_eq!((m.payload, m.deliveries), (7, attempt));
        drop(w); // dies without acknowledging
    }
    let mut w = ch.connect_as(consumer()).await.unwrap();
    // The hand-back of the last one comes within a second of its drop; then the
    // third reader sends it to the dead letters instead of its customer.
    assert!(matches!(
        w.recv_timeout(Duration::from_millis(2500)).await,
        Err(RecvError::Timeout)
    ));
    let dead = ch.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].payload, Ok(7));
}

/// What a closed worker had taken but not received goes back to the group at
/// once: another worker gets it without waiting out `reclaim_after`.
#[tokio::test]
async fn a_closed_workers_untaken_messages_go_back_at_once() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "handback", Options::durable())
        .await
        .unwrap();
    let worker = || Consumer::work_queue().reclaim_after(Duration::from_secs(30));
    let mut a = ch.connect_as(worker()).await.unwrap();
    ch.send_batch(&(0..10).collect::<Vec<_>>()).await.unwrap();
    let first = a.recv_timeout(WAIT).await.unwrap();
    a.ack(&first);
    tokio::time::sleep(Duration::from_millis(200)).await; // the rest in its buffer
    a.close();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut b = ch.connect_as(worker()).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 9 {
        let m = b.recv_timeout(Duration::from_secs(3)).await.unwrap();
        got.push(m.payload);
        b.ack(&m);
    }
    got.sort_unstable();
    assert_eq!(got, (1..10).collect::<Vec<_>>());
}

async fn pending_count(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
) -> i64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
        .unwrap();
    match summary {
        redis::Value::Array(parts) => match parts[0] {
            redis::Value::Int(n) => n,
            _ => panic!("{parts:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// A worker whose own unacknowledged entries are the oldest still reclaims a dead
/// consumer's newer ones (its own do not fill the page it looks at).
#[tokio::test]
async fn a_workers_own_old_entries_do_not_hide_a_dead_consumers() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "hidden", Options::durable())
        .await
        .unwrap();
    let mut a = ch
        .connect_as(
            Consumer::work_queue()
                .reclaim_after(Duration::from_millis(200))
                .prefetch(2),
        )
        .await
        .unwrap();
    ch.send_batch(&(0..20).collect::<Vec<_>>()).await.unwrap();
    for n in 0..20 {
        assert_eq!(next(&mut a).await, n); // held, never acknowledged
    }
    ch.send_batch(&[100, 101, 102]).await.unwrap();
    // Taken by the live worker's reader or by a consumer that then dies: either
    // way the worker ends up with them.
    let mut conn = raw_conn(&server).await;
    take_as(&mut conn, "{hidden}:stream", "workers", "dead").await;
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(next(&mut a).await);
    }
    got.sort_unstable();
    assert_eq!(got, [100, 101, 102]);
}

/// After its connection is lost and made again, a reader does not deliver again
/// what its customer already holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnected_reader_does_not_deliver_held_messages_again() {
    let mut server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "held2", Options::durable())
        .await
        .unwrap();
    let mut c = ch.connect_as(Consumer::fan_out("f")).await.unwrap();
    ch.send_batch(&[1, 2, 3]).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(c.recv_timeout(WAIT).await.unwrap());
    }
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    // Reconnected, and nothing delivered twice.
    let mut reconnected = false;
    loop {
        match c.recv_timeout(Duration::from_secs(3)).await {
            Err(RecvError::Reconnected { may_have_missed }) => {
                assert!(!may_have_missed);
                reconnected = true;
            }
            Err(RecvError::Redis(_)) => {}
            Err(RecvError::Timeout) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(reconnected);
    for m in &held {
        c.ack(m);
    }
    ch.send(&4).await.unwrap();
    assert_eq!(next(&mut c).await, 4);
}

/// What a slow worker held and another reclaimed is not pulled back when the slow
/// one goes: the other gets each once.
#[tokio::test]
async fn a_departing_worker_does_not_take_back_what_another_reclaimed() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "steal", Options::durable())
        .await
        .unwrap();
    let worker = || {
        Consumer::work_queue()
            .reclaim_after(Duration::from_millis(200))
            .prefetch(5)
    };
    let mut slow = ch.connect_as(worker()).await.unwrap();
    ch.send_batch(&(0..5).collect::<Vec<_>>()).await.unwrap();
    for n in 0..5 {
        assert_eq!(next(&mut slow).await, n); // in hand, too long
    }
    let mut fast = ch.connect_as(worker()).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let m = fast.recv_timeout(WAIT).await.unwrap();
        assert_eq!(m.deliveries, 2);
        got.push(m.payload);
        fast.ack(&m);
    }
    drop(slow); // hands back what it held, if it still owned any
    assert!(matches!(
        fast.recv_timeout(Duration::from_millis(1500)).await,
        Err(RecvError::Timeout)
    ));
    got.sort_unstable();
    assert_eq!(got, (0..5).collect::<Vec<_>>());
}

/// `ack` still works after `close`, until the customer is dropped.
#[tokio::test]
async fn acknowledgements_after_close_are_sent() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "late-ack", Options::durable())
        .await
        .unwrap();
    let mut c = ch.connect_as(Consumer::fan_out("f")).await.unwrap();
    ch.send_batch(&[1, 2]).await.unwrap();
    let first = c.recv_timeout(WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.close();
    c.ack(&first);
    let mut conn = raw_conn(&server).await;
    // The second was never taken: handed back, still pending; the first is done.
    let began = std::time::Instant::now();
    while pending_count(&mut conn, "{late-ack}:stream", "f").await != 1 {
        assert!(began.elapsed() < WAIT, "the acknowledgement was not sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(c);
}

/// Messages waiting in a live worker's buffer longer than `reclaim_after` are not
/// taken by another worker (the reader keeps them fresh).
#[tokio::test]
async fn a_live_workers_buffered_messages_are_not_reclaimed_by_another() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "fresh", Options::durable())
        .await
        .unwrap();
    let worker = || {
        Consumer::work_queue()
            .reclaim_after(Duration::from_secs(1))
            .prefetch(5)
    };
    let mut a = ch.connect_as(worker()).await.unwrap();
    ch.send_batch(&(0..5).collect::<Vec<_>>()).await.unwrap();
    // All five delivered to a (pending), into its buffer.
    let mut conn = raw_conn(&server).await;
    let began = std::time::Instant::now();
    while pending_count(&mut conn, "{fresh}:stream", "workers").await != 5 {
        assert!(began.elapsed() < WAIT, "a never took the five");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Three times `reclaim_after`: b takes none of them.
    let mut b = ch.connect_as(worker()).await.unwrap();
    assert!(matches!(
        b.recv_timeout(Duration::from_secs(3)).await,
        Err(RecvError::Timeout)
    ));
    for n in 0..5 {
        let m = a.recv_timeout(WAIT).await.unwrap();
        assert_eq!((m.payload, m.deliveries), (n, 1));
        a.ack(&m);
    }
}

/// Customers made from one `Consumer` value (clones of it, as a service that
/// connects again at each run makes) have consumer names of their own: a second
/// one does not take what the first holds, and gets it at once when the first goes.
#[tokio::test]
async fn customers_of_one_consumer_value_do_not_share_a_name() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "one-value", Options::durable())
        .await
        .unwrap();
    let worker = Consumer::work_queue().reclaim_after(Duration::from_secs(30));
    let mut a = ch.connect_as(worker.clone()).await.unwrap();
    ch.send(&1).await.unwrap();
    let held = a.recv_timeout(WAIT).await.unwrap();
    assert_eq!((held.payload, held.deliveries), (1, 1));
    let mut b = ch.connect_as(worker.clone()).await.unwrap();
    assert!(
        matches!(
            b.recv_timeout(Duration::from_millis(1500)).await,
            Err(RecvError::Timeout)
        ),
        "b took what a holds"
    );
    drop(a); // without acknowledging
    let again = b.recv_timeout(WAIT).await.unwrap();
    assert_eq!((again.payload, again.deliveries), (1, 2));
    b.ack(&again);
    let mut conn = raw_conn(&server).await;
    let began = std::time::Instant::now();
    while pending_count(&mut conn, "{one-value}:stream", "workers").await != 0 {
        assert!(began.elapsed() < WAIT, "the acknowledgement was not sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An entry left pending under a customer's own (fixed) name that the customer
/// does not have, as a customer it replaced can leave when its last read was
/// still under way, is taken up after `reclaim_after`, and the close waits for it.
#[tokio::test]
async fn an_entry_left_under_a_customers_own_name_is_taken_up() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "own-name", Options::durable())
        .await
        .unwrap();
    let stream = "{own-name}:stream";
    let mut conn = raw_conn(&server).await;
    // 1 is in the stream before the group, which starts after it: nobody reads it.
    ch.send(&1).await.unwrap();
    let worker = Consumer::work_queue()
        .name("w")
        .reclaim_after(Duration::from_secs(1));
    let mut w = ch.connect_as(worker).await.unwrap();
    // w, past its start, reads 2.
    ch.send(&2).await.unwrap();
    let two = w.recv_timeout(WAIT).await.unwrap();
    assert_eq!(two.payload, 2);
    w.ack(&two);
    // Then 1 is put under w's name, delivered twice, fresh: w does not have it.
    let first: redis::Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let redis::Value::Array(entries) = first else {
        panic!("{first:?}")
    };
    let redis::Value::Array(entry) = &entries[0] else {
        panic!("{entries:?}")
    };
    let redis::Value::BulkString(id) = &entry[0] else {
        panic!("{entry:?}")
    };
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(stream)
        .arg("workers")
        .arg("w")
        .arg(0)
        .arg(id)
        .arg("RETRYCOUNT")
        .arg(2)
        .arg("FORCE")
        .query_async(&mut conn)
        .await
        .unwrap();
    ch.close().await.unwrap();
    let m = w.recv_timeout(WAIT).await.unwrap();
    assert_eq!((m.payload, m.deliveries), (1, 3));
    w.ack(&m);
    expect_closed(&mut w).await;
}

/// The consumer names of a group, as `XINFO CONSUMERS` lists them.
async fn consumer_names(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Vec<String> {
    let reply: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await
        .unwrap();
    let redis::Value::Array(consumers) = reply else {
        panic!("{reply:?}")
    };
    consumers
        .iter()
        .map(|c| match c {
            redis::Value::Array(fields) => match &fields[1] {
                redis::Value::BulkString(name) => String::from_utf8_lossy(name).into_owned(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect()
}

/// The names that customers that went or died leave in a group are forgotten once
/// they hold nothing and have been idle past `reclaim_after` (and three blocking
/// reads): never one that still holds an entry, whose entry is taken up first;
/// and a live customer whose name was forgotten goes on receiving.
#[tokio::test]
async fn the_names_of_consumers_that_went_are_forgotten() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "forget", Options::durable())
        .await
        .unwrap();
    let stream = "{forget}:stream";
    let mut conn = raw_conn(&server).await;
    // One that died holding 1, one that went holding nothing.
    for args in [
        &["CREATE", stream, "workers", "$", "MKSTREAM"][..],
        &["CREATECONSUMER", stream, "workers", "went"][..],
    ] {
        let _: redis::Value = redis::cmd("XGROUP")
            .arg(args)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    ch.send(&1).await.unwrap();
    take_as(&mut conn, stream, "workers", "died").await;
    // Both idle past the 3 s: the first round of a new customer forgets `went`,
    // not `died`, which still holds 1, then takes 1 up.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut live = ch
        .connect_as(Consumer::work_queue().reclaim_after(Duration::from_millis(300)))
        .await
        .unwrap();
    let taken = live.recv_timeout(WAIT).await.unwrap();
    assert_eq!((taken.payload, taken.deliveries), (1, 2));
    live.ack(&taken);
    // Then `died`, holding nothing, goes at the next forgetting.
    let began = std::time::Instant::now();
    let names = loop {
        let names = consumer_names(&mut conn, stream, "workers").await;
        if !names.iter().any(|n| n == "went" || n == "died") {
            break names;
        }
        assert!(began.elapsed() < Duration::from_secs(15), "{names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(names.len(), 1, "only the live one: {names:?}");
    // A live customer whose name was forgotten (as Redis 7.0 lets a quiet one be)
    // goes on receiving, under its name again.
    let _: redis::Value = redis::cmd("XGROUP")
        .arg("DELCONSUMER")
        .arg(stream)
        .arg("workers")
        .arg(&names[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    ch.send(&2).await.unwrap();
    let second = live.recv_timeout(WAIT).await.unwrap();
    assert_eq!((second.payload, second.deliveries), (2, 1));
    assert_eq!(consumer_names(&mut conn, stream, "workers").await, names);
    live.ack(&second);
    let began = std::time::Instant::now();
    while pending_count(&mut conn, stream, "workers").await != 0 {
        assert!(began.elapsed() < WAIT, "the acknowledgement was not sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

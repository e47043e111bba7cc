//! Faults on a real `redis-server`: the server killed with SIGKILL mid-stream and
//! restarted on the same port after 1 s and after 20 s, and a consumer process
//! killed mid-batch. Durable: every id whose send was confirmed is received at
//! least once (duplicates are counted and printed). Ephemeral: the customer resumes
//! by itself and reports the gap.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use servicekit::redis::{Consumer, Options, RecvError, RedisChannel, RemoteCustomer, Start};
use servicekit_tests::RedisServer;

/// Sends 0, 1, 2, … every millisecond or so until `stop`; a send that fails is
/// retried until it is confirmed. Returns the confirmed ids; `progress` is the
/// number confirmed so far.
async fn produce(
    ch: RedisChannel<u64>,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
) -> BTreeSet<u64> {
    let mut confirmed = BTreeSet::new();
    let mut id = 0;
    while !stop.load(Ordering::SeqCst) {
        match ch.send(&id).await {
            Ok(()) => {
                confirmed.insert(id);
                id += 1;
                progress.store(id, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    confirmed
}

/// Everything a customer receives until the channel's close: ids in order of
/// arrival, and the errors it reported; `progress` is one more than the last id
/// received so far.
async fn consume(mut c: RemoteCustomer<u64>, progress: Arc<AtomicU64>) -> (Vec<u64>, Vec<String>) {
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    loop {
        match c.recv_timeout(Duration::from_secs(60)).await {
            Ok(m) => {
                ids.push(m.payload);
                progress.fetch_max(m.payload + 1, Ordering::SeqCst);
                c.ack(&m);
            }
            Err(RecvError::Closed) => return (ids, errors),
            Err(RecvError::Timeout) => {
                panic!("nothing for 60 s; so far {} ids, {errors:?}", ids.len())
            }
            Err(e) => errors.push(format!("{e:?}")),
        }
    }
}

async fn survives_a_killed_server(down_for: Duration) {
    let mut server = RedisServer::start();
    let open = |name: &'static str, options: Options| {
        let url = server.url();
        async move { RedisChannel::<u64>::open(url, name, options).await.unwrap() }
    };
    let durable = open("durable", Options::durable()).await;
    let ephemeral = open("ephemeral", Options::ephemeral().buffer(100_000)).await;
    let progress = || Arc::new(AtomicU64::new(0));
    let (durable_sent, durable_got) = (progress(), progress());
    let (ephemeral_sent, ephemeral_got) = (progress(), progress());
    let durable_rx = tokio::spawn(consume(
        durable
            .connect_as(Consumer::fan_out("audit"))
            .await
            .unwrap(),
        durable_got.clone(),
    ));
    let ephemeral_rx = tokio::spawn(consume(
        ephemeral.connect().await.unwrap(),
        ephemeral_got.clone(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let durable_tx = tokio::spawn(produce(durable.clone(), stop.clone(), durable_sent.clone()));
    let ephemeral_tx = tokio::spawn(produce(
        ephemeral.clone(),
        stop.clone(),
        ephemeral_sent.clone(),
    ));

    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    tokio::time::sleep(down_for).await;
    server.restart();
    // Both sides find the server again by themselves: the producers go on until
    // each customer has received what was sent 3 s after the restart.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let began = Instant::now();
    for (sent, got) in [
        (&durable_sent, &durable_got),
        (&ephemeral_sent, &ephemeral_got),
    ] {
        let target = sent.load(Ordering::SeqCst);
        while got.load(Ordering::SeqCst) < target {
            assert!(
                began.elapsed() < Duration::from_secs(30),
                "a customer never resumed: {} of {target}",
                got.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let sent_durable = durable_tx.await.unwrap();
    let sent_ephemeral = ephemeral_tx.await.unwrap();
    // Closing needs the server too: retried until it answers.
    let began = Instant::now();
    for ch in [&durable, &ephemeral] {
        while ch.close().await.is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "close never went through"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let (got, errors) = durable_rx.await.unwrap();
    let received: BTreeSet<u64> = got.iter().copied().collect();
    let lost: Vec<u64> = sent_durable.difference(&received).copied().collect();
    let duplicates = got.len() - received.len();
    println!(
        "durable, down {down_for:?}: {} confirmed, {} received, {duplicates} duplicates, {} lost; reported {errors:?}",
        sent_durable.len(),
        got.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost {lost:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Reconnected { may_have_missed: false }")),
        "{errors:?}"
    );

    let (got, errors) = ephemeral_rx.await.unwrap();
    println!(
        "ephemeral, down {down_for:?}: {} sent, {} received; reported {errors:?}",
        sent_ephemeral.len(),
        got.len()
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Reconnected { may_have_missed: true }")),
        "the gap is reported: {errors:?}"
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicate"
    );
    let last = *sent_ephemeral.last().unwrap();
    assert!(
        got.last() == Some(&last),
        "resumed: the last sent ({last}) was received ({:?})",
        got.last()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_back_after_one_second() {
    survives_a_killed_server(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_back_after_twenty_seconds() {
    survives_a_killed_server(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_consumer_process_held_is_reclaimed_by_another() {
    let server = RedisServer::start();
    let ch = RedisChannel::<u64>::open(server.url(), "jobs", Options::durable())
        .await
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis_worker"))
        .env("REDIS_URL", server.url())
        .env("CHANNEL", "jobs")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "connected");
    let jobs: Vec<u64> = (0..100).collect();
    ch.send_batch(&jobs).await.unwrap();
    // Mid-batch: it has taken some, acknowledged none.
    let mut taken = BTreeSet::new();
    while taken.len() < 10 {
        let line = lines.next().unwrap().unwrap();
        taken.insert(line.trim_start_matches("took ").parse::<u64>().unwrap());
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Another worker gets every job: the killed one's after 300 ms idle.
    let mut worker = ch
        .connect_as(Consumer::work_queue().reclaim_after(Duration::from_millis(300)))
        .await
        .unwrap();
    let mut got = BTreeSet::new();
    let mut redelivered = BTreeSet::new();
    while got.len() < jobs.len() {
        let m = worker.recv_timeout(Duration::from_secs(5)).await.unwrap();
        if m.deliveries > 1 {
            redelivered.insert(m.payload);
        }
        got.insert(m.payload);
        worker.ack(&m);
    }
    assert_eq!(got, jobs.iter().copied().collect());
    assert!(
        taken.is_subset(&redelivered),
        "{taken:?} not in {redelivered:?}"
    );
}

/// Two runners (as two processes would) bridged through Redis: a local channel
/// sent out by `forward_from`, brought in by `forward_to_as`. The server is killed
/// mid-stream and back after a second: the outbound bridge fails, is restarted by
/// its runner with backoff, and sends what it held first; every message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_restart_with_backoff_and_lose_nothing_when_redis_goes_away() {
    use servicekit::Channel;

    let mut server = RedisServer::start();
    let remote = RedisChannel::<u64>::open(server.url(), "bridged", Options::durable())
        .await
        .unwrap();
    let outgoing = Channel::<u64>::bounded(1000);
    let incoming = Channel::<u64>::bounded(1000);
    let received = incoming.connect();
    let out = remote.forward_from(&outgoing);
    let into = remote.forward_to_as(&incoming, Consumer::fan_out("mirror"));
    through_a_restart(&mut server, "bridged", &outgoing, received, out, into).await;
}

/// The same through the bridges of a hub prefix, on a channel made after the
/// outbound bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_bridges_lose_nothing_when_redis_goes_away() {
    use servicekit::hub::{Hub, HubConfig};
    use servicekit::redis::HubMessage;

    let mut server = RedisServer::start();
    let remote = RedisChannel::<HubMessage<u64>>::open(server.url(), "hubs", Options::durable())
        .await
        .unwrap();
    let config = HubConfig {
        buffer_size: 1000,
        ..HubConfig::default()
    };
    let here = Hub::<u64>::with_config(config.clone()).unwrap();
    let there = Hub::<u64>::with_config(config).unwrap();
    let received = there.connect("jobs/a").unwrap();
    let out = remote.forward_hub_from(&here, "jobs/");
    let into = remote.forward_hub_to(&there, Some(Consumer::fan_out("mirror")));
    let outgoing = here.channel("jobs/a").unwrap();
    through_a_restart(&mut server, "hubs", &outgoing, received, out, into).await;
}

/// Runs the bridges `out` (from `outgoing`) and `into` (to `received`) in two
/// runners, sends 3000 messages while the server is killed and back after a
/// second, and checks that every one arrived and that the outbound bridge was
/// restarted.
async fn through_a_restart(
    server: &mut RedisServer,
    name: &str,
    outgoing: &servicekit::Channel<u64>,
    mut received: servicekit::Customer<u64>,
    out: servicekit::Service,
    into: servicekit::Service,
) {
    use servicekit::Runner;

    let sender = Runner::new()
        .signals(false)
        .service(out.backoff(Duration::from_millis(100), Duration::from_millis(500)))
        .start()
        .await
        .unwrap();
    let receiver = Runner::new()
        .signals(false)
        .service(into)
        .start()
        .await
        .unwrap();
    // The bridges are connected (the inbound one's group made) once they are ready.
    let began = std::time::Instant::now();
    while !(sender.status().iter().all(|s| s.ready) && receiver.status().iter().all(|s| s.ready)) {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the bridges never got ready"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let produce = async {
        for i in 0..3000u64 {
            outgoing.send(i).await.unwrap();
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    };
    let fault = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        server.restart();
    };
    let mut got = BTreeSet::new();
    let mut duplicates = 0;
    let consume = async {
        while got.len() < 3000 {
            let Ok(i) = tokio::time::timeout(Duration::from_secs(30), received.recv()).await else {
                panic!(
                    "{} of 3000 within 30 s; sender {:?}; receiver {:?}",
                    got.len(),
                    sender.status(),
                    receiver.status()
                );
            };
            let i = i.unwrap();
            if !got.insert(i) {
                duplicates += 1;
            }
        }
    };
    tokio::join!(produce, fault, consume);
    let out = sender
        .status()
        .into_iter()
        .find(|s| *s.name == format!("redis:{name}:out"))
        .unwrap();
    println!(
        "{name}: 3000 received, {duplicates} duplicates, outbound restarts {}",
        out.restarts
    );
    assert!(
        out.restarts > 0,
        "the outbound bridge failed while Redis was away"
    );
    assert_eq!(got, (0..3000).collect());
    sender.shutdown();
    receiver.shutdown();
    sender.wait().await.unwrap();
    receiver.wait().await.unwrap();
}

/// Randomized: workers of a durable work queue and fan-out customers that die at
/// random (dropped with a message in hand, unacknowledged) and are replaced, while
/// batches of random size are sent, then the channel is closed. Each case checks
/// against the simple model of at-least-once: every message reached some worker
/// and every fan-out group before they all saw `Closed`, none was left pending, and
/// nobody hung. (The seed picks the shape; the interleaving is the runtime's, so a
/// failing seed may need a few runs to fail again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_deaths_lose_nothing_and_everyone_sees_the_close() {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    let server = RedisServer::start();
    for case in 0..30u64 {
        let seed = 0x5eed + case;
        let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
        let name: &'static str = Box::leak(format!("random-{case}").into_boxed_str());
        let ch = RedisChannel::<u64>::open(server.url(), name, Options::durable())
            .await
            .unwrap();
        let (workers, groups) = {
            let mut r = rng.lock().unwrap();
            (r.usize(1..=3), r.usize(1..=2))
        };
        // Who received what: "workers" (the queue) and one entry per group.
        let seen: Arc<Mutex<BTreeMap<String, BTreeSet<u64>>>> = Arc::default();
        let mut tasks = Vec::new();
        let roles: Vec<(String, Consumer)> = (0..workers)
            .map(|_| {
                let prefetch = rng.lock().unwrap().usize(1..=5);
                (
                    "workers".to_owned(),
                    Consumer::work_queue()
                        .reclaim_after(Duration::from_millis(200))
                        .prefetch(prefetch),
                )
            })
            .chain((0..groups).map(|g| {
                (
                    format!("group-{g}"),
                    Consumer::fan_out(format!("group-{g}"))
                        .start(Start::Beginning)
                        .reclaim_after(Duration::from_millis(200)),
                )
            }))
            .collect();
        // Every role's group exists before the first send.
        for (role, consumer) in roles {
            let ch = ch.clone();
            let rng = rng.clone();
            let seen = seen.clone();
            let first = ch.connect_as(consumer.clone()).await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut customer = first;
                let mut deaths = 0;
                loop {
                    match customer.recv_timeout(Duration::from_secs(20)).await {
                        Ok(m) => {
                            let die = rng.lock().unwrap().u8(..) < 20;
                            if die {
                                // Dies with it in hand: it must come again.
                                deaths += 1;
                                drop(customer);
                                customer = ch.connect_as(consumer.clone()).await.unwrap();
                                continue;
                            }
                            seen.lock()
                                .unwrap()
                                .entry(role.clone())
                                .or_default()
                                .insert(m.payload);
                            customer.ack(&m);
                        }
                        Err(RecvError::Closed) => return deaths,
                        Err(RecvError::Timeout) => panic!("seed {seed}: {role} hung"),
                        Err(e) => panic!("seed {seed}: {role}: {e:?}"),
                    }
                }
            }));
        }
        let mut sent = 0u64;
        let batches = rng.lock().unwrap().usize(5..15);
        for _ in 0..batches {
            let size = rng.lock().unwrap().u64(1..40);
            let batch: Vec<u64> = (sent..sent + size).collect();
            ch.send_batch(&batch).await.unwrap();
            sent += size;
            let pause = rng.lock().unwrap().u64(0..30);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        ch.close().await.unwrap();
        let mut deaths = 0;
        for t in tasks {
            deaths += tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: a customer never saw the close"))
                .unwrap();
        }
        let seen = seen.lock().unwrap().clone();
        let all: BTreeSet<u64> = (0..sent).collect();
        for (role, got) in seen.iter() {
            assert_eq!(got, &all, "seed {seed}: {role} missed some");
        }
        assert_eq!(seen.len(), 1 + groups, "seed {seed}: {:?}", seen.keys());
        let mut conn = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        for group in seen.keys() {
            let summary: redis::Value = redis::cmd("XPENDING")
                .arg(format!("{{{name}}}:stream"))
                .arg(group)
                .query_async(&mut conn)
                .await
                .unwrap();
            let redis::Value::Array(parts) = summary else {
                panic!("{summary:?}")
            };
            assert_eq!(
                parts[0],
                redis::Value::Int(0),
                "seed {seed}: {group} left entries pending"
            );
        }
        println!(
            "seed {seed}: {sent} messages, {workers} workers, {groups} groups, {deaths} deaths: none lost"
        );
    }
}

//! Faults on a real `redis-server`: the server killed with SIGKILL mid-stream and
//! restarted on the same port after 1 s and after 20 s, and a consumer process
//! killed mid-batch. Durable: every id whose send was confirmed is received at
//! least once (duplicates are counted and printed). Ephemeral: the customer resumes
//! by itself and reports the gap.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use servicekit::redis::{Consumer, Options, RecvError, RedisChannel, RemoteCustomer};
use servicekit_tests::RedisServer;

/// Sends 0, 1, 2, … every millisecond or so until `stop`; a send that fails is
/// retried until it is confirmed. Returns the confirmed ids.
async fn produce(ch: RedisChannel<u64>, stop: Arc<AtomicBool>) -> BTreeSet<u64> {
    let mut confirmed = BTreeSet::new();
    let mut id = 0;
    while !stop.load(Ordering::SeqCst) {
        match ch.send(&id).await {
            Ok(()) => {
                confirmed.insert(id);
                id += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    confirmed
}

/// Everything a customer receives until the channel's close: ids in order of
/// arrival, and the errors it reported.
async fn consume(mut c: RemoteCustomer<u64>) -> (Vec<u64>, Vec<String>) {
    let mut ids = Vec::new();
    let mut errors = Vec::new();
    loop {
        match c.recv_timeout(Duration::from_secs(60)).await {
            Ok(m) => {
                ids.push(m.payload);
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
    let durable_rx = tokio::spawn(consume(
        durable
            .connect_as(Consumer::fan_out("audit"))
            .await
            .unwrap(),
    ));
    let ephemeral_rx = tokio::spawn(consume(ephemeral.connect().await.unwrap()));
    let stop = Arc::new(AtomicBool::new(false));
    let durable_tx = tokio::spawn(produce(durable.clone(), stop.clone()));
    let ephemeral_tx = tokio::spawn(produce(ephemeral.clone(), stop.clone()));

    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    tokio::time::sleep(down_for).await;
    server.restart();
    // Both sides find the server again by themselves.
    tokio::time::sleep(Duration::from_secs(3)).await;
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
    use servicekit::{Channel, Runner};

    let mut server = RedisServer::start();
    let remote = RedisChannel::<u64>::open(server.url(), "bridged", Options::durable())
        .await
        .unwrap();
    let outgoing = Channel::<u64>::bounded(1000);
    let incoming = Channel::<u64>::bounded(1000);
    let mut received = incoming.connect();
    let sender = Runner::new()
        .signals(false)
        .service(
            remote
                .forward_from(&outgoing)
                .backoff(Duration::from_millis(100), Duration::from_millis(500)),
        )
        .start()
        .await
        .unwrap();
    let receiver = Runner::new()
        .signals(false)
        .service(remote.forward_to_as(&incoming, Consumer::fan_out("mirror")))
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

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
        .find(|s| &*s.name == "redis:bridged:out")
        .unwrap();
    println!(
        "bridge: 3000 received, {duplicates} duplicates, outbound restarts {}",
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

//! Broadcast channels in detail: backpressure (the sender waits for the slowest
//! bounded customer), the two overflow policies that never block the sender
//! (`DropOldest` reports how many were lost, `Disconnect` cuts the customer off), and
//! close/drain. Ends by itself.
//!
//! Run it with `cargo run -p servicekit-examples --example 06_channels`.

use std::time::{Duration, Instant};

use servicekit::{Channel, channel::Overflow, channel::RecvError};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // --- Backpressure: a slow customer with a buffer of 2 paces the sender.
    let ch = Channel::bounded(2);
    let mut slow = ch.connect();
    let reader = tokio::spawn(async move {
        while let Ok(n) = slow.recv().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
            println!("backpressure: slow customer handled {n}");
        }
    });
    let started = Instant::now();
    for n in 1..=5 {
        ch.send(n).await.expect("open");
        println!(
            "backpressure: sent {n} at {:>4} ms",
            started.elapsed().as_millis()
        );
    }
    ch.close();
    reader.await.expect("reader");

    // --- Overflow policies: the sender never waits for these customers.
    let ch = Channel::unbounded();
    let mut lossy = ch
        .customer()
        .capacity(3)
        .overflow(Overflow::DropOldest)
        .connect();
    let mut strict = ch
        .customer()
        .capacity(3)
        .overflow(Overflow::Disconnect)
        .connect();
    for n in 1..=8 {
        ch.send(n).await.expect("open");
    }
    loop {
        match lossy.try_recv() {
            Ok(n) => println!("drop-oldest: got {n}"),
            Err(servicekit::channel::TryRecvError::Recv(RecvError::Lagged(k))) => {
                println!("drop-oldest: told that {k} messages were dropped")
            }
            Err(_) => break,
        }
    }
    loop {
        match strict.recv().await {
            Ok(n) => println!("disconnect: got {n}"),
            Err(e) => {
                println!("disconnect: {e}");
                break;
            }
        }
    }

    // --- Close and drain: buffered messages are still delivered after close.
    let ch = Channel::bounded(10);
    let mut customer = ch.connect();
    for n in 1..=3 {
        ch.send(n).await.expect("open");
    }
    ch.close();
    println!(
        "close: send after close -> {}",
        ch.send(99).await.unwrap_err()
    );
    while let Ok(n) = customer.recv().await {
        println!("close: drained {n}");
    }
    println!("close: then {}", customer.recv().await.unwrap_err());
}

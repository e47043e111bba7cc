//! Test helper: a work-queue consumer of the durable channel `$CHANNEL` on
//! `$REDIS_URL` that takes messages and never acknowledges them, printing each id;
//! the fault test kills it with SIGKILL mid-batch and checks another consumer
//! reclaims what it held.

use std::time::Duration;

use servicekit::redis::{Consumer, Options, RedisChannel};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::var("REDIS_URL").expect("REDIS_URL");
    let name = std::env::var("CHANNEL").expect("CHANNEL");
    let ch = RedisChannel::<u64>::open(url, &name, Options::durable())
        .await
        .expect("open");
    let consumer = Consumer::work_queue().reclaim_after(Duration::from_millis(300));
    let mut worker = ch.connect_as(consumer).await.expect("connect");
    println!("connected");
    loop {
        match worker.recv().await {
            Ok(m) => println!("took {}", m.payload),
            Err(e) if e.is_closed() => return,
            Err(e) => eprintln!("{e}"),
        }
    }
}

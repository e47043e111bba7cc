//! Test helper: a customer of channel `$CHANNEL` on `$REDIS_URL` (`$DELIVERY`
//! `durable`, a fan-out group, or `ephemeral`) that prints `connected`, then
//! `got N` for each message (acknowledging it), `error …` for each error, and
//! `closed` at the end. The partition test runs it in a network namespace of its
//! own and cuts its link.

use servicekit::redis::{Consumer, Options, RecvError, RedisChannel};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::var("REDIS_URL").expect("REDIS_URL");
    let name = std::env::var("CHANNEL").expect("CHANNEL");
    let durable = std::env::var("DELIVERY").expect("DELIVERY") == "durable";
    let options = if durable {
        Options::durable()
    } else {
        Options::ephemeral().buffer(100_000)
    };
    let ch = RedisChannel::<u64>::open(url, &name, options)
        .await
        .expect("open");
    let mut customer = if durable {
        ch.connect_as(Consumer::fan_out("partitioned")).await
    } else {
        ch.connect().await
    }
    .expect("connect");
    println!("connected");
    loop {
        match customer.recv().await {
            Ok(m) => {
                println!("got {}", m.payload);
                customer.ack(&m);
            }
            Err(RecvError::Closed) => break,
            Err(e) => println!("error {e:?}"),
        }
    }
    println!("closed");
}

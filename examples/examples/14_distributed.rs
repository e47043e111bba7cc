//! Services on several machines, through Redis: a producer process and three
//! consumer processes. Two `worker`s share the durable channel `orders` as a work
//! queue (each order handled by one of them, acknowledged once handled) and one
//! `audit` reads it as a fan-out group (every order). `notices` is ephemeral: every
//! process hears the producer's notices while it is connected, and no more.
//!
//! ```sh
//! examples/redis/run-14.sh      # starts a local redis-server if none answers, then this
//! REDIS_URL=redis://host:6379/ cargo run -p servicekit-examples --example 14_distributed
//! ```
//!
//! Without arguments the program is the producer: it starts the three consumers
//! as processes of its own binary (`worker`, `worker`, `audit`), waits until each
//! says on the durable channel `ready` that its customers are connected, sends 20
//! orders and a notice, closes `orders` (a sticky close every consumer sees, after
//! what was sent before it) and `notices`, and waits for them. Each consumer is a
//! servicekit program whose customers run as services: it ends when both channels
//! are closed, and Ctrl+C stops it cleanly.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use servicekit::redis::{Consumer, Options, RecvError, RedisChannel, RemoteCustomer};
use servicekit::{Runner, Service, ServiceContext};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u32,
    item: String,
}

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

#[servicekit::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let role = std::env::args().nth(1).unwrap_or_default();
    let orders = RedisChannel::<Order>::open(url(), "orders", Options::durable())
        .await
        .map_err(|e| format!("{e} (start one with examples/redis/run-14.sh)"))?;
    match role.as_str() {
        "" => produce(orders).await,
        "worker" | "audit" => consume(orders, role).await,
        other => Err(format!("unknown role `{other}`: worker, audit, or none").into()),
    }
}

/// The producer: starts the consumers, sends, closes, waits.
async fn produce(
    orders: RedisChannel<Order>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // A fresh demo: forget what an earlier run left (its close included).
    orders.delete().await?;
    let notices = RedisChannel::<String>::open(url(), "notices", Options::ephemeral()).await?;
    notices.delete().await?;
    // Each consumer says when its customers are connected: its group exists and it
    // hears the notices, so it misses nothing sent from then on (a group made later
    // starts at new messages; a notice reaches only who listens).
    let ready = RedisChannel::<String>::open(url(), "ready", Options::durable()).await?;
    ready.delete().await?;
    let mut consumers_ready = ready
        .connect_as(Consumer::fan_out("producer").auto_ack(true))
        .await?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for role in ["worker", "worker", "audit"] {
        children.push(
            Command::new(&exe)
                .arg(role)
                .env("REDIS_URL", url())
                .stdout(Stdio::inherit())
                .spawn()?,
        );
    }
    let sent = async {
        wait_for_consumers(&mut consumers_ready, children.len()).await?;
        notices.send(&"orders are coming".to_owned()).await?;
        let batch: Vec<Order> = (1..=20)
            .map(|id| Order {
                id,
                item: format!("item-{id}"),
            })
            .collect();
        orders.send_batch(&batch).await?;
        println!("producer: sent 20 orders");
        orders.close().await?;
        notices.close().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
    .await;
    if let Err(e) = sent {
        // The consumers would wait for a close that is not coming.
        for child in &mut children {
            let _ = child.kill();
        }
        return Err(e);
    }
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("a consumer ended with {status}").into());
        }
    }
    println!("producer: every consumer is done");
    Ok(())
}

/// Waits (30 s at most) until `count` consumers have said they are connected.
async fn wait_for_consumers(
    ready: &mut RemoteCustomer<String>,
    count: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut heard = HashSet::new();
    while heard.len() < count {
        match tokio::time::timeout_at(deadline, ready.recv()).await {
            Err(_) => {
                let n = heard.len();
                return Err(format!("{n} of {count} consumers connected within 30 s").into());
            }
            Ok(Ok(who)) => {
                heard.insert(who.payload);
            }
            Ok(Err(RecvError::Closed)) => return Err("`ready` was closed".into()),
            // Reported; the customer goes on (a reconnection, a foreign message).
            Ok(Err(e)) => eprintln!("producer: {e}"),
        }
    }
    Ok(())
}

/// A consumer process: its customers run as services.
async fn consume(
    orders: RedisChannel<Order>,
    role: String,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let me = format!("{role} {}", std::process::id());
    let notices = RedisChannel::<String>::open(url(), "notices", Options::ephemeral()).await?;
    let ready = RedisChannel::<String>::open(url(), "ready", Options::durable()).await?;
    let consumer = if role == "worker" {
        // One order ahead at most: the two workers share them out.
        Consumer::work_queue().auto_ack(true).prefetch(1)
    } else {
        Consumer::fan_out("audit")
    };
    let name = me.clone();
    let handle_orders = Service::new("orders", move |ctx: ServiceContext| {
        let orders = orders.clone();
        let consumer = consumer.clone();
        let me = name.clone();
        async move {
            let mut customer = orders.connect_as(consumer).await?;
            ctx.ready();
            let mut handled = Vec::new();
            loop {
                match ctx.until_shutdown(customer.recv()).await {
                    None => return Ok(()),
                    Some(Ok(order)) => {
                        // ... handle the order; with auto_ack it is acknowledged
                        // when the next one is asked for ...
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        handled.push(order.payload.id);
                        if me.starts_with("audit") {
                            customer.ack(&order);
                        }
                    }
                    Some(Err(RecvError::Closed)) => break,
                    Some(Err(e)) => eprintln!("{me}: {e}"),
                }
            }
            println!("{me}: handled {} orders: {handled:?}", handled.len());
            Ok::<_, RecvError>(())
        }
    });
    let name = me.clone();
    let hear_notices = Service::new("notices", move |ctx: ServiceContext| {
        let notices = notices.clone();
        let me = name.clone();
        async move {
            let mut customer = notices.connect().await?;
            ctx.ready();
            while let Some(Ok(notice)) = ctx.until_shutdown(customer.recv()).await {
                println!("{me}: notice: {}", notice.payload);
            }
            Ok::<_, RecvError>(())
        }
    });
    // Once both customers are connected (their services ready), tell the producer.
    let name = me.clone();
    let announce = Service::new("announce", move |ctx: ServiceContext| {
        let (ready, me) = (ready.clone(), name.clone());
        async move { ctx.until_shutdown(ready.send(&me)).await.unwrap_or(Ok(())) }
    })
    .after(["orders", "notices"]);
    Runner::new()
        .service(handle_orders)
        .service(hear_notices)
        .service(announce)
        .start()
        .await?
        .wait()
        .await?;
    Ok(())
}

//! The ephemeral reader: one pub/sub subscription for the customer's whole life.
//!
//! It subscribes, then checks the closed flag (in that order, so a close between
//! the two is seen one way or the other), and forwards what arrives. A ping every
//! second finds a connection that went silent; then it reconnects with a jittered
//! backoff (50 ms doubling to 2 s) until it succeeds or the customer goes, and tells
//! the customer it may have missed messages.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::customer::{Buffer, Item, Message, RemoteCustomer};
use super::envelope::Kind;
use super::{DecodeError, RecvError, Shared};

/// How often a quiet subscription is checked with a ping, and how long the answer
/// may take.
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Most messages handed over at once.
const BURST: usize = 256;

pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The next delay of a reconnect loop: doubled, capped, with jitter (half to all of
/// it).
pub(crate) fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(BACKOFF_MAX)
}

pub(crate) fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Subscribes, and reports whether the channel is closed already.
async fn subscribe(shared: &Shared) -> Result<(redis::aio::PubSub, bool), redis::RedisError> {
    let attempt = async {
        let mut pubsub = shared.client.get_async_pubsub().await?;
        pubsub.subscribe(&shared.keys.publish).await?;
        let mut conn = shared.conn.clone();
        let closed: bool = redis::cmd("EXISTS")
            .arg(&shared.keys.closed)
            .query_async(&mut conn)
            .await?;
        Ok((pubsub, closed))
    };
    match tokio::time::timeout(shared.options.connect_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer from Redis within the connect timeout",
        ))),
    }
}

pub(crate) async fn connect<T: DeserializeOwned + Send + 'static>(
    shared: Arc<Shared>,
) -> Result<RemoteCustomer<T>, RecvError> {
    let (pubsub, closed) = subscribe(&shared).await.map_err(RecvError::Redis)?;
    let buffer = Buffer::new(shared.options.buffer, false);
    let gone = CancellationToken::new();
    let stop = gone.child_token();
    if closed {
        // Closed before this customer came: it says so at its first `recv`.
        buffer.end();
    } else {
        tokio::spawn(read(shared, pubsub, buffer.clone(), stop.clone()));
    }
    Ok(RemoteCustomer::new(buffer, gone, stop, false))
}

async fn read<T: DeserializeOwned>(
    shared: Arc<Shared>,
    mut pubsub: redis::aio::PubSub,
    buffer: Arc<Buffer<T>>,
    stop: CancellationToken,
) {
    loop {
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        // Until the connection is lost (or the channel closed, or the customer gone).
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                msg = stream.next() => match msg {
                    Some(msg) => {
                        // What else has arrived goes over with it: one lock, one
                        // wake-up per burst rather than per message.
                        let mut burst = vec![msg];
                        while burst.len() < BURST {
                            match stream.next().now_or_never() {
                                Some(Some(msg)) => burst.push(msg),
                                _ => break,
                            }
                        }
                        if forward(&shared, &burst, &buffer) {
                            return;
                        }
                    }
                    None => break,
                },
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        drop((sink, stream));
        tracing::warn!(channel = %shared.keys.name, "redis: subscription lost, reconnecting");
        let mut delay = BACKOFF_MIN;
        pubsub = loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(jittered(delay)) => {}
            }
            match subscribe(&shared).await {
                Ok((_, true)) => {
                    buffer.end();
                    return;
                }
                Ok((pubsub, false)) => break pubsub,
                Err(e) => {
                    tracing::debug!(channel = %shared.keys.name, error = %e, "redis: reconnect failed");
                    delay = next_backoff(delay);
                }
            }
        };
        tracing::info!(channel = %shared.keys.name, "redis: subscription made again");
        buffer.push_lossy(Item::Err(RecvError::Reconnected {
            may_have_missed: true,
        }));
    }
}

/// Hands published payloads to the customer; returns whether one was the close
/// (what follows it is not delivered).
fn forward<T: DeserializeOwned>(shared: &Shared, burst: &[redis::Msg], buffer: &Buffer<T>) -> bool {
    let mut items = Vec::with_capacity(burst.len());
    let mut closed = false;
    for msg in burst {
        match shared.options.codec.decode::<T>(msg.get_payload_bytes()) {
            Ok(envelope) if envelope.k == Kind::Close => {
                closed = true;
                break;
            }
            Ok(envelope) => {
                let sent_at = envelope.sent_at();
                items.push(Item::Msg(Message {
                    id: envelope.id,
                    sent_at,
                    payload: envelope.p.expect("checked by decode"),
                    deliveries: 1,
                }));
            }
            Err(reason) => {
                items.push(Item::Err(RecvError::Decode(DecodeError {
                    id: None,
                    reason,
                })));
            }
        }
    }
    buffer.push_lossy_all(items);
    if closed {
        buffer.end();
    }
    closed
}

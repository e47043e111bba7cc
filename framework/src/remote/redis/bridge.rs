//! Bridges between a local [`Channel`] and a [`RedisChannel`], as supervised
//! services: when Redis goes away the bridge's run fails and the runner restarts it
//! with backoff, and nothing taken from one side is dropped on the way.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Consumer, RecvError, RedisChannel, SendError};
use crate::channel::{Channel, Customer};
use crate::lifecycle::Service;

/// Most local messages sent to Redis in one batch.
const BATCH: usize = 64;

/// A bridge fails when Redis is away, which may last: it is restarted with a
/// backoff up to 5 s, and never gives up (override with the service's own
/// `backoff` and `max_restarts`).
fn patient(service: Service) -> Service {
    service
        .backoff(Duration::from_millis(100), Duration::from_secs(5))
        .max_restarts(u32::MAX, Duration::from_secs(60))
}

impl<T> RedisChannel<T>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A service that sends every message of the local `channel` to this Redis
    /// channel, in batches of what is waiting. Its customer of `channel` is made
    /// now and kept across the service's runs, and a batch Redis refused is sent
    /// again first by the next run (after the runner's backoff): nothing sent on
    /// `channel` meanwhile is lost (durable: delivered at least once). It ends
    /// when `channel` closes, and when the Redis channel is closed (saying how many
    /// messages it could not send). While Redis is away its runs fail and are
    /// restarted with a backoff up to 5 s, without a limit (the service's
    /// `backoff` and `max_restarts` change that).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use servicekit::redis::{Options, RedisChannel};
    /// use servicekit::{Channel, Runner};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let local = Channel::<String>::bounded(100);
    /// let remote = RedisChannel::open("redis://127.0.0.1/", "events", Options::durable()).await?;
    /// Runner::new()
    ///     .service(remote.forward_from(&local))
    ///     .start()
    ///     .await?;
    /// local.send("hello".to_string()).await?; // reaches every process on `events`
    /// # Ok(()) }
    /// ```
    pub fn forward_from(&self, channel: &Channel<T>) -> Service {
        let remote = self.clone();
        let state = Arc::new(tokio::sync::Mutex::new(Outbound {
            customer: channel.connect(),
            unsent: Vec::new(),
        }));
        patient(Service::new(
            format!("redis:{}:out", self.name()),
            move |ctx| {
                let remote = remote.clone();
                let state = state.clone();
                async move {
                    let mut state = state.lock().await;
                    ctx.ready();
                    loop {
                        if state.unsent.is_empty() {
                            match ctx.until_shutdown(state.customer.recv()).await {
                                None => return Ok(()),
                                Some(Ok(msg)) => state.unsent.push(msg),
                                Some(Err(crate::channel::RecvError::Lagged(n))) => {
                                    tracing::warn!(channel = %remote.name(), missed = n, "redis bridge: the local customer lagged");
                                    continue;
                                }
                                Some(Err(_)) => return Ok(()),
                            }
                            while state.unsent.len() < BATCH {
                                match state.customer.try_recv() {
                                    Ok(msg) => state.unsent.push(msg),
                                    Err(_) => break,
                                }
                            }
                        }
                        match remote.send_batch(&state.unsent).await {
                            Ok(()) => state.unsent.clear(),
                            // Kept for the next run, after the backoff.
                            Err(e @ SendError::Redis(_)) => return Err(e),
                            Err(SendError::Closed) => {
                                tracing::warn!(channel = %remote.name(), dropped = state.unsent.len(), "redis bridge: the Redis channel is closed; the bridge ends");
                                state.unsent.clear();
                                return Ok(());
                            }
                            Err(e) => {
                                state.unsent.clear();
                                return Err(e);
                            }
                        }
                    }
                }
            },
        ))
    }

    /// A service that sends every message of this Redis channel to the local
    /// `channel` (waiting for room there), through a customer made at each run (a
    /// run fails, to be restarted, only when it cannot connect; the customer
    /// reconnects by itself): ephemeral, or for a durable channel a group of its
    /// own, so what is sent while the bridge restarts is not received; use
    /// [`forward_to_as`](Self::forward_to_as) with a named fan-out group for that.
    /// When the Redis channel closes, it closes `channel` and ends.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use servicekit::redis::{Options, RedisChannel};
    /// use servicekit::{Channel, Runner};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let local = Channel::<String>::bounded(100);
    /// let remote = RedisChannel::open("redis://127.0.0.1/", "events", Options::ephemeral()).await?;
    /// let mut customer = local.connect();
    /// Runner::new().service(remote.forward_to(&local)).start().await?;
    /// # Ok(()) }
    /// ```
    pub fn forward_to(&self, channel: &Channel<T>) -> Service {
        self.inbound(channel, None)
    }

    /// As [`forward_to`](Self::forward_to), through a durable customer with these
    /// settings (a named fan-out group keeps its place while the bridge restarts:
    /// at least once). Each message is acknowledged once the local channel took it.
    /// On an ephemeral channel the service fails, saying so.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use servicekit::redis::{Consumer, Options, RedisChannel};
    /// use servicekit::{Channel, Runner};
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let local = Channel::<String>::bounded(100);
    /// let remote = RedisChannel::open("redis://127.0.0.1/", "orders", Options::durable()).await?;
    /// Runner::new()
    ///     .service(remote.forward_to_as(&local, Consumer::fan_out("billing")))
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn forward_to_as(&self, channel: &Channel<T>, consumer: Consumer) -> Service {
        self.inbound(channel, Some(consumer))
    }

    fn inbound(&self, channel: &Channel<T>, consumer: Option<Consumer>) -> Service {
        let remote = self.clone();
        let local = channel.clone();
        patient(Service::new(
            format!("redis:{}:in", self.name()),
            move |ctx| {
                let remote = remote.clone();
                let local = local.clone();
                let consumer = consumer.clone();
                async move {
                    let connected = match consumer {
                        Some(c) => remote.connect_as(c).await,
                        None => remote.connect().await,
                    };
                    let mut customer = match connected {
                        Ok(customer) => customer,
                        Err(e) => return Err(e),
                    };
                    ctx.ready();
                    loop {
                        let Some(received) = ctx.until_shutdown(customer.recv()).await else {
                            return Ok(());
                        };
                        match received {
                            Ok(msg) => {
                                let Some(sent) =
                                    ctx.until_shutdown(local.send(msg.payload.clone())).await
                                else {
                                    return Ok(());
                                };
                                if sent.is_err() {
                                    // The local channel closed: nothing more to do.
                                    return Ok(());
                                }
                                customer.ack(&msg);
                            }
                            Err(RecvError::Closed) => {
                                local.close();
                                return Ok(());
                            }
                            // The customer reconnects by itself; lagged, malformed: go on.
                            Err(e) => {
                                tracing::warn!(channel = %remote.name(), error = %e, "redis bridge");
                            }
                        }
                    }
                }
            },
        ))
    }
}

struct Outbound<T> {
    customer: Customer<T>,
    /// Taken from the local channel, not yet confirmed by Redis.
    unsent: Vec<T>,
}

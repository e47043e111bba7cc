//! Bridges between a local [`Channel`] or a type of events on an [`EventBus`] and a
//! [`RedisChannel`], as supervised services: when Redis goes away the bridge's run
//! fails and the runner restarts it with backoff, and nothing taken from one side
//! is dropped on the way.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Consumer, RecvError, RedisChannel, SendError};
use crate::bus::{EventBus, Subscription};
use crate::channel::{Channel, Customer};
use crate::lifecycle::{Service, ServiceContext};

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
        self.outbound(Source::Channel(channel.connect()))
    }

    /// As [`forward_from`](Self::forward_from), for the events of type `T`
    /// published on `bus` (its subscription is made now and kept across runs).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use servicekit::bus::EventBus;
    /// use servicekit::redis::{Options, RedisChannel};
    /// use servicekit::Runner;
    ///
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// struct UserLoggedIn {
    ///     user: String,
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = EventBus::new();
    /// let remote =
    ///     RedisChannel::<UserLoggedIn>::open("redis://127.0.0.1/", "logins", Options::ephemeral()).await?;
    /// Runner::new().service(remote.forward_events_from(&bus)).start().await?;
    /// bus.send(UserLoggedIn { user: "ada".into() }); // to every process on `logins`
    /// # Ok(()) }
    /// ```
    pub fn forward_events_from(&self, bus: &EventBus) -> Service {
        self.outbound(Source::Bus(bus.subscribe::<T>()))
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
        self.inbound(Target::Channel(channel.clone()), None)
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
        self.inbound(Target::Channel(channel.clone()), Some(consumer))
    }

    /// A service that publishes every message of this Redis channel on `bus` as an
    /// event of type `T`, through a customer made at each run: as
    /// [`forward_to`](Self::forward_to) with `None`, as
    /// [`forward_to_as`](Self::forward_to_as) with a consumer. An event nobody
    /// subscribes to is dropped, as the bus does.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use servicekit::bus::EventBus;
    /// use servicekit::redis::{Options, RedisChannel};
    /// use servicekit::Runner;
    ///
    /// #[derive(Clone, serde::Serialize, serde::Deserialize)]
    /// struct UserLoggedIn {
    ///     user: String,
    /// }
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = EventBus::new();
    /// let mut logins = bus.subscribe::<UserLoggedIn>();
    /// let remote =
    ///     RedisChannel::<UserLoggedIn>::open("redis://127.0.0.1/", "logins", Options::ephemeral()).await?;
    /// Runner::new().service(remote.forward_events_to(&bus, None)).start().await?;
    /// let login = logins.recv().await?; // published by another process
    /// # Ok(()) }
    /// ```
    pub fn forward_events_to(&self, bus: &EventBus, consumer: Option<Consumer>) -> Service {
        self.inbound(Target::Bus(bus.clone()), consumer)
    }

    fn outbound(&self, source: Source<T>) -> Service {
        let remote = self.clone();
        let state = Arc::new(tokio::sync::Mutex::new(Outbound {
            source: Some(source),
            unsent: Vec::new(),
        }));
        let name = format!("redis:{}:out", self.name());
        patient(Service::new(name, move |ctx| {
            run_outbound(ctx, remote.clone(), state.clone())
        }))
    }

    fn inbound(&self, target: Target<T>, consumer: Option<Consumer>) -> Service {
        let remote = self.clone();
        let name = format!("redis:{}:in", self.name());
        patient(Service::new(name, move |ctx| {
            run_inbound(ctx, remote.clone(), target.clone(), consumer.clone())
        }))
    }
}

/// One run of an outbound bridge.
async fn run_outbound<T>(
    ctx: ServiceContext,
    remote: RedisChannel<T>,
    state: Arc<tokio::sync::Mutex<Outbound<T>>>,
) -> Result<(), SendError>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    let mut state = state.lock().await;
    let state = &mut *state;
    ctx.ready();
    loop {
        // Gone once the bridge has ended for good: a local customer nobody reads
        // would hold the channel's senders back.
        let Some(source) = &mut state.source else {
            return Ok(());
        };
        if state.unsent.is_empty() {
            match ctx.until_shutdown(source.next()).await {
                None => return Ok(()),
                Some(Next::End) => {
                    state.source = None;
                    return Ok(());
                }
                Some(Next::Msg(msg)) => state.unsent.push(msg),
                Some(Next::Lagged(n)) => {
                    tracing::warn!(channel = %remote.name(), missed = n, "redis bridge: the local side lagged");
                    continue;
                }
            }
            while state.unsent.len() < BATCH {
                match source.try_next() {
                    Some(msg) => state.unsent.push(msg),
                    None => break,
                }
            }
        }
        let sent = match remote.send_batch(&state.unsent).await {
            // One message that does not encode: the others go one by one.
            Err(SendError::Encode(_)) => send_each(&remote, &mut state.unsent).await,
            other => other,
        };
        match sent {
            Ok(()) => state.unsent.clear(),
            // Kept for the next run, after the backoff.
            Err(e @ SendError::Redis(_)) => return Err(e),
            Err(SendError::Closed) => {
                tracing::warn!(channel = %remote.name(), dropped = state.unsent.len(), "redis bridge: the Redis channel is closed; the bridge ends");
                state.unsent.clear();
                state.source = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sends `unsent` one by one, dropping (and logging) those that do not encode;
/// on another error, what is left stays in `unsent`.
async fn send_each<T>(remote: &RedisChannel<T>, unsent: &mut Vec<T>) -> Result<(), SendError>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    while let Some(msg) = unsent.first() {
        match remote.send(msg).await {
            Ok(()) => {}
            Err(SendError::Encode(e)) => {
                tracing::error!(channel = %remote.name(), error = %e, "redis bridge: a message that does not encode is dropped");
            }
            Err(e) => return Err(e),
        }
        unsent.remove(0);
    }
    Ok(())
}

/// One run of an inbound bridge.
async fn run_inbound<T>(
    ctx: ServiceContext,
    remote: RedisChannel<T>,
    target: Target<T>,
    consumer: Option<Consumer>,
) -> Result<(), RecvError>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    let mut customer = match consumer {
        Some(c) => remote.connect_as(c).await?,
        None => remote.connect().await?,
    };
    ctx.ready();
    loop {
        let Some(received) = ctx.until_shutdown(customer.recv()).await else {
            return Ok(());
        };
        match received {
            Ok(msg) => {
                match &target {
                    Target::Channel(local) => {
                        match ctx.until_shutdown(local.send(msg.payload.clone())).await {
                            None => return Ok(()),
                            // The local channel closed: nothing more to do.
                            Some(Err(_)) => return Ok(()),
                            Some(Ok(())) => {}
                        }
                    }
                    Target::Bus(bus) => bus.send(msg.payload.clone()),
                }
                customer.ack(&msg);
            }
            Err(RecvError::Closed) => {
                if let Target::Channel(local) = &target {
                    local.close();
                }
                return Ok(());
            }
            // The customer reconnects by itself; lagged, malformed: go on.
            Err(e) => tracing::warn!(channel = %remote.name(), error = %e, "redis bridge"),
        }
    }
}

struct Outbound<T> {
    source: Option<Source<T>>,
    /// Taken from the local side, not yet confirmed by Redis.
    unsent: Vec<T>,
}

/// Where an outbound bridge takes its messages.
enum Source<T> {
    Channel(Customer<T>),
    Bus(Subscription<T>),
}

enum Next<T> {
    Msg(T),
    Lagged(u64),
    End,
}

impl<T: Clone + Send + Sync + 'static> Source<T> {
    async fn next(&mut self) -> Next<T> {
        match self {
            Source::Channel(c) => match c.recv().await {
                Ok(msg) => Next::Msg(msg),
                Err(crate::channel::RecvError::Lagged(n)) => Next::Lagged(n),
                Err(_) => Next::End,
            },
            Source::Bus(s) => match s.recv().await {
                Ok(event) => Next::Msg((*event).clone()),
                Err(crate::bus::RecvError::Lagged(n)) => Next::Lagged(n),
                Err(_) => Next::End,
            },
        }
    }

    fn try_next(&mut self) -> Option<T> {
        match self {
            Source::Channel(c) => c.try_recv().ok(),
            Source::Bus(s) => s.try_recv().ok().map(|event| (*event).clone()),
        }
    }
}

/// Where an inbound bridge puts its messages.
enum Target<T> {
    Channel(Channel<T>),
    Bus(EventBus),
}

impl<T> Clone for Target<T> {
    fn clone(&self) -> Self {
        match self {
            Target::Channel(c) => Target::Channel(c.clone()),
            Target::Bus(b) => Target::Bus(b.clone()),
        }
    }
}

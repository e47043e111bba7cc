//! Bridges between a local [`Channel`], a type of events on an [`EventBus`] or the
//! channels under a prefix of a [`Hub`], and a [`RedisChannel`], as supervised
//! services: when Redis goes away the bridge's run fails and the runner restarts
//! it with backoff. An outbound bridge drops nothing it took from the local side;
//! an inbound one drops only what the local side would (a bus event nobody
//! subscribes to, a hub channel nobody reads).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Consumer, RecvError, RedisChannel, SendError};
use crate::bus::EventBus;
use crate::channel::{Channel, Customer};
use crate::hub::{Hub, HubError, SentTo};
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
        self.outbound(customer_messages(channel.connect(), |msg| msg).boxed())
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
        let subscription = bus.subscribe::<T>();
        self.outbound(
            futures::stream::unfold(subscription, |mut s| async move {
                let next = match s.recv().await {
                    Ok(event) => Next::Msg((*event).clone()),
                    Err(crate::bus::RecvError::Lagged(n)) => Next::Lagged(n),
                    Err(_) => return None,
                };
                Some((next, s))
            })
            .boxed(),
        )
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
        self.inbound(Arc::new(channel.clone()), None)
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
        self.inbound(Arc::new(channel.clone()), Some(consumer))
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
        self.inbound(Arc::new(bus.clone()), consumer)
    }

    fn outbound(&self, source: BoxStream<'static, Next<T>>) -> Service {
        let remote = self.clone();
        let state = Arc::new(tokio::sync::Mutex::new(Outbound {
            // Fused: the end may be seen while a batch is gathered, then again.
            source: Some(source.fuse().boxed()),
            unsent: Vec::new(),
        }));
        let name = format!("redis:{}:out", self.name());
        patient(Service::new(name, move |ctx| {
            run_outbound(ctx, remote.clone(), state.clone())
        }))
    }

    fn inbound(&self, target: Arc<dyn Target<T>>, consumer: Option<Consumer>) -> Service {
        let remote = self.clone();
        let name = format!("redis:{}:in", self.name());
        patient(Service::new(name, move |ctx| {
            run_inbound(ctx, remote.clone(), target.clone(), consumer.clone())
        }))
    }
}

/// A message of a hub's channel on its way through Redis: the channel's name and
/// the message. What [`RedisChannel::forward_hub_from`] sends and
/// [`RedisChannel::forward_hub_to`] delivers (in JSON: `{"name":"orders/eu","msg":…}`),
/// and what another program writes to reach a hub's channel.
///
/// # Examples
///
/// ```
/// use servicekit::redis::HubMessage;
/// let m = HubMessage::new("orders/eu", 42u32);
/// assert_eq!((m.name.as_str(), m.msg), ("orders/eu", 42));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HubMessage<T> {
    /// The name of the hub's channel.
    pub name: String,
    /// The message.
    pub msg: T,
}

impl<T> HubMessage<T> {
    /// The message `msg` of the channel `name`.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = servicekit::redis::HubMessage::new("alerts", "disk full");
    /// assert_eq!(m.name, "alerts");
    /// ```
    pub fn new(name: impl Into<String>, msg: T) -> Self {
        HubMessage {
            name: name.into(),
            msg,
        }
    }
}

impl<T> RedisChannel<HubMessage<T>>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    /// A service that sends every message of every channel of `hub` whose name
    /// starts with `prefix` (`""`: all) to this Redis channel, with the channel's
    /// name, as [`forward_from`](Self::forward_from) does for one channel. The
    /// channels are connected to now, and each channel made under the prefix later
    /// is connected to as it is made, before anyone can send on it. The customers
    /// are kept across the service's runs, with each name's buffer (a persistent
    /// channel's customer starts with its kept messages) and overflow policy: under
    /// `block`, the default, nothing sent on them is missed (senders wait while
    /// Redis is away); under `drop_oldest` the bridge drops the oldest and logs how
    /// many; under `disconnect` it does the same rather than stop mirroring the
    /// name. Queues are not included. It ends when the hub closes, and when the
    /// Redis channel is closed.
    ///
    /// Bridging the same names both ways in one process sends each message round
    /// and round: give the two directions different prefixes, or hubs.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use servicekit::hub::Hub;
    /// use servicekit::redis::{HubMessage, Options, RedisChannel};
    /// use servicekit::Runner;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let hub = Hub::<String>::new();
    /// let remote =
    ///     RedisChannel::<HubMessage<String>>::open("redis://127.0.0.1/", "orders", Options::durable()).await?;
    /// Runner::new().service(remote.forward_hub_from(&hub, "orders/")).start().await?;
    /// // Made after the bridge started, and mirrored all the same.
    /// hub.channel("orders/eu")?.send("order 7".to_string()).await?;
    /// # Ok(()) }
    /// ```
    pub fn forward_hub_from(&self, hub: &Hub<T>, prefix: &str) -> Service {
        self.outbound(hub_source(hub.watch(prefix)))
    }

    /// A service that sends each message of this Redis channel to the hub's
    /// channel it names, through a customer made at each run: as
    /// [`forward_to`](Self::forward_to) with `None`, as
    /// [`forward_to_as`](Self::forward_to_as) with a consumer. It waits while a
    /// customer of that channel is full, but not for customers: a message for a
    /// channel nobody is connected to is dropped (logged at debug level), as
    /// [`Hub::broadcast_async`] does. A channel that does not exist is made only
    /// when someone could read the message, so a remote writer adds no names
    /// otherwise: for a persistent name (its channel keeps the message for later
    /// customers), and for a name under the prefix of a
    /// [`forward_hub_from`](Self::forward_hub_from) of the same hub (a relay). A message
    /// naming a queue, or a name the hub refuses, is logged and skipped (and
    /// acknowledged). It ends when the hub closes; a closed Redis channel leaves
    /// the hub open.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use servicekit::hub::Hub;
    /// use servicekit::redis::{Consumer, HubMessage, Options, RedisChannel};
    /// use servicekit::Runner;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let hub = Hub::<String>::new();
    /// let mut eu = hub.connect("orders/eu")?;
    /// let remote =
    ///     RedisChannel::<HubMessage<String>>::open("redis://127.0.0.1/", "orders", Options::durable()).await?;
    /// Runner::new()
    ///     .service(remote.forward_hub_to(&hub, Some(Consumer::fan_out("billing"))))
    ///     .start()
    ///     .await?;
    /// let order = eu.recv().await?; // sent on `orders/eu` of another process's hub
    /// # Ok(()) }
    /// ```
    pub fn forward_hub_to(&self, hub: &Hub<T>, consumer: Option<Consumer>) -> Service {
        self.inbound(Arc::new(hub.clone()), consumer)
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
                Some(None) => {
                    state.source = None;
                    return Ok(());
                }
                Some(Some(Next::Msg(msg))) => state.unsent.push(msg),
                Some(Some(Next::Lagged(n))) => {
                    tracing::warn!(channel = %remote.name(), missed = n, "redis bridge: the local side lagged");
                    continue;
                }
            }
            // What else is waiting goes in the same batch; the end, if it came,
            // is seen again at the next turn (the source is fused).
            while state.unsent.len() < BATCH {
                match source.next().now_or_never() {
                    Some(Some(Next::Msg(msg))) => state.unsent.push(msg),
                    Some(Some(Next::Lagged(n))) => {
                        tracing::warn!(channel = %remote.name(), missed = n, "redis bridge: the local side lagged");
                    }
                    Some(None) | None => break,
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
    target: Arc<dyn Target<T>>,
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
                match ctx.until_shutdown(target.put(msg.payload.clone())).await {
                    None => return Ok(()),
                    // The local side closed: nothing more to do.
                    Some(false) => return Ok(()),
                    Some(true) => {}
                }
                customer.ack(&msg);
            }
            Err(RecvError::Closed) => {
                target.close();
                return Ok(());
            }
            // The customer reconnects by itself; lagged, malformed: go on.
            Err(e) => tracing::warn!(channel = %remote.name(), error = %e, "redis bridge"),
        }
    }
}

struct Outbound<T> {
    source: Option<BoxStream<'static, Next<T>>>,
    /// Taken from the local side, not yet confirmed by Redis.
    unsent: Vec<T>,
}

/// What an outbound bridge takes from the local side (which has ended when its
/// stream does).
enum Next<T> {
    Msg(T),
    Lagged(u64),
}

/// A local customer's messages, each wrapped; it ends when the channel closes.
fn customer_messages<T, M>(
    customer: Customer<T>,
    wrap: impl Fn(T) -> M + Clone + Send + 'static,
) -> impl futures::Stream<Item = Next<M>> + Send + 'static
where
    T: Clone + Send + 'static,
    M: Send + 'static,
{
    futures::stream::unfold(customer, move |mut c| {
        let wrap = wrap.clone();
        async move {
            let next = match c.recv().await {
                Ok(msg) => Next::Msg(wrap(msg)),
                Err(crate::channel::RecvError::Lagged(n)) => Next::Lagged(n),
                Err(_) => return None,
            };
            Some((next, c))
        }
    })
}

/// The messages of the channels a hub watch connects to, with their names, until
/// the hub closes and every one of them has ended.
fn hub_source<T: Clone + Send + 'static>(
    watch: crate::hub::Watch<T>,
) -> BoxStream<'static, Next<HubMessage<T>>> {
    fn named<T: Clone + Send + 'static>(
        (name, customer): (String, Customer<T>),
    ) -> BoxStream<'static, Next<HubMessage<T>>> {
        customer_messages(customer, move |msg| HubMessage::new(name.clone(), msg)).boxed()
    }
    let channels: SelectAll<_> = watch.existing.into_iter().map(named).collect();
    futures::stream::unfold(
        (channels, watch.later),
        |(mut channels, mut later)| async move {
            loop {
                tokio::select! {
                    // A new channel first: nothing is sent on it before it is here.
                    biased;
                    Some(made) = later.recv() => channels.push(named(made)),
                    Some(next) = channels.next(), if !channels.is_empty() => {
                        return Some((next, (channels, later)));
                    }
                    else => return None,
                }
            }
        },
    )
    .boxed()
}

impl<T: Clone + Send + Sync + 'static> Target<HubMessage<T>> for Hub<T> {
    fn put(&self, m: HubMessage<T>) -> BoxFuture<'_, bool> {
        async move {
            match self.send_to(&m.name, m.msg).await {
                Ok(SentTo::Delivered) => true,
                Ok(gone @ (SentTo::NoCustomers | SentTo::Closed)) => {
                    tracing::debug!(name = %m.name, reason = ?gone, "redis bridge: a message for a hub channel nobody reads is dropped");
                    true
                }
                Err(HubError::Closed) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "redis bridge: a message for a name the hub refuses is skipped");
                    true
                }
            }
        }
        .boxed()
    }
}

/// Where an inbound bridge puts its messages.
trait Target<T>: Send + Sync {
    /// Hands a message to the local side; `false` once that side is closed.
    fn put(&self, msg: T) -> BoxFuture<'_, bool>;
    /// The Redis channel closed.
    fn close(&self) {}
}

impl<T: Clone + Send + Sync + 'static> Target<T> for Channel<T> {
    fn put(&self, msg: T) -> BoxFuture<'_, bool> {
        async move { self.send(msg).await.is_ok() }.boxed()
    }

    fn close(&self) {
        Channel::close(self);
    }
}

impl<T: Clone + Send + Sync + 'static> Target<T> for EventBus {
    fn put(&self, msg: T) -> BoxFuture<'_, bool> {
        self.send(msg);
        futures::future::ready(true).boxed()
    }
}

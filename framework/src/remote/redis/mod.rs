//! Channels across processes and machines, over Redis (feature `redis`).
//!
//! A [`RedisChannel`] is the remote form of a [`Channel`](crate::Channel): processes
//! [`send`](RedisChannel::send) typed messages to a name, and each
//! [`connect`](RedisChannel::connect)ed [`RemoteCustomer`] receives them. Messages
//! travel in a versioned envelope (kind, id, time sent, payload), as JSON or
//! MessagePack ([`Codec`]).
//!
//! ## Delivery, named in the API
//!
//! | | [`Delivery::Ephemeral`] | [`Delivery::Durable`] |
//! |---|---|---|
//! | Redis | `PUBLISH` / `SUBSCRIBE` | a stream, consumer groups (`XADD`, `XREADGROUP`, `XACK`) |
//! | guarantee | at most once | at least once |
//! | a customer that is not connected | misses what is sent | gets it later (its group keeps its place) |
//! | a lost connection | reconnects by itself, then `recv` says [`RecvError::Reconnected`] `{ may_have_missed: true }` | reconnects by itself, misses nothing |
//! | a slow customer | its buffer overflows: [`RecvError::Lagged`] | the reader waits for it (nothing dropped) |
//! | acknowledgement | none | [`RemoteCustomer::ack`], or automatic at the next `recv` ([`Consumer::auto_ack`]) |
//! | fan-out / work queue | fan-out | [`Consumer::fan_out`] (a group per customer name) / [`Consumer::work_queue`] (one shared group) |
//! | late customers | start from now | [`Start::Beginning`], [`Start::After`] an id, or [`Start::New`] |
//! | a dead consumer | — | what it left pending is reclaimed by another after [`Consumer::reclaim_after`] |
//! | poison messages | — | moved to a dead-letter stream after [`Consumer::max_deliveries`] |
//!
//! A customer's subscription (or stream reader) lives as long as the customer, on a
//! connection of its own: it is never made afresh per call, so nothing is lost
//! between two `recv`s. After a disconnect it reconnects with a bounded, jittered
//! backoff and never gives up while the customer is open; a connection that goes
//! silent (a network partition, no FIN) is found by a ping every second.
//!
//! ## Closing
//!
//! [`RedisChannel::close`] is sticky: it sets a key and writes a close record (a
//! record of its own kind, never a magic payload). Every customer, in every process,
//! receives what was sent before the close and then [`RecvError::Closed`]; one that
//! connects later sees the close too. Sends after a close fail with
//! [`SendError::Closed`]. A durable send checks and appends in one script on the
//! server, so nothing lands after the close record; an ephemeral send racing a
//! close may return `Ok` and reach nobody (at most once).
//!
//! ## Bad input
//!
//! A malformed or foreign message (another writer, another version, another codec)
//! is [`RecvError::Decode`] for that message, counted
//! ([`RemoteCustomer::malformed`]); the customer goes on (a durable one moves it to
//! the dead-letter stream, so nothing is lost). A bad URL, an unreachable server or
//! refused credentials are an [`OpenError`] from `open`, within its connect timeout.
//!
//! ## Bridges
//!
//! [`RedisChannel::forward_from`] sends a local [`Channel`](crate::Channel) to Redis
//! and [`RedisChannel::forward_to`] / [`forward_to_as`](RedisChannel::forward_to_as)
//! brings a Redis channel into a local one;
//! [`forward_events_from`](RedisChannel::forward_events_from) and
//! [`forward_events_to`](RedisChannel::forward_events_to) do the same for one type
//! of events on an [`EventBus`](crate::bus::EventBus), and
//! [`forward_hub_from`](RedisChannel::forward_hub_from) /
//! [`forward_hub_to`](RedisChannel::forward_hub_to) for every channel of a
//! [`Hub`](crate::hub::Hub) under a prefix, including those made later (each
//! message travels as a [`HubMessage`], with its channel's name). Each is a
//! [`Service`](crate::Service): when Redis goes away, the run fails and the runner
//! restarts it with backoff, without a limit.
//!
//! ## Keys
//!
//! The keys of channel `name` share the hash tag `{name}`, so a channel lives on one
//! slot of a Redis Cluster: `{name}:pub` (the pub/sub channel), `{name}:stream`,
//! `{name}:dead` (dead letters) and `{name}:closed`. In a consumer group each
//! customer is a consumer of its own name (unless [`Consumer::name`] fixes one);
//! in a shared group (fan-out or work queue) the live customers remove the names
//! of those that went or died once they hold nothing and have been idle past
//! [`Consumer::reclaim_after`] (and at least 3 s; before Redis 7.2 a quiet live
//! customer's name can go too, and comes back with its next message). A
//! customer's private group goes with it. The
//! consumer `servicekit:handed-back` holds what a closed or dropped customer gave
//! back until a live consumer reclaims it.
//!
//! ## Example
//!
//! ```no_run
//! use servicekit::redis::{Options, RedisChannel};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let orders = RedisChannel::<String>::open("redis://127.0.0.1/", "orders", Options::durable()).await?;
//! let mut customer = orders.connect().await?;
//! orders.send(&"one".to_string()).await?;
//! let msg = customer.recv().await?;
//! assert_eq!(msg.payload, "one");
//! customer.ack(&msg);
//! # Ok(()) }
//! ```

mod bridge;
mod customer;
mod durable;
mod envelope;
mod ephemeral;
mod error;

use std::marker::PhantomData;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use bridge::HubMessage;
pub use customer::{Message, RemoteCustomer};
pub use durable::{Consumer, DeadLetter, Start};
pub use envelope::Codec;
pub use error::{DecodeError, OpenError, RecvError, SendError};

/// How a channel delivers; see the [module docs](self).
///
/// # Examples
///
/// ```
/// use servicekit::redis::{Delivery, Options};
/// assert_eq!(Options::durable().delivery(), Delivery::Durable);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// Pub/sub: at most once, nothing kept.
    Ephemeral,
    /// Streams with consumer groups: at least once.
    Durable,
}

/// The settings of a [`RedisChannel`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use servicekit::redis::{Codec, Options};
///
/// let options = Options::durable()
///     .codec(Codec::MessagePack)
///     .max_len(100_000)
///     .connect_timeout(Duration::from_secs(2));
/// # drop(options);
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    delivery: Delivery,
    codec: Codec,
    buffer: usize,
    max_len: Option<usize>,
    connect_timeout: Duration,
}

impl Options {
    /// Pub/sub delivery, at most once.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = servicekit::redis::Options::ephemeral();
    /// # drop(options);
    /// ```
    pub fn ephemeral() -> Options {
        Options {
            delivery: Delivery::Ephemeral,
            codec: Codec::Json,
            buffer: 1024,
            max_len: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Stream delivery with consumer groups, at least once.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = servicekit::redis::Options::durable();
    /// # drop(options);
    /// ```
    pub fn durable() -> Options {
        Options {
            delivery: Delivery::Durable,
            ..Options::ephemeral()
        }
    }

    /// The delivery chosen.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::redis::{Delivery, Options};
    /// assert_eq!(Options::ephemeral().delivery(), Delivery::Ephemeral);
    /// ```
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// The wire format (JSON by default). Every process on a channel must use the
    /// same; a message in another is a decode error for that message.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::redis::{Codec, Options};
    /// let options = Options::ephemeral().codec(Codec::MessagePack);
    /// # drop(options);
    /// ```
    pub fn codec(mut self, codec: Codec) -> Options {
        self.codec = codec;
        self
    }

    /// How many messages each customer buffers (1024 by default). An ephemeral
    /// customer that falls further behind loses the oldest ([`RecvError::Lagged`]);
    /// a durable one's reader waits.
    ///
    /// # Panics
    ///
    /// If `n` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = servicekit::redis::Options::ephemeral().buffer(10_000);
    /// # drop(options);
    /// ```
    pub fn buffer(mut self, n: usize) -> Options {
        assert!(
            n > 0,
            "a remote customer's buffer must hold at least one message"
        );
        self.buffer = n;
        self
    }

    /// Durable only: trims the stream to about `n` entries at each send
    /// (`XADD MAXLEN ~ n`). Entries trimmed before a slow group read them are lost
    /// to it, so choose `n` well above any backlog you expect. Not trimmed by
    /// default.
    ///
    /// # Panics
    ///
    /// If `n` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// let options = servicekit::redis::Options::durable().max_len(1_000_000);
    /// # drop(options);
    /// ```
    pub fn max_len(mut self, n: usize) -> Options {
        assert!(n > 0, "a stream trimmed to 0 entries would keep nothing");
        self.max_len = Some(n);
        self
    }

    /// How long `open` and each reconnection wait for the server (5 s by default).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = servicekit::redis::Options::ephemeral().connect_timeout(Duration::from_secs(1));
    /// # drop(options);
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Options {
        self.connect_timeout = timeout;
        self
    }
}

/// The longest channel name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// A channel's keys, all under its hash tag.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) name: String,
    pub(crate) publish: String,
    pub(crate) stream: String,
    pub(crate) dead: String,
    pub(crate) closed: String,
}

impl Keys {
    fn new(name: &str) -> Result<Keys, OpenError> {
        let reason = if name.is_empty() {
            "it is empty"
        } else if name.len() > MAX_NAME_LEN {
            "it is longer than 200 bytes (redis::MAX_NAME_LEN)"
        } else if name.contains(['{', '}']) {
            "it contains `{` or `}` (the channel's keys put it in a hash tag)"
        } else if name.chars().any(char::is_control) {
            "it contains a control character"
        } else {
            let tag = format!("{{{name}}}");
            return Ok(Keys {
                name: name.to_owned(),
                publish: format!("{tag}:pub"),
                stream: format!("{tag}:stream"),
                dead: format!("{tag}:dead"),
                closed: format!("{tag}:closed"),
            });
        };
        Err(OpenError::Name {
            name: name.escape_debug().to_string(),
            reason,
        })
    }
}

/// What every handle and customer of one opened channel shares.
pub(crate) struct Shared {
    pub(crate) client: redis::Client,
    pub(crate) keys: Keys,
    pub(crate) options: Options,
    /// For sends, acknowledgements and checks; reconnects by itself.
    pub(crate) conn: ConnectionManager,
}

/// A durable send: `KEYS[1]` the closed flag, `KEYS[2]` the stream; `ARGV[1]` the
/// trim bound (0: none), then the envelopes. Returns -1 once closed, or how many
/// were appended.
const SEND: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local maxlen = tonumber(ARGV[1])
for i = 2, #ARGV do
  if maxlen > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'e', ARGV[i])
  else
    redis.call('XADD', KEYS[2], '*', 'e', ARGV[i])
  end
end
return #ARGV - 1
"#;

/// `KEYS[1]` the closed flag, `KEYS[2]` the pub/sub channel or the stream;
/// `ARGV[1]` `pub` or `stream`, `ARGV[2]` the close record.
/// Returns 1 if this call closed the channel.
const CLOSE: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX') then
  if ARGV[1] == 'pub' then
    redis.call('PUBLISH', KEYS[2], ARGV[2])
  else
    redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
  end
  return 1
end
return 0
"#;

/// Most envelopes per script call of a batch (a script blocks the server while it
/// runs).
const BATCH_CHUNK: usize = 256;

/// The scripts, hashed once ([`redis::Script`] loads them again after a server
/// restart).
static SEND_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(SEND));
static CLOSE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(CLOSE));

/// A named channel on a Redis server; see the [module docs](self).
///
/// `RedisChannel` is a cheap handle: clones share the connection.
///
/// # Examples
///
/// ```no_run
/// use servicekit::redis::{Options, RedisChannel};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let prices = RedisChannel::<f64>::open("redis://127.0.0.1/", "prices", Options::ephemeral()).await?;
/// let mut customer = prices.connect().await?;
/// prices.send(&101.5).await?;
/// assert_eq!(customer.recv().await?.payload, 101.5);
/// # Ok(()) }
/// ```
pub struct RedisChannel<T> {
    shared: std::sync::Arc<Shared>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for RedisChannel<T> {
    fn clone(&self) -> Self {
        RedisChannel {
            shared: self.shared.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for RedisChannel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisChannel")
            .field("name", &self.shared.keys.name)
            .field("delivery", &self.shared.options.delivery)
            .finish()
    }
}

/// Where a channel is opened: a URL (`redis://[:password@]host[:port][/db]`, or
/// `rediss://` with TLS support in the `redis` crate) or a `redis::Client`.
pub trait IntoClient {
    /// The client, or why there is none.
    ///
    /// # Errors
    ///
    /// [`OpenError::Url`] for a URL that does not parse.
    fn into_client(self) -> Result<redis::Client, OpenError>;
}

impl IntoClient for redis::Client {
    fn into_client(self) -> Result<redis::Client, OpenError> {
        Ok(self)
    }
}

impl IntoClient for &str {
    fn into_client(self) -> Result<redis::Client, OpenError> {
        redis::Client::open(self).map_err(|source| OpenError::Url {
            url: self.to_owned(),
            source,
        })
    }
}

impl IntoClient for String {
    fn into_client(self) -> Result<redis::Client, OpenError> {
        self.as_str().into_client()
    }
}

impl IntoClient for &String {
    fn into_client(self) -> Result<redis::Client, OpenError> {
        self.as_str().into_client()
    }
}

fn addr_of(client: &redis::Client) -> String {
    client.get_connection_info().addr().to_string()
}

/// Connects within `timeout`, naming what went wrong.
pub(crate) async fn connect_manager(
    client: &redis::Client,
    timeout: Duration,
) -> Result<ConnectionManager, OpenError> {
    let addr = addr_of(client);
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    let attempt = async {
        let mut conn = client.get_connection_manager_with_config(config).await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(OpenError::Timeout { addr, timeout }),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) if is_auth_error(&source) => Err(OpenError::Auth { addr, source }),
        Ok(Err(source)) => Err(OpenError::Unreachable { addr, source }),
    }
}

fn is_auth_error(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}

impl<T: Serialize + DeserializeOwned + Send + 'static> RedisChannel<T> {
    /// Opens channel `name` on the server at `client` (a URL or a `redis::Client`):
    /// connects and checks the server answers, within the connect timeout.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: a bad URL or name, an unreachable server, refused
    /// credentials, or no answer in time.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::redis::{OpenError, Options, RedisChannel};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let err = RedisChannel::<u8>::open("redis://127.0.0.1:1/", "x", Options::ephemeral()).await;
    /// assert!(matches!(err, Err(OpenError::Unreachable { .. } | OpenError::Timeout { .. })));
    /// # }
    /// ```
    pub async fn open(
        client: impl IntoClient,
        name: &str,
        options: Options,
    ) -> Result<Self, OpenError> {
        let keys = Keys::new(name)?;
        let client = client.into_client()?;
        let conn = connect_manager(&client, options.connect_timeout).await?;
        Ok(RedisChannel {
            shared: std::sync::Arc::new(Shared {
                client,
                keys,
                options,
                conn,
            }),
            _t: PhantomData,
        })
    }

    /// The channel's name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = RedisChannel::<u8>::open("redis://127.0.0.1/", "orders", Options::durable()).await?;
    /// assert_eq!(ch.name(), "orders");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.shared.keys.name
    }

    /// Sends one message: published (ephemeral) or appended to the stream
    /// (durable).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the channel is closed (by any process; nothing is
    /// sent), [`SendError::Encode`], or [`SendError::Redis`] (the connection is made
    /// again at the next send).
    ///
    /// # Cancel safety
    ///
    /// Cancelled, the message may or may not have been sent.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = RedisChannel::<String>::open("redis://127.0.0.1/", "log", Options::durable()).await?;
    /// ch.send(&"started".to_string()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, msg: &T) -> Result<(), SendError> {
        let envelope = self
            .shared
            .options
            .codec
            .data(msg)
            .map_err(SendError::Encode)?;
        self.send_encoded(&[envelope]).await
    }

    /// Sends several messages in one round trip (in chunks of 256), in order.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); nothing is sent if one does not encode. A
    /// [`SendError::Redis`] may come after some chunks were sent.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = RedisChannel::<u32>::open("redis://127.0.0.1/", "ticks", Options::ephemeral()).await?;
    /// ch.send_batch(&[1, 2, 3]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_batch<'a, I>(&self, msgs: I) -> Result<(), SendError>
    where
        I: IntoIterator<Item = &'a T>,
        T: 'a,
    {
        let codec = self.shared.options.codec;
        let envelopes = msgs
            .into_iter()
            .map(|m| codec.data(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(SendError::Encode)?;
        for chunk in envelopes.chunks(BATCH_CHUNK) {
            self.send_encoded(chunk).await?;
        }
        Ok(())
    }

    async fn send_encoded(&self, envelopes: &[Vec<u8>]) -> Result<(), SendError> {
        match self.try_send_encoded(envelopes).await {
            // The connection was found broken when writing (nothing was sent): the
            // manager makes a new one, and the send goes once more.
            Err(SendError::Redis(e)) if e.is_connection_dropped() => {
                tracing::debug!(channel = %self.name(), error = %e, "redis: send again on a new connection");
                self.try_send_encoded(envelopes).await
            }
            other => other,
        }
    }

    async fn try_send_encoded(&self, envelopes: &[Vec<u8>]) -> Result<(), SendError> {
        let shared = &self.shared;
        let mut conn = shared.conn.clone();
        let closed = match shared.options.delivery {
            // At most once: the check and the publishes go in one pipeline, not one
            // script (a script per batch costs a fifth of the throughput). A close
            // that lands between them leaves the messages after the close record,
            // where no customer reads: lost, as any ephemeral message may be.
            Delivery::Ephemeral => {
                let mut pipe = redis::pipe();
                pipe.cmd("EXISTS").arg(&shared.keys.closed);
                for e in envelopes {
                    pipe.cmd("PUBLISH")
                        .arg(&shared.keys.publish)
                        .arg(e.as_slice())
                        .ignore();
                }
                let (closed,): (bool,) = pipe.query_async(&mut conn).await?;
                closed
            }
            // At least once: nothing may land after the close record, so the check
            // and the appends are one script.
            Delivery::Durable => {
                let mut invocation = SEND_SCRIPT.key(&shared.keys.closed);
                invocation
                    .key(&shared.keys.stream)
                    .arg(shared.options.max_len.unwrap_or(0));
                for e in envelopes {
                    invocation.arg(e.as_slice());
                }
                let sent: i64 = invocation.invoke_async(&mut conn).await?;
                sent < 0
            }
        };
        if closed {
            return Err(SendError::Closed);
        }
        Ok(())
    }

    /// Closes the channel for every process: customers receive what was sent
    /// before, then [`RecvError::Closed`]; later customers and sends see it closed.
    /// Returns whether this call closed it.
    ///
    /// # Errors
    ///
    /// A Redis error (then the close may or may not have happened).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = RedisChannel::<u8>::open("redis://127.0.0.1/", "jobs", Options::durable()).await?;
    /// assert!(ch.close().await?);
    /// assert!(ch.is_closed().await?);
    /// assert!(!ch.close().await?);
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) -> Result<bool, redis::RedisError> {
        let shared = &self.shared;
        let (kind, key) = match shared.options.delivery {
            Delivery::Ephemeral => ("pub", &shared.keys.publish),
            Delivery::Durable => ("stream", &shared.keys.stream),
        };
        let mut conn = shared.conn.clone();
        let closed: i64 = CLOSE_SCRIPT
            .key(&shared.keys.closed)
            .key(key)
            .arg(kind)
            .arg(shared.options.codec.close())
            .invoke_async(&mut conn)
            .await?;
        Ok(closed == 1)
    }

    /// Whether the channel is closed (asks the server).
    ///
    /// # Errors
    ///
    /// A Redis error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = RedisChannel::<u8>::open("redis://127.0.0.1/", "jobs", Options::durable()).await?;
    /// assert!(!ch.is_closed().await?);
    /// # Ok(()) }
    /// ```
    pub async fn is_closed(&self) -> Result<bool, redis::RedisError> {
        let mut conn = self.shared.conn.clone();
        redis::cmd("EXISTS")
            .arg(&self.shared.keys.closed)
            .query_async(&mut conn)
            .await
    }

    /// The oldest `count` entries of the channel's dead-letter stream: durable
    /// messages that did not decode, or that a group delivered
    /// [`max_deliveries`](Consumer::max_deliveries) times without an
    /// acknowledgement. They stay there until [`delete`](Self::delete) (or an
    /// `XDEL` / `XTRIM` of `{name}:dead`).
    ///
    /// # Errors
    ///
    /// A Redis error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = RedisChannel::<u64>::open("redis://127.0.0.1/", "jobs", Options::durable()).await?;
    /// for dead in ch.dead_letters(10).await? {
    ///     println!("{}: {}", dead.original_id, dead.reason);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn dead_letters(
        &self,
        count: usize,
    ) -> Result<Vec<DeadLetter<T>>, redis::RedisError> {
        durable::dead_letters(&self.shared, count).await
    }

    /// Deletes the channel's keys (stream, dead letters, closed flag, groups): the
    /// name starts afresh. Customers still connected keep running.
    ///
    /// # Errors
    ///
    /// A Redis error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = RedisChannel::<u8>::open("redis://127.0.0.1/", "scratch", Options::durable()).await?;
    /// ch.close().await?;
    /// ch.delete().await?;
    /// assert!(!ch.is_closed().await?);
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self) -> Result<(), redis::RedisError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.conn.clone();
        redis::cmd("DEL")
            .arg(&keys.stream)
            .arg(&keys.dead)
            .arg(&keys.closed)
            .query_async(&mut conn)
            .await
    }

    /// A customer: from now on it receives what is sent (ephemeral: subscribed
    /// before this returns), or, durable, a fan-out customer of its own that starts
    /// at new messages and whose group is removed when it is closed or dropped (a
    /// process that dies first leaves its `customer-…` group in Redis, with what it
    /// had not acknowledged; `XINFO GROUPS` lists them). For a named group, a work
    /// queue or a replay, use [`connect_as`](Self::connect_as).
    ///
    /// # Errors
    ///
    /// [`RecvError::Redis`] if the first connection cannot be made (later ones are
    /// retried by the customer, forever). A customer of a closed channel is made;
    /// it receives what it still can, then `Closed`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Options, RedisChannel};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = RedisChannel::<u8>::open("redis://127.0.0.1/", "events", Options::ephemeral()).await?;
    /// let mut customer = ch.connect().await?;
    /// ch.send(&1).await?;
    /// assert_eq!(customer.recv().await?.payload, 1);
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self) -> Result<RemoteCustomer<T>, RecvError> {
        match self.shared.options.delivery {
            Delivery::Ephemeral => ephemeral::connect(self.shared.clone()).await,
            Delivery::Durable => durable::connect(self.shared.clone(), Consumer::private()).await,
        }
    }

    /// A durable customer with these settings: a named fan-out group, a work
    /// queue, where to start, acknowledgements, reclaiming and dead letters.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); an ephemeral channel has no consumers:
    /// [`RecvError::Redis`] saying so.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use servicekit::redis::{Consumer, Options, RedisChannel, Start};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let ch = RedisChannel::<u8>::open("redis://127.0.0.1/", "jobs", Options::durable()).await?;
    /// let mut worker = ch.connect_as(Consumer::work_queue().start(Start::Beginning)).await?;
    /// # drop(worker);
    /// # Ok(()) }
    /// ```
    pub async fn connect_as(&self, consumer: Consumer) -> Result<RemoteCustomer<T>, RecvError> {
        match self.shared.options.delivery {
            Delivery::Ephemeral => Err(RecvError::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "an ephemeral channel has no consumer groups",
                "open it with Options::durable() for fan-out and work-queue consumers".to_owned(),
            )))),
            Delivery::Durable => durable::connect(self.shared.clone(), consumer).await,
        }
    }
}

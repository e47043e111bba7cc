//! Named channels: a [`Hub`] of broadcast [`Channel`]s and work [`Queue`]s by name,
//! with prefix broadcast, replay for late customers, configuration and byte streams.
//!
//! ## Channels and queues
//!
//! [`Hub::channel`] gets or creates the broadcast channel of a name: every customer
//! of it gets every message. [`Hub::queue`] gets or creates a work queue: each item
//! goes to one of its receivers. A name is one or the other, never both, so readers
//! compete only when the program asked for a queue. Names are checked: not empty, at
//! most [`MAX_NAME_LEN`] bytes, no control characters.
//!
//! ## Broadcast by prefix
//!
//! [`Hub::broadcast`] sends a message to every channel whose name starts with a
//! prefix, without waiting, and reports each name: delivered, skipped because a
//! customer was full, skipped because nobody was connected, or closed. Nothing is
//! skipped silently. [`Hub::broadcast_async`] waits for room instead.
//!
//! ## Replay for late customers
//!
//! A persistent channel (setting `persistent`, see [`HubConfig`]) keeps its last
//! `replay` messages: a customer that connects late receives them first, in order,
//! exactly once, then every later message, with no gap and no duplicate, also while
//! sends and connects race (they take the same lock). Memory is bounded: `replay`
//! messages, plus at most 64 waiting for the next trim, plus what slow customers
//! still hold. A send with nobody connected is kept for later customers instead of
//! waiting. A customer the hub connects to a persistent channel has room for the
//! history on top of its buffer.
//!
//! ## Closing and removing
//!
//! [`Hub::remove`] forgets a name and closes its channel or queue: its customers
//! receive what they hold, then closed; a writer still holding it gets closed errors,
//! never a panic. [`Hub::close`] does that for every name, and the hub refuses new
//! names afterwards.
//!
//! ## Byte streams
//!
//! A `Hub<Bytes>` also gives [`HubWriter`]s (`tokio::io::AsyncWrite`: each write is one
//! message) and [`HubReader`]s (`tokio::io::AsyncRead`, and
//! [`read_message`](HubReader::read_message) to keep message boundaries), which work
//! with `tokio::io::copy` and `tokio_util::codec` framing. When the last writer of a
//! name shuts down (or is dropped) the channel closes: readers reach end of file
//! after the last byte, and the next use of the name starts a new stream (a
//! persistent channel stays, closed, for late readers until it is removed).
//!
//! ## Example
//!
//! ```
//! use servicekit::hub::Hub;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::<String>::new();
//! let mut a = hub.connect("subscriber/0")?;
//! let mut b = hub.connect("subscriber/1")?;
//! let report = hub.broadcast("subscriber/", "hello".to_string());
//! assert_eq!(report.delivered, ["subscriber/0", "subscriber/1"]);
//! assert_eq!(a.recv().await?, "hello");
//! assert_eq!(b.recv().await?, "hello");
//! assert_eq!(hub.list("subscriber/"), ["subscriber/0", "subscriber/1"]);
//! # Ok(())
//! # }
//! ```

mod config;
mod io;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(feature = "redis")]
use crate::messaging::channel::Overflow;
use crate::messaging::channel::{
    Channel, ChannelStats, Customer, NoCustomers, SendError, TrySendError,
};
use crate::messaging::queue::{Queue, QueueStats};

pub use config::{ConfigError, HubConfig, NameConfig, PrefixConfig};
pub use io::{HubReader, HubWriter};

/// The longest name a hub accepts, in bytes.
pub const MAX_NAME_LEN: usize = 256;

// The message of a too-long name quotes the limit.
const _: () = assert!(MAX_NAME_LEN == 256);

/// Channels and queues by name; see the [module docs](crate::hub).
///
/// `Hub` is a cheap handle: clones share the same names.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let hub = servicekit::hub::Hub::<u64>::new();
/// let jobs = hub.queue("jobs")?;             // competing receivers, on purpose
/// let worker = jobs.receiver();
/// jobs.send(7).await?;
/// assert_eq!(worker.recv().await?, 7);
/// assert!(hub.channel("jobs").is_err());     // a queue's name is not a channel's
/// # Ok(())
/// # }
/// ```
pub struct Hub<T> {
    inner: Arc<HubInner<T>>,
}

struct HubInner<T> {
    config: HubConfig,
    state: Mutex<State<T>>,
}

struct State<T> {
    names: BTreeMap<String, Named<T>>,
    closed: bool,
    /// Who gets a customer of every channel made under a prefix (a Redis bridge).
    #[cfg(feature = "redis")]
    watchers: Vec<Watcher<T>>,
}

impl<T> State<T> {
    /// The names that start with `prefix`, in order.
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Named<T>)> {
        self.names
            .range(prefix.to_string()..)
            .take_while(move |(name, _)| name.starts_with(prefix))
    }
}

/// A watcher of a prefix: each channel made under it is connected to, under the
/// hub's lock (before anyone can send on it), and the customer sent here.
#[cfg(feature = "redis")]
struct Watcher<T> {
    prefix: String,
    customers: tokio::sync::mpsc::UnboundedSender<(String, Customer<T>)>,
}

/// What a hub gives the watcher of a prefix: a customer of each channel under it
/// now, and one of each channel made under it later (until the hub closes).
#[cfg(feature = "redis")]
pub(crate) struct Watch<T> {
    pub(crate) existing: Vec<(String, Customer<T>)>,
    pub(crate) later: tokio::sync::mpsc::UnboundedReceiver<(String, Customer<T>)>,
}

/// What became of a message sent to one name ([`Hub::send_to`]).
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SentTo {
    Delivered,
    NoCustomers,
    Closed,
}

enum Named<T> {
    Channel(Entry<T>),
    Queue(Queue<T>),
}

/// A named channel and its live [`HubWriter`]s (the last one to shut down closes it).
struct Entry<T> {
    channel: Channel<T>,
    writers: Arc<AtomicUsize>,
}

impl<T: Clone> Named<T> {
    fn close(&self) {
        match self {
            Named::Channel(e) => {
                e.channel.close();
            }
            Named::Queue(q) => {
                q.close();
            }
        }
    }
}

/// What a name is in a hub.
///
/// # Examples
///
/// ```
/// use servicekit::hub::{Hub, HubError, Kind};
/// let hub = Hub::<u8>::new();
/// hub.queue("jobs").unwrap();
/// assert!(matches!(hub.channel("jobs"), Err(HubError::WrongKind { is: Kind::Queue, .. })));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A broadcast channel.
    Channel,
    /// A work queue.
    Queue,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Channel => "channel",
            Kind::Queue => "queue",
        })
    }
}

/// Why a hub refused a name.
///
/// # Examples
///
/// ```
/// use servicekit::hub::Hub;
/// let hub = Hub::<u8>::new();
/// assert_eq!(hub.channel("").unwrap_err().to_string(), "invalid hub name ``: it is empty");
/// assert_eq!(
///     hub.channel("a\nb").unwrap_err().to_string(),
///     "invalid hub name `a\\nb`: it contains a control character",
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubError {
    /// The name is empty, too long or contains a control character.
    InvalidName {
        /// The name (escaped in the message).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The name is already used by the other kind.
    WrongKind {
        /// The name.
        name: String,
        /// What it is.
        is: Kind,
    },
    /// The hub is closed.
    Closed,
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HubError::InvalidName { name, reason } => {
                write!(f, "invalid hub name `{}`: {reason}", name.escape_debug())
            }
            HubError::WrongKind { name, is } => write!(f, "hub name `{name}` is a {is}"),
            HubError::Closed => f.write_str("hub closed"),
        }
    }
}

impl std::error::Error for HubError {}

fn check_name(name: &str) -> Result<(), HubError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_LEN {
        "it is longer than the limit of 256 bytes (hub::MAX_NAME_LEN)"
    } else if name.chars().any(char::is_control) {
        "it contains a control character"
    } else {
        return Ok(());
    };
    let shown = if name.len() > MAX_NAME_LEN {
        let mut end = 32;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &name[..end])
    } else {
        name.to_string()
    };
    Err(HubError::InvalidName {
        name: shown,
        reason,
    })
}

/// A customer of a hub's channel, with its name's buffer and overflow policy; on
/// a persistent channel its bound is the buffer plus the replay depth, so the kept
/// messages it starts with do not fill it.
fn customer_of<T: Clone + Send + 'static>(channel: &Channel<T>, s: &NameConfig) -> Customer<T> {
    let history = if s.persistent { s.replay } else { 0 };
    channel
        .customer()
        .capacity(s.buffer_size.saturating_add(history))
        .overflow(s.overflow)
        .connect()
}

/// A watcher's customer: as [`customer_of`], but never cut off (it would stop
/// mirroring the name): under `Disconnect` it drops the oldest and says how many.
#[cfg(feature = "redis")]
fn watcher_of<T: Clone + Send + 'static>(channel: &Channel<T>, s: &NameConfig) -> Customer<T> {
    let overflow = match s.overflow {
        Overflow::Disconnect => Overflow::DropOldest,
        other => other,
    };
    customer_of(channel, &NameConfig { overflow, ..*s })
}

/// Sends without waiting for customers: waits for room only, and if the full
/// customers leave meanwhile, says there are none.
async fn send_waiting<T: Clone + Send + 'static>(
    channel: &Channel<T>,
    msg: T,
) -> Result<(), SendError<T>> {
    match channel.try_send(msg) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(m)) => {
            let mut slot = Some(m);
            std::future::poll_fn(|cx| channel.poll_send(&mut slot, cx, NoCustomers::Fail)).await
        }
        Err(TrySendError::NoCustomers(m)) => Err(SendError::NoCustomers(m)),
        Err(TrySendError::Closed(m)) => Err(SendError::Closed(m)),
    }
}

/// What [`Hub::broadcast`] did with each channel under the prefix, by name, each
/// list sorted.
///
/// # Examples
///
/// ```
/// let hub = servicekit::hub::Hub::<u8>::new();
/// let _c = hub.connect("a/1").unwrap();
/// hub.channel("a/2").unwrap(); // nobody connected
/// let report = hub.broadcast("a/", 1);
/// assert_eq!(report.delivered, ["a/1"]);
/// assert_eq!(report.no_customers, ["a/2"]);
/// assert!(!report.is_complete());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BroadcastReport {
    /// Sent (or, for a persistent channel with nobody connected, kept for later).
    pub delivered: Vec<String>,
    /// Skipped: a customer's buffer was full (`broadcast_async` waits instead).
    pub full: Vec<String>,
    /// Skipped: nobody was connected.
    pub no_customers: Vec<String>,
    /// Skipped: the channel was closed (by a holder of it).
    pub closed: Vec<String>,
}

impl BroadcastReport {
    /// Whether every channel under the prefix got the message.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = servicekit::hub::Hub::<u8>::new();
    /// let _c = hub.connect("a").unwrap();
    /// assert!(hub.broadcast("", 1).is_complete());
    /// ```
    pub fn is_complete(&self) -> bool {
        self.full.is_empty() && self.no_customers.is_empty() && self.closed.is_empty()
    }
}

impl<T> Clone for Hub<T> {
    fn clone(&self) -> Self {
        Hub {
            inner: self.inner.clone(),
        }
    }
}

impl<T> fmt::Debug for Hub<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("Hub")
            .field("names", &state.names.len())
            .field("closed", &state.closed)
            .finish()
    }
}

impl<T: Clone + Send + 'static> Default for Hub<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Hub<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // The lock guards plain maps; a panic while it is held leaves them whole.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Clone + Send + 'static> Hub<T> {
    /// A hub with the default settings (buffers of 100, nothing persistent).
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = servicekit::hub::Hub::<String>::new();
    /// assert_eq!(hub.channel_count(), 0);
    /// ```
    pub fn new() -> Self {
        Self::with_config(HubConfig::default()).expect("the default settings are valid")
    }

    /// A hub with these settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid setting ([`HubConfig::validate`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::hub::{Hub, HubConfig, PrefixConfig};
    /// let config = HubConfig::default().with_prefix(PrefixConfig::new("events/").persistent(true));
    /// let hub = Hub::<u32>::with_config(config).unwrap();
    /// # drop(hub);
    /// ```
    pub fn with_config(config: HubConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Hub {
            inner: Arc::new(HubInner {
                config,
                state: Mutex::new(State {
                    names: BTreeMap::new(),
                    closed: false,
                    #[cfg(feature = "redis")]
                    watchers: Vec::new(),
                }),
            }),
        })
    }

    /// A hub with settings from a string map ([`HubConfig::from_map`]).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the bad key and its value.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// let map = HashMap::from([
    ///     ("buffer_size".to_string(), "100".to_string()),
    ///     ("persistent".to_string(), "true".to_string()),
    /// ]);
    /// let hub = servicekit::hub::Hub::<Vec<u8>>::from_config(&map).unwrap();
    /// assert!(hub.config().persistent);
    /// ```
    pub fn from_config(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::with_config(HubConfig::from_map(map)?)
    }

    /// The hub's settings.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(servicekit::hub::Hub::<u8>::new().config().buffer_size, 100);
    /// ```
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The broadcast channel of `name`, created with its settings if it does not
    /// exist. A channel made here waits, on send, while nobody is connected (unless
    /// it is persistent: then it keeps the message for later customers).
    ///
    /// # Errors
    ///
    /// [`HubError::InvalidName`], [`HubError::WrongKind`] if `name` is a queue,
    /// [`HubError::Closed`] if the hub is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = servicekit::hub::Hub::<u8>::new();
    /// let a = hub.channel("stage1").unwrap();
    /// let b = hub.channel("stage1").unwrap();
    /// let mut c = a.connect();
    /// b.try_send(1).unwrap();
    /// assert_eq!(c.try_recv(), Ok(1));
    /// ```
    pub fn channel(&self, name: &str) -> Result<Channel<T>, HubError> {
        Ok(self.entry(name, false)?.0)
    }

    /// The channel of `name` and its writer count, made if needed. A closed channel
    /// that keeps nothing for late customers (its writer shut down) is replaced by a
    /// new one: the name starts a new stream.
    ///
    /// With `add_writer`, counts one more writer under the hub's lock (which the last
    /// writer also takes to close the channel, so a new writer never gets a channel
    /// that is being closed under it).
    fn entry(
        &self,
        name: &str,
        add_writer: bool,
    ) -> Result<(Channel<T>, Arc<AtomicUsize>), HubError> {
        check_name(name)?;
        let s = self.inner.config.for_name(name);
        let mut state = self.state();
        if state.closed {
            return Err(HubError::Closed);
        }
        match state.names.get(name) {
            Some(Named::Channel(e)) if s.persistent || !e.channel.is_closed() => {
                if add_writer {
                    e.writers.fetch_add(1, Ordering::AcqRel);
                }
                return Ok((e.channel.clone(), e.writers.clone()));
            }
            Some(Named::Queue(_)) => {
                return Err(HubError::WrongKind {
                    name: name.to_string(),
                    is: Kind::Queue,
                });
            }
            Some(Named::Channel(_)) | None => {}
        }
        let channel = Channel::builder()
            .capacity(s.buffer_size)
            .replay(if s.persistent { s.replay } else { 0 })
            .build();
        let writers = Arc::new(AtomicUsize::new(usize::from(add_writer)));
        #[cfg(feature = "redis")]
        {
            // Watchers whose reader went are forgotten: a customer nobody reads
            // would hold back the channel's senders.
            state.watchers.retain(|w| !w.customers.is_closed());
            for w in state
                .watchers
                .iter()
                .filter(|w| name.starts_with(&w.prefix))
            {
                let _ = w
                    .customers
                    .send((name.to_string(), watcher_of(&channel, &s)));
            }
        }
        state.names.insert(
            name.to_string(),
            Named::Channel(Entry {
                channel: channel.clone(),
                writers: writers.clone(),
            }),
        );
        Ok((channel, writers))
    }

    /// Connects a customer to the channel of `name` (made if needed), with the
    /// buffer and overflow policy its settings give. On a persistent channel its
    /// bound is the buffer plus the replay depth, so the kept messages it starts with
    /// do not fill it.
    ///
    /// # Errors
    ///
    /// As [`channel`](Self::channel).
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = servicekit::hub::Hub::<u8>::new();
    /// let mut c = hub.connect("events").unwrap();
    /// hub.channel("events").unwrap().try_send(3).unwrap();
    /// assert_eq!(c.try_recv(), Ok(3));
    /// ```
    pub fn connect(&self, name: &str) -> Result<Customer<T>, HubError> {
        let channel = self.channel(name)?;
        Ok(customer_of(&channel, &self.inner.config.for_name(name)))
    }

    /// The work queue of `name`, created (bounded by its buffer size) if it does not
    /// exist: each item goes to one receiver.
    ///
    /// # Errors
    ///
    /// [`HubError::InvalidName`], [`HubError::WrongKind`] if `name` is a channel,
    /// [`HubError::Closed`] if the hub is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = servicekit::hub::Hub::<u8>::new();
    /// let q = hub.queue("resize").unwrap();
    /// q.try_send(1).unwrap();
    /// assert_eq!(hub.queue("resize").unwrap().receiver().try_recv(), Ok(1));
    /// ```
    pub fn queue(&self, name: &str) -> Result<Queue<T>, HubError> {
        check_name(name)?;
        let mut state = self.state();
        if state.closed {
            return Err(HubError::Closed);
        }
        match state.names.get(name) {
            Some(Named::Queue(q)) => return Ok(q.clone()),
            Some(Named::Channel(_)) => {
                return Err(HubError::WrongKind {
                    name: name.to_string(),
                    is: Kind::Channel,
                });
            }
            None => {}
        }
        let queue = Queue::bounded(self.inner.config.for_name(name).buffer_size);
        state
            .names
            .insert(name.to_string(), Named::Queue(queue.clone()));
        Ok(queue)
    }

    /// The channels whose names start with `prefix`, in name order.
    fn channels_under(&self, prefix: &str) -> Vec<(String, Channel<T>)> {
        let state = self.state();
        state
            .under(prefix)
            .filter_map(|(name, named)| match named {
                Named::Channel(e) => Some((name.clone(), e.channel.clone())),
                Named::Queue(_) => None,
            })
            .collect()
    }

    /// Sends `msg` to every channel whose name starts with `prefix` (`""`: all),
    /// without waiting, and reports what happened to each. Queues are not included.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = servicekit::hub::Hub::<&str>::new();
    /// let mut subs: Vec<_> = (0..3).map(|i| hub.connect(&format!("subscriber/{i}")).unwrap()).collect();
    /// let report = hub.broadcast("subscriber/", "event data");
    /// assert_eq!(report.delivered.len(), 3);
    /// for s in &mut subs {
    ///     assert_eq!(s.try_recv(), Ok("event data"));
    /// }
    /// ```
    pub fn broadcast(&self, prefix: &str, msg: T) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        for (name, channel) in self.channels_under(prefix) {
            match channel.try_send(msg.clone()) {
                Ok(()) => report.delivered.push(name),
                Err(TrySendError::Full(_)) => report.full.push(name),
                Err(TrySendError::NoCustomers(_)) => report.no_customers.push(name),
                Err(TrySendError::Closed(_)) => report.closed.push(name),
            }
        }
        report
    }

    /// Sends `msg` to every channel whose name starts with `prefix`, waiting while a
    /// customer of it is full (backpressure), and reports what happened to each. A
    /// channel with nobody connected is skipped, not waited for.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops it between channels: the ones already sent to keep
    /// the message.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = servicekit::hub::Hub::<u8>::new();
    /// let mut c = hub.connect("a").unwrap();
    /// for i in 0..100 {
    ///     hub.broadcast("", i); // fills the buffer of 100
    /// }
    /// let send = hub.broadcast_async("", 100); // waits for room instead of skipping
    /// let drain = async {
    ///     for _ in 0..101 {
    ///         c.recv().await.unwrap();
    ///     }
    /// };
    /// let (report, ()) = tokio::join!(send, drain);
    /// assert_eq!(report.delivered, ["a"]);
    /// # }
    /// ```
    pub async fn broadcast_async(&self, prefix: &str, msg: T) -> BroadcastReport {
        let mut report = BroadcastReport::default();
        for (name, channel) in self.channels_under(prefix) {
            match send_waiting(&channel, msg.clone()).await {
                Ok(()) => report.delivered.push(name),
                Err(SendError::Closed(_)) => report.closed.push(name),
                Err(SendError::NoCustomers(_)) => report.no_customers.push(name),
            }
        }
        report
    }

    /// Sends `msg` on the channel of `name`, as
    /// [`broadcast_async`](Self::broadcast_async) does: waiting for room, not for
    /// customers. A channel that does not exist (or is closed, to be replaced) is
    /// made only if someone could read the message: the name is persistent (its
    /// channel keeps it for later customers) or a watcher's prefix covers it.
    #[cfg(feature = "redis")]
    pub(crate) async fn send_to(&self, name: &str, msg: T) -> Result<SentTo, HubError> {
        check_name(name)?;
        let persistent = self.inner.config.for_name(name).persistent;
        let (existing, watched) = {
            let state = self.state();
            if state.closed {
                return Err(HubError::Closed);
            }
            let existing = match state.names.get(name) {
                Some(Named::Channel(e)) if persistent || !e.channel.is_closed() => {
                    Some(e.channel.clone())
                }
                Some(Named::Channel(_)) | None => None,
                Some(Named::Queue(_)) => {
                    return Err(HubError::WrongKind {
                        name: name.to_string(),
                        is: Kind::Queue,
                    });
                }
            };
            let watched = state
                .watchers
                .iter()
                .any(|w| name.starts_with(&w.prefix) && !w.customers.is_closed());
            (existing, watched)
        };
        let channel = match existing {
            Some(channel) => channel,
            None if persistent || watched => self.channel(name)?,
            None => return Ok(SentTo::NoCustomers),
        };
        Ok(match send_waiting(&channel, msg).await {
            Ok(()) => SentTo::Delivered,
            Err(SendError::NoCustomers(_)) => SentTo::NoCustomers,
            Err(SendError::Closed(_)) => SentTo::Closed,
        })
    }

    /// Connects to every channel whose name starts with `prefix`, now and as they
    /// are made (a closed channel replaced by a new one included), until the hub
    /// closes. Dropping [`Watch::later`] stops it.
    #[cfg(feature = "redis")]
    pub(crate) fn watch(&self, prefix: &str) -> Watch<T> {
        let (tx, later) = tokio::sync::mpsc::unbounded_channel();
        let mut state = self.state();
        let existing = state
            .under(prefix)
            .filter_map(|(name, named)| match named {
                Named::Channel(e) => Some((
                    name.clone(),
                    watcher_of(&e.channel, &self.inner.config.for_name(name)),
                )),
                Named::Queue(_) => None,
            })
            .collect();
        if !state.closed {
            state.watchers.push(Watcher {
                prefix: prefix.to_string(),
                customers: tx,
            });
        }
        Watch { existing, later }
    }

    /// The names (channels and queues) that start with `prefix`, sorted.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = servicekit::hub::Hub::<u8>::new();
    /// for name in ["b/2", "a", "b/1"] {
    ///     hub.channel(name).unwrap();
    /// }
    /// assert_eq!(hub.list("b/"), ["b/1", "b/2"]);
    /// assert_eq!(hub.list(""), ["a", "b/1", "b/2"]);
    /// ```
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let state = self.state();
        state.under(prefix).map(|(name, _)| name.clone()).collect()
    }

    /// How many names (channels and queues) the hub has.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = servicekit::hub::Hub::<u8>::new();
    /// hub.channel("a").unwrap();
    /// hub.queue("b").unwrap();
    /// assert_eq!(hub.channel_count(), 2);
    /// ```
    pub fn channel_count(&self) -> usize {
        self.state().names.len()
    }

    /// Forgets `name` and closes its channel or queue: its customers receive what
    /// they hold, then closed; holders of it get closed errors. Returns whether the
    /// name existed. A later `channel(name)` makes a new one.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = servicekit::hub::Hub::<u8>::new();
    /// let writer = hub.channel("x").unwrap();
    /// let mut c = writer.connect();
    /// writer.try_send(1).unwrap();
    /// assert!(hub.remove("x"));
    /// assert_eq!(c.recv().await, Ok(1));
    /// assert!(c.recv().await.is_err());       // closed after draining
    /// assert!(writer.try_send(2).is_err());   // an error, not a panic
    /// # }
    /// ```
    pub fn remove(&self, name: &str) -> bool {
        let removed = self.state().names.remove(name);
        match removed {
            Some(named) => {
                named.close();
                true
            }
            None => false,
        }
    }

    /// Closes every channel and queue (their customers drain, then see closed) and
    /// refuses new names from now on. Returns `false` if it was already closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = servicekit::hub::Hub::<u8>::new();
    /// let ch = hub.channel("a").unwrap();
    /// assert!(hub.close());
    /// assert!(ch.is_closed());
    /// assert!(hub.channel("b").is_err());
    /// ```
    pub fn close(&self) -> bool {
        let names = {
            let mut state = self.state();
            if state.closed {
                return false;
            }
            state.closed = true;
            #[cfg(feature = "redis")]
            state.watchers.clear();
            std::mem::take(&mut state.names)
        };
        for named in names.values() {
            named.close();
        }
        true
    }

    /// Whether the hub is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = servicekit::hub::Hub::<u8>::new();
    /// hub.close();
    /// assert!(hub.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// A snapshot of every name's load, sorted by name: what
    /// `servicekit::ops::channels` exports as metrics. The hub's lock is held only
    /// to list the names; each channel and queue is then read on its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::hub::{Hub, Load};
    /// let hub = Hub::<u8>::new();
    /// let _c = hub.connect("events").unwrap();
    /// hub.channel("events").unwrap().try_send(1).unwrap();
    /// hub.queue("jobs").unwrap().try_send(2).unwrap();
    /// let stats = hub.stats();
    /// assert_eq!(stats[0].name, "events");
    /// assert!(matches!(stats[0].load, Load::Channel(c) if c.depth == 1 && c.customers == 1));
    /// assert!(matches!(stats[1].load, Load::Queue(q) if q.depth == 1));
    /// ```
    pub fn stats(&self) -> Vec<NameStats> {
        let named: Vec<(String, Named<T>)> = {
            let state = self.state();
            state
                .names
                .iter()
                .map(|(name, named)| {
                    let named = match named {
                        Named::Channel(e) => Named::Channel(Entry {
                            channel: e.channel.clone(),
                            writers: e.writers.clone(),
                        }),
                        Named::Queue(q) => Named::Queue(q.clone()),
                    };
                    (name.clone(), named)
                })
                .collect()
        };
        named
            .into_iter()
            .map(|(name, named)| NameStats {
                name,
                load: match named {
                    Named::Channel(e) => Load::Channel(e.channel.stats()),
                    Named::Queue(q) => Load::Queue(q.stats()),
                },
            })
            .collect()
    }

    /// A handle that does not keep the hub alive (for exporters).
    #[cfg(any(feature = "http", feature = "metrics"))]
    pub(crate) fn downgrade(&self) -> WeakHub<T> {
        WeakHub(Arc::downgrade(&self.inner))
    }
}

/// A [`Hub`] that is not kept alive by this handle.
#[cfg(any(feature = "http", feature = "metrics"))]
pub(crate) struct WeakHub<T>(std::sync::Weak<HubInner<T>>);

#[cfg(any(feature = "http", feature = "metrics"))]
impl<T> WeakHub<T> {
    pub(crate) fn upgrade(&self) -> Option<Hub<T>> {
        self.0.upgrade().map(|inner| Hub { inner })
    }
}

/// One name's load, from [`Hub::stats`].
///
/// # Examples
///
/// ```
/// let hub = servicekit::hub::Hub::<u8>::new();
/// hub.queue("jobs").unwrap();
/// assert_eq!(hub.stats()[0].name, "jobs");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NameStats {
    /// The channel's or queue's name.
    pub name: String,
    /// Its load.
    pub load: Load,
}

/// The load of a hub's channel or queue.
///
/// # Examples
///
/// ```
/// use servicekit::hub::{Hub, Load};
/// let hub = Hub::<u8>::new();
/// hub.channel("a").unwrap();
/// assert!(matches!(hub.stats()[0].load, Load::Channel(_)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// A broadcast channel's.
    Channel(ChannelStats),
    /// A work queue's.
    Queue(QueueStats),
}

#[cfg(all(test, feature = "redis"))]
mod watch_tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_connects_to_channels_under_its_prefix_now_and_later() {
        let hub = Hub::<u32>::new();
        hub.channel("orders/a").unwrap();
        hub.channel("other").unwrap();
        hub.queue("orders/jobs").unwrap();
        let mut watch = hub.watch("orders/");
        let names: Vec<&str> = watch.existing.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["orders/a"], "channels under the prefix, no queue");
        // A channel made later is connected to before anyone can send on it.
        hub.channel("orders/b").unwrap().try_send(1).unwrap();
        hub.channel("other/b").unwrap();
        let (name, mut customer) = watch.later.recv().await.unwrap();
        assert_eq!(name, "orders/b");
        assert_eq!(customer.try_recv(), Ok(1));
        assert!(
            watch.later.try_recv().is_err(),
            "`other/b` is not under the prefix"
        );
        // A closed channel replaced by a new one is connected to again.
        hub.remove("orders/b");
        hub.channel("orders/b").unwrap();
        assert_eq!(watch.later.recv().await.unwrap().0, "orders/b");
        hub.close();
        assert!(
            watch.later.recv().await.is_none(),
            "the watch ends with the hub"
        );
    }

    #[test]
    fn a_dropped_watch_holds_no_channel_back() {
        let hub = Hub::<u32>::with_config(HubConfig {
            buffer_size: 1,
            ..HubConfig::default()
        })
        .unwrap();
        let kept = hub.channel("a/1").unwrap();
        drop(hub.watch("a/"));
        // Its customers went with it, and a channel made later gets none: with
        // buffers of 1, a second send would find a customer nobody reads full.
        // The watcher itself is forgotten when the next channel is made.
        assert_eq!(hub.state().watchers.len(), 1);
        hub.channel("b").unwrap();
        assert_eq!(hub.state().watchers.len(), 0);
        for name in ["a/1", "a/2"] {
            let mut reader = hub.connect(name).unwrap();
            let ch = hub.channel(name).unwrap();
            for i in 0..2 {
                ch.try_send(i).unwrap();
                assert_eq!(reader.try_recv(), Ok(i));
            }
        }
        drop(kept);
    }

    #[tokio::test]
    async fn send_to_waits_for_room_not_for_customers() {
        let hub = Hub::<u32>::with_config(HubConfig {
            buffer_size: 1,
            ..HubConfig::default()
        })
        .unwrap();
        assert_eq!(hub.send_to("x", 1).await, Ok(SentTo::NoCustomers));
        assert!(hub.list("").is_empty(), "no name made for nobody");
        // Under a watched prefix, the name is made and the watcher gets it.
        let mut watch = hub.watch("relay/");
        assert_eq!(hub.send_to("relay/a", 9).await, Ok(SentTo::Delivered));
        let (name, mut relayed) = watch.later.recv().await.unwrap();
        assert_eq!((name.as_str(), relayed.try_recv()), ("relay/a", Ok(9)));
        drop((watch, relayed));
        // A closed channel is replaced, as `channel` does, when it is watched.
        let mut watch = hub.watch("relay/");
        hub.channel("relay/a").unwrap().close();
        assert_eq!(hub.send_to("relay/a", 10).await, Ok(SentTo::Delivered));
        let (_, mut relayed) = watch.later.recv().await.unwrap();
        assert_eq!(relayed.try_recv(), Ok(10));
        drop((watch, relayed));
        assert!(hub.remove("relay/a"));
        let mut c = hub.connect("x").unwrap();
        assert_eq!(hub.send_to("x", 2).await, Ok(SentTo::Delivered));
        let (sent, first) = tokio::join!(hub.send_to("x", 3), async {
            tokio::task::yield_now().await;
            c.recv().await
        });
        assert_eq!((sent, first), (Ok(SentTo::Delivered), Ok(2)));
        assert_eq!(c.recv().await, Ok(3));
        hub.queue("q").unwrap();
        assert!(matches!(
            hub.send_to("q", 4).await,
            Err(HubError::WrongKind { .. })
        ));
        hub.close();
        assert_eq!(hub.send_to("x", 5).await, Err(HubError::Closed));

        // A persistent name is made, and keeps the message for a later customer.
        let kept = HubConfig::default().with_prefix(PrefixConfig::new("kept/").persistent(true));
        let hub = Hub::<u32>::with_config(kept).unwrap();
        assert_eq!(hub.send_to("kept/a", 6).await, Ok(SentTo::Delivered));
        assert_eq!(hub.connect("kept/a").unwrap().try_recv(), Ok(6));
    }

    #[test]
    fn a_watcher_is_never_cut_off() {
        use crate::messaging::channel::{RecvError, TryRecvError};
        let hub = Hub::<u32>::with_config(HubConfig {
            buffer_size: 1,
            overflow: Overflow::Disconnect,
            ..HubConfig::default()
        })
        .unwrap();
        let mut watch = hub.watch("");
        let ch = hub.channel("a").unwrap();
        let (_, mut customer) = watch.later.try_recv().unwrap();
        for i in 0..3 {
            ch.try_send(i).unwrap();
        }
        assert_eq!(
            customer.try_recv(),
            Err(TryRecvError::Recv(RecvError::Lagged(2)))
        );
        assert_eq!(customer.try_recv(), Ok(2));
        ch.try_send(3).unwrap();
        assert_eq!(customer.try_recv(), Ok(3), "still connected");
    }
}

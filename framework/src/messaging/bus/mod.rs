//! A typed, scoped event bus: publish an event, and every current subscription to
//! exactly its type receives it.
//!
//! Services publish what happened (`UserLoggedIn`, `OrderCreated`) and others react,
//! without knowing each other. An [`EventBus`] routes each event by its exact type
//! to the [`Subscription`]s of that type that exist when it is sent.
//!
//! ## Routing
//!
//! * By exact type: a `Wrapper(Inner)` event reaches subscriptions to `Wrapper`, never
//!   those to `Inner`, and there is no inheritance to follow. Mind integer literals:
//!   `bus.send(1)` sends an `i32`, which a subscription to `u32` never sees; write
//!   `1u32`, or better, give each event a type of its own.
//! * A subscription receives events sent after it was made, never earlier ones:
//!   subscribe first, then start whatever sends (see [`EventBus::request`]).
//! * An event with no subscription is dropped at once: nothing is stored or
//!   allocated for it.
//! * Events of one type from one sender arrive in the order they were sent.
//!
//! ## Sharing
//!
//! An event is stored once, in an [`Arc`], however many subscriptions receive it:
//! [`Subscription::recv`] returns an `Arc<E>`, so events are never deep-copied and need
//! no `Clone`. They are immutable once sent; to change one, send a new one.
//!
//! ## Memory
//!
//! An event with no subscription is never stored. Otherwise it is held until every
//! subscription of its type has received it (or lost it to overflow), and freed
//! with the next batch trim of its type's buffer, at most 64 sends later; dropping
//! a subscription frees at once what only it held. A slow subscription holds at
//! most its capacity: memory is bounded by the largest capacity, never by how far
//! behind a subscriber is.
//!
//! ## Backpressure and overflow
//!
//! Each subscription holds at most `capacity` unread events (the bus's default, 256,
//! or its own, [`EventBus::subscription`]). [`EventBus::send`] is synchronous and
//! never waits: a full subscription loses its oldest unread event and its next `recv`
//! reports [`RecvError::Lagged`] with exactly how many it lost
//! ([`Overflow::DropOldest`], the default), or it is cut off
//! ([`Overflow::Disconnect`]): it receives what it holds, then [`RecvError::CutOff`].
//! [`EventBus::send_async`] waits for room in every subscription instead. Nothing is
//! ever lost without the subscription being told.
//!
//! ## Scopes
//!
//! [`scope`] runs a future with its own bus, reachable without a handle from
//! anywhere inside it through [`ctx`] (`ctx::send`, `ctx::subscribe`, `ctx::spawn`,
//! `ctx::state`). Scopes nest: a nested scope is isolated (its own bus) unless made
//! [`shared`](Scope::shared). When a scope ends, its bus closes (subscriptions receive
//! what they hold, then end), then the tasks it spawned are awaited up to a deadline
//! and aborted after it. Services run inside their runner's scope, whose bus is
//! [`ServiceContext::bus`](crate::ServiceContext::bus).
//!
//! ## Closing
//!
//! [`EventBus::close`], the end of the bus's scope, or dropping every `EventBus`
//! handle closes the bus: sends are dropped, and subscriptions receive what they
//! hold, then [`RecvError::Closed`] (their stream ends).
//!
//! ## Errors in subscribers
//!
//! A subscription is independent of every other one: a subscriber that returns an
//! error, panics or stops reading affects only itself. A panic in a task spawned with
//! [`ctx::spawn`] ends that task only; [`EventBus::respond`] keeps answering after its
//! handler panicked.
//!
//! An event's `Drop` may run while the lock of its type's buffer is held (when the
//! buffer is trimmed): it must not send events of its own type, subscribe to them or
//! drop a subscription to them.
//!
//! ## Example
//!
//! ```
//! use futures::StreamExt;
//! use servicekit::bus::{self, ctx};
//!
//! #[derive(Debug)]
//! struct UserLoggedIn {
//!     user: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let logins = bus::scope("app", async {
//!     let mut logins = ctx::subscribe::<UserLoggedIn>().unwrap();
//!     let monitor = ctx::spawn(async move {
//!         let mut seen = Vec::new();
//!         while let Some(event) = logins.next().await {
//!             match event {
//!                 Ok(event) => seen.push(event.user.clone()),
//!                 Err(lag) => eprintln!("monitor: {lag}"), // told, and goes on
//!             }
//!         }
//!         seen // the stream ends when the scope's bus closes
//!     })
//!     .unwrap();
//!     ctx::send(UserLoggedIn { user: "ada".into() }).unwrap();
//!     ctx::send(UserLoggedIn { user: "alan".into() }).unwrap();
//!     monitor
//! })
//! .await;
//! assert_eq!(logins.await.unwrap(), ["ada", "alan"]);
//! # }
//! ```

pub mod ctx;
mod error;
mod request;
mod scope;
mod subscription;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crate::messaging::channel::{Channel, NoCustomers, Overflow as ChannelOverflow};
use crate::sync::Mutex;

pub use error::{NoScope, RecvError, RequestError, StateError, TryRecvError};
pub(crate) use scope::Frame;
pub use scope::{Scope, scope};
pub use subscription::{Subscription, SubscriptionBuilder};

/// What a subscription does when it is full and [`EventBus::send`] brings one more
/// event. [`EventBus::send_async`] waits for room instead, whatever the policy.
///
/// # Examples
///
/// ```
/// use servicekit::bus::{EventBus, Overflow};
/// let bus = EventBus::new();
/// let audit = bus.subscription::<String>().capacity(10_000).overflow(Overflow::Disconnect).subscribe();
/// # drop(audit);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The oldest unread event is dropped; the next `recv` reports
    /// [`RecvError::Lagged`] with the number lost. The default.
    #[default]
    DropOldest,
    /// The subscription is cut off: it receives what it holds, then
    /// [`RecvError::CutOff`].
    Disconnect,
}

impl From<Overflow> for ChannelOverflow {
    fn from(o: Overflow) -> Self {
        match o {
            Overflow::DropOldest => ChannelOverflow::DropOldest,
            Overflow::Disconnect => ChannelOverflow::Disconnect,
        }
    }
}

/// A typed publish-subscribe bus; see the [module docs](crate::bus).
///
/// `EventBus` is a cheap handle: clones publish to and subscribe on the same bus.
/// When every handle is dropped (or the bus's scope ends) the bus closes.
///
/// # Examples
///
/// ```
/// use servicekit::bus::EventBus;
///
/// struct OrderCreated {
///     id: u64,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let bus = EventBus::new();
/// bus.send(OrderCreated { id: 0 }); // nobody subscribed: dropped at once
/// let mut orders = bus.subscribe::<OrderCreated>();
/// bus.send(OrderCreated { id: 1 });
/// assert_eq!(orders.recv().await.unwrap().id, 1);
/// # }
/// ```
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

struct BusInner {
    topics: Mutex<Topics>,
    capacity: usize,
}

#[derive(Default)]
struct Topics {
    map: HashMap<TypeId, Arc<dyn AnyTopic>, BuildHasherDefault<TypeIdHasher>>,
    closed: bool,
}

impl Topics {
    fn get<E: Send + Sync + 'static>(&self) -> Option<&Topic<E>> {
        let topic = self.map.get(&TypeId::of::<E>())?;
        topic.as_any().downcast_ref()
    }
}

/// The subscriptions to one event type: a broadcast [`Channel`] of `Arc<E>` whose
/// customers are all lossy, so a send never waits unless asked to.
pub(crate) struct Topic<E> {
    channel: Channel<Arc<E>>,
    /// Live subscriptions, read without the channel's lock: a send with nobody
    /// subscribed costs the bus's lock and this load.
    subscribers: AtomicUsize,
}

impl<E: Send + Sync + 'static> Topic<E> {
    fn new(capacity: usize) -> Self {
        Topic {
            channel: Channel::builder()
                .capacity(capacity)
                .when_no_customers(NoCustomers::Fail)
                .build(),
            subscribers: AtomicUsize::new(0),
        }
    }

    /// Whether anyone is subscribed to this type now.
    pub(crate) fn has_subscribers(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// Publishes `event` to this type's subscriptions; drops it if there are none.
    pub(crate) fn publish(&self, event: E) {
        if self.has_subscribers() {
            // `NoCustomers` or `Closed`: dropped, as documented.
            let _ = self.channel.try_send(Arc::new(event));
        }
    }
}

trait AnyTopic: Send + Sync {
    fn has_any_subscriber(&self) -> bool;
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    fn close(&self);
}

impl<E: Send + Sync + 'static> AnyTopic for Topic<E> {
    fn has_any_subscriber(&self) -> bool {
        self.has_subscribers()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
    fn close(&self) {
        self.channel.close();
    }
}

/// Hashes a `TypeId` by passing its bits through: they are already a hash.
#[derive(Default)]
struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 ^= (n as u64) ^ ((n >> 64) as u64);
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topics = self.inner.topics.lock();
        f.debug_struct("EventBus")
            .field("types", &topics.map.len())
            .field("capacity", &self.inner.capacity)
            .field("closed", &topics.closed)
            .finish()
    }
}

impl Drop for BusInner {
    fn drop(&mut self) {
        // Subscriptions keep their topic alive, not the bus: close them so they end.
        let topics = std::mem::take(&mut self.topics.lock().map);
        for topic in topics.values() {
            topic.close();
        }
    }
}

impl EventBus {
    /// The default bound of a subscription: unread events it holds before the
    /// overflow policy applies.
    pub const DEFAULT_CAPACITY: usize = 256;

    /// A bus whose subscriptions hold at most [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY)
    /// unread events by default.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = servicekit::bus::EventBus::new();
    /// assert_eq!(bus.subscriber_count::<u32>(), 0);
    /// ```
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A bus whose subscriptions hold at most `capacity` unread events by default.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = servicekit::bus::EventBus::with_capacity(4);
    /// let mut sub = bus.subscribe::<u32>();
    /// for i in 0..6u32 {
    ///     bus.send(i);
    /// }
    /// assert_eq!(sub.try_recv(), Err(servicekit::bus::TryRecvError::Lagged(2)));
    /// assert_eq!(*sub.try_recv().unwrap(), 2);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "EventBus::with_capacity: capacity must be greater than 0"
        );
        EventBus {
            inner: Arc::new(BusInner {
                topics: Mutex::new(Topics::default()),
                capacity,
            }),
        }
    }

    /// Sends `event` to every current subscription of exactly its type, without
    /// waiting: a full subscription loses its oldest event (and is told) or is cut
    /// off, per its [`Overflow`]. With no subscription, or on a closed bus, the event
    /// is dropped at once and nothing is allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = servicekit::bus::EventBus::new();
    /// let mut a = bus.subscribe::<&str>();
    /// let mut b = bus.subscribe::<&str>();
    /// bus.send("deployed");
    /// assert_eq!(*a.try_recv().unwrap(), "deployed");
    /// assert_eq!(*b.try_recv().unwrap(), "deployed");
    /// ```
    pub fn send<E: Send + Sync + 'static>(&self, event: E) {
        let topic = {
            let topics = self.inner.topics.lock();
            match topics.map.get(&TypeId::of::<E>()) {
                Some(topic) if !topics.closed && topic.has_any_subscriber() => topic.clone(),
                // Dropped after the lock is released (its `Drop` is user code).
                _ => return,
            }
        };
        if let Some(topic) = topic.as_any().downcast_ref::<Topic<E>>() {
            // Rejected only if the last subscription just left or the bus closed:
            // then the event is dropped, as documented.
            let _ = topic.channel.try_send(Arc::new(event));
        }
    }

    /// Sends `event` to every current subscription of exactly its type, waiting while
    /// any of them is full instead of applying its overflow policy. With no
    /// subscription, or on a closed bus, the event is dropped at once.
    ///
    /// # Cancel safety
    ///
    /// All-or-nothing: if the future is dropped before it completes, the event was
    /// delivered to no subscription.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use servicekit::bus::EventBus;
    /// let bus = EventBus::with_capacity(1);
    /// let mut sub = bus.subscribe::<u32>();
    /// bus.send_async(1u32).await;
    /// let second = bus.send_async(2u32); // waits until `sub` has room: nothing is lost
    /// assert_eq!(*sub.recv().await.unwrap(), 1);
    /// second.await;
    /// assert_eq!(*sub.recv().await.unwrap(), 2);
    /// # }
    /// ```
    pub async fn send_async<E: Send + Sync + 'static>(&self, event: E) {
        let channel = {
            let topics = self.inner.topics.lock();
            match topics.get::<E>() {
                Some(topic) if !topics.closed && topic.has_subscribers() => topic.channel.clone(),
                _ => return,
            }
        };
        let _ = channel.send_waiting_for_all(Arc::new(event)).await;
    }

    /// Subscribes to events of type `E` sent from now on, with the bus's default
    /// capacity and [`Overflow::DropOldest`].
    ///
    /// On a closed bus the subscription is closed at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = servicekit::bus::EventBus::new();
    /// let sub = bus.subscribe::<u64>();
    /// assert_eq!(bus.subscriber_count::<u64>(), 1);
    /// drop(sub);
    /// assert_eq!(bus.subscriber_count::<u64>(), 0);
    /// ```
    pub fn subscribe<E: Send + Sync + 'static>(&self) -> Subscription<E> {
        self.subscription().subscribe()
    }

    /// A builder for a subscription with its own capacity or overflow policy.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::bus::{EventBus, Overflow};
    /// let bus = EventBus::new();
    /// let sub = bus.subscription::<u64>().capacity(4).overflow(Overflow::Disconnect).subscribe();
    /// # drop(sub);
    /// ```
    pub fn subscription<E: Send + Sync + 'static>(&self) -> SubscriptionBuilder<'_, E> {
        SubscriptionBuilder::new(self, self.inner.capacity)
    }

    /// Makes a subscription (the end of [`SubscriptionBuilder`]).
    fn attach<E: Send + Sync + 'static>(
        &self,
        capacity: usize,
        overflow: Overflow,
    ) -> Subscription<E> {
        let topic = self.topic::<E>();
        Subscription::attach(topic, capacity, overflow)
    }

    /// The topic of `E`, made if it does not exist yet; on a closed bus, a closed
    /// one of its own.
    pub(crate) fn topic<E: Send + Sync + 'static>(&self) -> Arc<Topic<E>> {
        let mut topics = self.inner.topics.lock();
        if topics.closed {
            drop(topics);
            let topic = Topic::new(self.inner.capacity);
            topic.channel.close();
            return Arc::new(topic);
        }
        let capacity = self.inner.capacity;
        let topic = topics
            .map
            .entry(TypeId::of::<E>())
            .or_insert_with(|| Arc::new(Topic::<E>::new(capacity)))
            .clone();
        drop(topics);
        topic
            .into_any()
            .downcast()
            .unwrap_or_else(|_| unreachable!("topics are keyed by their type"))
    }

    /// How many subscriptions to `E` exist (including ones closed or cut off but not
    /// yet dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = servicekit::bus::EventBus::new();
    /// let _a = bus.subscribe::<u8>();
    /// let _b = bus.subscribe::<u8>();
    /// assert_eq!(bus.subscriber_count::<u8>(), 2);
    /// assert_eq!(bus.subscriber_count::<u16>(), 0);
    /// ```
    pub fn subscriber_count<E: Send + Sync + 'static>(&self) -> usize {
        let topics = self.inner.topics.lock();
        topics
            .get::<E>()
            .map_or(0, |t| t.subscribers.load(Ordering::Relaxed))
    }

    /// Closes the bus: later sends are dropped and later subscriptions are closed at
    /// once; current subscriptions receive what they hold, then
    /// [`RecvError::Closed`]. Returns `false` if it was already closed.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use servicekit::bus::{EventBus, RecvError};
    /// let bus = EventBus::new();
    /// let mut sub = bus.subscribe::<u8>();
    /// bus.send(1u8);
    /// assert!(bus.close());
    /// assert_eq!(*sub.recv().await.unwrap(), 1); // drained first
    /// assert_eq!(sub.recv().await, Err(RecvError::Closed));
    /// # }
    /// ```
    pub fn close(&self) -> bool {
        let mut topics = self.inner.topics.lock();
        if topics.closed {
            return false;
        }
        topics.closed = true;
        for topic in topics.map.values() {
            topic.close();
        }
        true
    }

    /// Whether the bus is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = servicekit::bus::EventBus::new();
    /// bus.close();
    /// assert!(bus.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.inner.topics.lock().closed
    }

    /// A handle that does not keep the bus open.
    fn downgrade(&self) -> Weak<BusInner> {
        Arc::downgrade(&self.inner)
    }
}

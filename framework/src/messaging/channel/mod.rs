//! Broadcast `Channel` / `Customer`: lossless fan-out with backpressure.
//!
//! One message sent to a [`Channel`] reaches every [`Customer`] connected at that
//! moment. Each customer has its own buffer bound; the sender waits for the slowest.
//!
//! ## Backpressure
//!
//! A customer with a bounded buffer (`Channel::bounded(n)`, or
//! [`connect_with(n)`](Channel::connect_with)) holds at most `n` unread messages. While
//! any such customer with the default [`Overflow::Block`] policy is full,
//! [`send`](Channel::send) waits and [`try_send`](Channel::try_send) returns
//! [`TrySendError::Full`]. Unbounded customers never make the sender wait. By default a
//! send also waits while no customer is connected
//! ([`NoCustomers::Wait`]; [`NoCustomers::Fail`] returns the message instead).
//!
//! A waiting sender is parked on the customers that are full, and woken once: by the
//! receive that gives it room (the first receive of the last of them), never later,
//! and not by receives that cannot let it proceed. A customer publishes each receive
//! with one atomic increment, so a sender is never left asleep while there is room,
//! even if the customer stops receiving (for example because it waits for that
//! sender through another path).
//!
//! ## Overflow
//!
//! Instead of blocking the sender, a customer may choose
//! [`Overflow::DropOldest`]: its oldest unread message is dropped and its next
//! [`recv`](Customer::recv) reports [`RecvError::Lagged`] with how many it lost; or
//! [`Overflow::Disconnect`]: it is cut off, receives what it had buffered, then
//! [`RecvError::CutOff`]. Nothing is lost without the customer being told.
//!
//! A `DropOldest` customer's losses are exact: it always holds the last `capacity`
//! messages sent, and its next `recv` reports exactly how many older ones it lost.
//! The sender does not touch it to apply them; the customer works them out when it
//! receives, from its position and the channel's tail.
//!
//! ## Closing
//!
//! [`Channel::close`], or dropping every `Channel` handle, ends the stream: customers
//! receive what is buffered, then [`RecvError::Closed`]; senders get their message back
//! in [`SendError`]. [`Customer::close`] disconnects one customer (its buffer is dropped
//! and a waiting sender is released); [`Customer::closer`] does it from another task,
//! waking a `recv` that is waiting.
//!
//! ## Cancel safety
//!
//! Delivery is all-or-nothing: a message is committed to every customer in one step,
//! so a `send` future dropped before it completed delivered to nobody. `recv` is
//! cancel safe: a message is only taken when the future completes.
//!
//! ## Memory
//!
//! Each message is stored once, in one ring shared by all customers, however many
//! there are; it is cloned when a customer receives it (use `Arc<T>` for large
//! messages). A message stays in the ring until the slowest customer has read it.
//! Per customer: a little state, plus a local batch of up to 256 clones taken in
//! one lock (all but `Disconnect` customers), which still count against its bound
//! until they are received. What a `DropOldest` customer lost is freed with the next
//! trim of the ring, at most 64 sends later.
//!
//! ## Locking
//!
//! The ring is guarded by a short lock that is released with a plain store (senders
//! take it once per message, a customer once per batch; waiters spin, then yield,
//! then nap, and are never parked waiting to be woken), and each customer publishes
//! its receives with one atomic increment outside it (a `DropOldest` customer also
//! reads the published tail). Customers clone their batch under that lock, so a
//! `Clone` that is slow (large owned data) holds up the senders meanwhile: send
//! `Arc<T>` for such messages.
//!
//! ## Example
//!
//! ```
//! use servicekit::{Channel, channel::RecvError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let events = Channel::bounded(8);
//! let mut logger = events.connect();
//! let mut alerter = events.connect_with(2);
//! events.send("disk 91% full").await.unwrap();
//! events.close();
//! assert_eq!(logger.recv().await, Ok("disk 91% full"));
//! assert_eq!(alerter.recv().await, Ok("disk 91% full"));
//! assert_eq!(logger.recv().await, Err(RecvError::Closed));
//! # }
//! ```

mod customer;
mod error;
mod ring;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::sync::{Arc, Ordering};

pub use customer::{Customer, CustomerCloser};
pub use error::{RecvError, SendError, TryRecvError, TrySendError};
use ring::Shared;

/// What a customer does when its buffer is full.
///
/// # Examples
///
/// ```
/// use servicekit::{Channel, channel::Overflow};
/// let ch = Channel::<u32>::bounded(4);
/// let metrics = ch.customer().capacity(100).overflow(Overflow::DropOldest).connect();
/// # drop(metrics);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// The sender waits until this customer has room (backpressure). The default.
    #[default]
    Block,
    /// The oldest unread message is dropped; the next `recv` reports
    /// [`RecvError::Lagged`] with the number lost.
    DropOldest,
    /// The customer is cut off: it receives what it had buffered, then
    /// [`RecvError::CutOff`].
    Disconnect,
}

/// What `send` does while no customer is connected.
///
/// # Examples
///
/// ```
/// use servicekit::{Channel, channel::NoCustomers, channel::TrySendError};
/// let ch = Channel::builder().capacity(4).when_no_customers(NoCustomers::Fail).build();
/// assert!(matches!(ch.try_send(1), Err(TrySendError::NoCustomers(1))));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoCustomers {
    /// Wait until a customer connects (the default).
    #[default]
    Wait,
    /// Return the message in [`SendError::NoCustomers`].
    Fail,
}

/// The sending side of a broadcast channel, and the place customers connect.
///
/// `Channel` is a cheap handle: clones send to and connect to the same channel. When
/// every `Channel` handle is dropped the channel closes. See the
/// [module docs](crate::channel) for the semantics.
///
/// # Examples
///
/// ```
/// use servicekit::Channel;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ch = Channel::bounded(16);
/// let mut a = ch.connect();
/// let mut b = ch.connect();
/// let producer = ch.clone();
/// tokio::spawn(async move {
///     for i in 0..3 {
///         producer.send(i).await.unwrap();
///     }
/// });
/// drop(ch); // the producer's clone keeps it open until it is done
/// for i in 0..3 {
///     assert_eq!(a.recv().await, Ok(i));
///     assert_eq!(b.recv().await, Ok(i));
/// }
/// # }
/// ```
pub struct Channel<T> {
    shared: Arc<Shared<T>>,
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("Channel")
            .field("customers", &inner.count)
            .field("buffered", &inner.ring.len())
            .field("closed", &inner.closed)
            .finish()
    }
}

impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Channel {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Channel<T> {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
        }
    }
}

impl<T: Clone> Channel<T> {
    fn with(capacity: Option<usize>, no_customers: NoCustomers, replay: usize) -> Self {
        Channel {
            shared: Arc::new(Shared::new(capacity, no_customers, replay)),
        }
    }

    /// A channel whose customers hold at most `capacity` unread messages by default.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<String>::bounded(5);
    /// assert!(!ch.has_customers());
    /// ```
    pub fn bounded(capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "Channel::bounded: capacity must be greater than 0"
        );
        Self::with(Some(capacity), NoCustomers::Wait, 0)
    }

    /// A channel whose customers are unbounded by default: the sender never waits for
    /// them.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::unbounded();
    /// let mut c = ch.connect();
    /// for i in 0..1000 {
    ///     ch.try_send(i).unwrap();
    /// }
    /// assert_eq!(c.len(), 1000);
    /// ```
    pub fn unbounded() -> Self {
        Self::with(None, NoCustomers::Wait, 0)
    }

    /// A builder for a channel with other settings than [`bounded`](Channel::bounded)
    /// and [`unbounded`](Channel::unbounded) give: the customers' default buffer and
    /// what a send does while no customer is connected.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Channel, channel::{NoCustomers, TrySendError}};
    /// let ch = Channel::builder()
    ///     .capacity(100)
    ///     .when_no_customers(NoCustomers::Fail)
    ///     .build();
    /// assert!(matches!(ch.try_send("lost?"), Err(TrySendError::NoCustomers("lost?"))));
    /// ```
    pub fn builder() -> ChannelBuilder<T> {
        ChannelBuilder {
            capacity: Some(ChannelBuilder::<T>::DEFAULT_CAPACITY),
            no_customers: NoCustomers::Wait,
            replay: 0,
            _messages: PhantomData,
        }
    }

    /// Connects a customer with the channel's default buffer and [`Overflow::Block`].
    /// It receives messages sent from now on (on a channel that keeps messages for
    /// late customers, [`ChannelBuilder::replay`], the kept ones first).
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(4);
    /// let c = ch.connect();
    /// assert_eq!(ch.customer_count(), 1);
    /// # drop(c);
    /// ```
    pub fn connect(&self) -> Customer<T> {
        Customer::attach(&self.shared, self.shared.default_capacity, Overflow::Block)
    }

    /// Connects a customer with its own buffer bound.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(4);
    /// let slow = ch.connect_with(1);
    /// # drop(slow);
    /// ```
    pub fn connect_with(&self, capacity: usize) -> Customer<T> {
        assert!(
            capacity > 0,
            "Channel::connect_with: capacity must be greater than 0"
        );
        Customer::attach(&self.shared, Some(capacity), Overflow::Block)
    }

    /// A builder for a customer with its own buffer and overflow policy.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Channel, channel::Overflow};
    /// let ch = Channel::<u8>::bounded(4);
    /// let c = ch.customer().capacity(16).overflow(Overflow::Disconnect).connect();
    /// # drop(c);
    /// ```
    pub fn customer(&self) -> CustomerBuilder<'_, T> {
        CustomerBuilder {
            channel: self,
            capacity: self.shared.default_capacity,
            overflow: Overflow::Block,
        }
    }

    /// Sends `msg` to every connected customer, waiting while a blocking customer is
    /// full or (by default) while none is connected.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] if the channel is closed; [`SendError::NoCustomers`] if no
    /// customer is connected and the channel is set to [`NoCustomers::Fail`]. The
    /// message comes back in the error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe and all-or-nothing: if the future is dropped before it completes,
    /// the message was delivered to nobody (and is dropped with the future).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ch = servicekit::Channel::bounded(1);
    /// let mut c = ch.connect();
    /// ch.send(1).await.unwrap();
    /// // Full: a second send waits until `c` receives.
    /// let second = ch.send(2);
    /// assert_eq!(c.recv().await, Ok(1));
    /// second.await.unwrap();
    /// assert_eq!(c.recv().await, Ok(2));
    /// # }
    /// ```
    pub async fn send(&self, msg: T) -> Result<(), SendError<T>> {
        SendFut {
            shared: &self.shared,
            msg: Some(msg),
            all: false,
            no_customers: self.shared.no_customers,
        }
        .await
    }

    /// Sends `msg`, waiting while any bounded customer is full, lossy ones included
    /// (their overflow policy is not applied); as `send` otherwise. For channels whose
    /// customers are all lossy: the event bus's `send_async`.
    pub(crate) async fn send_waiting_for_all(&self, msg: T) -> Result<(), SendError<T>> {
        SendFut {
            shared: &self.shared,
            msg: Some(msg),
            all: true,
            no_customers: self.shared.no_customers,
        }
        .await
    }

    /// Sends without waiting.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`], [`TrySendError::NoCustomers`] or
    /// [`TrySendError::Closed`], with the message.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::{Channel, channel::TrySendError};
    /// let ch = Channel::bounded(2);
    /// assert!(matches!(ch.try_send(1), Err(TrySendError::NoCustomers(1))));
    /// let _c = ch.connect();
    /// assert!(ch.try_send(1).is_ok());
    /// ```
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.shared.try_commit(msg, None)
    }

    /// Closes the channel: customers receive what is buffered, then
    /// [`RecvError::Closed`]; sends fail. Returns `false` if it was already closed.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(1);
    /// assert!(ch.close());
    /// assert!(ch.is_closed());
    /// assert!(!ch.close());
    /// ```
    pub fn close(&self) -> bool {
        self.shared.close()
    }

    /// Whether the channel is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!servicekit::Channel::<u8>::bounded(1).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// How many customers are connected.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(1);
    /// let c = ch.connect();
    /// assert_eq!(ch.customer_count(), 1);
    /// drop(c);
    /// assert_eq!(ch.customer_count(), 0);
    /// ```
    pub fn customer_count(&self) -> usize {
        self.shared.lock().count
    }

    /// Whether any customer is connected.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!servicekit::Channel::<u8>::bounded(1).has_customers());
    /// ```
    pub fn has_customers(&self) -> bool {
        self.customer_count() > 0
    }

    /// A snapshot of the channel's load: its customers, how far the slowest one is
    /// behind, and what was lost. It takes the channel's lock once and reads every
    /// customer's position, so it is meant for a metrics scrape, not a hot loop.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::channel::{Channel, Overflow};
    ///
    /// let ch = Channel::bounded(8);
    /// let mut slow = ch.connect();
    /// let _lossy = ch.customer().capacity(2).overflow(Overflow::DropOldest).connect();
    /// for i in 0..5 {
    ///     ch.try_send(i).unwrap();
    /// }
    /// slow.try_recv().unwrap();
    /// let stats = ch.stats();
    /// assert_eq!(stats.customers, 2);
    /// assert_eq!(stats.sent, 5);
    /// assert_eq!(stats.depth, 4); // `slow` has 4 messages to receive
    /// assert_eq!(stats.lagged, 3); // `_lossy` kept only the last 2 of 5
    /// ```
    pub fn stats(&self) -> ChannelStats {
        let lagged = self.shared.lagged.load(Ordering::Relaxed);
        let inner = self.shared.lock();
        let tail = inner.tail();
        let mut stats = ChannelStats {
            customers: inner.count,
            sent: tail,
            depth: 0,
            lagged,
            cut_off: inner.cut_offs,
            closed: inner.closed,
        };
        for c in inner.slots.iter().flatten().filter(|c| !c.closed) {
            let mut from = c.cursor.pos();
            if let (Overflow::DropOldest, Some(cap)) = (c.overflow, c.capacity) {
                // Lost, though the customer has not looked yet.
                let floor = ring::lag_floor(tail, cap);
                stats.lagged += floor.saturating_sub(from);
                from = from.max(floor);
            }
            let to = c.cut_at.map_or(tail, |cut| cut.min(tail));
            stats.depth = stats.depth.max(to.saturating_sub(from));
        }
        stats
    }
}

/// A snapshot of a [`Channel`]'s load, from [`Channel::stats`].
///
/// # Examples
///
/// ```
/// let ch = servicekit::Channel::<u8>::bounded(4);
/// let stats = ch.stats();
/// assert_eq!((stats.customers, stats.sent, stats.depth), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Customers connected.
    pub customers: usize,
    /// Messages sent since the channel was made.
    pub sent: u64,
    /// Messages the slowest customer has yet to receive (its backlog, buffered or in
    /// its batch). With blocking customers this is what holds senders back.
    pub depth: u64,
    /// Messages `DropOldest` customers lost by falling behind (each customer's loss
    /// counted once; [`RecvError::Lagged`] tells the customer).
    pub lagged: u64,
    /// `Disconnect` customers cut off for falling behind.
    pub cut_off: u64,
    /// Whether the channel is closed.
    pub closed: bool,
}

/// Builds a [`Channel`] with its settings; from [`Channel::builder`].
///
/// Settings are fixed when the channel is built: every handle and customer of one
/// channel sees the same ones.
///
/// # Examples
///
/// ```
/// let ch = servicekit::Channel::<u8>::builder().unbounded().build();
/// let mut c = ch.connect();
/// for i in 0..1000 {
///     ch.try_send((i % 256) as u8).unwrap();
/// }
/// assert_eq!(c.len(), 1000);
/// ```
#[must_use = "call `build` to make the channel"]
pub struct ChannelBuilder<T> {
    capacity: Option<usize>,
    no_customers: NoCustomers,
    replay: usize,
    _messages: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for ChannelBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("capacity", &self.capacity)
            .field("no_customers", &self.no_customers)
            .field("replay", &self.replay)
            .finish()
    }
}

impl<T: Clone> ChannelBuilder<T> {
    /// The customers' default buffer bound when [`capacity`](Self::capacity) is not
    /// called.
    const DEFAULT_CAPACITY: usize = 32;

    /// Bounds each customer's buffer to `capacity` unread messages by default (a
    /// customer may choose its own, [`Channel::customer`]). Without this call the
    /// bound is 32.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::builder().capacity(1).build();
    /// let _c = ch.connect();
    /// ch.try_send(1).unwrap();
    /// assert!(ch.try_send(2).is_err()); // the customer is full
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "ChannelBuilder::capacity: capacity must be greater than 0"
        );
        self.capacity = Some(capacity);
        self
    }

    /// Makes the customers' buffers unbounded by default: the sender never waits for
    /// them.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::builder().unbounded().build();
    /// let c = ch.connect();
    /// for _ in 0..100 {
    ///     ch.try_send(0).unwrap();
    /// }
    /// assert_eq!(c.len(), 100);
    /// ```
    pub fn unbounded(mut self) -> Self {
        self.capacity = None;
        self
    }

    /// Sets what a send does while no customer is connected (default
    /// [`NoCustomers::Wait`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use servicekit::{Channel, channel::{NoCustomers, SendError}};
    /// let ch = Channel::builder().when_no_customers(NoCustomers::Fail).build();
    /// assert_eq!(ch.send(1).await, Err(SendError::NoCustomers(1)));
    /// # }
    /// ```
    pub fn when_no_customers(mut self, policy: NoCustomers) -> Self {
        self.no_customers = policy;
        self
    }

    /// Keeps the last `n` messages for customers that connect later: a new customer
    /// receives them first, in order, then every message sent after it connected,
    /// with no gap and no duplicate (connecting and sending take the same lock). A
    /// send with no customer connected stores the message instead of waiting or
    /// failing. Memory is bounded by `n` (plus what slower customers still hold);
    /// `usize::MAX` keeps everything, without bound, so use it only for short
    /// histories (test fixtures).
    ///
    /// A late blocking customer whose bound is smaller than the history it starts
    /// with holds senders back until it has caught up; a late `DropOldest` customer
    /// starts with what fits and reports the rest as lost; a late `Disconnect`
    /// customer is cut off at the next send. Give late customers a bound of at least
    /// `n` plus their usual buffer (the hub does).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let ch = servicekit::Channel::builder().capacity(16).replay(2).build();
    /// for i in 1..=3 {
    ///     ch.send(i).await.unwrap(); // no customer yet: kept, not waiting
    /// }
    /// let mut late = ch.connect();
    /// ch.send(4).await.unwrap();
    /// for want in [2, 3, 4] {
    ///     assert_eq!(late.recv().await, Ok(want));
    /// }
    /// # }
    /// ```
    pub fn replay(mut self, n: usize) -> Self {
        self.replay = n;
        self
    }

    /// Builds the channel.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<String>::builder().build();
    /// assert!(!ch.is_closed());
    /// ```
    pub fn build(self) -> Channel<T> {
        Channel::with(self.capacity, self.no_customers, self.replay)
    }
}

/// Builds a customer with its own settings; from [`Channel::customer`].
///
/// # Examples
///
/// ```
/// use servicekit::{Channel, channel::Overflow};
/// let ch = Channel::<u8>::bounded(4);
/// let c = ch.customer().unbounded().connect();
/// # drop(c);
/// ```
#[must_use = "call `connect` to make the customer"]
pub struct CustomerBuilder<'a, T> {
    channel: &'a Channel<T>,
    capacity: Option<usize>,
    overflow: Overflow,
}

impl<T> fmt::Debug for CustomerBuilder<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomerBuilder")
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .finish()
    }
}

impl<T: Clone> CustomerBuilder<'_, T> {
    /// Bounds the customer's buffer.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::unbounded();
    /// let c = ch.customer().capacity(8).connect();
    /// # drop(c);
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "CustomerBuilder::capacity: capacity must be greater than 0"
        );
        self.capacity = Some(capacity);
        self
    }

    /// Makes the customer's buffer unbounded (it never makes the sender wait).
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(1);
    /// let c = ch.customer().unbounded().connect();
    /// # drop(c);
    /// ```
    pub fn unbounded(mut self) -> Self {
        self.capacity = None;
        self
    }

    /// Sets what happens when the customer's buffer is full (default
    /// [`Overflow::Block`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::channel::Overflow;
    /// let ch = servicekit::Channel::<u8>::bounded(1);
    /// let c = ch.customer().overflow(Overflow::DropOldest).connect();
    /// # drop(c);
    /// ```
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Connects the customer.
    ///
    /// # Examples
    ///
    /// ```
    /// let ch = servicekit::Channel::<u8>::bounded(1);
    /// let c = ch.customer().connect();
    /// assert_eq!(ch.customer_count(), 1);
    /// # drop(c);
    /// ```
    pub fn connect(self) -> Customer<T> {
        Customer::attach(&self.channel.shared, self.capacity, self.overflow)
    }
}
/// The future inside [`Channel::send`].
struct SendFut<'a, T> {
    shared: &'a Arc<Shared<T>>,
    msg: Option<T>,
    /// Waits for lossy customers too (`Shared::try_commit_all`).
    all: bool,
    /// What to do while no customer is connected.
    no_customers: NoCustomers,
}

impl<T> Unpin for SendFut<'_, T> {}

impl<T> Future for SendFut<'_, T> {
    type Output = Result<(), SendError<T>>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let SendFut {
            shared,
            msg,
            all,
            no_customers,
        } = &mut *self;
        poll_commit(shared, msg, cx, *all, *no_customers)
    }
}

/// One attempt to send the message in `slot`: taken when it is committed or
/// refused, put back (and the task registered) when the send has to wait.
#[inline]
fn poll_commit<T>(
    shared: &Shared<T>,
    slot: &mut Option<T>,
    cx: &mut Context<'_>,
    all: bool,
    no_customers: NoCustomers,
) -> Poll<Result<(), SendError<T>>> {
    let msg = slot.take().expect("a send polled after completion");
    let committed = if all {
        shared.try_commit_all(msg, Some(cx))
    } else {
        shared.try_commit(msg, Some(cx))
    };
    match committed {
        Ok(()) => Poll::Ready(Ok(())),
        Err(TrySendError::Closed(m)) => Poll::Ready(Err(SendError::Closed(m))),
        Err(TrySendError::NoCustomers(m)) if no_customers == NoCustomers::Fail => {
            Poll::Ready(Err(SendError::NoCustomers(m)))
        }
        Err(TrySendError::NoCustomers(m) | TrySendError::Full(m)) => {
            *slot = Some(m);
            Poll::Pending
        }
    }
}

impl<T: Clone> Channel<T> {
    /// Sends the message in `slot` like [`send`](Self::send), for a caller that
    /// keeps the message itself between polls (`slot` is emptied once it is sent or
    /// refused). With `NoCustomers::Fail`, a channel with no customer refuses it
    /// whatever the channel's own setting.
    pub(crate) fn poll_send(
        &self,
        slot: &mut Option<T>,
        cx: &mut Context<'_>,
        no_customers: NoCustomers,
    ) -> Poll<Result<(), SendError<T>>> {
        poll_commit(&self.shared, slot, cx, false, no_customers)
    }
}

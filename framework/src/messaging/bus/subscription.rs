//! The receiving side of the bus.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use futures::Stream;

use super::{EventBus, Overflow, RecvError, Topic, TryRecvError};
use crate::messaging::channel::{self, Customer};

/// The events of one type sent on a bus after it subscribed; from
/// [`EventBus::subscribe`] or [`ctx::subscribe`](super::ctx::subscribe).
///
/// It is a [`Stream`] of `Result<Arc<E>, RecvError>` that ends when the bus closes
/// (after every event it holds was received); the errors are
/// [`RecvError::Lagged`] and [`RecvError::CutOff`]. Dropping it unsubscribes and
/// frees the events only it held at once.
///
/// # Examples
///
/// ```
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let bus = servicekit::bus::EventBus::new();
/// let sub = bus.subscribe::<u32>();
/// for i in 0..3u32 {
///     bus.send(i);
/// }
/// bus.close();
/// let all: Vec<u32> = sub.map(|e| *e.unwrap()).collect().await;
/// assert_eq!(all, [0, 1, 2]);
/// # }
/// ```
#[must_use = "a subscription receives nothing unless it is read"]
pub struct Subscription<E> {
    customer: Customer<Arc<E>>,
    topic: Arc<Topic<E>>,
}

impl<E> fmt::Debug for Subscription<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("event", &std::any::type_name::<E>())
            .field("customer", &self.customer)
            .finish()
    }
}

impl<E> Drop for Subscription<E> {
    fn drop(&mut self) {
        self.topic.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<E> Unpin for Subscription<E> {}

fn recv_error(e: channel::RecvError) -> RecvError {
    match e {
        channel::RecvError::Closed => RecvError::Closed,
        channel::RecvError::Lagged(n) => RecvError::Lagged(n),
        channel::RecvError::CutOff => RecvError::CutOff,
    }
}

impl<E: Send + Sync + 'static> Subscription<E> {
    pub(super) fn attach(topic: Arc<Topic<E>>, capacity: usize, overflow: Overflow) -> Self {
        let customer = topic
            .channel
            .customer()
            .capacity(capacity)
            .overflow(overflow.into())
            .connect();
        topic.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription { customer, topic }
    }

    /// Receives the next event, waiting for one.
    ///
    /// # Errors
    ///
    /// [`RecvError::Closed`] once the bus is closed and every event held was
    /// received; [`RecvError::Lagged`] and [`RecvError::CutOff`] for the overflow
    /// policies.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no event is lost if the future is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let bus = servicekit::bus::EventBus::new();
    /// let mut sub = bus.subscribe::<String>();
    /// bus.send("hello".to_string());
    /// assert_eq!(*sub.recv().await.unwrap(), "hello");
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Result<Arc<E>, RecvError> {
        self.customer.recv().await.map_err(recv_error)
    }

    /// Receives an event if one is waiting.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] when nothing is waiting; otherwise as
    /// [`recv`](Subscription::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::bus::{EventBus, TryRecvError};
    /// let bus = EventBus::new();
    /// let mut sub = bus.subscribe::<u8>();
    /// assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
    /// bus.send(7u8);
    /// assert_eq!(*sub.try_recv().unwrap(), 7);
    /// ```
    pub fn try_recv(&mut self) -> Result<Arc<E>, TryRecvError> {
        match self.customer.try_recv() {
            Ok(e) => Ok(e),
            Err(channel::TryRecvError::Empty) => Err(TryRecvError::Empty),
            Err(channel::TryRecvError::Recv(e)) => Err(recv_error(e).into()),
        }
    }

    /// Polls for the next event (what [`recv`](Subscription::recv) and the `Stream`
    /// implementation use).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let bus = servicekit::bus::EventBus::new();
    /// let mut sub = bus.subscribe::<u8>();
    /// bus.send(1u8);
    /// let got = std::future::poll_fn(|cx| sub.poll_recv(cx)).await;
    /// assert_eq!(*got.unwrap(), 1);
    /// # }
    /// ```
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<E>, RecvError>> {
        self.customer.poll_recv(cx).map_err(recv_error)
    }

    /// How many events are waiting for this subscription.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = servicekit::bus::EventBus::new();
    /// let sub = bus.subscribe::<u8>();
    /// bus.send(1u8);
    /// bus.send(2u8);
    /// assert_eq!(sub.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.customer.len()
    }

    /// Whether no event is waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = servicekit::bus::EventBus::new();
    /// assert!(bus.subscribe::<u8>().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this subscription will receive nothing more: its bus is closed and
    /// it holds nothing, or it was cut off and has reported it.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = servicekit::bus::EventBus::new();
    /// let sub = bus.subscribe::<u8>();
    /// assert!(!sub.is_closed());
    /// bus.close();
    /// assert!(sub.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.customer.is_closed()
    }
}

impl<E: Send + Sync + 'static> Stream for Subscription<E> {
    type Item = Result<Arc<E>, RecvError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.poll_recv(cx) {
            Poll::Ready(Err(RecvError::Closed)) => Poll::Ready(None),
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Builds a subscription with its own settings; from [`EventBus::subscription`].
///
/// # Examples
///
/// ```
/// use servicekit::bus::{EventBus, Overflow};
/// let bus = EventBus::new();
/// let sub = bus.subscription::<u64>().capacity(1024).subscribe();
/// # drop(sub);
/// ```
#[must_use = "call `subscribe` to make the subscription"]
pub struct SubscriptionBuilder<'a, E> {
    bus: &'a EventBus,
    capacity: usize,
    overflow: Overflow,
    _event: PhantomData<fn() -> E>,
}

impl<E> fmt::Debug for SubscriptionBuilder<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionBuilder")
            .field("event", &std::any::type_name::<E>())
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .finish()
    }
}

impl<'a, E: Send + Sync + 'static> SubscriptionBuilder<'a, E> {
    pub(super) fn new(bus: &'a EventBus, capacity: usize) -> Self {
        SubscriptionBuilder {
            bus,
            capacity,
            overflow: Overflow::default(),
            _event: PhantomData,
        }
    }

    /// Holds at most `capacity` unread events before the overflow policy applies.
    ///
    /// # Panics
    ///
    /// Panics if `capacity` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = servicekit::bus::EventBus::new();
    /// let mut sub = bus.subscription::<u8>().capacity(1).subscribe();
    /// bus.send(1u8);
    /// bus.send(2u8);
    /// assert_eq!(sub.try_recv(), Err(servicekit::bus::TryRecvError::Lagged(1)));
    /// assert_eq!(*sub.try_recv().unwrap(), 2);
    /// ```
    pub fn capacity(mut self, capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "SubscriptionBuilder::capacity: capacity must be greater than 0"
        );
        self.capacity = capacity;
        self
    }

    /// What happens when the subscription is full (default [`Overflow::DropOldest`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::bus::{EventBus, Overflow, TryRecvError};
    /// let bus = EventBus::new();
    /// let mut sub = bus.subscription::<u8>().capacity(1).overflow(Overflow::Disconnect).subscribe();
    /// bus.send(1u8);
    /// bus.send(2u8); // one too many: cut off
    /// assert_eq!(*sub.try_recv().unwrap(), 1);
    /// assert_eq!(sub.try_recv(), Err(TryRecvError::CutOff));
    /// ```
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Subscribes.
    ///
    /// # Examples
    ///
    /// ```
    /// let bus = servicekit::bus::EventBus::new();
    /// let sub = bus.subscription::<u8>().subscribe();
    /// assert_eq!(bus.subscriber_count::<u8>(), 1);
    /// # drop(sub);
    /// ```
    pub fn subscribe(self) -> Subscription<E> {
        self.bus.attach(self.capacity, self.overflow)
    }
}

//! Broadcast `Channel` / `Customer`: delivery, backpressure, overflow, closing, cancel
//! safety, a multi-task stress check and a randomized model test.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use servicekit::{
    Channel, channel::NoCustomers, channel::Overflow, channel::RecvError, channel::SendError,
    channel::TryRecvError, channel::TrySendError,
};
use tokio::time::{sleep, timeout};

const MS: Duration = Duration::from_millis(1);

#[tokio::test]
async fn every_customer_gets_every_message_in_order() {
    let ch = Channel::bounded(4);
    let mut a = ch.connect();
    let mut b = ch.connect_with(1);
    let mut c = ch.customer().unbounded().connect();
    let producer = ch.clone();
    let send = tokio::spawn(async move {
        for i in 0..500u32 {
            producer.send(i).await.unwrap();
        }
    });
    for i in 0..500u32 {
        assert_eq!(a.recv().await, Ok(i));
        assert_eq!(b.recv().await, Ok(i));
        assert_eq!(c.recv().await, Ok(i));
    }
    send.await.unwrap();
}

#[tokio::test]
async fn a_customer_sees_only_messages_sent_after_it_connected() {
    let ch = Channel::unbounded();
    let mut early = ch.connect();
    ch.send(1).await.unwrap();
    let mut late = ch.connect();
    ch.send(2).await.unwrap();
    assert_eq!(early.recv().await, Ok(1));
    assert_eq!(early.recv().await, Ok(2));
    assert_eq!(late.recv().await, Ok(2));
    assert_eq!(late.try_recv(), Err(TryRecvError::Empty));
}

#[tokio::test(start_paused = true)]
async fn the_sender_waits_for_the_slowest_bounded_customer() {
    let ch = Channel::bounded(100);
    let mut fast = ch.connect();
    let mut slow = ch.connect_with(2);
    ch.send(1).await.unwrap();
    ch.send(2).await.unwrap();
    assert!(
        timeout(Duration::from_secs(1), ch.send(3)).await.is_err(),
        "slow is full"
    );
    assert_eq!(fast.try_recv(), Ok(1));
    assert_eq!(fast.try_recv(), Ok(2));
    assert_eq!(
        fast.try_recv(),
        Err(TryRecvError::Empty),
        "the timed-out send delivered nothing"
    );
    assert_eq!(slow.recv().await, Ok(1));
    ch.send(3).await.unwrap();
    assert!(matches!(ch.try_send(4), Err(TrySendError::Full(4))));
    assert_eq!(slow.recv().await, Ok(2));
    assert_eq!(slow.recv().await, Ok(3));
    assert_eq!(fast.recv().await, Ok(3));
}

#[tokio::test(start_paused = true)]
async fn unbounded_customers_never_make_the_sender_wait() {
    let ch = Channel::unbounded();
    let mut c = ch.connect();
    for i in 0..10_000 {
        ch.send(i).await.unwrap();
    }
    assert_eq!(c.len(), 10_000);
    assert_eq!(c.recv().await, Ok(0));
}

#[tokio::test(start_paused = true)]
async fn send_waits_for_a_customer_and_a_late_one_gets_the_message() {
    let ch = Channel::bounded(4);
    let sender = ch.clone();
    let send = tokio::spawn(async move { sender.send("first").await });
    sleep(Duration::from_secs(5)).await;
    assert!(!send.is_finished(), "send to nobody must wait");
    let mut c = ch.connect();
    send.await.unwrap().unwrap();
    assert_eq!(c.recv().await, Ok("first"));
}

#[tokio::test]
async fn no_customers_can_fail_instead_of_waiting() {
    let ch = Channel::builder()
        .capacity(4)
        .when_no_customers(NoCustomers::Fail)
        .build();
    assert_eq!(ch.send(1).await, Err(SendError::NoCustomers(1)));
    let mut c = ch.connect();
    ch.send(2).await.unwrap();
    assert_eq!(c.recv().await, Ok(2));
}

#[tokio::test]
async fn try_send_says_why() {
    let ch = Channel::bounded(1);
    assert!(matches!(ch.try_send(1), Err(TrySendError::NoCustomers(1))));
    let _c = ch.connect();
    ch.try_send(1).unwrap();
    let full = ch.try_send(2).unwrap_err();
    assert!(full.is_full());
    assert_eq!(full.to_string(), "a customer's buffer is full");
    ch.close();
    let closed = ch.try_send(3).unwrap_err();
    assert!(closed.is_closed());
    assert_eq!(closed.into_inner(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_blocked_recv_is_woken_by_closing_the_customer() {
    let ch = Channel::<u32>::bounded(4);
    let mut c = ch.connect();
    let closer = c.closer();
    let recv = tokio::spawn(async move { c.recv().await });
    sleep(Duration::from_secs(1)).await;
    assert!(!recv.is_finished());
    closer.close();
    assert_eq!(recv.await.unwrap(), Err(RecvError::Closed));
    assert_eq!(ch.customer_count(), 0, "a closed customer is disconnected");
}

#[tokio::test(start_paused = true)]
async fn a_blocked_recv_is_woken_by_closing_the_channel() {
    let ch = Channel::<u32>::bounded(4);
    let mut c = ch.connect();
    let recv = tokio::spawn(async move { c.recv().await });
    sleep(Duration::from_secs(1)).await;
    ch.close();
    assert_eq!(recv.await.unwrap(), Err(RecvError::Closed));
}

#[tokio::test]
async fn buffered_messages_are_drained_after_close() {
    let ch = Channel::bounded(8);
    let mut c = ch.connect();
    for i in 0..5 {
        ch.send(i).await.unwrap();
    }
    ch.close();
    assert!(ch.send(9).await.unwrap_err().is_closed());
    for i in 0..5 {
        assert_eq!(c.recv().await, Ok(i));
    }
    assert_eq!(c.recv().await, Err(RecvError::Closed));
    assert_eq!(c.recv().await, Err(RecvError::Closed));
    assert!(c.is_closed());
}

#[tokio::test]
async fn dropping_every_channel_handle_closes_it() {
    let ch = Channel::bounded(8);
    let clone = ch.clone();
    let mut c = ch.connect();
    clone.send(1).await.unwrap();
    drop(ch);
    clone.send(2).await.unwrap();
    drop(clone);
    let all: Vec<_> = (&mut c).collect().await;
    assert_eq!(all, [Ok(1), Ok(2)]);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_send_delivers_to_nobody() {
    let ch = Channel::bounded(1);
    let mut a = ch.connect_with(10);
    let mut b = ch.connect(); // capacity 1
    ch.send(0).await.unwrap();
    // b is full: the send waits, then is cancelled by the timeout...
    assert!(
        timeout(Duration::from_millis(50), ch.send(1))
            .await
            .is_err()
    );
    // ... or by losing a select.
    tokio::select! {
        _ = ch.send(2) => panic!("cannot complete while b is full"),
        () = sleep(Duration::from_millis(50)) => {}
    }
    assert_eq!(a.recv().await, Ok(0));
    assert_eq!(b.recv().await, Ok(0));
    ch.send(3).await.unwrap();
    assert_eq!(a.recv().await, Ok(3), "1 and 2 reached nobody, not even a");
    assert_eq!(b.recv().await, Ok(3));
}

#[tokio::test(start_paused = true)]
async fn a_customer_connecting_while_a_send_waits_does_not_deadlock() {
    let ch = Channel::bounded(1);
    let mut slow = ch.connect();
    ch.send(0).await.unwrap();
    let sender = ch.clone();
    let send = tokio::spawn(async move { sender.send(1).await });
    sleep(MS).await;
    let mut newcomer = ch.connect();
    assert_eq!(slow.recv().await, Ok(0));
    send.await.unwrap().unwrap();
    assert_eq!(slow.recv().await, Ok(1));
    assert_eq!(newcomer.recv().await, Ok(1));
}

#[tokio::test(start_paused = true)]
async fn customers_dropping_mid_send_release_the_sender() {
    let ch = Channel::bounded(1);
    let mut fast = ch.connect_with(100);
    let slow = ch.connect();
    let slow_too = ch.connect();
    ch.send(0).await.unwrap();
    let sender = ch.clone();
    let send = tokio::spawn(async move { sender.send(1).await });
    sleep(MS).await;
    drop(slow);
    sleep(MS).await;
    assert!(!send.is_finished(), "slow_too is still full");
    let mut slow_too = slow_too;
    slow_too.close();
    send.await.unwrap().unwrap();
    assert_eq!(fast.recv().await, Ok(0));
    assert_eq!(fast.recv().await, Ok(1));
    assert_eq!(slow_too.recv().await, Err(RecvError::Closed));
}

#[tokio::test]
async fn drop_oldest_reports_how_many_were_lost() {
    let ch = Channel::bounded(1);
    let mut lossy = ch
        .customer()
        .capacity(3)
        .overflow(Overflow::DropOldest)
        .connect();
    let _keepup = ch.customer().unbounded().connect();
    for i in 0..10 {
        ch.send(i).await.unwrap(); // never waits for `lossy`
    }
    assert_eq!(lossy.recv().await, Err(RecvError::Lagged(7)));
    assert_eq!(lossy.recv().await, Ok(7));
    assert_eq!(lossy.recv().await, Ok(8));
    assert_eq!(lossy.recv().await, Ok(9));
    assert_eq!(lossy.try_recv(), Err(TryRecvError::Empty));
}

#[tokio::test]
async fn disconnect_cuts_a_slow_customer_off_after_its_buffer() {
    let ch = Channel::unbounded();
    let mut slow = ch
        .customer()
        .capacity(2)
        .overflow(Overflow::Disconnect)
        .connect();
    for i in 0..5 {
        ch.send(i).await.unwrap();
    }
    assert_eq!(slow.recv().await, Ok(0));
    assert_eq!(slow.recv().await, Ok(1));
    assert_eq!(slow.recv().await, Err(RecvError::CutOff));
    assert_eq!(slow.recv().await, Err(RecvError::Closed));
    assert_eq!(ch.customer_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn reset_drops_the_buffer_and_releases_the_sender() {
    let ch = Channel::bounded(2);
    let mut c = ch.connect();
    ch.send(1).await.unwrap();
    ch.send(2).await.unwrap();
    let sender = ch.clone();
    let send = tokio::spawn(async move { sender.send(3).await });
    sleep(MS).await;
    c.reset();
    send.await.unwrap().unwrap();
    assert_eq!(c.recv().await, Ok(3));
}

#[tokio::test]
async fn customer_connect_makes_an_independent_customer() {
    let ch = Channel::unbounded();
    let mut a = ch.connect();
    ch.send(1).await.unwrap();
    let mut b = a.connect();
    ch.send(2).await.unwrap();
    assert_eq!(a.recv().await, Ok(1));
    assert_eq!(b.recv().await, Ok(2));
    assert_eq!(a.recv().await, Ok(2));
    assert_eq!(ch.customer_count(), 2);
    assert!(ch.has_customers());
}

/// A sender that waits for several full customers is woken once, by the last of them
/// to make room, not by every receive (each wake would find no room and park again).
#[test]
fn a_parked_sender_is_woken_once_by_the_last_full_customer() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let wakes = Arc::new(Count(AtomicUsize::new(0)));
    let waker = std::task::Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);

    let ch = Channel::bounded(2);
    let mut customers: Vec<_> = (0..3).map(|_| ch.connect()).collect();
    for i in 0..2 {
        ch.try_send(i).unwrap();
    }
    let mut send = Box::pin(ch.send(2));
    assert!(send.as_mut().poll(&mut cx).is_pending());
    // Every customer is full; each one's first receive makes room on it, but only
    // the last one's gives the sender room.
    for (k, c) in customers.iter_mut().enumerate() {
        assert_eq!(c.try_recv(), Ok(0));
        let expected = usize::from(k == 2);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            expected,
            "after customer {k}"
        );
    }
    assert_eq!(send.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
    for c in &mut customers {
        assert_eq!(c.try_recv(), Ok(1));
    }
    // A woken sender that finds room again does not stay flagged on anyone.
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    for c in &mut customers {
        assert_eq!(c.try_recv(), Ok(2));
    }
}

#[test]
#[should_panic(expected = "capacity must be greater than 0")]
fn a_zero_capacity_is_rejected() {
    let _ = Channel::<u8>::bounded(0);
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Channel<String>>();
    send::<servicekit::Customer<String>>();
    send_sync::<servicekit::channel::CustomerCloser<String>>();
}

/// Many senders and customers on a multi-thread runtime: each customer gets every
/// message of each sender, in that sender's order, whatever the capacities.
#[test]
fn stress_every_message_in_per_sender_order() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..30u64 {
        fastrand::seed(round);
        rt.block_on(async {
            let ch = Channel::bounded(1 + fastrand::usize(..8));
            let senders = 1 + fastrand::usize(..3);
            let per_sender = 2_000u64;
            let mut customers = Vec::new();
            for _ in 0..1 + fastrand::usize(..5) {
                let c = if fastrand::bool() {
                    ch.connect()
                } else {
                    ch.connect_with(1 + fastrand::usize(..200))
                };
                customers.push(tokio::spawn(async move {
                    let mut c = c;
                    let mut next = [0u64; 3];
                    let mut total = 0;
                    while let Ok((s, i)) = c.recv().await {
                        assert_eq!(i, next[s], "sender {s} out of order");
                        next[s] += 1;
                        total += 1;
                        if fastrand::u8(..50) == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    total
                }));
            }
            let mut producers = Vec::new();
            for s in 0..senders {
                let ch = ch.clone();
                producers.push(tokio::spawn(async move {
                    for i in 0..per_sender {
                        ch.send((s, i)).await.unwrap();
                    }
                }));
            }
            for p in producers {
                p.await.unwrap();
            }
            ch.close();
            for c in customers {
                assert_eq!(c.await.unwrap(), senders as u64 * per_sender);
            }
        });
    }
}

// ---- randomized model test ------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Connect { cap: Option<usize>, overflow: u8 },
    TrySend,
    Send,
    TryRecv(usize),
    Reset(usize),
    CloseCustomer(usize),
    Drop(usize),
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (proptest::option::of(1usize..4), 0u8..3)
            .prop_map(|(cap, overflow)| Op::Connect { cap, overflow }),
        5 => Just(Op::TrySend),
        2 => Just(Op::Send),
        6 => (0usize..6).prop_map(Op::TryRecv),
        1 => (0usize..6).prop_map(Op::Reset),
        1 => (0usize..6).prop_map(Op::CloseCustomer),
        1 => (0usize..6).prop_map(Op::Drop),
        1 => Just(Op::Close),
    ]
}

struct ModelCustomer {
    queue: VecDeque<u32>,
    cap: Option<usize>,
    overflow: Overflow,
    lagged: u64,
    cut: bool,
    /// Saw its end (`Closed` / `CutOff`), or was closed: only `Closed` from now on.
    done: bool,
    /// Closed or cut off: no longer connected.
    gone: bool,
}

#[derive(Default)]
struct Model {
    closed: bool,
    customers: Vec<Option<ModelCustomer>>,
    /// For `Channel::stats`: messages sent, losses reported to customers, cut-offs.
    sent: u64,
    lagged_reported: u64,
    cut_offs: u64,
}

impl Model {
    fn connected(&self) -> usize {
        self.customers.iter().flatten().filter(|c| !c.gone).count()
    }

    /// What `Channel::stats` should say: the slowest connected customer's backlog,
    /// and the losses reported plus those not yet seen.
    fn stats(&self) -> (u64, u64, u64, u64) {
        let live = || self.customers.iter().flatten().filter(|c| !c.gone);
        let depth = live().map(|c| c.queue.len() as u64).max().unwrap_or(0);
        let pending: u64 = live().map(|c| c.lagged).sum();
        (
            self.sent,
            depth,
            self.lagged_reported + pending,
            self.cut_offs,
        )
    }

    fn try_send(&mut self, msg: u32) -> Result<(), TrySendError<u32>> {
        if self.closed {
            return Err(TrySendError::Closed(msg));
        }
        if self.connected() == 0 {
            return Err(TrySendError::NoCustomers(msg));
        }
        let full = self.customers.iter().flatten().any(|c| {
            !c.done
                && c.overflow == Overflow::Block
                && c.cap.is_some_and(|cap| c.queue.len() >= cap)
        });
        if full {
            return Err(TrySendError::Full(msg));
        }
        for c in self
            .customers
            .iter_mut()
            .flatten()
            .filter(|c| !c.done && !c.cut)
        {
            if c.cap.is_some_and(|cap| c.queue.len() >= cap) {
                match c.overflow {
                    Overflow::DropOldest => {
                        c.queue.pop_front();
                        c.lagged += 1;
                    }
                    Overflow::Disconnect => {
                        c.cut = true;
                        self.cut_offs += 1;
                        continue;
                    }
                    Overflow::Block => unreachable!("checked above"),
                }
            }
            c.queue.push_back(msg);
        }
        self.sent += 1;
        Ok(())
    }

    fn try_recv(&mut self, i: usize) -> Result<u32, TryRecvError> {
        let closed = self.closed;
        let c = self.customers[i].as_mut().unwrap();
        if c.done {
            return Err(TryRecvError::Recv(RecvError::Closed));
        }
        if c.lagged > 0 {
            self.lagged_reported += c.lagged;
            return Err(TryRecvError::Recv(RecvError::Lagged(std::mem::take(
                &mut c.lagged,
            ))));
        }
        if let Some(m) = c.queue.pop_front() {
            return Ok(m);
        }
        if c.cut {
            c.done = true;
            c.gone = true;
            return Err(TryRecvError::Recv(RecvError::CutOff));
        }
        if closed {
            c.done = true;
            return Err(TryRecvError::Recv(RecvError::Closed));
        }
        Err(TryRecvError::Empty)
    }
}

fn run_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let ch = Channel::<u32>::bounded(2);
    let mut real: Vec<Option<servicekit::Customer<u32>>> = Vec::new();
    let mut model = Model::default();
    let mut next = 0u32;
    let pick = |n: usize, len: usize| if len == 0 { None } else { Some(n % len) };
    for op in ops {
        match op {
            Op::Connect { cap, overflow } => {
                let overflow = [Overflow::Block, Overflow::DropOldest, Overflow::Disconnect]
                    [overflow as usize];
                let b = ch.customer().overflow(overflow);
                let b = match cap {
                    Some(n) => b.capacity(n),
                    None => b.unbounded(),
                };
                real.push(Some(b.connect()));
                model.customers.push(Some(ModelCustomer {
                    queue: VecDeque::new(),
                    cap,
                    overflow,
                    lagged: 0,
                    cut: false,
                    done: false,
                    gone: false,
                }));
            }
            Op::TrySend | Op::Send => {
                next += 1;
                let expected = model.try_send(next);
                let got = ch.try_send(next);
                prop_assert_eq!(format!("{got:?}"), format!("{expected:?}"));
            }
            Op::TryRecv(n) => {
                let live: Vec<usize> = (0..real.len()).filter(|&i| real[i].is_some()).collect();
                if let Some(k) = pick(n, live.len()) {
                    let i = live[k];
                    let got = real[i].as_mut().unwrap().try_recv();
                    let expected = model.try_recv(i);
                    prop_assert_eq!(got, expected, "customer {}", i);
                }
            }
            Op::Reset(n) => {
                let live: Vec<usize> = (0..real.len()).filter(|&i| real[i].is_some()).collect();
                if let Some(k) = pick(n, live.len()) {
                    let i = live[k];
                    real[i].as_mut().unwrap().reset();
                    let c = model.customers[i].as_mut().unwrap();
                    c.queue.clear();
                    c.lagged = 0;
                }
            }
            Op::CloseCustomer(n) => {
                let live: Vec<usize> = (0..real.len()).filter(|&i| real[i].is_some()).collect();
                if let Some(k) = pick(n, live.len()) {
                    let i = live[k];
                    real[i].as_mut().unwrap().close();
                    let c = model.customers[i].as_mut().unwrap();
                    c.done = true;
                    c.gone = true;
                    c.queue.clear();
                }
            }
            Op::Drop(n) => {
                let live: Vec<usize> = (0..real.len()).filter(|&i| real[i].is_some()).collect();
                if let Some(k) = pick(n, live.len()) {
                    let i = live[k];
                    real[i] = None;
                    model.customers[i] = None;
                }
            }
            Op::Close => {
                ch.close();
                model.closed = true;
            }
        }
        prop_assert_eq!(ch.customer_count(), model.connected());
        let stats = ch.stats();
        prop_assert_eq!(
            (stats.sent, stats.depth, stats.lagged, stats.cut_off),
            model.stats(),
            "stats (sent, depth, lagged, cut off)"
        );
        prop_assert_eq!(stats.customers, model.connected());
        prop_assert_eq!(stats.closed, model.closed);
        for (i, c) in real.iter().enumerate() {
            if let (Some(c), Some(m)) = (c, &model.customers[i])
                && !m.done
                && m.lagged == 0
            {
                prop_assert_eq!(c.len(), m.queue.len(), "len of customer {}", i);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn channel_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_model(ops)?;
    }
}

//! Work `Queue`: exactly-once delivery, close/drain, and a randomized model test.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use servicekit::{Queue, queue};
use tokio::time::{sleep, timeout};

#[tokio::test]
async fn each_item_goes_to_exactly_one_receiver() {
    let q = Queue::bounded(8);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let rx = q.receiver();
        workers.push(tokio::spawn(async move { rx.collect::<Vec<u32>>().await }));
    }
    let mut senders = Vec::new();
    for s in 0..3u32 {
        let q = q.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..1000 {
                q.send(s * 1000 + i).await.unwrap();
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    drop(q); // every sender handle gone: closed
    let mut all: Vec<u32> = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..3000).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn close_lets_receivers_drain_then_wakes_them() {
    let q = Queue::bounded(4);
    let rx = q.receiver();
    let waiting = q.receiver();
    q.send(1).await.unwrap();
    q.send(2).await.unwrap();
    assert!(q.close());
    assert_eq!(q.send(3).await.unwrap_err().into_inner(), 3);
    assert!(matches!(q.try_send(4), Err(queue::TrySendError::Closed(4))));
    assert_eq!(rx.recv().await, Ok(1));
    assert_eq!(rx.recv().await, Ok(2));
    assert_eq!(rx.recv().await, Err(queue::RecvError));
    assert_eq!(waiting.try_recv(), Err(queue::TryRecvError::Closed));

    // A receiver blocked on an empty queue is woken by close.
    let q = Queue::<u8>::bounded(1);
    let rx = q.receiver();
    let blocked = tokio::spawn(async move { rx.recv().await });
    sleep(Duration::from_secs(1)).await;
    q.close();
    assert_eq!(blocked.await.unwrap(), Err(queue::RecvError));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_makes_send_wait_and_a_cancelled_send_queues_nothing() {
    let q = Queue::bounded(1);
    let rx = q.receiver();
    q.send(1).await.unwrap();
    assert!(q.try_send(2).unwrap_err().is_full());
    assert!(timeout(Duration::from_millis(10), q.send(2)).await.is_err());
    assert_eq!(rx.recv().await, Ok(1));
    assert_eq!(
        rx.try_recv(),
        Err(queue::TryRecvError::Empty),
        "the cancelled send queued nothing"
    );
}

#[derive(Debug, Clone)]
enum Op {
    TrySend,
    TryRecv(usize),
    Close,
    AddReceiver,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::TrySend),
        4 => (0usize..4).prop_map(Op::TryRecv),
        1 => Just(Op::Close),
        1 => Just(Op::AddReceiver),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    /// A bounded queue against a `VecDeque` with a capacity and a closed flag.
    #[test]
    fn queue_matches_the_reference_model(cap in 1usize..5, ops in proptest::collection::vec(op(), 1..60)) {
        let q = Queue::<u32>::bounded(cap);
        let mut receivers = vec![q.receiver()];
        let mut model: VecDeque<u32> = VecDeque::new();
        let mut closed = false;
        let mut next = 0u32;
        for op in ops {
            match op {
                Op::TrySend => {
                    next += 1;
                    let got = q.try_send(next);
                    let expected = if closed {
                        Err(queue::TrySendError::Closed(next))
                    } else if model.len() >= cap {
                        Err(queue::TrySendError::Full(next))
                    } else {
                        model.push_back(next);
                        Ok(())
                    };
                    prop_assert_eq!(got, expected);
                }
                Op::TryRecv(i) => {
                    let got = receivers[i % receivers.len()].try_recv();
                    let expected = match model.pop_front() {
                        Some(v) => Ok(v),
                        None if closed => Err(queue::TryRecvError::Closed),
                        None => Err(queue::TryRecvError::Empty),
                    };
                    prop_assert_eq!(got, expected);
                }
                Op::Close => {
                    prop_assert_eq!(q.close(), !closed);
                    closed = true;
                }
                Op::AddReceiver => receivers.push(q.receiver()),
            }
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.is_closed(), closed);
        }
    }
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Counter(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Counter {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A future under test, polled by hand with its own counting waker.
struct Probe<'a, O> {
    fut: std::pin::Pin<Box<dyn std::future::Future<Output = O> + 'a>>,
    wakes: std::sync::Arc<Counter>,
}

impl<'a, O> Probe<'a, O> {
    fn new(fut: impl std::future::Future<Output = O> + 'a) -> Self {
        Probe {
            fut: Box::pin(fut),
            wakes: std::sync::Arc::default(),
        }
    }

    fn woken(&self) -> bool {
        self.wakes.0.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// Polls once; the wake count starts again from zero.
    fn poll(&mut self) -> std::task::Poll<O> {
        self.wakes.0.store(0, std::sync::atomic::Ordering::SeqCst);
        let waker = std::task::Waker::from(self.wakes.clone());
        self.fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
    }
}

/// Two receivers wait on an empty queue of bound 2, then two items fill it (the
/// first receiver is woken).
fn two_waiters_then_full<'a>(
    q: &Queue<u32>,
    rx_a: &'a servicekit::queue::Receiver<u32>,
    rx_b: &'a servicekit::queue::Receiver<u32>,
) -> (RecvProbe<'a>, RecvProbe<'a>) {
    let mut a = Probe::new(rx_a.recv());
    let mut b = Probe::new(rx_b.recv());
    assert!(a.poll().is_pending() && b.poll().is_pending());
    q.try_send(1).unwrap();
    q.try_send(2).unwrap();
    (a, b)
}

/// One wake-up per operation: a receiver that takes an item while others wait and a
/// sender waits for room wakes the sender only, which then holds the receivers' turn.
/// Dropped before it runs, it passes that turn on.
#[test]
fn a_woken_sender_dropped_before_it_runs_passes_the_receivers_turn_on() {
    let q = Queue::bounded(2);
    let (rx_a, rx_b) = (q.receiver(), q.receiver());
    let (mut a, mut b) = two_waiters_then_full(&q, &rx_a, &rx_b);
    let mut s = Probe::new(q.send(3));
    assert!(s.poll().is_pending(), "full");
    assert_eq!(a.poll(), std::task::Poll::Ready(Ok(1)));
    assert!(s.woken(), "room: the sender is woken");
    assert!(!b.woken(), "one wake-up per operation");
    drop(s);
    assert!(
        b.woken(),
        "the dropped sender passed the receivers' turn on"
    );
    assert_eq!(b.poll(), std::task::Poll::Ready(Ok(2)));
}

/// The mirror image: a sender that used its turn with room left, while a receiver
/// waits, wakes the receiver only; dropped before it runs, the receiver passes the
/// senders' turn on.
#[test]
fn a_woken_receiver_dropped_before_it_runs_passes_the_senders_turn_on() {
    let q = Queue::bounded(2);
    let (rx_a, rx_b) = (q.receiver(), q.receiver());
    let (mut a, b) = two_waiters_then_full(&q, &rx_a, &rx_b);
    let mut s1 = Probe::new(q.send(3));
    let mut s2 = Probe::new(q.send(4));
    assert!(s1.poll().is_pending() && s2.poll().is_pending(), "full");
    assert_eq!(a.poll(), std::task::Poll::Ready(Ok(1)));
    assert!(s1.woken() && !s2.woken());
    assert_eq!(rx_a.try_recv(), Ok(2));
    // s1 sends with room left for s2 and b waiting: b is woken, not s2.
    assert_eq!(s1.poll(), std::task::Poll::Ready(Ok(())));
    assert!(b.woken() && !s2.woken(), "one wake-up per operation");
    drop(b);
    assert!(
        s2.woken(),
        "the dropped receiver passed the senders' turn on"
    );
    assert_eq!(s2.poll(), std::task::Poll::Ready(Ok(())));
    assert_eq!(q.len(), 2);
}

#[test]
fn a_woken_receiver_dropped_before_it_runs_passes_the_item_on() {
    let q = Queue::bounded(4);
    let (rx_a, rx_b) = (q.receiver(), q.receiver());
    let mut a = Probe::new(rx_a.recv());
    let mut b = Probe::new(rx_b.recv());
    assert!(a.poll().is_pending() && b.poll().is_pending());
    q.try_send(7).unwrap();
    assert!(a.woken(), "the first waiter is woken");
    assert!(!b.woken(), "one item wakes one receiver");
    drop(a);
    assert!(b.woken(), "the dropped waiter passed its turn on");
    assert_eq!(b.poll(), std::task::Poll::Ready(Ok(7)));
}

#[test]
fn a_woken_sender_dropped_before_it_runs_passes_the_room_on() {
    let q = Queue::bounded(1);
    let rx = q.receiver();
    q.try_send(0).unwrap();
    let mut a = Probe::new(q.send(1));
    let mut b = Probe::new(q.send(2));
    assert!(a.poll().is_pending() && b.poll().is_pending());
    assert_eq!(rx.try_recv(), Ok(0));
    assert!(a.woken() && !b.woken());
    drop(a);
    assert!(b.woken());
    assert!(matches!(b.poll(), std::task::Poll::Ready(Ok(()))));
    assert_eq!(rx.try_recv(), Ok(2), "the dropped send queued nothing");
}

#[tokio::test(start_paused = true)]
async fn a_burst_reaches_every_waiting_receiver() {
    // One wake-up at a time, passed on by each receiver that got an item: a burst of
    // items still reaches every receiver that was waiting.
    let q = Queue::unbounded();
    let mut waiting = Vec::new();
    for _ in 0..5 {
        let rx = q.receiver();
        waiting.push(tokio::spawn(async move { rx.recv().await }));
    }
    tokio::task::yield_now().await;
    for i in 0..5 {
        q.try_send(i).unwrap();
    }
    let mut got = Vec::new();
    for w in waiting {
        got.push(
            timeout(Duration::from_secs(1), w)
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_under_contention_with_cancelled_waits() {
    // 4 producers and 4 consumers on two workers; consumers give up waiting at random
    // (a cancelled `recv`) and producers too (a cancelled `send`, then retried): every
    // item still arrives exactly once and nothing hangs.
    for round in 0..10u64 {
        let q = Queue::bounded(1 + (round as usize % 4));
        let mut consumers = Vec::new();
        for c in 0..4u64 {
            let rx = q.receiver();
            consumers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                let mut n = c;
                loop {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let wait = Duration::from_micros(n >> 60);
                    match timeout(wait, rx.recv()).await {
                        Ok(Ok(v)) => got.push(v),
                        Ok(Err(queue::RecvError)) => return got,
                        Err(_) => {} // gave up waiting; try again
                    }
                }
            }));
        }
        let mut producers = Vec::new();
        for p in 0..4u64 {
            let q = q.clone();
            producers.push(tokio::spawn(async move {
                for i in 0..500 {
                    let v = p * 1000 + i;
                    while timeout(Duration::from_micros(i % 7), q.send(v))
                        .await
                        .is_err()
                    {}
                }
            }));
        }
        for p in producers {
            timeout(Duration::from_secs(20), p)
                .await
                .expect("producer hung")
                .unwrap();
        }
        drop(q);
        let mut all = Vec::new();
        for c in consumers {
            all.extend(
                timeout(Duration::from_secs(20), c)
                    .await
                    .expect("consumer hung")
                    .unwrap(),
            );
        }
        all.sort_unstable();
        let expected: Vec<u64> = (0..4)
            .flat_map(|p| (0..500).map(move |i| p * 1000 + i))
            .collect();
        assert_eq!(all, expected, "round {round}");
    }
}

#[derive(Debug, Clone)]
enum WaitOp {
    TrySend,
    TryRecv(usize),
    /// Start a `send` (polled once; kept if it has to wait).
    Send,
    /// Start a `recv` on receiver `i`.
    Recv(usize),
    /// Poll the `i`-th waiting send / recv again.
    PollSend(usize),
    PollRecv(usize),
    /// Drop the `i`-th waiting send / recv (cancel it).
    DropSend(usize),
    DropRecv(usize),
    Close,
    /// Poll every woken send / recv until none is woken (what the runtime does), then
    /// check that nothing is stranded.
    Settle,
}

fn wait_op() -> impl Strategy<Value = WaitOp> {
    prop_oneof![
        2 => Just(WaitOp::TrySend),
        2 => (0usize..3).prop_map(WaitOp::TryRecv),
        3 => Just(WaitOp::Send),
        3 => (0usize..3).prop_map(WaitOp::Recv),
        3 => (0usize..4).prop_map(WaitOp::PollSend),
        3 => (0usize..4).prop_map(WaitOp::PollRecv),
        1 => (0usize..4).prop_map(WaitOp::DropSend),
        1 => (0usize..4).prop_map(WaitOp::DropRecv),
        1 => Just(WaitOp::Close),
        2 => Just(WaitOp::Settle),
    ]
}

type SendProbe<'a> = Probe<'a, Result<(), servicekit::queue::SendError<u32>>>;
type RecvProbe<'a> = Probe<'a, Result<u32, queue::RecvError>>;

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    /// Waiting sends and receives, polled and cancelled in random order, against the
    /// reference model; after every step no item (or free slot) is left while every
    /// task that waits for one sleeps, and after `close` every waiter is woken.
    #[test]
    fn waiting_operations_match_the_model_and_never_strand_a_waiter(
        cap in 1usize..4,
        ops in proptest::collection::vec(wait_op(), 1..80),
    ) {
        let q = Queue::<u32>::bounded(cap);
        let receivers = [q.receiver(), q.receiver(), q.receiver()];
        let mut sends: Vec<(u32, SendProbe<'_>)> = Vec::new();
        let mut recvs: Vec<RecvProbe<'_>> = Vec::new();
        let mut model: VecDeque<u32> = VecDeque::new();
        let mut closed = false;
        let mut next = 0u32;
        // The model's answer to one poll of a send of `v`.
        let send_outcome = |model: &mut VecDeque<u32>, closed: bool, v: u32| {
            if closed {
                Some(Err(v))
            } else if model.len() < cap {
                model.push_back(v);
                Some(Ok(()))
            } else {
                None
            }
        };
        let recv_outcome = |model: &mut VecDeque<u32>, closed: bool| match model.pop_front() {
            Some(v) => Some(Ok(v)),
            None if closed => Some(Err(queue::RecvError)),
            None => None,
        };
        let mut ops: VecDeque<WaitOp> = ops.into();
        ops.push_back(WaitOp::Settle);
        while let Some(op) = ops.pop_front() {
            match op {
                WaitOp::TrySend => {
                    next += 1;
                    let expected = match send_outcome(&mut model, closed, next) {
                        Some(Ok(())) => Ok(()),
                        Some(Err(v)) => Err(queue::TrySendError::Closed(v)),
                        None => Err(queue::TrySendError::Full(next)),
                    };
                    prop_assert_eq!(q.try_send(next), expected);
                }
                WaitOp::TryRecv(i) => {
                    let expected = match recv_outcome(&mut model, closed) {
                        Some(Ok(v)) => Ok(v),
                        Some(Err(_)) => Err(queue::TryRecvError::Closed),
                        None => Err(queue::TryRecvError::Empty),
                    };
                    prop_assert_eq!(receivers[i].try_recv(), expected);
                }
                WaitOp::Send => {
                    next += 1;
                    let mut p = Probe::new(q.send(next));
                    let got = p.poll();
                    match send_outcome(&mut model, closed, next) {
                        Some(Ok(())) => prop_assert!(matches!(got, std::task::Poll::Ready(Ok(())))),
                        Some(Err(v)) => prop_assert!(matches!(got, std::task::Poll::Ready(Err(ref e)) if e.0 == v)),
                        None => {
                            prop_assert!(got.is_pending());
                            sends.push((next, p));
                        }
                    }
                }
                WaitOp::Recv(i) => {
                    let mut p = Probe::new(receivers[i].recv());
                    let got = p.poll();
                    match recv_outcome(&mut model, closed) {
                        Some(expected) => prop_assert_eq!(got, std::task::Poll::Ready(expected)),
                        None => {
                            prop_assert!(got.is_pending());
                            recvs.push(p);
                        }
                    }
                }
                WaitOp::PollSend(i) if !sends.is_empty() => {
                    let i = i % sends.len();
                    let v = sends[i].0;
                    let got = sends[i].1.poll();
                    match send_outcome(&mut model, closed, v) {
                        Some(Ok(())) => {
                            prop_assert!(matches!(got, std::task::Poll::Ready(Ok(()))));
                            sends.remove(i);
                        }
                        Some(Err(v)) => {
                            prop_assert!(matches!(got, std::task::Poll::Ready(Err(ref e)) if e.0 == v));
                            sends.remove(i);
                        }
                        None => prop_assert!(got.is_pending()),
                    }
                }
                WaitOp::PollRecv(i) if !recvs.is_empty() => {
                    let i = i % recvs.len();
                    let got = recvs[i].poll();
                    match recv_outcome(&mut model, closed) {
                        Some(expected) => {
                            prop_assert_eq!(got, std::task::Poll::Ready(expected));
                            recvs.remove(i);
                        }
                        None => prop_assert!(got.is_pending()),
                    }
                }
                WaitOp::DropSend(i) if !sends.is_empty() => {
                    sends.remove(i % sends.len());
                }
                WaitOp::DropRecv(i) if !recvs.is_empty() => {
                    recvs.remove(i % recvs.len());
                }
                WaitOp::Close => {
                    prop_assert_eq!(q.close(), !closed);
                    closed = true;
                }
                WaitOp::Settle => {
                    if let Some(i) = sends.iter().position(|(_, p)| p.woken()) {
                        ops.push_front(WaitOp::Settle);
                        ops.push_front(WaitOp::PollSend(i));
                    } else if let Some(i) = recvs.iter().position(Probe::woken) {
                        ops.push_front(WaitOp::Settle);
                        ops.push_front(WaitOp::PollRecv(i));
                    } else {
                        // Every woken waiter has run: none may be left waiting for
                        // what is there.
                        prop_assert!(model.is_empty() || recvs.is_empty(), "an item is left while every receiver sleeps");
                        prop_assert!(model.len() >= cap || sends.is_empty(), "room is left while every sender sleeps");
                    }
                }
                _ => {}
            }
            prop_assert_eq!(q.len(), model.len());
            // Liveness between steps: something to take (or room to use) never sits
            // beside waiters that are all asleep unless some woken waiter holds the
            // turn (one wake-up per operation: a woken sender passes the receivers'
            // turn on, and the reverse); a closed queue has woken every waiter.
            let someone_woken =
                recvs.iter().any(Probe::woken) || sends.iter().any(|(_, p)| p.woken());
            if (!model.is_empty() || closed) && !recvs.is_empty() {
                prop_assert!(someone_woken, "an item is left while every waiter sleeps");
            }
            if (model.len() < cap || closed) && !sends.is_empty() {
                prop_assert!(someone_woken, "room is left while every waiter sleeps");
            }
            if closed {
                prop_assert!(recvs.iter().all(Probe::woken) && sends.iter().all(|(_, p)| p.woken()));
            }
        }
    }
}

#[test]
fn nothing_leaks_items_left_in_the_queue_and_cancelled_sends_are_dropped() {
    use servicekit_tests::DropFlag;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let queued = Arc::new(AtomicBool::new(false));
    let cancelled = Arc::new(AtomicBool::new(false));
    let q = Queue::bounded(1);
    let rx = q.receiver();
    q.try_send(DropFlag(queued.clone())).unwrap();
    {
        // The queue is full: this send waits, then is cancelled with its item.
        let mut waiting = Probe::new(q.send(DropFlag(cancelled.clone())));
        assert!(waiting.poll().is_pending());
    }
    assert!(
        cancelled.load(Ordering::SeqCst),
        "a cancelled send drops its item"
    );
    assert!(!queued.load(Ordering::SeqCst));
    drop(q);
    assert!(
        !queued.load(Ordering::SeqCst),
        "a receiver can still drain it"
    );
    drop(rx);
    assert!(
        queued.load(Ordering::SeqCst),
        "the last handle drops what is left"
    );
}

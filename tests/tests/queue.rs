//! Work `Queue`: exactly-once delivery, close/drain, and a randomized model test.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use proptest::prelude::*;
use servicekit::{Queue, QueueClosed, QueueTryRecvError, QueueTrySendError};
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
    assert!(matches!(q.try_send(4), Err(QueueTrySendError::Closed(4))));
    assert_eq!(rx.recv().await, Ok(1));
    assert_eq!(rx.recv().await, Ok(2));
    assert_eq!(rx.recv().await, Err(QueueClosed));
    assert_eq!(waiting.try_recv(), Err(QueueTryRecvError::Closed));

    // A receiver blocked on an empty queue is woken by close.
    let q = Queue::<u8>::bounded(1);
    let rx = q.receiver();
    let blocked = tokio::spawn(async move { rx.recv().await });
    sleep(Duration::from_secs(1)).await;
    q.close();
    assert_eq!(blocked.await.unwrap(), Err(QueueClosed));
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
        Err(QueueTryRecvError::Empty),
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
                        Err(QueueTrySendError::Closed(next))
                    } else if model.len() >= cap {
                        Err(QueueTrySendError::Full(next))
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
                        None if closed => Err(QueueTryRecvError::Closed),
                        None => Err(QueueTryRecvError::Empty),
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

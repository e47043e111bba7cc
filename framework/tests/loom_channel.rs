//! Model checking of the channel's lock-free paths with loom: a blocking customer
//! publishes each receive from its local batch with one atomic increment (no lock)
//! of a word that also holds its "a sender waits on me" flag; a sender that finds no
//! room flags every full customer (the same word, one atomic `fetch_or` each) and is
//! woken when the last of them has received. Loom explores the interleavings: no lost wake-up (loom reports a deadlock
//! if every thread is blocked), no lost or reordered message. A `DropOldest` customer
//! batches the same way and works out its losses from the tail the sender publishes;
//! the event bus's `send_async` parks on such customers too.
//!
//! Run: `RUSTFLAGS="--cfg servicekit_loom" cargo test -p servicekit --release --test loom_channel`
//! (`.ci/run` does, with its own target directory).
#![cfg(servicekit_loom)]

use loom::future::block_on;
use loom::thread;
use servicekit::{Channel, channel::RecvError};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn backpressure_wakes_both_ways() {
    model(|| {
        let ch = Channel::<u32>::bounded(1);
        let mut c = ch.connect();
        let sender = thread::spawn(move || {
            block_on(async {
                for i in 0..3 {
                    ch.send(i).await.unwrap();
                }
            });
        });
        block_on(async {
            for i in 0..3 {
                assert_eq!(c.recv().await, Ok(i));
            }
            // The sender dropped its handle: closed.
            sender.join().unwrap();
            assert_eq!(c.recv().await, Err(RecvError::Closed));
        });
    });
}

#[test]
fn batched_receives_free_room_for_a_parked_sender() {
    model(|| {
        let ch = Channel::<u32>::bounded(2);
        let mut c = ch.connect();
        // Fill the buffer, so the customer takes a batch of 2 and the sender parks.
        ch.try_send(0).unwrap();
        ch.try_send(1).unwrap();
        let sender = thread::spawn(move || {
            block_on(async {
                ch.send(2).await.unwrap();
                ch.send(3).await.unwrap();
            });
        });
        block_on(async {
            for i in 0..4 {
                assert_eq!(c.recv().await, Ok(i));
            }
        });
        sender.join().unwrap();
    });
}

#[test]
fn closing_wakes_a_waiting_customer() {
    model(|| {
        let ch = Channel::<u32>::bounded(1);
        let mut c = ch.connect();
        let closer = thread::spawn(move || {
            ch.try_send(7).unwrap();
            ch.close();
        });
        block_on(async {
            assert_eq!(c.recv().await, Ok(7));
            assert_eq!(c.recv().await, Err(RecvError::Closed));
        });
        closer.join().unwrap();
    });
}

#[test]
fn a_receive_from_the_local_batch_wakes_a_parked_sender() {
    // The customer receives 1 from its batch, then waits for the sender thread to end
    // without calling `recv` again: only the lock-free publication of that receive
    // (and the parked-sender flag protocol) can let `send(3)` complete.
    model(|| {
        let ch = Channel::<u32>::bounded(2);
        let mut c = ch.connect();
        ch.try_send(0).unwrap();
        ch.try_send(1).unwrap();
        block_on(async {
            assert_eq!(c.recv().await, Ok(0)); // takes [0, 1], 1 stays in its batch
        });
        let sender = thread::spawn(move || {
            block_on(async {
                ch.send(2).await.unwrap();
                ch.send(3).await.unwrap(); // full until `c` receives 1
            });
        });
        block_on(async {
            assert_eq!(c.recv().await, Ok(1));
        });
        sender.join().unwrap();
        block_on(async {
            assert_eq!(c.recv().await, Ok(2));
            assert_eq!(c.recv().await, Ok(3));
        });
    });
}

#[test]
fn a_sender_is_woken_even_when_the_customer_keeps_a_batch() {
    // Bound 3: the customer takes [0, 1, 2], receives 0 and 1 and then waits for the
    // sender without receiving 2. The sender must still get the room it freed.
    model(|| {
        let ch = Channel::<u32>::bounded(3);
        let mut c = ch.connect();
        for i in 0..3 {
            ch.try_send(i).unwrap();
        }
        block_on(async {
            assert_eq!(c.recv().await, Ok(0));
        });
        let sender = thread::spawn(move || {
            block_on(async {
                ch.send(3).await.unwrap();
                ch.send(4).await.unwrap();
            });
        });
        block_on(async {
            assert_eq!(c.recv().await, Ok(1));
        });
        sender.join().unwrap();
        block_on(async {
            for i in 2..5 {
                assert_eq!(c.recv().await, Ok(i));
            }
        });
    });
}

#[test]
fn a_sender_parked_on_two_customers_is_woken_by_the_last_one() {
    // Bound 2, two customers, each with 1 left in its batch. `send(3)` finds both full
    // and parks on both; each customer frees its room with a lock-free receive from
    // its own thread. The sender must not wake before both have (it would find no
    // room), and must not sleep after both have.
    model(|| {
        let ch = Channel::<u32>::bounded(2);
        let mut a = ch.connect();
        let mut b = ch.connect();
        ch.try_send(0).unwrap();
        ch.try_send(1).unwrap();
        block_on(async {
            assert_eq!(a.recv().await, Ok(0));
            assert_eq!(b.recv().await, Ok(0));
        });
        ch.try_send(2).unwrap();
        let sender = thread::spawn(move || {
            block_on(async {
                ch.send(3).await.unwrap();
            });
        });
        let other = thread::spawn(move || {
            block_on(async {
                assert_eq!(b.recv().await, Ok(1));
            });
            b
        });
        block_on(async {
            assert_eq!(a.recv().await, Ok(1));
        });
        sender.join().unwrap();
        let mut b = other.join().unwrap();
        block_on(async {
            for i in 2..4 {
                assert_eq!(a.recv().await, Ok(i));
                assert_eq!(b.recv().await, Ok(i));
            }
        });
    });
}

/// A `DropOldest` customer receives from its batch without the lock and works out
/// what it lost from the published tail: whatever the interleaving, it reports every
/// loss (received + lost = sent), in order, and never loses the newest message.
#[test]
fn a_drop_oldest_customer_accounts_for_every_message() {
    use servicekit::channel::{Overflow, TryRecvError};
    model(|| {
        let ch = Channel::<u32>::unbounded();
        let mut c = ch
            .customer()
            .capacity(2)
            .overflow(Overflow::DropOldest)
            .connect();
        let sender = thread::spawn(move || {
            for i in 0..4 {
                ch.try_send(i).unwrap();
            }
        });
        let (mut got, mut lost, mut last) = (Vec::new(), 0, None);
        loop {
            match c.try_recv() {
                Ok(v) => {
                    assert!(last.is_none_or(|l| v > l), "out of order");
                    last = Some(v);
                    got.push(v);
                }
                Err(TryRecvError::Recv(RecvError::Lagged(n))) => lost += n,
                Err(TryRecvError::Recv(RecvError::Closed)) => break,
                Err(TryRecvError::Empty) => thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
        sender.join().unwrap();
        assert_eq!(got.len() as u64 + lost, 4);
        assert_eq!(got.last(), Some(&3));
    });
}

/// The event bus's `send_async` waits for a full `DropOldest` subscription, which
/// receives from its batch without the lock: no lost wake-up, nothing lagged.
#[test]
fn send_async_is_woken_by_a_batched_drop_oldest_subscription() {
    model(|| {
        let bus = servicekit::bus::EventBus::with_capacity(1);
        let mut sub = bus.subscribe::<u32>();
        let sender = thread::spawn(move || {
            block_on(async {
                for i in 0..3u32 {
                    bus.send_async(i).await;
                }
            });
        });
        block_on(async {
            for i in 0..3u32 {
                assert_eq!(sub.recv().await.map(|e| *e), Ok(i));
            }
        });
        sender.join().unwrap();
    });
}

/// Two senders parked on the same full customer, which receives from its batch
/// without the lock: whichever order they park and it receives in, both are woken
/// (a sender whose park finds the customer no longer full clears its flag, and must
/// then wake the other sender, whom that flag would have released).
#[test]
fn two_parked_senders_are_both_woken() {
    model(|| {
        let ch = Channel::<u32>::bounded(2);
        let mut c = ch.connect();
        ch.try_send(0).unwrap();
        ch.try_send(1).unwrap();
        let senders: Vec<_> = [[2u32, 4], [3, 5]]
            .into_iter()
            .map(|vs| {
                let ch = ch.clone();
                thread::spawn(move || {
                    block_on(async {
                        for v in vs {
                            ch.send(v).await.unwrap();
                        }
                    })
                })
            })
            .collect();
        drop(ch);
        block_on(async {
            let mut got = Vec::new();
            for _ in 0..6 {
                got.push(c.recv().await.unwrap());
            }
            got.sort();
            assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        });
        for s in senders {
            s.join().unwrap();
        }
    });
}

/// The same with the event bus's `send_async` on a batched drop-oldest subscription:
/// both are woken, and waiting for room loses nothing.
#[test]
fn two_send_async_on_one_full_subscription() {
    use servicekit::bus::RecvError as BusRecvError;
    model(|| {
        let bus = servicekit::bus::EventBus::with_capacity(1);
        let mut sub = bus.subscribe::<u32>();
        bus.send(0u32);
        let senders: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|v| {
                let bus = bus.clone();
                thread::spawn(move || block_on(bus.send_async(v)))
            })
            .collect();
        block_on(async {
            let (mut got, mut lost) = (0u64, 0u64);
            while got + lost < 3 {
                match sub.recv().await {
                    Ok(_) => got += 1,
                    Err(BusRecvError::Lagged(n)) => lost += n,
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!(lost, 0);
        });
        for s in senders {
            s.join().unwrap();
        }
    });
}

//! The event bus: routing, overflow, scopes, state, tasks, request/response, and the
//! runner's bus.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use servicekit::bus::{
    self, EventBus, NoScope, Overflow, RecvError, RequestError, StateError, TryRecvError, ctx,
};
use servicekit::{Event, Runner, Service, ServiceContext, ServiceState};
use tokio::time::sleep;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn handles_are_send_and_sync() {
    assert_send_sync::<EventBus>();
    assert_send_sync::<bus::Subscription<String>>();
}

/// Counts drops of the values it is attached to.
#[derive(Debug)]
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug, PartialEq)]
struct Wrapper(u32);

#[test]
fn events_are_routed_by_exact_type() {
    let bus = EventBus::new();
    let mut inner = bus.subscribe::<u32>();
    let mut wrapped = bus.subscribe::<Wrapper>();
    bus.send(Wrapper(1));
    bus.send(2u32);
    bus.send(3u64); // nobody subscribed to u64
    assert_eq!(*wrapped.try_recv().unwrap(), Wrapper(1));
    assert_eq!(wrapped.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(*inner.try_recv().unwrap(), 2);
    assert_eq!(inner.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn a_subscription_sees_only_events_sent_after_it_was_made() {
    let bus = EventBus::new();
    let mut early = bus.subscribe::<u32>();
    bus.send(1u32);
    let mut late = bus.subscribe::<u32>();
    bus.send(2u32);
    assert_eq!(*early.try_recv().unwrap(), 1);
    assert_eq!(*early.try_recv().unwrap(), 2);
    assert_eq!(*late.try_recv().unwrap(), 2);
    assert_eq!(late.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn an_event_without_subscribers_is_dropped_at_once() {
    let bus = EventBus::new();
    let drops = Arc::new(AtomicUsize::new(0));
    bus.send(Counted(drops.clone()));
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    // A subscription to another type does not keep it either.
    let _other = bus.subscribe::<u8>();
    bus.send(Counted(drops.clone()));
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    // Nor does a subscription that was dropped.
    drop(bus.subscribe::<Counted>());
    bus.send(Counted(drops.clone()));
    assert_eq!(drops.load(Ordering::SeqCst), 3);
}

#[test]
fn an_event_is_shared_between_subscribers_not_copied() {
    let bus = EventBus::new();
    let mut a = bus.subscribe::<String>();
    let mut b = bus.subscribe::<String>();
    bus.send("big".repeat(1000));
    let (x, y) = (a.try_recv().unwrap(), b.try_recv().unwrap());
    assert!(Arc::ptr_eq(&x, &y));
}

#[test]
fn lag_is_counted_exactly() {
    let bus = EventBus::with_capacity(4);
    let mut slow = bus.subscribe::<u32>();
    let mut roomy = bus.subscription::<u32>().capacity(100).subscribe();
    for i in 0..10u32 {
        bus.send(i);
    }
    assert_eq!(slow.try_recv(), Err(TryRecvError::Lagged(6)));
    for i in 6..10 {
        assert_eq!(*slow.try_recv().unwrap(), i);
    }
    assert_eq!(slow.try_recv(), Err(TryRecvError::Empty));
    // Lag is counted again from zero after it was reported.
    for i in 10..15u32 {
        bus.send(i);
    }
    assert_eq!(slow.try_recv(), Err(TryRecvError::Lagged(1)));
    assert_eq!(*slow.try_recv().unwrap(), 11);
    // The roomy one lost nothing.
    for i in 0..15 {
        assert_eq!(*roomy.try_recv().unwrap(), i);
    }
}

#[tokio::test]
async fn a_disconnect_subscription_is_cut_off_after_what_it_held() {
    let bus = EventBus::new();
    let mut sub = bus
        .subscription::<u32>()
        .capacity(2)
        .overflow(Overflow::Disconnect)
        .subscribe();
    for i in 0..5u32 {
        bus.send(i);
    }
    assert_eq!(*sub.recv().await.unwrap(), 0);
    assert_eq!(*sub.recv().await.unwrap(), 1);
    assert_eq!(sub.recv().await, Err(RecvError::CutOff));
    assert_eq!(sub.recv().await, Err(RecvError::Closed));
}

#[test]
fn a_dropped_subscription_frees_what_it_held_at_once() {
    let bus = EventBus::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let sub = bus.subscribe::<Counted>();
    let mut other = bus.subscribe::<Counted>();
    for _ in 0..3 {
        bus.send(Counted(drops.clone()));
    }
    // Held by both: dropping one frees nothing yet.
    drop(sub);
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(other.try_recv().unwrap());
    drop(other);
    assert_eq!(drops.load(Ordering::SeqCst), 3);
    assert_eq!(bus.subscriber_count::<Counted>(), 0);
}

#[tokio::test]
async fn send_async_waits_for_room_instead_of_lagging() {
    let bus = EventBus::with_capacity(2);
    let mut lossy = bus.subscribe::<u32>();
    let mut cut = bus
        .subscription::<u32>()
        .overflow(Overflow::Disconnect)
        .subscribe();
    let sender = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for i in 0..100u32 {
                bus.send_async(i).await;
            }
        })
    };
    for i in 0..100u32 {
        assert_eq!(*lossy.recv().await.unwrap(), i);
        assert_eq!(*cut.recv().await.unwrap(), i);
    }
    sender.await.unwrap();
}

#[tokio::test]
async fn a_cancelled_send_async_delivered_to_nobody() {
    let bus = EventBus::with_capacity(1);
    let mut sub = bus.subscribe::<u32>();
    bus.send_async(1u32).await;
    let waiting = tokio::time::timeout(Duration::from_millis(20), bus.send_async(2u32)).await;
    assert!(waiting.is_err(), "send_async did not wait for room");
    assert_eq!(*sub.recv().await.unwrap(), 1);
    assert_eq!(sub.try_recv(), Err(TryRecvError::Empty));
}

#[tokio::test]
async fn send_async_is_released_when_the_full_subscription_leaves_or_is_cut_off() {
    let bus = EventBus::with_capacity(1);
    let full = bus.subscribe::<u32>();
    bus.send(1u32);
    let waiting = tokio::spawn({
        let bus = bus.clone();
        async move { bus.send_async(2u32).await }
    });
    sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished());
    drop(full);
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("released by the drop")
        .unwrap();

    // A `Disconnect` subscription that a plain `send` cuts off holds nobody back.
    let mut cut = bus
        .subscription::<u32>()
        .overflow(Overflow::Disconnect)
        .subscribe();
    bus.send(1u32);
    let waiting = tokio::spawn({
        let bus = bus.clone();
        async move { bus.send_async(2u32).await }
    });
    sleep(Duration::from_millis(20)).await;
    assert!(!waiting.is_finished());
    bus.send(3u32); // cuts `cut` off
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("released by the cut")
        .unwrap();
    assert_eq!(*cut.recv().await.unwrap(), 1);
    assert_eq!(cut.recv().await, Err(RecvError::CutOff));
}

#[tokio::test]
async fn closing_the_bus_drains_then_ends_every_subscription() {
    let bus = EventBus::new();
    let sub = bus.subscribe::<u32>();
    for i in 0..3u32 {
        bus.send(i);
    }
    assert!(bus.close());
    assert!(!bus.close());
    bus.send(99u32); // dropped
    let got: Vec<u32> = sub.map(|e| *e.unwrap()).collect().await;
    assert_eq!(got, [0, 1, 2]);
    let mut late = bus.subscribe::<u32>();
    assert_eq!(late.recv().await, Err(RecvError::Closed));
}

#[tokio::test]
async fn dropping_every_bus_handle_ends_the_subscriptions() {
    let bus = EventBus::new();
    let mut sub = bus.subscribe::<u32>();
    bus.send(7u32);
    drop(bus);
    assert_eq!(*sub.recv().await.unwrap(), 7);
    assert_eq!(sub.recv().await, Err(RecvError::Closed));
}

#[tokio::test]
async fn outside_a_scope_ctx_says_so_and_does_not_panic() {
    assert_eq!(ctx::send(1u8), Err(NoScope));
    assert!(matches!(ctx::subscribe::<u8>(), Err(NoScope)));
    assert!(matches!(ctx::spawn(async {}), Err(NoScope)));
    assert!(matches!(ctx::bus(), Err(NoScope)));
    assert!(matches!(ctx::name(), Err(NoScope)));
    assert_eq!(ctx::state::<u8>().unwrap_err(), StateError::NoScope);
    // Nor in a task spawned with tokio's own spawn from inside a scope.
    let outside = bus::scope("app", async {
        tokio::spawn(async { ctx::send(1u8) }).await.unwrap()
    })
    .await;
    assert_eq!(outside, Err(NoScope));
}

#[tokio::test]
async fn sibling_scopes_are_isolated_and_a_shared_scope_shares() {
    let got = bus::scope("app", async {
        let mut app = ctx::subscribe::<&'static str>().unwrap();
        bus::scope("a", async {
            let mut mine = ctx::subscribe::<&'static str>().unwrap();
            ctx::send("from a").unwrap();
            assert_eq!(*mine.try_recv().unwrap(), "from a");
        })
        .await;
        bus::scope("b", async {
            let mut mine = ctx::subscribe::<&'static str>().unwrap();
            ctx::send("from b").unwrap();
            // Only b's own event: nothing from a, which ended.
            assert_eq!(*mine.try_recv().unwrap(), "from b");
            assert_eq!(mine.try_recv(), Err(TryRecvError::Empty));
        })
        .await;
        bus::scope("c", async { ctx::send("from c").unwrap() })
            .shared()
            .await;
        let mut got = Vec::new();
        while let Ok(e) = app.try_recv() {
            got.push(*e);
        }
        got
    })
    .await;
    assert_eq!(got, ["from c"]);
}

#[tokio::test]
async fn at_scope_exit_subscriptions_drain_then_end_and_tasks_are_joined() {
    let (seen, sub_after) = bus::scope("app", async {
        let mut sub = ctx::subscribe::<u32>().unwrap();
        let reader = ctx::spawn(async move {
            let mut seen = Vec::new();
            while let Some(e) = sub.next().await {
                seen.push(*e.unwrap());
            }
            seen
        })
        .unwrap();
        for i in 0..10u32 {
            ctx::send(i).unwrap();
        }
        (reader, ctx::subscribe::<u8>().unwrap())
    })
    .await;
    // The scope returned only after its task ended: the reader has finished.
    assert!(seen.is_finished());
    assert_eq!(seen.await.unwrap(), (0..10).collect::<Vec<_>>());
    assert!(sub_after.is_closed());
}

#[tokio::test(start_paused = true)]
async fn tasks_still_running_at_the_deadline_are_aborted_and_nothing_leaks() {
    let drops = Arc::new(AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let handles = bus::scope("app", {
        let drops = drops.clone();
        async move {
            let mut handles = Vec::new();
            for _ in 0..10 {
                let guard = Counted(drops.clone());
                handles.push(
                    ctx::spawn(async move {
                        let _guard = guard;
                        std::future::pending::<()>().await
                    })
                    .unwrap(),
                );
            }
            // A task that finishes in time is joined, not aborted.
            let quick = ctx::spawn(async {
                sleep(Duration::from_millis(50)).await;
                "done"
            })
            .unwrap();
            (handles, quick)
        }
    })
    .join_timeout(Duration::from_secs(2))
    .await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    // Every future was dropped before the scope returned.
    assert_eq!(drops.load(Ordering::SeqCst), 10);
    for h in handles.0 {
        assert!(h.await.unwrap_err().is_cancelled());
    }
    assert_eq!(handles.1.await.unwrap(), "done");
}

/// Waits (up to 100 ms) for the one task holding a `Counted` to be aborted: an abort
/// drops the task's future on the runtime's next turn, not at once.
async fn assert_aborted(drops: &AtomicUsize) {
    for _ in 0..100 {
        if drops.load(Ordering::SeqCst) == 1 {
            break;
        }
        sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the scope's task was aborted"
    );
}

#[tokio::test]
async fn a_dropped_or_panicking_scope_aborts_its_tasks_and_closes_its_bus() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let scope = bus::scope("doomed", {
        let drops = drops.clone();
        async move {
            let guard = Counted(drops);
            ctx::spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await
            })
            .unwrap();
            let _ = tx.send(ctx::subscribe::<u8>().unwrap());
            std::future::pending::<()>().await
        }
    });
    let running = tokio::spawn(scope);
    let mut sub = rx.await.unwrap();
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    assert_eq!(sub.recv().await, Err(RecvError::Closed));
    assert_aborted(&drops).await;

    let drops = Arc::new(AtomicUsize::new(0));
    let panicking = tokio::spawn(bus::scope("panics", {
        let drops = drops.clone();
        async move {
            let guard = Counted(drops);
            ctx::spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await
            })
            .unwrap();
            tokio::task::yield_now().await;
            panic!("the scope's body panicked");
        }
    }));
    assert!(panicking.await.unwrap_err().is_panic());
    assert_aborted(&drops).await;
}

#[tokio::test]
async fn state_nearest_scope_wins_and_is_replaced_by_copy() {
    #[derive(Debug, Clone, PartialEq)]
    struct Config {
        region: &'static str,
        retries: u32,
    }
    bus::scope("app", async {
        let cfg = ctx::state::<Config>().unwrap();
        assert_eq!(cfg.retries, 3);
        assert_eq!(*ctx::state::<u64>().unwrap(), 7);
        let updated = Config {
            retries: 10,
            ..(*cfg).clone()
        };
        bus::scope("inner", async {
            let inner = ctx::state::<Config>().unwrap();
            assert_eq!((inner.region, inner.retries), ("eu", 10));
            // Other types still come from the parent; tasks see the same.
            assert_eq!(*ctx::state::<u64>().unwrap(), 7);
            let in_task = ctx::spawn(async { ctx::state::<Config>().unwrap().retries })
                .unwrap()
                .await
                .unwrap();
            assert_eq!(in_task, 10);
        })
        .with_state(updated)
        .await;
        // The parent's value was not changed.
        assert_eq!(ctx::state::<Config>().unwrap().retries, 3);
        let missing = ctx::state::<String>().unwrap_err();
        assert_eq!(
            missing.to_string(),
            "no state of type `alloc::string::String` in scope `app` or its parents"
        );
    })
    .with_state(Config {
        region: "eu",
        retries: 1,
    })
    .with_state(Config {
        region: "eu",
        retries: 3,
    })
    .with_state(7u64)
    .await;
}

#[derive(Debug)]
struct Query {
    id: u64,
    text: String,
}

#[derive(Debug)]
struct Answer {
    id: u64,
    text: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_their_own_response() {
    let bus = EventBus::with_capacity(1024);
    tokio::spawn(bus.respond(|q: Arc<Query>| async move {
        // Answer out of order.
        sleep(Duration::from_micros(fastrand::u64(0..500))).await;
        Answer {
            id: q.id,
            text: q.text.to_uppercase(),
        }
    }));
    let requests: Vec<_> = (0..200u64)
        .map(|id| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let text = format!("query {id}");
                let r = bus
                    .request::<Query, Answer>(
                        Query {
                            id,
                            text: text.clone(),
                        },
                        |a| a.id == id,
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
                assert_eq!(r.id, id);
                assert_eq!(r.text, text.to_uppercase());
            })
        })
        .collect();
    for r in requests {
        r.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_without_an_answer_times_out_naming_its_type() {
    let bus = EventBus::new();
    let err = bus
        .request::<Query, Answer>(
            Query {
                id: 1,
                text: String::new(),
            },
            |_| true,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::NoResponder { .. }));
    assert_eq!(err.to_string(), "no subscriber for request `bus::Query`");

    // A responder that never answers this id.
    let _silent = bus.subscribe::<Query>();
    let started = tokio::time::Instant::now();
    let err = bus
        .request::<Query, Answer>(
            Query {
                id: 2,
                text: String::new(),
            },
            |a| a.id == 2,
            Duration::from_secs(3),
        )
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(
        err,
        RequestError::Timeout {
            request: "bus::Query",
            after: Duration::from_secs(3)
        }
    );
    assert!(
        err.to_string()
            .contains("`bus::Query` got no response within 3s")
    );
}

#[tokio::test]
async fn a_failing_subscriber_does_not_affect_the_bus_or_the_others() {
    let got = bus::scope("app", async {
        let mut panicky = ctx::subscribe::<u32>().unwrap();
        let mut failing = ctx::subscribe::<u32>().unwrap();
        let mut steady = ctx::subscribe::<u32>().unwrap();
        let p = ctx::spawn(async move {
            while let Some(Ok(e)) = panicky.next().await {
                assert!(*e != 3, "panics at 3");
            }
        })
        .unwrap();
        let f = ctx::spawn(async move {
            while let Some(Ok(e)) = failing.next().await {
                if *e == 2 {
                    return Err(format!("cannot handle {e}"));
                }
            }
            Ok(())
        })
        .unwrap();
        let s = ctx::spawn(async move {
            let mut seen = Vec::new();
            while let Some(Ok(e)) = steady.next().await {
                seen.push(*e);
            }
            seen
        })
        .unwrap();
        for i in 0..6u32 {
            ctx::send(i).unwrap();
            tokio::task::yield_now().await;
        }
        (p, f, s)
    })
    .await;
    assert!(got.0.await.unwrap_err().is_panic());
    assert_eq!(got.1.await.unwrap(), Err("cannot handle 2".to_string()));
    assert_eq!(got.2.await.unwrap(), [0, 1, 2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_responder_goes_on_after_its_handler_panicked() {
    let bus = EventBus::new();
    tokio::spawn(bus.respond(|q: Arc<Query>| async move {
        assert!(q.id != 13, "unlucky");
        Answer {
            id: q.id,
            text: String::new(),
        }
    }));
    let t = Duration::from_secs(1);
    let ask = |id| {
        bus.request::<Query, Answer>(
            Query {
                id,
                text: String::new(),
            },
            move |a| a.id == id,
            t,
        )
    };
    assert!(matches!(ask(13).await, Err(RequestError::Timeout { .. })));
    assert_eq!(ask(14).await.unwrap().id, 14);
}

#[tokio::test(start_paused = true)]
async fn services_run_in_the_runner_scope_and_see_its_events() {
    let bus = EventBus::new();
    let mut greetings = bus.subscribe::<String>();
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let watcher = {
        let failures = failures.clone();
        Service::new("watcher", move |ctx: ServiceContext| {
            let failures = failures.clone();
            async move {
                let mut events = ctx.bus().subscribe::<Event>();
                ctx.ready();
                while let Some(Some(Ok(ev))) = ctx.until_shutdown(events.next()).await {
                    if let Event::Failed { service, error } = &*ev {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{service}: {}", error.run()));
                    }
                }
            }
        })
    };
    let flaky = Service::new("flaky", |ctx: ServiceContext| async move {
        // Inside the runner's scope, from the body and from a tied task.
        ctx::send(format!("hello from run {}", ctx.run())).unwrap();
        let run = ctx.run();
        ctx.spawn(async move {
            ctx::send(format!("tied task of run {run}")).unwrap();
        });
        sleep(Duration::from_millis(10)).await;
        Err::<(), _>("broken")
    })
    .after(["watcher"])
    .backoff(Duration::from_millis(100), Duration::from_millis(100))
    .max_restarts(1, Duration::from_secs(60))
    .on_give_up(servicekit::OnGiveUp::Ignore);
    let handle = Runner::new()
        .signals(false)
        .bus(bus.clone())
        .service(watcher)
        .service(flaky)
        .start()
        .await
        .unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.status()[1].state, ServiceState::Failed);
    handle.shutdown();
    let _ = handle.wait().await;
    assert_eq!(*failures.lock().unwrap(), ["flaky: 1", "flaky: 2"]);
    let mut got = Vec::new();
    while let Ok(g) = greetings.try_recv() {
        got.push((*g).clone());
    }
    got.sort();
    assert_eq!(
        got,
        [
            "hello from run 1",
            "hello from run 2",
            "tied task of run 1",
            "tied task of run 2"
        ]
    );
    // A given bus stays open after the runner.
    assert!(!bus.is_closed());
}

#[tokio::test(start_paused = true)]
async fn the_runner_publishes_every_lifecycle_event_on_its_bus() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let monitor = {
        let seen = seen.clone();
        Service::new("monitor", move |ctx: ServiceContext| {
            let seen = seen.clone();
            async move {
                let mut events = ctx.bus().subscribe::<Event>();
                ctx.ready();
                let record = |ev: &Event| {
                    let line = match ev {
                        Event::State { service, state } if &**service == "worker" => {
                            state.to_string()
                        }
                        Event::Ready { service } if &**service == "worker" => "ready".into(),
                        Event::Failed { service, error } if &**service == "worker" => {
                            format!("failed run {}", error.run())
                        }
                        _ => return,
                    };
                    seen.lock().unwrap().push(line);
                };
                while let Some(Some(ev)) = ctx.until_shutdown(events.next()).await {
                    record(&ev.unwrap());
                }
                // `worker` depends on this service, so it stopped first: what it
                // published is buffered here.
                while let Ok(ev) = events.try_recv() {
                    record(&ev);
                }
            }
        })
    };
    let worker = Service::new("worker", |ctx: ServiceContext| async move {
        ctx.ready();
        if ctx.run() == 1 {
            return Err("first run fails");
        }
        ctx.shutdown_requested().await;
        Ok(())
    })
    .after(["monitor"])
    .backoff(Duration::from_millis(100), Duration::from_millis(100));
    let handle = Runner::new()
        .signals(false)
        .service(monitor)
        .service(worker)
        .start()
        .await
        .unwrap();
    sleep(Duration::from_secs(1)).await;
    handle.shutdown();
    handle.wait().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "running",
            "ready",
            "failed run 1",
            "restarting",
            "running",
            "ready",
            "stopping",
            "stopped"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_runner_bus_closes_when_the_runner_ends_and_its_tasks_are_joined() {
    let bus_seen = Arc::new(std::sync::Mutex::new(None::<EventBus>));
    let drops = Arc::new(AtomicUsize::new(0));
    let svc = {
        let bus_seen = bus_seen.clone();
        let drops = drops.clone();
        Service::new("svc", move |ctx: ServiceContext| {
            let bus_seen = bus_seen.clone();
            let drops = drops.clone();
            async move {
                *bus_seen.lock().unwrap() = Some(ctx::bus().unwrap());
                let guard = Counted(drops);
                // A scope task that outlives the service: joined, then aborted at the
                // runner's end.
                ctx::spawn(async move {
                    let _guard = guard;
                    std::future::pending::<()>().await
                })
                .unwrap();
                ctx.shutdown_requested().await;
            }
        })
    };
    let started = tokio::time::Instant::now();
    let handle = Runner::new()
        .signals(false)
        .shutdown_timeout(Duration::from_secs(2))
        .service(svc)
        .start()
        .await
        .unwrap();
    sleep(Duration::from_millis(10)).await;
    let bus = bus_seen.lock().unwrap().clone().unwrap();
    let mut events = bus.subscribe::<Event>();
    handle.shutdown();
    handle.wait().await.unwrap();
    assert!(bus.is_closed());
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(started.elapsed() >= Duration::from_secs(2));
    let mut states = Vec::new();
    while let Some(ev) = events.next().await {
        if let Event::State { state, .. } = &*ev.unwrap() {
            states.push(*state);
        }
    }
    assert_eq!(states, [ServiceState::Stopping, ServiceState::Stopped]);
}

#[tokio::test(start_paused = true)]
async fn services_see_the_state_of_the_scope_their_runner_started_in() {
    #[derive(Debug)]
    struct Region(&'static str);
    let seen = Arc::new(std::sync::Mutex::new(None));
    let svc = {
        let seen = seen.clone();
        Service::without_context("reader", move || {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap() = Some(ctx::state::<Region>().map(|r| r.0));
            }
        })
    };
    bus::scope("app", async {
        Runner::new()
            .signals(false)
            .service(svc)
            .run()
            .await
            .unwrap();
    })
    .with_state(Region("eu-west-1"))
    .await;
    assert_eq!(*seen.lock().unwrap(), Some(Ok("eu-west-1")));
}

#[tokio::test]
async fn a_runner_given_its_scope_bus_shares_it() {
    let got = bus::scope("app", async {
        let mut from_services = ctx::subscribe::<&'static str>().unwrap();
        Runner::new()
            .signals(false)
            .bus(ctx::bus().unwrap())
            .service(Service::without_context("hello", || async {
                ctx::send("hello from a service").unwrap();
            }))
            .run()
            .await
            .unwrap();
        from_services.try_recv().map(|s| *s)
    })
    .await;
    assert_eq!(got, Ok("hello from a service"));
}

#[tokio::test(start_paused = true)]
async fn the_closure_that_makes_a_body_runs_in_the_runner_scope_too() {
    let bus = EventBus::new();
    let mut made = bus.subscribe::<u64>();
    Runner::new()
        .signals(false)
        .bus(bus.clone())
        .service(Service::new("made", |ctx: ServiceContext| {
            // Synchronous part of the closure, before the body's future exists.
            ctx::send(ctx.run()).unwrap();
            async {}
        }))
        .run()
        .await
        .unwrap();
    assert_eq!(*made.try_recv().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_taken_before_start_sees_every_event_from_the_first() {
    let bus = EventBus::new();
    let mut events = bus.subscribe::<Event>();
    let err = Runner::new()
        .signals(false)
        .bus(bus.clone())
        .service(
            Service::without_context("instant", || async { Err::<(), _>("broken at once") })
                .restart(servicekit::Restart::Never),
        )
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.failures()[0].service(), "instant");
    let mut seen = Vec::new();
    while let Ok(ev) = events.try_recv() {
        seen.push(match &*ev {
            Event::State { state, .. } => state.to_string(),
            Event::Ready { .. } => "ready".to_string(),
            Event::Failed { error, .. } => format!("failed run {}", error.run()),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(seen, ["running", "ready", "failed run 1", "failed"]);
}

#[tokio::test(start_paused = true)]
async fn replicas_are_supervised_each_on_its_own_under_numbered_names() {
    let runs = Arc::new(AtomicUsize::new(0));
    let pool = Service::replicas(3, || {
        let runs = runs.clone();
        Service::new("worker", move |ctx: ServiceContext| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                ctx.shutdown_requested().await;
            }
        })
    });
    let handle = Runner::new()
        .signals(false)
        .services(pool)
        .start()
        .await
        .unwrap();
    sleep(Duration::from_millis(10)).await;
    let names: Vec<_> = handle.status().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["worker#0", "worker#1", "worker#2"]);
    assert!(handle.restart("worker#1").is_ok());
    sleep(Duration::from_millis(10)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 4, "only worker#1 ran again");
    handle.shutdown();
    handle.wait().await.unwrap();
}

//! `Pipeline`: order, concurrency, error routing, fail-fast, drain on close,
//! cancellation, configuration errors, running as a service, and a randomized model
//! of pipelines with an error sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use servicekit::{
    Pipeline, Queue, Runner, Service, pipeline::PipelineError, pipeline::StageError, stage,
};
use tokio::time::{Instant, sleep};

#[derive(Debug)]
struct Bad(u32);
impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad item {}", self.0)
    }
}
impl std::error::Error for Bad {}

#[tokio::test(start_paused = true)]
async fn order_is_kept_with_many_workers_and_random_delays() {
    let out = Queue::unbounded();
    let results = out.receiver();
    let report = Pipeline::from(futures::stream::iter(0..200u32))
        .via(
            stage("jitter", |n: u32| async move {
                sleep(Duration::from_millis(fastrand::u64(0..50))).await;
                Ok::<_, Bad>(n)
            })
            .workers(16),
        )
        .via(
            stage("jitter again", |n: u32| async move {
                sleep(Duration::from_millis(fastrand::u64(0..50))).await;
                Ok::<_, Bad>(n * 2)
            })
            .workers(7),
        )
        .to(out)
        .run()
        .await
        .unwrap();
    let got: Vec<u32> = results.collect().await;
    assert_eq!(got, (0..200).map(|n| n * 2).collect::<Vec<_>>());
    assert_eq!(report.delivered, 200);
    assert_eq!(report.stages[1].input, 200);
    assert_eq!(report.stages[1].output, 200);
}

#[tokio::test(start_paused = true)]
async fn workers_really_overlap_and_unordered_yields_in_completion_order() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let out = Queue::unbounded();
    let results = out.receiver();
    let began = Instant::now();
    Pipeline::from(futures::stream::iter([300u64, 100, 200, 50]))
        .via(
            stage("sleep", move |ms: u64| {
                let (r, p) = (r.clone(), p.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    sleep(Duration::from_millis(ms)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, Bad>(ms)
                }
            })
            .workers(4)
            .unordered(),
        )
        .to(out)
        .run()
        .await
        .unwrap();
    assert_eq!(
        began.elapsed(),
        Duration::from_millis(300),
        "all four ran at once"
    );
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    let got: Vec<u64> = results.collect().await;
    assert_eq!(got, [50, 100, 200, 300]);
}

#[tokio::test]
async fn failed_items_go_to_the_error_sink_and_the_rest_flow_on() {
    let out = Queue::unbounded();
    let errors = Queue::<StageError>::unbounded();
    let (results, failures) = (out.receiver(), errors.receiver());
    let report = Pipeline::from(futures::stream::iter(1..=10u32))
        .via(stage("validate", |n: u32| async move {
            if n.is_multiple_of(3) {
                Err(Bad(n))
            } else {
                Ok(n)
            }
        }))
        .via(stage("process", |n: u32| async move { Ok::<_, Bad>(n * 10) }).workers(2))
        .to(out)
        .errors(errors)
        .run()
        .await
        .unwrap();
    let got: Vec<u32> = results.collect().await;
    assert_eq!(got, [10, 20, 40, 50, 70, 80, 100]);
    let failed: Vec<String> = failures
        .map(|e| format!("{}: {}", e, e.error()))
        .collect()
        .await;
    assert_eq!(
        failed,
        [
            "stage `validate` failed: bad item 3",
            "stage `validate` failed: bad item 6",
            "stage `validate` failed: bad item 9"
        ]
    );
    assert_eq!(report.stages[0].failed, 3);
    assert_eq!(report.stages[0].output, 7);
    assert_eq!(report.stages[1].input, 7);
}

#[tokio::test(start_paused = true)]
async fn without_an_error_sink_the_first_error_stops_everything() {
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let out = Queue::unbounded();
    let results = out.receiver();
    let err = Pipeline::from(futures::stream::iter(0..1000u32))
        .via(
            stage("slow", move |n: u32| {
                s.fetch_add(1, Ordering::SeqCst);
                async move {
                    sleep(Duration::from_millis(10)).await;
                    if n == 5 { Err(Bad(n)) } else { Ok(n) }
                }
            })
            .workers(2),
        )
        .to(out)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "stage `slow` failed");
    assert!(matches!(err, PipelineError::Stage(_)));
    assert!(
        started.load(Ordering::SeqCst) < 20,
        "the source was not drained after the error"
    );
    let got: Vec<u32> = results.collect().await; // the sink was closed
    assert_eq!(got, [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn closing_the_source_drains_every_stage_then_closes_the_sink() {
    let input = Queue::bounded(4);
    let out = Queue::unbounded();
    let results = out.receiver();
    let source = input.receiver();
    let producer = {
        let input = input.clone();
        tokio::spawn(async move {
            for i in 0..20u32 {
                input.send(i).await.unwrap();
            }
            input.close();
        })
    };
    drop(input);
    let report = Pipeline::from(source)
        .via(
            stage("delay", |n: u32| async move {
                sleep(Duration::from_millis(5)).await;
                Ok::<_, Bad>(n + 1)
            })
            .workers(3),
        )
        .to(out)
        .run()
        .await
        .unwrap();
    producer.await.unwrap();
    assert_eq!(report.delivered, 20);
    let got: Vec<u32> = results.collect().await; // ends: the sink queue was closed
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn cancelling_run_drops_all_work_in_flight() {
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let run = Pipeline::from(futures::stream::iter(0..100u32))
        .via(
            stage("forever", move |n: u32| {
                let g = Guard(d.clone());
                async move {
                    let _g = g;
                    std::future::pending::<()>().await;
                    Ok::<_, Bad>(n)
                }
            })
            .workers(5),
        )
        .run();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), run)
            .await
            .is_err()
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        5,
        "the 5 in-flight items were dropped"
    );
}

#[tokio::test]
async fn zero_workers_is_rejected_before_anything_runs() {
    let touched = Arc::new(AtomicUsize::new(0));
    let t = touched.clone();
    let err = Pipeline::from(futures::stream::iter(0..10u32).inspect(move |_| {
        t.fetch_add(1, Ordering::SeqCst);
    }))
    .via(stage("parse", |n: u32| async move { Ok::<_, Bad>(n) }).workers(0))
    .run()
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid pipeline: stage `parse`: workers must be at least 1"
    );
    assert_eq!(touched.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_runs_as_a_service_and_stops_cleanly_on_shutdown() {
    let input = Queue::<u32>::unbounded();
    let source = input.receiver();
    let out = Queue::unbounded();
    let results = out.receiver();
    let svc = Service::new("pipeline", move |ctx| {
        let (source, out) = (source.clone(), out.clone());
        async move {
            ctx.ready();
            let run = Pipeline::from(source)
                .via(stage("inc", |n: u32| async move { Ok::<_, Bad>(n + 1) }))
                .to(out)
                .run();
            if let Some(r) = ctx.until_shutdown(run).await {
                r?;
            }
            Ok::<(), PipelineError>(())
        }
    });
    let h = Runner::new()
        .signals(false)
        .service(svc)
        .start()
        .await
        .unwrap();
    for i in 0..3 {
        input.send(i).await.unwrap();
    }
    sleep(Duration::from_millis(10)).await;
    assert_eq!(results.try_recv(), Ok(1));
    let began = Instant::now();
    h.shutdown();
    h.wait().await.unwrap();
    assert_eq!(began.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn any_futures_sink_and_closures_are_sinks() {
    let (tx, rx) = futures::channel::mpsc::unbounded::<u32>();
    Pipeline::from(futures::stream::iter(0..3u32))
        .to_sink(tx)
        .run()
        .await
        .unwrap();
    assert_eq!(rx.collect::<Vec<_>>().await, [0, 1, 2]);

    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    Pipeline::from(futures::stream::iter(0..3u32))
        .to(move |n: u32| {
            s.lock().unwrap().push(n);
            async {}
        })
        .run()
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_stage_runs_ahead_of_a_slow_sink_by_at_most_its_buffer() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let source = futures::stream::iter(0..1000u32).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let run = Pipeline::from(source)
        .via(
            stage("fast", |n: u32| async move { Ok::<_, Bad>(n) })
                .workers(2)
                .buffer(4),
        )
        .to(|_n: u32| sleep(Duration::from_secs(1)))
        .run();
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), run)
            .await
            .is_err()
    );
    // ~3 items reached the slow sink; the stage filled its queue of 4 and holds at
    // most 2 in flight: the source was not read further ahead than that.
    let n = pulled.load(Ordering::SeqCst);
    assert!((3 + 4..=3 + 4 + 2 + 1).contains(&n), "pulled {n}");

    let err = Pipeline::from(futures::stream::iter(0..1u32))
        .via(stage("s", |n: u32| async move { Ok::<_, Bad>(n) }).buffer(0))
        .run()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid pipeline: stage `s`: buffer must be at least 1"
    );
}

mod model {
    //! Random pipelines on the paused clock against a sequential model: 1 to 3 stages,
    //! each with random workers, buffer, order mode and failing items, and per-item
    //! delays. What reaches the sink (in input order when every stage keeps order),
    //! what reaches the error sink, and every stage's counts must match the model.

    use std::time::Duration;

    use futures::StreamExt;
    use proptest::prelude::*;
    use servicekit::{Pipeline, Queue, pipeline::StageError, stage};

    use super::Bad;

    #[derive(Debug, Clone)]
    struct StageSpec {
        workers: usize,
        buffer: usize,
        ordered: bool,
        /// Items that are multiples of it fail here.
        modulus: u32,
        /// Added to each item that passes.
        add: u32,
    }

    fn stage_spec() -> impl Strategy<Value = StageSpec> {
        (1usize..6, 1usize..5, any::<bool>(), 2u32..9, 0u32..1000).prop_map(
            |(workers, buffer, ordered, modulus, add)| StageSpec {
                workers,
                buffer,
                ordered,
                modulus,
                add,
            },
        )
    }

    /// A delay that depends on the item and the stage, so workers finish out of order.
    fn delay(n: u32, stage: usize) -> Duration {
        Duration::from_millis(u64::from(
            (n.wrapping_mul(2_654_435_761) >> (stage * 3)) % 7,
        ))
    }

    async fn run(items: Vec<u32>, specs: Vec<StageSpec>) -> Result<(), TestCaseError> {
        // The model: each item through each stage in turn.
        let mut want_out = Vec::new();
        let mut want_failed = Vec::new();
        let mut want_counts = vec![(0u64, 0u64, 0u64); specs.len()];
        for &item in &items {
            let mut n = item;
            let mut passed = true;
            for (k, s) in specs.iter().enumerate() {
                want_counts[k].0 += 1;
                if n.is_multiple_of(s.modulus) {
                    want_counts[k].2 += 1;
                    want_failed.push(format!("stage `s{k}` failed: bad item {n}"));
                    passed = false;
                    break;
                }
                want_counts[k].1 += 1;
                n += s.add;
            }
            if passed {
                want_out.push(n);
            }
        }

        let out = Queue::unbounded();
        let errors = Queue::<StageError>::unbounded();
        let (results, failures) = (out.receiver(), errors.receiver());
        let mut pipeline = Pipeline::from(futures::stream::iter(items.clone()));
        for (k, s) in specs.iter().enumerate() {
            let (modulus, add) = (s.modulus, s.add);
            let st = stage(format!("s{k}"), move |n: u32| async move {
                tokio::time::sleep(delay(n, k)).await;
                if n.is_multiple_of(modulus) {
                    Err(Bad(n))
                } else {
                    Ok(n + add)
                }
            })
            .workers(s.workers)
            .buffer(s.buffer);
            pipeline = pipeline.via(if s.ordered { st } else { st.unordered() });
        }
        let report = pipeline
            .to(out)
            .errors(errors)
            .run()
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;

        let mut got_out: Vec<u32> = results.collect().await;
        let mut got_failed: Vec<String> = failures
            .map(|e| format!("{}: {}", e, e.error()))
            .collect()
            .await;
        if !specs.iter().all(|s| s.ordered) {
            got_out.sort_unstable();
            want_out.sort_unstable();
        }
        got_failed.sort();
        want_failed.sort();
        prop_assert_eq!(got_out, want_out.clone());
        prop_assert_eq!(got_failed, want_failed);
        prop_assert_eq!(report.delivered, want_out.len() as u64);
        for (k, s) in report.stages.iter().enumerate() {
            prop_assert_eq!((s.input, s.output, s.failed), want_counts[k], "stage {}", k);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn pipelines_match_the_model(
            items in proptest::collection::vec(0u32..10_000, 0..60),
            specs in proptest::collection::vec(stage_spec(), 1..4),
        ) {
            servicekit_tests::paused_runtime().block_on(run(items, specs))?;
        }
    }
}

#[tokio::test]
async fn a_failed_item_comes_back_to_the_error_sink() {
    use servicekit::pipeline::Failed;
    let errors = Queue::<StageError>::unbounded();
    let out = Queue::unbounded();
    let report = Pipeline::from(futures::stream::iter(
        ["1", "x", "3", "y"].map(String::from),
    ))
    // Kept by the pipeline: the stage function knows nothing of it.
    .via(stage("parse", |s: String| async move { s.parse::<u32>() }).keep_input())
    // Handed back by the stage function itself.
    .via(stage("odd", |n: u32| async move {
        if n % 2 == 1 && n > 1 {
            Err(Failed {
                input: n,
                error: format!("{n} is odd").into(),
            })
        } else {
            Ok(n)
        }
    }))
    .to(out.clone())
    .errors(errors.clone())
    .run()
    .await
    .unwrap();
    assert_eq!(out.receiver().try_recv(), Ok(1));
    let rx = errors.receiver();
    let mut failed = Vec::new();
    while let Ok(e) = rx.try_recv() {
        let item = match e.stage() {
            "parse" => e.input::<String>().cloned().unwrap(),
            "odd" => e.input::<u32>().unwrap().to_string(),
            other => panic!("{other}"),
        };
        failed.push(format!("{}: {item} ({})", e.stage(), e.error()));
        assert!(e.input::<Vec<u8>>().is_none(), "another type gives nothing");
    }
    failed.sort();
    assert_eq!(
        failed,
        [
            "odd: 3 (3 is odd)",
            "parse: x (invalid digit found in string)",
            "parse: y (invalid digit found in string)"
        ]
    );
    assert_eq!(report.stages[0].failed, 2);
}

//! Sliding-window metrics (ported from effectpy's "Stream Processing with
//! Windowing"): a stream of metrics from three servers goes through a windowing stage
//! (one worker: it keeps state) that computes count, average and maximum over the last
//! 2 seconds of metrics; every 10th window is printed. Ends by itself.
//!
//! Run it with `cargo run -p servicekit-examples --example 10_windowing`.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use servicekit::{Pipeline, stage};

#[derive(Debug, Clone)]
struct Metric {
    /// Milliseconds since the start.
    at_ms: u64,
    value: f64,
    source: &'static str,
}

#[derive(Debug, Clone)]
struct WindowedResult {
    start_ms: u64,
    end_ms: u64,
    count: usize,
    avg: f64,
    max: f64,
    sources: BTreeSet<&'static str>,
}

struct SlidingWindow {
    size_ms: u64,
    metrics: VecDeque<Metric>,
}

impl SlidingWindow {
    fn add(&mut self, m: Metric) -> WindowedResult {
        let cutoff = m.at_ms.saturating_sub(self.size_ms);
        self.metrics.push_back(m);
        while self.metrics.front().is_some_and(|x| x.at_ms < cutoff) {
            self.metrics.pop_front();
        }
        let values: Vec<f64> = self.metrics.iter().map(|x| x.value).collect();
        WindowedResult {
            start_ms: self.metrics.front().map_or(0, |x| x.at_ms),
            end_ms: self.metrics.back().map_or(0, |x| x.at_ms),
            count: values.len(),
            avg: values.iter().sum::<f64>() / values.len() as f64,
            max: values.iter().copied().fold(f64::MIN, f64::max),
            sources: self.metrics.iter().map(|x| x.source).collect(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fastrand::seed(7);
    let metrics: Vec<Metric> = (0..50)
        .map(|i| Metric {
            at_ms: i * 200,
            value: 10.0 + fastrand::f64() * 90.0,
            source: ["server1", "server2", "server3"][fastrand::usize(..3)],
        })
        .collect();
    let window = Arc::new(Mutex::new(SlidingWindow {
        size_ms: 2_000,
        metrics: VecDeque::new(),
    }));
    let mut windows = 0usize;
    let report = Pipeline::from(futures::stream::iter(metrics).then(|m| async move {
        tokio::task::yield_now().await; // metrics arrive over time
        m
    }))
    .via(
        stage("window", move |m: Metric| {
            let window = window.clone();
            async move { Ok::<_, std::convert::Infallible>(window.lock().expect("window").add(m)) }
        })
        .workers(1),
    )
    .to(move |w: WindowedResult| {
        windows += 1;
        if windows.is_multiple_of(10) {
            println!(
                "window {windows}: {:.1}s..{:.1}s, {} metrics, avg {:.1}, max {:.1}, sources {:?}",
                w.start_ms as f64 / 1000.0,
                w.end_ms as f64 / 1000.0,
                w.count,
                w.avg,
                w.max,
                w.sources
            );
        }
        async {}
    })
    .run()
    .await?;
    println!(
        "windowing: {} metrics, {} windows computed",
        report.stages[0].input, report.delivered
    );
    Ok(())
}

//! A data-processing pipeline (ported from effectpy's "Data Processing Pipeline"):
//! raw web events are parsed, validated, enriched with the user's segment (a
//! simulated lookup, 3 workers) and transformed; a summary by event type is printed.
//! Ends by itself.
//!
//! Run it with `cargo run -p servicekit-examples --example 09_event_enrichment`.

use std::collections::BTreeMap;
use std::time::Duration;

use servicekit::{Pipeline, Queue, stage};

#[derive(Debug, Clone)]
struct RawEvent {
    timestamp: u64,
    user_id: &'static str,
    event_type: &'static str,
    data: &'static str,
}

#[derive(Debug, Clone)]
struct WebEvent {
    user_id: String,
    event_type: String,
    data: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct ProcessedEvent {
    user_id: String,
    event_type: String,
    enriched: BTreeMap<String, String>,
}

type StageResult<T> = Result<T, String>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let raw = [
        RawEvent {
            timestamp: 1634567890,
            user_id: "user1",
            event_type: "click",
            data: "page=home",
        },
        RawEvent {
            timestamp: 1634567891,
            user_id: "user2",
            event_type: "purchase",
            data: "amount=29.99",
        },
        RawEvent {
            timestamp: 1634567892,
            user_id: "user1",
            event_type: "view",
            data: "page=products",
        },
        RawEvent {
            timestamp: 1634567893,
            user_id: "user3",
            event_type: "click",
            data: "page=about",
        },
        RawEvent {
            timestamp: 1634567894,
            user_id: "user2",
            event_type: "purchase",
            data: "amount=15.99",
        },
        RawEvent {
            timestamp: 1634567895,
            user_id: "",
            event_type: "click",
            data: "page=home",
        },
    ];
    let input = Queue::bounded(10);
    let output = Queue::bounded(10);
    let errors = Queue::unbounded();
    let (source, results, failures) = (input.receiver(), output.receiver(), errors.receiver());

    let pipeline = Pipeline::from(source)
        .via(
            stage("parse", |raw: RawEvent| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let data = raw
                    .data
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<BTreeMap<_, _>>();
                StageResult::Ok(WebEvent {
                    user_id: raw.user_id.to_owned(),
                    event_type: raw.event_type.to_owned(),
                    data,
                })
                .map(|mut e| {
                    e.data.insert("timestamp".into(), raw.timestamp.to_string());
                    e
                })
            })
            .workers(2),
        )
        .via(stage("validate", |e: WebEvent| async move {
            if e.user_id.is_empty() || e.event_type.is_empty() {
                return Err("invalid event: missing user_id or event_type".to_owned());
            }
            Ok(e)
        }))
        .via(
            stage("enrich", |mut e: WebEvent| async move {
                tokio::time::sleep(Duration::from_millis(20)).await; // database lookup
                let segment = match e.user_id.as_str() {
                    "user1" => "premium",
                    "user2" => "standard",
                    "user3" => "new",
                    _ => "unknown",
                };
                e.data.insert("user_segment".into(), segment.into());
                e.data.insert("processing_pipeline".into(), "v1.0".into());
                StageResult::Ok(e)
            })
            .workers(3),
        )
        .via(
            stage("transform", |e: WebEvent| async move {
                StageResult::Ok(ProcessedEvent {
                    user_id: e.user_id,
                    event_type: e.event_type,
                    enriched: e.data,
                })
            })
            .workers(2),
        )
        .to(output)
        .errors(errors)
        .run();

    let producer = async move {
        println!("ingestion: starting");
        for event in raw {
            println!("ingested: {} from {:?}", event.event_type, event.user_id);
            input.send(event).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        input.close();
        println!("ingestion: completed");
        anyhow::Ok(())
    };
    let consumer = async move {
        let mut by_type = BTreeMap::<String, usize>::new();
        let mut total = 0;
        while let Ok(e) = results.recv().await {
            total += 1;
            *by_type.entry(e.event_type.clone()).or_default() += 1;
            println!(
                "processed: {} for {} (segment: {})",
                e.event_type, e.user_id, e.enriched["user_segment"]
            );
        }
        (total, by_type)
    };
    let rejected = async move {
        let mut n = 0;
        while let Ok(e) = failures.recv().await {
            n += 1;
            println!("rejected by `{}`: {}", e.stage(), e.error());
        }
        n
    };
    let (report, produced, (total, by_type), rejected) =
        tokio::join!(pipeline, producer, consumer, rejected);
    produced?;
    let report = report?;
    println!("summary: {total} events processed, {rejected} rejected");
    println!("summary: by type {by_type:?}");
    for s in report.stages {
        println!(
            "summary: stage {} busy {:?} for {} items",
            s.name, s.busy, s.input
        );
    }
    Ok(())
}

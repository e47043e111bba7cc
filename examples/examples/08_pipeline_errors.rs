//! A pipeline with an error queue (ported from effectpy's "Pipeline with Error
//! Handling"): validation rejects negative numbers, processing fails on multiples of
//! 7; failed items go to the error queue with the stage's name while the others flow
//! on. Ends by itself.
//!
//! Run it with `cargo run -p servicekit-examples --example 08_pipeline_errors`.

use std::time::Duration;

use servicekit::{Pipeline, Queue, pipeline::StageError, stage};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let input = Queue::bounded(5);
    let successes = Queue::bounded(5);
    let errors = Queue::<StageError>::bounded(5);
    let (source, ok_rx, err_rx) = (input.receiver(), successes.receiver(), errors.receiver());

    let pipeline = Pipeline::from(source)
        .via(
            stage("validate", |x: i32| async move {
                if x < 0 {
                    return Err(format!("negative number: {x}"));
                }
                Ok(x)
            })
            .workers(2),
        )
        .via(
            stage("process", |x: i32| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if x % 7 == 0 {
                    return Err(format!("cannot process multiple of 7: {x}"));
                }
                Ok(format!("Processed: {x}"))
            })
            .workers(2),
        )
        .to(successes)
        .errors(errors)
        .run();

    let producer = async move {
        for value in [-5, 1, 2, 7, -3, 4, 14, 5, 6, 8] {
            input.send(value).await?;
            println!("sent: {value}");
        }
        input.close();
        anyhow::Ok(())
    };
    let ok_consumer = async move {
        let mut n = 0;
        while let Ok(r) = ok_rx.recv().await {
            n += 1;
            println!("success: {r}");
        }
        n
    };
    let err_consumer = async move {
        let mut n = 0;
        while let Ok(e) = err_rx.recv().await {
            n += 1;
            println!("error in stage `{}`: {}", e.stage(), e.error());
        }
        n
    };
    let (report, produced, ok, failed) =
        tokio::join!(pipeline, producer, ok_consumer, err_consumer);
    produced?;
    report?;
    println!("finished: {ok} successes, {failed} errors");
    Ok(())
}

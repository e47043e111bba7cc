//! A two-stage pipeline (ported from effectpy's "Basic Pipeline"): a producer feeds a
//! `Queue`; stage 1 doubles each number with 2 workers, stage 2 formats it with 3;
//! results arrive in input order on an output `Queue`. Closing the input drains every
//! stage and then closes the output. Ends by itself.
//!
//! Run it with `cargo run -p servicekit-examples --example 07_pipeline`.

use std::time::Duration;

use servicekit::{Pipeline, Queue, stage};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let input = Queue::bounded(10);
    let output = Queue::bounded(10);
    let (source, results) = (input.receiver(), output.receiver());

    let pipeline = Pipeline::from(source)
        .via(
            stage("double", |x: u32| async move {
                tokio::time::sleep(Duration::from_millis(100)).await; // work
                Ok::<_, std::convert::Infallible>(x * 2)
            })
            .workers(2),
        )
        .via(
            stage("format", |x: u32| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, std::convert::Infallible>(format!("Processed: {x}"))
            })
            .workers(3),
        )
        .to(output)
        .run();

    let producer = async move {
        for i in 1..=10 {
            input.send(i).await?;
            println!("input: {i}");
        }
        input.close();
        anyhow::Ok(())
    };
    let consumer = async move {
        let mut n = 0;
        while let Ok(result) = results.recv().await {
            n += 1;
            println!("output: {result}");
        }
        println!("completed: {n} items");
    };
    let (report, produced, ()) = tokio::join!(pipeline, producer, consumer);
    produced?;
    for s in report?.stages {
        println!(
            "stage {}: {} in, {} out, {} failed, busy {:?}",
            s.name, s.input, s.output, s.failed, s.busy
        );
    }
    Ok(())
}

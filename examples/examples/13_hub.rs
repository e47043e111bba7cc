//! Named channels in a `Hub` (omnistorage's channel backend, done right): a
//! three-stage pipeline through the byte channels `stage1` → `stage2` → `stage3`
//! (writers and readers by name, end of file when a writer shuts down), a fan-out to
//! `subscriber/0..3` by prefix with a report of every name (nothing skipped
//! silently), and a late reader of a persistent channel that replays its kept
//! messages exactly once before the live ones. Ends by itself, exit code 0.
//!
//! Run it with `cargo run -p servicekit-examples --example 13_hub`.

use std::collections::HashMap;

use bytes::Bytes;
use servicekit::hub::Hub;
use tokio::io::AsyncWriteExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The seed's registry config: buffer of 100, `audit/` channels persistent.
    let config = HashMap::from([
        ("buffer_size".to_string(), "100".to_string()),
        ("audit/*.persistent".to_string(), "true".to_string()),
        ("audit/*.replay".to_string(), "3".to_string()),
    ]);
    let hub = Hub::<Bytes>::from_config(&config)?;

    // --- Pipeline: stage 1 reads a source, stage 2 transforms, stage 3 consumes.
    let mut stage2_in = hub.reader("stage1")?;
    let mut stage2_out = hub.writer("stage2")?;
    let mut stage3_in = hub.reader("stage2")?;
    let mut stage1 = hub.writer("stage1")?;
    let producer = tokio::spawn(async move {
        for item in ["alpha", "beta", "gamma"] {
            stage1.write_all(item.as_bytes()).await?;
        }
        stage1.shutdown().await // end of stream for stage 2
    });
    let transformer = tokio::spawn(async move {
        while let Some(msg) = stage2_in.read_message().await? {
            let upper = String::from_utf8_lossy(&msg).to_uppercase();
            stage2_out.write_all(upper.as_bytes()).await?;
        }
        stage2_out.shutdown().await
    });
    while let Some(msg) = stage3_in.read_message().await? {
        println!("stage3: {}", String::from_utf8_lossy(&msg));
    }
    producer.await??;
    transformer.await??;
    println!("stage3: end of stream");

    // --- Fan-out by prefix: every subscriber gets the event; the report names them.
    let mut subscribers = Vec::new();
    for i in 0..3 {
        subscribers.push(hub.connect(&format!("subscriber/{i}"))?);
    }
    hub.channel("subscriber/idle")?; // nobody reads it: reported, not silently skipped
    let report = hub.broadcast("subscriber/", Bytes::from_static(b"event data"));
    println!("broadcast delivered to {:?}", report.delivered);
    println!(
        "broadcast skipped (no customers): {:?}",
        report.no_customers
    );
    for (i, s) in subscribers.iter_mut().enumerate() {
        let msg = s.recv().await?;
        println!("subscriber/{i} got {}", String::from_utf8_lossy(&msg));
    }

    // --- Replay: a persistent channel keeps its last 3 messages for late readers.
    let audit = hub.channel("audit/logins")?;
    for user in ["ada", "alan", "grace", "edsger", "barbara"] {
        audit.send(Bytes::from(format!("login {user}"))).await?;
    }
    let mut late = hub.reader("audit/logins")?; // connects after five were sent
    audit.send(Bytes::from_static(b"login donald")).await?;
    hub.remove("audit/logins"); // closes it: the reader drains, then ends
    while let Some(msg) = late.read_message().await? {
        println!("late reader: {}", String::from_utf8_lossy(&msg));
    }
    println!("names: {:?}", hub.list(""));
    Ok(())
}

//! Request/response over the event bus: a data service answers queries
//! (`EventBus::respond`), clients ask with `EventBus::request` (subscribed before
//! sending, so no answer is missed), concurrent requests each get their own answer,
//! a slow query times out with an error naming the request type, and a handler that
//! panics does not stop the service. Ends by itself, exit code 0.
//!
//! Run it with `cargo run -p servicekit-examples --example 12_request_response`.

use std::sync::Arc;
use std::time::Duration;

use servicekit::bus::{self, RequestError, ctx};

#[derive(Debug)]
struct DataRequest {
    request_id: u64,
    query: String,
}

#[derive(Debug)]
struct DataResponse {
    request_id: u64,
    result: Vec<String>,
}

async fn execute_query(query: &str) -> Vec<String> {
    match query {
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Vec::new()
        }
        "crash" => panic!("the query engine crashed"),
        q => {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(1..20))).await;
            (1..=3).map(|i| format!("{q}#{i}")).collect()
        }
    }
}

async fn ask(id: u64, query: &str, timeout: Duration) -> Result<Arc<DataResponse>, RequestError> {
    ctx::bus()
        .expect("inside the scope")
        .request::<DataRequest, DataResponse>(
            DataRequest {
                request_id: id,
                query: query.into(),
            },
            |r| r.request_id == id,
            timeout,
        )
        .await
}

#[tokio::main]
async fn main() {
    bus::scope("app", async {
        // The data service: subscribed as soon as `respond` returns.
        let server = ctx::bus()
            .unwrap()
            .respond(|req: Arc<DataRequest>| async move {
                DataResponse {
                    request_id: req.request_id,
                    result: execute_query(&req.query).await,
                }
            });
        // One responder, a task of the scope, answering one request at a time.
        ctx::spawn(server).unwrap();

        // Ten clients at once: each gets its own answer.
        let clients: Vec<_> = (1..=10u64)
            .map(|id| {
                ctx::spawn(async move {
                    let query = format!("users-{id}");
                    let response = ask(id, &query, Duration::from_secs(1)).await.unwrap();
                    assert_eq!(response.request_id, id);
                    println!("request {id}: {:?}", response.result);
                })
                .unwrap()
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }

        // A handler that panics: reported, and the service goes on.
        match ask(11, "crash", Duration::from_millis(200)).await {
            Err(e) => println!("request 11: {e}"),
            Ok(r) => println!("request 11 unexpectedly answered: {r:?}"),
        }
        // A query slower than its timeout (the responder is busy with it for 5 s, so
        // the next request waits behind it: sequential handlers, as documented).
        match ask(12, "slow", Duration::from_millis(300)).await {
            Err(e @ RequestError::Timeout { .. }) => println!("request 12: {e}"),
            other => println!("request 12: {other:?}"),
        }
    })
    // The scope ends: its bus closes, the responder's stream ends after the slow
    // query or is aborted after this.
    .join_timeout(Duration::from_millis(100))
    .await;
    println!("done");
}

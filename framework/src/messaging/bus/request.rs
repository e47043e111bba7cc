//! Request/response over the bus: a request is an event, its response another.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};

use super::{EventBus, RecvError, RequestError};

impl EventBus {
    /// Sends `request` and waits for the first response of type `Resp` for which
    /// `matches` is true (typically: it carries the request's id).
    ///
    /// The response subscription is made before the request is sent, so a responder
    /// that answers at once is not missed. Each concurrent request has its own
    /// subscription and gets its own response; responses to other requests are
    /// skipped. If the subscription falls behind (more than the bus's capacity of
    /// responses arrive while it waits) it keeps waiting, up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`RequestError::NoResponder`] at once if nobody is subscribed to `Req`;
    /// [`RequestError::Timeout`] if no matching response came within `timeout`;
    /// [`RequestError::Closed`] if the bus closed first. Each names the request type.
    ///
    /// # Panics
    ///
    /// Panics outside a tokio runtime with the time driver (the timeout is a tokio
    /// timer).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the response subscription; the request may have
    /// been sent.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use servicekit::bus::EventBus;
    ///
    /// struct Lookup { id: u64, key: &'static str }
    /// struct Found { id: u64, value: Option<String> }
    ///
    /// let bus = EventBus::new();
    /// let server = bus.respond(|req: std::sync::Arc<Lookup>| async move {
    ///     Found { id: req.id, value: (req.key == "answer").then(|| "42".to_string()) }
    /// });
    /// tokio::spawn(server);
    /// let found = bus
    ///     .request::<Lookup, Found>(Lookup { id: 7, key: "answer" }, |r| r.id == 7, Duration::from_secs(1))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(found.value.as_deref(), Some("42"));
    /// # }
    /// ```
    pub async fn request<Req, Resp>(
        &self,
        request: Req,
        mut matches: impl FnMut(&Resp) -> bool,
        timeout: Duration,
    ) -> Result<Arc<Resp>, RequestError>
    where
        Req: Send + Sync + 'static,
        Resp: Send + Sync + 'static,
    {
        let name = std::any::type_name::<Req>();
        let mut responses = self.subscribe::<Resp>();
        if self.subscriber_count::<Req>() == 0 {
            return Err(if self.is_closed() {
                RequestError::Closed { request: name }
            } else {
                RequestError::NoResponder { request: name }
            });
        }
        self.send(request);
        let wait = async {
            loop {
                match responses.recv().await {
                    Ok(resp) if matches(&resp) => return Ok(resp),
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(
                            request = name,
                            lost = n,
                            "a request's response subscription lagged"
                        );
                    }
                    Err(RecvError::Closed | RecvError::CutOff) => {
                        return Err(RequestError::Closed { request: name });
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(RequestError::Timeout {
                request: name,
                after: timeout,
            }))
    }

    /// Answers requests of type `Req`: the returned future runs `handler` for each
    /// request, one at a time, and sends each response it returns on the bus. Spawn
    /// it (or run it as a service); it ends when the bus closes.
    ///
    /// The subscription to `Req` is made when this is called, so a request sent after
    /// it returns is answered even if the future has not been polled yet. A handler
    /// that panics is reported (`tracing` error) and the next request is answered as
    /// usual; requests lost because the responder fell behind are reported as a
    /// warning (their requesters time out).
    ///
    /// The future holds no handle that keeps the bus open.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::{sync::Arc, time::Duration};
    /// use servicekit::bus::EventBus;
    ///
    /// struct Square(u64);
    /// struct Squared(u64, u64);
    ///
    /// let bus = EventBus::new();
    /// tokio::spawn(bus.respond(|q: Arc<Square>| async move {
    ///     assert!(q.0 != 13, "unlucky"); // a panic: reported, the responder goes on
    ///     Squared(q.0, q.0 * q.0)
    /// }));
    /// let t = Duration::from_millis(200);
    /// assert!(bus.request::<Square, Squared>(Square(13), |r| r.0 == 13, t).await.is_err());
    /// let r = bus.request::<Square, Squared>(Square(12), |r| r.0 == 12, t).await.unwrap();
    /// assert_eq!(r.1, 144);
    /// # }
    /// ```
    pub fn respond<Req, Resp, H, Fut>(
        &self,
        mut handler: H,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        Req: Send + Sync + 'static,
        Resp: Send + Sync + 'static,
        H: FnMut(Arc<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Resp> + Send,
    {
        let mut requests = self.subscribe::<Req>();
        let bus = self.downgrade();
        async move {
            let name = std::any::type_name::<Req>();
            while let Some(request) = requests.next().await {
                let request = match request {
                    Ok(request) => request,
                    Err(e) => {
                        tracing::warn!(request = name, error = %e, "responder fell behind");
                        continue;
                    }
                };
                match AssertUnwindSafe(async { handler(request).await })
                    .catch_unwind()
                    .await
                {
                    Ok(response) => match bus.upgrade() {
                        Some(inner) => EventBus { inner }.send(response),
                        None => return,
                    },
                    Err(panic) => {
                        let message = crate::guard::message(panic);
                        tracing::error!(request = name, panic = %message, "request handler panicked");
                    }
                }
            }
        }
    }
}

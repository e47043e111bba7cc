//! Operations: what makes a servicekit binary ready for production without wiring
//! by hand. Nothing else in the crate imports this layer: it follows each runner
//! through the lifecycle layer's observers.
//!
//! * [`systemd`]: the notify protocol (`Type=notify`, `WatchdogSec=`), on by
//!   default under `#[servicekit::main]`.
//! * `http` (feature `http`): `/healthz`, `/readyz`, `/status`, `/metrics` and a
//!   live status page, served by a supervised service.
//! * `metrics` (feature `metrics`): the runners' metrics through the `metrics`
//!   facade, for the program's own recorder.
//! * `channels` (either feature): the depth and lag of a hub's named channels and
//!   queues, for both exporters above.

#[cfg(any(feature = "http", feature = "metrics"))]
pub mod channels;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod systemd;

/// What `#[servicekit::main(http = "...")]` does first: binds the address (an
/// error ends the program before anything starts) and serves the first runner.
#[doc(hidden)]
pub fn __main_http(addr: &str) -> std::io::Result<()> {
    #[cfg(feature = "http")]
    return http::serve_first_runner(addr);
    #[cfg(not(feature = "http"))]
    {
        let _ = addr;
        Ok(())
    }
}

/// What `#[servicekit::main]` turns on: systemd notify (unless `systemd = false`)
/// and, with the feature `metrics`, the metrics.
#[doc(hidden)]
pub fn __main_defaults(systemd: bool) {
    if systemd {
        systemd::enable();
    }
    #[cfg(feature = "metrics")]
    metrics::enable();
}

//! Operations: what makes a servicekit binary ready for production without wiring
//! by hand. Nothing else in the crate imports this layer: it follows each runner
//! through the lifecycle layer's observers.
//!
//! * [`systemd`]: the notify protocol (`Type=notify`, `WatchdogSec=`), on by
//!   default under `#[servicekit::main]`.
//! * `http` (feature `http`): `/healthz`, `/readyz`, `/status` and a live status
//!   page, served by a supervised service.

#[cfg(feature = "http")]
pub mod http;
pub mod systemd;

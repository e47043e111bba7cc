//! Operations: what makes a servicekit binary ready for production without wiring
//! by hand. Nothing else in the crate imports this layer: it follows each runner
//! through the lifecycle layer's observers.
//!
//! * [`systemd`]: the notify protocol (`Type=notify`, `WatchdogSec=`), on by
//!   default under `#[servicekit::main]`.

pub mod systemd;

//! Depth and lag of named channels as metrics: [`export`] a [`Hub`] once, and its
//! channels and queues appear in `/metrics` (feature `http`, read at each scrape) and
//! through the `metrics` facade (feature `metrics`, sampled every second while a
//! runner runs), labelled `hub` (the name given to [`export`]) and `name`:
//!
//! | metric | kind | |
//! |---|---|---|
//! | `servicekit_channel_customers` | gauge | customers connected |
//! | `servicekit_channel_depth` | gauge | messages the slowest customer has yet to receive |
//! | `servicekit_channel_sent_total` | counter | messages sent |
//! | `servicekit_channel_lagged_total` | counter | messages `DropOldest` customers lost by falling behind |
//! | `servicekit_channel_cut_off_total` | counter | `Disconnect` customers cut off for falling behind |
//! | `servicekit_queue_depth` | gauge | items waiting for a receiver |
//! | `servicekit_queue_capacity` | gauge | the queue's bound (absent when unbounded) |
//! | `servicekit_queue_sent_total` | counter | items sent |
//!
//! The registry keeps no hub alive: a hub dropped by the program leaves the export.
//!
//! # Examples
//!
//! ```
//! use servicekit::hub::Hub;
//!
//! let hub = Hub::<String>::new();
//! servicekit::ops::channels::export("orders", &hub);
//! ```

use std::sync::{Mutex, MutexGuard};

use crate::hub::{Hub, Load, NameStats};

/// How often the `metrics` facade is given the channels' load.
#[cfg(feature = "metrics")]
pub(crate) const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

type Source = Box<dyn Fn() -> Option<Vec<NameStats>> + Send>;

static HUBS: Mutex<Vec<(String, Source)>> = Mutex::new(Vec::new());

fn hubs() -> MutexGuard<'static, Vec<(String, Source)>> {
    // Plain data: a panic elsewhere while it was held leaves it whole.
    HUBS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Exports the load of `hub`'s channels and queues as metrics, labelled
/// `hub = name`. Exporting the same hub again under another name exports it twice;
/// a dropped hub leaves the export by itself.
///
/// # Examples
///
/// ```
/// use servicekit::hub::Hub;
///
/// let hub = Hub::<u64>::new();
/// hub.queue("jobs").unwrap().try_send(1).unwrap();
/// servicekit::ops::channels::export("main", &hub);
/// // `/metrics` now has: servicekit_queue_depth{hub="main",name="jobs"} 1
/// ```
pub fn export<T: Clone + Send + 'static>(name: &str, hub: &Hub<T>) {
    let weak = hub.downgrade();
    let source: Source = Box::new(move || weak.upgrade().map(|hub| hub.stats()));
    hubs().push((name.to_string(), source));
}

/// One sample of a channel or queue, for the exporters.
pub(crate) struct Sample {
    pub(crate) hub: String,
    pub(crate) stats: NameStats,
}

/// The load of every exported hub now; forgets hubs that were dropped.
pub(crate) fn sample() -> Vec<Sample> {
    let mut out = Vec::new();
    hubs().retain(|(hub, source)| match source() {
        Some(stats) => {
            out.extend(stats.into_iter().map(|stats| Sample {
                hub: hub.clone(),
                stats,
            }));
            true
        }
        None => false,
    });
    out
}

/// A metric of one sample: its name, kind, help text and value.
pub(crate) struct Metric {
    pub(crate) name: &'static str,
    pub(crate) counter: bool,
    // The facade has no help text per sample.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) help: &'static str,
    pub(crate) value: u64,
}

impl Sample {
    /// The sample's metrics, in the order of the table above.
    pub(crate) fn metrics(&self) -> Vec<Metric> {
        let m = |name, counter, help, value| Metric {
            name,
            counter,
            help,
            value,
        };
        match self.stats.load {
            Load::Channel(c) => vec![
                m(
                    "servicekit_channel_customers",
                    false,
                    "Customers connected to the channel.",
                    c.customers as u64,
                ),
                m(
                    "servicekit_channel_depth",
                    false,
                    "Messages the channel's slowest customer has yet to receive.",
                    c.depth,
                ),
                m(
                    "servicekit_channel_sent_total",
                    true,
                    "Messages sent on the channel.",
                    c.sent,
                ),
                m(
                    "servicekit_channel_lagged_total",
                    true,
                    "Messages DropOldest customers lost by falling behind.",
                    c.lagged,
                ),
                m(
                    "servicekit_channel_cut_off_total",
                    true,
                    "Disconnect customers cut off for falling behind.",
                    c.cut_off,
                ),
            ],
            Load::Queue(q) => {
                let mut v = vec![m(
                    "servicekit_queue_depth",
                    false,
                    "Items waiting in the queue for a receiver.",
                    q.depth as u64,
                )];
                if let Some(cap) = q.capacity {
                    v.push(m(
                        "servicekit_queue_capacity",
                        false,
                        "The queue's bound.",
                        cap as u64,
                    ));
                }
                v.push(m(
                    "servicekit_queue_sent_total",
                    true,
                    "Items sent to the queue.",
                    q.sent,
                ));
                v
            }
        }
    }
}

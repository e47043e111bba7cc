//! Helpers shared by the benches: command-line options, the 2-worker runtime, and
//! median / spread of repeated measurements.

#![allow(dead_code)]

/// The value of `--name N` on the command line, or `default`.
pub(crate) fn arg(name: &str, default: usize) -> usize {
    value(name).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The word after `--name` on the command line, if any.
pub(crate) fn value(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// Whether `--name` is on the command line.
pub(crate) fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// Worker threads of the bench runtime: 2 (one per core of the project's machine),
/// or `--workers N` (e.g. 1 to see an operation's own cost without the second
/// worker's parking and stealing).
pub(crate) fn workers() -> usize {
    arg("--workers", 2).max(1)
}

/// The runtime every bench measures on: multi-thread, [`workers`] workers; or, with
/// `--current-thread`, tokio's current-thread runtime (one thread does everything:
/// an operation's CPU cost without any cross-thread traffic, far less noisy).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    if flag("--current-thread") {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        .build()
        .expect("runtime")
}

/// What [`runtime`] built, for the results' header: "2 workers", "current-thread".
pub(crate) fn runtime_name() -> String {
    if flag("--current-thread") {
        "current-thread".to_owned()
    } else {
        format!("{} workers", workers())
    }
}

/// (median, min, max).
pub(crate) fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

//! Process signals for the runner.
//!
//! On Unix, signal-hook delivers SIGINT, SIGTERM, SIGQUIT and SIGHUP to a stream while
//! a runner is active. signal-hook cannot uninstall its low-level handler, so once per
//! process we also register a "conditional default" action per signal, armed while no
//! runner is active: then the signal does what it would have done without us
//! (terminate, dump core), so a program gets the default behaviour back after its
//! runner ends.

pub(crate) enum Kind {
    /// SIGINT, SIGTERM (`forcing`: a second one forces the shutdown) or SIGQUIT.
    Graceful { forcing: bool },
    /// SIGHUP.
    Reload,
}

#[cfg(unix)]
mod imp {
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};

    use futures::StreamExt;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

    use super::Kind;

    const HANDLED: [i32; 4] = [SIGINT, SIGTERM, SIGQUIT, SIGHUP];

    /// `true` while no runner is active: the default action runs.
    struct Defaults {
        flag: Arc<AtomicBool>,
        active: Mutex<usize>,
    }

    fn defaults() -> io::Result<&'static Defaults> {
        static DEFAULTS: OnceLock<Defaults> = OnceLock::new();
        static INIT: Mutex<bool> = Mutex::new(false);
        let d = DEFAULTS.get_or_init(|| Defaults {
            flag: Arc::new(AtomicBool::new(true)),
            active: Mutex::new(0),
        });
        let mut done = INIT.lock().unwrap_or_else(|e| e.into_inner());
        if !*done {
            for sig in HANDLED {
                signal_hook::flag::register_conditional_default(sig, d.flag.clone())?;
            }
            *done = true;
        }
        Ok(d)
    }

    pub(crate) struct Signals {
        stream: signal_hook_tokio::Signals,
    }

    impl Signals {
        pub(crate) fn new() -> io::Result<Self> {
            let d = defaults()?;
            let stream = signal_hook_tokio::Signals::new(HANDLED)?;
            let mut active = d.active.lock().unwrap_or_else(|e| e.into_inner());
            *active += 1;
            d.flag.store(false, Ordering::SeqCst);
            Ok(Signals { stream })
        }

        pub(crate) async fn next(&mut self) -> Kind {
            loop {
                match self.stream.next().await {
                    Some(SIGHUP) => {
                        tracing::info!(signal = "SIGHUP", "received signal");
                        return Kind::Reload;
                    }
                    Some(sig @ (SIGINT | SIGTERM | SIGQUIT)) => {
                        let name = match sig {
                            SIGINT => "SIGINT",
                            SIGTERM => "SIGTERM",
                            _ => "SIGQUIT",
                        };
                        tracing::info!(signal = name, "received signal");
                        return Kind::Graceful {
                            forcing: sig != SIGQUIT,
                        };
                    }
                    Some(_) => {}
                    None => std::future::pending::<()>().await,
                }
            }
        }
    }

    impl Drop for Signals {
        fn drop(&mut self) {
            self.stream.handle().close();
            if let Ok(d) = defaults() {
                let mut active = d.active.lock().unwrap_or_else(|e| e.into_inner());
                *active -= 1;
                if *active == 0 {
                    d.flag.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::Kind;

    pub(crate) struct Signals;

    impl Signals {
        pub(crate) fn new() -> Self {
            Signals
        }

        pub(crate) async fn next(&mut self) -> Kind {
            loop {
                if tokio::signal::ctrl_c().await.is_ok() {
                    tracing::info!(signal = "Ctrl+C", "received signal");
                    return Kind::Graceful { forcing: true };
                }
            }
        }
    }
}

pub(crate) use imp::Signals;

/// The next signal, or never when signals are off.
pub(crate) async fn next(signals: &mut Option<Signals>) -> Kind {
    match signals {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

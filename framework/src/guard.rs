//! Running user code where a panic must not escape.
//!
//! The runner calls user code in more places than a service's body: the `Drop` of a
//! run's future and of its tied tasks, the `Display`, `Debug` and `source` of the
//! errors it returns, and the `Drop` of a panic's own payload. A panic in any of them
//! must become a reported failure of that service, never a dead supervisor task (a
//! runner that waits for it forever). Everything here catches, and turns what it
//! caught into a message.

use std::any::Any;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The message of a panic's payload (`&str` or `String`; anything else is named as
/// such).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Drops a panic's payload, whose own `Drop` is user code: a panic there is caught,
/// and the payload of that second panic is leaked rather than dropped (a leak of a
/// few bytes instead of a third chance to unwind out of the runner).
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

/// The message of a caught panic, with its payload dropped safely.
pub(crate) fn message(payload: Box<dyn Any + Send>) -> String {
    let text = panic_message(&*payload);
    drop_payload(payload);
    text
}

/// Runs `f`; a panic becomes `Err` with its message.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(message)
}

/// Drops `value` (user code may run in its `Drop`); `Some` with the message if that
/// panicked.
pub(crate) fn drop_caught<T>(value: T) -> Option<String> {
    catch(move || drop(value)).err()
}

/// Writes what `render` writes into a buffer first, so a `Display` or `Debug` that
/// panics half-way leaves no half-written text: `<{what} panicked: message>` instead.
pub(crate) fn write(
    f: &mut fmt::Formatter<'_>,
    what: &str,
    render: impl FnOnce(&mut String) -> fmt::Result,
) -> fmt::Result {
    let mut buf = String::new();
    match catch(|| render(&mut buf)) {
        Ok(Ok(())) => f.write_str(&buf),
        // A formatting error of the user's type is the user's; ours is not to fail.
        Ok(Err(fmt::Error)) => write!(f, "{buf}<{what} returned a formatting error>"),
        Err(panic) => write!(f, "<{what} panicked: {panic}>"),
    }
}

/// The `source` of a user error; a panic in it ends the chain.
pub(crate) fn source<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    catch(|| err.source()).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("bomb");
        }
    }

    struct BadDisplay;
    impl fmt::Display for BadDisplay {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("half")?;
            panic!("display")
        }
    }

    struct Show<'a>(&'a BadDisplay);
    impl fmt::Display for Show<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write(f, "its Display", |buf| {
                use std::fmt::Write;
                write!(buf, "{}", self.0)
            })
        }
    }

    #[test]
    fn a_panicking_drop_is_a_message() {
        assert_eq!(drop_caught(Bomb).as_deref(), Some("bomb"));
        assert_eq!(drop_caught(5), None);
    }

    #[test]
    fn a_payload_whose_drop_panics_is_caught_twice() {
        let payload = catch_unwind(|| std::panic::panic_any(Bomb)).unwrap_err();
        assert_eq!(message(payload), "panic with a non-string payload");
    }

    #[test]
    fn a_panicking_display_writes_no_half_text() {
        assert_eq!(
            Show(&BadDisplay).to_string(),
            "<its Display panicked: display>"
        );
    }
}

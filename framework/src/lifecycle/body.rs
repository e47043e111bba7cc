//! What a service's body returns.

use crate::error::BoxError;

/// What a service body may return: `()` or `Result<(), E>` with `E` convertible into a
/// boxed error (`std::io::Error`, `anyhow::Error`, `Box<dyn Error + Send + Sync>`, …).
///
/// A closure body that loops forever (`async move { loop { .. } }`) has type `!`, which
/// is neither: let the loop end when shutdown is requested
/// ([`ServiceContext::until_shutdown`](crate::ServiceContext::until_shutdown)), which
/// also makes the service stop gracefully, or end the block with `()` after the loop.
///
/// # Examples
///
/// ```
/// use servicekit::lifecycle::IntoServiceResult;
/// assert!(().into_service_result().is_ok());
/// assert!(Err::<(), _>(std::io::Error::other("x")).into_service_result().is_err());
/// ```
#[diagnostic::on_unimplemented(
    message = "a service must return `()` or `Result<(), E>`, not `{Self}`",
    label = "a service's body returns `()` or `Result<(), E>` with `E: Into<Box<dyn Error + Send + Sync>>`",
    note = "a value to hand on belongs in a `Channel` or a `Queue`, not in the service's result",
    note = "a body that loops forever has type `!`: let the loop end on shutdown (`while let Some(..) = ctx.until_shutdown(..).await {{ .. }}`), or end the block with `()` after the loop (and `#[allow(unreachable_code)]` on the enclosing fn)"
)]
pub trait IntoServiceResult {
    /// Converts the body's output.
    fn into_service_result(self) -> Result<(), BoxError>;
}

impl IntoServiceResult for () {
    fn into_service_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError>> IntoServiceResult for Result<(), E> {
    fn into_service_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

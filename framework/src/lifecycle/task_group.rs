//! `TaskGroup`: structured concurrency outside services.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::body::IntoServiceResult;
use crate::error::{TaskError, TaskGroupError};

/// A set of tasks that are waited for together: nothing is left running behind the
/// caller's back.
///
/// * [`TaskGroup::new`] is fail-fast: the first task to fail (error or panic) cancels
///   the others (their [`token`](TaskGroup::token) is cancelled and they are aborted),
///   and [`wait`](TaskGroup::wait) returns that error.
/// * [`TaskGroup::tolerant`] lets every task finish and returns all the errors.
///
/// Dropping the group aborts every task still running.
///
/// # Examples
///
/// ```
/// use servicekit::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut group = TaskGroup::tolerant();
/// group.spawn(async { Ok::<(), std::io::Error>(()) });
/// group.spawn(async { Err::<(), _>(std::io::Error::other("disk full")) });
/// group.spawn(async { assert!(1 + 1 == 3, "oops") });
/// let err = group.wait().await.unwrap_err();
/// assert_eq!(err.errors().len(), 2);
/// # }
/// ```
pub struct TaskGroup {
    set: JoinSet<Result<(), TaskError>>,
    tolerant: bool,
    token: CancellationToken,
    errors: Vec<TaskError>,
}

impl fmt::Debug for TaskGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroup")
            .field("tasks", &self.set.len())
            .field("tolerant", &self.tolerant)
            .finish()
    }
}

impl Default for TaskGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskGroup {
    /// A fail-fast group: the first failure cancels the rest.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = servicekit::TaskGroup::new();
    /// assert!(group.is_empty());
    /// ```
    pub fn new() -> Self {
        TaskGroup {
            set: JoinSet::new(),
            tolerant: false,
            token: CancellationToken::new(),
            errors: Vec::new(),
        }
    }

    /// A tolerant group: every task runs to the end and every error is collected.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = servicekit::TaskGroup::tolerant();
    /// assert_eq!(group.len(), 0);
    /// ```
    pub fn tolerant() -> Self {
        TaskGroup {
            tolerant: true,
            ..Self::new()
        }
    }

    /// Spawns a task on the current runtime. It may return `()` or `Result<(), E>`.
    ///
    /// # Panics
    ///
    /// Panics if called outside a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = servicekit::TaskGroup::new();
    /// group.spawn(async { println!("hi") });
    /// group.wait().await.unwrap();
    /// # }
    /// ```
    pub fn spawn<F>(&mut self, fut: F)
    where
        F: Future + Send + 'static,
        F::Output: IntoServiceResult,
    {
        self.set.spawn(async move {
            match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(out) => out.into_service_result().map_err(TaskError::Failed),
                Err(panic) => Err(TaskError::Panicked(crate::guard::message(panic))),
            }
        });
    }

    /// A token cancelled when a fail-fast group cancels its tasks (or on
    /// [`cancel`](TaskGroup::cancel)): tasks that want to stop cleanly watch it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = servicekit::TaskGroup::new();
    /// let token = group.token();
    /// group.spawn(async move { token.cancelled().await });
    /// group.cancel();
    /// group.wait().await.unwrap();
    /// # }
    /// ```
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Cancels the group's token; tasks that watch it can finish cleanly, and
    /// [`wait`](TaskGroup::wait) still waits for them.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = servicekit::TaskGroup::new();
    /// group.cancel();
    /// assert!(group.token().is_cancelled());
    /// ```
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// Aborts every task at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = servicekit::TaskGroup::new();
    /// group.spawn(std::future::pending::<()>());
    /// group.abort();
    /// group.wait().await.unwrap();
    /// # }
    /// ```
    pub fn abort(&mut self) {
        self.token.cancel();
        self.set.abort_all();
    }

    /// How many tasks have not been waited for yet.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(servicekit::TaskGroup::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether there is no task left to wait for.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(servicekit::TaskGroup::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Waits for every task (including ones spawned while waiting). Fail-fast: on the
    /// first failure the others are cancelled and aborted, and that error is returned.
    /// Tolerant: every error is returned. Aborted tasks are not errors.
    ///
    /// # Errors
    ///
    /// [`TaskGroupError`] with the failures.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: errors seen so far are kept, and a later `wait` carries on. Dropping
    /// the group aborts what is left.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut group = servicekit::TaskGroup::new();
    /// group.spawn(async { Err::<(), _>("bad input") });
    /// group.spawn(std::future::pending::<()>());
    /// let err = group.wait().await.unwrap_err();
    /// assert_eq!(err.errors().len(), 1);
    /// # }
    /// ```
    pub async fn wait(&mut self) -> Result<(), TaskGroupError> {
        while let Some(joined) = self.set.join_next().await {
            let err = match joined {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) if e.is_cancelled() => continue,
                Err(e) => TaskError::Panicked(crate::guard::message(e.into_panic())),
            };
            self.errors.push(err);
            if !self.tolerant {
                self.abort();
            }
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(TaskGroupError::new(std::mem::take(&mut self.errors)))
        }
    }
}

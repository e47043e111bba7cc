//! The errors of [`RedisChannel`](super::RedisChannel) and its customers.

use std::fmt;

/// Why [`RedisChannel::open`](super::RedisChannel::open) failed: nothing is left
/// waiting, and the message says what to fix.
///
/// # Examples
///
/// ```
/// use servicekit::redis::{Options, RedisChannel};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let err = RedisChannel::<String>::open("nonsense://x", "orders", Options::ephemeral())
///     .await
///     .unwrap_err();
/// assert!(err.to_string().starts_with("invalid Redis URL `nonsense://x`"), "{err}");
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL could not be parsed.
    #[error("invalid Redis URL `{url}`: {source}")]
    Url {
        /// The URL as given.
        url: String,
        /// What the client said.
        #[source]
        source: redis::RedisError,
    },
    /// The channel's name is not usable.
    #[error("invalid channel name `{name}`: {reason}")]
    Name {
        /// The name (escaped).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server did not answer within the connect timeout.
    #[error("Redis at {addr} did not answer within {timeout:?}")]
    Timeout {
        /// Where it was looked for.
        addr: String,
        /// How long.
        timeout: std::time::Duration,
    },
    /// The server refused the credentials.
    #[error("Redis at {addr} refused the credentials: {source}")]
    Auth {
        /// The server.
        addr: String,
        /// What it said.
        #[source]
        source: redis::RedisError,
    },
    /// The server could not be reached, or answered with an error.
    #[error("cannot reach Redis at {addr}: {source}")]
    Unreachable {
        /// The server.
        addr: String,
        /// What happened.
        #[source]
        source: redis::RedisError,
    },
}

/// Why a send failed.
///
/// # Examples
///
/// ```
/// use servicekit::redis::SendError;
/// assert_eq!(SendError::Closed.to_string(), "remote channel closed");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The channel was closed (by any process). A durable send appended nothing
    /// (a batch: nothing from the chunk that found it closed). An ephemeral send may
    /// still have been published after the close record, where no customer of the
    /// channel reads (a plain `SUBSCRIBE` of the key would see it).
    #[error("remote channel closed")]
    Closed,
    /// The message could not be encoded: nothing was sent.
    #[error("cannot encode the message: {0}")]
    Encode(String),
    /// Redis failed or could not be reached; the message may or may not have been
    /// sent.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What a remote customer's `recv` returns instead of a message. Only
/// [`Closed`](RecvError::Closed) is final: after any other, `recv` goes on.
///
/// # Examples
///
/// ```
/// use servicekit::redis::RecvError;
/// assert_eq!(
///     RecvError::Reconnected { may_have_missed: true }.to_string(),
///     "reconnected to Redis; messages sent meanwhile may have been missed"
/// );
/// assert!(RecvError::Closed.is_closed());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RecvError {
    /// The channel was closed and everything before the close was received.
    Closed,
    /// `recv_timeout` waited its time.
    Timeout,
    /// The customer's buffer overflowed (an ephemeral customer that does not keep
    /// up): this many messages were dropped, the oldest first.
    Lagged(u64),
    /// The connection was lost and made again. For an ephemeral customer what was
    /// published meanwhile is lost (`may_have_missed`); a durable one misses
    /// nothing.
    Reconnected {
        /// Whether messages may have been missed while disconnected.
        may_have_missed: bool,
    },
    /// One message could not be decoded (another writer, another version, another
    /// codec). It is counted and skipped (a durable one is acknowledged, so it is
    /// not delivered again).
    Decode(DecodeError),
    /// Redis failed; the customer reconnects by itself.
    Redis(redis::RedisError),
}

impl RecvError {
    /// Whether this is [`RecvError::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!servicekit::redis::RecvError::Timeout.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        matches!(self, RecvError::Closed)
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Closed => f.write_str("remote channel closed"),
            RecvError::Timeout => f.write_str("timed out waiting for a message"),
            RecvError::Lagged(n) => write!(f, "customer lagged behind: {n} messages dropped"),
            RecvError::Reconnected { may_have_missed } => {
                f.write_str("reconnected to Redis")?;
                if *may_have_missed {
                    f.write_str("; messages sent meanwhile may have been missed")?;
                }
                Ok(())
            }
            RecvError::Decode(e) => e.fmt(f),
            RecvError::Redis(e) => write!(f, "Redis: {e}"),
        }
    }
}

impl std::error::Error for RecvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecvError::Decode(e) => Some(e),
            RecvError::Redis(e) => Some(e),
            _ => None,
        }
    }
}

/// A message that could not be decoded.
///
/// # Examples
///
/// ```
/// use servicekit::redis::DecodeError;
/// let e = DecodeError { id: Some("1-0".into()), reason: "not JSON".into() };
/// assert_eq!(e.to_string(), "cannot decode message 1-0: not JSON");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Its stream id (durable), if known.
    pub id: Option<String>,
    /// What was wrong.
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "cannot decode message {id}: {}", self.reason),
            None => write!(f, "cannot decode a message: {}", self.reason),
        }
    }
}

impl std::error::Error for DecodeError {}

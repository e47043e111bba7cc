//! Byte streams over named channels: `AsyncWrite` in, `AsyncRead` out.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Hub, HubError};
use crate::messaging::channel::{Channel, Customer, NoCustomers, RecvError, TrySendError};

/// Writes bytes to a named channel: each `write` is one message. From
/// [`Hub::writer`].
///
/// A write the channel cannot take at once (a customer is full, or nobody is
/// connected yet) is accepted and held, like a buffered writer's data: the next
/// `write`, `flush` or `shutdown` sends it first (waiting for room), so backpressure
/// holds and nothing is reordered. Flush (or shut down) when you are done writing; a
/// writer dropped with a message still held tries once more, and logs a warning if
/// the message cannot be delivered. When the last writer of the name shuts down or is
/// dropped, the channel closes: its readers reach end of file after the last message.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// let hub = servicekit::hub::Hub::new();
/// let mut reader = hub.reader("events").unwrap();
/// let mut writer = hub.writer("events").unwrap();
/// writer.write_all(b"event1").await?;
/// writer.write_all(b"event2").await?;
/// writer.shutdown().await?;
/// let mut all = String::new();
/// reader.read_to_string(&mut all).await?;
/// assert_eq!(all, "event1event2");
/// # Ok(())
/// # }
/// ```
pub struct HubWriter {
    hub: Hub<Bytes>,
    channel: Channel<Bytes>,
    /// A message accepted but not sent yet.
    pending: Option<Bytes>,
    /// The live writers of this name; the last one closes the channel.
    writers: Arc<AtomicUsize>,
    shut_down: bool,
}

impl fmt::Debug for HubWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubWriter")
            .field("channel", &self.channel)
            .field("pending", &self.pending.is_some())
            .finish()
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "hub channel closed")
}

impl HubWriter {
    /// Sends the held message, if any, waiting for room (and for a customer).
    fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_some() {
            let sent = ready!(
                self.channel
                    .poll_send(&mut self.pending, cx, NoCustomers::Wait)
            );
            sent.map_err(|_| closed())?;
        }
        Poll::Ready(Ok(()))
    }

    /// This writer is done: the last one of the name closes the channel.
    fn leave(&mut self) {
        if std::mem::replace(&mut self.shut_down, true) {
            return;
        }
        // Under the hub's lock, like the count of a new writer of the name.
        let _names = self.hub.state();
        if self.writers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.channel.close();
        }
    }
}

impl AsyncWrite for HubWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_sent(cx))?;
        if self.shut_down {
            return Poll::Ready(Err(closed()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.channel.try_send(Bytes::copy_from_slice(buf)) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return Poll::Ready(Err(closed())),
            Err(TrySendError::Full(msg) | TrySendError::NoCustomers(msg)) => {
                self.pending = Some(msg);
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_sent(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let sent = ready!(self.poll_sent(cx));
        self.leave();
        Poll::Ready(sent)
    }
}

impl Drop for HubWriter {
    fn drop(&mut self) {
        if let Some(msg) = self.pending.take()
            && self.channel.try_send(msg).is_err()
        {
            tracing::warn!(
                "a hub writer was dropped with a write it could not deliver (flush before dropping it)"
            );
        }
        // Readers see the end instead of waiting forever.
        self.leave();
    }
}

/// Reads the bytes written to a named channel. From [`Hub::reader`].
///
/// As an `AsyncRead` it is a plain byte stream (a message larger than the read
/// buffer is returned over several reads); [`read_message`](Self::read_message) keeps
/// message boundaries. It reaches end of file when the channel is closed (its writer
/// shut down or dropped, or the name removed) and everything was read.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio::io::AsyncWriteExt;
/// let hub = servicekit::hub::Hub::new();
/// let mut reader = hub.reader("data").unwrap();
/// let mut writer = hub.writer("data").unwrap();
/// writer.write_all(b"message 1").await?;
/// writer.write_all(b"message 2").await?;
/// drop(writer);
/// assert_eq!(reader.read_message().await?.as_deref(), Some(&b"message 1"[..]));
/// assert_eq!(reader.read_message().await?.as_deref(), Some(&b"message 2"[..]));
/// assert_eq!(reader.read_message().await?, None);
/// # Ok(())
/// # }
/// ```
pub struct HubReader {
    customer: Customer<Bytes>,
    /// The rest of a message a read did not take whole.
    partial: Bytes,
}

impl fmt::Debug for HubReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubReader")
            .field("customer", &self.customer)
            .field("partial", &self.partial.len())
            .finish()
    }
}

fn read_error(e: RecvError) -> io::Error {
    io::Error::other(e)
}

impl HubReader {
    /// The next message whole (or the rest of one a read took part of); `None` at
    /// end of file.
    ///
    /// # Errors
    ///
    /// An error if the reader was cut off or lost messages (a reader made by the hub
    /// blocks the writer instead, unless its prefix's settings say otherwise).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is only taken when the future completes.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let hub = servicekit::hub::Hub::new();
    /// let mut reader = hub.reader("x").unwrap();
    /// hub.channel("x").unwrap().send(bytes::Bytes::from_static(b"hi")).await.unwrap();
    /// assert_eq!(reader.read_message().await?.as_deref(), Some(&b"hi"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_message(&mut self) -> io::Result<Option<Bytes>> {
        if !self.partial.is_empty() {
            return Ok(Some(std::mem::take(&mut self.partial)));
        }
        match self.customer.recv().await {
            Ok(msg) => Ok(Some(msg)),
            Err(RecvError::Closed) => Ok(None),
            Err(e) => Err(read_error(e)),
        }
    }
}

impl AsyncRead for HubReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.partial.is_empty() {
            match ready!(self.customer.poll_recv(cx)) {
                Ok(msg) => self.partial = msg,
                Err(RecvError::Closed) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(read_error(e))),
            }
        }
        let n = self.partial.len().min(buf.remaining());
        buf.put_slice(&self.partial[..n]);
        self.partial.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl Hub<Bytes> {
    /// A writer to the channel of `name` (made if needed, or made anew if the name's
    /// last stream was closed): see [`HubWriter`].
    ///
    /// # Errors
    ///
    /// As [`Hub::channel`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// use tokio::io::AsyncWriteExt;
    /// let hub = servicekit::hub::Hub::new();
    /// let mut w = hub.writer("log").unwrap();
    /// w.write_all(b"line").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn writer(&self, name: &str) -> Result<HubWriter, HubError> {
        let (channel, writers) = self.entry(name, true)?;
        Ok(HubWriter {
            hub: self.clone(),
            channel,
            pending: None,
            writers,
            shut_down: false,
        })
    }

    /// A reader of the channel of `name` (made if needed): see [`HubReader`]. On a
    /// persistent channel it starts with the messages kept.
    ///
    /// # Errors
    ///
    /// As [`Hub::connect`].
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = servicekit::hub::Hub::new();
    /// let reader = hub.reader("log").unwrap();
    /// # drop(reader);
    /// ```
    pub fn reader(&self, name: &str) -> Result<HubReader, HubError> {
        Ok(HubReader {
            customer: self.connect(name)?,
            partial: Bytes::new(),
        })
    }
}

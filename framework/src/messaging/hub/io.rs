//! Byte streams over named channels: `AsyncWrite` in, `AsyncRead` out.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Hub, HubError};
use crate::messaging::channel::{Channel, Customer, RecvError, SendError, TrySendError};

type Sending = Pin<Box<dyn Future<Output = Result<(), SendError<Bytes>>> + Send>>;

/// Writes bytes to a named channel: each `write` is one message. From
/// [`Hub::writer`].
///
/// A write the channel cannot take at once (a customer is full, or nobody is
/// connected yet) is accepted and held, like a buffered writer's data: the next
/// `write`, `flush` or `shutdown` sends it first (waiting for room), so backpressure
/// holds and nothing is reordered. Flush (or shut down) when you are done writing. Shutting the writer down, or dropping it, closes the channel:
/// its readers reach end of file after the last message.
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
    channel: Channel<Bytes>,
    sending: Option<Sending>,
}

impl fmt::Debug for HubWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubWriter")
            .field("channel", &self.channel)
            .field("sending", &self.sending.is_some())
            .finish()
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "hub channel closed")
}

impl HubWriter {
    /// Waits for the message sent in the background, if any.
    fn poll_sent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(sending) = &mut self.sending {
            let sent = ready!(sending.as_mut().poll(cx));
            self.sending = None;
            sent.map_err(|_| closed())?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HubWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_sent(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.channel.try_send(Bytes::copy_from_slice(buf)) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return Poll::Ready(Err(closed())),
            Err(TrySendError::Full(msg) | TrySendError::NoCustomers(msg)) => {
                let channel = self.channel.clone();
                self.sending = Some(Box::pin(async move { channel.send(msg).await }));
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_sent(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let sent = ready!(self.poll_sent(cx));
        self.channel.close();
        Poll::Ready(sent)
    }
}

impl Drop for HubWriter {
    fn drop(&mut self) {
        // Closed when the writer goes away, even unflushed: readers see the end
        // instead of waiting forever (a message still being sent is dropped with it).
        self.channel.close();
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
    /// A writer to the channel of `name` (made if needed): see [`HubWriter`].
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
        Ok(HubWriter {
            channel: self.channel(name)?,
            sending: None,
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

//! The durable reader: a consumer in a stream's consumer group, on a connection of
//! its own (a blocking read holds its connection; its response timeout is above the
//! block time, unlike the client's 500 ms default, which strands entries in the
//! pending list).
//!
//! Each round: send the acknowledgements the customer made; at least every second,
//! reclaim what other consumers left pending past `reclaim_after`, and what its own
//! name holds past it that its customer does not have (consumer by consumer:
//! `XPENDING … IDLE`, `XCLAIM`), and now and then forget the names of consumers
//! that went; then read new entries. At start and after each reconnect it first
//! takes up the entries its own name holds that its customer does not (a
//! predecessor's, or a read a lost connection swallowed). It waits for room in the
//! customer's buffer rather than drop anything, keeping what waits there fresh for
//! the others' reclaims. An error drops the connection; it is made again with a
//! jittered backoff, forever, and nothing is missed
//! (unacknowledged entries stay pending). What a closed or dropped customer did not
//! finish is handed back to the group through the consumer `servicekit:handed-back`.
//!
//! A customer sees `Closed` once the channel is closed, a last non-blocking read is
//! empty and no consumer of its group holds entries its customer does not have.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::customer::{Buffer, Item, Message, RemoteCustomer};
use super::envelope::Kind;
use super::ephemeral::{BACKOFF_MIN, jittered, next_backoff};
use super::{DecodeError, RecvError, Shared};

/// Where a new consumer group starts reading. It applies only when the group is
/// made: a group that exists goes on from where it was.
///
/// # Examples
///
/// ```
/// use servicekit::redis::{Consumer, Start};
/// let replay = Consumer::fan_out("audit").start(Start::Beginning);
/// let from = Consumer::fan_out("audit-2").start(Start::After("1700000000000-0".into()));
/// # drop((replay, from));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Start {
    /// Only what is sent after the group is made (the default).
    #[default]
    New,
    /// Everything still in the stream.
    Beginning,
    /// What comes after this stream id.
    After(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    FanOut,
    WorkQueue,
    Private,
}

/// How a durable customer consumes: its group, name, start, acknowledgements,
/// reclaiming and dead letters. For [`RedisChannel::connect_as`](super::RedisChannel::connect_as).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use servicekit::redis::Consumer;
///
/// let worker = Consumer::work_queue()
///     .auto_ack(true)
///     .reclaim_after(Duration::from_secs(10))
///     .max_deliveries(3);
/// # drop(worker);
/// ```
#[derive(Debug, Clone)]
pub struct Consumer {
    mode: Mode,
    group: String,
    /// Set by [`name`](Consumer::name); otherwise each customer gets its own.
    name: Option<String>,
    start: Start,
    auto_ack: bool,
    reclaim_after: Duration,
    max_deliveries: u64,
    block: Duration,
    batch: usize,
    prefetch: Option<usize>,
}

fn unique_name() -> String {
    format!("{}-{:08x}", std::process::id(), fastrand::u32(..))
}

impl Consumer {
    fn new(mode: Mode, group: String) -> Consumer {
        Consumer {
            mode,
            group,
            name: None,
            start: Start::New,
            auto_ack: false,
            reclaim_after: Duration::from_secs(30),
            max_deliveries: 5,
            block: Duration::from_secs(1),
            batch: 64,
            prefetch: None,
        }
    }

    /// A fan-out customer: group `name` receives every message, whatever other
    /// groups do. A customer that connects again with the same name goes on where
    /// the group was: what its predecessor held unacknowledged comes again, at
    /// once if the predecessor was closed or dropped, after
    /// [`reclaim_after`](Self::reclaim_after) if its process died (or if Redis was
    /// away when it went, so it could not hand them back). Several customers with
    /// one name share its messages.
    ///
    /// # Examples
    ///
    /// ```
    /// let audit = servicekit::redis::Consumer::fan_out("audit");
    /// # drop(audit);
    /// ```
    pub fn fan_out(name: impl Into<String>) -> Consumer {
        Consumer::new(Mode::FanOut, name.into())
    }

    /// A work-queue customer: every work-queue customer of the channel is in one
    /// group (`workers`, or [`group`](Self::group)), so each message goes to one of
    /// them. It takes 16 ahead of its customer ([`prefetch`](Self::prefetch)).
    ///
    /// # Examples
    ///
    /// ```
    /// let worker = servicekit::redis::Consumer::work_queue();
    /// # drop(worker);
    /// ```
    pub fn work_queue() -> Consumer {
        // A worker takes a few ahead, not a whole buffer's worth: the others get
        // their share, and nothing waits in a buffer until it looks stale.
        Consumer::new(Mode::WorkQueue, "workers".to_owned()).prefetch(16)
    }

    /// What [`RedisChannel::connect`](super::RedisChannel::connect) uses: a group of
    /// its own, removed when the customer is closed.
    pub(crate) fn private() -> Consumer {
        Consumer::new(Mode::Private, format!("customer-{}", unique_name()))
    }

    /// Another group name for a work queue (several independent pools).
    ///
    /// # Examples
    ///
    /// ```
    /// let resizers = servicekit::redis::Consumer::work_queue().group("resizers");
    /// # drop(resizers);
    /// ```
    pub fn group(mut self, name: impl Into<String>) -> Consumer {
        self.group = name.into();
        self
    }

    /// This consumer's name within its group. By default each customer made with
    /// this `Consumer` (or a clone of it) gets a name of its own: the process id
    /// and a random part. A process that restarts with a fixed name gets back what
    /// it left pending at once, without waiting for the reclaim. Two live
    /// customers must not share one: one that starts takes at once what the other
    /// holds, which is then delivered twice.
    ///
    /// # Examples
    ///
    /// ```
    /// let worker = servicekit::redis::Consumer::work_queue().name("worker-1");
    /// # drop(worker);
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Consumer {
        self.name = Some(name.into());
        self
    }

    /// Where a group made now starts ([`Start::New`] by default).
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::redis::{Consumer, Start};
    /// let replay = Consumer::fan_out("late").start(Start::Beginning);
    /// # drop(replay);
    /// ```
    pub fn start(mut self, start: Start) -> Consumer {
        self.start = start;
        self
    }

    /// Acknowledges each message when `recv` is called again (the handler of the
    /// previous one returned), instead of by [`RemoteCustomer::ack`]. A handler
    /// that fails and stops receiving leaves its message pending, to be delivered
    /// again. Off by default.
    ///
    /// # Examples
    ///
    /// ```
    /// let worker = servicekit::redis::Consumer::work_queue().auto_ack(true);
    /// # drop(worker);
    /// ```
    pub fn auto_ack(mut self, on: bool) -> Consumer {
        self.auto_ack = on;
        self
    }

    /// How long an entry may stay pending, unacknowledged, with another consumer
    /// of the group (or under this one's name without its customer having it)
    /// before this one claims it (30 s by default; `XPENDING IDLE` and `XCLAIM`).
    /// Choose it above the longest time a handler takes. A consumer that holds
    /// nothing and has been idle this long (and at least 3 s) is forgotten.
    ///
    /// # Panics
    ///
    /// Below 10 ms.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let worker = servicekit::redis::Consumer::work_queue().reclaim_after(Duration::from_secs(60));
    /// # drop(worker);
    /// ```
    pub fn reclaim_after(mut self, idle: Duration) -> Consumer {
        assert!(
            idle >= Duration::from_millis(10),
            "reclaim_after below 10 ms would take entries from live consumers"
        );
        self.reclaim_after = idle;
        self
    }

    /// After this many deliveries without an acknowledgement, a reclaimed entry
    /// goes to the dead-letter stream (`{name}:dead`) instead of a customer (5 by
    /// default; `u64::MAX` never). A read whose answer a lost connection swallowed
    /// counts as a delivery too.
    ///
    /// # Panics
    ///
    /// If `n` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// let worker = servicekit::redis::Consumer::work_queue().max_deliveries(3);
    /// # drop(worker);
    /// ```
    pub fn max_deliveries(mut self, n: u64) -> Consumer {
        assert!(n > 0, "max_deliveries must be at least 1");
        self.max_deliveries = n;
        self
    }

    /// How many messages the customer's reader takes ahead of it (16 for a work
    /// queue, the channel's [`buffer`](super::Options::buffer) otherwise). A small
    /// prefetch shares the messages out between workers; a large one reads faster.
    /// A message waiting in the buffer is kept fresh for the other consumers'
    /// reclaims; one the customer has taken counts as stale after
    /// [`reclaim_after`](Self::reclaim_after) without an acknowledgement.
    ///
    /// # Panics
    ///
    /// If `n` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// let worker = servicekit::redis::Consumer::work_queue().prefetch(1);
    /// # drop(worker);
    /// ```
    pub fn prefetch(mut self, n: usize) -> Consumer {
        assert!(n > 0, "a reader must take at least one message ahead");
        self.prefetch = Some(n);
        self
    }

    /// How many entries are read at once (64 by default).
    ///
    /// # Panics
    ///
    /// If `n` is zero.
    ///
    /// # Examples
    ///
    /// ```
    /// let fast = servicekit::redis::Consumer::fan_out("bulk").batch(256);
    /// # drop(fast);
    /// ```
    pub fn batch(mut self, n: usize) -> Consumer {
        assert!(n > 0, "a batch must read at least one entry");
        self.batch = n;
        self
    }
}

/// A stream entry: its id and its envelope (`None`: deleted or without one).
type Entry = (String, Option<Vec<u8>>);

/// An entry of a channel's dead-letter stream (`{name}:dead`): a message that did
/// not decode, or was delivered `max_deliveries` times without an
/// acknowledgement. From [`RedisChannel::dead_letters`](super::RedisChannel::dead_letters).
///
/// # Examples
///
/// ```no_run
/// # use servicekit::redis::{Options, RedisChannel};
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let jobs = RedisChannel::<u64>::open("redis://127.0.0.1/", "jobs", Options::durable()).await?;
/// for dead in jobs.dead_letters(100).await? {
///     eprintln!("{} ({} deliveries in `{}`): {}", dead.original_id, dead.deliveries, dead.group, dead.reason);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter<T> {
    /// Its id in the dead-letter stream.
    pub id: String,
    /// Its id in the channel's stream.
    pub original_id: String,
    /// The consumer group that gave up on it.
    pub group: String,
    /// How many times it was delivered.
    pub deliveries: u64,
    /// Why it is here.
    pub reason: String,
    /// The message, or why it does not decode.
    pub payload: Result<T, DecodeError>,
}

/// The oldest `count` dead letters of a channel.
pub(crate) async fn dead_letters<T: DeserializeOwned>(
    shared: &Shared,
    count: usize,
) -> Result<Vec<DeadLetter<T>>, redis::RedisError> {
    let mut conn = shared.conn.clone();
    let reply: Value = redis::cmd("XRANGE")
        .arg(&shared.keys.dead)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await?;
    Ok(items(&reply)
        .iter()
        .filter_map(|entry| {
            let parts = items(entry);
            let id = text(parts.first()?)?;
            let fields = items(parts.get(1)?);
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| text(&kv[0]).as_deref() == Some(name))
                    .and_then(|kv| kv.get(1).and_then(bulk))
            };
            let as_text = |name: &str| {
                field(name)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            let original_id = as_text("id");
            let payload = shared
                .options
                .codec
                .decode::<T>(&field("e").unwrap_or_default())
                .and_then(|e| e.p.ok_or_else(|| "a close record".to_owned()))
                .map_err(|reason| DecodeError {
                    id: Some(original_id.clone()),
                    reason,
                });
            Some(DeadLetter {
                id,
                group: as_text("group"),
                deliveries: as_text("deliveries").parse().unwrap_or(0),
                reason: as_text("reason"),
                original_id,
                payload,
            })
        })
        .collect())
}

fn bulk(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    bulk(v).and_then(|b| String::from_utf8(b).ok())
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// `[id, [field, value, ...]]` entries.
fn parse_entries(v: &Value) -> Vec<Entry> {
    items(v)
        .iter()
        .filter_map(|entry| {
            let parts = items(entry);
            let id = text(parts.first()?)?;
            let fields = match parts.get(1) {
                Some(Value::Map(pairs)) => pairs
                    .iter()
                    .flat_map(|(k, v)| [k.clone(), v.clone()])
                    .collect(),
                Some(v) => items(v).to_vec(),
                None => Vec::new(),
            };
            let envelope = fields
                .chunks(2)
                .find(|kv| text(&kv[0]).as_deref() == Some("e"))
                .and_then(|kv| kv.get(1).and_then(bulk));
            Some((id, envelope))
        })
        .collect()
}

/// The entries of an `XREADGROUP` reply for one stream (nil: none).
fn read_reply(v: &Value) -> Vec<Entry> {
    match v {
        Value::Map(pairs) => pairs
            .first()
            .map(|(_, entries)| parse_entries(entries))
            .unwrap_or_default(),
        _ => items(v)
            .first()
            .map(|stream| parse_entries(items(stream).get(1).unwrap_or(&Value::Nil)))
            .unwrap_or_default(),
    }
}

fn is_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code)
}

/// Makes the group if it does not exist.
async fn ensure_group(
    conn: &mut redis::aio::MultiplexedConnection,
    shared: &Shared,
    consumer: &Consumer,
) -> Result<(), redis::RedisError> {
    let start = match &consumer.start {
        Start::New => "$",
        Start::Beginning => "0",
        Start::After(id) => id.as_str(),
    };
    let made: Result<(), _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&shared.keys.stream)
        .arg(&consumer.group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match made {
        Err(e) if !is_code(&e, "BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

async fn open_reader(
    shared: &Shared,
    consumer: &Consumer,
) -> Result<redis::aio::MultiplexedConnection, redis::RedisError> {
    let timeout = shared.options.connect_timeout;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(consumer.block + timeout));
    let attempt = async {
        let mut conn = shared
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        ensure_group(&mut conn, shared, consumer).await?;
        Ok(conn)
    };
    tokio::time::timeout(timeout + Duration::from_millis(100), attempt)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer from Redis within the connect timeout",
            )))
        })
}

pub(crate) async fn connect<T: DeserializeOwned + Send + 'static>(
    shared: Arc<Shared>,
    consumer: Consumer,
) -> Result<RemoteCustomer<T>, RecvError> {
    let conn = open_reader(&shared, &consumer)
        .await
        .map_err(RecvError::Redis)?;
    let buffer = Buffer::new(consumer.prefetch.unwrap_or(shared.options.buffer), true);
    let gone = CancellationToken::new();
    let stop = gone.child_token();
    let auto_ack = consumer.auto_ack;
    let reader = Reader {
        shared,
        name: consumer.name.clone().unwrap_or_else(unique_name),
        consumer,
        buffer: buffer.clone(),
        stop: stop.clone(),
        gone: gone.clone(),
    };
    tokio::spawn(reader.run(conn));
    Ok(RemoteCustomer::new(buffer, gone, stop, auto_ack))
}

struct Reader<T> {
    shared: Arc<Shared>,
    consumer: Consumer,
    /// This customer's consumer name in the group.
    name: String,
    buffer: Arc<Buffer<T>>,
    /// The customer closed or went: no more reading.
    stop: CancellationToken,
    /// The customer went: no more acknowledgements either.
    gone: CancellationToken,
}

/// Moves entries this consumer still owns (another may have claimed them
/// meanwhile) to a consumer, with an idle time, keeping or lowering their delivery
/// counts. `KEYS[1]` the stream; `ARGV` the group, the owner they must still have,
/// the consumer to give them to, the idle time in ms, `1` to lower the counts by
/// one, the ids.
///
/// Handing back gives them to [`HANDED_BACK`], idle for the reclaim time: every
/// live consumer of the group (a successor with the same name too) sees them as
/// another's and reclaims them, and a closing one waits for them (lowered for
/// those no customer saw). Keeping fresh gives them to the owner itself, idle 0,
/// so entries waiting in a live customer's buffer do not look stale.
const SET_IDLE: &str = r#"
local n = 0
for i = 6, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if row and row[2] == ARGV[2] then
    local count = row[4]
    if ARGV[5] == '1' and count > 0 then count = count - 1 end
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[i],
      'IDLE', ARGV[4], 'RETRYCOUNT', count, 'JUSTID')
    n = n + 1
  end
end
return n
"#;

/// The consumer that entries handed back wait under until a live consumer of
/// the group reclaims them (it never reads).
const HANDED_BACK: &str = "servicekit:handed-back";

static SET_IDLE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(SET_IDLE));

/// Forgets the consumers of a group that hold nothing and have been idle for
/// longer than a time: those of customers that went (each customer has a name of
/// its own, so every one that goes, or dies, leaves one). `KEYS[1]` the stream;
/// `ARGV` the group, the idle time in ms, the caller's name (kept).
///
/// One script, so a consumer is removed only while it holds nothing: nothing
/// pending is ever dropped with it. Before 7.2, Redis counts a consumer's idle
/// time from the last entry it was given, not from its last read, so a live
/// customer that has had nothing for that long is forgotten too; the read that
/// next gives it an entry, a blocked one included, makes its consumer again
/// (checked on 7.0).
const FORGET_IDLE: &str = r#"
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) and f['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
"#;

static FORGET_IDLE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(FORGET_IDLE));

/// Why a round ended the reading.
enum Ended {
    /// The channel is closed and everything before the close was handed over.
    Closed,
    /// The customer went.
    Stopped,
}

impl<T: DeserializeOwned> Reader<T> {
    async fn run(self, conn: redis::aio::MultiplexedConnection) {
        if let Ended::Closed = self.read(conn).await {
            self.buffer.end();
        } else {
            // Closed by its owner: what it had not taken goes back at once.
            self.release(self.buffer.drain_ids(), true).await;
        }
        // Acknowledgements still come for what the customer holds, until it goes.
        loop {
            tokio::select! {
                () = self.gone.cancelled() => break,
                () = self.buffer.wake_reader.notified() => self.flush_acks().await,
            }
        }
        self.flush_acks().await;
        // What it held unacknowledged is delivered again; what it never took
        // does not count as a delivery.
        self.release(self.buffer.take_held(), false).await;
        self.release(self.buffer.drain_ids(), true).await;
        if self.consumer.mode == Mode::Private {
            let mut conn = self.shared.conn.clone();
            let _: Result<(), _> = redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(&self.shared.keys.stream)
                .arg(&self.consumer.group)
                .query_async(&mut conn)
                .await;
        }
    }

    /// Sends the acknowledgements the customer made; keeps them on failure.
    async fn flush_acks(&self) {
        let ids = self.buffer.take_acks();
        if ids.is_empty() {
            return;
        }
        let mut conn = self.shared.conn.clone();
        let acked: Result<(), _> = redis::cmd("XACK")
            .arg(&self.shared.keys.stream)
            .arg(&self.consumer.group)
            .arg(&ids)
            .query_async(&mut conn)
            .await;
        if let Err(e) = acked {
            tracing::debug!(channel = %self.shared.keys.name, error = %e, "redis: acknowledgements kept for later");
            self.buffer.return_acks(ids);
        }
    }

    /// Hands entries delivered to this consumer back to its group ([`SET_IDLE`]);
    /// `unseen`: no customer saw them, so their delivery doesn't count.
    async fn release(&self, ids: Vec<String>, unseen: bool) {
        let idle = self.consumer.reclaim_after.as_millis() as u64;
        self.set_idle(ids, HANDED_BACK, idle, unseen).await;
    }

    /// Marks the entries waiting in the customer's buffer as fresh: they are
    /// held, not stale, for other consumers' reclaims.
    async fn touch_buffered(&self) {
        let ids = self.buffer.buffered_ids();
        self.set_idle(ids, &self.name, 0, false).await;
    }

    async fn set_idle(&self, ids: Vec<String>, to: &str, idle: u64, lower: bool) {
        if ids.is_empty() {
            return;
        }
        let mut conn = self.shared.conn.clone();
        let mut invocation = SET_IDLE_SCRIPT.key(&self.shared.keys.stream);
        invocation
            .arg(&self.consumer.group)
            .arg(&self.name)
            .arg(to)
            .arg(idle)
            .arg(if lower { "1" } else { "0" })
            .arg(&ids);
        let done: Result<i64, _> = invocation.invoke_async(&mut conn).await;
        if let Err(e) = done {
            tracing::debug!(channel = %self.shared.keys.name, error = %e, "redis: idle times not set");
        }
    }

    /// Waits for room in the customer's buffer, sending acknowledgements and
    /// keeping what waits in the buffer fresh meanwhile.
    async fn room(&self) -> bool {
        loop {
            let notified = self.buffer.wake_reader.notified();
            if self.buffer.room() > 0 {
                return true;
            }
            tokio::select! {
                () = self.stop.cancelled() => return false,
                () = notified => self.flush_acks().await,
                () = tokio::time::sleep(self.consumer.reclaim_after / 2) => self.touch_buffered().await,
            }
        }
    }

    async fn read(&self, first: redis::aio::MultiplexedConnection) -> Ended {
        let mut conn = Some(first);
        // While `Some`, the reader goes through what this consumer name already
        // holds (a predecessor's entries, or its own before a reconnect), from this
        // id on; then through new entries.
        let mut own_from = Some(String::new());
        let mut next_reclaim = Instant::now();
        let mut next_touch = Instant::now();
        let mut next_forget = Instant::now();
        let mut delay = BACKOFF_MIN;
        // The close record (or the closed flag) was seen: no read waits any more.
        let mut closing = false;
        loop {
            if self.stop.is_cancelled() {
                return Ended::Stopped;
            }
            self.flush_acks().await;
            if !self.room().await {
                return Ended::Stopped;
            }
            let c = match &mut conn {
                Some(c) => c,
                None => {
                    tokio::select! {
                        () = self.stop.cancelled() => return Ended::Stopped,
                        () = tokio::time::sleep(jittered(delay)) => {}
                    }
                    match open_reader(&self.shared, &self.consumer).await {
                        Ok(c) => {
                            tracing::info!(channel = %self.shared.keys.name, "redis: stream reader connected again");
                            self.buffer.notice(RecvError::Reconnected {
                                may_have_missed: false,
                            });
                            own_from = Some(String::new());
                            conn.insert(c)
                        }
                        Err(e) => {
                            tracing::debug!(channel = %self.shared.keys.name, error = %e, "redis: reconnect failed");
                            delay = next_backoff(delay);
                            continue;
                        }
                    }
                }
            };
            if Instant::now() >= next_touch {
                next_touch = Instant::now() + self.consumer.reclaim_after / 2;
                self.touch_buffered().await;
            }
            let round = if Instant::now() >= next_reclaim {
                next_reclaim = Instant::now() + self.reclaim_every();
                if Instant::now() >= next_forget {
                    next_forget = Instant::now() + self.forget_after();
                    self.forget_idle(c).await;
                }
                self.reclaim(c).await.map(|()| None)
            } else if let Some(from) = &mut own_from {
                match self.recover_own(c, from).await {
                    Ok(true) => Ok(None),
                    Ok(false) => {
                        own_from = None;
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.read_new(c, next_reclaim, &mut closing).await
            };
            match round {
                // The backoff starts over only once a round went through.
                Ok(None) => delay = BACKOFF_MIN,
                Ok(Some(ended)) => return ended,
                Err(e) if is_code(&e, "NOGROUP") => {
                    // The stream or group went (deleted, or a server without its
                    // data): made again at the next connection.
                    tracing::warn!(channel = %self.shared.keys.name, "redis: consumer group missing, making it again");
                    conn = None;
                }
                Err(e) => {
                    tracing::warn!(channel = %self.shared.keys.name, error = %e, "redis: stream reader lost its connection");
                    self.buffer.notice(RecvError::Redis(e));
                    conn = None;
                }
            }
        }
    }

    /// How often stale entries are looked for: at least every second, so what a
    /// closed customer handed back is taken up soon.
    fn reclaim_every(&self) -> Duration {
        (self.consumer.reclaim_after / 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// How long a consumer of the group that holds nothing must have been idle to
    /// be forgotten: `reclaim_after`, and at least three blocking reads (a quiet
    /// live customer is forgotten too, see [`FORGET_IDLE`]: not at every round).
    fn forget_after(&self) -> Duration {
        self.consumer.reclaim_after.max(self.consumer.block * 3)
    }

    /// Forgets the group's consumers that went ([`FORGET_IDLE`]). A private
    /// group has only this one. Housekeeping: a failure is logged, and the reclaim
    /// that follows finds a broken connection.
    async fn forget_idle(&self, conn: &mut redis::aio::MultiplexedConnection) {
        if self.consumer.mode == Mode::Private {
            return;
        }
        let mut invocation = FORGET_IDLE_SCRIPT.key(&self.shared.keys.stream);
        invocation
            .arg(&self.consumer.group)
            .arg(self.forget_after().as_millis() as u64)
            .arg(&self.name);
        match invocation.invoke_async::<i64>(conn).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(channel = %self.shared.keys.name, group = %self.consumer.group, forgotten = n, "redis: consumers that went are forgotten");
            }
            Err(e) => {
                tracing::debug!(channel = %self.shared.keys.name, error = %e, "redis: consumers not forgotten");
            }
        }
    }

    /// How many entries to read now: a batch, within the room the customer has.
    fn count(&self) -> usize {
        self.consumer.batch.min(self.buffer.room().max(1))
    }

    /// Takes up, page by page after `from`, the entries this consumer name holds
    /// that its customer does not (a predecessor's of the same name, or one read
    /// whose answer a lost connection swallowed); returns whether the page had
    /// any. What the customer holds or has buffered is left alone.
    async fn recover_own(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        from: &mut String,
    ) -> Result<bool, redis::RedisError> {
        let start = if from.is_empty() {
            "-".to_owned()
        } else {
            format!("({from}")
        };
        let reply: Value = redis::cmd("XPENDING")
            .arg(&self.shared.keys.stream)
            .arg(&self.consumer.group)
            .arg(start)
            .arg("+")
            .arg(self.count())
            .arg(&self.name)
            .query_async(conn)
            .await?;
        let rows = pending_rows(&reply);
        let Some(last) = rows.last() else {
            return Ok(false);
        };
        *from = last.id.clone();
        let handed_out = self.buffer.handed_out();
        let lost: Vec<PendingRow> = rows
            .into_iter()
            .filter(|row| !handed_out.contains(&row.id))
            .collect();
        self.claim(conn, lost, 0).await?;
        Ok(true)
    }

    /// Claims `rows` for this consumer (if idle for `min_idle` ms still) and hands
    /// them over, counting the claim as a delivery.
    async fn claim(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        rows: Vec<PendingRow>,
        min_idle: u64,
    ) -> Result<(), redis::RedisError> {
        if rows.is_empty() {
            return Ok(());
        }
        let reply: Value = redis::cmd("XCLAIM")
            .arg(&self.shared.keys.stream)
            .arg(&self.consumer.group)
            .arg(&self.name)
            .arg(min_idle)
            .arg(rows.iter().map(|row| row.id.as_str()).collect::<Vec<_>>())
            .query_async(conn)
            .await?;
        for (id, envelope) in parse_entries(&reply) {
            let deliveries = rows
                .iter()
                .find(|row| row.id == id)
                .map_or(1, |row| row.deliveries + 1);
            // A close record among them is acknowledged; the closed flag ends the
            // reading later.
            self.hand_over(id, envelope, deliveries).await?;
        }
        Ok(())
    }

    /// One `XREADGROUP` of new entries; acknowledgements the customer makes
    /// meanwhile are sent on the shared connection.
    async fn read_new(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        until: Instant,
        closing: &mut bool,
    ) -> Result<Option<Ended>, redis::RedisError> {
        // Not past the next reclaim; once closing, only waiting for entries its
        // customer lacks (other consumers', or left under its own name), looked
        // at by the reclaim.
        let block = self
            .consumer
            .block
            .min(until.saturating_duration_since(Instant::now()));
        if *closing {
            // Waiting for entries it lacks (reclaimed when stale).
            tokio::select! {
                () = self.stop.cancelled() => return Ok(Some(Ended::Stopped)),
                () = tokio::time::sleep(block.min(Duration::from_millis(250))) => {}
            }
            return self.closed_and_done(conn, closing).await;
        }
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.consumer.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.count())
            .arg("BLOCK")
            .arg((block.as_millis() as u64).max(1))
            .arg("STREAMS")
            .arg(&self.shared.keys.stream)
            .arg(">");
        let reply = {
            let read = cmd.query_async::<Value>(conn);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    r = &mut read => break r?,
                    () = self.buffer.wake_reader.notified() => self.flush_acks().await,
                    () = self.stop.cancelled() => {
                        // The read goes on at the server: what it gets is this
                        // consumer's now, so it is handed back to the group.
                        let limit = self.consumer.block + self.shared.options.connect_timeout;
                        if let Ok(Ok(reply)) = tokio::time::timeout(limit, read).await {
                            let ids = read_reply(&reply).into_iter().map(|(id, _)| id).collect();
                            self.release(ids, true).await;
                        }
                        return Ok(Some(Ended::Stopped));
                    }
                }
            }
        };
        let entries = read_reply(&reply);
        if entries.is_empty() {
            return self.closed_and_done(conn, closing).await;
        }
        for (id, envelope) in entries {
            // Nothing comes after the close record; whether this customer is done
            // is for `closed_and_done` to say.
            *closing |= self.hand_over(id, envelope, 1).await?;
        }
        if *closing {
            return self.closed_and_done(conn, closing).await;
        }
        Ok(None)
    }

    /// After an empty read: whether the channel is closed and this customer is
    /// done. A work queue's close record goes to one worker, so the others end on
    /// the closed flag; but only once a second, non-blocking read is empty too (a
    /// send and the close may have come between the first read and the flag) and
    /// no consumer of the group still holds entries its customer lacks (a dead
    /// one's must be reclaimed first).
    async fn closed_and_done(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        closing: &mut bool,
    ) -> Result<Option<Ended>, redis::RedisError> {
        if !*closing {
            let closed: bool = redis::cmd("EXISTS")
                .arg(&self.shared.keys.closed)
                .query_async(conn)
                .await?;
            if !closed {
                return Ok(None);
            }
            *closing = true;
        }
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.consumer.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(self.count())
            .arg("STREAMS")
            .arg(&self.shared.keys.stream)
            .arg(">")
            .query_async(conn)
            .await?;
        let entries = read_reply(&reply);
        if !entries.is_empty() {
            for (id, envelope) in entries {
                self.hand_over(id, envelope, 1).await?;
            }
            return Ok(None);
        }
        for (consumer, n) in self.holding(conn).await? {
            if consumer != self.name || self.holds_what_it_lacks(conn, n).await? {
                return Ok(None);
            }
        }
        Ok(Some(Ended::Closed))
    }

    /// Whether this consumer name holds (of its `n` pending entries) one that its
    /// customer does not have.
    async fn holds_what_it_lacks(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        n: u64,
    ) -> Result<bool, redis::RedisError> {
        let reply: Value = redis::cmd("XPENDING")
            .arg(&self.shared.keys.stream)
            .arg(&self.consumer.group)
            .arg("-")
            .arg("+")
            .arg(n)
            .arg(&self.name)
            .query_async(conn)
            .await?;
        let handed_out = self.buffer.handed_out();
        Ok(pending_rows(&reply)
            .iter()
            .any(|row| !handed_out.contains(&row.id)))
    }

    /// Hands one entry over (or, past `max_deliveries`, to the dead letters);
    /// returns whether it was the close record.
    async fn hand_over(
        &self,
        id: String,
        envelope: Option<Vec<u8>>,
        deliveries: u64,
    ) -> Result<bool, redis::RedisError> {
        let Some(bytes) = envelope else {
            // Trimmed away while pending, or written without an envelope field.
            self.buffer.ack_later(id);
            return Ok(false);
        };
        if deliveries > self.consumer.max_deliveries {
            let reason = format!("not acknowledged after {} deliveries", deliveries - 1);
            self.dead_letter(&id, &bytes, deliveries - 1, &reason)
                .await?;
            return Ok(false);
        }
        match self.shared.options.codec.decode::<T>(&bytes) {
            Ok(envelope) if envelope.k == Kind::Close => {
                self.buffer.ack_later(id);
                self.flush_acks().await;
                Ok(true)
            }
            Ok(envelope) => {
                let sent_at = envelope.sent_at();
                self.buffer.push(Item::Msg(Message {
                    id,
                    sent_at,
                    payload: envelope.p.expect("checked by decode"),
                    deliveries,
                }));
                Ok(false)
            }
            Err(reason) => {
                self.dead_letter(&id, &bytes, deliveries, &reason).await?;
                self.buffer.malformed(RecvError::Decode(DecodeError {
                    id: Some(id),
                    reason,
                }));
                Ok(false)
            }
        }
    }

    /// Moves an entry to the dead-letter stream and acknowledges it, in one
    /// transaction.
    async fn dead_letter(
        &self,
        id: &str,
        bytes: &[u8],
        deliveries: u64,
        reason: &str,
    ) -> Result<(), redis::RedisError> {
        let keys = &self.shared.keys;
        let mut conn = self.shared.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(&keys.dead)
            .arg("*")
            .arg("e")
            .arg(bytes)
            .arg("id")
            .arg(id)
            .arg("group")
            .arg(&self.consumer.group)
            .arg("deliveries")
            .arg(deliveries)
            .arg("reason")
            .arg(reason)
            .ignore()
            .cmd("XACK")
            .arg(&keys.stream)
            .arg(&self.consumer.group)
            .arg(id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// Claims entries consumers of the group have left pending past
    /// `reclaim_after`, looked for consumer by consumer so one cannot fill the
    /// page; those delivered `max_deliveries` times already go to the dead
    /// letters. This consumer name's own are taken too, but only those its
    /// customer does not have: another customer of the same name (one it replaced
    /// whose last read was still under way) may have left them.
    async fn reclaim(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), redis::RedisError> {
        let idle = self.consumer.reclaim_after.as_millis() as u64;
        let mut stale = Vec::new();
        for (consumer, _) in self.holding(conn).await? {
            let room = self.count().saturating_sub(stale.len());
            if room == 0 {
                break;
            }
            // Its own name holds what its customer has too: a page with room for
            // those, which are left out.
            let handed_out = (consumer == self.name).then(|| self.buffer.handed_out());
            let page = room + handed_out.as_ref().map_or(0, |ids| ids.len());
            let reply: Value = redis::cmd("XPENDING")
                .arg(&self.shared.keys.stream)
                .arg(&self.consumer.group)
                .arg("IDLE")
                .arg(idle)
                .arg("-")
                .arg("+")
                .arg(page)
                .arg(&consumer)
                .query_async(conn)
                .await?;
            let mut rows = pending_rows(&reply);
            if let Some(ids) = handed_out {
                rows.retain(|row| !ids.contains(&row.id));
                rows.truncate(room);
            }
            stale.extend(rows);
        }
        if !stale.is_empty() {
            tracing::info!(channel = %self.shared.keys.name, count = stale.len(), "redis: reclaiming entries left pending");
        }
        self.claim(conn, stale, idle).await
    }

    /// The consumers of the group that hold entries, with how many.
    async fn holding(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<Vec<(String, u64)>, redis::RedisError> {
        let summary: Value = redis::cmd("XPENDING")
            .arg(&self.shared.keys.stream)
            .arg(&self.consumer.group)
            .query_async(conn)
            .await?;
        Ok(items(items(&summary).get(3).unwrap_or(&Value::Nil))
            .iter()
            .filter_map(|row| {
                let row = items(row);
                let name = text(row.first()?)?;
                let n = match row.get(1)? {
                    Value::Int(n) => *n as u64,
                    v => text(v)?.parse().ok()?,
                };
                (n > 0).then_some((name, n))
            })
            .collect())
    }
}

/// A row of the extended form of `XPENDING`.
struct PendingRow {
    id: String,
    deliveries: u64,
}

fn pending_rows(reply: &Value) -> Vec<PendingRow> {
    items(reply)
        .iter()
        .filter_map(|row| {
            let row = items(row);
            let deliveries = match row.get(3)? {
                Value::Int(n) => *n as u64,
                _ => return None,
            };
            Some(PendingRow {
                id: text(row.first()?)?,
                deliveries,
            })
        })
        .collect()
}

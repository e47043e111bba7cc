//! The versioned envelope every message travels in, and its codecs.
//!
//! An envelope is `{v, k, id, ts, p}`: the format version, the kind (`data` or
//! `close`), an id unique to the message, the time it was sent (milliseconds since
//! the Unix epoch) and the payload. A close is a record of its own kind, never a
//! payload with a magic value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The envelope format this build writes and reads.
pub(crate) const VERSION: u8 = 1;

/// How messages are encoded on the wire.
///
/// # Examples
///
/// ```
/// use servicekit::redis::{Codec, Options};
/// let options = Options::durable().codec(Codec::MessagePack);
/// # drop(options);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// JSON: readable with `redis-cli`, and by programs in any language.
    #[default]
    Json,
    /// MessagePack (with field names): smaller and faster to decode.
    MessagePack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Data,
    Close,
}

#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
pub(crate) struct Envelope<P> {
    pub(crate) v: u8,
    pub(crate) k: Kind,
    pub(crate) id: String,
    pub(crate) ts: u64,
    // Present (whatever its value, `null` included: a `()` or `None` payload) in a
    // data envelope, absent in a close record.
    #[serde(
        default = "none",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub(crate) p: Option<P>,
}

fn none<P>() -> Option<P> {
    None
}

fn present<'de, D: serde::Deserializer<'de>, P: Deserialize<'de>>(
    d: D,
) -> Result<Option<P>, D::Error> {
    P::deserialize(d).map(Some)
}

/// Only the header, to say why an envelope did not decode.
#[derive(Deserialize)]
struct Header {
    v: u64,
}

impl<P> Envelope<P> {
    pub(crate) fn sent_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.ts)
    }
}

/// A fresh envelope id: this process's random prefix and a counter.
pub(crate) fn new_id() -> String {
    use std::fmt::Write;
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| format!("{:016x}-", fastrand::u64(..)));
    let mut id = String::with_capacity(prefix.len() + 12);
    id.push_str(prefix);
    let _ = write!(id, "{:x}", NEXT.fetch_add(1, Ordering::Relaxed));
    id
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Codec {
    /// A data envelope around `payload`.
    pub(crate) fn data<T: Serialize>(self, payload: &T) -> Result<Vec<u8>, String> {
        self.encode(&Envelope {
            v: VERSION,
            k: Kind::Data,
            id: new_id(),
            ts: now_ms(),
            p: Some(payload),
        })
    }

    /// A close record.
    pub(crate) fn close(self) -> Vec<u8> {
        self.encode(&Envelope::<()> {
            v: VERSION,
            k: Kind::Close,
            id: new_id(),
            ts: now_ms(),
            p: None,
        })
        .expect("a close record always encodes")
    }

    fn encode<P: Serialize>(self, envelope: &Envelope<P>) -> Result<Vec<u8>, String> {
        match self {
            Codec::Json => serde_json::to_vec(envelope).map_err(|e| e.to_string()),
            Codec::MessagePack => rmp_serde::to_vec_named(envelope).map_err(|e| e.to_string()),
        }
    }

    /// Decodes an envelope; the error says what was wrong with it.
    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<Envelope<T>, String> {
        let envelope: Result<Envelope<T>, String> = match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Codec::MessagePack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
        };
        match envelope {
            Ok(e) if e.v == VERSION => match (e.k, &e.p) {
                (Kind::Data, None) => Err("a data envelope without a payload".to_owned()),
                _ => Ok(e),
            },
            Ok(e) => Err(self.version_error(e.v.into())),
            Err(reason) => {
                // A newer format may not decode as this one: name its version.
                let header: Option<Header> = match self {
                    Codec::Json => serde_json::from_slice(bytes).ok(),
                    Codec::MessagePack => rmp_serde::from_slice(bytes).ok(),
                };
                Err(match header {
                    Some(h) if h.v != u64::from(VERSION) => self.version_error(h.v),
                    _ => format!("not a {self:?} envelope of this channel: {reason}"),
                })
            }
        }
    }

    fn version_error(self, v: u64) -> String {
        format!("envelope version {v}, this build reads version {VERSION}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_says_what_is_wrong() {
        for codec in [Codec::Json, Codec::MessagePack] {
            let bytes = codec.data(&vec![1u32, 2]).unwrap();
            let e: Envelope<Vec<u32>> = codec.decode(&bytes).unwrap();
            assert_eq!((e.v, e.k, e.p), (1, Kind::Data, Some(vec![1, 2])));
            let e: Envelope<Vec<u32>> = codec.decode(&codec.close()).unwrap();
            assert_eq!((e.k, e.p), (Kind::Close, None));
            let err = codec.decode::<Vec<u32>>(b"\xff garbage").err().unwrap();
            assert!(err.starts_with("not a"), "{err}");
        }
        let newer = br#"{"v":2,"k":"data","id":"x","ts":0,"p":"anything"}"#;
        assert_eq!(
            Codec::Json.decode::<u32>(newer).err().unwrap(),
            "envelope version 2, this build reads version 1"
        );
        let wrong_type = br#"{"v":1,"k":"data","id":"x","ts":0,"p":"text"}"#;
        assert!(Codec::Json.decode::<u32>(wrong_type).is_err());
        let msgpack = Codec::MessagePack.data(&7u32).unwrap();
        assert!(Codec::Json.decode::<u32>(&msgpack).is_err());
        let far = br#"{"v":300,"k":"data","id":"x","ts":0,"p":1}"#;
        assert_eq!(
            Codec::Json.decode::<u32>(far).err().unwrap(),
            "envelope version 300, this build reads version 1"
        );
    }

    #[test]
    fn a_unit_or_none_payload_is_a_payload() {
        for codec in [Codec::Json, Codec::MessagePack] {
            let e: Envelope<()> = codec.decode(&codec.data(&()).unwrap()).unwrap();
            assert_eq!(e.p, Some(()));
            let e: Envelope<Option<u8>> = codec.decode(&codec.data(&None::<u8>).unwrap()).unwrap();
            assert_eq!(e.p, Some(None));
        }
    }
}

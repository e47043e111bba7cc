//! The versioned envelope every message travels in, and its codecs.
//!
//! An envelope is an array: `[version, kind, id, time, payload]`, the format
//! version (1), the kind (`"data"`, or `"close"` without a payload), an id unique
//! to the message (a random prefix of the sending process and a counter), the time
//! it was sent (milliseconds since the Unix epoch) and the payload. A close is a
//! record of its own kind, never a payload with a magic value. In JSON:
//! `[1,"data","5eed0a1b2c3d2a",1796400000000,{"id":7}]`.
//!
//! An array rather than an object with named fields: the names would be most of a
//! small message's bytes, and the bytes are what pub/sub throughput is made of
//! (`framework/benches/redis.rs`).

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{self, DeserializeOwned, IgnoredAny, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

pub(crate) struct Envelope<P> {
    pub(crate) v: u8,
    pub(crate) k: Kind,
    pub(crate) id: String,
    pub(crate) ts: u64,
    /// `Some` in a data envelope (whatever its value: a `()` or `None` payload
    /// too), `None` in a close record.
    pub(crate) p: Option<P>,
}

impl<P: Serialize> Serialize for Envelope<P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(if self.p.is_some() { 5 } else { 4 })?;
        t.serialize_element(&self.v)?;
        t.serialize_element(&self.k)?;
        t.serialize_element(&self.id)?;
        t.serialize_element(&self.ts)?;
        if let Some(p) = &self.p {
            t.serialize_element(p)?;
        }
        t.end()
    }
}

impl<'de, P: Deserialize<'de>> Deserialize<'de> for Envelope<P> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(EnvelopeVisitor(PhantomData))
    }
}

struct EnvelopeVisitor<P>(PhantomData<P>);

fn missing<E: de::Error>(what: &str) -> E {
    E::custom(format!("an envelope without {what}"))
}

impl<'de, P: Deserialize<'de>> Visitor<'de> for EnvelopeVisitor<P> {
    type Value = Envelope<P>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope [version, kind, id, time, payload]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Envelope<P>, A::Error> {
        let v: u64 = seq.next_element()?.ok_or_else(|| missing("a version"))?;
        if v != u64::from(VERSION) {
            return Err(de::Error::custom(version_error(v)));
        }
        let k: Kind = seq.next_element()?.ok_or_else(|| missing("a kind"))?;
        let id: String = seq.next_element()?.ok_or_else(|| missing("an id"))?;
        let ts: u64 = seq.next_element()?.ok_or_else(|| missing("a time"))?;
        let p = match k {
            Kind::Data => Some(
                seq.next_element::<P>()?
                    .ok_or_else(|| de::Error::custom("a data envelope without a payload"))?,
            ),
            Kind::Close => None,
        };
        Ok(Envelope {
            v: VERSION,
            k,
            id,
            ts,
            p,
        })
    }
}

/// Only the version, to name it when an envelope does not decode.
struct Version(u64);

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array starting with a version")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Version, A::Error> {
                let v = seq.next_element()?.ok_or_else(|| missing("a version"))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Version(v))
            }
        }
        d.deserialize_seq(V)
    }
}

fn version_error(v: u64) -> String {
    format!("envelope version {v}, this build reads version {VERSION}")
}

impl<P> Envelope<P> {
    pub(crate) fn sent_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.ts)
    }
}

/// A fresh envelope id: this process's random 48-bit prefix (12 hex digits) and a
/// counter.
pub(crate) fn new_id() -> String {
    use std::fmt::Write;
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| format!("{:012x}", fastrand::u64(..1 << 48)));
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
            // Payload structs keep their field names.
            Codec::MessagePack => rmp_serde::to_vec_named(envelope).map_err(|e| e.to_string()),
        }
    }

    /// Decodes an envelope; the error says what was wrong with it.
    pub(crate) fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<Envelope<T>, String> {
        let envelope: Result<Envelope<T>, String> = match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Codec::MessagePack => rmp_serde::from_slice(bytes).map_err(|e| e.to_string()),
        };
        envelope.map_err(|reason| {
            // Another version may not decode as this one at all: name it.
            let version: Option<Version> = match self {
                Codec::Json => serde_json::from_slice(bytes).ok(),
                Codec::MessagePack => rmp_serde::from_slice(bytes).ok(),
            };
            match version {
                Some(Version(v)) if v != u64::from(VERSION) => version_error(v),
                _ => format!("not a {self:?} envelope of this channel: {reason}"),
            }
        })
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
        let bytes = Codec::Json.data(&7u32).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("[1,\"data\",\""), "{text}");
        assert!(text.ends_with(",7]"), "{text}");
        assert_eq!(
            String::from_utf8(Codec::Json.close())
                .unwrap()
                .matches(',')
                .count(),
            3,
            "a close record has no payload"
        );
        let newer = br#"[2,"data","x",0,"anything",{"more":1}]"#;
        assert_eq!(
            Codec::Json.decode::<u32>(newer).err().unwrap(),
            "envelope version 2, this build reads version 1"
        );
        let wrong_type = br#"[1,"data","x",0,"text"]"#;
        assert!(Codec::Json.decode::<u32>(wrong_type).is_err());
        let msgpack = Codec::MessagePack.data(&7u32).unwrap();
        assert!(Codec::Json.decode::<u32>(&msgpack).is_err());
        for bad in [
            &br#"[1,"data","x",0]"#[..],
            br#"[1,"other","x",0,1]"#,
            br#"{"v":1}"#,
        ] {
            let err = Codec::Json.decode::<u32>(bad).err().unwrap();
            assert!(err.starts_with("not a Json envelope"), "{err}");
        }
        let far = br#"[300,"data","x",0,1]"#;
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

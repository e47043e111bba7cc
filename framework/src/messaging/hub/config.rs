//! A hub's settings: typed, from a string map, or (feature `serde`) deserialized.

use std::collections::HashMap;
use std::fmt;

use crate::messaging::channel::Overflow;

/// The settings of a [`Hub`](super::Hub)'s channels, with per-prefix overrides.
///
/// | key | meaning | default |
/// |---|---|---|
/// | `buffer_size` | each customer's buffer, and each queue's bound (≥ 1) | 100 |
/// | `persistent` | keep the last `replay` messages of each channel for late customers | `false` |
/// | `replay` | how many messages a persistent channel keeps (≥ 1) | 100 |
/// | `overflow` | what a full customer made by `Hub::connect` does: `block`, `drop_oldest` or `disconnect` | `block` |
///
/// Any of them can be set for the names under a prefix with the key
/// `<prefix>*.<key>` (the longest matching prefix wins): `events/*.persistent =
/// true`, `metrics/*.overflow = drop_oldest`.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// use servicekit::hub::HubConfig;
///
/// let map = HashMap::from([
///     ("buffer_size".to_string(), "50".to_string()),
///     ("events/*.persistent".to_string(), "true".to_string()),
/// ]);
/// let config = HubConfig::from_map(&map).unwrap();
/// assert_eq!(config.buffer_size, 50);
/// assert!(config.for_name("events/login").persistent);
/// assert!(!config.for_name("jobs/resize").persistent);
///
/// let bad = HashMap::from([("buffer_size".to_string(), "zero".to_string())]);
/// assert_eq!(
///     HubConfig::from_map(&bad).unwrap_err().to_string(),
///     "hub setting `buffer_size`: `zero` is not a whole number",
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct HubConfig {
    /// Each customer's buffer bound, and each queue's.
    pub buffer_size: usize,
    /// Whether channels keep their last `replay` messages for late customers.
    pub persistent: bool,
    /// How many messages a persistent channel keeps.
    pub replay: usize,
    /// What a full customer made by [`Hub::connect`](super::Hub::connect) does.
    #[cfg_attr(feature = "serde", serde(with = "overflow_name"))]
    pub overflow: Overflow,
    /// Settings for the names under a prefix; the longest matching prefix wins.
    pub prefixes: Vec<PrefixConfig>,
}

/// Settings for the names under one prefix; unset fields come from the hub's.
///
/// # Examples
///
/// ```
/// use servicekit::{channel::Overflow, hub::{HubConfig, PrefixConfig}};
/// let config = HubConfig::default()
///     .with_prefix(PrefixConfig::new("metrics/").overflow(Overflow::DropOldest));
/// assert_eq!(config.for_name("metrics/cpu").overflow, Overflow::DropOldest);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct PrefixConfig {
    /// The prefix of the names these settings apply to.
    pub prefix: String,
    /// As [`HubConfig::buffer_size`].
    #[cfg_attr(feature = "serde", serde(default))]
    pub buffer_size: Option<usize>,
    /// As [`HubConfig::persistent`].
    #[cfg_attr(feature = "serde", serde(default))]
    pub persistent: Option<bool>,
    /// As [`HubConfig::replay`].
    #[cfg_attr(feature = "serde", serde(default))]
    pub replay: Option<usize>,
    /// As [`HubConfig::overflow`].
    #[cfg_attr(feature = "serde", serde(default, with = "overflow_name::option"))]
    pub overflow: Option<Overflow>,
}

/// The settings that apply to one name; from [`HubConfig::for_name`].
///
/// # Examples
///
/// ```
/// let s = servicekit::hub::HubConfig::default().for_name("anything");
/// assert_eq!((s.buffer_size, s.persistent, s.replay), (100, false, 100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NameConfig {
    /// Each customer's buffer bound, and the queue's.
    pub buffer_size: usize,
    /// Whether the channel keeps its last `replay` messages.
    pub persistent: bool,
    /// How many messages it keeps when persistent.
    pub replay: usize,
    /// What a full customer made by `Hub::connect` does.
    pub overflow: Overflow,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            buffer_size: 100,
            persistent: false,
            replay: 100,
            overflow: Overflow::Block,
            prefixes: Vec::new(),
        }
    }
}

/// A setting that was rejected, naming its key and value.
///
/// # Examples
///
/// ```
/// use std::collections::HashMap;
/// let map = HashMap::from([("colour".to_string(), "blue".to_string())]);
/// let err = servicekit::hub::HubConfig::from_map(&map).unwrap_err();
/// assert_eq!(err.key(), "colour");
/// assert_eq!(
///     err.to_string(),
///     "unknown hub setting `colour` (set to `blue`); known: buffer_size, persistent, \
///      replay, overflow, and <prefix>*.<one of them>",
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    key: String,
    problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    Unknown { value: String },
    Invalid(String),
}

impl ConfigError {
    fn new(key: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_string(),
            problem: Problem::Invalid(problem.into()),
        }
    }

    fn unknown(key: &str, value: &str) -> Self {
        ConfigError {
            key: key.to_string(),
            problem: Problem::Unknown {
                value: value.to_string(),
            },
        }
    }

    /// The key that was rejected.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// let map = HashMap::from([("replay".to_string(), "0".to_string())]);
    /// assert_eq!(servicekit::hub::HubConfig::from_map(&map).unwrap_err().key(), "replay");
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Unknown { value } => {
                write!(
                    f,
                    "unknown hub setting `{}` (set to `{value}`){KNOWN}",
                    self.key
                )
            }
            Problem::Invalid(problem) => write!(f, "hub setting `{}`: {problem}", self.key),
        }
    }
}

impl std::error::Error for ConfigError {}

const KNOWN: &str =
    "; known: buffer_size, persistent, replay, overflow, and <prefix>*.<one of them>";
fn parse_size(key: &str, value: &str) -> Result<usize, ConfigError> {
    let n: usize = value.trim().parse().map_err(|e: std::num::ParseIntError| {
        let problem = match e.kind() {
            std::num::IntErrorKind::PosOverflow => format!("`{value}` is too large"),
            _ => format!("`{value}` is not a whole number"),
        };
        ConfigError::new(key, problem)
    })?;
    if n == 0 {
        return Err(ConfigError::new(key, "must be at least 1, got `0`"));
    }
    Ok(n)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            key,
            format!("`{value}` is not true or false"),
        )),
    }
}

fn parse_overflow(key: &str, value: &str) -> Result<Overflow, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "block" => Ok(Overflow::Block),
        "drop_oldest" | "drop-oldest" => Ok(Overflow::DropOldest),
        "disconnect" => Ok(Overflow::Disconnect),
        _ => Err(ConfigError::new(
            key,
            format!("`{value}` is not block, drop_oldest or disconnect"),
        )),
    }
}

impl HubConfig {
    /// Reads settings from a string map (the seed's registry config): see the table
    /// on [`HubConfig`]. Missing keys keep their defaults.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad key (in sorted order) and its value:
    /// an unknown key, a value that does not parse, a size of 0, a prefix setting
    /// with an empty prefix.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// let map = HashMap::from([("persistent".to_string(), "true".to_string())]);
    /// assert!(servicekit::hub::HubConfig::from_map(&map).unwrap().persistent);
    /// ```
    pub fn from_map(map: &HashMap<String, String>) -> Result<HubConfig, ConfigError> {
        let mut keys: Vec<_> = map.iter().collect();
        keys.sort();
        let mut config = HubConfig::default();
        for (key, value) in keys {
            match key.rsplit_once("*.") {
                Some((prefix, setting)) => {
                    if prefix.is_empty() {
                        return Err(ConfigError::new(
                            key,
                            format!("the prefix before `*.` is empty (set to `{value}`)"),
                        ));
                    }
                    let p = match config.prefixes.iter_mut().find(|p| p.prefix == prefix) {
                        Some(p) => p,
                        None => {
                            config.prefixes.push(PrefixConfig::new(prefix));
                            config.prefixes.last_mut().expect("just pushed")
                        }
                    };
                    match setting {
                        "buffer_size" => p.buffer_size = Some(parse_size(key, value)?),
                        "persistent" => p.persistent = Some(parse_bool(key, value)?),
                        "replay" => p.replay = Some(parse_size(key, value)?),
                        "overflow" => p.overflow = Some(parse_overflow(key, value)?),
                        _ => return Err(ConfigError::unknown(key, value)),
                    }
                }
                None => match key.as_str() {
                    "buffer_size" => config.buffer_size = parse_size(key, value)?,
                    "persistent" => config.persistent = parse_bool(key, value)?,
                    "replay" => config.replay = parse_size(key, value)?,
                    "overflow" => config.overflow = parse_overflow(key, value)?,
                    _ => return Err(ConfigError::unknown(key, value)),
                },
            }
        }
        Ok(config)
    }

    /// Adds (or replaces) the settings of a prefix.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::hub::{HubConfig, PrefixConfig};
    /// let config = HubConfig::default().with_prefix(PrefixConfig::new("events/").persistent(true));
    /// assert!(config.for_name("events/a").persistent);
    /// ```
    pub fn with_prefix(mut self, prefix: PrefixConfig) -> Self {
        self.prefixes.retain(|p| p.prefix != prefix.prefix);
        self.prefixes.push(prefix);
        self
    }

    /// Checks every value (what [`from_map`](Self::from_map) does while parsing): for a
    /// config built in code or deserialized.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad setting.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut config = servicekit::hub::HubConfig::default();
    /// config.buffer_size = 0;
    /// assert_eq!(config.validate().unwrap_err().key(), "buffer_size");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let size = |key: &str, n: usize| {
            if n == 0 {
                Err(ConfigError::new(key, "must be at least 1, got `0`"))
            } else {
                Ok(())
            }
        };
        size("buffer_size", self.buffer_size)?;
        size("replay", self.replay)?;
        for p in &self.prefixes {
            if p.prefix.is_empty() {
                return Err(ConfigError::new("prefixes", "a prefix is empty"));
            }
            if let Some(n) = p.buffer_size {
                size(&format!("{}*.buffer_size", p.prefix), n)?;
            }
            if let Some(n) = p.replay {
                size(&format!("{}*.replay", p.prefix), n)?;
            }
        }
        Ok(())
    }

    /// The settings that apply to `name`: the hub's, overridden by the longest
    /// prefix of `name` that has settings.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::hub::{HubConfig, PrefixConfig};
    /// let config = HubConfig::default()
    ///     .with_prefix(PrefixConfig::new("a/").buffer_size(5))
    ///     .with_prefix(PrefixConfig::new("a/b/").buffer_size(7));
    /// assert_eq!(config.for_name("a/b/c").buffer_size, 7);
    /// assert_eq!(config.for_name("a/c").buffer_size, 5);
    /// assert_eq!(config.for_name("c").buffer_size, 100);
    /// ```
    pub fn for_name(&self, name: &str) -> NameConfig {
        let mut s = NameConfig {
            buffer_size: self.buffer_size,
            persistent: self.persistent,
            replay: self.replay,
            overflow: self.overflow,
        };
        if let Some(p) = self
            .prefixes
            .iter()
            .filter(|p| name.starts_with(&p.prefix))
            .max_by_key(|p| p.prefix.len())
        {
            s.buffer_size = p.buffer_size.unwrap_or(s.buffer_size);
            s.persistent = p.persistent.unwrap_or(s.persistent);
            s.replay = p.replay.unwrap_or(s.replay);
            s.overflow = p.overflow.unwrap_or(s.overflow);
        }
        s
    }
}

impl PrefixConfig {
    /// Settings for the names starting with `prefix`, none set yet.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = servicekit::hub::PrefixConfig::new("events/");
    /// assert_eq!(p.prefix, "events/");
    /// ```
    pub fn new(prefix: impl Into<String>) -> Self {
        PrefixConfig {
            prefix: prefix.into(),
            ..PrefixConfig::default()
        }
    }

    /// Sets the buffer size under this prefix.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = servicekit::hub::PrefixConfig::new("big/").buffer_size(10_000);
    /// assert_eq!(p.buffer_size, Some(10_000));
    /// ```
    pub fn buffer_size(mut self, n: usize) -> Self {
        self.buffer_size = Some(n);
        self
    }

    /// Makes the channels under this prefix persistent (or not).
    ///
    /// # Examples
    ///
    /// ```
    /// let p = servicekit::hub::PrefixConfig::new("events/").persistent(true);
    /// assert_eq!(p.persistent, Some(true));
    /// ```
    pub fn persistent(mut self, on: bool) -> Self {
        self.persistent = Some(on);
        self
    }

    /// Sets how many messages a persistent channel under this prefix keeps.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = servicekit::hub::PrefixConfig::new("events/").persistent(true).replay(1_000);
    /// assert_eq!(p.replay, Some(1_000));
    /// ```
    pub fn replay(mut self, n: usize) -> Self {
        self.replay = Some(n);
        self
    }

    /// Sets what a full customer made by `Hub::connect` does under this prefix.
    ///
    /// # Examples
    ///
    /// ```
    /// use servicekit::channel::Overflow;
    /// let p = servicekit::hub::PrefixConfig::new("metrics/").overflow(Overflow::DropOldest);
    /// assert_eq!(p.overflow, Some(Overflow::DropOldest));
    /// ```
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = Some(overflow);
        self
    }
}

#[cfg(feature = "serde")]
mod overflow_name {
    use serde::{Deserialize, Deserializer};

    use crate::messaging::channel::Overflow;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Overflow, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_overflow("overflow", &s).map_err(serde::de::Error::custom)
    }

    pub(super) mod option {
        use super::*;

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Overflow>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| super::super::parse_overflow("overflow", &s))
                .transpose()
                .map_err(serde::de::Error::custom)
        }
    }
}

//! Human-written durations: `250ms`, `5s`, `1m`, `1h30m`.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The pattern every duration must match; also published in the JSON Schema so editors
/// flag a bad duration while the user types.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// A duration written in a config file. Stored as whole milliseconds, which is the finest
/// resolution any raftgate timeout uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    millis: u64,
}

/// The largest duration accepted anywhere (a week). Anything larger is almost certainly a
/// typo (`5000m` for `5000ms`), and it keeps arithmetic on deadlines far from overflow.
pub(crate) const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;

impl Duration {
    pub const fn from_millis(millis: u64) -> Self {
        Self { millis }
    }

    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.millis)
    }

    /// Parses `250ms`, `5s`, `1m`, `2h`, or a sequence of them (`1m30s`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{text}` is not a duration: write a whole number followed by a unit, \
                 `ms`, `s`, `m` or `h` (for example `250ms`, `5s`, `1m30s`)"
            )
        };
        if text.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let (unit, len) = if rest.starts_with("ms") {
                (1, 2)
            } else if rest.starts_with('s') {
                (1_000, 1)
            } else if rest.starts_with('m') {
                (60_000, 1)
            } else if rest.starts_with('h') {
                (3_600_000, 1)
            } else {
                return Err(bad());
            };
            rest = &rest[len..];
            total = value
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("`{text}` is too long: the maximum duration is 168h"))?;
        }
        if total > MAX_DURATION_MS {
            return Err(format!("`{text}` is too long: the maximum duration is 168h"));
        }
        Ok(Self { millis: total })
    }
}

impl fmt::Display for Duration {
    /// Canonical form: the largest unit that divides the value exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.millis;
        if ms != 0 && ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms != 0 && ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1_000) {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Duration {
    /// Human-readable formats (YAML, JSON) get the canonical text; binary formats (the Raft
    /// log) get the milliseconds.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.millis)
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return u64::deserialize(d).map(Duration::from_millis);
        }
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `250ms`, `5s` or `1m`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!("`{v}` has no unit: write `{v}ms` or `{v}s` (units: ms, s, m, h)")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!("`{v}` is not a duration: write for example `5s`")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!("`{v}` is not a duration: use whole numbers with a unit, for example `1500ms`")))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_gen: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: whole numbers with units ms, s, m, h, e.g. `250ms`, `5s`, `1m30s`.",
            "examples": ["250ms", "5s", "1m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (text, ms, canon) in [
            ("250ms", 250, "250ms"),
            ("5s", 5_000, "5s"),
            ("1m", 60_000, "1m"),
            ("1m30s", 90_000, "90s"),
            ("2h", 7_200_000, "2h"),
            ("0s", 0, "0s"),
            ("1500ms", 1_500, "1500ms"),
            ("60s", 60_000, "1m"),
        ] {
            let d = Duration::parse(text).unwrap();
            assert_eq!(d.as_millis(), ms, "{text}");
            assert_eq!(d.to_string(), canon, "{text}");
        }
    }

    #[test]
    fn binary_formats_carry_milliseconds() {
        let d = Duration::parse("1m30s").unwrap();
        let bytes = postcard::to_allocvec(&d).unwrap();
        assert_eq!(postcard::from_bytes::<Duration>(&bytes).unwrap(), d);
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"90s\"");
    }

    #[test]
    fn rejects_bad_input() {
        for text in ["", "5", "s", "5 s", "1.5s", "-1s", "5sec", "5S", "169h", "99999999999999999999h"] {
            assert!(Duration::parse(text).is_err(), "{text} should be rejected");
        }
        assert!(regex::Regex::new(DURATION_PATTERN).unwrap().is_match("1m30s"));
    }
}

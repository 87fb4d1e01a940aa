//! Human-readable sizes ("16MiB") and durations ("250ms") for the manifest.
//!
//! Parsing happens inside deserialization, so a bad value is reported by the TOML parser with
//! the exact line and column of the value.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};

/// A byte count written as an integer or as a number with a unit: B, KiB, MiB, GiB (and the
/// decimal KB, MB, GB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        match UNITS.iter().find(|(unit, _)| self.0 >= *unit && self.0.is_multiple_of(*unit)) {
            Some((unit, name)) => write!(f, "{}{name}", self.0 / unit),
            None => write!(f, "{}B", self.0),
        }
    }
}

/// A size for people, in the one style every log message uses: `512 B`, `128 KiB`, `1.5 MiB`,
/// `2.0 GiB`. (Fields for machines stay in bytes.)
pub fn readable(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => {
                return Err(format!("invalid size {text:?}: use a whole number with B, KiB, MiB or GiB"));
            }
        };
        let size = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .ok_or_else(|| format!("invalid size {text:?}: use a whole number with B, KiB, MiB or GiB"))?;
        if size > MAX_SIZE.0 {
            return Err(format!("size {text:?} is above the most any setting takes ({MAX_SIZE})"));
        }
        Ok(ByteSize(size))
    }
}

/// The largest size the manifest takes anywhere: more than any machine here has, small enough
/// that no arithmetic on it overflows.
pub const MAX_SIZE: ByteSize = ByteSize(1 << 40);

/// The longest duration the manifest takes anywhere (backoffs, periods, timeouts, retention):
/// 366 days, small enough that doubling or adding it to a clock never overflows.
pub const MAX_SPAN: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parse a duration the way every manifest key does, within `MAX_SPAN`.
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?} ({e}): write it like \"250ms\" or \"5s\""))?;
    if duration > MAX_SPAN {
        return Err(format!("duration {text:?} is above the longest any setting takes (366 days)"));
    }
    Ok(duration)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"16MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                let size = u64::try_from(v).map_err(|_| E::custom("a size cannot be negative"))?;
                if size > MAX_SIZE.0 {
                    return Err(E::custom(format!("size {size} is above the most any setting takes ({MAX_SIZE})")));
                }
                Ok(ByteSize(size))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A duration written like "250ms", "5s" or "1m 30s".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_span(&text).map(Span).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_reject_garbage() {
        assert_eq!("16MiB".parse::<ByteSize>(), Ok(ByteSize(16 << 20)));
        assert_eq!("64 KiB".parse::<ByteSize>(), Ok(ByteSize(64 << 10)));
        assert_eq!("100".parse::<ByteSize>(), Ok(ByteSize(100)));
        assert_eq!("2MB".parse::<ByteSize>(), Ok(ByteSize(2_000_000)));
        assert!("16XB".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("99999999999GiB".parse::<ByteSize>().is_err());
        assert!("1025GiB".parse::<ByteSize>().is_err(), "above MAX_SIZE");
        assert!(parse_span("366 days").is_ok());
        assert!(parse_span("367 days").is_err());
        assert!(parse_span("500000000years").is_err());
        assert_eq!(ByteSize(16 << 20).to_string(), "16MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert_eq!(readable(512), "512 B");
        assert_eq!(readable(131_072), "128 KiB");
        assert_eq!(readable(3 << 19), "1.5 MiB");
        assert_eq!(readable(2 << 30), "2.0 GiB");
    }
}

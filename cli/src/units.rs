//! Sizes, times and durations as written on the command line and shown
//! back to people.

use std::str::FromStr;
use std::time::Duration;

use imagecache_core::Timestamp;

/// A size in bytes: `1024`, `512k`, `10GiB`, `1.5G`.
///
/// Units are binary whatever their spelling (`k`, `KB` and `KiB` are all
/// 1024), as in Docker's `--keep-storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) u64);

/// Why a size or time argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UnitError(String);

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        let text = s.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| UnitError(format!("{s:?} is not a size (write e.g. 512MiB or 10G)")))?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            other => {
                return Err(UnitError(format!(
                    "unknown size unit {other:?} in {s:?} (use B, K, M, G or T)"
                )));
            }
        };
        let bytes = value * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
            return Err(UnitError(format!("{s:?} is out of range")));
        }
        // The value was checked to be finite and in range just above.
        Ok(Self(bytes.round() as u64))
    }
}

/// A point in time for `--until`: a timestamp, or a duration before now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// This moment.
    At(Timestamp),
    /// This long before the command runs.
    Ago(Duration),
}

impl Until {
    /// The moment meant, given the time now.
    pub(crate) fn resolve(&self, now: Timestamp) -> Timestamp {
        match self {
            Self::At(t) => *t,
            Self::Ago(d) => {
                let nanos = i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
                Timestamp::from_unix_nanos(now.unix_nanos().saturating_sub(nanos))
            }
        }
    }
}

impl FromStr for Until {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        let text = s.trim();
        if let Ok(t) = Timestamp::parse_rfc3339(text) {
            return Ok(Self::At(t));
        }
        if let Ok(secs) = text.parse::<i64>() {
            return Ok(Self::At(Timestamp::from_unix_nanos(
                i128::from(secs) * 1_000_000_000,
            )));
        }
        parse_duration(text).map(Self::Ago).ok_or_else(|| {
            UnitError(format!(
                "{s:?} is neither a time (RFC 3339, Unix seconds) nor a duration (90m, 24h, 7d)"
            ))
        })
    }
}

/// A duration for `--ttl`: `90s`, `30m`, `24h`, `7d`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ttl(pub(crate) Duration);

impl FromStr for Ttl {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, UnitError> {
        match parse_duration(s.trim()) {
            Some(d) if !d.is_zero() => Ok(Self(d)),
            _ => Err(UnitError(format!(
                "{s:?} is not a duration (90s, 30m, 24h, 7d)"
            ))),
        }
    }
}

/// A Go-style duration (`1h30m`, `90s`, `250ms`), plus `d` and `w`.
fn parse_duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            _ => return None,
        };
        total = total.checked_add(Duration::try_from_secs_f64(value * seconds).ok()?)?;
    }
    Some(total)
}

/// A size for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago `then` was, as Docker lists images: `5 minutes ago`.
pub(crate) fn human_ago(then: Option<&Timestamp>, now: Timestamp) -> String {
    let Some(then) = then else {
        return "N/A".to_owned();
    };
    let secs = (now.unix_nanos() - then.unix_nanos()) / 1_000_000_000;
    if secs < 0 {
        return "in the future".to_owned();
    }
    let plural = |n: i128, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        0..60 => "Less than a minute ago".to_owned(),
        60..3600 => plural(secs / 60, "minute"),
        3600..86_400 => plural(secs / 3600, "hour"),
        86_400..1_209_600 => plural(secs / 86_400, "day"),
        1_209_600..5_184_000 => plural(secs / 604_800, "week"),
        5_184_000..63_072_000 => plural(secs / 2_592_000, "month"),
        _ => plural(secs / 31_536_000, "year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        let p = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(p("1024"), Ok(1024));
        assert_eq!(p("512k"), Ok(512 << 10));
        assert_eq!(p("10GiB"), Ok(10 << 30));
        assert_eq!(p("1.5 MB"), Ok(3 << 19));
        assert!(p("ten").is_err());
        assert!(p("5 parsecs").is_err());
        assert!(p("-1").is_err());
    }

    #[test]
    fn until_takes_times_and_durations() {
        let now = Timestamp::from_unix_nanos(1_000_000 * 1_000_000_000);
        let u = |s: &str| s.parse::<Until>().map(|u| u.resolve(now).unix_secs());
        assert_eq!(u("1h30m"), Ok(1_000_000 - 5400));
        assert_eq!(u("2d"), Ok(1_000_000 - 172_800));
        assert_eq!(u("1700000000"), Ok(1_700_000_000));
        assert_eq!(u("2024-01-01T00:00:00Z"), Ok(1_704_067_200));
        assert!(u("yesterday").is_err());
        assert!(u("5x").is_err());
        assert!(u("").is_err());
    }

    #[test]
    fn people_read_sizes_and_ages() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
        let now = Timestamp::from_unix_nanos(10_000 * 1_000_000_000);
        let then = Timestamp::from_unix_nanos(10_000 * 1_000_000_000 - 7_200 * 1_000_000_000);
        assert_eq!(human_ago(Some(&then), now), "2 hours ago");
        assert_eq!(human_ago(None, now), "N/A");
    }
}

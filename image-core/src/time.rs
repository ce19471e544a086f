//! RFC 3339 timestamps as Go's `time.Time` reads and writes them in JSON.

use std::cmp::Ordering;
use std::fmt;

/// An instant with the UTC offset it was written with.
///
/// Two timestamps are equal only when both the instant and the offset are
/// equal, as Go's `reflect.DeepEqual` sees `time.Time` values: the same
/// instant written as `…Z` and as `…+02:00` differs. Ordering is by instant
/// first, then offset, so sorting is deterministic. Use
/// [`Timestamp::cmp_instant`] to compare instants only.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch, UTC.
    secs: i64,
    /// Nanoseconds within the second.
    nanos: u32,
    /// Offset east of UTC in seconds.
    offset: i32,
}

/// Why a timestamp string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 timestamp {input:?}: {reason}")]
pub struct TimestampError {
    /// The refused input.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    // Howard Hinnant's algorithm: days since 1970-01-01 for a proleptic
    // Gregorian date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl Timestamp {
    /// Builds a timestamp from Unix seconds, nanoseconds and an offset.
    ///
    /// Returns `None` when `nanos` is not below one second or the offset is
    /// a day or more.
    pub fn from_parts(unix_secs: i64, nanos: u32, offset_secs: i32) -> Option<Self> {
        (nanos < 1_000_000_000 && offset_secs.abs() < 86_400).then_some(Self {
            secs: unix_secs,
            nanos,
            offset: offset_secs,
        })
    }

    /// A UTC timestamp from nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(nanos: i128) -> Self {
        let secs = nanos.div_euclid(1_000_000_000);
        let sub = nanos.rem_euclid(1_000_000_000);
        Self {
            secs: i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX }),
            nanos: u32::try_from(sub).unwrap_or(0),
            offset: 0,
        }
    }

    /// The current time in UTC.
    pub fn now_utc() -> Self {
        let now = std::time::SystemTime::now();
        let nanos = match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
            Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
        };
        Self::from_unix_nanos(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }

    /// Seconds since the Unix epoch.
    pub fn unix_secs(&self) -> i64 {
        self.secs
    }

    /// Nanoseconds within the second.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }

    /// Offset east of UTC, in seconds.
    pub fn offset_secs(&self) -> i32 {
        self.offset
    }

    /// The same instant in UTC.
    pub fn to_utc(self) -> Self {
        Self { offset: 0, ..self }
    }

    /// Compares instants, ignoring offsets.
    pub fn cmp_instant(&self, other: &Self) -> Ordering {
        (self.secs, self.nanos).cmp(&(other.secs, other.nanos))
    }

    /// Parses RFC 3339 as Go's `time.Time` JSON decoding does:
    /// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`. Digits past nine in the
    /// fraction are ignored, as Go does.
    ///
    /// # Errors
    /// [`TimestampError`] naming what is wrong.
    ///
    /// ```
    /// use imagecache_core::Timestamp;
    /// let t = Timestamp::parse_rfc3339("2024-05-01T12:00:00.1234+02:00")?;
    /// assert_eq!(t.to_rfc3339_nano(), "2024-05-01T12:00:00.1234+02:00");
    /// # Ok::<(), imagecache_core::TimestampError>(())
    /// ```
    pub fn parse_rfc3339(input: &str) -> Result<Self, TimestampError> {
        let err = |reason| TimestampError {
            input: input.chars().take(100).collect(),
            reason,
        };
        let b = input.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = b.get(range)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            part.iter()
                .try_fold(0u32, |acc, d| Some(acc * 10 + u32::from(d - b'0')))
        };
        if b.len() < 20 {
            return Err(err("too short"));
        }
        let year = num(0..4).ok_or_else(|| err("bad year"))?;
        let month = num(5..7).ok_or_else(|| err("bad month"))?;
        let day = num(8..10).ok_or_else(|| err("bad day"))?;
        let hour = num(11..13).ok_or_else(|| err("bad hour"))?;
        let minute = num(14..16).ok_or_else(|| err("bad minute"))?;
        let second = num(17..19).ok_or_else(|| err("bad second"))?;
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return Err(err("expected YYYY-MM-DDTHH:MM:SS"));
        }
        if !(1..=12).contains(&month) {
            return Err(err("month out of range"));
        }
        if day == 0 || day > days_in_month(i64::from(year), month) {
            return Err(err("day out of range"));
        }
        if hour > 23 {
            return Err(err("hour out of range"));
        }
        if minute > 59 {
            return Err(err("minute out of range"));
        }
        if second > 59 {
            return Err(err("second out of range"));
        }
        let mut i = 19;
        let mut nanos = 0u32;
        if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
            let start = i + 1;
            let mut end = start;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            if end == start {
                return Err(err("empty fraction"));
            }
            let mut scale = 100_000_000u32;
            for d in &b[start..end.min(start + 9)] {
                nanos += u32::from(d - b'0') * scale;
                scale /= 10;
            }
            i = end;
        }
        let offset = match b.get(i) {
            Some(b'Z') if i + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let oh = num(i + 1..i + 3).ok_or_else(|| err("bad offset hours"))?;
                let om = num(i + 4..i + 6).ok_or_else(|| err("bad offset minutes"))?;
                if oh > 23 || om > 59 {
                    return Err(err("offset out of range"));
                }
                let off = i32::try_from(oh * 3600 + om * 60).map_err(|_| err("offset"))?;
                if *sign == b'-' { -off } else { off }
            }
            _ => return Err(err("expected Z or ±HH:MM at the end")),
        };
        let local = days_from_civil(i64::from(year), month, day) * 86_400
            + i64::from(hour * 3600 + minute * 60 + second);
        Ok(Self {
            secs: local - i64::from(offset),
            nanos,
            offset,
        })
    }

    /// Formats as Go's `time.RFC3339Nano`: trailing zeros of the fraction
    /// trimmed, `Z` for a zero offset.
    ///
    /// Go refuses to marshal years outside 0–9999; such timestamps cannot be
    /// parsed from JSON in the first place, and are written here with as
    /// many digits as they need.
    pub fn to_rfc3339_nano(&self) -> String {
        self.to_string()
    }
}

/// As RFC 3339 text with nanoseconds and the offset kept
/// ([`Timestamp::to_rfc3339_nano`]); read back with
/// [`Timestamp::parse_rfc3339`].
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339_nano())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = self.secs + i64::from(self.offset);
        let days = local.div_euclid(86_400);
        let sod = local.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )?;
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        if self.offset == 0 {
            f.write_str("Z")
        } else {
            let sign = if self.offset < 0 { '-' } else { '+' };
            let abs = self.offset.unsigned_abs();
            write!(f, "{sign}{:02}:{:02}", abs / 3600, (abs / 60) % 60)
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_instant(other).then(self.offset.cmp(&other.offset))
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, TimestampError> {
        Self::parse_rfc3339(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) -> String {
        Timestamp::parse_rfc3339(s).unwrap().to_rfc3339_nano()
    }

    #[test]
    fn go_rfc3339nano_format() {
        assert_eq!(rt("2024-05-01T12:00:00Z"), "2024-05-01T12:00:00Z");
        assert_eq!(
            rt("2024-05-01T12:00:00.100000000Z"),
            "2024-05-01T12:00:00.1Z"
        );
        assert_eq!(
            rt("2024-05-01T12:00:00.123456789+02:00"),
            "2024-05-01T12:00:00.123456789+02:00"
        );
        assert_eq!(rt("2024-05-01T12:00:00.000Z"), "2024-05-01T12:00:00Z");
        // A zero offset is written as Z, as Go does.
        assert_eq!(rt("2024-05-01T12:00:00+00:00"), "2024-05-01T12:00:00Z");
        // Digits past nanoseconds are dropped.
        assert_eq!(
            rt("2024-05-01T12:00:00.1234567891Z"),
            "2024-05-01T12:00:00.123456789Z"
        );
        assert_eq!(
            rt("1969-12-31T23:59:59.5-01:30"),
            "1969-12-31T23:59:59.5-01:30"
        );
        assert_eq!(rt("0001-01-01T00:00:00Z"), "0001-01-01T00:00:00Z");
        assert_eq!(rt("2000-02-29T00:00:00Z"), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn instants_and_offsets() {
        let a = Timestamp::parse_rfc3339("2024-05-01T12:00:00Z").unwrap();
        let b = Timestamp::parse_rfc3339("2024-05-01T14:00:00+02:00").unwrap();
        assert_eq!(a.unix_secs(), 1_714_564_800);
        assert_eq!(a.cmp_instant(&b), Ordering::Equal);
        assert_ne!(a, b);
        assert_eq!(a, b.to_utc());
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01 12:00:00Z",
            "2024-13-01T12:00:00Z",
            "2023-02-29T12:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+0200",
            "2024-05-01t12:00:00z",
            "２０２４-05-01T12:00:00Z",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn roundtrip(secs in -62_135_596_800i64..253_402_300_799, nanos in 0u32..1_000_000_000, off_min in -1439i32..1439) {
            let t = Timestamp::from_parts(secs, nanos, off_min * 60).unwrap();
            let s = t.to_rfc3339_nano();
            let back = Timestamp::parse_rfc3339(&s).unwrap();
            // Times whose local date falls outside years 0..=9999 cannot round-trip.
            if s.len() >= 20 && !s.starts_with('-') {
                proptest::prop_assert_eq!(back, t);
            }
        }
    }
}

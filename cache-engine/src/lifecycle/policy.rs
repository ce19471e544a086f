//! What a collection may remove: policies and their filters.

use std::fmt;
use std::time::Duration;

use imagecache_core::Image;

use super::Error;

/// One garbage-collection policy, in the shape of BuildKit's GC policies.
///
/// A policy selects images: dangling ones (no name), or with
/// [`Policy::all`] every image not in use; only those last used before
/// [`Policy::keep_duration`] and matching every [`Policy::filters`]. An
/// image with a child that stays is never removed, nor is anything a live
/// lease holds.
///
/// Without space targets a policy removes every image it selects. With
/// [`Policy::max_used_space`] or [`Policy::min_free_space`] it removes the
/// least recently used of them until the store is within the targets, and
/// with [`Policy::reserved_space`] never brings the store below that size.
/// Blobs nothing kept refers to go under every policy, once older than the
/// collector's grace period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Select every unused image, named or not, rather than dangling ones.
    pub all: bool,
    /// Keep images used within this long (`until` of `docker image
    /// prune`, BuildKit's `keepDuration`).
    pub keep_duration: Option<Duration>,
    /// Select only images matching every filter.
    pub filters: Vec<Filter>,
    /// Never bring the store's size below this many bytes.
    pub reserved_space: Option<u64>,
    /// Bring the store's size down to at most this many bytes
    /// (`--keep-storage`).
    pub max_used_space: Option<u64>,
    /// Free space until the filesystem holding the store has at least this
    /// many bytes available.
    pub min_free_space: Option<u64>,
}

impl Policy {
    /// Dangling images, no age limit, no filters, no space targets.
    pub fn dangling() -> Self {
        Self::default()
    }

    /// Every unused image.
    pub fn all() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// Keeps images used within `d`.
    #[must_use]
    pub fn with_keep_duration(mut self, d: Duration) -> Self {
        self.keep_duration = Some(d);
        self
    }

    /// Adds a filter.
    #[must_use]
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Sets the size never to go below.
    #[must_use]
    pub fn with_reserved_space(mut self, bytes: u64) -> Self {
        self.reserved_space = Some(bytes);
        self
    }

    /// Sets the size to bring the store down to.
    #[must_use]
    pub fn with_max_used_space(mut self, bytes: u64) -> Self {
        self.max_used_space = Some(bytes);
        self
    }

    /// Sets the free space to reach on the store's filesystem.
    #[must_use]
    pub fn with_min_free_space(mut self, bytes: u64) -> Self {
        self.min_free_space = Some(bytes);
        self
    }

    /// Whether the policy has a space target (and so removes least
    /// recently used images only until it is met).
    pub fn has_space_target(&self) -> bool {
        self.max_used_space.is_some() || self.min_free_space.is_some()
    }
}

/// A filter on images, as `docker image prune --filter` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Filter {
    /// `label=KEY` or `label=KEY=VALUE`: the image has the label (with
    /// that value).
    Label {
        /// The label's key.
        key: String,
        /// The value it must have, if given.
        value: Option<String>,
    },
    /// `label!=KEY` or `label!=KEY=VALUE`: the image does not have the
    /// label (with that value).
    NotLabel {
        /// The label's key.
        key: String,
        /// The value it must not have, if given.
        value: Option<String>,
    },
    /// `until=DURATION`: the image was last used more than this long ago.
    Until(Duration),
}

impl Filter {
    /// Parses `label=K`, `label=K=V`, `label!=K`, `label!=K=V` or
    /// `until=DURATION` (`90s`, `10m`, `24h`, `7d`, or a bare number of
    /// seconds).
    ///
    /// # Errors
    /// [`Error::InvalidFilter`] naming what is wrong.
    ///
    /// ```
    /// use imagecache_engine::lifecycle::Filter;
    /// assert!(matches!(Filter::parse("label=team=web")?, Filter::Label { .. }));
    /// assert!(matches!(Filter::parse("until=24h")?, Filter::Until(_)));
    /// assert!(Filter::parse("dangling=maybe").is_err());
    /// # Ok::<(), imagecache_engine::lifecycle::Error>(())
    /// ```
    pub fn parse(s: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidFilter {
            filter: s.chars().take(200).collect(),
            reason: reason.to_owned(),
        };
        let split = |rest: &str| match rest.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (rest.to_owned(), None),
        };
        if let Some(rest) = s.strip_prefix("label!=") {
            let (key, value) = split(rest);
            if key.is_empty() {
                return Err(invalid("a label filter needs a key"));
            }
            return Ok(Self::NotLabel { key, value });
        }
        if let Some(rest) = s.strip_prefix("label=") {
            let (key, value) = split(rest);
            if key.is_empty() {
                return Err(invalid("a label filter needs a key"));
            }
            return Ok(Self::Label { key, value });
        }
        if let Some(rest) = s.strip_prefix("until=") {
            return parse_duration(rest)
                .map(Self::Until)
                .ok_or_else(|| invalid("until takes a duration such as 90s, 10m, 24h or 7d"));
        }
        Err(invalid(
            "filters are label=KEY[=VALUE], label!=KEY[=VALUE] or until=DURATION",
        ))
    }

    /// Whether an image matches, given its config and when it was last
    /// used (nanoseconds since the epoch) and the time now.
    pub(super) fn matches(&self, image: &Image, last_used: i128, now: i128) -> bool {
        let labels = image.config.as_ref().and_then(|c| c.labels.as_ref());
        let has = |key: &str, value: &Option<String>| {
            labels
                .and_then(|l| l.get(key))
                .is_some_and(|v| value.as_ref().is_none_or(|want| want == v))
        };
        match self {
            Self::Label { key, value } => has(key, value),
            Self::NotLabel { key, value } => !has(key, value),
            Self::Until(d) => older_than(last_used, now, *d),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kv = |k: &str, v: &Option<String>| match v {
            Some(v) => format!("{k}={v}"),
            None => k.to_owned(),
        };
        match self {
            Self::Label { key, value } => write!(f, "label={}", kv(key, value)),
            Self::NotLabel { key, value } => write!(f, "label!={}", kv(key, value)),
            Self::Until(d) => write!(f, "until={}s", d.as_secs()),
        }
    }
}

/// Whether `last_used` lies more than `d` before `now`.
pub(super) fn older_than(last_used: i128, now: i128, d: Duration) -> bool {
    let d = i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
    last_used < now.saturating_sub(d)
}

/// `90s`, `10m`, `24h`, `7d`, `1w` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(secs).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_print() {
        for (text, shown) in [
            ("label=a", "label=a"),
            ("label=a=b", "label=a=b"),
            ("label!=a=b=c", "label!=a=b=c"),
            ("until=2h", "until=7200s"),
            ("until=30", "until=30s"),
        ] {
            assert_eq!(Filter::parse(text).unwrap().to_string(), shown);
        }
        for bad in [
            "label=",
            "label!=",
            "until=soon",
            "until=5y",
            "dangling=true",
            "",
        ] {
            let err = Filter::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidFilter { .. }), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("99999999999999999999w"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert!(older_than(0, 10_000_000_000, Duration::from_secs(5)));
        assert!(!older_than(
            6_000_000_000,
            10_000_000_000,
            Duration::from_secs(5)
        ));
    }
}

//! [`S3Config`]: where an S3 store lives, how to reach it, and tuning.

use std::fmt;
use std::time::Duration;

use super::error::Error;

/// Default request timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default connect timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of retries of a failed request.
const DEFAULT_MAX_RETRIES: usize = 3;
/// Default time budget for the retries of one request.
const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of uncompacted records after which compaction runs.
const DEFAULT_COMPACT_AFTER: usize = 256;
/// Default size from which blobs are uploaded in parts.
const DEFAULT_MULTIPART_THRESHOLD: usize = 16 << 20;
/// Default size of one uploaded part.
const DEFAULT_PART_SIZE: usize = 8 << 20;
/// Default age after which a deletion marker may be forgotten by compaction.
const DEFAULT_TOMBSTONE_HORIZON: Duration = Duration::from_secs(24 * 60 * 60);

/// Where an [`S3Backend`](super::S3Backend) keeps its data and how it talks to
/// the server.
///
/// Build one from a URL with [`S3Config::from_url`] or from parts with
/// [`S3Config::new`] and the `with_*` setters. Values left unset are taken
/// from the usual AWS environment variables when the backend opens:
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_ENDPOINT` (or `AWS_ENDPOINT_URL`), `AWS_REGION` (or
/// `AWS_DEFAULT_REGION`) and `AWS_ALLOW_HTTP`.
///
/// Credentials never appear in `Debug` or `Display` output.
///
/// ```
/// use imagecache_backends::s3::S3Config;
/// let config = S3Config::from_url(
///     "s3://cache/images?endpoint=http://127.0.0.1:3900&region=garage&allow_http=true",
/// )?;
/// assert_eq!(config.bucket(), "cache");
/// assert_eq!(config.prefix(), "images");
/// assert_eq!(config.to_string(), "s3://cache/images (endpoint http://127.0.0.1:3900)");
/// # Ok::<(), imagecache_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct S3Config {
    pub(super) bucket: String,
    pub(super) prefix: String,
    pub(super) endpoint: Option<String>,
    pub(super) region: Option<String>,
    pub(super) access_key_id: Option<String>,
    pub(super) secret_access_key: Option<String>,
    pub(super) session_token: Option<String>,
    pub(super) allow_http: Option<bool>,
    pub(super) skip_signature: bool,
    pub(super) virtual_hosted_style: bool,
    pub(super) pool_max_idle_per_host: Option<usize>,
    pub(super) timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) max_retries: usize,
    pub(super) retry_timeout: Duration,
    pub(super) compact_after: usize,
    pub(super) multipart_threshold: usize,
    pub(super) part_size: usize,
    pub(super) tombstone_horizon: Duration,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only say whether credentials are set, never what they are.
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.access_key_id.is_some())
            .field("allow_http", &self.allow_http)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .field("compact_after", &self.compact_after)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)?;
        if let Some(endpoint) = &self.endpoint {
            write!(f, " (endpoint {endpoint})")?;
        }
        Ok(())
    }
}

impl S3Config {
    /// A configuration for `bucket`, with objects under `prefix` (may be
    /// empty) and every other setting at its default.
    ///
    /// # Errors
    /// [`imagecache_core::Error::Config`] when the bucket name or the prefix
    /// is not acceptable.
    pub fn new(bucket: &str, prefix: &str) -> imagecache_core::Result<Self> {
        Ok(Self::build(bucket, prefix)?)
    }

    fn build(bucket: &str, prefix: &str) -> Result<Self, Error> {
        Ok(Self {
            bucket: check_bucket(bucket)?,
            prefix: check_prefix(prefix)?,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: None,
            skip_signature: false,
            virtual_hosted_style: false,
            pool_max_idle_per_host: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            retry_timeout: DEFAULT_RETRY_TIMEOUT,
            compact_after: DEFAULT_COMPACT_AFTER,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
            tombstone_horizon: DEFAULT_TOMBSTONE_HORIZON,
        })
    }

    /// Parses `s3://BUCKET/PREFIX?key=value&…`.
    ///
    /// Query keys (values may be percent-encoded):
    ///
    /// | key | meaning |
    /// |---|---|
    /// | `endpoint` | server URL, e.g. `http://127.0.0.1:3900` |
    /// | `region` | signing region (default `us-east-1`) |
    /// | `allow_http` | `true` to allow an `http://` endpoint |
    /// | `pool_idle` | idle connections kept per host (`0` for Garage, which stalls on reused connections) |
    /// | `timeout`, `connect_timeout`, `retry_timeout` | seconds |
    /// | `retries` | retries of a failed request |
    /// | `virtual_hosted` | `true` for `BUCKET.host` style requests |
    /// | `skip_signature` | `true` for anonymous access to a public bucket |
    /// | `compact_after` | uncompacted records that trigger compaction |
    /// | `multipart_threshold`, `part_size` | bytes |
    /// | `access_key_id`, `secret_access_key`, `session_token` | credentials; for tests only, prefer the environment |
    ///
    /// # Errors
    /// [`imagecache_core::Error::Config`] naming what is wrong: another
    /// scheme, no bucket, a bad prefix, an unknown key or a bad value.
    pub fn from_url(url: &str) -> imagecache_core::Result<Self> {
        Ok(parse_url(url)?)
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix under which every object is kept (no leading or trailing `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The endpoint, when one is set.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Sets the server URL (`http://host:port` needs [`S3Config::with_allow_http`]).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets the signing region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets static credentials instead of taking them from the environment.
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(secret_access_key.into());
        self
    }

    /// Sets a session token to go with the credentials.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// Allows (or forbids) an unencrypted `http://` endpoint.
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.allow_http = Some(allow);
        self
    }

    /// Sends unsigned requests, for public buckets; no credentials are needed.
    pub fn with_skip_signature(mut self, skip: bool) -> Self {
        self.skip_signature = skip;
        self
    }

    /// Uses `BUCKET.host` requests instead of `host/BUCKET`.
    pub fn with_virtual_hosted_style(mut self, virtual_hosted: bool) -> Self {
        self.virtual_hosted_style = virtual_hosted;
        self
    }

    /// Limits the idle connections kept per host; `0` opens a connection per
    /// request, which avoids Garage's stalls on reused connections.
    pub fn with_pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = Some(max);
        self
    }

    /// Sets the timeout of one request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the timeout for opening a connection.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how often, and for how long, a failed request is retried.
    pub fn with_retries(mut self, max_retries: usize, retry_timeout: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_timeout = retry_timeout;
        self
    }

    /// Sets how many records may accumulate before compaction runs (at least 1).
    pub fn with_compact_after(mut self, records: usize) -> Self {
        self.compact_after = records.max(1);
        self
    }

    /// Sets the blob size from which uploads go in parts, and the part size.
    ///
    /// S3 servers require parts (all but the last) of at least 5 MiB; smaller
    /// values are for stores without that limit, such as tests over
    /// `object_store::memory::InMemory`.
    pub fn with_multipart(mut self, threshold: usize, part_size: usize) -> Self {
        self.multipart_threshold = threshold.max(1);
        self.part_size = part_size.max(1);
        self
    }

    /// Sets how long a deletion marker is kept by compaction before it may be
    /// forgotten. It must exceed the longest time a writer can take between
    /// naming a record and storing it, and the clock skew between writers.
    pub fn with_tombstone_horizon(mut self, horizon: Duration) -> Self {
        self.tombstone_horizon = horizon;
        self
    }

    /// Fills what is unset from the AWS environment variables.
    pub(super) fn with_env_fallbacks(mut self) -> Self {
        fn var(names: &[&str]) -> Option<String> {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        }
        if self.access_key_id.is_none() && self.secret_access_key.is_none() {
            self.access_key_id = var(&["AWS_ACCESS_KEY_ID"]);
            self.secret_access_key = var(&["AWS_SECRET_ACCESS_KEY"]);
            if self.session_token.is_none() {
                self.session_token = var(&["AWS_SESSION_TOKEN"]);
            }
        }
        if self.endpoint.is_none() {
            self.endpoint = var(&["AWS_ENDPOINT", "AWS_ENDPOINT_URL"]);
        }
        if self.region.is_none() {
            self.region = var(&["AWS_REGION", "AWS_DEFAULT_REGION"]);
        }
        if self.allow_http.is_none() {
            self.allow_http = var(&["AWS_ALLOW_HTTP"]).map(|v| v.eq_ignore_ascii_case("true"));
        }
        self
    }
}

fn config_error(reason: impl Into<String>) -> Error {
    Error::Config {
        reason: reason.into(),
        source: None,
    }
}

fn check_bucket(bucket: &str) -> Result<String, Error> {
    let ok = (1..=255).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
    if ok {
        Ok(bucket.to_owned())
    } else {
        Err(config_error(format!(
            "invalid bucket name {bucket:?}: use 1 to 255 characters from a-z, 0-9, '.', '-' and '_'"
        )))
    }
}

fn check_prefix(prefix: &str) -> Result<String, Error> {
    let trimmed = prefix.trim_matches('/');
    let segments = trimmed.split('/').filter(|_| !trimmed.is_empty());
    for segment in segments {
        let ok = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'));
        if !ok {
            return Err(config_error(format!(
                "invalid prefix {prefix:?}: segment {segment:?} must be non-empty, not '.' or '..', \
                 and use only A-Z, a-z, 0-9, '.', '-' and '_'"
            )));
        }
    }
    Ok(trimmed.to_owned())
}

fn percent_decode(value: &str, key: &str) -> Result<String, Error> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Exactly two hex digits: `from_str_radix` alone would also
                // take a sign, reading `%+1` as byte 1.
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        config_error(format!("query parameter {key}: bad percent-encoding"))
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| config_error(format!("query parameter {key}: not UTF-8 after decoding")))
}

fn parse_bool(key: &str, value: &str) -> Result<bool, Error> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(config_error(format!(
            "query parameter {key}={value:?}: expected true or false"
        ))),
    }
}

fn parse_number(key: &str, value: &str) -> Result<usize, Error> {
    value.parse().map_err(|_| {
        config_error(format!(
            "query parameter {key}={value:?}: expected a whole number"
        ))
    })
}

fn parse_secs(key: &str, value: &str) -> Result<Duration, Error> {
    let number = value.strip_suffix('s').unwrap_or(value);
    number
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            config_error(format!(
                "query parameter {key}={value:?}: expected seconds, e.g. 30 or 2.5"
            ))
        })
}

fn parse_url(url: &str) -> Result<S3Config, Error> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        // Show only the scheme part: the rest may carry credentials.
        let scheme = url.split_once("://").map_or("none", |(s, _)| s);
        config_error(format!(
            "URL scheme is {scheme:?}, expected s3:// (s3://BUCKET/PREFIX?endpoint=…)"
        ))
    })?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    if bucket.is_empty() {
        return Err(config_error(
            "URL names no bucket: expected s3://BUCKET/PREFIX",
        ));
    }
    let mut config = S3Config::build(bucket, prefix)?;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(raw, key)?;
        match key {
            "endpoint" => config.endpoint = Some(value),
            "region" => config.region = Some(value),
            "allow_http" => config.allow_http = Some(parse_bool(key, &value)?),
            "skip_signature" => config.skip_signature = parse_bool(key, &value)?,
            "virtual_hosted" => config.virtual_hosted_style = parse_bool(key, &value)?,
            "pool_idle" => config.pool_max_idle_per_host = Some(parse_number(key, &value)?),
            "timeout" => config.timeout = parse_secs(key, &value)?,
            "connect_timeout" => config.connect_timeout = parse_secs(key, &value)?,
            "retry_timeout" => config.retry_timeout = parse_secs(key, &value)?,
            "retries" => config.max_retries = parse_number(key, &value)?,
            "compact_after" => config.compact_after = parse_number(key, &value)?.max(1),
            "multipart_threshold" => config.multipart_threshold = parse_number(key, &value)?.max(1),
            "part_size" => config.part_size = parse_number(key, &value)?.max(1),
            "access_key_id" => config.access_key_id = Some(value),
            "secret_access_key" => config.secret_access_key = Some(value),
            "session_token" => config.session_token = Some(value),
            other => {
                return Err(config_error(format!(
                    "unknown query parameter {other:?}; known: endpoint, region, allow_http, \
                     pool_idle, timeout, connect_timeout, retry_timeout, retries, virtual_hosted, \
                     skip_signature, compact_after, multipart_threshold, part_size, \
                     access_key_id, secret_access_key, session_token"
                )));
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url() -> Result<(), Error> {
        let c = parse_url(
            "s3://b/a/b/?endpoint=http%3A%2F%2F127.0.0.1%3A3900&region=garage&allow_http=true\
             &pool_idle=0&timeout=2.5&retries=1&access_key_id=K&secret_access_key=S",
        )?;
        assert_eq!(c.bucket, "b");
        assert_eq!(c.prefix, "a/b");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(c.region.as_deref(), Some("garage"));
        assert_eq!(c.allow_http, Some(true));
        assert_eq!(c.pool_max_idle_per_host, Some(0));
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.max_retries, 1);
        assert_eq!(c.access_key_id.as_deref(), Some("K"));
        Ok(())
    }

    #[test]
    fn secrets_stay_out_of_debug_and_display() -> Result<(), Error> {
        let c = parse_url("s3://b/p?access_key_id=AKIDSECRETID&secret_access_key=VERYSECRET")?;
        let shown = format!("{c} {c:?}");
        assert!(!shown.contains("AKIDSECRETID"), "{shown}");
        assert!(!shown.contains("VERYSECRET"), "{shown}");
        Ok(())
    }

    #[test]
    fn refuses_bad_urls() {
        for url in [
            "http://b/p",
            "s3://",
            "s3:///p",
            "s3://b/../x",
            "s3://b/a//b",
            "s3://b/p?nope=1",
            "s3://b/p?allow_http=maybe",
            "s3://b/p?timeout=soon",
            "s3://b/p?region=%zz",
            "s3://b/p?region=%+1",
            "s3://b/p?region=%1",
            "s3://b c/p",
        ] {
            assert!(
                matches!(parse_url(url), Err(Error::Config { .. })),
                "{url} was accepted"
            );
        }
    }

    #[test]
    fn empty_prefix_is_allowed() -> Result<(), Error> {
        assert_eq!(parse_url("s3://b")?.prefix, "");
        assert_eq!(parse_url("s3://b/")?.prefix, "");
        assert_eq!(parse_url("s3://b/?region=x")?.prefix, "");
        Ok(())
    }
}

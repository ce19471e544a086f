//! [`S3Config`]: where an S3 store lives, how to reach it, and tuning.

use std::fmt;
use std::time::Duration;

use object_store::ClientConfigKey;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

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
/// The connection is configured the way every tool over `object_store` is:
/// when the backend opens, [`AmazonS3Builder::from_env`] reads the `AWS_*`
/// environment variables, and then the settings given here (as
/// [`AmazonS3ConfigKey`]s, from the URL's query or from [`S3Config::with_option`]
/// and the `with_*` shortcuts) are applied over them. Credentials therefore
/// come from anything `object_store` supports, in its order: keys in the URL
/// or set here, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
/// (`AWS_SESSION_TOKEN`), web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` with
/// `AWS_ROLE_ARN`, as IRSA sets them), ECS container credentials
/// (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`), and the EC2 instance metadata
/// service.
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
    /// `object_store` settings in the order given; a later one wins.
    pub(super) options: Vec<(AmazonS3ConfigKey, String)>,
    /// Whether the `AWS_*` environment variables are read first.
    pub(super) from_env: bool,
    pub(super) max_retries: usize,
    pub(super) retry_timeout: Duration,
    pub(super) compact_after: usize,
    pub(super) multipart_threshold: usize,
    pub(super) part_size: usize,
    pub(super) tombstone_horizon: Duration,
}

/// Whether a setting's value is a secret that must never be shown.
fn is_secret(key: &AmazonS3ConfigKey) -> bool {
    matches!(
        key,
        AmazonS3ConfigKey::AccessKeyId
            | AmazonS3ConfigKey::SecretAccessKey
            | AmazonS3ConfigKey::Token
            | AmazonS3ConfigKey::Encryption(_)
    )
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets show as set, never as what they are.
        let options: Vec<String> = self
            .options
            .iter()
            .map(|(key, value)| {
                if is_secret(key) {
                    format!("{}=<set>", key.as_ref())
                } else {
                    format!("{}={value}", key.as_ref())
                }
            })
            .collect();
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("options", &options)
            .field("from_env", &self.from_env)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .field("compact_after", &self.compact_after)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)?;
        if let Some(endpoint) = self.endpoint() {
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
            options: Vec::new(),
            from_env: true,
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
    /// A query key is any key [`AmazonS3ConfigKey`] parses, with or without
    /// its `aws_` prefix: `endpoint`, `region`, `allow_http`,
    /// `access_key_id`, `secret_access_key`, `session_token`,
    /// `skip_signature`, `virtual_hosted_style_request`, `timeout`,
    /// `connect_timeout`, `pool_max_idle_per_host`, `web_identity_token_file`,
    /// `role_arn`, `metadata_endpoint`, `conditional_put`, … (durations as
    /// `object_store` reads them, `30s` or `500ms`; a bare number is
    /// seconds). imagecache's own keys:
    ///
    /// | key | meaning |
    /// |---|---|
    /// | `retries` | retries of a failed request (default 3) |
    /// | `retry_timeout` | seconds the retries of one request may take (default 30) |
    /// | `compact_after` | uncompacted records that trigger compaction |
    /// | `multipart_threshold`, `part_size` | bytes |
    /// | `pool_idle` | short for `pool_max_idle_per_host` (`0` for Garage, which stalls on reused connections) |
    /// | `virtual_hosted` | short for `virtual_hosted_style_request` |
    ///
    /// Values may be percent-encoded. Keys in the URL are meant for tests
    /// and tools; prefer the environment for credentials.
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

    /// The endpoint, when one is set here (the environment's is read when
    /// the backend opens).
    pub fn endpoint(&self) -> Option<&str> {
        self.option(&AmazonS3ConfigKey::Endpoint)
    }

    /// The value of a setting made here, the last one when set twice.
    pub fn option(&self, key: &AmazonS3ConfigKey) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets any `object_store` setting, applied over the environment's.
    pub fn with_option(mut self, key: AmazonS3ConfigKey, value: impl Into<String>) -> Self {
        self.options.push((key, value.into()));
        self
    }

    /// Whether the `AWS_*` environment variables are read when the backend
    /// opens (default: yes). Without them, only the settings made here
    /// count.
    pub fn with_env(mut self, from_env: bool) -> Self {
        self.from_env = from_env;
        self
    }

    /// Sets the server URL (`http://host:port` needs [`S3Config::with_allow_http`]).
    pub fn with_endpoint(self, endpoint: impl Into<String>) -> Self {
        self.with_option(AmazonS3ConfigKey::Endpoint, endpoint)
    }

    /// Sets the signing region.
    pub fn with_region(self, region: impl Into<String>) -> Self {
        self.with_option(AmazonS3ConfigKey::Region, region)
    }

    /// Sets static credentials instead of taking them from the environment.
    pub fn with_credentials(
        self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.with_option(AmazonS3ConfigKey::AccessKeyId, access_key_id)
            .with_option(AmazonS3ConfigKey::SecretAccessKey, secret_access_key)
    }

    /// Sets a session token to go with the credentials.
    pub fn with_session_token(self, token: impl Into<String>) -> Self {
        self.with_option(AmazonS3ConfigKey::Token, token)
    }

    /// Allows (or forbids) an unencrypted `http://` endpoint.
    pub fn with_allow_http(self, allow: bool) -> Self {
        self.with_option(client(ClientConfigKey::AllowHttp), allow.to_string())
    }

    /// Sends unsigned requests, for public buckets; no credentials are needed.
    pub fn with_skip_signature(self, skip: bool) -> Self {
        self.with_option(AmazonS3ConfigKey::SkipSignature, skip.to_string())
    }

    /// Uses `BUCKET.host` requests instead of `host/BUCKET`.
    pub fn with_virtual_hosted_style(self, virtual_hosted: bool) -> Self {
        self.with_option(
            AmazonS3ConfigKey::VirtualHostedStyleRequest,
            virtual_hosted.to_string(),
        )
    }

    /// Limits the idle connections kept per host; `0` opens a connection per
    /// request, which avoids Garage's stalls on reused connections.
    pub fn with_pool_max_idle_per_host(self, max: usize) -> Self {
        self.with_option(client(ClientConfigKey::PoolMaxIdlePerHost), max.to_string())
    }

    /// Sets the timeout of one request (default 30 s).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let value = format!("{}ms", timeout.as_millis());
        self.with_option(client(ClientConfigKey::Timeout), value)
    }

    /// Sets the timeout for opening a connection (default 5 s).
    pub fn with_connect_timeout(self, timeout: Duration) -> Self {
        let value = format!("{}ms", timeout.as_millis());
        self.with_option(client(ClientConfigKey::ConnectTimeout), value)
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

    /// The `object_store` builder: the environment's settings (unless
    /// turned off), this crate's defaults where neither the environment nor
    /// this configuration says otherwise, then this configuration's.
    pub(super) fn builder(&self) -> AmazonS3Builder {
        let mut builder = if self.from_env {
            AmazonS3Builder::from_env()
        } else {
            AmazonS3Builder::new()
        };
        let defaults = [
            (AmazonS3ConfigKey::Region, "us-east-1".to_owned()),
            (
                client(ClientConfigKey::Timeout),
                format!("{}s", DEFAULT_TIMEOUT.as_secs()),
            ),
            (
                client(ClientConfigKey::ConnectTimeout),
                format!("{}s", DEFAULT_CONNECT_TIMEOUT.as_secs()),
            ),
        ];
        for (key, value) in defaults {
            if builder.get_config_value(&key).is_none() {
                builder = builder.with_config(key, value);
            }
        }
        for (key, value) in &self.options {
            builder = builder.with_config(*key, value);
        }
        builder.with_bucket_name(&self.bucket)
    }
}

fn client(key: ClientConfigKey) -> AmazonS3ConfigKey {
    AmazonS3ConfigKey::Client(key)
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

/// Durations `object_store` reads with units; a bare number here means
/// seconds.
fn is_duration(key: &AmazonS3ConfigKey) -> bool {
    matches!(
        key,
        AmazonS3ConfigKey::Client(
            ClientConfigKey::Timeout
                | ClientConfigKey::ConnectTimeout
                | ClientConfigKey::PoolIdleTimeout
                | ClientConfigKey::Http2KeepAliveInterval
                | ClientConfigKey::Http2KeepAliveTimeout
        )
    )
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
        config = apply_query(config, key, value)?;
    }
    check_options(&config)?;
    Ok(config)
}

/// One `key=value` of the URL's query.
fn apply_query(mut config: S3Config, key: &str, value: String) -> Result<S3Config, Error> {
    match key {
        "retries" => config.max_retries = parse_number(key, &value)?,
        "retry_timeout" => config.retry_timeout = parse_secs(key, &value)?,
        "compact_after" => config.compact_after = parse_number(key, &value)?.max(1),
        "multipart_threshold" => config.multipart_threshold = parse_number(key, &value)?.max(1),
        "part_size" => config.part_size = parse_number(key, &value)?.max(1),
        "pool_idle" => return apply_query(config, "pool_max_idle_per_host", value),
        "virtual_hosted" => return apply_query(config, "virtual_hosted_style_request", value),
        other => {
            let key: AmazonS3ConfigKey = other.parse().map_err(|_| {
                config_error(format!(
                    "unknown query parameter {other:?}: use a key of object_store's \
                     AmazonS3ConfigKey (endpoint, region, allow_http, access_key_id, \
                     secret_access_key, session_token, skip_signature, timeout, \
                     connect_timeout, …) or one of imagecache's (retries, retry_timeout, \
                     compact_after, multipart_threshold, part_size, pool_idle, virtual_hosted)"
                ))
            })?;
            if key == AmazonS3ConfigKey::Bucket {
                return Err(config_error(
                    "the bucket comes from the URL (s3://BUCKET/PREFIX), not from its query",
                ));
            }
            let value = if is_duration(&key) && value.parse::<f64>().is_ok() {
                format!("{}ms", parse_secs(other, &value)?.as_millis())
            } else {
                value
            };
            config.options.push((key, value));
        }
    }
    Ok(config)
}

/// Checks the values of the settings as `object_store` reads them, without
/// the environment and without reaching the server.
fn check_options(config: &S3Config) -> Result<(), Error> {
    let mut builder = AmazonS3Builder::new().with_bucket_name(&config.bucket);
    // Credentials may be completed by the environment when the backend
    // opens; only the values are checked here.
    for (key, value) in config.options.iter().filter(|(key, _)| !is_secret(key)) {
        builder = builder.with_config(*key, value);
    }
    builder
        .with_config(AmazonS3ConfigKey::SkipSignature, "true")
        .build()
        .map(drop)
        .map_err(|e| Error::Config {
            reason: format!("a setting in the URL of {config} is not acceptable"),
            source: Some(Box::new(e)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url() -> Result<(), Error> {
        let c = parse_url(
            "s3://b/a/b/?endpoint=http%3A%2F%2F127.0.0.1%3A3900&region=garage&allow_http=true\
             &pool_idle=0&timeout=2.5&retries=1&access_key_id=K&secret_access_key=S\
             &aws_web_identity_token_file=/t&conditional_put=etag",
        )?;
        assert_eq!(c.bucket, "b");
        assert_eq!(c.prefix, "a/b");
        assert_eq!(c.endpoint(), Some("http://127.0.0.1:3900"));
        let option = |key| c.option(&key);
        assert_eq!(option(AmazonS3ConfigKey::Region), Some("garage"));
        assert_eq!(option(client(ClientConfigKey::AllowHttp)), Some("true"));
        assert_eq!(
            option(client(ClientConfigKey::PoolMaxIdlePerHost)),
            Some("0")
        );
        assert_eq!(option(client(ClientConfigKey::Timeout)), Some("2500ms"));
        assert_eq!(option(AmazonS3ConfigKey::AccessKeyId), Some("K"));
        assert_eq!(option(AmazonS3ConfigKey::WebIdentityTokenFile), Some("/t"));
        assert_eq!(option(AmazonS3ConfigKey::ConditionalPut), Some("etag"));
        assert_eq!(c.max_retries, 1);
        Ok(())
    }

    #[test]
    fn settings_apply_over_the_environment_and_the_defaults() -> Result<(), Error> {
        let c = parse_url("s3://b/p?region=eu-west-3&timeout=7s")?.with_env(false);
        let builder = c.builder();
        let value = |key| builder.get_config_value(&key);
        assert_eq!(
            value(AmazonS3ConfigKey::Region).as_deref(),
            Some("eu-west-3")
        );
        assert_eq!(
            value(client(ClientConfigKey::Timeout)).as_deref(),
            Some("7s")
        );
        assert_eq!(
            value(client(ClientConfigKey::ConnectTimeout)).as_deref(),
            Some("5s")
        );
        assert_eq!(value(AmazonS3ConfigKey::Bucket).as_deref(), Some("b"));
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
            "s3://b/p?bucket=other",
            "s3://b/p?retries=-1",
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

//! Reaching the bucket: the object store client built from an
//! [`S3Config`], the probe that finds out whether the store honours
//! conditional writes, and the explanation of a first request that failed.

use std::sync::Arc;

use imagecache_core::Key;
use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path;
use object_store::{
    ClientConfigKey, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, RetryConfig,
};

use super::S3Config;
use super::error::{Error, is_transient, s3_error_code, unavailability};

/// The object store client: the configuration's `object_store` builder,
/// checked for the mistakes that would otherwise surface later as an
/// obscure request failure, with this crate's retry policy.
pub(super) fn build_store(config: &S3Config) -> Result<Arc<dyn ObjectStore>, Error> {
    let config_error = |reason: String| Error::Config {
        reason,
        source: None,
    };
    let builder = config.builder();
    let value = |key: AmazonS3ConfigKey| builder.get_config_value(&key);
    let allow_http = value(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if let Some(endpoint) = value(AmazonS3ConfigKey::Endpoint) {
        if endpoint.starts_with("http://") {
            if !allow_http {
                return Err(config_error(format!(
                    "endpoint {endpoint} is plain http: add allow_http=true to the URL \
                     (or AWS_ALLOW_HTTP=true) to allow unencrypted traffic, or use https"
                )));
            }
        } else if !endpoint.starts_with("https://") {
            return Err(config_error(format!(
                "endpoint {endpoint:?} must start with https:// (or http:// with allow_http=true)"
            )));
        }
    }
    let skip_signature =
        value(AmazonS3ConfigKey::SkipSignature).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let id = value(AmazonS3ConfigKey::AccessKeyId);
    let secret = value(AmazonS3ConfigKey::SecretAccessKey);
    if !skip_signature && id.is_some() != secret.is_some() {
        return Err(config_error(
            "only half of the credentials are set: give both access_key_id and \
             secret_access_key (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                .into(),
        ));
    }
    let store = builder
        .with_retry(RetryConfig {
            max_retries: config.max_retries,
            retry_timeout: config.retry_timeout,
            ..RetryConfig::default()
        })
        .build()
        .map_err(|e| Error::Config {
            reason: format!("cannot configure the S3 client for {config}"),
            source: Some(Box::new(e)),
        })?;
    Ok(Arc::new(store))
}

/// The endpoint requests go to, as the configuration and the environment
/// set it, for messages.
pub(super) fn endpoint_of(config: &S3Config) -> Option<String> {
    config
        .builder()
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
}

fn refused_text(endpoint: &str, bucket: &str) -> String {
    format!(
        "{endpoint} refused the credentials for bucket {bucket:?}: check AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY (or the URL's access_key_id and secret_access_key), the region, \
         and the key's read/write permission on the bucket"
    )
}

/// Turns a failed first request into an explanation of what to fix.
pub(super) fn explain_probe_failure(config: &S3Config, err: object_store::Error) -> Error {
    let endpoint = endpoint_of(config);
    let endpoint = endpoint.as_deref().unwrap_or("the default AWS endpoint");
    let bucket = &config.bucket;
    let code = s3_error_code(&err);
    let missing_bucket = "NoSuchBucket";
    let refused = [
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
    ];
    if let Some(why) = unavailability(&err) {
        return Error::Unreachable {
            reason: format!(
                "cannot reach {endpoint} ({why}): check that the server is running and that the \
                 endpoint (host and port) is right"
            ),
            source: err,
        };
    }
    if is_transient(&err) {
        // A server that is there but busy or failing inside: the request
        // may be retried, and nothing says the configuration is wrong.
        return Error::store("list", Key::Other(bucket.clone()), err);
    }
    let reason = match (&err, code.as_deref()) {
        (_, Some(c)) if c == missing_bucket => format!(
            "bucket {bucket:?} does not exist at {endpoint}: create it (for example \
             `garage bucket create {bucket}` or `aws s3 mb s3://{bucket}`) or fix the bucket name"
        ),
        (
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. },
            _,
        ) => refused_text(endpoint, bucket),
        (_, Some(c)) if refused.contains(&c) => refused_text(endpoint, bucket),
        (_, Some("AuthorizationHeaderMalformed")) => format!(
            "{endpoint} refused the request's region: set region= in the URL (or AWS_REGION) \
             to the server's region"
        ),
        (object_store::Error::NotFound { .. }, _) => format!(
            "bucket {bucket:?} was not found at {endpoint}: create it or fix the bucket name"
        ),
        (_, Some(c)) => format!("probing bucket {bucket:?} at {endpoint} failed with {c}"),
        (_, None) => format!("probing bucket {bucket:?} at {endpoint} failed"),
    };
    Error::Config {
        reason,
        source: Some(Box::new(err)),
    }
}

/// Whether the store refuses a second create-if-absent write of one key.
pub(super) async fn probe_conditional(
    store: &Arc<dyn ObjectStore>,
    root: &Path,
) -> Result<bool, Error> {
    let path = root.clone().join("probe").join(format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    ));
    let key = Key::Other(path.to_string());
    let create = || PutOptions::from(PutMode::Create);
    match store
        .put_opts(&path, PutPayload::from_static(b"first"), create())
        .await
    {
        Ok(_) => {}
        Err(
            object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. },
        ) => {
            return Ok(false);
        }
        Err(e) => return Err(Error::store("put", key, e)),
    }
    let second = store
        .put_opts(&path, PutPayload::from_static(b"second"), create())
        .await;
    let outcome = match second {
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(true),
        Ok(_)
        | Err(
            object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. },
        ) => Ok(false),
        Err(e) => Err(Error::store("put", key, e)),
    };
    if let Err(e) = store.delete(&path).await {
        tracing::warn!(error = %e, path = %path, "could not remove the conditional-write probe");
    }
    outcome
}

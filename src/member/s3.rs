//! The S3 kind of object-store member (`s3://BUCKET[/PREFIX]`) on any S3-compatible server:
//! builds `object_store`'s S3 client from the member's spec options, the environment and the
//! AWS configuration files (`s3_config`), and creates a bucket for `pack --init`. Everything
//! else a member does is `object.rs`'s.

use super::object::{Container, ObjectMember};
use super::s3_config;
use super::s3_errors::{member_err, one_line};
use super::{MemberError, Options};
use futures::future::BoxFuture;
use object_store::ClientOptions;
use object_store::RetryConfig;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use std::sync::Arc;
use std::time::Duration;

pub use super::s3_url::{Url, parse_url};

/// An S3 bucket, and what creating it takes.
#[derive(Debug)]
struct Bucket {
    name: String,
    store: Arc<AmazonS3>,
    client: ClientOptions,
}

/// Opens the member `url` names.
pub fn open(url: Url, opts: &Options) -> Result<ObjectMember, MemberError> {
    let settings =
        s3_config::resolve(&url, &s3_config::Host::this()).map_err(MemberError::Unavailable)?;
    // The whole client configuration in one place: `with_client_options` replaces every
    // client option set before it.
    let client = ClientOptions::new()
        .with_allow_http(settings.allow_http)
        .with_connect_timeout(opts.timeout.min(Duration::from_secs(3)))
        .with_read_timeout(opts.timeout)
        .with_timeout_disabled()
        .with_pool_max_idle_per_host(64);
    let retry = RetryConfig {
        max_retries: opts.retries,
        retry_timeout: opts.timeout,
        ..RetryConfig::default()
    };
    // Only the machine's role needs object_store's own reading of the environment (web
    // identity, container credentials); everything else is set from `settings`.
    let mut builder = match settings.credentials {
        s3_config::Credentials::Role => AmazonS3Builder::from_env(),
        s3_config::Credentials::Anonymous => AmazonS3Builder::new().with_skip_signature(true),
        s3_config::Credentials::Keys { id, secret, token } => {
            let b = AmazonS3Builder::new()
                .with_access_key_id(id)
                .with_secret_access_key(secret);
            match token {
                Some(t) => b.with_token(t),
                None => b,
            }
        }
    }
    .with_bucket_name(&url.bucket)
    .with_client_options(client.clone())
    .with_retry(retry);
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    let store = Arc::new(
        builder
            .build()
            .map_err(|e| MemberError::Unavailable(one_line(&e)))?,
    );
    let bucket = Bucket {
        name: url.bucket.clone(),
        store: store.clone(),
        client,
    };
    ObjectMember::new(url.spec(), url.prefix, store, Box::new(bucket), opts)
}

impl Container for Bucket {
    fn describe(&self) -> String {
        format!("bucket '{}'", self.name)
    }

    /// An S3 CreateBucket: a signed PUT of the bucket's URL (one that exists already is fine).
    fn create(&self) -> BoxFuture<'_, Result<(), MemberError>> {
        use object_store::client::{HttpConnector, ReqwestConnector};
        use object_store::signer::Signer;
        Box::pin(async move {
            let url = self
                .store
                .signed_url(http::Method::PUT, &Key::from(""), Duration::from_secs(300))
                .await
                .map_err(member_err)?;
            let client = ReqwestConnector::default()
                .connect(&self.client)
                .map_err(member_err)?;
            let request = http::Request::builder()
                .method(http::Method::PUT)
                .uri(url.as_str())
                .body(object_store::client::HttpRequestBody::empty())
                .map_err(|e| MemberError::Io(e.to_string()))?;
            let response = client
                .execute(request)
                .await
                .map_err(|e| MemberError::Unavailable(one_line(&e)))?;
            let status = response.status();
            if status.is_success() || status == http::StatusCode::CONFLICT {
                Ok(())
            } else {
                Err(MemberError::Unavailable(format!(
                    "creating bucket '{}' failed: HTTP {status}",
                    self.name
                )))
            }
        })
    }
}

/// The parsed `s3://` spec, or why it is not one.
fn url(spec: &str) -> Result<Url, MemberError> {
    parse_url(std::path::Path::new(spec))
        .unwrap_or_else(|| Err(MemberError::Invalid(format!("{spec}: not an s3:// URL"))))
}

/// The spec as member lists record it: options in shardfs's order.
pub fn spec(spec: &str) -> Result<String, MemberError> {
    Ok(url(spec)?.spec())
}

/// Opens the member an `s3://` spec names.
pub fn open_spec(spec: &str, opts: &Options) -> Result<ObjectMember, MemberError> {
    open(url(spec)?, opts)
}

//! The web kind of object-store member (`http://HOST[:PORT]/PATH`, `https://...`): a store's
//! member folder served by any static web server, read by whole and ranged GETs (a server must
//! answer `Range` requests). It is read-only: every write is refused, and listing works only
//! where the server speaks WebDAV, so a mount or export from it names its model. Everything a
//! member does is `object.rs`'s; this file builds the client.

use super::object::{Container, ObjectMember};
use super::s3_errors::one_line;
use super::{MemberError, Options};
use futures::future::BoxFuture;
use object_store::http::HttpBuilder;
use object_store::{ClientOptions, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// The schemes of this kind.
pub const SCHEMES: [&str; 2] = ["http", "https"];

/// A web site: what the messages call it.
#[derive(Debug)]
struct Site(String);

impl Container for Site {
    fn describe(&self) -> String {
        format!("web folder {}", self.0)
    }

    fn create(&self) -> BoxFuture<'_, Result<(), MemberError>> {
        Box::pin(async move { Err(MemberError::Unavailable(format!("{} is read-only", self.0))) })
    }

    fn read_only(&self) -> bool {
        true
    }
}

/// The spec as member lists record it (no trailing `/`), or why it is not one.
pub fn spec(spec: &str) -> Result<String, MemberError> {
    let bad = |why: &str| MemberError::Invalid(format!("{spec}: {why}"));
    let (_, rest) = spec.split_once("://").ok_or_else(|| bad("not a URL"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(char::is_whitespace) {
        return Err(bad("a web member's URL takes no query, fragment or spaces"));
    }
    Ok(spec.trim_end_matches('/').to_string())
}

/// Opens the member at URL `spec`.
pub fn open(spec_given: &str, opts: &Options) -> Result<ObjectMember, MemberError> {
    let url = spec(spec_given)?;
    let client = ClientOptions::new()
        .with_allow_http(true)
        .with_connect_timeout(opts.timeout.min(Duration::from_secs(3)))
        .with_read_timeout(opts.timeout)
        .with_timeout_disabled();
    let retry = RetryConfig {
        max_retries: opts.retries,
        retry_timeout: opts.timeout,
        ..RetryConfig::default()
    };
    let store = HttpBuilder::new()
        .with_url(&url)
        .with_client_options(client)
        .with_retry(retry)
        .build()
        .map_err(|e| MemberError::Invalid(one_line(&e)))?;
    let site = Site(url.clone());
    ObjectMember::new(url, String::new(), Arc::new(store), Box::new(site), opts)
}

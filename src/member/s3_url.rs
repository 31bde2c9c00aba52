//! The `s3://BUCKET[/PREFIX]` spec of an object-store member: what it names, and what makes
//! one valid.

use super::MemberError;
use std::path::Path;

/// What an `s3://` member spec names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// Settings of this member alone, from `?key=value&...` after the path.
    pub options: UrlOptions,
}

/// A member's own S3 settings (`s3://BUCKET/PREFIX?profile=P&endpoint=URL`), for a store whose
/// members live with different providers. Each one left out comes from the environment and
/// the AWS configuration files (see `s3_config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlOptions {
    /// A profile of `~/.aws/credentials` / `~/.aws/config`.
    pub profile: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Where credentials come from when not from keys: `instance` (the role of the machine or
    /// container, through instance metadata) or `none` (unsigned requests, a public bucket).
    pub credentials: Option<CredentialSource>,
    /// `allow_http=true`: a plain-HTTP endpoint is allowed for this member.
    pub allow_http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Instance,
    None,
}

impl Url {
    /// The spec as shardfs writes it: options in a fixed order, so one member reads the same
    /// in every member list.
    pub fn spec(&self) -> String {
        let mut s = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            s.push('/');
            s.push_str(&self.prefix);
        }
        let o = &self.options;
        let mut query = Vec::new();
        if let Some(p) = &o.profile {
            query.push(format!("profile={p}"));
        }
        if let Some(e) = &o.endpoint {
            query.push(format!("endpoint={e}"));
        }
        if let Some(r) = &o.region {
            query.push(format!("region={r}"));
        }
        match o.credentials {
            Some(CredentialSource::Instance) => query.push("credentials=instance".into()),
            Some(CredentialSource::None) => query.push("credentials=none".into()),
            None => {}
        }
        if o.allow_http {
            query.push("allow_http=true".into());
        }
        if !query.is_empty() {
            s.push('?');
            s.push_str(&query.join("&"));
        }
        s
    }
}

/// `Some` when `spec` is an `s3://` URL (then `Err` when it is not a valid one).
pub fn parse_url(spec: &Path) -> Option<Result<Url, MemberError>> {
    let s = spec.to_str()?;
    let rest = s.strip_prefix("s3://")?;
    Some(parse_rest(rest).map_err(MemberError::Invalid))
}

fn parse_rest(rest: &str) -> Result<Url, String> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if !bucket_ok {
        return Err("not a valid bucket name (3 to 63 lowercase letters, digits, '-', '.', '_'): use s3://BUCKET[/PREFIX]".into());
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|c| c == "." || c == "..") {
        return Err("a prefix may not hold '.' or '..'".into());
    }
    Ok(Url {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        options: parse_options(query)?,
    })
}

fn parse_options(query: &str) -> Result<UrlOptions, String> {
    let mut o = UrlOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .filter(|(_, v)| !v.is_empty())
            .ok_or_else(|| format!("member option '{pair}' needs a value ({pair}=...)"))?;
        match key {
            "profile" => o.profile = Some(value.to_string()),
            "endpoint" => {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(format!(
                        "endpoint '{value}' is not an http:// or https:// URL"
                    ));
                }
                o.endpoint = Some(value.trim_end_matches('/').to_string());
            }
            "region" => o.region = Some(value.to_string()),
            "credentials" => {
                o.credentials = Some(match value {
                    "instance" => CredentialSource::Instance,
                    "none" => CredentialSource::None,
                    other => {
                        return Err(format!(
                            "credentials={other}: use credentials=instance (the machine's role) or credentials=none (a public bucket)"
                        ));
                    }
                })
            }
            "allow_http" => {
                o.allow_http = match value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => return Err(format!("allow_http={other}: use true or false")),
                }
            }
            other => {
                return Err(format!(
                    "unknown member option '{other}' (profile, endpoint, region, credentials, allow_http)"
                ));
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let p = |s: &str| parse_url(Path::new(s));
        assert!(p("/data/s").is_none());
        assert_eq!(
            p("s3://models/prod/").unwrap().unwrap(),
            Url {
                bucket: "models".into(),
                prefix: "prod".into(),
                options: UrlOptions::default(),
            }
        );
        assert_eq!(p("s3://models").unwrap().unwrap().prefix, "");
        assert!(p("s3://").unwrap().is_err());
        assert!(p("s3://Bad_Bucket").unwrap().is_err());
        assert!(p("s3://models/../x").unwrap().is_err());
    }

    #[test]
    fn member_options_parse_and_print_in_one_order() {
        let p = |s: &str| parse_url(Path::new(s)).unwrap();
        let u = p("s3://models/prod?endpoint=http://127.0.0.1:9000/&profile=two&allow_http=true")
            .unwrap();
        assert_eq!(u.prefix, "prod");
        assert_eq!(u.options.profile.as_deref(), Some("two"));
        assert_eq!(u.options.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(u.options.allow_http);
        assert_eq!(
            u.spec(),
            "s3://models/prod?profile=two&endpoint=http://127.0.0.1:9000&allow_http=true"
        );
        assert_eq!(p(&u.spec()).unwrap(), u);
        assert_eq!(p("s3://models").unwrap().spec(), "s3://models");
        for bad in [
            "s3://models?colour=red",
            "s3://models?profile",
            "s3://models?endpoint=ftp://x",
            "s3://models?credentials=magic",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }
}

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
}

/// `Some` when `spec` is an `s3://` URL (then `Err` when it is not a valid one).
pub fn parse_url(spec: &Path) -> Option<Result<Url, MemberError>> {
    let s = spec.to_str()?;
    let rest = s.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bad = |why: &str| Some(Err(MemberError::Invalid(why.to_string())));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if !bucket_ok {
        return bad(
            "not a valid bucket name (3 to 63 lowercase letters, digits, '-', '.', '_'): use s3://BUCKET[/PREFIX]",
        );
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|c| c == "." || c == "..") {
        return bad("a prefix may not hold '.' or '..'");
    }
    Some(Ok(Url {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
    }))
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
                prefix: "prod".into()
            }
        );
        assert_eq!(p("s3://models").unwrap().unwrap().prefix, "");
        assert!(p("s3://").unwrap().is_err());
        assert!(p("s3://Bad_Bucket").unwrap().is_err());
        assert!(p("s3://models/../x").unwrap().is_err());
    }
}

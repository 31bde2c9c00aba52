//! What a `--store` entry names: a `MemberSpec`, a directory or a URL of a kind this build
//! knows (`URL_KINDS` in `member/mod.rs`), from the command line to the member list and back;
//! how it is recorded (absolute, a URL's options in shardfs's order) and how the member it names
//! opens.

use super::{MemberError, MemberIo, Options, URL_KINDS, UrlKind, deadline, dir};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a member lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberSpec {
    /// A directory: a local disk or a network mount (any bytes a path may hold).
    Dir(PathBuf),
    /// A URL of a kind in `URL_KINDS` (or, in test builds, a `twin://NAME`), as given.
    Url(String),
}

impl MemberSpec {
    /// The spec a `--store` entry or a member list's location names. A URL of a kind shardfs
    /// does not know (`gs://`, `S3://`) is refused rather than taken as an oddly named folder.
    pub fn parse(raw: impl AsRef<OsStr>) -> Result<MemberSpec, MemberError> {
        let raw = raw.as_ref();
        if let Some(why) = unknown_scheme(raw) {
            return Err(MemberError::Invalid(why));
        }
        match raw.to_str() {
            Some(text) if is_twin(text) || url_kind(text).is_some() => {
                Ok(MemberSpec::Url(text.to_string()))
            }
            _ => Ok(MemberSpec::Dir(PathBuf::from(raw))),
        }
    }

    /// The spec as it should be recorded for use from another directory or host: a path made
    /// absolute (symlinks resolved where it exists), a URL with its options in shardfs's order.
    pub fn recorded(&self) -> MemberSpec {
        match self {
            MemberSpec::Dir(path) => MemberSpec::Dir(
                std::fs::canonicalize(path)
                    .or_else(|_| std::path::absolute(path))
                    .unwrap_or_else(|_| path.clone()),
            ),
            MemberSpec::Url(text) => match url_kind(text) {
                Some(kind) => MemberSpec::Url((kind.spec)(text).unwrap_or_else(|_| text.clone())),
                None => self.clone(),
            },
        }
    }

    /// The spec's text (a path's bytes as they are).
    pub fn as_os_str(&self) -> &OsStr {
        match self {
            MemberSpec::Dir(path) => path.as_os_str(),
            MemberSpec::Url(text) => OsStr::new(text),
        }
    }

    /// The directory this spec names, if it names one.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            MemberSpec::Dir(path) => Some(path),
            MemberSpec::Url(_) => None,
        }
    }

    /// Opens the member, every call of it under the deadline of `opts`.
    pub fn open(&self, opts: &Options) -> Result<Arc<dyn MemberIo>, MemberError> {
        let inner: Arc<dyn MemberIo> = match self {
            MemberSpec::Dir(path) => Arc::new(dir::DirMember::new(path)),
            MemberSpec::Url(text) if is_twin(text) => twin(text)?,
            MemberSpec::Url(text) => match url_kind(text) {
                Some(kind) => (kind.open)(text, opts)?,
                None => return Err(MemberError::Invalid(format!("{text}: no such member kind"))),
            },
        };
        Ok(Arc::new(deadline::Deadlined::new(inner, opts)))
    }
}

/// How a member list records the member at `location` (where a member says it is).
pub fn recorded_location(location: &str) -> String {
    MemberSpec::parse(location).map_or_else(|_| location.to_string(), |s| s.recorded().to_string())
}

impl fmt::Display for MemberSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberSpec::Dir(path) => write!(f, "{}", path.display()),
            MemberSpec::Url(text) => f.write_str(text),
        }
    }
}

impl From<MemberSpec> for OsString {
    fn from(spec: MemberSpec) -> OsString {
        match spec {
            MemberSpec::Dir(path) => path.into_os_string(),
            MemberSpec::Url(text) => text.into(),
        }
    }
}

#[cfg(any(test, feature = "twins"))]
fn is_twin(text: &str) -> bool {
    super::twins::is_twin(Path::new(text))
}

#[cfg(not(any(test, feature = "twins")))]
fn is_twin(_: &str) -> bool {
    false
}

#[cfg(any(test, feature = "twins"))]
fn twin(text: &str) -> Result<Arc<dyn MemberIo>, MemberError> {
    super::twins::lookup(Path::new(text))
        .ok_or_else(|| MemberError::Absent(format!("no test twin {text} registered")))
}

#[cfg(not(any(test, feature = "twins")))]
fn twin(text: &str) -> Result<Arc<dyn MemberIo>, MemberError> {
    Err(MemberError::Invalid(format!(
        "{text}: test twins are not built in"
    )))
}

/// The URL kind `text` names.
fn url_kind(text: &str) -> Option<&'static UrlKind> {
    let (scheme, _) = text.split_once("://")?;
    URL_KINDS.iter().find(|k| k.schemes.contains(&scheme))
}

/// Why a `--store` entry that starts like a URL of a kind shardfs does not know (`S3://`,
/// `gs://`, `s3:/`) is refused, rather than taken as a directory of that odd name; `None` for
/// the URL kinds it knows and for paths.
pub fn unknown_scheme(spec: &OsStr) -> Option<String> {
    let bytes = spec.as_bytes();
    let colon = bytes.iter().position(|&b| b == b':')?;
    let scheme = &bytes[..colon];
    let looks_like_scheme = !scheme.is_empty()
        && scheme[0].is_ascii_alphabetic()
        && scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(b))
        && bytes[colon + 1..].starts_with(b"/");
    let known = spec
        .to_str()
        .is_some_and(|t| is_twin(t) || url_kind(t).is_some());
    if !looks_like_scheme || known {
        return None;
    }
    let forms: Vec<&str> = URL_KINDS.iter().map(|k| k.form).collect();
    Some(format!(
        "{} is not a kind of member shardfs knows: give {} or a directory (start it with ./ if its name has a colon)",
        crate::shown::shown(&spec.to_string_lossy()),
        forms.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_as_directories_or_known_urls_and_unknown_schemes_are_refused() {
        assert_eq!(
            MemberSpec::parse("disk/m0").unwrap(),
            MemberSpec::Dir("disk/m0".into())
        );
        assert_eq!(
            MemberSpec::parse("s3://models/v1").unwrap(),
            MemberSpec::Url("s3://models/v1".into())
        );
        assert_eq!(
            MemberSpec::parse("./gs://x").unwrap(),
            MemberSpec::Dir("./gs://x".into())
        );
        let err = MemberSpec::parse("gs://bucket").unwrap_err().to_string();
        assert!(err.contains("not a kind of member"), "{err}");
        // A path that is not UTF-8 stays a directory, byte for byte.
        let raw = OsStr::from_bytes(b"disk/\xff");
        assert_eq!(MemberSpec::parse(raw).unwrap().as_os_str(), raw);
    }

    #[test]
    fn a_recorded_directory_is_absolute_and_a_twin_stays_as_it_is() {
        let MemberSpec::Dir(path) = MemberSpec::parse("some/dir").unwrap().recorded() else {
            panic!("a directory stays a directory");
        };
        assert!(path.is_absolute() && path.ends_with("some/dir"), "{path:?}");
        let twin = MemberSpec::parse("twin://a").unwrap();
        assert_eq!(twin.recorded(), twin);
    }
}

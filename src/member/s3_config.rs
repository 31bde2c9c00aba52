//! Where an S3 member's settings come from, as every AWS tool reads them: the member's own spec
//! options (`?profile=&endpoint=&region=&credentials=`) first, then the environment (`AWS_*`),
//! then the profile (`AWS_PROFILE`, else `default`) of `~/.aws/credentials` and `~/.aws/config`
//! (or `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`). A profile named in the spec wins over
//! the environment, as `--profile` does for the AWS CLI.
//!
//! Credentials are keys (from the environment or a profile), unsigned requests
//! (`credentials=none`), or the machine's role (`credentials=instance`, or a web-identity or
//! container setting in the environment). Instance metadata is never asked silently: with
//! nothing configured, opening the member is a one-line error saying what to set.

use super::s3_url::{CredentialSource, Url};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most of an AWS configuration file read (they are a few lines).
const MAX_FILE: u64 = 1 << 20;

/// An S3 member's resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub allow_http: bool,
    pub credentials: Credentials,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Keys {
        id: String,
        secret: String,
        token: Option<String>,
    },
    /// Unsigned requests.
    Anonymous,
    /// object_store's own providers: web identity, container credentials, instance metadata.
    Role,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never the secret, whoever prints this.
            Credentials::Keys { id, .. } => write!(f, "Keys({id}, ...)"),
            Credentials::Anonymous => write!(f, "Anonymous"),
            Credentials::Role => write!(f, "Role"),
        }
    }
}

/// What is read from outside the spec: the environment and the home directory.
pub struct Host<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub home: Option<PathBuf>,
}

impl Host<'_> {
    /// This process's environment and home directory.
    pub fn this() -> Host<'static> {
        Host {
            env: &|name| std::env::var(name).ok().filter(|v| !v.is_empty()),
            home: crate::home::home_dir(),
        }
    }
}

/// One profile's keys and values, from both files (the credentials file wins).
type Profile = HashMap<String, String>;

/// Resolves a member's settings (see the module's notes). Errors are one line, without the
/// member's location (the caller adds it).
pub fn resolve(url: &Url, host: &Host) -> Result<Settings, String> {
    let env = |n: &str| (host.env)(n);
    let o = &url.options;
    let named = o.profile.is_some() || env("AWS_PROFILE").is_some();
    let profile_name = o
        .profile
        .clone()
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let files = Files::of(host);
    let profile = files.profile(&profile_name)?;
    if named && profile.is_none() && o.credentials.is_none() {
        return Err(format!(
            "profile '{profile_name}' is not in {} or {}",
            files.credentials.display(),
            files.config.display()
        ));
    }
    let profile = profile.unwrap_or_default();
    let from_profile = |k: &str| profile.get(k).cloned();
    // A profile the spec names comes before the environment; any other after it.
    let pick = |spec: Option<String>, vars: &[&str], key: &str| {
        let from_env = || vars.iter().find_map(|v| env(v));
        spec.or_else(|| {
            if o.profile.is_some() {
                from_profile(key).or_else(from_env)
            } else {
                from_env().or_else(|| from_profile(key))
            }
        })
    };
    let region = pick(
        o.region.clone(),
        &["AWS_REGION", "AWS_DEFAULT_REGION"],
        "region",
    );
    let endpoint = pick(
        o.endpoint.clone(),
        &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
        "endpoint_url",
    )
    .map(|e| e.trim_end_matches('/').to_string());
    let allow_http = o.allow_http
        || env("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    if let Some(e) = &endpoint
        && e.starts_with("http://")
        && !allow_http
    {
        return Err(format!(
            "the http:// endpoint {e} needs AWS_ALLOW_HTTP=true (or allow_http=true in the member spec)"
        ));
    }
    let credentials = credentials(o, host, &profile_name, &profile)?;
    Ok(Settings {
        region,
        endpoint,
        allow_http,
        credentials,
    })
}

/// The credentials a member signs with: as its spec says (none, the machine's role), else
/// the keys of the profile it names, else the keys of the environment or the profile, else a
/// role the environment points at.
fn credentials(
    o: &super::s3_url::UrlOptions,
    host: &Host,
    profile_name: &str,
    profile: &Profile,
) -> Result<Credentials, String> {
    let env = |n: &str| (host.env)(n);
    let from_profile = |k: &str| profile.get(k).cloned();
    let keys_of_profile = || {
        Some(Credentials::Keys {
            id: from_profile("aws_access_key_id")?,
            secret: from_profile("aws_secret_access_key")?,
            token: from_profile("aws_session_token"),
        })
    };
    let keys_of_env = || {
        Some(Credentials::Keys {
            id: env("AWS_ACCESS_KEY_ID")?,
            secret: env("AWS_SECRET_ACCESS_KEY")?,
            token: env("AWS_SESSION_TOKEN"),
        })
    };
    let role_in_env = [
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ]
    .iter()
    .any(|v| env(v).is_some());
    match o.credentials {
        Some(CredentialSource::None) => Ok(Credentials::Anonymous),
        Some(CredentialSource::Instance) => Ok(Credentials::Role),
        None if o.profile.is_some() => keys_of_profile().ok_or_else(|| {
            format!(
                "profile '{profile_name}' has no aws_access_key_id and aws_secret_access_key (sso and credential_process are not read)"
            )
        }),
        None => match keys_of_env().or_else(keys_of_profile) {
            Some(keys) => Ok(keys),
            None if role_in_env => Ok(Credentials::Role),
            None => Err("no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials; add ?credentials=instance to the member for the machine's role, ?credentials=none for a public bucket)".into()),
        },
    }
}

/// The two AWS configuration files.
struct Files {
    credentials: PathBuf,
    config: PathBuf,
}

impl Files {
    fn of(host: &Host) -> Files {
        let aws = host
            .home
            .clone()
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(".aws");
        let path = |var: &str, name: &str| {
            (host.env)(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| aws.join(name))
        };
        Files {
            credentials: path("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            config: path("AWS_CONFIG_FILE", "config"),
        }
    }

    /// Profile `name` from both files, `None` when neither has it.
    fn profile(&self, name: &str) -> Result<Option<Profile>, String> {
        let config_section = if name == "default" {
            "default".to_string()
        } else {
            format!("profile {name}")
        };
        let mut found = None::<Profile>;
        for (path, section) in [
            (&self.config, config_section.as_str()),
            (&self.credentials, name),
        ] {
            let Some(text) = read_small(path)? else {
                continue;
            };
            if let Some(values) = sections(&text).remove(section) {
                found.get_or_insert_with(Profile::new).extend(values);
            }
        }
        Ok(found)
    }
}

/// A file's text, `None` when it does not exist.
fn read_small(path: &Path) -> Result<Option<String>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut text = String::new();
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(text))
}

/// The sections of an INI file as the AWS tools write it: `[name]` headers, `key = value`
/// lines, `#` and `;` comments. Indented lines (a nested block such as `s3 =` settings) belong
/// to the key above them and are skipped.
fn sections(text: &str) -> HashMap<String, Profile> {
    let mut out: HashMap<String, Profile> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
            current = Some(name.clone());
            out.entry(name).or_default();
        } else if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            let v = v.trim();
            if !v.is_empty() {
                out.entry(section.clone())
                    .or_default()
                    .insert(k.trim().to_ascii_lowercase(), v.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(spec: &str) -> Url {
        super::super::s3_url::parse_url(Path::new(spec))
            .unwrap()
            .unwrap()
    }

    fn with(env: &[(&str, &str)], home: &Path, spec: &str) -> Result<Settings, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |n: &str| env.get(n).cloned();
        resolve(
            &url(spec),
            &Host {
                env: &lookup,
                home: Some(home.to_path_buf()),
            },
        )
    }

    fn keys(id: &str) -> Credentials {
        Credentials::Keys {
            id: id.into(),
            secret: format!("{id}-secret"),
            token: None,
        }
    }

    fn home() -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        let aws = home.path().join(".aws");
        std::fs::create_dir_all(&aws).unwrap();
        std::fs::write(
            aws.join("credentials"),
            "[default]\naws_access_key_id = d\naws_secret_access_key = d-secret\n\n\
             # another provider\n[two]\naws_access_key_id=t\naws_secret_access_key=t-secret\n",
        )
        .unwrap();
        std::fs::write(
            aws.join("config"),
            "[default]\nregion = eu-west-1\n[profile two]\nregion = us-west-2\n\
             endpoint_url = https://two.example\ns3 =\n  addressing_style = path\n",
        )
        .unwrap();
        home
    }

    #[test]
    fn the_default_profile_serves_when_the_environment_is_empty() {
        let h = home();
        let s = with(&[], h.path(), "s3://models").unwrap();
        assert_eq!(s.credentials, keys("d"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(s.endpoint, None);
    }

    #[test]
    fn the_environment_comes_before_a_profile_not_named_in_the_spec() {
        let h = home();
        let env = [
            ("AWS_ACCESS_KEY_ID", "e"),
            ("AWS_SECRET_ACCESS_KEY", "e-secret"),
            ("AWS_REGION", "ap-south-1"),
        ];
        let s = with(&env, h.path(), "s3://models").unwrap();
        assert_eq!(
            (s.credentials, s.region.as_deref()),
            (keys("e"), Some("ap-south-1"))
        );
        // AWS_PROFILE picks the profile the environment's gaps come from.
        let s = with(&[("AWS_PROFILE", "two")], h.path(), "s3://models").unwrap();
        assert_eq!(s.credentials, keys("t"));
        assert_eq!(s.endpoint.as_deref(), Some("https://two.example"));
        // A profile named in the spec wins over the environment.
        let s = with(&env, h.path(), "s3://models?profile=two").unwrap();
        assert_eq!(
            (s.credentials, s.region.as_deref()),
            (keys("t"), Some("us-west-2"))
        );
        // And the spec's own settings over everything.
        let s = with(&env, h.path(), "s3://models?profile=two&region=x-1").unwrap();
        assert_eq!(s.region.as_deref(), Some("x-1"));
    }

    #[test]
    fn nothing_configured_is_an_error_that_says_what_to_set() {
        let empty = tempfile::tempdir().unwrap();
        let e = with(&[], empty.path(), "s3://models").unwrap_err();
        assert!(
            e.starts_with("no credentials found (set AWS_ACCESS_KEY_ID"),
            "{e}"
        );
        let e = with(&[], empty.path(), "s3://models?profile=gone").unwrap_err();
        assert!(e.contains("profile 'gone' is not in"), "{e}");
        // The machine's role only when asked for, or when the environment sets one up.
        let s = with(&[], empty.path(), "s3://models?credentials=instance").unwrap();
        assert_eq!(s.credentials, Credentials::Role);
        let s = with(
            &[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")],
            empty.path(),
            "s3://m0d",
        )
        .unwrap();
        assert_eq!(s.credentials, Credentials::Role);
        let s = with(&[], empty.path(), "s3://models?credentials=none").unwrap();
        assert_eq!(s.credentials, Credentials::Anonymous);
    }

    #[test]
    fn a_plain_http_endpoint_must_be_allowed() {
        let h = home();
        let spec = "s3://models?endpoint=http://127.0.0.1:9000";
        let e = with(&[], h.path(), spec).unwrap_err();
        assert!(e.contains("needs AWS_ALLOW_HTTP=true"), "{e}");
        assert!(with(&[("AWS_ALLOW_HTTP", "true")], h.path(), spec).is_ok());
        assert!(with(&[], h.path(), &format!("{spec}&allow_http=true")).is_ok());
    }

    #[test]
    fn secrets_are_never_printed() {
        let h = home();
        let s = with(&[], h.path(), "s3://models").unwrap();
        assert!(!format!("{s:?}").contains("d-secret"));
    }
}

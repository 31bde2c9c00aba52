//! A store's signing key and what it signs: the key file kept outside every member, the key
//! records in the members' store files (each later key endorsed by the one before it), and
//! signed bytes (a copy's body followed by one signature line).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// How a signed copy ends: this, the signer's public key, the signature (both hex), a newline.
pub const SIGNATURE_LINE: &str = "--shardfs-signature ed25519 ";

/// What a signature says it covers, so that a signed member list is never taken for a
/// manifest, nor a key endorsement for either.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Manifest,
    MemberList,
    Key,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Manifest => "manifest",
            Kind::MemberList => "member-list",
            Kind::Key => "key",
        }
    }
}

/// The bytes a signature is made over: a domain, the kind, the store and the BLAKE3 hash of
/// the body (hashing a large manifest with BLAKE3 is several times faster than the SHA-512 pass
/// Ed25519 makes over its message, and BLAKE3 is the store's hash already).
fn message(kind: Kind, store_id: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!("shardfs-signature-v1\0{}\0{store_id}\0", kind.tag()).into_bytes();
    m.extend_from_slice(blake3::hash(body).as_bytes());
    m
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short name for messages and `--trust`: `sfk:` and 16 hex digits of its hash.
    pub fn fingerprint(&self) -> String {
        let h = blake3::hash(&self.0).to_hex();
        format!("sfk:{}", &h[..16])
    }

    /// A key given as its 64 hex digits.
    pub fn parse_hex(s: &str) -> Option<PublicKey> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out).ok()?;
        Some(PublicKey(out))
    }

    /// Whether `given` names this key: its hex, or its fingerprint.
    pub fn is_named_by(&self, given: &str) -> bool {
        let given = given.trim();
        given.eq_ignore_ascii_case(&self.hex()) || given == self.fingerprint()
    }

    fn verifies(&self, kind: Kind, store_id: &str, body: &[u8], sig: &Signature) -> bool {
        VerifyingKey::from_bytes(&self.0)
            .is_ok_and(|k| k.verify(&message(kind, store_id, body), sig).is_ok())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// One key of a store, as its members' store files record it. Every key after the first is
/// endorsed by the key before it (`key rotate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The public key, 64 hex digits.
    pub public: String,
    /// Its fingerprint, for people reading the file (never trusted: derived from `public`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// The previous key's signature over this one (hex); `None` for the first key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsed: Option<String>,
}

impl KeyRecord {
    /// The record of a store's first key.
    pub fn first(key: &PublicKey) -> KeyRecord {
        KeyRecord {
            public: key.hex(),
            fingerprint: key.fingerprint(),
            endorsed: None,
        }
    }
}

/// The keys a member's records name, in order, each checked against the one before it.
pub fn chain(store_id: &str, records: &[KeyRecord]) -> Result<Vec<PublicKey>, String> {
    let mut keys: Vec<PublicKey> = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let key = PublicKey::parse_hex(&r.public)
            .ok_or_else(|| format!("key record {i} is not a public key"))?;
        if let Some(prev) = keys.last() {
            let sig = r
                .endorsed
                .as_deref()
                .and_then(parse_signature)
                .ok_or_else(|| format!("key {key} carries no endorsement"))?;
            if !prev.verifies(Kind::Key, store_id, &key.0, &sig) {
                return Err(format!("key {key} is not endorsed by key {prev}"));
            }
        }
        keys.push(key);
    }
    Ok(keys)
}

fn parse_signature(s: &str) -> Option<Signature> {
    let mut out = [0u8; 64];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(Signature::from_bytes(&out))
}

/// A copy's body and its signature line, if it has one (`None`: an unsigned copy).
pub type Split<'a> = (&'a [u8], Option<(PublicKey, Signature)>);

/// Splits a copy into its body and signature. A copy whose last line looks like a signature
/// line but does not parse is an error (never read as unsigned).
pub fn split(bytes: &[u8]) -> Result<Split<'_>, String> {
    let Some(without_nl) = bytes.strip_suffix(b"\n") else {
        return Ok((bytes, None));
    };
    let start = without_nl
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = &without_nl[start..];
    let Some(rest) = line.strip_prefix(SIGNATURE_LINE.as_bytes()) else {
        return Ok((bytes, None));
    };
    let bad = || "a signature line that does not parse".to_string();
    let rest = std::str::from_utf8(rest).map_err(|_| bad())?;
    let (key, sig) = rest.split_once(' ').ok_or_else(bad)?;
    let key = PublicKey::parse_hex(key).ok_or_else(bad)?;
    let sig = parse_signature(sig).ok_or_else(bad)?;
    Ok((&bytes[..start], Some((key, sig))))
}

/// Whether `sig` by `key` covers `body` as a `kind` of store `store_id`.
pub fn verify(kind: Kind, store_id: &str, body: &[u8], key: &PublicKey, sig: &Signature) -> bool {
    key.verifies(kind, store_id, body, sig)
}

/// A store's private signing key.
pub struct StoreKey {
    signing: SigningKey,
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({})", self.public())
    }
}

/// The first line of a key file.
const KEY_FILE_HEAD: &str = "shardfs store signing key (keep it private; never on a member)";
/// Larger than any key file.
const KEY_FILE_MAX: u64 = 4096;

impl StoreKey {
    /// A new key from the kernel's random source.
    pub fn generate() -> std::io::Result<StoreKey> {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed))?;
        Ok(StoreKey {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The same key again (tests).
    #[cfg(test)]
    pub fn load_for_test(k: &StoreKey) -> StoreKey {
        StoreKey {
            signing: k.signing.clone(),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// `body` followed by its signature line.
    pub fn sign(&self, kind: Kind, store_id: &str, body: &[u8]) -> Vec<u8> {
        // The signature line starts a line of its own; what precedes it is what is signed.
        let mut out = body.to_vec();
        if !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        let sig = self.signing.sign(&message(kind, store_id, &out));
        out.extend_from_slice(
            format!(
                "{SIGNATURE_LINE}{} {}\n",
                self.public().hex(),
                hex::encode(sig.to_bytes())
            )
            .as_bytes(),
        );
        out
    }

    /// The record of `next`, endorsed by this key.
    pub fn endorse(&self, store_id: &str, next: &PublicKey) -> KeyRecord {
        let sig = self.signing.sign(&message(Kind::Key, store_id, &next.0));
        KeyRecord {
            public: next.hex(),
            fingerprint: next.fingerprint(),
            endorsed: Some(hex::encode(sig.to_bytes())),
        }
    }

    /// Reads a key file (never through a link, never more than a few KiB).
    pub fn load(path: &Path) -> Result<StoreKey, String> {
        let shown = path.display();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| format!("{shown}: {e}"))?;
        let meta = f.metadata().map_err(|e| format!("{shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{shown}: not a regular file"));
        }
        let mut text = String::new();
        f.take(KEY_FILE_MAX)
            .read_to_string(&mut text)
            .map_err(|e| format!("{shown}: {e}"))?;
        let secret = text
            .lines()
            .find_map(|l| l.strip_prefix("secret "))
            .ok_or_else(|| format!("{shown}: not a shardfs key file"))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(secret.trim(), &mut seed)
            .map_err(|_| format!("{shown}: not a shardfs key file"))?;
        Ok(StoreKey {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// Writes the key to a new file `path`, mode 0600 (its directory made 0700 where it is
    /// missing); never over an existing file or through a link.
    pub fn save(&self, path: &Path, store_id: &str) -> Result<(), String> {
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let text = format!(
            "{KEY_FILE_HEAD}\nstore {store_id}\npublic {}\nsecret {}\n",
            self.public().hex(),
            hex::encode(self.signing.to_bytes())
        );
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| format!("{shown}: {e}"))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{shown}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_copy_verifies_and_any_change_breaks_it() {
        // A body without a final newline gets one, and the signature covers it.
        let k0 = StoreKey::generate().unwrap();
        let signed = k0.sign(Kind::MemberList, "s", b"{}");
        let (body, sig) = split(&signed).unwrap();
        let (key, sig) = sig.unwrap();
        assert!(verify(Kind::MemberList, "s", body, &key, &sig));
        let k = StoreKey::generate().unwrap();
        let signed = k.sign(Kind::Manifest, "s", b"{\"a\":1}\n");
        let (body, sig) = split(&signed).unwrap();
        assert_eq!(body, b"{\"a\":1}\n");
        let (key, sig) = sig.unwrap();
        assert_eq!(key, k.public());
        assert!(verify(Kind::Manifest, "s", body, &key, &sig));
        assert!(!verify(Kind::MemberList, "s", body, &key, &sig));
        assert!(!verify(Kind::Manifest, "t", body, &key, &sig));
        assert!(!verify(Kind::Manifest, "s", b"{\"a\":2}\n", &key, &sig));
        // Unsigned bytes split as unsigned; a mangled signature line is an error.
        assert!(split(b"{}\n").unwrap().1.is_none());
        let mut bad = signed.clone();
        let n = bad.len();
        bad[n - 3] = b'x';
        assert!(split(&bad).is_err());
    }

    #[test]
    fn a_chain_holds_only_keys_each_endorsed_by_the_one_before() {
        let (a, b, c) = (
            StoreKey::generate().unwrap(),
            StoreKey::generate().unwrap(),
            StoreKey::generate().unwrap(),
        );
        let first = KeyRecord::first(&a.public());
        let good = vec![first.clone(), a.endorse("s", &b.public())];
        assert_eq!(chain("s", &good).unwrap(), vec![a.public(), b.public()]);
        // c endorsed by itself, not by a: refused.
        let forged = vec![first, c.endorse("s", &c.public())];
        assert!(chain("s", &forged).is_err());
        assert!(
            chain("t", &good).is_err(),
            "an endorsement is for one store"
        );
    }

    #[test]
    fn a_key_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/s.key");
        let k = StoreKey::generate().unwrap();
        k.save(&path, "s").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(StoreKey::load(&path).unwrap().public(), k.public());
        assert!(k.save(&path, "s").is_err(), "never over an existing key");
        assert!(k.public().is_named_by(&k.public().fingerprint()));
        assert!(k.public().is_named_by(&k.public().hex()));
    }
}

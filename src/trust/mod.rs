//! Which key a store's manifests and member lists must be signed by, decided on this host and
//! never by one member: the host's settings (`--trust`, `--key`, `--unsigned`), the key it pins
//! per store on first use (like ssh's known_hosts), and the `Trust` a store opens with: the keys
//! it accepts, the key it signs with, and the members left out because their store file names
//! another key. The key file format and signed bytes are in `keys`.

pub mod keys;

use keys::{KeyRecord, Kind, PublicKey, StoreKey};
use parking_lot::RwLock;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub use keys::KeyRecord as Record;

/// How every copy that is not the store key's is described (verify, logs, errors).
pub const NOT_SIGNED: &str = "not signed by the store's key";

/// This host's trust settings, set once by the command line.
#[derive(Debug, Default, Clone)]
pub struct Config {
    /// Where keys (`keys/STORE.key`) and pinned keys (`trusted/STORE`) are kept; `None`: no
    /// keys are made or pinned (library use, unit tests).
    pub dir: Option<PathBuf>,
    /// The signing key file (`--key`, `SHARDFS_KEY`), instead of `keys/STORE.key`.
    pub key: Option<PathBuf>,
    /// The key to trust (`--trust`: 64 hex digits or a fingerprint), instead of the pinned one.
    pub trust: Option<String>,
    /// New stores get a key (false with `pack --unsigned`).
    pub sign_new: bool,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Sets this process's trust settings (once; later calls are ignored).
pub fn configure(config: Config) {
    let _ = CONFIG.set(config);
}

/// The trust settings a mount daemon started by this command is given.
pub fn daemon_args() -> Vec<std::ffi::OsString> {
    let c = config();
    let mut args = Vec::new();
    if let Some(t) = &c.trust {
        args.extend(["--trust".into(), t.into()]);
    }
    if let Some(k) = &c.key {
        args.extend(["--key".into(), k.clone().into_os_string()]);
    }
    args
}

fn config() -> &'static Config {
    CONFIG.get_or_init(Config::default)
}

/// The user's shardfs configuration directory: `$XDG_CONFIG_HOME/shardfs`, else
/// `$HOME/.config/shardfs`, else under the home directory the password database gives (a mount
/// at boot runs without `HOME`).
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| crate::home::home_dir().map(|h| h.join(".config")))?;
    Some(base.join("shardfs"))
}

/// A store id is used as a file name here: only what `new_id` makes is accepted.
fn checked_id(store_id: &str) -> Result<&str, String> {
    if !store_id.is_empty()
        && store_id.len() <= 64
        && store_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(store_id)
    } else {
        Err(format!(
            "store id {} is not one shardfs makes",
            crate::shown::shown(store_id)
        ))
    }
}

/// Where the key of `store_id` is kept on this host.
pub fn key_path(store_id: &str) -> Result<PathBuf, String> {
    if let Some(k) = &config().key {
        return Ok(k.clone());
    }
    let dir = config()
        .dir
        .as_ref()
        .ok_or("no configuration directory (set HOME or XDG_CONFIG_HOME, or give --key)")?;
    Ok(dir
        .join("keys")
        .join(format!("{}.key", checked_id(store_id)?)))
}

fn pin_path(store_id: &str) -> Result<Option<PathBuf>, String> {
    let id = checked_id(store_id)?;
    Ok(config().dir.as_ref().map(|d| d.join("trusted").join(id)))
}

/// The key this host pinned for `store_id`, if any.
fn pinned(store_id: &str) -> Result<Option<PublicKey>, String> {
    let Some(path) = pin_path(store_id)? else {
        return Ok(None);
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => PublicKey::parse_hex(text.lines().next().unwrap_or(""))
            .map(Some)
            .ok_or_else(|| format!("{}: not a pinned key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Pins `key` for `store_id` on this host (replacing an earlier pin), in one atomic step.
pub fn pin_key(store_id: &str, key: &PublicKey) -> Result<(), String> {
    let Some(path) = pin_path(store_id)? else {
        return Ok(());
    };
    let dir = path.parent().ok_or("no directory for pinned keys")?;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    use std::io::Write;
    tmp.write_all(format!("{}\n", key.hex()).as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| e.to_string())?;
    tmp.persist(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    log::info!(
        "store {store_id}: this host now trusts key {key} (pinned in {})",
        path.display()
    );
    Ok(())
}

/// Pins `key`, or says why it could not (a home folder that is not writable): the key is
/// trusted for this command all the same, and pinned by the next one that can.
fn pin_or_warn(store_id: &str, key: &PublicKey) {
    if let Err(e) = pin_key(store_id, key) {
        log::warn!(
            "store {store_id}: key {key} is trusted for this command but could not be pinned ({e})"
        );
    }
}

/// The keys a store accepts and signs with.
#[derive(Debug)]
pub struct Trust {
    store_id: String,
    /// `None`: an unsigned store.
    keys: RwLock<Option<Keys>>,
    signer: OnceLock<Result<Arc<StoreKey>, String>>,
    /// A copy signed by a key not (yet) accepted was seen: the store files may name a newer key.
    unknown: AtomicBool,
}

#[derive(Debug, Clone)]
struct Keys {
    /// Accepted signers: the trusted key and each key endorsed after it; the last one signs.
    accepted: Vec<PublicKey>,
    /// The whole chain as the members record it (for store files written later).
    records: Vec<KeyRecord>,
}

static WARNED_UNSIGNED: AtomicBool = AtomicBool::new(false);

impl Trust {
    /// An unsigned store: copies are taken as they are.
    pub fn unsigned(store_id: &str) -> Trust {
        Trust {
            store_id: store_id.to_string(),
            keys: RwLock::new(None),
            signer: OnceLock::new(),
            unknown: AtomicBool::new(false),
        }
    }

    fn signed(store_id: &str, accepted: Vec<PublicKey>, records: Vec<KeyRecord>) -> Trust {
        Trust {
            store_id: store_id.to_string(),
            keys: RwLock::new(Some(Keys { accepted, records })),
            signer: OnceLock::new(),
            unknown: AtomicBool::new(false),
        }
    }

    /// A store whose keys are `records`, signing with `key` (a new store, `key init`, `key
    /// rotate`): copies signed by any key of the chain are accepted.
    pub fn with_key(store_id: &str, key: StoreKey, records: Vec<KeyRecord>) -> Trust {
        let accepted = keys::chain(store_id, &records)
            .ok()
            .filter(|c| c.last() == Some(&key.public()))
            .unwrap_or_else(|| vec![key.public()]);
        let t = Trust::signed(store_id, accepted, records);
        let _ = t.signer.set(Ok(Arc::new(key)));
        t
    }

    pub fn is_signed(&self) -> bool {
        self.keys.read().is_some()
    }

    /// The key new copies are signed with.
    pub fn current(&self) -> Option<PublicKey> {
        self.keys
            .read()
            .as_ref()
            .and_then(|k| k.accepted.last().copied())
    }

    /// The key records a store file written now carries (empty for an unsigned store).
    pub fn records(&self) -> Vec<KeyRecord> {
        self.keys
            .read()
            .as_ref()
            .map(|k| k.records.clone())
            .unwrap_or_default()
    }

    /// One warning line per command for an unsigned store.
    pub fn warn_if_unsigned(&self) {
        if !self.is_signed() && !WARNED_UNSIGNED.swap(true, Ordering::Relaxed) {
            log::warn!(
                "store {} is unsigned: whoever can write one member can change what it serves (`shardfs key init --store ...` signs it)",
                self.store_id
            );
        }
    }

    /// The body of a copy (a manifest, a member list) whose signature is the store key's, or
    /// why it is not. An unsigned store takes every copy's body.
    pub fn check<'a>(&self, kind: Kind, bytes: &'a [u8]) -> Result<&'a [u8], String> {
        let (body, sig) = keys::split(bytes).map_err(|e| format!("{NOT_SIGNED} ({e})"))?;
        let keys = self.keys.read();
        let Some(keys) = keys.as_ref() else {
            return Ok(body);
        };
        let Some((key, sig)) = sig else {
            return Err(format!("{NOT_SIGNED} (it carries no signature)"));
        };
        if !keys.accepted.contains(&key) {
            self.unknown.store(true, Ordering::Relaxed);
            return Err(format!("{NOT_SIGNED} (it is signed by key {key})"));
        }
        if !keys::verify(kind, &self.store_id, body, &key, &sig) {
            return Err(format!(
                "{NOT_SIGNED} (its signature does not match its bytes)"
            ));
        }
        Ok(body)
    }

    /// `body` as written to a member: signed with the store's key (an unsigned store: as is).
    pub fn seal(&self, kind: Kind, body: Vec<u8>) -> Result<Vec<u8>, String> {
        if !self.is_signed() {
            return Ok(body);
        }
        Ok(self.signer()?.sign(kind, &self.store_id, &body))
    }

    /// The store's signing key, read once from this host's key file.
    pub fn signer(&self) -> Result<Arc<StoreKey>, String> {
        self.signer
            .get_or_init(|| {
                let current = self.current().ok_or("the store is unsigned")?;
                let path = key_path(&self.store_id)?;
                let key = StoreKey::load(&path).map_err(|e| {
                    format!(
                        "store {} is signed (key {current}) and its key could not be read ({e}); give the key file with --key or SHARDFS_KEY",
                        self.store_id
                    )
                })?;
                if key.public() != current {
                    return Err(format!(
                        "{} holds key {}, not store {}'s current key {current}",
                        path.display(),
                        key.public(),
                        self.store_id
                    ));
                }
                Ok(Arc::new(key))
            })
            .clone()
    }

    /// Whether a copy signed by a key not accepted was seen since the last call.
    pub fn take_unknown(&self) -> bool {
        self.unknown.swap(false, Ordering::Relaxed)
    }

    /// Whether a member whose store file records `records` belongs with this store's trust:
    /// a chain from the trusted key that agrees with the one accepted (a longer one is learnt).
    pub fn admits(&self, records: &[KeyRecord]) -> bool {
        if self.learn(records) {
            return true;
        }
        let keys = self.keys.read();
        let Some(k) = keys.as_ref() else {
            return true;
        };
        let Ok(chain) = keys::chain(&self.store_id, records) else {
            return false;
        };
        chain
            .iter()
            .position(|c| Some(c) == k.accepted.first())
            .is_some_and(|at| k.accepted.starts_with(&chain[at..]))
    }

    /// Takes in a longer chain a member now records (`key rotate` published a key endorsed by
    /// one this store accepts): later copies signed by the new key are accepted. Returns
    /// whether anything was learnt.
    pub fn learn(&self, records: &[KeyRecord]) -> bool {
        let mut keys = self.keys.write();
        let Some(k) = keys.as_mut() else {
            return false;
        };
        let Ok(chain) = keys::chain(&self.store_id, records) else {
            return false;
        };
        let Some(at) = k
            .accepted
            .first()
            .and_then(|t| chain.iter().position(|c| c == t))
        else {
            return false;
        };
        let accepted = chain[at..].to_vec();
        if accepted.len() > k.accepted.len() && accepted.starts_with(&k.accepted) {
            k.accepted = accepted;
            k.records = records.to_vec();
            return true;
        }
        false
    }
}

/// The trust a store opens with, and the members (by position) left out with why.
pub struct Decision {
    pub trust: Trust,
    pub left_out: Vec<(usize, String)>,
}

/// Decides which key the members of store `store_id` must be signed by, from this host's pin
/// or `--trust`, given each member's location and key records. One member never decides
/// alone: a key no host trusts yet is pinned only when most members name it; a member naming
/// another key than the trusted one is left out; `--trust` of a key other than the pinned one
/// needs most members to name it.
pub fn decide(store_id: &str, members: &[(&str, &[KeyRecord])]) -> Result<Decision, String> {
    let chains: Vec<Result<Vec<PublicKey>, String>> = members
        .iter()
        .map(|(_, r)| keys::chain(store_id, r))
        .collect();
    let pinned = pinned(store_id)?;
    let given = config().trust.as_deref();
    let trusted: Option<PublicKey> = match (given, pinned) {
        (Some(g), pinned) => Some(trust_given(store_id, g, pinned, members.len(), &chains)?),
        (None, Some(p)) => Some(p),
        (None, None) => first_use(store_id, members, &chains)?,
    };
    let Some(trusted) = trusted else {
        let left_out = chains
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().err().map(|e| (i, records_not_valid(e))))
            .collect();
        return Ok(Decision {
            trust: Trust::unsigned(store_id),
            left_out,
        });
    };
    // The longest chain from the trusted key on that a member records.
    let best = chains
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let c = c.as_ref().ok()?;
            position_of(c, &trusted).map(|at| (i, c[at..].to_vec()))
        })
        .max_by_key(|(_, c)| c.len());
    let Some((best_at, accepted)) = best else {
        return Err(format!(
            "none of the members of store {store_id} names the key this host trusts for it ({trusted}); if the store's key was replaced, trust the new one with --trust"
        ));
    };
    let left_out = left_out_of(store_id, &chains, &trusted, &accepted);
    Ok(Decision {
        trust: Trust::signed(store_id, accepted, members[best_at].1.to_vec()),
        left_out,
    })
}

/// The key `--trust G` names (by a member's record of it, or as a hex key), pinned for the
/// store; a key other than the pinned one only when most of the `n` members name it.
fn trust_given(
    store_id: &str,
    g: &str,
    pinned: Option<PublicKey>,
    n: usize,
    chains: &[Result<Vec<PublicKey>, String>],
) -> Result<PublicKey, String> {
    let key = chains
        .iter()
        .flatten()
        .flatten()
        .find(|k| k.is_named_by(g))
        .copied()
        .or_else(|| PublicKey::parse_hex(g))
        .ok_or_else(|| format!("--trust {g}: no member of store {store_id} names that key"))?;
    if pinned.is_some_and(|p| p != key) {
        let naming = chains
            .iter()
            .filter(|c| c.as_ref().is_ok_and(|c| c.contains(&key)))
            .count();
        if naming * 2 <= n {
            return Err(format!(
                "--trust {g}: only {naming} of the {n} members of store {store_id} name that key, and this host trusts key {} for it; refusing",
                pinned.map(|p| p.fingerprint()).unwrap_or_default()
            ));
        }
    }
    if pinned != Some(key) {
        pin_or_warn(store_id, &key);
    }
    Ok(key)
}

/// Why a member whose key records do not form a chain is left out.
fn records_not_valid(e: &str) -> String {
    format!("its store file's key records are not valid ({e})")
}

/// Where `key` is in a member's key chain.
fn position_of(chain: &[PublicKey], key: &PublicKey) -> Option<usize> {
    chain.iter().position(|k| k == key)
}

/// The members (by position) whose key chain does not follow `accepted` from `trusted` on,
/// with why.
fn left_out_of(
    store_id: &str,
    chains: &[Result<Vec<PublicKey>, String>],
    trusted: &PublicKey,
    accepted: &[PublicKey],
) -> Vec<(usize, String)> {
    let mut left_out = Vec::new();
    for (i, c) in chains.iter().enumerate() {
        match c {
            Err(e) => left_out.push((i, records_not_valid(e))),
            Ok(c) if c.is_empty() => {}
            Ok(c) => match position_of(c, trusted) {
                Some(at) if accepted.starts_with(&c[at..]) => {}
                Some(_) => left_out.push((i, "its store file's keys fork from the other members'".into())),
                None => left_out.push((
                    i,
                    format!(
                        "its store file names another key ({}), not the one this host trusts for store {store_id} ({trusted})",
                        c[0]
                    ),
                )),
            },
        }
    }
    left_out
}

/// No key is trusted for the store on this host yet: the key most members name, pinned; `None`
/// when most name none (an unsigned store).
fn first_use(
    store_id: &str,
    members: &[(&str, &[KeyRecord])],
    chains: &[Result<Vec<PublicKey>, String>],
) -> Result<Option<PublicKey>, String> {
    let mut roots: Vec<(PublicKey, usize)> = Vec::new();
    let mut none = 0;
    for c in chains {
        match c.as_ref().ok().and_then(|c| c.first()) {
            Some(root) => match roots.iter_mut().find(|(k, _)| k == root) {
                Some((_, n)) => *n += 1,
                None => roots.push((*root, 1)),
            },
            None => none += 1,
        }
    }
    if roots.is_empty() {
        return Ok(None);
    }
    if let Some((root, _)) = roots.iter().find(|(_, n)| n * 2 > members.len()) {
        pin_or_warn(store_id, root);
        return Ok(Some(*root));
    }
    let said: Vec<String> = roots
        .iter()
        .map(|(k, n)| format!("key {k} by {n}"))
        .chain((none > 0).then(|| format!("no key by {none}")))
        .collect();
    Err(format!(
        "the {} members of store {store_id} do not agree on its key ({}): give the one to trust with --trust FINGERPRINT",
        members.len(),
        said.join(", ")
    ))
}

/// A new store's trust: a new key (or the one `--key` names, when that file exists), saved on
/// this host and pinned; unsigned with `--unsigned` or where this host keeps no keys.
pub fn for_new_store(store_id: &str) -> Result<Trust, String> {
    let c = config();
    if !c.sign_new || (c.dir.is_none() && c.key.is_none()) {
        return Ok(Trust::unsigned(store_id));
    }
    let path = key_path(store_id)?;
    let key = match &c.key {
        Some(k) if k.exists() => StoreKey::load(k)?,
        _ => {
            let key = StoreKey::generate().map_err(|e| format!("/dev/urandom: {e}"))?;
            key.save(&path, store_id)?;
            log::warn!(
                "new store {store_id} is signed with key {}, kept in {} (keep it off the members; every host that packs into the store needs it)",
                key.public(),
                path.display()
            );
            key
        }
    };
    pin_or_warn(store_id, &key.public());
    let record = KeyRecord::first(&key.public());
    Ok(Trust::with_key(store_id, key, vec![record]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(k: &StoreKey) -> KeyRecord {
        KeyRecord::first(&k.public())
    }

    #[test]
    fn a_store_key_named_by_most_members_is_trusted_and_another_left_out() {
        // No configuration directory: nothing pinned, the majority decides.
        let (real, forged) = (StoreKey::generate().unwrap(), StoreKey::generate().unwrap());
        let (r, f) = (vec![record(&real)], vec![record(&forged)]);
        let members: Vec<(&str, &[KeyRecord])> = vec![("m0", &r), ("m1", &r), ("m2", &f)];
        let d = decide("s", &members).unwrap();
        assert_eq!(d.trust.current(), Some(real.public()));
        assert_eq!(d.left_out.len(), 1);
        assert_eq!(d.left_out[0].0, 2);
        // One member of three naming a key does not make the store signed by it.
        let none: Vec<KeyRecord> = vec![];
        let members: Vec<(&str, &[KeyRecord])> = vec![("m0", &none), ("m1", &none), ("m2", &f)];
        assert!(decide("s", &members).is_err());
        let members: Vec<(&str, &[KeyRecord])> = vec![("m0", &none), ("m1", &none)];
        assert!(!decide("s", &members).unwrap().trust.is_signed());
    }

    #[test]
    fn only_copies_signed_by_an_accepted_key_are_taken() {
        let (real, forged) = (StoreKey::generate().unwrap(), StoreKey::generate().unwrap());
        let records = vec![record(&real)];
        let t = Trust::with_key("s", StoreKey::load_for_test(&real), records.clone());
        let good = t.seal(Kind::Manifest, b"{}\n".to_vec()).unwrap();
        assert_eq!(t.check(Kind::Manifest, &good).unwrap(), b"{}\n");
        assert!(t.check(Kind::MemberList, &good).is_err());
        let bad = forged.sign(Kind::Manifest, "s", b"{}\n");
        assert!(
            t.check(Kind::Manifest, &bad)
                .unwrap_err()
                .starts_with(NOT_SIGNED)
        );
        assert!(t.check(Kind::Manifest, b"{}\n").is_err());
        // A key endorsed by the real one is learnt, and then accepted.
        let next = StoreKey::generate().unwrap();
        let longer = vec![records[0].clone(), real.endorse("s", &next.public())];
        assert!(t.learn(&longer));
        let rotated = next.sign(Kind::Manifest, "s", b"{}\n");
        assert!(t.check(Kind::Manifest, &rotated).is_ok());
        // One endorsed by the forger is not.
        let other = vec![record(&forged), forged.endorse("s", &next.public())];
        assert!(!t.learn(&other));
    }
}

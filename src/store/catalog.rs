//! What a live mount knows of the store's models, and how it follows them. Every refresh lists
//! each member's manifests with their stamps (one listing per member: cheap on a bucket) and
//! reads again only the copies whose stamp changed. A model's current manifest is its valid copy
//! of highest precedence (`Manifest::precedence`); a copy that is damaged or half-written is
//! ignored, so it never replaces a good version. A model is gone once no member that answered
//! lists it and every member that held a copy has answered.

use super::manifest::{self, Manifest, Precedence};
use super::{Member, Store};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What a refresh found changed.
#[derive(Debug)]
pub enum Change {
    /// A model that was not there (or a new current manifest of one that was).
    Current(Manifest),
    Removed(String),
}

/// One member's copy of a model's manifest, as last listed.
#[derive(Debug, Clone)]
struct Copy {
    /// `None` until the member has been listed (a copy of unknown stamp).
    stamp: Option<String>,
    /// The copy's precedence when it was valid.
    valid: Option<Precedence>,
}

#[derive(Debug)]
struct Known {
    /// The precedence of the manifest served; `None` for a model not served yet (its copies
    /// found so far are damaged).
    precedence: Option<Precedence>,
    /// By member id.
    copies: HashMap<String, Copy>,
}

#[derive(Debug)]
pub struct Catalog {
    /// Follow only this model (a mount of one model).
    only: Option<String>,
    models: BTreeMap<String, Known>,
}

impl Catalog {
    /// A catalog of the `manifests` a mount started with, on `store`'s members.
    pub fn new(store: &Store, only: Option<String>, manifests: &[Manifest]) -> Catalog {
        let unknown: HashMap<String, Copy> = all_members(store)
            .map(|m| {
                let copy = Copy {
                    stamp: None,
                    valid: None,
                };
                (m.id().to_string(), copy)
            })
            .collect();
        let models = manifests
            .iter()
            .map(|m| {
                let known = Known {
                    precedence: Some(m.precedence()),
                    copies: unknown.clone(),
                };
                (m.name.clone(), known)
            })
            .collect();
        Catalog { only, models }
    }

    /// The versions the catalog holds as current, by model name.
    pub fn versions(&self) -> BTreeMap<String, u64> {
        self.models
            .iter()
            .filter_map(|(n, k)| Some((n.clone(), k.precedence.as_ref()?.version())))
            .collect()
    }

    /// Lists every member's manifests, reads the copies that changed, and returns the models
    /// whose current manifest changed, appeared or went away.
    pub fn refresh(&mut self, store: &Store) -> Vec<Change> {
        let mut changes = self.refresh_once(store);
        // A copy signed by a key this mount does not know yet: the store's key may have been
        // rotated. Once the new key is learnt, the copies found not valid are read again.
        if store.trust.take_unknown() && store.learn_keys() {
            for c in self.models.values_mut().flat_map(|k| k.copies.values_mut()) {
                if c.valid.is_none() {
                    c.stamp = None;
                }
            }
            changes.extend(self.refresh_once(store));
        }
        changes
    }

    fn refresh_once(&mut self, store: &Store) -> Vec<Change> {
        let mut listed: HashMap<String, HashMap<String, String>> = HashMap::new();
        for m in all_members(store) {
            match m.io.list_manifests() {
                Ok(list) => {
                    let stamps = list
                        .into_iter()
                        .filter(|l| self.follows(&l.name))
                        .map(|l| (l.name, l.stamp))
                        .collect();
                    listed.insert(m.id().to_string(), stamps);
                }
                Err(e) => log::debug!("refresh: {} cannot list manifests: {e}", m.location()),
            }
        }
        let mut names: BTreeSet<String> = self.models.keys().cloned().collect();
        names.extend(listed.values().flat_map(|s| s.keys().cloned()));
        let mut changes = Vec::new();
        for name in names {
            if let Some(change) = self.refresh_model(store, &name, &listed) {
                changes.push(change);
            }
        }
        changes
    }

    fn follows(&self, name: &str) -> bool {
        manifest::check_model_name(name).is_ok() && self.only.as_deref().is_none_or(|o| o == name)
    }

    fn refresh_model(
        &mut self,
        store: &Store,
        name: &str,
        listed: &HashMap<String, HashMap<String, String>>,
    ) -> Option<Change> {
        let mut copies = self
            .models
            .get(name)
            .map(|k| k.copies.clone())
            .unwrap_or_default();
        // Copies read again now, with their precedence: the best of them may become current.
        let mut fresh: Vec<(Precedence, Manifest)> = Vec::new();
        for (id, stamps) in listed {
            let Some(stamp) = stamps.get(name) else {
                copies.remove(id);
                continue;
            };
            if copies.get(id).and_then(|c| c.stamp.as_ref()) == Some(stamp) {
                continue;
            }
            let valid = match read_copy(store, id, name) {
                Ok(m) => {
                    let p = m.precedence();
                    fresh.push((p.clone(), m));
                    Some(p)
                }
                Err(reason) => {
                    let at = store
                        .member(id)
                        .map_or_else(|| format!("member {id}"), |m| m.location().to_string());
                    log::warn!(
                        "refresh: the manifest of '{name}' on {at} is not valid ({reason}); ignored"
                    );
                    None
                }
            };
            let stamp = Some(stamp.clone());
            copies.insert(id.clone(), Copy { stamp, valid });
        }
        let current = self.models.get(name).and_then(|k| k.precedence.clone());
        if copies.is_empty() {
            self.models.remove(name);
            return current.map(|_| Change::Removed(name.to_string()));
        }
        let best = copies
            .iter()
            .filter_map(|(id, c)| Some((c.valid.clone()?, id.clone())))
            .max();
        // No valid copy is known (all damaged, or not read yet), or the best is the one served:
        // what is served stays.
        let Some((best, best_id)) = best.filter(|(b, _)| current.as_ref() != Some(b)) else {
            let precedence = current;
            self.models
                .insert(name.to_string(), Known { precedence, copies });
            return None;
        };
        // The best copy may be one read earlier (a newer copy went away): read it again.
        let manifest = match fresh.into_iter().find(|(p, _)| *p == best) {
            Some((_, m)) => m,
            None => match read_copy(store, &best_id, name) {
                Ok(m) if m.precedence() == best => m,
                _ => return None,
            },
        };
        self.models.insert(
            name.to_string(),
            Known {
                precedence: Some(best),
                copies,
            },
        );
        Some(Change::Current(manifest))
    }
}

/// The members a mount reads: those it opened and those it picked up since.
fn all_members(store: &Store) -> impl Iterator<Item = &Member> {
    store.members.iter().chain(store.joined_members())
}

fn read_copy(store: &Store, member_id: &str, name: &str) -> Result<Manifest, String> {
    let m = store
        .member(member_id)
        .ok_or_else(|| "member not open".to_string())?;
    match m.io.get_manifest(name) {
        Ok(Some(stored)) => store.parse_manifest(name, &stored.bytes),
        Ok(None) => Err("gone".into()),
        Err(e) => Err(e.to_string()),
    }
}

//! Test twins by name: a test registers a member (a `mem::MemMember`, a `faulty::Faulty`
//! around anything) as `twin://NAME`, and every store this process opens with that spec uses
//! it. Built for tests only (the crate's own, and integration tests through the `twins`
//! feature); the registry lives in one process, so the `shardfs` binary cannot reach it.

use super::MemberIo;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// How a twin's spec starts.
pub const SCHEME: &str = "twin://";

fn registry() -> &'static Mutex<HashMap<String, Arc<dyn MemberIo>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<dyn MemberIo>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Registers `member` as `twin://NAME` (replacing an earlier one of that name) and returns the
/// spec.
pub fn register(name: &str, member: Arc<dyn MemberIo>) -> String {
    registry().lock().insert(name.to_string(), member);
    format!("{SCHEME}{name}")
}

/// Whether `spec` names a twin.
pub fn is_twin(spec: &Path) -> bool {
    spec.to_str().is_some_and(|s| s.starts_with(SCHEME))
}

/// The member `spec` names, if it is a registered twin.
pub fn lookup(spec: &Path) -> Option<Arc<dyn MemberIo>> {
    let name = spec.to_str()?.strip_prefix(SCHEME)?;
    registry().lock().get(name).cloned()
}

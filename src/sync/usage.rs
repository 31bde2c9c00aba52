//! `df`: what each member holds (chunk files and their bytes, manifests), the space left on
//! it where the member can tell, and what `gc` could return now (a dry run of it).

use crate::store::{Run, Store, StoreError, member_err};
use crate::sync::gc::{self, GcReport};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Serialize)]
pub struct MemberUsage {
    pub member_id: String,
    pub location: String,
    pub chunk_files: u64,
    pub chunk_bytes: u64,
    pub manifests: usize,
    /// Bytes free for new chunk files; `None` where the member has no such figure (an object
    /// store).
    pub free_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub members: Vec<MemberUsage>,
    /// Members given that did not open: location and reason.
    pub unavailable: Vec<(String, crate::store::LeftOut)>,
    /// What `gc --min-age MIN_AGE` would delete now, if it can run (every member readable).
    pub gc: Option<GcReport>,
    /// Why `gc` could not be estimated.
    pub gc_unknown: Option<String>,
    pub gc_min_age_secs: u64,
}

/// Reads every member's listing (and, for the estimate, every manifest copy and lease).
pub fn usage(store: &Store, min_age: Duration) -> Result<Usage, StoreError> {
    let mut members = Vec::new();
    for m in &store.members {
        let chunks = m.io.list_chunks().map_err(member_err(m.location()))?;
        let manifests = m.io.list_manifests().map_err(member_err(m.location()))?;
        members.push(MemberUsage {
            member_id: m.id().to_string(),
            location: m.location().to_string(),
            chunk_files: chunks.len() as u64,
            chunk_bytes: chunks.iter().map(|c| c.size).sum(),
            manifests: manifests.len(),
            free_bytes: m.io.free_space().map_err(member_err(m.location()))?,
        });
    }
    let (gc, gc_unknown) = match gc::gc(store, Run::DryRun, min_age) {
        // The totals, not the list of every file.
        Ok(report) => (
            Some(GcReport {
                would_delete: Vec::new(),
                ..report
            }),
            None,
        ),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(Usage {
        members,
        unavailable: store.unavailable.clone(),
        gc,
        gc_unknown,
        gc_min_age_secs: min_age.as_secs(),
    })
}

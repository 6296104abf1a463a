//! Unwrapped L1 session objects, shared by every worker of one [`super::Hsm`].
//!
//! A session object is visible to every session of the process, so one unwrap serves all
//! workers; it dies with the session that created it, so each entry remembers its owner and the
//! module generation it was made in.

use std::collections::HashMap;
use std::sync::Mutex;

use cryptoki::object::ObjectHandle;

use super::lock;

/// Unwrapped L1 objects one worker keeps before it flushes its own.
const L1_CACHE_MAX: usize = 4096;

#[derive(Clone, Copy)]
struct L1Entry {
    handle: ObjectHandle,
    owner: usize,
    generation: u64,
}

/// Blob digest → unwrapped L1 session object.
#[derive(Default)]
pub(super) struct L1Cache {
    map: Mutex<HashMap<[u8; 32], L1Entry>>,
}

impl L1Cache {
    /// The object for blob `digest` made in module generation `generation`, if any.
    pub(super) fn get(&self, digest: &[u8; 32], generation: u64) -> Option<ObjectHandle> {
        lock(&self.map)
            .get(digest)
            .filter(|e| e.generation == generation)
            .map(|e| e.handle)
    }

    /// Remembers `handle` for `digest`, made by worker `owner`. Returns the objects of `owner`
    /// the caller must destroy: all of its entries when it had reached the cap, and an older
    /// entry of its own for the same blob (two unwraps of one blob raced; the newer wins, and
    /// another worker's object dies with its session).
    pub(super) fn insert(
        &self,
        digest: [u8; 32],
        handle: ObjectHandle,
        owner: usize,
        generation: u64,
    ) -> Vec<ObjectHandle> {
        let mut all = lock(&self.map);
        let mut evicted = Vec::new();
        if all.values().filter(|e| e.owner == owner).count() >= L1_CACHE_MAX {
            evicted.extend(all.values().filter(|e| e.owner == owner).map(|e| e.handle));
            all.retain(|_, e| e.owner != owner);
        }
        let entry = L1Entry {
            handle,
            owner,
            generation,
        };
        if let Some(prev) = all.insert(digest, entry) {
            if prev.owner == owner && prev.handle != handle {
                evicted.push(prev.handle);
            }
        }
        evicted
    }

    /// Forgets every object of worker `owner` (its session is closing).
    pub(super) fn drop_owner(&self, owner: usize) {
        lock(&self.map).retain(|_, e| e.owner != owner);
    }
}

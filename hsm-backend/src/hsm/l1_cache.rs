//! Unwrapped L1 session objects, one set per worker of one [`super::Hsm`].
//!
//! A session object is visible to every session of the process, but it dies with the session
//! that created it: when that session closes (recovery, shutdown) or its worker flushes its cache.
//! A worker using another worker's object could have it destroyed under a running call, or,
//! once the handle number is reused, operate with a different key. So each worker uses only the
//! objects it unwrapped itself (keyed by owner and blob digest): a key is unwrapped once per
//! worker, and no handle is ever destroyed while another worker may hold it.

use std::collections::HashMap;
use std::sync::Mutex;

use cryptoki::object::ObjectHandle;

use super::lock;

/// Unwrapped L1 objects one worker keeps before it flushes its own.
const L1_CACHE_MAX: usize = 4096;

#[derive(Clone, Copy)]
struct L1Entry {
    handle: ObjectHandle,
    generation: u64,
}

/// (worker, blob digest) → that worker's unwrapped L1 session object.
#[derive(Default)]
pub(super) struct L1Cache {
    map: Mutex<HashMap<(usize, [u8; 32]), L1Entry>>,
}

impl L1Cache {
    /// Worker `owner`'s object for blob `digest` made in module generation `generation`, if any.
    pub(super) fn get(
        &self,
        digest: &[u8; 32],
        owner: usize,
        generation: u64,
    ) -> Option<ObjectHandle> {
        lock(&self.map)
            .get(&(owner, *digest))
            .filter(|e| e.generation == generation)
            .map(|e| e.handle)
    }

    /// Remembers `handle` for `digest`, made by worker `owner`. Returns the objects of `owner`
    /// the caller (that worker) must destroy: all of its entries when it had reached the cap, and
    /// its older entry for the same blob.
    pub(super) fn insert(
        &self,
        digest: [u8; 32],
        handle: ObjectHandle,
        owner: usize,
        generation: u64,
    ) -> Vec<ObjectHandle> {
        let mut all = lock(&self.map);
        let mut evicted = Vec::new();
        if all.keys().filter(|(o, _)| *o == owner).count() >= L1_CACHE_MAX {
            evicted.extend(
                all.iter()
                    .filter(|((o, _), _)| *o == owner)
                    .map(|(_, e)| e.handle),
            );
            all.retain(|(o, _), _| *o != owner);
        }
        let entry = L1Entry { handle, generation };
        if let Some(prev) = all.insert((owner, digest), entry) {
            if prev.handle != handle {
                evicted.push(prev.handle);
            }
        }
        evicted
    }

    /// Forgets every object of worker `owner` (its session is closing).
    pub(super) fn drop_owner(&self, owner: usize) {
        lock(&self.map).retain(|(o, _), _| *o != owner);
    }
}

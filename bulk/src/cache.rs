//! A bounded cache of unwrapped batch keys, keyed by `(key name, L1 version, batch id)`.
//!
//! Entries are [`BatchCipher`]s: the raw key was zeroized once the AEAD context was built, and
//! aws-lc cleanses the context when the last reference drops. The cache is used per request
//! (see `docs/bulk-seal.md` §5), so unsealing a batch unwraps its key once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::format::{BatchCipher, BATCH_ID_LEN};

type CacheKey = (String, u32, [u8; BATCH_ID_LEN]);

/// Bounded FIFO cache of batch ciphers.
#[derive(Debug)]
pub(crate) struct BatchKeyCache {
    cap: usize,
    map: HashMap<CacheKey, Arc<BatchCipher>>,
    order: VecDeque<CacheKey>,
}

impl BatchKeyCache {
    /// A cache holding at most `cap` (≥ 1) batch keys.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The cipher of batch `id` of `name` v`version`, if cached.
    pub(crate) fn get(
        &self,
        name: &str,
        version: u32,
        id: &[u8; BATCH_ID_LEN],
    ) -> Option<Arc<BatchCipher>> {
        self.map.get(&(name.to_owned(), version, *id)).cloned()
    }

    /// Inserts a cipher, evicting the oldest entry when full.
    pub(crate) fn insert(&mut self, cipher: Arc<BatchCipher>) {
        let key = (cipher.name().to_owned(), cipher.version(), *cipher.id());
        if self.map.contains_key(&key) {
            return;
        }
        while self.map.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, cipher);
    }

    /// Number of cached keys (for the bound's test).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    #[test]
    fn bounded_and_keyed() {
        let mut c = BatchKeyCache::new(2);
        let mk =
            |w: u8| Arc::new(BatchCipher::new("k", 1, &[w; 60], &Zeroizing::new([w; 32])).unwrap());
        let (a, b, d) = (mk(1), mk(2), mk(3));
        c.insert(a.clone());
        c.insert(b.clone());
        c.insert(a.clone());
        assert_eq!(c.len(), 2);
        assert!(c.get("k", 1, a.id()).is_some());
        assert!(c.get("k", 2, a.id()).is_none());
        assert!(c.get("other", 1, a.id()).is_none());
        c.insert(d.clone());
        assert_eq!(c.len(), 2);
        assert!(c.get("k", 1, a.id()).is_none(), "oldest evicted");
        assert!(c.get("k", 1, d.id()).is_some());
    }
}

//! The in-memory side of a version's usage count (`usage.rs`): the uses this process reserved
//! in the record and has not spent yet, taken with one compare-and-swap per request.

use std::sync::atomic::{AtomicU64, Ordering};

/// The uses of one version this process has reserved in the record and not yet spent.
#[derive(Debug, Default)]
pub(super) struct Usage {
    pub(super) left: AtomicU64,
    /// Held while this process reserves a new block (one writer; the others wait and spend it).
    pub(super) refill: tokio::sync::Mutex<()>,
}

impl Usage {
    /// Spends `n` uses from the reserved block, or none when fewer are left.
    pub(super) fn try_take(&self, n: u64) -> bool {
        let mut cur = self.left.load(Ordering::Relaxed);
        loop {
            if cur < n {
                return false;
            }
            match self
                .left
                .compare_exchange_weak(cur, cur - n, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }
}

//! Random numbers from the HSM RNG (`C_GenerateRandom`).

use zeroize::Zeroizing;

use super::{counted, SessionCtx};
use crate::error::{Error, Result};
use crate::metrics::HsmOp;

/// Bytes drawn from the HSM RNG per `C_GenerateRandom` for the pool.
const RAND_BATCH: usize = 4096;
/// Largest request served from the pool; larger ones call the RNG directly.
const POOLED_MAX: usize = 64;

impl SessionCtx<'_> {
    /// Fills `buf` from the HSM RNG.
    pub(crate) fn random(&mut self, buf: &mut [u8]) -> Result<()> {
        counted(
            self.metrics,
            HsmOp::GenerateRandom,
            self.session.generate_random_slice(buf),
        )
    }

    /// Fills `out` (at most 64 bytes) from this worker's pool of HSM random bytes, refilled 4 KiB
    /// per `C_GenerateRandom`. Bytes are used once and removed from the pool.
    pub(crate) fn pooled_random(&mut self, out: &mut [u8]) -> Result<()> {
        if out.len() > POOLED_MAX {
            return self.random(out);
        }
        if self.cache.rand.len() < out.len() {
            let mut buf = Zeroizing::new(vec![0u8; RAND_BATCH]);
            self.random(&mut buf)?;
            self.cache.rand = buf;
        }
        let at = self.cache.rand.len() - out.len();
        let src = self
            .cache
            .rand
            .get(at..)
            .ok_or_else(|| Error::Unavailable("random pool".into()))?;
        out.copy_from_slice(src);
        // Wipe the used bytes before shrinking the buffer.
        if let Some(used) = self.cache.rand.get_mut(at..) {
            used.fill(0);
        }
        self.cache.rand.truncate(at);
        Ok(())
    }
}

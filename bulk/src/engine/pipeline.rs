//! What every form of the engine shares: batch ciphers from the key source, the one rule for a
//! batch key that does not open, the output [`Sink`], and the [`Pipeline`] that runs the parts of
//! a request on the sealing threads and returns their output in order.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use rootseal_hsm::KeyringError;
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::error::BulkError;
use crate::format::BatchCipher;
use crate::pool;
use crate::source::BatchKeySource;

/// Mints a batch key for `name` (one HSM job) and builds its cipher; the raw key is zeroized
/// when this returns.
pub async fn new_cipher<K: BatchKeySource>(
    keys: &K,
    name: &str,
) -> Result<BatchCipher, KeyringError> {
    let bk = keys.new_batch_key(name).await?;
    BatchCipher::new(name, bk.version, &bk.wrapped, &bk.key)
        .map_err(|e| KeyringError::internal(format!("keyring returned an unusable batch key: {e}")))
}

/// Unwraps a batch key (one HSM job) into a cipher.
pub async fn open_cipher<K: BatchKeySource>(
    keys: &K,
    name: &str,
    version: u32,
    wrapped: &[u8],
) -> Result<BatchCipher, KeyringError> {
    let key = keys.open_batch_key(name, version, wrapped).await?;
    BatchCipher::new(name, version, wrapped, &key).map_err(|_| KeyringError::InvalidCiphertext)
}

/// A batch of an unseal request: its cipher, or the error each of its items gets.
pub(super) type OpenedBatch = Result<Arc<BatchCipher>, BulkError>;

/// What a batch key that does not open means for an unseal request: `InvalidCiphertext` (a
/// tampered or foreign batch) and `VersionTooOld` fail only that batch's items, so the other
/// batches still unseal; any other keyring error (unknown key, HSM down...) fails the request.
pub(super) fn opened_batch(
    opened: Result<BatchCipher, KeyringError>,
) -> Result<OpenedBatch, KeyringError> {
    match opened {
        Ok(c) => Ok(Ok(Arc::new(c))),
        Err(KeyringError::InvalidCiphertext) => Ok(Err(BulkError::InvalidCiphertext)),
        Err(KeyringError::VersionTooOld) => Ok(Err(BulkError::malformed(
            KeyringError::VersionTooOld.to_string(),
        ))),
        Err(e) => Err(e),
    }
}

/// A zeroizing buffer with room for `len` bytes from the start: filled with at most `len`
/// bytes it never reallocates, so no unwiped copy of a plaintext is left in freed memory.
pub(super) fn secret_buf(len: usize) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(Vec::with_capacity(len))
}

/// Where the output of a streaming driver goes; a send error means the client left.
/// Each message is a piece of the response body; an `Err` aborts the response (the client sees
/// a broken transfer, never a silently short one).
pub type Sink = mpsc::Sender<Result<Bytes, BulkError>>;

/// Sends one piece of output.
pub(super) async fn send(tx: &Sink, b: impl Into<Bytes>) -> Result<(), BulkError> {
    tx.send(Ok(b.into()))
        .await
        .map_err(|_| BulkError::Truncated("response (client left)"))
}

/// Groups in flight at once (sealing) while the next one is read.
const PIPELINE_DEPTH: usize = 2;

/// What a pipeline part runs.
pub(super) type GroupFn<J> = Arc<dyn Fn(&[J]) -> Bytes + Send + Sync>;

/// A pipeline of up to [`PIPELINE_DEPTH`] groups in flight while the next is read; output
/// keeps the input order. Each group is split into one contiguous part per core, each part a
/// job on the sealing threads (`pool`), which live on between groups (no thread start-up per
/// group).
pub(super) struct Pipeline<J: Send + Sync + 'static> {
    inflight: VecDeque<oneshot::Receiver<Bytes>>,
    /// What the next submitted parts run (a new batch swaps it, after a drain).
    pub(super) f: GroupFn<J>,
    threads: usize,
}

impl<J: Send + Sync + 'static> Pipeline<J> {
    pub(super) fn new(f: GroupFn<J>) -> Self {
        Self {
            inflight: VecDeque::new(),
            f,
            threads: pool::threads(),
        }
    }

    async fn drain_one(&mut self, tx: &Sink) -> Result<(), BulkError> {
        if let Some(h) = self.inflight.pop_front() {
            let part = h.await.map_err(|_| {
                tracing::error!("a bulk sealing part failed (panicked)");
                BulkError::Internal
            })?;
            send(tx, part).await?;
        }
        Ok(())
    }

    /// Waits for every part in flight and sends its output.
    pub(super) async fn drain(&mut self, tx: &Sink) -> Result<(), BulkError> {
        while !self.inflight.is_empty() {
            self.drain_one(tx).await?;
        }
        Ok(())
    }

    /// Queues a group (after sending the output of the oldest groups while the pipeline is full).
    pub(super) async fn submit(&mut self, mut jobs: Vec<J>, tx: &Sink) -> Result<(), BulkError> {
        while self.inflight.len() >= PIPELINE_DEPTH * self.threads {
            self.drain_one(tx).await?;
        }
        if jobs.is_empty() {
            return Ok(());
        }
        let parts = self.threads.clamp(1, jobs.len());
        let per = jobs.len().div_ceil(parts);
        loop {
            let f = self.f.clone();
            let rest = if jobs.len() > per {
                jobs.split_off(per)
            } else {
                Vec::new()
            };
            let part = std::mem::replace(&mut jobs, rest);
            self.inflight.push_back(pool::run(move || f(&part)));
            if jobs.is_empty() {
                break;
            }
        }
        Ok(())
    }
}

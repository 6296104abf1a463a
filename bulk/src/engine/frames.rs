//! The binary form: frame streams (`frame`) read and written as they flow. Items are gathered in
//! groups, each group sealed or opened across cores by the [`Pipeline`] while the next is read;
//! memory stays bounded by the groups in flight.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::pipeline::{
    new_cipher, open_cipher, opened_batch, secret_buf, send, GroupFn, OpenedBatch, Pipeline, Sink,
};
use crate::cache::BatchKeyCache;
use crate::error::{BulkError, RequestError};
use crate::format::{self, BatchCipher, TAG_LEN};
use crate::frame::{self, FrameDecoder, Kind, REQUEST_ERROR};
use crate::source::BatchKeySource;
use crate::MAX_ITEMS_PER_BATCH;

/// Items per group (a group is sealed across cores while the next is read).
const GROUP_MAX_ITEMS: usize = 1024;
/// Plaintext bytes per group.
const GROUP_MAX_BYTES: usize = 4 << 20;
/// Batch keys kept unwrapped per unseal request.
const UNSEAL_CACHE_ENTRIES: usize = 256;

struct SealJob {
    body: Bytes,
    index: u32,
    seq: u64,
}

/// The sealing function of one batch: every job of a group belongs to the same batch (a new
/// batch starts only after the pipeline drained), so the cipher is shared per part, not cloned
/// per item.
fn seal_fn(cipher: Arc<BatchCipher>) -> GroupFn<SealJob> {
    Arc::new(move |jobs| seal_group_range(&cipher, jobs))
}

fn seal_group_range(cipher: &BatchCipher, jobs: &[SealJob]) -> Bytes {
    let est: usize = jobs.iter().map(|j| j.body.len() + 32).sum();
    let mut out = Vec::with_capacity(est);
    let mut scratch = Vec::new();
    for j in jobs {
        let r = frame::split_item(&j.body).and_then(|(aad, pt)| {
            let at = out.len();
            frame::put_record_header(&mut out, Kind::Sealed, 4 + pt.len() + TAG_LEN);
            out.extend_from_slice(&j.index.to_be_bytes());
            let start = out.len();
            out.extend_from_slice(&pt);
            cipher
                .seal_tail(j.index, &aad, &mut out, start, &mut scratch)
                .inspect_err(|_| out.truncate(at))
        });
        if let Err(e) = r {
            frame::put_error(&mut out, j.seq, &e.to_string());
        }
    }
    Bytes::from(out)
}

struct OpenJob {
    cipher: OpenedBatch,
    aad: Bytes,
    body: Bytes,
    seq: u64,
}

fn open_group_range(jobs: &[OpenJob]) -> Bytes {
    let est: usize = jobs.iter().map(|j| j.body.len() + 16).sum();
    let mut out = Vec::with_capacity(est);
    let mut scratch = Vec::new();
    let mut buf = secret_buf(jobs.iter().map(|j| j.body.len()).max().unwrap_or(0));
    for j in jobs {
        let r = (|| {
            let cipher = j.cipher.as_ref().map_err(Clone::clone)?;
            let mut c = format::Cursor::new(&j.body);
            let index = c.u32("SEALED record")?;
            buf.clear();
            buf.extend_from_slice(c.rest());
            let pt = cipher.open_in_place(index, &j.aad, &mut buf, &mut scratch)?;
            frame::put_record(&mut out, Kind::Plain, &[pt]);
            Ok::<_, BulkError>(())
        })();
        if let Err(e) = r {
            frame::put_error(&mut out, j.seq, &e.to_string());
        }
    }
    Bytes::from(out)
}

async fn next_input<S, E>(input: &mut S, dec: &mut FrameDecoder) -> Result<bool, BulkError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    match input.next().await {
        Some(Ok(chunk)) => {
            dec.push_bytes(chunk);
            Ok(true)
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "request body failed");
            Err(BulkError::Truncated("request body"))
        }
        None => {
            dec.finish()?;
            Ok(false)
        }
    }
}

/// Appends the `BATCH` record of `cipher`: `version ‖ wrapped_len ‖ wrapped`.
fn batch_record(cipher: &BatchCipher, out: &mut BytesMut) {
    frame::put_record(out, Kind::Batch, &[cipher.wrapped_field()]);
}

/// Drives a binary `bulk-seal`: reads `ITEM` records from `input` (after whatever `dec` already
/// holds), writes `BATCH`, `SEALED`/`ERROR` records and `END` to `tx`. A request-level failure
/// is an `ERROR` record for item [`REQUEST_ERROR`] and the stream stops without `END`.
pub async fn seal_frames<K, S, E>(
    keys: K,
    name: String,
    first: BatchCipher,
    mut dec: FrameDecoder,
    mut input: S,
    tx: Sink,
) where
    K: BatchKeySource,
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let first = Arc::new(first);
    let mut pipe = Pipeline::<SealJob>::new(seal_fn(first.clone()));
    let r: Result<u64, RequestError> = async {
        let mut cipher = first;
        let mut head = BytesMut::new();
        frame::put_header(&mut head);
        batch_record(&cipher, &mut head);
        send(&tx, head).await?;
        let (mut group, mut group_bytes, mut index, mut seq) = (Vec::new(), 0usize, 0u32, 0u64);
        loop {
            while let Some(f) = dec.next_frame()? {
                match f.kind {
                    Kind::Item => {
                        if index >= MAX_ITEMS_PER_BATCH {
                            pipe.submit(std::mem::take(&mut group), &tx).await?;
                            group_bytes = 0;
                            pipe.drain(&tx).await?;
                            cipher = Arc::new(new_cipher(&keys, &name).await?);
                            pipe.f = seal_fn(cipher.clone());
                            let mut b = BytesMut::new();
                            batch_record(&cipher, &mut b);
                            send(&tx, b).await?;
                            index = 0;
                        }
                        group_bytes += f.body.len();
                        group.push(SealJob {
                            body: f.body,
                            index,
                            seq,
                        });
                        index += 1;
                        seq += 1;
                        if group.len() >= GROUP_MAX_ITEMS || group_bytes >= GROUP_MAX_BYTES {
                            pipe.submit(std::mem::take(&mut group), &tx).await?;
                            group_bytes = 0;
                        }
                    }
                    Kind::End => {}
                    k => {
                        return Err(BulkError::malformed(format!(
                            "unexpected {k:?} record in a seal request"
                        ))
                        .into())
                    }
                }
            }
            if !next_input(&mut input, &mut dec).await? {
                break;
            }
        }
        if seq == 0 {
            return Err(BulkError::EmptyBatch.into());
        }
        pipe.submit(group, &tx).await?;
        pipe.drain(&tx).await?;
        Ok(seq)
    }
    .await;
    finish_frames(r, &mut pipe, &tx).await;
}

async fn finish_frames<J: Send + Sync + 'static>(
    r: Result<u64, RequestError>,
    pipe: &mut Pipeline<J>,
    tx: &Sink,
) {
    let mut tail = BytesMut::new();
    match r {
        Ok(count) => frame::put_end(&mut tail, count),
        Err(e) => {
            // Deliver what was already sealed, then the request-level error.
            let _ = pipe.drain(tx).await;
            tracing::debug!(error = %e, "binary bulk request failed");
            frame::put_error(&mut tail, REQUEST_ERROR, &e.to_string());
        }
    }
    let _ = send(tx, tail).await;
}

/// The batch a `BATCH` record names: from the request's cache, else unwrapped (one HSM job) and
/// cached. A batch key that does not open fails only its items ([`opened_batch`]).
async fn batch_of<K: BatchKeySource>(
    keys: &K,
    name: &str,
    cache: &mut BatchKeyCache,
    body: &[u8],
) -> Result<OpenedBatch, RequestError> {
    let mut c = format::Cursor::new(body);
    let (version, wrapped) = format::parse_wrapped(&mut c)?;
    if !c.rest().is_empty() {
        return Err(BulkError::malformed("BATCH record has trailing bytes").into());
    }
    let id = format::batch_id(wrapped);
    if let Some(c) = cache.get(name, version, &id) {
        return Ok(Ok(c));
    }
    let opened = opened_batch(open_cipher(keys, name, version, wrapped).await)?;
    if let Ok(c) = &opened {
        cache.insert(c.clone());
    }
    Ok(opened)
}

/// Drives a binary `bulk-unseal`: `BATCH` records are unwrapped (one HSM job per distinct batch,
/// through a bounded per-request cache), `SEALED` records opened across cores, `PLAIN`/`ERROR`
/// records and `END` written to `tx`. Within one `BATCH`, indexes must increase (reordering is
/// reported per item).
pub async fn unseal_frames<K, S, E>(
    keys: K,
    name: String,
    mut dec: FrameDecoder,
    mut input: S,
    tx: Sink,
) where
    K: BatchKeySource,
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut pipe = Pipeline::<OpenJob>::new(Arc::new(open_group_range));
    let r: Result<u64, RequestError> = async {
        let mut head = BytesMut::new();
        frame::put_header(&mut head);
        send(&tx, head).await?;
        let mut cache = BatchKeyCache::new(UNSEAL_CACHE_ENTRIES);
        let mut current: Option<OpenedBatch> = None;
        let mut last_index: Option<u32> = None;
        let mut aad = Bytes::new();
        let (mut group, mut group_bytes, mut seq) = (Vec::new(), 0usize, 0u64);
        loop {
            while let Some(f) = dec.next_frame()? {
                match f.kind {
                    Kind::Batch => {
                        current = Some(batch_of(&keys, &name, &mut cache, &f.body).await?);
                        last_index = None;
                    }
                    Kind::Aad => aad = f.body,
                    Kind::Sealed => {
                        let index = f
                            .body
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map(u32::from_be_bytes);
                        let cipher = match (&current, index) {
                            (None, _) => Err(BulkError::malformed(
                                "SEALED record before any BATCH record",
                            )),
                            (_, None) => Err(BulkError::Truncated("SEALED record")),
                            (Some(_), Some(i)) if last_index.is_some_and(|l| i <= l) => {
                                Err(BulkError::malformed("item out of order in its batch"))
                            }
                            (Some(c), Some(i)) => {
                                last_index = Some(i);
                                c.clone()
                            }
                        };
                        group_bytes += f.body.len();
                        group.push(OpenJob {
                            cipher,
                            aad: std::mem::take(&mut aad),
                            body: f.body,
                            seq,
                        });
                        seq += 1;
                        if group.len() >= GROUP_MAX_ITEMS || group_bytes >= GROUP_MAX_BYTES {
                            pipe.submit(std::mem::take(&mut group), &tx).await?;
                            group_bytes = 0;
                        }
                    }
                    Kind::End => {}
                    k => {
                        return Err(BulkError::malformed(format!(
                            "unexpected {k:?} record in an unseal request"
                        ))
                        .into())
                    }
                }
            }
            if !next_input(&mut input, &mut dec).await? {
                break;
            }
        }
        if seq == 0 {
            return Err(BulkError::EmptyBatch.into());
        }
        pipe.submit(group, &tx).await?;
        pipe.drain(&tx).await?;
        Ok(seq)
    }
    .await;
    finish_frames(r, &mut pipe, &tx).await;
}

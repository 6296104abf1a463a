//! The bulk engine, independent of HTTP: JSON batches (sync, parallel over cores) and the
//! binary frame and object-stream drivers (async, streaming, bounded memory).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use base64_simd::STANDARD as B64;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use rootseal_hsm::KeyringError;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::cache::BatchKeyCache;
use super::format::{self, BatchCipher, TAG_LEN};
use super::frame::{self, FrameDecoder, Kind, REQUEST_ERROR};
use super::stream::{StreamOpener, StreamSealer};
use super::{BatchKeySource, BulkError, MAX_ITEMS_PER_BATCH};

/// Items per group in the binary form (a group is sealed across cores while the next is read).
pub const GROUP_MAX_ITEMS: usize = 1024;
/// Plaintext bytes per group in the binary form.
pub const GROUP_MAX_BYTES: usize = 4 << 20;
/// Below this many input bytes a JSON batch is sealed on one thread.
const PARALLEL_MIN_BYTES: usize = 128 << 10;
/// Batch keys kept unwrapped per binary unseal request.
pub const UNSEAL_CACHE_ENTRIES: usize = 256;

/// Why a whole request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A malformed request (message safe to show).
    #[error(transparent)]
    Bulk(#[from] BulkError),
    /// The keyring refused (unknown key, policy, HSM down...).
    #[error(transparent)]
    Keyring(#[from] KeyringError),
}

/// Worker threads to use: the machine's cores.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Mints a batch key for `name` (one HSM job) and builds its cipher; the raw key is zeroized
/// when this returns.
pub async fn new_cipher<K: BatchKeySource>(
    keys: &K,
    name: &str,
) -> Result<BatchCipher, KeyringError> {
    let bk = keys.new_batch_key(name).await?;
    BatchCipher::new(name, bk.version, &bk.wrapped, &bk.key).map_err(|e| {
        tracing::error!(error = %e, "keyring returned an unusable batch key");
        KeyringError::Internal
    })
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

/// Runs `f` on contiguous ranges of `items`, one per thread, and returns the results in order.
/// `None` if a worker panicked (a bug; logged by the caller).
pub fn par_ranges<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&[T], usize) -> R + Sync,
) -> Option<Vec<R>> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return Some(vec![f(items, 0)]);
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        let mut chunks = items.chunks(per).enumerate();
        let first = chunks.next();
        for (i, c) in chunks {
            handles.push(s.spawn(move || f(c, i * per)));
        }
        let mut out = Vec::with_capacity(threads);
        if let Some((_, c)) = first {
            out.push(f(c, 0));
        }
        for h in handles {
            out.push(h.join().ok()?);
        }
        Some(out)
    })
}

// ---------------------------------------------------------------------------------------------
// JSON form
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct SealRequest<'a> {
    #[serde(borrow, default)]
    batch_input: Option<Vec<SealInput<'a>>>,
    #[serde(default)]
    partial_failure_response_code: Option<u16>,
}

#[derive(Deserialize)]
struct SealInput<'a> {
    #[serde(borrow, default)]
    plaintext: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reference: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    associated_data: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UnsealRequest<'a> {
    #[serde(borrow, default)]
    batch_input: Option<Vec<UnsealInput<'a>>>,
    #[serde(default)]
    partial_failure_response_code: Option<u16>,
}

#[derive(Deserialize)]
struct UnsealInput<'a> {
    #[serde(borrow, default)]
    ciphertext: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reference: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    associated_data: Option<Cow<'a, str>>,
}

/// The result of a JSON batch: the `batch_results` array's elements, comma-separated, in
/// contiguous parts (one per worker; concatenated they are the array's inside).
#[derive(Debug, Default)]
pub struct JsonOutcome {
    /// Parts of the array body.
    pub parts: Vec<Vec<u8>>,
    /// Items that succeeded.
    pub ok: usize,
    /// Items that failed.
    pub failed: usize,
    /// The request's `partial_failure_response_code`.
    pub partial_failure_response_code: Option<u16>,
}

impl JsonOutcome {
    /// The HTTP status, following transit: 200 if all succeeded; 400 if any failed, unless
    /// `partial_failure_response_code` is given and at least one item succeeded.
    pub fn status(&self) -> u16 {
        match (self.failed, self.ok, self.partial_failure_response_code) {
            (0, _, _) => 200,
            (_, ok, Some(code)) if ok > 0 => code,
            _ => 400,
        }
    }
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BulkError> {
    serde_json::from_slice(body)
        .map_err(|e| BulkError::malformed(format!("failed to parse JSON input: {e}")))
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_reference(out: &mut Vec<u8>, reference: &Option<Cow<'_, str>>) {
    if let Some(r) = reference {
        out.extend_from_slice(b",\"reference\":");
        push_json_str(out, r);
    }
}

fn push_error(out: &mut Vec<u8>, e: &BulkError, reference: &Option<Cow<'_, str>>) {
    out.extend_from_slice(b"{\"error\":");
    push_json_str(out, &e.to_string());
    push_reference(out, reference);
    out.push(b'}');
}

/// A zeroizing buffer with room for `len` bytes from the start: filled with at most `len`
/// bytes it never reallocates, so no unwiped copy of a plaintext is left in freed memory.
fn secret_buf(len: usize) -> zeroize::Zeroizing<Vec<u8>> {
    zeroize::Zeroizing::new(Vec::with_capacity(len))
}

/// The most bytes `len` characters of base64 decode to.
fn decoded_max(len: usize) -> usize {
    len / 4 * 3 + 3
}

fn decode_aad(aad: &Option<Cow<'_, str>>, out: &mut Vec<u8>) -> Result<(), BulkError> {
    out.clear();
    if let Some(a) = aad {
        B64.decode_append(a.as_bytes(), out)
            .map_err(|_| BulkError::malformed("associated_data is not valid base64"))?;
    }
    Ok(())
}

/// Seals a JSON `bulk-seal` body. `mint` is called once, after the body parsed and is not empty,
/// to obtain the batch cipher (one HSM job).
pub fn seal_json(
    body: &[u8],
    mint: impl FnOnce() -> Result<BatchCipher, KeyringError>,
    threads: usize,
) -> Result<JsonOutcome, RequestError> {
    let req: SealRequest<'_> = parse_json(body)?;
    let items = req.batch_input.unwrap_or_default();
    if items.is_empty() {
        return Err(BulkError::EmptyBatch.into());
    }
    if items.len() > MAX_ITEMS_PER_BATCH as usize {
        return Err(BulkError::TooManyItems.into());
    }
    let cipher = mint()?;
    let threads = if body.len() < PARALLEL_MIN_BYTES {
        1
    } else {
        threads
    };
    let results = par_ranges(&items, threads, |chunk, base| {
        seal_json_range(&cipher, chunk, base)
    })
    .ok_or_else(|| {
        tracing::error!("bulk seal worker panicked");
        RequestError::Bulk(BulkError::Internal)
    })?;
    let mut out = JsonOutcome {
        partial_failure_response_code: req.partial_failure_response_code,
        ..JsonOutcome::default()
    };
    for (part, ok, failed) in results {
        out.parts.push(part);
        out.ok += ok;
        out.failed += failed;
    }
    Ok(out)
}

fn seal_json_range(
    cipher: &BatchCipher,
    items: &[SealInput<'_>],
    base: usize,
) -> (Vec<u8>, usize, usize) {
    let est: usize = items
        .iter()
        .map(|i| i.plaintext.as_ref().map_or(0, |p| p.len()) + 2 * cipher.item_header_len() + 64)
        .sum();
    let mut out = Vec::with_capacity(est);
    let most = items
        .iter()
        .map(|i| i.plaintext.as_ref().map_or(0, |p| p.len()))
        .max()
        .unwrap_or(0);
    let mut buf = secret_buf(cipher.item_header_len() + decoded_max(most) + TAG_LEN);
    let mut aad = Vec::new();
    let mut scratch = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let index = base + i;
        if index > 0 {
            out.push(b',');
        }
        let r = (|| {
            let pt = item
                .plaintext
                .as_ref()
                .ok_or_else(|| BulkError::malformed("missing plaintext"))?;
            decode_aad(&item.associated_data, &mut aad)?;
            let index = u32::try_from(index).map_err(|_| BulkError::TooManyItems)?;
            buf.clear();
            cipher.push_item_header(index, &mut buf);
            let start = buf.len();
            B64.decode_append(pt.as_bytes(), &mut *buf)
                .map_err(|_| BulkError::malformed("plaintext is not valid base64"))?;
            cipher.seal_tail(index, &aad, &mut buf, start, &mut scratch)
        })();
        match r {
            Ok(()) => {
                out.extend_from_slice(b"{\"ciphertext\":\"");
                format::encode_item_string(&buf, &mut out);
                out.extend_from_slice(b"\",\"key_version\":");
                out.extend_from_slice(cipher.version().to_string().as_bytes());
                push_reference(&mut out, &item.reference);
                out.push(b'}');
                ok += 1;
            }
            Err(e) => {
                push_error(&mut out, &e, &item.reference);
                failed += 1;
            }
        }
    }
    (out, ok, failed)
}

/// Reads the header of a `rsb1:` item from the start of its base64 only (no full decode).
fn peek_item(s: &str) -> Result<(u32, Vec<u8>), BulkError> {
    let b64 = format::strip_item_prefix(s)?;
    let decode_prefix = |bytes: usize| -> Result<Vec<u8>, BulkError> {
        let chars = bytes.div_ceil(3) * 4;
        let p = b64.get(..chars.min(b64.len())).unwrap_or(b64);
        B64.decode_to_vec(p)
            .map_err(|_| BulkError::malformed("ciphertext is not valid base64"))
    };
    let head = decode_prefix(7)?;
    let mut c = format::Cursor::new(&head);
    let fmt = c.u8("item")?;
    if fmt != format::FORMAT_V1 {
        return Err(BulkError::UnsupportedVersion(fmt));
    }
    c.u32("item")?;
    let wlen = usize::from(c.u16("item")?);
    let full = decode_prefix(7 + wlen.min(format::MAX_WRAPPED_LEN + 1))?;
    let mut c = format::Cursor::new(&full);
    c.u8("item")?;
    let (version, wrapped) = format::parse_wrapped(&mut c)?;
    Ok((version, wrapped.to_vec()))
}

/// Unseals a JSON `bulk-unseal` body. `open` is called once per distinct batch (one HSM job
/// each); its `InvalidCiphertext`/`VersionTooOld` become per-item errors, anything else fails
/// the request.
pub fn unseal_json(
    body: &[u8],
    mut open: impl FnMut(u32, &[u8]) -> Result<BatchCipher, KeyringError>,
    threads: usize,
) -> Result<JsonOutcome, RequestError> {
    let req: UnsealRequest<'_> = parse_json(body)?;
    let items = req.batch_input.unwrap_or_default();
    if items.is_empty() {
        return Err(BulkError::EmptyBatch.into());
    }
    // Pass 1: which batches, unwrapped once each.
    type Opened = Result<Arc<BatchCipher>, BulkError>;
    let mut batches: HashMap<(u32, Vec<u8>), Opened> = HashMap::new();
    let mut assigned: Vec<Result<Arc<BatchCipher>, BulkError>> = Vec::with_capacity(items.len());
    for item in &items {
        let peeked = item
            .ciphertext
            .as_ref()
            .ok_or_else(|| BulkError::malformed("missing ciphertext"))
            .and_then(|c| peek_item(c));
        let (version, wrapped) = match peeked {
            Ok(p) => p,
            Err(e) => {
                assigned.push(Err(e));
                continue;
            }
        };
        let key = (version, wrapped);
        let entry = match batches.get(&key) {
            Some(e) => e.clone(),
            None => {
                let opened = match open(key.0, &key.1) {
                    Ok(c) => Ok(Arc::new(c)),
                    Err(KeyringError::InvalidCiphertext) => Err(BulkError::InvalidCiphertext),
                    Err(KeyringError::VersionTooOld) => Err(BulkError::malformed(
                        KeyringError::VersionTooOld.to_string(),
                    )),
                    Err(e) => return Err(e.into()),
                };
                batches.insert(key, opened.clone());
                opened
            }
        };
        assigned.push(entry);
    }
    drop(batches);
    let pairs: Vec<(&UnsealInput<'_>, &Result<Arc<BatchCipher>, BulkError>)> =
        items.iter().zip(assigned.iter()).collect();
    let threads = if body.len() < PARALLEL_MIN_BYTES {
        1
    } else {
        threads
    };
    let results = par_ranges(&pairs, threads, unseal_json_range).ok_or_else(|| {
        tracing::error!("bulk unseal worker panicked");
        RequestError::Bulk(BulkError::Internal)
    })?;
    let mut out = JsonOutcome {
        partial_failure_response_code: req.partial_failure_response_code,
        ..JsonOutcome::default()
    };
    for (part, ok, failed) in results {
        out.parts.push(part);
        out.ok += ok;
        out.failed += failed;
    }
    Ok(out)
}

type UnsealPair<'x, 'a> = (&'x UnsealInput<'a>, &'x Result<Arc<BatchCipher>, BulkError>);

fn unseal_json_range(items: &[UnsealPair<'_, '_>], base: usize) -> (Vec<u8>, usize, usize) {
    let est: usize = items
        .iter()
        .map(|(i, _)| i.ciphertext.as_ref().map_or(0, |p| p.len()) + 64)
        .sum();
    let mut out = Vec::with_capacity(est);
    let most = items
        .iter()
        .map(|(i, _)| i.ciphertext.as_ref().map_or(0, |p| p.len()))
        .max()
        .unwrap_or(0);
    let mut buf = secret_buf(decoded_max(most));
    let mut aad = Vec::new();
    let mut scratch = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    for (i, (item, cipher)) in items.iter().enumerate() {
        if base + i > 0 {
            out.push(b',');
        }
        let r = (|| {
            let cipher = cipher.as_ref().map_err(Clone::clone)?;
            let ct = item
                .ciphertext
                .as_ref()
                .ok_or_else(|| BulkError::malformed("missing ciphertext"))?;
            decode_aad(&item.associated_data, &mut aad)?;
            format::decode_item_string(ct, &mut buf)?;
            let it = format::parse_item(&buf)?;
            if it.version != cipher.version() || it.wrapped != cipher.wrapped() {
                return Err(BulkError::Internal);
            }
            let (index, off) = (it.index, it.body_offset);
            let body = buf.get_mut(off..).ok_or(BulkError::InvalidCiphertext)?;
            let pt = cipher.open_in_place(index, &aad, body, &mut scratch)?;
            out.extend_from_slice(b"{\"plaintext\":\"");
            B64.encode_append(&*pt, &mut out);
            out.push(b'"');
            Ok(())
        })();
        match r {
            Ok(()) => {
                push_reference(&mut out, &item.reference);
                out.push(b'}');
                ok += 1;
            }
            Err(e) => {
                if e == BulkError::InvalidCiphertext {
                    tracing::debug!(item = base + i, "bulk item failed to verify");
                }
                push_error(&mut out, &e, &item.reference);
                failed += 1;
            }
        }
    }
    (out, ok, failed)
}

// ---------------------------------------------------------------------------------------------
// Binary frames
// ---------------------------------------------------------------------------------------------

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
    cipher: Result<Arc<BatchCipher>, BulkError>,
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

/// Where the output of a binary driver goes; a send error means the client left.
/// Each message is a piece of the response body; an `Err` aborts the response (the client sees
/// a broken transfer, never a silently short one).
pub type Sink = mpsc::Sender<Result<Bytes, BulkError>>;

/// Groups in flight at once (sealing) while the next one is read.
const PIPELINE_DEPTH: usize = 2;

/// A pipeline of up to [`PIPELINE_DEPTH`] groups in flight while the next is read; output
/// keeps the input order. Each group is split into one contiguous part per core, each part a
/// task on tokio's blocking pool, whose threads live on between groups (no thread start-up per
/// group).
struct Pipeline<J: Send + Sync + 'static> {
    inflight: std::collections::VecDeque<tokio::sync::oneshot::Receiver<Bytes>>,
    f: GroupFn<J>,
    threads: usize,
}

/// What a pipeline part runs.
type GroupFn<J> = Arc<dyn Fn(&[J]) -> Bytes + Send + Sync>;

impl<J: Send + Sync + 'static> Pipeline<J> {
    fn new(f: GroupFn<J>) -> Self {
        Self {
            inflight: std::collections::VecDeque::new(),
            f,
            threads: threads(),
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

    async fn drain(&mut self, tx: &Sink) -> Result<(), BulkError> {
        while !self.inflight.is_empty() {
            self.drain_one(tx).await?;
        }
        Ok(())
    }

    async fn submit(&mut self, mut jobs: Vec<J>, tx: &Sink) -> Result<(), BulkError> {
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
            self.inflight.push_back(super::pool::run(move || f(&part)));
            if jobs.is_empty() {
                break;
            }
        }
        Ok(())
    }
}

async fn send(tx: &Sink, b: impl Into<Bytes>) -> Result<(), BulkError> {
    tx.send(Ok(b.into()))
        .await
        .map_err(|_| BulkError::Truncated("response (client left)"))
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

fn batch_record(cipher: &BatchCipher, out: &mut BytesMut) {
    let w = cipher.wrapped();
    frame::put_record(
        out,
        Kind::Batch,
        &[
            &cipher.version().to_be_bytes(),
            &(w.len() as u16).to_be_bytes(),
            w,
        ],
    );
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
        let mut current: Option<Result<Arc<BatchCipher>, BulkError>> = None;
        let mut last_index: Option<u32> = None;
        let mut aad = Bytes::new();
        let (mut group, mut group_bytes, mut seq) = (Vec::new(), 0usize, 0u64);
        loop {
            while let Some(f) = dec.next_frame()? {
                match f.kind {
                    Kind::Batch => {
                        let mut c = format::Cursor::new(&f.body);
                        let (version, wrapped) = format::parse_wrapped(&mut c)?;
                        if !c.rest().is_empty() {
                            return Err(
                                BulkError::malformed("BATCH record has trailing bytes").into()
                            );
                        }
                        let id = format::batch_id(wrapped);
                        let opened = match cache.get(&name, version, &id) {
                            Some(c) => Ok(c),
                            None => match open_cipher(&keys, &name, version, wrapped).await {
                                Ok(c) => {
                                    let c = Arc::new(c);
                                    cache.insert(c.clone());
                                    Ok(c)
                                }
                                Err(KeyringError::InvalidCiphertext) => {
                                    Err(BulkError::InvalidCiphertext)
                                }
                                Err(KeyringError::VersionTooOld) => Err(BulkError::malformed(
                                    KeyringError::VersionTooOld.to_string(),
                                )),
                                Err(e) => return Err(e.into()),
                            },
                        };
                        current = Some(opened);
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

// ---------------------------------------------------------------------------------------------
// Object streams
// ---------------------------------------------------------------------------------------------

/// Drives a stream seal of one object: header, then chunks as the input arrives. A failure of
/// the input aborts the output (an `Err` on `tx`) before the final chunk.
pub async fn seal_stream<S, E>(mut sealer: StreamSealer, mut input: S, tx: Sink)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut out = Vec::new();
    sealer.header(&mut out);
    let r: Result<(), BulkError> = async {
        while let Some(chunk) = input.next().await {
            let chunk = chunk.map_err(|e| {
                tracing::debug!(error = %e, "stream seal: request body failed");
                BulkError::Truncated("request body")
            })?;
            sealer.push(&chunk, &mut out)?;
            if out.len() >= 256 << 10 {
                send(&tx, std::mem::take(&mut out)).await?;
            }
        }
        sealer.finish(&mut out)?;
        send(&tx, out).await
    }
    .await;
    if let Err(e) = r {
        let _ = tx.send(Err(e)).await;
    }
}

/// Drives a stream unseal after the header was read and its key unwrapped: writes plaintext
/// as chunks verify. A failure (tampered, truncated, reordered) aborts the output with an `Err`.
pub async fn unseal_stream<S, E>(opener: StreamOpener, input: S, tx: Sink)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if let Err(e) = unseal_stream_inner(opener, input, &tx).await {
        tracing::debug!(error = %e, "stream unseal failed");
        let _ = tx.send(Err(e)).await;
    }
}

async fn unseal_stream_inner<S, E>(
    mut opener: StreamOpener,
    mut input: S,
    tx: &Sink,
) -> Result<(), BulkError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    // Each verified chunk's plaintext is sent as the buffer it was opened in (no copy). The
    // last one is held back until the end of input proved the stream complete (`finish`), so
    // a stream cut short never yields its last bytes before the error.
    let mut held: Option<Bytes> = None;
    loop {
        while let Some((plain, _final)) = opener.next_chunk_bytes()? {
            if let Some(prev) = held.replace(plain) {
                if !prev.is_empty() {
                    send(tx, prev).await?;
                }
            }
        }
        match input.next().await {
            Some(Ok(c)) => opener.push(&c),
            Some(Err(_)) => return Err(BulkError::Truncated("request body")),
            None => break,
        }
    }
    opener.finish()?;
    if let Some(last) = held.filter(|b| !b.is_empty()) {
        send(tx, last).await?;
    }
    Ok(())
}

/// Seals a JSON body off the async runtime: parse, then one HSM job for the batch key, then
/// all cores.
pub async fn seal_json_async<K>(
    keys: K,
    name: String,
    body: Bytes,
) -> Result<JsonOutcome, RequestError>
where
    K: BatchKeySource + 'static,
{
    let h = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        seal_json(&body, || h.block_on(new_cipher(&keys, &name)), threads())
    })
    .await
    .map_err(|_| RequestError::Bulk(BulkError::Internal))?
}

/// Unseals a JSON body off the async runtime: one HSM job per distinct batch, then all cores.
pub async fn unseal_json_async<K>(
    keys: K,
    name: String,
    body: Bytes,
) -> Result<JsonOutcome, RequestError>
where
    K: BatchKeySource + 'static,
{
    let h = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        unseal_json(
            &body,
            |version, wrapped| h.block_on(open_cipher(&keys, &name, version, wrapped)),
            threads(),
        )
    })
    .await
    .map_err(|_| RequestError::Bulk(BulkError::Internal))?
}

#[cfg(test)]
mod tests;

//! The JSON form: `{"batch_input":[…]}` in, the `batch_results` array out, sealed or unsealed in
//! parallel over cores once the body is parsed (one HSM job per batch key).

use std::borrow::Cow;
use std::collections::HashMap;

use base64_simd::STANDARD as B64;
use bytes::Bytes;
use rootseal_hsm::KeyringError;
use serde::Deserialize;

use super::pipeline::{new_cipher, open_cipher, opened_batch, secret_buf, OpenedBatch};
use crate::error::{BulkError, RequestError};
use crate::format::{self, BatchCipher, TAG_LEN};
use crate::source::BatchKeySource;
use crate::{pool, MAX_ITEMS_PER_BATCH};

/// Below this many input bytes a JSON batch is sealed on one thread.
const PARALLEL_MIN_BYTES: usize = 128 << 10;

/// Threads a JSON body of `body_len` bytes works on.
fn parts_for(body_len: usize) -> usize {
    if body_len < PARALLEL_MIN_BYTES {
        1
    } else {
        pool::threads()
    }
}

/// The JSON forms' share of the machine: one permit per core, shared by every JSON bulk request
/// of the process. A request holds one permit per thread it works on (the blocking-pool thread
/// and its scoped part threads) for as long as it works, so at most one thread per core does
/// JSON bulk work at any moment, however many requests arrive: the others wait, without a
/// thread, in first-come order, and a request whose client goes away while it waits never
/// starts.
fn json_slots() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static S: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    S.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(pool::threads())))
}

/// Waits for the permits a JSON body of `body_len` bytes works with.
async fn json_permits(body_len: usize) -> Result<tokio::sync::OwnedSemaphorePermit, RequestError> {
    let n = u32::try_from(parts_for(body_len).min(pool::threads())).unwrap_or(1);
    json_slots()
        .clone()
        .acquire_many_owned(n)
        .await
        .map_err(|_| RequestError::Bulk(BulkError::Internal))
}

/// Name of the threads a JSON body's parts run on (beside the blocking-pool thread).
pub(crate) const JSON_PART_THREAD: &str = "rootseal-bulkj";

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

/// One worker's share of a batch: its part of the array body and its counts.
struct Part {
    body: Vec<u8>,
    ok: usize,
    failed: usize,
}

/// Runs `f` over `items` in contiguous ranges (one per core for a body of at least
/// [`PARALLEL_MIN_BYTES`], else one) and assembles the outcome in order. `f` gets a range and
/// the index of its first item.
fn run_parts<T: Sync>(
    what: &str,
    items: &[T],
    body_len: usize,
    partial_failure_response_code: Option<u16>,
    f: impl Fn(&[T], usize) -> Part + Sync,
) -> Result<JsonOutcome, RequestError> {
    let threads = parts_for(body_len);
    let parts = par_ranges(items, threads, f).ok_or_else(|| {
        tracing::error!("bulk {what} worker panicked");
        RequestError::Bulk(BulkError::Internal)
    })?;
    let mut out = JsonOutcome {
        partial_failure_response_code,
        ..JsonOutcome::default()
    };
    for p in parts {
        out.parts.push(p.body);
        out.ok += p.ok;
        out.failed += p.failed;
    }
    Ok(out)
}

/// Runs `f` on contiguous ranges of `items`, one per thread, and returns the results in order.
/// `None` if a worker panicked (a bug; logged by the caller).
fn par_ranges<T: Sync, R: Send>(
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
            let spawned = std::thread::Builder::new()
                .name(JSON_PART_THREAD.into())
                .spawn_scoped(s, move || f(c, i * per));
            // A thread that cannot start: its part runs on this thread, after the first.
            handles.push(spawned.map_err(|_| (c, i * per)));
        }
        let mut out = Vec::with_capacity(threads);
        if let Some((_, c)) = first {
            out.push(f(c, 0));
        }
        for h in handles {
            out.push(match h {
                Ok(h) => h.join().ok()?,
                Err((c, at)) => f(c, at),
            });
        }
        Some(out)
    })
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
fn seal_json(
    body: &[u8],
    mint: impl FnOnce() -> Result<BatchCipher, KeyringError>,
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
    run_parts(
        "seal",
        &items,
        body.len(),
        req.partial_failure_response_code,
        |chunk, base| seal_json_range(&cipher, chunk, base),
    )
}

fn seal_json_range(cipher: &BatchCipher, items: &[SealInput<'_>], base: usize) -> Part {
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
    Part {
        body: out,
        ok,
        failed,
    }
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
/// each); what its errors mean is [`opened_batch`]'s rule.
fn unseal_json(
    body: &[u8],
    mut open: impl FnMut(u32, &[u8]) -> Result<BatchCipher, KeyringError>,
) -> Result<JsonOutcome, RequestError> {
    let req: UnsealRequest<'_> = parse_json(body)?;
    let items = req.batch_input.unwrap_or_default();
    if items.is_empty() {
        return Err(BulkError::EmptyBatch.into());
    }
    // Pass 1: which batches, unwrapped once each.
    let mut batches: HashMap<(u32, Vec<u8>), OpenedBatch> = HashMap::new();
    let mut assigned: Vec<OpenedBatch> = Vec::with_capacity(items.len());
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
                let opened = opened_batch(open(key.0, &key.1))?;
                batches.insert(key, opened.clone());
                opened
            }
        };
        assigned.push(entry);
    }
    drop(batches);
    let pairs: Vec<UnsealPair<'_, '_>> = items.iter().zip(assigned.iter()).collect();
    run_parts(
        "unseal",
        &pairs,
        body.len(),
        req.partial_failure_response_code,
        unseal_json_range,
    )
}

type UnsealPair<'x, 'a> = (&'x UnsealInput<'a>, &'x OpenedBatch);

fn unseal_json_range(items: &[UnsealPair<'_, '_>], base: usize) -> Part {
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
    Part {
        body: out,
        ok,
        failed,
    }
}

/// Seals a JSON body off the async runtime (on tokio's blocking pool, whence the parts run on
/// scoped threads, all within the JSON forms' one permit per core): parse, then one HSM job for
/// the batch key, then all cores.
pub async fn seal_json_async<K>(
    keys: K,
    name: String,
    body: Bytes,
) -> Result<JsonOutcome, RequestError>
where
    K: BatchKeySource + 'static,
{
    let permits = json_permits(body.len()).await?;
    let h = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permits = permits;
        seal_json(&body, || h.block_on(new_cipher(&keys, &name)))
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
    let permits = json_permits(body.len()).await?;
    let h = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permits = permits;
        unseal_json(&body, |version, wrapped| {
            h.block_on(open_cipher(&keys, &name, version, wrapped))
        })
    })
    .await
    .map_err(|_| RequestError::Bulk(BulkError::Internal))?
}

#[cfg(test)]
mod thread_bound {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::testkeys::SoftKeys;

    /// Threads of this process named `name` now.
    fn named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|d| {
                d.filter_map(std::result::Result::ok)
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm"))
                            .is_ok_and(|c| c.trim_end() == name)
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Eight large JSON bulk requests at once never have more part threads working than the
    /// machine has cores beside the requests' own blocking thread (before: each request started
    /// its own, eight times as many).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_json_requests_share_one_thread_per_core() {
        let keys = Arc::new(SoftKeys::new(&["k"]));
        let item = format!(
            r#"{{"plaintext":"{}"}}"#,
            base64_simd::STANDARD.encode_to_string([7u8; 600])
        );
        let body = Bytes::from(format!(
            r#"{{"batch_input":[{}]}}"#,
            vec![item.as_str(); 400].join(",")
        ));
        assert!(body.len() >= PARALLEL_MIN_BYTES);
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let (stop, max) = (stop.clone(), max.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    max.fetch_max(named(JSON_PART_THREAD), Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            })
        };
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (k, b) = (keys.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..2 {
                    let o = seal_json_async(k.clone(), "k".into(), b.clone())
                        .await
                        .unwrap();
                    assert_eq!(o.ok, 400);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        sampler.join().unwrap();
        let seen = max.load(Ordering::SeqCst);
        assert!(
            seen < pool::threads(),
            "{seen} JSON part threads at once on {} cores",
            pool::threads()
        );
        if pool::threads() > 1 {
            assert!(seen >= 1, "the sampler never saw a part thread");
        }
    }
}

/// Entry points of `fuzz/` (through [`crate::fuzzing`]): the JSON forms with batch keys made
/// from a fixed key in place of the HSM, so every item is parsed, peeked and opened.
#[doc(hidden)]
pub mod fuzz_entry {
    use zeroize::Zeroizing;

    use super::{seal_json, unseal_json, BatchCipher};

    fn fixed(version: u32, wrapped: &[u8]) -> Result<BatchCipher, rootseal_hsm::KeyringError> {
        BatchCipher::new("fuzz", version, wrapped, &Zeroizing::new([7u8; 32]))
            .map_err(|_| rootseal_hsm::KeyringError::InvalidCiphertext)
    }

    /// A `bulk-unseal` JSON body: every item's header is peeked and its batch opened.
    pub fn unseal(body: &[u8]) {
        let _ = unseal_json(body, fixed);
    }

    /// A `bulk-seal` JSON body, sealed under a fixed batch key; what it seals must unseal to
    /// the same plaintexts.
    pub fn seal(body: &[u8]) {
        let _ = seal_json(body, || fixed(1, &[9u8; 60]));
    }
}

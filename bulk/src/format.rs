//! The sealed-item format, the AADs, and the per-batch cipher.
//!
//! ```text
//! item := fmt:u8 (=1) ‖ l1_version:u32 ‖ wrapped_len:u16 ‖ wrapped ‖ index:u32 ‖ ct ‖ tag(16)
//! JSON ciphertext := "rsb1:" ‖ base64(item)
//! ```
//!
//! All integers are big-endian. See `docs/bulk-seal.md` §3–4 for the reasoning.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest;
use base64_simd::STANDARD as B64;
use zeroize::Zeroizing;

use crate::error::BulkError;
use crate::MAX_ITEMS_PER_BATCH;

/// The current format version of sealed items, frames and streams.
pub(crate) const FORMAT_V1: u8 = 1;
/// The prefix of a sealed item in JSON (never confused with transit's `vault:v<N>:`).
pub(crate) const ITEM_PREFIX: &str = "rsb1:";
/// The AES-GCM tag length.
pub(crate) const TAG_LEN: usize = 16;
/// Upper bound of a wrapped batch key (the keyring's is 60 bytes).
pub(crate) const MAX_WRAPPED_LEN: usize = 256;
/// Length of a batch id.
pub(crate) const BATCH_ID_LEN: usize = 16;

const ITEM_DOMAIN: &[u8] = b"rootseal/bulk/item";
const STREAM_DOMAIN: &[u8] = b"rootseal/bulk/stream";
const BATCH_ID_DOMAIN: &[u8] = b"rootseal/bulk/batch-id/v1";

/// The batch id: `SHA-256("rootseal/bulk/batch-id/v1" ‖ wrapped)[..16]`, derived from the wrapped
/// batch key so that the two can never disagree.
pub(crate) fn batch_id(wrapped: &[u8]) -> [u8; BATCH_ID_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(BATCH_ID_DOMAIN);
    ctx.update(wrapped);
    let d = ctx.finish();
    let mut id = [0u8; BATCH_ID_LEN];
    for (o, i) in id.iter_mut().zip(d.as_ref()) {
        *o = *i;
    }
    id
}

/// The 96-bit big-endian counter nonce.
pub(crate) fn counter_nonce(counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// One batch: its key (in aws-lc's context, cleansed on drop), its identity, and the AAD prefix
/// every item of the batch shares. `Sync`: threads seal distinct items of one batch at once.
pub struct BatchCipher {
    key: LessSafeKey,
    name: String,
    version: u32,
    wrapped: Vec<u8>,
    /// `version ‖ wrapped_len:u16 ‖ wrapped`, as every format carries it (see [`parse_wrapped`]).
    wrapped_field: Vec<u8>,
    id: [u8; BATCH_ID_LEN],
    item_aad_prefix: Vec<u8>,
}

impl std::fmt::Debug for BatchCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchCipher")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn push_len16(out: &mut Vec<u8>, b: &[u8]) {
    // Key names are short (the keyring limits them); saturate rather than wrap on abuse.
    let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b.get(..usize::from(len)).unwrap_or(b));
}

fn push_len32(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

impl BatchCipher {
    /// A cipher for the batch whose key is `key`, wrapped as `wrapped` under L1 `version` of `name`.
    pub fn new(
        name: &str,
        version: u32,
        wrapped: &[u8],
        key: &Zeroizing<[u8; 32]>,
    ) -> Result<Self, BulkError> {
        if wrapped.is_empty() || wrapped.len() > MAX_WRAPPED_LEN {
            return Err(BulkError::malformed("wrapped batch key has a bad length"));
        }
        let wrapped_len = u16::try_from(wrapped.len())
            .map_err(|_| BulkError::malformed("wrapped batch key has a bad length"))?;
        let mut wrapped_field = Vec::with_capacity(4 + 2 + wrapped.len());
        wrapped_field.extend_from_slice(&version.to_be_bytes());
        wrapped_field.extend_from_slice(&wrapped_len.to_be_bytes());
        wrapped_field.extend_from_slice(wrapped);
        let unbound =
            UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| BulkError::Internal)?;
        let id = batch_id(wrapped);
        let mut item_aad_prefix = Vec::with_capacity(ITEM_DOMAIN.len() + name.len() + 32);
        push_len16(&mut item_aad_prefix, ITEM_DOMAIN);
        item_aad_prefix.push(FORMAT_V1);
        push_len16(&mut item_aad_prefix, name.as_bytes());
        item_aad_prefix.extend_from_slice(&version.to_be_bytes());
        item_aad_prefix.extend_from_slice(&id);
        Ok(Self {
            key: LessSafeKey::new(unbound),
            name: name.to_owned(),
            version,
            wrapped: wrapped.to_vec(),
            wrapped_field,
            id,
            item_aad_prefix,
        })
    }

    /// The key name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
    /// The L1 version that wraps the batch key.
    pub(crate) fn version(&self) -> u32 {
        self.version
    }
    /// The wrapped batch key.
    pub(crate) fn wrapped(&self) -> &[u8] {
        &self.wrapped
    }
    /// `version ‖ wrapped_len:u16 ‖ wrapped`: the wire form of the wrapped batch key in a
    /// sealed item, a `BATCH` record and a stream header (the one writer; [`parse_wrapped`]
    /// reads it).
    pub(crate) fn wrapped_field(&self) -> &[u8] {
        &self.wrapped_field
    }
    /// The batch id.
    pub(crate) fn id(&self) -> &[u8; BATCH_ID_LEN] {
        &self.id
    }

    fn item_aad(&self, index: u32, caller_aad: &[u8], scratch: &mut Vec<u8>) {
        scratch.clear();
        scratch.extend_from_slice(&self.item_aad_prefix);
        scratch.extend_from_slice(&index.to_be_bytes());
        push_len32(scratch, caller_aad);
    }

    /// Seals `buf[start..]` in place as item `index` and appends the tag.
    /// `aad_scratch` is reused between calls to avoid an allocation per item.
    pub(crate) fn seal_tail(
        &self,
        index: u32,
        caller_aad: &[u8],
        buf: &mut Vec<u8>,
        start: usize,
        aad_scratch: &mut Vec<u8>,
    ) -> Result<(), BulkError> {
        if index >= MAX_ITEMS_PER_BATCH {
            return Err(BulkError::TooManyItems);
        }
        self.item_aad(index, caller_aad, aad_scratch);
        let tail = buf.get_mut(start..).ok_or(BulkError::Internal)?;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                counter_nonce(u64::from(index)),
                Aad::from(aad_scratch.as_slice()),
                tail,
            )
            .map_err(|_| BulkError::Internal)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens `ct ‖ tag` of item `index` in place; returns the plaintext slice.
    pub(crate) fn open_in_place<'a>(
        &self,
        index: u32,
        caller_aad: &[u8],
        ct_tag: &'a mut [u8],
        aad_scratch: &mut Vec<u8>,
    ) -> Result<&'a mut [u8], BulkError> {
        if ct_tag.len() < TAG_LEN || index >= MAX_ITEMS_PER_BATCH {
            return Err(BulkError::InvalidCiphertext);
        }
        self.item_aad(index, caller_aad, aad_scratch);
        self.key
            .open_in_place(
                counter_nonce(u64::from(index)),
                Aad::from(aad_scratch.as_slice()),
                ct_tag,
            )
            .map_err(|_| BulkError::InvalidCiphertext)
    }

    /// Writes the self-contained item header (`fmt ‖ version ‖ wrapped_len ‖ wrapped ‖ index`).
    pub(crate) fn push_item_header(&self, index: u32, out: &mut Vec<u8>) {
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.wrapped_field);
        out.extend_from_slice(&index.to_be_bytes());
    }

    /// Length of the item header written by [`Self::push_item_header`].
    pub(crate) fn item_header_len(&self) -> usize {
        1 + self.wrapped_field.len() + 4
    }

    /// The stream-chunk AAD (see `docs/bulk-seal.md` §3).
    pub(crate) fn stream_aad(
        &self,
        chunk_size: u32,
        chunk: u64,
        final_chunk: bool,
        caller_aad: &[u8],
        out: &mut Vec<u8>,
    ) {
        out.clear();
        push_len16(out, STREAM_DOMAIN);
        out.push(FORMAT_V1);
        push_len16(out, self.name.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&chunk_size.to_be_bytes());
        out.extend_from_slice(&chunk.to_be_bytes());
        out.push(u8::from(final_chunk));
        push_len32(out, caller_aad);
    }

    /// The underlying AEAD key.
    pub(crate) fn key(&self) -> &LessSafeKey {
        &self.key
    }
}

/// A parsed self-contained item, borrowing from its bytes.
#[derive(Debug)]
pub struct ItemRef<'a> {
    /// L1 version of the wrapped batch key.
    pub version: u32,
    /// The wrapped batch key.
    pub wrapped: &'a [u8],
    /// The item's index in its batch.
    pub index: u32,
    /// Offset of `ct ‖ tag` in the parsed bytes.
    pub body_offset: usize,
}

/// A small cursor over untrusted bytes: every read is bounds-checked.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], BulkError> {
        let end = self.pos.checked_add(n).ok_or(BulkError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(BulkError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, BulkError> {
        Ok(self.take(1, what)?.first().copied().unwrap_or(0))
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, BulkError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes(
            b.try_into().map_err(|_| BulkError::Truncated(what))?,
        ))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, BulkError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes(
            b.try_into().map_err(|_| BulkError::Truncated(what))?,
        ))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, BulkError> {
        let b = self.take(8, what)?;
        Ok(u64::from_be_bytes(
            b.try_into().map_err(|_| BulkError::Truncated(what))?,
        ))
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }
}

/// Parses the wrapped-key part shared by items and `BATCH` records: `version ‖ len ‖ wrapped`.
pub(crate) fn parse_wrapped<'a>(c: &mut Cursor<'a>) -> Result<(u32, &'a [u8]), BulkError> {
    let version = c.u32("item")?;
    let wlen = usize::from(c.u16("item")?);
    if wlen == 0 || wlen > MAX_WRAPPED_LEN {
        return Err(BulkError::TooLong {
            what: "wrapped batch key",
            len: wlen as u64,
            max: MAX_WRAPPED_LEN as u64,
        });
    }
    let wrapped = c.take(wlen, "item")?;
    Ok((version, wrapped))
}

/// Parses a self-contained item (binary, after base64).
pub fn parse_item(bytes: &[u8]) -> Result<ItemRef<'_>, BulkError> {
    let mut c = Cursor::new(bytes);
    let fmt = c.u8("item")?;
    if fmt != FORMAT_V1 {
        return Err(BulkError::UnsupportedVersion(fmt));
    }
    let (version, wrapped) = parse_wrapped(&mut c)?;
    let index = c.u32("item")?;
    if c.rest().len() < TAG_LEN {
        return Err(BulkError::Truncated("item"));
    }
    Ok(ItemRef {
        version,
        wrapped,
        index,
        body_offset: c.pos(),
    })
}

/// The base64 part of a JSON ciphertext string, or a clear error for anything else.
pub(crate) fn strip_item_prefix(s: &str) -> Result<&str, BulkError> {
    s.strip_prefix(ITEM_PREFIX).ok_or_else(|| {
        if s.starts_with("vault:") {
            BulkError::malformed(
                "ciphertext is a transit ciphertext, not a bulk-sealed item (rsb1:)",
            )
        } else {
            BulkError::malformed("ciphertext is not a bulk-sealed item (expected prefix rsb1:)")
        }
    })
}

/// Decodes a JSON ciphertext string (`rsb1:<base64>`) into `out` (cleared first).
pub fn decode_item_string(s: &str, out: &mut Vec<u8>) -> Result<(), BulkError> {
    let b64 = strip_item_prefix(s)?;
    out.clear();
    B64.decode_append(b64, out)
        .map_err(|_| BulkError::malformed("ciphertext is not valid base64"))
}

/// Appends `rsb1:` ‖ base64(`item`) to `out` (no quotes).
pub(crate) fn encode_item_string(item: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(ITEM_PREFIX.as_bytes());
    B64.encode_append(item, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(name: &str, version: u32, seed: u8) -> BatchCipher {
        let key = Zeroizing::new([seed; 32]);
        let wrapped = vec![seed ^ 0x5a; 60];
        BatchCipher::new(name, version, &wrapped, &key).unwrap()
    }

    fn seal(c: &BatchCipher, index: u32, aad: &[u8], pt: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        c.push_item_header(index, &mut buf);
        let start = buf.len();
        buf.extend_from_slice(pt);
        c.seal_tail(index, aad, &mut buf, start, &mut Vec::new())
            .unwrap();
        buf
    }

    fn open(c: &BatchCipher, aad: &[u8], item: &[u8]) -> Result<Vec<u8>, BulkError> {
        let it = parse_item(item)?;
        assert_eq!(it.wrapped, c.wrapped());
        let mut body = item[it.body_offset..].to_vec();
        c.open_in_place(it.index, aad, &mut body, &mut Vec::new())
            .map(|p| p.to_vec())
    }

    #[test]
    fn round_trip_and_string_form() {
        let c = cipher("k", 3, 1);
        let item = seal(&c, 7, b"ctx", b"hello");
        assert_eq!(open(&c, b"ctx", &item).unwrap(), b"hello");
        let mut s = Vec::new();
        encode_item_string(&item, &mut s);
        let s = String::from_utf8(s).unwrap();
        assert!(s.starts_with("rsb1:"));
        let mut back = Vec::new();
        decode_item_string(&s, &mut back).unwrap();
        assert_eq!(back, item);
        let it = parse_item(&back).unwrap();
        assert_eq!((it.version, it.index), (3, 7));
    }

    #[test]
    fn every_byte_is_authenticated() {
        let c = cipher("k", 3, 1);
        let item = seal(&c, 7, b"", b"some plaintext");
        let hdr = c.item_header_len();
        for i in 0..item.len() {
            let mut t = item.clone();
            t[i] ^= 0x01;
            match parse_item(&t) {
                Err(_) => {}
                Ok(it) => {
                    // A changed wrapped key or version would be caught by the HSM unwrap; here the
                    // cipher is fixed, so only index/body changes reach the AEAD, which must fail.
                    if it.wrapped == c.wrapped() && it.version == c.version() {
                        let mut body = t[it.body_offset..].to_vec();
                        assert_eq!(
                            c.open_in_place(it.index, b"", &mut body, &mut Vec::new())
                                .err(),
                            Some(BulkError::InvalidCiphertext),
                            "flip at byte {i} (header {hdr})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_aad_index_name_version_batch_fail() {
        let c = cipher("k", 3, 1);
        let item = seal(&c, 0, b"a", b"x");
        assert_eq!(open(&c, b"b", &item), Err(BulkError::InvalidCiphertext));
        let it = parse_item(&item).unwrap();
        let mut body = item[it.body_offset..].to_vec();
        assert!(c
            .open_in_place(1, b"a", &mut body, &mut Vec::new())
            .is_err());
        // Same key bytes and wrapped blob but another name or version: the AAD differs.
        for other in [cipher("k2", 3, 1), cipher("k", 4, 1)] {
            let mut body = item[it.body_offset..].to_vec();
            assert!(other
                .open_in_place(0, b"a", &mut body, &mut Vec::new())
                .is_err());
        }
        // Foreign batch key.
        let foreign = cipher("k", 3, 2);
        let mut body = item[it.body_offset..].to_vec();
        assert!(foreign
            .open_in_place(0, b"a", &mut body, &mut Vec::new())
            .is_err());
    }

    #[test]
    fn malformed_items() {
        let c = cipher("k", 3, 1);
        let item = seal(&c, 0, b"", b"x");
        for n in 0..item.len() - TAG_LEN - 1 {
            assert!(parse_item(&item[..n]).is_err(), "prefix {n}");
        }
        let mut v2 = item.clone();
        v2[0] = 2;
        assert_eq!(
            parse_item(&v2).err(),
            Some(BulkError::UnsupportedVersion(2))
        );
        let mut long = item.clone();
        long[5] = 0xff; // wrapped_len high byte
        assert!(matches!(parse_item(&long), Err(BulkError::TooLong { .. })));
        let mut out = Vec::new();
        assert!(decode_item_string("vault:v1:abc", &mut out).is_err());
        assert!(decode_item_string("rsb1:!!!", &mut out).is_err());
    }

    #[test]
    fn nonces_are_distinct_counters() {
        let a = counter_nonce(1);
        let b = counter_nonce(2);
        assert_ne!(a.as_ref(), b.as_ref());
        assert_eq!(counter_nonce(0x0102).as_ref()[10..], [1, 2]);
    }
}

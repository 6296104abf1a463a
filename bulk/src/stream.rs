//! Chunked AEAD for one large object (`?mode=stream`).
//!
//! ```text
//! stream := "RSBS" ‖ version:u8 (=1) ‖ l1_version:u32 ‖ wrapped_len:u16 ‖ wrapped ‖ chunk_size:u32 ‖ chunk*
//! chunk  := flag:u8 (0 = more, 1 = final) ‖ len:u32 ‖ ct ‖ tag
//! ```
//!
//! Nonce = chunk counter; the AAD binds the final flag, so truncation at a chunk boundary,
//! reordering, and appending after the final chunk are all detected (`docs/bulk-seal.md` §4.3).
//!
//! The header and the chunk header each have one parser here (`parse_header`,
//! `parse_chunk_header`), shared by the [`StreamOpener`] and by [`ShapeCheck`], the check a
//! client without the key runs on a sealed stream it receives.

use aws_lc_rs::aead::Aad;
use bytes::{Buf, BytesMut};

use crate::error::BulkError;
use crate::format::{
    counter_nonce, parse_wrapped, BatchCipher, Cursor, FORMAT_V1, MAX_WRAPPED_LEN, TAG_LEN,
};

/// Magic of an object stream.
pub const STREAM_MAGIC: &[u8; 4] = b"RSBS";
/// Default plaintext bytes per chunk.
pub const DEFAULT_CHUNK: u32 = 64 << 10;
/// Smallest chunk size accepted.
pub const MIN_CHUNK: u32 = 1 << 10;
/// Largest chunk size accepted (bounds every allocation of the reader).
pub const MAX_CHUNK: u32 = 16 << 20;
/// Chunks per stream at most (one batch key per stream).
pub(crate) const MAX_CHUNKS: u64 = 1 << 32;

const CHUNK_HEADER_LEN: usize = 5;
/// The longest stream header: magic, version, L1 version, wrapped length, wrapped, chunk size.
const MAX_HEADER_LEN: usize = 4 + 1 + 4 + 2 + MAX_WRAPPED_LEN + 4;

/// Parses the stream header at the start of `buf`: the header and its length, or `Ok(None)`
/// while `buf` holds only a (so far valid) prefix of it.
fn parse_header(buf: &[u8]) -> Result<Option<(StreamHeader, usize)>, BulkError> {
    let n = buf.len().min(4);
    if buf.get(..n) != STREAM_MAGIC.get(..n) {
        return Err(BulkError::malformed(
            "not a rootseal object stream (bad magic)",
        ));
    }
    if buf.len() < 5 {
        return Ok(None);
    }
    let mut c = Cursor::new(buf);
    c.take(4, "stream header")?;
    let v = c.u8("stream header")?;
    if v != FORMAT_V1 {
        return Err(BulkError::UnsupportedVersion(v));
    }
    let parsed = (|| {
        let (version, wrapped) = parse_wrapped(&mut c)?;
        let chunk_size = c.u32("stream header")?;
        Ok::<_, BulkError>((version, wrapped.to_vec(), chunk_size, c.pos()))
    })();
    let (version, wrapped, chunk_size, used) = match parsed {
        Ok(p) => p,
        Err(BulkError::Truncated(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
        return Err(BulkError::TooLong {
            what: "chunk size",
            len: u64::from(chunk_size),
            max: u64::from(MAX_CHUNK),
        });
    }
    let header = StreamHeader {
        version,
        wrapped,
        chunk_size,
    };
    Ok(Some((header, used)))
}

/// Parses a chunk header (`flag ‖ len`, [`CHUNK_HEADER_LEN`] bytes) of a stream with chunks of
/// `chunk_size`: whether the chunk is final, and the length of its `ct ‖ tag`. Every chunk but
/// the final one is full; the final one holds at least its tag.
fn parse_chunk_header(hdr: &[u8], chunk_size: u32) -> Result<(bool, usize), BulkError> {
    let flag = hdr.first().copied().unwrap_or(0xff);
    let len = u32::from_be_bytes([
        hdr.get(1).copied().unwrap_or(0),
        hdr.get(2).copied().unwrap_or(0),
        hdr.get(3).copied().unwrap_or(0),
        hdr.get(4).copied().unwrap_or(0),
    ]) as usize;
    let max = chunk_size as usize + TAG_LEN;
    match flag {
        0 if len == max => Ok((false, len)),
        1 if (TAG_LEN..=max).contains(&len) => Ok((true, len)),
        0 | 1 => Err(BulkError::malformed(format!(
            "chunk length {len} does not match chunk size {chunk_size}"
        ))),
        f => Err(BulkError::malformed(format!("bad chunk flag {f}"))),
    }
}

/// Seals one object as a stream of chunks.
#[derive(Debug)]
pub struct StreamSealer {
    cipher: BatchCipher,
    chunk_size: u32,
    caller_aad: Vec<u8>,
    next: u64,
    pending: Vec<u8>,
    aad: Vec<u8>,
}

impl StreamSealer {
    /// A sealer writing chunks of `chunk_size` plaintext bytes under `cipher`.
    pub fn new(cipher: BatchCipher, chunk_size: u32, caller_aad: &[u8]) -> Result<Self, BulkError> {
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
            return Err(BulkError::malformed(format!(
                "chunk size must be between {MIN_CHUNK} and {MAX_CHUNK}"
            )));
        }
        Ok(Self {
            cipher,
            chunk_size,
            caller_aad: caller_aad.to_vec(),
            next: 0,
            pending: Vec::new(),
            aad: Vec::new(),
        })
    }

    /// Appends the stream header to `out`.
    pub fn header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(STREAM_MAGIC);
        out.push(FORMAT_V1);
        out.extend_from_slice(self.cipher.wrapped_field());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
    }

    fn seal_chunk(
        &mut self,
        plain: &[u8],
        final_chunk: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), BulkError> {
        if self.next >= MAX_CHUNKS {
            return Err(BulkError::malformed("object too large for one stream"));
        }
        self.cipher.stream_aad(
            self.chunk_size,
            self.next,
            final_chunk,
            &self.caller_aad,
            &mut self.aad,
        );
        // `plain` holds at most one chunk (≤ MAX_CHUNK bytes).
        let len = u32::try_from(plain.len() + TAG_LEN).map_err(|_| BulkError::Internal)?;
        out.push(u8::from(final_chunk));
        out.extend_from_slice(&len.to_be_bytes());
        let start = out.len();
        out.extend_from_slice(plain);
        let tail = out.get_mut(start..).ok_or(BulkError::Internal)?;
        let tag = self
            .cipher
            .key()
            .seal_in_place_separate_tag(
                counter_nonce(self.next),
                Aad::from(self.aad.as_slice()),
                tail,
            )
            .map_err(|_| BulkError::Internal)?;
        out.extend_from_slice(tag.as_ref());
        self.next += 1;
        Ok(())
    }

    /// Feeds plaintext; writes every chunk known not to be the last.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), BulkError> {
        let cs = self.chunk_size as usize;
        let mut data = data;
        // Fill a partial pending chunk first.
        if !self.pending.is_empty() {
            let need = cs.saturating_sub(self.pending.len()).min(data.len());
            let (a, b) = data.split_at(need);
            self.pending.extend_from_slice(a);
            data = b;
            if data.is_empty() {
                return Ok(());
            }
            // pending is full and more data follows: it is not the last chunk.
            let p = std::mem::take(&mut self.pending);
            self.seal_chunk(&p, false, out)?;
        }
        // Whole chunks straight from the input, keeping at least one byte (or a full chunk) back.
        while data.len() > cs {
            let (a, b) = data.split_at(cs);
            self.seal_chunk(a, false, out)?;
            data = b;
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }

    /// Ends the object: writes the final chunk (possibly empty).
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), BulkError> {
        let p = std::mem::take(&mut self.pending);
        self.seal_chunk(&p, true, out)
    }
}

/// The parsed header of an object stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// L1 version of the wrapped batch key.
    pub version: u32,
    /// The wrapped batch key.
    pub wrapped: Vec<u8>,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
}

/// Incremental reader of an object stream.
#[derive(Debug, Default)]
pub struct StreamOpener {
    buf: BytesMut,
    header: Option<StreamHeader>,
    cipher: Option<BatchCipher>,
    caller_aad: Vec<u8>,
    next: u64,
    done: bool,
    aad: Vec<u8>,
}

impl StreamOpener {
    /// A reader expecting the stream header.
    pub fn new(caller_aad: &[u8]) -> Self {
        Self {
            caller_aad: caller_aad.to_vec(),
            ..Self::default()
        }
    }

    /// Feeds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Parses the header once enough bytes are there (`Ok(None)`: need more).
    pub fn header(&mut self) -> Result<Option<&StreamHeader>, BulkError> {
        if self.header.is_none() {
            let Some((header, used)) = parse_header(&self.buf)? else {
                return Ok(None);
            };
            self.buf.advance(used);
            self.header = Some(header);
        }
        Ok(self.header.as_ref())
    }

    /// Sets the cipher of the batch key named in the header (after the HSM unwrapped it).
    pub fn set_cipher(&mut self, cipher: BatchCipher) {
        self.cipher = Some(cipher);
    }

    /// Opens the next whole chunk, appending its plaintext to `out`. `Ok(None)`: need more bytes;
    /// `Ok(Some(true))`: that was the final chunk.
    pub fn next_chunk(&mut self, out: &mut Vec<u8>) -> Result<Option<bool>, BulkError> {
        Ok(self.open_next()?.map(|(plain, fin)| {
            out.extend_from_slice(&plain);
            fin
        }))
    }

    /// Like [`Self::next_chunk`], but returns the chunk's plaintext as the buffer it was opened
    /// in (no copy). `Ok(None)`: need more bytes; `Ok(Some((_, true)))`: the final chunk.
    pub(crate) fn next_chunk_bytes(&mut self) -> Result<Option<(bytes::Bytes, bool)>, BulkError> {
        Ok(self.open_next()?.map(|(plain, fin)| (plain.freeze(), fin)))
    }

    fn open_next(&mut self) -> Result<Option<(BytesMut, bool)>, BulkError> {
        let Some(h) = self.header.as_ref() else {
            return Ok(None);
        };
        let chunk_size = h.chunk_size;
        if self.done {
            if self.buf.is_empty() {
                return Ok(None);
            }
            return Err(BulkError::malformed("data after the final chunk"));
        }
        let Some(hdr) = self.buf.get(..CHUNK_HEADER_LEN) else {
            return Ok(None);
        };
        let (final_chunk, len) = parse_chunk_header(hdr, chunk_size)?;
        if self.buf.len() < CHUNK_HEADER_LEN + len {
            self.buf.reserve(CHUNK_HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        let cipher = self.cipher.as_ref().ok_or(BulkError::Internal)?;
        if self.next >= MAX_CHUNKS {
            return Err(BulkError::InvalidCiphertext);
        }
        self.buf.advance(CHUNK_HEADER_LEN);
        let mut body = self.buf.split_to(len);
        cipher.stream_aad(
            chunk_size,
            self.next,
            final_chunk,
            &self.caller_aad,
            &mut self.aad,
        );
        let plain_len = cipher
            .key()
            .open_in_place(
                counter_nonce(self.next),
                Aad::from(self.aad.as_slice()),
                &mut body,
            )
            .map_err(|_| BulkError::InvalidCiphertext)?
            .len();
        body.truncate(plain_len);
        self.next += 1;
        self.done = final_chunk;
        Ok(Some((body, final_chunk)))
    }

    /// Called at end of input: an error unless the final chunk was read and nothing follows.
    pub fn finish(&self) -> Result<(), BulkError> {
        if self.header.is_none() {
            return Err(BulkError::Truncated("stream header"));
        }
        if !self.done {
            return Err(BulkError::Truncated("stream"));
        }
        if !self.buf.is_empty() {
            return Err(BulkError::malformed("data after the final chunk"));
        }
        Ok(())
    }
}

/// A structural check of a sealed object stream as a client receives it, without the key (it
/// stays on the server): header, then chunks, the last one marked final, nothing after it. It
/// reads with the [`StreamOpener`]'s own header and chunk-header parsers but cannot verify tags;
/// it makes a stream cut short or garbled an error (`rootseal bulk seal` runs it on the
/// response). Memory: at most one stream header.
#[derive(Debug, Default)]
pub struct ShapeCheck {
    /// Bytes of the header being read: the stream header, then each chunk header.
    head: Vec<u8>,
    /// The stream's chunk size, once its header was read.
    chunk_size: Option<u32>,
    /// Body bytes of the current chunk still to come.
    skip: usize,
    final_seen: bool,
}

impl ShapeCheck {
    /// A check expecting the stream header.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next received bytes.
    pub fn feed(&mut self, mut b: &[u8]) -> Result<(), BulkError> {
        while !b.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(b.len());
                self.skip -= n;
                b = b.get(n..).unwrap_or_default();
                continue;
            }
            if self.final_seen {
                return Err(BulkError::malformed("data after the final chunk"));
            }
            let Some(chunk_size) = self.chunk_size else {
                let n = MAX_HEADER_LEN.saturating_sub(self.head.len()).min(b.len());
                self.head.extend_from_slice(b.get(..n).unwrap_or_default());
                match parse_header(&self.head)? {
                    Some((header, used)) => {
                        // The bytes taken past the header begin the first chunk: give them back.
                        let past = self.head.len() - used;
                        b = b.get(n - past..).unwrap_or_default();
                        self.chunk_size = Some(header.chunk_size);
                        self.head.clear();
                    }
                    // MAX_HEADER_LEN bytes always hold a whole header.
                    None if n == 0 => return Err(BulkError::malformed("stream header too long")),
                    None => b = b.get(n..).unwrap_or_default(),
                }
                continue;
            };
            let n = (CHUNK_HEADER_LEN - self.head.len()).min(b.len());
            self.head.extend_from_slice(b.get(..n).unwrap_or_default());
            b = b.get(n..).unwrap_or_default();
            if self.head.len() == CHUNK_HEADER_LEN {
                let (final_chunk, len) = parse_chunk_header(&self.head, chunk_size)?;
                self.final_seen = final_chunk;
                self.skip = len;
                self.head.clear();
            }
        }
        Ok(())
    }

    /// Called at end of input: an error unless the final chunk was received whole.
    pub fn finish(&self) -> Result<(), BulkError> {
        if self.final_seen && self.skip == 0 && self.head.is_empty() {
            Ok(())
        } else {
            Err(BulkError::Truncated("stream"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn cipher(seed: u8) -> BatchCipher {
        BatchCipher::new("k", 1, &[seed; 60], &Zeroizing::new([seed; 32])).unwrap()
    }

    fn seal(data: &[u8], cs: u32, step: usize) -> Vec<u8> {
        let mut s = StreamSealer::new(cipher(1), cs, b"").unwrap();
        let mut out = Vec::new();
        s.header(&mut out);
        for p in data.chunks(step.max(1)) {
            s.push(p, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        out
    }

    fn open(sealed: &[u8], step: usize, seed: u8) -> Result<Vec<u8>, BulkError> {
        let mut o = StreamOpener::new(b"");
        let mut out = Vec::new();
        for p in sealed.chunks(step.max(1)) {
            o.push(p);
            if o.cipher.is_none() {
                let Some(h) = o.header()?.cloned() else {
                    continue;
                };
                // As the HSM would: the key is bound to the header's version and wrapped bytes.
                let c = BatchCipher::new("k", h.version, &h.wrapped, &Zeroizing::new([seed; 32]))?;
                o.set_cipher(c);
            }
            while o.next_chunk(&mut out)?.is_some() {}
        }
        o.finish()?;
        Ok(out)
    }

    #[test]
    fn round_trip_sizes() {
        for len in [0usize, 1, 1023, 1024, 1025, 4096, 5000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for step in [1usize, 333, 1024, 100_000] {
                if len > 1100 && step == 1 {
                    continue;
                }
                let s = seal(&data, 1024, step);
                assert_eq!(open(&s, 777, 1).unwrap(), data, "len {len} step {step}");
            }
        }
    }

    #[test]
    fn truncated_reordered_tampered_foreign() {
        let data = vec![7u8; 3000]; // 3 chunks of 1024: 1024, 1024, 952 (final)
        let s = seal(&data, 1024, 4096);
        let hdr = 4 + 1 + 4 + 2 + 60 + 4;
        let c = 5 + 1024 + 16;
        // Cut anywhere: never a success.
        for n in 0..s.len() {
            assert!(open(&s[..n], 500, 1).is_err(), "cut at {n}");
        }
        // Drop the final chunk exactly at a chunk boundary.
        assert_eq!(
            open(&s[..hdr + 2 * c], 100_000, 1).err(),
            Some(BulkError::Truncated("stream"))
        );
        // Swap chunks 0 and 1.
        let mut r = s[..hdr].to_vec();
        r.extend_from_slice(&s[hdr + c..hdr + 2 * c]);
        r.extend_from_slice(&s[hdr..hdr + c]);
        r.extend_from_slice(&s[hdr + 2 * c..]);
        assert_eq!(
            open(&r, 100_000, 1).err(),
            Some(BulkError::InvalidCiphertext)
        );
        // Mark a middle chunk final (flag flip): length check or tag fails.
        let mut f = s.clone();
        f[hdr] = 1;
        assert!(open(&f, 100_000, 1).is_err());
        // Append after final.
        let mut a = s.clone();
        a.push(0);
        assert!(open(&a, 100_000, 1).is_err());
        // Flip every byte after the header.
        for i in hdr..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x10;
            assert!(open(&t, 100_000, 1).is_err(), "flip {i}");
        }
        // Foreign key.
        assert_eq!(
            open(&s, 100_000, 2).err(),
            Some(BulkError::InvalidCiphertext)
        );
    }

    #[test]
    fn lying_header_fields() {
        let s = seal(b"abc", 1024, 10);
        let mut v = s.clone();
        v[4] = 2;
        assert_eq!(
            open(&v, 100, 1).err(),
            Some(BulkError::UnsupportedVersion(2))
        );
        let mut big = s.clone();
        let cs_off = 4 + 1 + 4 + 2 + 60;
        big[cs_off..cs_off + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(open(&big, 100, 1), Err(BulkError::TooLong { .. })));
        let mut len = s.clone();
        len[cs_off + 4 + 1..cs_off + 4 + 5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(open(&len, 100, 1).is_err());
        assert!(open(b"RSBF\x01", 100, 1).is_err());
    }

    // Moved from the CLI (`plugin/src/cli/bulk.rs`), which now calls `ShapeCheck`.
    fn sealed(len: usize) -> Vec<u8> {
        let c = BatchCipher::new("k", 1, &[3; 60], &Zeroizing::new([1; 32])).unwrap();
        let mut s = StreamSealer::new(c, 1024, b"").unwrap();
        let mut out = Vec::new();
        s.header(&mut out);
        s.push(&vec![9u8; len], &mut out).unwrap();
        s.finish(&mut out).unwrap();
        out
    }

    fn shape(b: &[u8], step: usize) -> Result<(), BulkError> {
        let mut s = ShapeCheck::new();
        for p in b.chunks(step) {
            s.feed(p)?;
        }
        s.finish()
    }

    #[test]
    fn sealed_shape_accepts_whole_streams_only() {
        for len in [0usize, 1, 1024, 3000] {
            let s = sealed(len);
            for step in [1usize, 7, 100, 100_000] {
                shape(&s, step).unwrap();
            }
            for cut in 0..s.len() {
                assert!(shape(&s[..cut], 13).is_err(), "len {len} cut {cut}");
            }
            let mut more = s.clone();
            more.push(0);
            assert!(shape(&more, 50).is_err());
        }
        assert!(shape(b"RSBF\x01", 5).is_err());
    }

    /// Stable stand-in for the cargo-fuzz target: random cuts and bit flips of a valid stream
    /// never unseal cleanly, and random bytes never panic.
    #[test]
    fn random_mutations_never_unseal() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let data: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let valid = seal(&data, 1024, 4096);
        for _ in 0..3000 {
            let mut m = valid.clone();
            let i = (next() as usize) % m.len();
            m[i] ^= 1 << (next() % 8);
            if next() % 2 == 0 {
                m.truncate((next() as usize) % (m.len() + 1));
            }
            assert!(open(&m, 1 + (next() % 700) as usize, 1).is_err());
            let n = (next() % 200) as usize;
            let mut junk = b"RSBS\x01".to_vec();
            junk.extend((0..n).map(|_| next() as u8));
            let _ = open(&junk, 1 + (next() % 50) as usize, 1);
        }
    }
}

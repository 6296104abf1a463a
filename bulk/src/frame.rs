//! The binary framing of `application/octet-stream` bulk requests and responses.
//!
//! ```text
//! stream := "RSBF" ‖ version:u8 (=1) ‖ record* ‖ END
//! record := kind:u8 ‖ len:u32 ‖ body[len]     (len ≤ MAX_FRAME, checked before buffering)
//! ```
//!
//! Record kinds and bodies are listed in `docs/bulk-seal.md` §4.2. [`FrameDecoder`] is an
//! incremental parser: feed it bytes as they arrive, take whole records out. It never allocates
//! from a length field: its buffer holds only bytes actually received, and a record longer than
//! [`MAX_FRAME`] is refused as soon as its header is seen.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::BulkError;
use crate::format::{Cursor, FORMAT_V1};

/// Magic of a frame stream.
pub const FRAME_MAGIC: &[u8; 4] = b"RSBF";
/// Length of the stream header (magic + version).
pub(crate) const HEADER_LEN: usize = 5;
/// Length of a record header (kind + len).
pub(crate) const RECORD_HEADER_LEN: usize = 5;
/// The largest record body accepted: 16 MiB of plaintext plus item overhead.
pub const MAX_FRAME: u32 = (16 << 20) + 64;
/// Request-level errors use this item number in an `ERROR` record; the stream then stops.
pub const REQUEST_ERROR: u64 = u64::MAX;

/// A record kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Seal request item: `aad_len:u32 ‖ aad ‖ plaintext`.
    Item = 0x01,
    /// The batch the next `SEALED` records belong to: `version:u32 ‖ wrapped_len:u16 ‖ wrapped`.
    Batch = 0x02,
    /// A sealed item: `index:u32 ‖ ct ‖ tag`.
    Sealed = 0x03,
    /// Caller AAD for the next `SEALED` record (unseal requests).
    Aad = 0x04,
    /// An unsealed plaintext (unseal responses).
    Plain = 0x05,
    /// A failed item: `item:u64 ‖ utf-8 message`.
    Error = 0x06,
    /// End of stream: `count:u64`, the number of item records (ITEM, SEALED, PLAIN, ERROR).
    End = 0x7F,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Kind::Item,
            0x02 => Kind::Batch,
            0x03 => Kind::Sealed,
            0x04 => Kind::Aad,
            0x05 => Kind::Plain,
            0x06 => Kind::Error,
            0x7F => Kind::End,
            _ => return None,
        })
    }

    fn is_item(self) -> bool {
        matches!(self, Kind::Item | Kind::Sealed | Kind::Plain | Kind::Error)
    }
}

/// One record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its kind.
    pub kind: Kind,
    /// Its body.
    pub body: Bytes,
}

/// Incremental decoder of a frame stream.
///
/// Bytes given with [`FrameDecoder::push_bytes`] are not copied: a record lying inside one
/// pushed piece comes out as a slice of it (a reference count, no memmove). Only a record that
/// straddles two pieces is copied, into a buffer of at most one record.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Bytes received before `cur` and not yet consumed (a record straddling pieces).
    buf: BytesMut,
    /// The unconsumed rest of the last piece given to `push_bytes` (logically after `buf`).
    cur: Bytes,
    header_done: bool,
    ended: bool,
    items: u64,
}

impl FrameDecoder {
    /// A decoder expecting the stream header first.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds received bytes (copied).
    pub fn push(&mut self, data: &[u8]) {
        self.spill();
        self.buf.extend_from_slice(data);
    }

    /// Feeds a received piece without copying it: records inside it are returned as slices.
    pub fn push_bytes(&mut self, data: Bytes) {
        self.spill();
        self.cur = data;
    }

    /// Moves what is left of `cur` into `buf` (only when a new piece arrives before the old
    /// one was consumed: at most one partial record).
    fn spill(&mut self) {
        if !self.cur.is_empty() {
            self.buf.extend_from_slice(&self.cur);
            self.cur = Bytes::new();
        }
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.cur.len()
    }

    /// The first `n` unconsumed bytes, contiguous; `None` while fewer have been received.
    /// Copies from `cur` into `buf` only when `buf` already holds a partial record, or when
    /// `cur` alone is too short (the record straddles pieces). `n` is bounded by the caller
    /// (a record header, or a record accepted against [`MAX_FRAME`]).
    fn peek(&mut self, n: usize) -> Option<&[u8]> {
        if self.buf.is_empty() && self.cur.len() >= n {
            return self.cur.get(..n);
        }
        if self.buf.len() < n {
            let take = (n - self.buf.len()).min(self.cur.len());
            self.buf.reserve(n - self.buf.len());
            self.buf
                .extend_from_slice(self.cur.get(..take).unwrap_or_default());
            self.cur.advance(take);
        }
        self.buf.get(..n)
    }

    /// Drops the first `n` bytes; only after `peek(n)` returned `Some`.
    fn skip(&mut self, n: usize) {
        if self.buf.is_empty() {
            self.cur.advance(n.min(self.cur.len()));
        } else {
            self.buf.advance(n.min(self.buf.len()));
        }
    }

    /// Removes and returns the first `n` bytes; only after `peek(n)` returned `Some`.
    fn take(&mut self, n: usize) -> Bytes {
        if self.buf.is_empty() {
            self.cur.split_to(n.min(self.cur.len()))
        } else {
            self.buf.split_to(n.min(self.buf.len())).freeze()
        }
    }

    /// Checks the stream header once 5 bytes are there. `Ok(false)`: need more bytes.
    pub fn header(&mut self) -> Result<bool, BulkError> {
        if self.header_done {
            return Ok(true);
        }
        if self.peek(HEADER_LEN).is_none() {
            // Reject a wrong magic early, even on a short prefix (all of it is in `buf` now).
            let n = self.buf.len().min(4);
            if self.buf.get(..n) != FRAME_MAGIC.get(..n) {
                return Err(BulkError::malformed(
                    "not a rootseal frame stream (bad magic)",
                ));
            }
            return Ok(false);
        }
        let h = self.peek(HEADER_LEN).unwrap_or_default();
        if h.get(..4) != Some(&FRAME_MAGIC[..]) {
            return Err(BulkError::malformed(
                "not a rootseal frame stream (bad magic)",
            ));
        }
        let v = h.get(4).copied().unwrap_or(0);
        if v != FORMAT_V1 {
            return Err(BulkError::UnsupportedVersion(v));
        }
        self.skip(HEADER_LEN);
        self.header_done = true;
        Ok(true)
    }

    /// The next whole record, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, BulkError> {
        if !self.header()? {
            return Ok(None);
        }
        if self.ended {
            if self.buffered() == 0 {
                return Ok(None);
            }
            return Err(BulkError::malformed("data after the END record"));
        }
        let Some(h) = self.peek(RECORD_HEADER_LEN) else {
            return Ok(None);
        };
        let kind_byte = h.first().copied().unwrap_or(0);
        let len = u32::from_be_bytes([
            h.get(1).copied().unwrap_or(0),
            h.get(2).copied().unwrap_or(0),
            h.get(3).copied().unwrap_or(0),
            h.get(4).copied().unwrap_or(0),
        ]);
        let kind = Kind::from_u8(kind_byte).ok_or_else(|| {
            BulkError::malformed(format!("unknown record kind 0x{kind_byte:02x}"))
        })?;
        if len > MAX_FRAME {
            return Err(BulkError::TooLong {
                what: "record",
                len: u64::from(len),
                max: u64::from(MAX_FRAME),
            });
        }
        let total = RECORD_HEADER_LEN + len as usize;
        if self.buffered() < total {
            // Keep the partial record (≤ MAX_FRAME, accepted above) until the rest arrives.
            self.spill();
            return Ok(None);
        }
        // Whole record available: contiguous in `cur` (no copy) or completed into `buf`.
        if self.peek(total).is_none() {
            return Err(BulkError::Internal);
        }
        self.skip(RECORD_HEADER_LEN);
        let body = self.take(len as usize);
        if kind == Kind::End {
            let count: [u8; 8] = body
                .as_ref()
                .try_into()
                .map_err(|_| BulkError::malformed("END record must carry an 8-byte count"))?;
            let count = u64::from_be_bytes(count);
            if count != self.items {
                return Err(BulkError::malformed(format!(
                    "END record counts {count} items but {} were received",
                    self.items
                )));
            }
            self.ended = true;
        } else if kind.is_item() {
            self.items = self.items.saturating_add(1);
        }
        Ok(Some(Frame { kind, body }))
    }

    /// Called at end of input: an error unless the stream was complete.
    pub fn finish(&self) -> Result<(), BulkError> {
        if !self.header_done {
            return Err(BulkError::Truncated("frame stream header"));
        }
        if !self.ended {
            return Err(BulkError::Truncated("frame stream (no END record)"));
        }
        if self.buffered() != 0 {
            return Err(BulkError::malformed("data after the END record"));
        }
        Ok(())
    }
}

/// Appends the stream header.
pub fn put_header(out: &mut impl BufMut) {
    out.put_slice(FRAME_MAGIC);
    out.put_u8(FORMAT_V1);
}

/// Appends a record header for a body of `len` bytes.
pub(crate) fn put_record_header(out: &mut impl BufMut, kind: Kind, len: usize) {
    out.put_u8(kind as u8);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Appends a whole record whose body is the concatenation of `parts`.
pub fn put_record(out: &mut impl BufMut, kind: Kind, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    put_record_header(out, kind, len);
    for p in parts {
        out.put_slice(p);
    }
}

/// Appends an `ERROR` record.
pub(crate) fn put_error(out: &mut impl BufMut, item: u64, msg: &str) {
    put_record(out, Kind::Error, &[&item.to_be_bytes(), msg.as_bytes()]);
}

/// Appends the `END` record.
pub fn put_end(out: &mut impl BufMut, count: u64) {
    put_record(out, Kind::End, &[&count.to_be_bytes()]);
}

/// Splits an `ITEM` body into `(aad, plaintext)` (the engine's seal input; public for the
/// `frame_decoder` fuzz target).
pub fn split_item(body: &Bytes) -> Result<(Bytes, Bytes), BulkError> {
    let mut c = Cursor::new(body);
    let aad_len = c.u32("ITEM record")? as usize;
    c.take(aad_len, "ITEM record")?;
    let start = 4 + aad_len;
    Ok((body.slice(4..start), body.slice(start..)))
}

/// Parses an `ERROR` body into `(item, message)`: what a client reading a response (and the
/// `frame_decoder` fuzz target) needs; the engine only writes `ERROR` records.
pub fn split_error(body: &[u8]) -> Result<(u64, String), BulkError> {
    let mut c = Cursor::new(body);
    let item = c.u64("ERROR record")?;
    Ok((item, String::from_utf8_lossy(c.rest()).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        put_header(&mut out);
        put_record(&mut out, Kind::Item, &[&0u32.to_be_bytes(), b"hello"]);
        put_record(
            &mut out,
            Kind::Item,
            &[&2u32.to_be_bytes(), b"ad", b"world"],
        );
        put_end(&mut out, 2);
        out
    }

    fn decode_with(data: &[u8], step: usize, zero_copy: bool) -> Result<Vec<Frame>, BulkError> {
        let mut d = FrameDecoder::new();
        let mut frames = Vec::new();
        for (i, piece) in data.chunks(step.max(1)).enumerate() {
            if zero_copy {
                d.push_bytes(Bytes::copy_from_slice(piece));
            } else {
                d.push(piece);
            }
            // Sometimes push twice before taking records out (the spill path).
            if zero_copy && i % 3 == 1 {
                continue;
            }
            while let Some(f) = d.next_frame()? {
                frames.push(f);
            }
            assert!(d.buffered() <= data.len());
        }
        while let Some(f) = d.next_frame()? {
            frames.push(f);
        }
        d.finish()?;
        Ok(frames)
    }

    /// Decodes with copying `push` and with zero-copy `push_bytes`: both must agree.
    fn decode_all(data: &[u8], step: usize) -> Result<Vec<Frame>, BulkError> {
        let a = decode_with(data, step, false);
        let b = decode_with(data, step, true);
        assert_eq!(a.is_ok(), b.is_ok(), "push and push_bytes disagree");
        if let (Ok(x), Ok(y)) = (&a, &b) {
            assert_eq!(x, y);
        }
        a
    }

    #[test]
    fn zero_copy_records_are_slices_of_the_piece() {
        let s = Bytes::from(sample());
        let mut d = FrameDecoder::new();
        d.push_bytes(s.clone());
        let f = d.next_frame().unwrap().unwrap();
        let range = s.as_ptr() as usize..s.as_ptr() as usize + s.len();
        assert!(
            range.contains(&(f.body.as_ptr() as usize)),
            "record was copied"
        );
    }

    #[test]
    fn round_trip_any_split() {
        let s = sample();
        for step in [1, 2, 3, 7, 1000] {
            let f = decode_all(&s, step).unwrap();
            assert_eq!(f.len(), 3);
            let (aad, pt) = split_item(&f[1].body).unwrap();
            assert_eq!((&aad[..], &pt[..]), (&b"ad"[..], &b"world"[..]));
        }
    }

    #[test]
    fn truncation_anywhere_is_an_error() {
        let s = sample();
        for n in 0..s.len() {
            assert!(decode_all(&s[..n], 3).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn lying_lengths_and_bad_headers() {
        // A record claiming 4 GiB: refused at once, nothing reserved.
        let mut s = Vec::new();
        put_header(&mut s);
        s.extend_from_slice(&[0x01, 0xff, 0xff, 0xff, 0xff]);
        let mut d = FrameDecoder::new();
        d.push(&s);
        assert!(matches!(d.next_frame(), Err(BulkError::TooLong { .. })));
        // END count that lies (a record was dropped).
        let mut s = Vec::new();
        put_header(&mut s);
        put_record(&mut s, Kind::Item, &[&0u32.to_be_bytes(), b"x"]);
        put_end(&mut s, 2);
        assert!(decode_all(&s, 100).is_err());
        // Bad magic, unknown version, unknown kind, trailing data.
        assert!(decode_all(b"XXXX\x01", 10).is_err());
        assert_eq!(
            decode_all(b"RSBF\x09", 10).err(),
            Some(BulkError::UnsupportedVersion(9))
        );
        let mut s = Vec::new();
        put_header(&mut s);
        put_record(&mut s, Kind::End, &[&0u64.to_be_bytes()]);
        let mut bad_kind = s.clone();
        bad_kind[5] = 0x42;
        assert!(decode_all(&bad_kind, 100).is_err());
        s.push(0);
        assert!(decode_all(&s, 100).is_err());
        // An ITEM whose aad length exceeds the body.
        assert!(split_item(&Bytes::from_static(&[0, 0, 0, 9, 1])).is_err());
    }

    /// Stable stand-in for the cargo-fuzz target: deterministic random inputs and mutations of
    /// a valid stream; no panic, bounded buffering, and a mutated stream never parses cleanly
    /// with the same records.
    #[test]
    fn random_inputs_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = sample();
        for round in 0..20_000 {
            let mut data: Vec<u8> = if round % 2 == 0 {
                let n = (next() % 64) as usize;
                let mut d = b"RSBF\x01".to_vec();
                d.extend((0..n).map(|_| next() as u8));
                d
            } else {
                valid.clone()
            };
            let flips = 1 + next() % 3;
            for _ in 0..flips {
                let i = (next() as usize) % data.len();
                data[i] ^= 1 << (next() % 8);
            }
            if round % 3 == 0 {
                data.truncate((next() as usize) % (data.len() + 1));
            }
            let step = 1 + (next() % 9) as usize;
            let r = decode_all(&data, step);
            if round % 2 == 1 && data != valid {
                if let Ok(frames) = r {
                    let orig = decode_all(&valid, 100).unwrap();
                    assert_ne!(frames, orig, "a mutated stream decoded to the same records");
                }
            }
        }
    }
}

//! Checkpoints in the C2SP `tlog-checkpoint` form (<https://c2sp.org/tlog-checkpoint>):
//!
//! ```text
//! rootseal/<token serial>/<root id>
//! <tree size>
//! <base64 root hash>
//! time <RFC 3339 UTC>
//! prev <base64 SHA-256 of the previous checkpoint's text>
//! ```
//!
//! signed as a note by the token's `rootseal-audit` Ed25519 key. `prev` is absent in a log's first
//! checkpoint. The log holds each checkpoint as a line `{"checkpoint":"<note>","v":1}` right
//! after the record that ends its tree.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::merkle::Hash;
use crate::note::{Note, NoteError};

/// The origin prefix of every rootseal checkpoint.
pub const ORIGIN_PREFIX: &str = "rootseal/";

/// A checkpoint's signed body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// `rootseal/<token serial>/<root id>`.
    pub origin: String,
    /// The number of records in the tree.
    pub size: u64,
    /// The tree's root hash.
    pub root: Hash,
    /// When it was made (RFC 3339, UTC).
    pub time: String,
    /// SHA-256 of the previous checkpoint's text, if there was one.
    pub prev: Option<Hash>,
}

impl Checkpoint {
    /// The note text (ending in a newline).
    pub fn text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            B64.encode(self.root),
            self.time
        );
        if let Some(p) = &self.prev {
            s.push_str(&format!("prev {}\n", B64.encode(p)));
        }
        s
    }

    /// Parses a note's text.
    ///
    /// # Errors
    /// [`NoteError::Malformed`] when the text is not a rootseal checkpoint.
    pub fn parse_text(text: &str) -> Result<Checkpoint, NoteError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(NoteError::Malformed("checkpoint does not end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if !origin.starts_with(ORIGIN_PREFIX) {
            return Err(NoteError::Malformed("origin is not rootseal/…"));
        }
        let size = lines
            .next()
            .and_then(|l| {
                (!l.is_empty() && (l == "0" || !l.starts_with('0')))
                    .then(|| l.parse::<u64>().ok())
                    .flatten()
            })
            .ok_or(NoteError::Malformed("bad tree size line"))?;
        let root = lines
            .next()
            .and_then(hash_b64)
            .ok_or(NoteError::Malformed("bad root hash line"))?;
        let (mut time, mut prev) = (None, None);
        for l in lines {
            match l.split_once(' ') {
                Some(("time", t)) if time.is_none() => time = Some(t.to_owned()),
                Some(("prev", p)) if prev.is_none() => {
                    prev = Some(hash_b64(p).ok_or(NoteError::Malformed("bad prev line"))?);
                }
                // Unknown extension lines are allowed by tlog-checkpoint; rootseal writes none.
                _ if !l.is_empty() => {}
                _ => return Err(NoteError::Malformed("empty extension line")),
            }
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            time: time.ok_or(NoteError::Malformed("no time line"))?,
            prev,
        })
    }

    /// Parses a signed checkpoint note.
    ///
    /// # Errors
    /// [`NoteError::Malformed`].
    pub fn parse_note(s: &str) -> Result<(Checkpoint, Note), NoteError> {
        let note = Note::parse(s)?;
        Ok((Checkpoint::parse_text(&note.text)?, note))
    }
}

fn hash_b64(s: &str) -> Option<Hash> {
    let v = B64.decode(s).ok()?;
    <[u8; 32]>::try_from(v.as_slice()).ok()
}

/// SHA-256 of a checkpoint's text (what the next checkpoint's `prev` line holds).
pub fn text_hash(text: &str) -> Hash {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = Checkpoint {
            origin: "rootseal/abc/0011".into(),
            size: 12,
            root: [3u8; 32],
            time: "2026-01-02T03:04:05.678Z".into(),
            prev: Some([4u8; 32]),
        };
        assert_eq!(Checkpoint::parse_text(&c.text()), Ok(c.clone()));
        let first = Checkpoint { prev: None, ..c };
        assert_eq!(Checkpoint::parse_text(&first.text()), Ok(first));
        assert!(Checkpoint::parse_text("other/x\n1\nAAAA\n").is_err());
        assert!(Checkpoint::parse_text("rootseal/x\n01\nAAAA\ntime t\n").is_err());
    }
}

//! Audit records: one canonical JSON object per line,
//! `{"event":{…},"prev":"<base64>","seq":N,"time":"…","v":1}` (RFC 8785: keys sorted, so `v`
//! comes last on the line), hashed as RFC 6962 leaves (`SHA-256(0x00 ‖ line)`).
//!
//! `prev` is the leaf hash of record `seq - 1` (absent in record 0): it lets the verifier name the
//! exact record that was changed, where the signed tree alone would say only "one of the records
//! since the last checkpoint".

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::merkle::Hash;

/// The record format version this build writes and reads.
pub const RECORD_VERSION: u64 = 1;

/// What happened: a JSON object with a `type` (`"transit.encrypt"`, `"key.create"`, …) and the
/// event's fields. Never a plaintext, a key, a token or a PIN: callers put names, ids and counts
/// here, nothing else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event(pub Map<String, Value>);

impl Event {
    /// An event of `kind`.
    pub fn new(kind: &str) -> Event {
        let mut m = Map::new();
        m.insert("type".into(), Value::String(kind.to_owned()));
        Event(m)
    }

    /// Adds a field.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    /// Sets a field.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(key.to_owned(), value.into());
    }

    /// The event's type.
    pub fn kind(&self) -> &str {
        self.0.get("type").and_then(Value::as_str).unwrap_or("")
    }
}

/// Serialises record `seq` as its canonical line (without the newline).
///
/// # Errors
/// A value that RFC 8785 cannot represent (a non-finite number).
pub fn encode(seq: u64, time: &str, prev: Option<&Hash>, event: &Event) -> Result<Vec<u8>, String> {
    let mut m = Map::new();
    m.insert("v".into(), RECORD_VERSION.into());
    m.insert("seq".into(), seq.into());
    m.insert("time".into(), time.into());
    if let Some(p) = prev {
        m.insert("prev".into(), B64.encode(p).into());
    }
    m.insert("event".into(), Value::Object(event.0.clone()));
    serde_json_canonicalizer::to_vec(&Value::Object(m)).map_err(|e| e.to_string())
}

/// Serialises a checkpoint line `{"checkpoint":"<note>","v":1}`.
///
/// # Errors
/// Never in practice (a string and a number).
pub fn encode_checkpoint(note: &str) -> Result<Vec<u8>, String> {
    let mut m = Map::new();
    m.insert("v".into(), RECORD_VERSION.into());
    m.insert("checkpoint".into(), note.into());
    serde_json_canonicalizer::to_vec(&Value::Object(m)).map_err(|e| e.to_string())
}

/// One line of the log, as the verifier and the writer's recovery read it.
#[derive(Debug)]
pub enum Line {
    /// A record.
    Record {
        /// Its format version.
        v: u64,
        /// Its sequence number.
        seq: u64,
        /// The leaf hash of the record before it, as it says.
        prev: Option<Hash>,
    },
    /// A checkpoint note.
    Checkpoint {
        /// Its format version.
        v: u64,
        /// The signed note.
        note: String,
    },
}

#[derive(Deserialize)]
struct Peek {
    v: u64,
    seq: Option<u64>,
    prev: Option<String>,
    checkpoint: Option<String>,
}

/// Reads a line's framing (version, seq, prev or checkpoint), skipping the event.
///
/// # Errors
/// A message when the line is not a record or a checkpoint.
pub fn parse_line(line: &[u8]) -> Result<Line, String> {
    let p: Peek = serde_json::from_slice(line).map_err(|e| format!("not a log line: {e}"))?;
    match (p.seq, p.checkpoint) {
        (Some(seq), None) => {
            let prev = match p.prev {
                None => None,
                Some(s) => Some(
                    B64.decode(s)
                        .ok()
                        .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
                        .ok_or("prev is not a base64 SHA-256")?,
                ),
            };
            Ok(Line::Record { v: p.v, seq, prev })
        }
        (None, Some(note)) => Ok(Line::Checkpoint { v: p.v, note }),
        _ => Err("neither a record nor a checkpoint".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_canonical_and_parse_back() {
        let e = Event::new("transit.encrypt")
            .with("key", "k1")
            .with("items", 3);
        let line = encode(7, "2026-01-01T00:00:00.000Z", Some(&[1u8; 32]), &e)
            .unwrap_or_else(|e| panic!("{e}"));
        let s = String::from_utf8(line.clone()).unwrap_or_default();
        assert!(
            s.starts_with(r#"{"event":{"items":3,"key":"k1","type":"transit.encrypt"},"prev":""#),
            "{s}"
        );
        assert!(
            s.ends_with(r#","seq":7,"time":"2026-01-01T00:00:00.000Z","v":1}"#),
            "{s}"
        );
        match parse_line(&line) {
            Ok(Line::Record { v: 1, seq: 7, prev }) => assert_eq!(prev, Some([1u8; 32])),
            other => panic!("{other:?}"),
        }
        let cp = encode_checkpoint("a\n\nb\n").unwrap_or_default();
        assert!(matches!(parse_line(&cp), Ok(Line::Checkpoint { v: 1, .. })));
        assert!(parse_line(b"{\"v\":1}").is_err());
    }
}

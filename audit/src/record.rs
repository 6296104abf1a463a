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
    encode_owned(seq, time, prev, event.clone())
}

/// [`encode`], taking the event (no copy of its fields).
///
/// # Errors
/// As [`encode`].
pub fn encode_owned(
    seq: u64,
    time: &str,
    prev: Option<&Hash>,
    event: Event,
) -> Result<Vec<u8>, String> {
    let ev = encode_event(&event)?;
    let mut out = Vec::with_capacity(ev.len() + 128);
    splice(&mut out, seq, time, prev, &ev);
    Ok(out)
}

/// The canonical (RFC 8785) bytes of `event` as a JSON object: what [`splice`] puts in a
/// record's `event` field. Callers encode their event before handing it to the writer, so the
/// writer thread only splices bytes (and the event's allocations are freed where they were made).
///
/// # Errors
/// A value that RFC 8785 cannot represent (a non-finite number).
pub fn encode_event(event: &Event) -> Result<Vec<u8>, String> {
    if event.0.values().any(needs_general) {
        let v = Value::Object(event.0.clone());
        serde_json_canonicalizer::to_vec(&v).map_err(|e| e.to_string())
    } else {
        // Without floats or integers beyond 2^53, serde_json's output of its (sorted) map is the
        // RFC 8785 form: sorted keys, no whitespace, the same string escapes, integers as
        // written; 25 times faster than the general canonicalizer (`fast_path_is_canonical`
        // holds it to that).
        serde_json::to_vec(&event.0).map_err(|e| e.to_string())
    }
}

/// Whether `bytes` are the canonical (RFC 8785) form of a JSON object: what
/// [`crate::AuditLog::record_encoded`] requires of its caller (checked there in debug builds).
pub fn is_canonical_object(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => {
            serde_json_canonicalizer::to_vec(&v).is_ok_and(|c| c.as_slice() == bytes)
        }
        _ => false,
    }
}

/// Appends record `seq`'s canonical line (without the newline) to `out`, around `event`, the
/// event's canonical bytes ([`encode_event`]). The line is the RFC 8785 form of
/// `{"event":…,"prev":…,"seq":N,"time":…,"v":1}`: its keys in that (sorted) order, `seq` and `v`
/// integers, `prev` base64 and `time` RFC 3339 (neither needs an escape), and JCS is
/// compositional, so the event's canonical bytes are the canonical bytes of the field
/// (`splice_is_canonical` holds it to the general canonicalizer).
pub fn splice(out: &mut Vec<u8>, seq: u64, time: &str, prev: Option<&Hash>, event: &[u8]) {
    use std::io::Write as _;
    out.extend_from_slice(b"{\"event\":");
    out.extend_from_slice(event);
    if let Some(p) = prev {
        out.extend_from_slice(b",\"prev\":\"");
        let mut b = [0u8; 44];
        let n = B64.encode_slice(p, &mut b).unwrap_or(0);
        out.extend_from_slice(&b[..n]);
        out.push(b'"');
    }
    let _ = write!(
        out,
        ",\"seq\":{seq},\"time\":\"{time}\",\"v\":{RECORD_VERSION}}}"
    );
}

/// Whether `v` holds a number RFC 8785 writes differently from serde_json: a float, or an
/// integer an IEEE 754 double cannot hold exactly (JCS numbers are doubles).
fn needs_general(v: &Value) -> bool {
    const EXACT: u64 = 1 << 53;
    match v {
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u > EXACT,
            (None, Some(i)) => i.unsigned_abs() > EXACT,
            _ => true,
        },
        Value::Array(a) => a.iter().any(needs_general),
        Value::Object(o) => o.values().any(needs_general),
        _ => false,
    }
}

/// The length of a log's content: up to its first zero byte (the writer's padding, see
/// [`crate::PREALLOCATE`], or the never-acknowledged tail of a crash; a record is JSON and never
/// holds a zero byte). Also whether anything but zeros follows (a crash left part of a group
/// whose sync never finished past the padding's start).
pub fn content_len(data: &[u8]) -> (usize, bool) {
    match data.iter().position(|&b| b == 0) {
        None => (data.len(), false),
        Some(end) => (end, data[end..].iter().any(|&b| b != 0)),
    }
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
    fn canonical_objects_are_told_apart() {
        assert!(is_canonical_object(br#"{"a":1,"b":[1,"x"],"type":"t"}"#));
        // Unsorted keys, whitespace, a float written as serde_json writes it, not an object,
        // not JSON: none is canonical.
        assert!(!is_canonical_object(br#"{"b":1,"a":1}"#));
        assert!(!is_canonical_object(br#"{"a": 1}"#));
        assert!(!is_canonical_object(br#"{"a":1.0}"#));
        assert!(!is_canonical_object(br#"[1]"#));
        assert!(!is_canonical_object(b"{"));
    }

    #[test]
    fn fast_path_is_canonical() {
        let e = Event::new("x")
            .with("zeta", "é \u{1F600} \"q\" \\ / \n\t\u{7}\u{1f}")
            .with(
                "alpha",
                serde_json::json!({"b": [1, -2, 1u64 << 53, true, null], "a": {"y": "", "x": 0}}),
            )
            .with("Mixed", "case")
            .with("_", -(1i64 << 53));
        let fast = encode(3, "t", Some(&[9u8; 32]), &e).unwrap_or_default();
        let mut m = Map::new();
        m.insert("v".into(), RECORD_VERSION.into());
        m.insert("seq".into(), 3.into());
        m.insert("time".into(), "t".into());
        m.insert("prev".into(), B64.encode([9u8; 32]).into());
        m.insert("event".into(), Value::Object(e.0.clone()));
        let jcs = serde_json_canonicalizer::to_vec(&Value::Object(m)).unwrap_or_default();
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&jcs)
        );
        // A float, or an integer beyond 2^53, takes the general path (JCS numbers are doubles).
        let f = Event::new("x").with("p", 1.5e300).with("q", u64::MAX);
        let line =
            String::from_utf8(encode(0, "t", None, &f).unwrap_or_default()).unwrap_or_default();
        assert!(
            line.contains("1.5e+300") && line.contains("18446744073709552000"),
            "{line}"
        );
    }

    /// The spliced line is byte for byte the general canonicalizer's output of the whole record,
    /// with and without `prev`, with an event on either encoding path.
    #[test]
    fn splice_is_canonical() {
        let events = [
            Event::new("transit.encrypt")
                .with("key", "k\u{e9}\"/\\")
                .with("items", 1)
                .with("client", serde_json::Value::Null)
                .with("versions", vec![1u64, 2]),
            Event::new("x").with("p", 1.5e300).with("q", u64::MAX),
            Event::new("audit.dropped"),
        ];
        for (i, e) in events.iter().enumerate() {
            for prev in [None, Some([0xfbu8; 32])] {
                let seq = (i as u64) * 1_000_003;
                let time = "2026-12-03T09:00:00.123Z";
                let mut m = Map::new();
                m.insert("v".into(), RECORD_VERSION.into());
                m.insert("seq".into(), seq.into());
                m.insert("time".into(), time.into());
                if let Some(p) = prev {
                    m.insert("prev".into(), B64.encode(p).into());
                }
                m.insert("event".into(), Value::Object(e.0.clone()));
                let jcs = serde_json_canonicalizer::to_vec(&Value::Object(m)).unwrap_or_default();
                let ev = encode_event(e).unwrap_or_default();
                let mut line = Vec::new();
                splice(&mut line, seq, time, prev.as_ref(), &ev);
                assert_eq!(
                    String::from_utf8_lossy(&line),
                    String::from_utf8_lossy(&jcs)
                );
            }
        }
    }

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

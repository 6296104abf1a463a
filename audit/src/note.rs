//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 signatures, and the witness
//! cosignature of <https://c2sp.org/tlog-cosignature> (`audit cosign`).
//!
//! A note is a text ending in a newline, a blank line, then signature lines
//! `— <key name> <base64(key id ‖ signature)>`. The key id of an Ed25519 key is the first four
//! bytes of `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`; a verifier key is written
//! `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// The signature type byte of plain Ed25519 note signatures.
pub const SIG_ED25519: u8 = 0x01;
/// The signature type byte of timestamped Ed25519 witness cosignatures (tlog-cosignature).
pub const SIG_COSIGNATURE: u8 = 0x04;

/// The em dash that starts a signature line.
const DASH: &str = "\u{2014} ";

/// Why a note could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The text does not have the shape of a signed note.
    #[error("not a signed note: {0}")]
    Malformed(&'static str),
}

/// One signature line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The four-byte key id.
    pub key_id: [u8; 4],
    /// The signature bytes after the key id.
    pub sig: Vec<u8>,
}

impl NoteSignature {
    /// The line, with its newline.
    pub fn line(&self) -> String {
        let mut b = self.key_id.to_vec();
        b.extend_from_slice(&self.sig);
        format!("{DASH}{} {}\n", self.name, B64.encode(b))
    }
}

/// A signed note: its text (with the final newline) and its signature lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in a newline.
    pub text: String,
    /// The signature lines, in order.
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    /// Parses a signed note.
    ///
    /// # Errors
    /// [`NoteError::Malformed`].
    pub fn parse(s: &str) -> Result<Note, NoteError> {
        if s.bytes().any(|b| b < 0x20 && b != b'\n') {
            return Err(NoteError::Malformed("control character"));
        }
        let split = s
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let text = &s[..=split];
        let sigs = &s[split + 2..];
        if !sigs.ends_with('\n') {
            return Err(NoteError::Malformed("signatures do not end in a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            let rest = line.strip_prefix(DASH).ok_or(NoteError::Malformed(
                "a signature line does not start with an em dash",
            ))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(NoteError::Malformed("a signature line has no signature"))?;
            if name.is_empty() || name.contains('+') || b64.contains(' ') {
                return Err(NoteError::Malformed("bad signature line"));
            }
            let raw = B64
                .decode(b64)
                .map_err(|_| NoteError::Malformed("signature is not base64"))?;
            if raw.len() < 5 {
                return Err(NoteError::Malformed("signature too short"));
            }
            let mut key_id = [0u8; 4];
            key_id.copy_from_slice(&raw[..4]);
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id,
                sig: raw[4..].to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err(NoteError::Malformed("no signature"));
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The note as text: the signed text, a blank line, the signature lines.
    pub fn render(&self) -> String {
        let mut s = self.text.clone();
        s.push('\n');
        for sig in &self.signatures {
            s.push_str(&sig.line());
        }
        s
    }
}

/// The key id of `public_key` (32 bytes) under `name` for signature type `sig_type`.
pub fn key_id(name: &str, sig_type: u8, public_key: &[u8]) -> [u8; 4] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[sig_type]);
    ctx.update(public_key);
    let d = ctx.finish();
    let mut out = [0u8; 4];
    out.copy_from_slice(&d.as_ref()[..4]);
    out
}

/// The verifier key string `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
pub fn verifier_key(name: &str, public_key: &[u8]) -> String {
    let id = key_id(name, SIG_ED25519, public_key);
    let mut k = vec![SIG_ED25519];
    k.extend_from_slice(public_key);
    format!(
        "{name}+{}+{}",
        id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        B64.encode(k)
    )
}

/// Verifies an Ed25519 signature in software (aws-lc-rs).
pub fn ed25519_verify(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(msg, sig)
        .is_ok()
}

/// What a note's signatures say about one Ed25519 key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    /// A signature line of this key verifies.
    Valid,
    /// A line names this key (name and key id) but its signature does not verify.
    Invalid,
    /// No line is by this key.
    Absent,
}

/// Checks `note` for a plain Ed25519 signature by `public_key` under any name.
pub fn check_ed25519(note: &Note, public_key: &[u8]) -> KeyVerdict {
    let mut verdict = KeyVerdict::Absent;
    for s in &note.signatures {
        if s.key_id != key_id(&s.name, SIG_ED25519, public_key) {
            continue;
        }
        if s.sig.len() == 64 && ed25519_verify(public_key, note.text.as_bytes(), &s.sig) {
            return KeyVerdict::Valid;
        }
        verdict = KeyVerdict::Invalid;
    }
    verdict
}

/// The message a tlog-cosignature/v1 witness signs for `checkpoint_text` at `timestamp`.
pub fn cosignature_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{checkpoint_text}").into_bytes()
}

/// A witness cosignature line's signature bytes: `timestamp (8, big endian) ‖ Ed25519 sig`.
pub fn cosignature(name: &str, public_key: &[u8], timestamp: u64, sig: &[u8]) -> NoteSignature {
    let mut b = timestamp.to_be_bytes().to_vec();
    b.extend_from_slice(sig);
    NoteSignature {
        name: name.to_owned(),
        key_id: key_id(name, SIG_COSIGNATURE, public_key),
        sig: b,
    }
}

/// Checks a witness cosignature by `public_key` on `note`.
pub fn check_cosignature(note: &Note, public_key: &[u8]) -> KeyVerdict {
    let mut verdict = KeyVerdict::Absent;
    for s in &note.signatures {
        if s.key_id != key_id(&s.name, SIG_COSIGNATURE, public_key) {
            continue;
        }
        if s.sig.len() == 72 {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&s.sig[..8]);
            let msg = cosignature_message(&note.text, u64::from_be_bytes(ts));
            if ed25519_verify(public_key, &msg, &s.sig[8..]) {
                return KeyVerdict::Valid;
            }
        }
        verdict = KeyVerdict::Invalid;
    }
    verdict
}

/// The PEM (`PUBLIC KEY`, SubjectPublicKeyInfo) of a 32-byte Ed25519 public key.
pub fn public_key_pem(public_key: &[u8]) -> String {
    // SPKI prefix for id-Ed25519 (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 } BIT STRING }.
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(public_key);
    let b64 = B64.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}

/// Reads a 32-byte Ed25519 public key from its PEM (`PUBLIC KEY`) or from a note verifier key.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_public_key(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if let Some(body) = s.strip_prefix("-----BEGIN PUBLIC KEY-----") {
        let body = body
            .split("-----END PUBLIC KEY-----")
            .next()
            .unwrap_or_default();
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = B64
            .decode(b64)
            .map_err(|_| "the PEM body is not base64".to_owned())?;
        let prefix = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        return match der.strip_prefix(&prefix[..]) {
            Some(k) if k.len() == 32 => {
                let mut out = [0u8; 32];
                out.copy_from_slice(k);
                Ok(out)
            }
            _ => Err("not an Ed25519 public key (SubjectPublicKeyInfo, RFC 8410)".to_owned()),
        };
    }
    let parts: Vec<&str> = s.split('+').collect();
    if let [name, id, key] = parts.as_slice() {
        let raw = B64
            .decode(key)
            .map_err(|_| "the verifier key is not base64".to_owned())?;
        if raw.len() == 33 && raw[0] == SIG_ED25519 {
            let mut out = [0u8; 32];
            out.copy_from_slice(&raw[1..]);
            let want: String = key_id(name, SIG_ED25519, &out)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if *id != want {
                return Err("the verifier key's id does not match its name and key".to_owned());
            }
            return Ok(out);
        }
        return Err("not an Ed25519 note verifier key".to_owned());
    }
    Err("expected a PEM PUBLIC KEY or a note verifier key".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c2sp_example_note_parses_and_renders_back() {
        let s = "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n\u{2014} quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n";
        // The spec's own example has an empty line inside its text: the split is at the last
        // blank line.
        let n = Note::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.signatures.len(), 1);
        assert_eq!(n.signatures[0].name, "quasimodo.example/salvatore");
        assert!(n.text.ends_with("sera.\n"));
        assert_eq!(n.render(), s);
    }

    #[test]
    fn pem_round_trip_and_verifier_key() {
        let k = [7u8; 32];
        assert_eq!(parse_public_key(&public_key_pem(&k)), Ok(k));
        let vk = verifier_key("rootseal-audit/abc", &k);
        assert_eq!(parse_public_key(&vk), Ok(k));
        let bad = vk.replacen("rootseal", "rootseaL", 1);
        assert!(parse_public_key(&bad).is_err());
    }
}

//! The wire form of a transit ciphertext: `vault:v<N>:<base64 of iv ‖ ct ‖ tag>`.
//!
//! Parsing is strict: exactly three `:`-separated parts, the literal prefix `vault`, a version
//! `v<N>` with decimal digits, no leading zero, `1 ≤ N ≤ u32::MAX`, and standard base64 with
//! padding. Anything else is the one opaque `invalid ciphertext`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_hsm::Sealed;

/// AES-GCM IV (12) plus tag (16): the shortest payload that can verify.
const MIN_PAYLOAD: usize = 28;

/// Formats a sealed value as `vault:v<version>:<base64>`.
pub fn format(sealed: &Sealed) -> String {
    let mut out = String::with_capacity(16 + sealed.bytes.len().div_ceil(3) * 4);
    out.push_str("vault:v");
    out.push_str(itoa_u32(sealed.version).as_str());
    out.push(':');
    B64.encode_string(&sealed.bytes, &mut out);
    out
}

fn itoa_u32(v: u32) -> String {
    v.to_string()
}

/// Why a ciphertext string was refused (logged at debug; the client sees one opaque message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not three `:`-separated parts, or the prefix is not `vault`.
    Shape,
    /// The version is not `v<N>` with `N` a canonical positive `u32`.
    Version,
    /// The payload is not standard padded base64, or too short to be AES-GCM output.
    Payload,
}

/// Parses `vault:v<N>:<base64>`.
///
/// # Errors
/// [`ParseError`] naming the part that is wrong.
pub fn parse(s: &str) -> Result<Sealed, ParseError> {
    let mut parts = s.split(':');
    let (Some(prefix), Some(version), Some(payload), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Shape);
    };
    if prefix != "vault" {
        return Err(ParseError::Shape);
    }
    let digits = version.strip_prefix('v').ok_or(ParseError::Version)?;
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Version);
    }
    let version: u32 = digits.parse().map_err(|_| ParseError::Version)?;
    let bytes = B64.decode(payload).map_err(|_| ParseError::Payload)?;
    if bytes.len() < MIN_PAYLOAD {
        return Err(ParseError::Payload);
    }
    Ok(Sealed { version, bytes })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sealed(v: u32, n: usize) -> Sealed {
        Sealed {
            version: v,
            bytes: (0..n).map(|i| (i * 7 % 256) as u8).collect(),
        }
    }

    #[test]
    fn round_trip() {
        for v in [1, 2, 9, 10, 4_000_000_000, u32::MAX] {
            for n in [28, 29, 30, 31, 60, 1000] {
                let s = sealed(v, n);
                let w = format(&s);
                assert_eq!(w.matches(':').count(), 2);
                assert_eq!(parse(&w).unwrap(), s);
            }
        }
    }

    #[test]
    fn rejects() {
        let good = format(&sealed(3, 40));
        let payload = good.rsplit(':').next().unwrap().to_owned();
        let cases = [
            (String::new(), ParseError::Shape),
            ("vault:v1".to_owned(), ParseError::Shape),
            (format!("vault:v1:{payload}:x"), ParseError::Shape),
            (format!("foo:v1:{payload}"), ParseError::Shape),
            (format!("vault:1:{payload}"), ParseError::Version),
            (format!("vault:v:{payload}"), ParseError::Version),
            (format!("vault:v0:{payload}"), ParseError::Version),
            (format!("vault:v01:{payload}"), ParseError::Version),
            (format!("vault:v+1:{payload}"), ParseError::Version),
            (format!("vault:v-1:{payload}"), ParseError::Version),
            (format!("vault:v4294967296:{payload}"), ParseError::Version),
            (format!("vault:v1a:{payload}"), ParseError::Version),
            ("vault:v1:not base64!!".to_owned(), ParseError::Payload),
            ("vault:v1:".to_owned(), ParseError::Payload),
            (
                format!("vault:v1:{}", payload.trim_end_matches('=')),
                ParseError::Payload,
            ),
            ("vault:v1:AAAA".to_owned(), ParseError::Payload),
        ];
        for (input, want) in cases {
            assert_eq!(parse(&input), Err(want), "{input:?}");
        }
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut x: u32 = 0x1234_5678;
        for len in 0..200 {
            let s: String = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    char::from(b"vault:v0123456789+/=AZaz\xff"[(x % 25) as usize])
                })
                .collect();
            let _ = parse(&s);
        }
    }
}

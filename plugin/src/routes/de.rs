//! Request bodies: JSON read from raw bytes (no `Content-Type` required), with the weak typing the
//! `bao`/`vault` CLI needs (`bao write … bits=512` sends `"512"`), and strict types elsewhere
//! (`{"plaintext":5}` is refused).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::error::ApiError;

/// Parses a request body. An empty body or `null` is `{}` (the CLI's `bao write -f` sends `null`).
///
/// # Errors
/// 400 with serde's message (which names the field and the problem, never the value).
pub fn parse_body<'a, T: Deserialize<'a> + Default>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // `bao write -f` sends `null`.
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "failed to parse JSON input: {}",
                strip_position(&e.to_string())
            ))
        })
}

/// serde_json's messages end in ` at line L column C`; keep them (they help), but cap the length.
fn strip_position(s: &str) -> String {
    s.chars().take(200).collect()
}

/// An unsigned integer given as a JSON number or a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WeakU64(pub u64);

impl<'de> Deserialize<'de> for WeakU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WeakU64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WeakU64, E> {
                Ok(WeakU64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WeakU64, E> {
                u64::try_from(v)
                    .map(WeakU64)
                    .map_err(|_| E::custom("expected a non-negative integer"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WeakU64, E> {
                if v.fract() == 0.0 && (0.0..9.0e15).contains(&v) {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Ok(WeakU64(v as u64))
                } else {
                    Err(E::custom("expected a non-negative integer"))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WeakU64, E> {
                let t = v.trim();
                if t.is_empty() {
                    return Ok(WeakU64(0));
                }
                t.parse()
                    .map(WeakU64)
                    .map_err(|_| E::custom("expected a non-negative integer"))
            }
        }
        d.deserialize_any(V)
    }
}

impl WeakU64 {
    /// As `u32`.
    ///
    /// # Errors
    /// 400 naming `field` when it does not fit.
    pub fn to_u32(self, field: &str) -> Result<u32, ApiError> {
        u32::try_from(self.0).map_err(|_| ApiError::bad_request(format!("{field} is out of range")))
    }
}

/// A boolean given as JSON `true`/`false` or as a string (`"true"`, `"1"`, …) as the CLI sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WeakBool(pub bool);

impl<'de> Deserialize<'de> for WeakBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WeakBool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<WeakBool, E> {
                Ok(WeakBool(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WeakBool, E> {
                match v {
                    0 => Ok(WeakBool(false)),
                    1 => Ok(WeakBool(true)),
                    _ => Err(E::custom("expected a boolean")),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WeakBool, E> {
                match v {
                    0 => Ok(WeakBool(false)),
                    1 => Ok(WeakBool(true)),
                    _ => Err(E::custom("expected a boolean")),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WeakBool, E> {
                match v.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "t" => Ok(WeakBool(true)),
                    "false" | "0" | "f" | "" => Ok(WeakBool(false)),
                    _ => Err(E::custom("expected a boolean")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration in seconds: a JSON number of seconds, or a string (`"3600"`, `"1h"`, `"90m"`,
/// `"1h30m"`, `"24h"`, `"45s"`) as Vault's `auto_rotate_period` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurationSecs(pub u64);

impl<'de> Deserialize<'de> for DurationSecs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationSecs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration (seconds or a string such as \"24h\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationSecs, E> {
                Ok(DurationSecs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationSecs, E> {
                u64::try_from(v)
                    .map(DurationSecs)
                    .map_err(|_| E::custom("duration may not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationSecs, E> {
                parse_duration(v)
                    .map(DurationSecs)
                    .ok_or_else(|| E::custom("invalid duration"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `"3600"`, `"1h30m"`, `"45s"`, `"2d"` into seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(d))?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(num.take()?.checked_mul(unit)?)?;
    }
    if num.is_some() {
        return None;
    }
    Some(total)
}

/// `batch_input`: a JSON array, or (lenient, for `bao write … batch_input=@file.json`) a string
/// holding a JSON array.
#[derive(Debug, Default)]
pub struct BatchInput<T>(pub Vec<T>);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for BatchInput<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            List(Vec<T>),
            Text(String),
        }
        match Raw::<T>::deserialize(d) {
            Ok(Raw::List(v)) => Ok(BatchInput(v)),
            Ok(Raw::Text(s)) => serde_json::from_str::<Vec<T>>(&s)
                .map(BatchInput)
                .map_err(|e| de::Error::custom(format!("failed to parse batch input: {e}"))),
            Err(_) => Err(de::Error::custom(
                "batch_input must be an array of objects with valid fields",
            )),
        }
    }
}

/// Base64 of secret bytes for a response: zeroized when dropped.
pub struct SecretB64(pub zeroize::Zeroizing<String>);

impl SecretB64 {
    /// Standard base64 (with padding) of `b`.
    pub fn encode(b: &[u8]) -> Self {
        use base64::Engine as _;
        let mut s = zeroize::Zeroizing::new(String::with_capacity(b.len().div_ceil(3) * 4));
        base64::engine::general_purpose::STANDARD.encode_string(b, &mut s);
        SecretB64(s)
    }
}

impl serde::Serialize for SecretB64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default, Debug)]
    struct T {
        n: Option<WeakU64>,
        b: Option<WeakBool>,
        d: Option<DurationSecs>,
    }

    #[test]
    fn weak_types() {
        let t: T = parse_body(br#"{"n":"512","b":"true","d":"1h30m"}"#).unwrap();
        assert_eq!(t.n, Some(WeakU64(512)));
        assert_eq!(t.b, Some(WeakBool(true)));
        assert_eq!(t.d, Some(DurationSecs(5400)));
        let t: T = parse_body(br#"{"n":7,"b":false,"d":3600}"#).unwrap();
        assert_eq!(
            (t.n, t.b, t.d),
            (
                Some(WeakU64(7)),
                Some(WeakBool(false)),
                Some(DurationSecs(3600))
            )
        );
        assert!(parse_body::<T>(br#"{"n":"x"}"#).is_err());
        assert!(parse_body::<T>(br#"{"n":-1}"#).is_err());
        assert!(parse_body::<T>(br#"{"b":"maybe"}"#).is_err());
        assert!(parse_body::<T>(br#"{"d":"5x"}"#).is_err());
        assert!(parse_body::<T>(b"{").is_err());
        let t: T = parse_body(b"").unwrap();
        assert!(t.n.is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Some(86_400));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("10"), Some(10));
        assert_eq!(parse_duration("1h5"), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
    }
}

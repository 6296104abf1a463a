//! PKCS#11 URIs (RFC 7512): how an operator names the token and key that sign their approvals,
//! e.g. `pkcs11:token=alice;object=rootseal-op?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/home/alice/pin`.
//!
//! A URI is `pkcs11:` then path attributes separated by `;`, then optionally `?` and query
//! attributes separated by `&`. Values are percent-encoded (RFC 7512 §2.3); an attribute may not
//! appear twice in the path, nor twice in the query (§2.3: "MUST NOT"). Unknown (vendor)
//! attributes are kept and never interpreted.
//!
//! rootseal reads `token`, `serial`, `object` from the path and `module-path`, `pin-source` from
//! the query. `pin-value` is refused: a PIN on a command line is visible to every user of the
//! machine (`ps`), so the PIN comes from `pin-source=file:…` only.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Why a string is not an acceptable PKCS#11 URI. Never contains a PIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// It does not start with `pkcs11:`.
    #[error("a PKCS#11 URI starts with \"pkcs11:\"")]
    Scheme,
    /// An attribute has no `=`, or an empty name.
    #[error("PKCS#11 URI attribute {0:?} is not NAME=VALUE")]
    Attribute(String),
    /// A `%` escape is not two hex digits.
    #[error("PKCS#11 URI attribute {0:?} has a bad %-escape")]
    Escape(String),
    /// An attribute appears twice.
    #[error("PKCS#11 URI attribute {0:?} appears twice")]
    Duplicate(String),
    /// A value rootseal reads as text is not UTF-8.
    #[error("PKCS#11 URI attribute {0:?} is not UTF-8 text")]
    NotText(String),
    /// `pin-value` (a PIN on the command line) is refused.
    #[error("PKCS#11 URI: pin-value is refused (a PIN on a command line is visible to every user of the machine); use pin-source=file:PATH")]
    PinValue,
    /// `pin-source` is not `file:PATH`.
    #[error("PKCS#11 URI: pin-source must be file:PATH")]
    PinSource,
}

/// A parsed PKCS#11 URI. Attribute values are the decoded bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    path: BTreeMap<String, Vec<u8>>,
    query: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for Pkcs11Uri {
    /// Prints the attribute names and the text values, never a PIN (there is none: `pin-value`
    /// is refused at parse time).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |m: &BTreeMap<String, Vec<u8>>| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
                .collect::<Vec<_>>()
                .join(";")
        };
        write!(f, "Pkcs11Uri({}?{})", show(&self.path), show(&self.query))
    }
}

fn decode(raw: &str) -> Result<Vec<u8>, UriError> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| UriError::Escape(raw.to_owned()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

fn parse_attrs(part: &str, sep: char) -> Result<BTreeMap<String, Vec<u8>>, UriError> {
    let mut out = BTreeMap::new();
    for a in part.split(sep).filter(|a| !a.is_empty()) {
        let (k, v) = a
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| UriError::Attribute(a.to_owned()))?;
        let k = String::from_utf8(decode(k)?).map_err(|_| UriError::NotText(k.to_owned()))?;
        let v = decode(v)?;
        if out.insert(k.clone(), v).is_some() {
            return Err(UriError::Duplicate(k));
        }
    }
    Ok(out)
}

impl Pkcs11Uri {
    /// Parses `s`.
    ///
    /// # Errors
    /// [`UriError`].
    pub fn parse(s: &str) -> Result<Pkcs11Uri, UriError> {
        let rest = s
            .strip_prefix("pkcs11:")
            .or_else(|| {
                s.get(..7)
                    .filter(|p| p.eq_ignore_ascii_case("pkcs11:"))
                    .and_then(|_| s.get(7..))
            })
            .ok_or(UriError::Scheme)?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let uri = Pkcs11Uri {
            path: parse_attrs(path, ';')?,
            query: parse_attrs(query, '&')?,
        };
        if uri.query.contains_key("pin-value") || uri.path.contains_key("pin-value") {
            return Err(UriError::PinValue);
        }
        if let Some(src) = uri.query.get("pin-source") {
            let src = std::str::from_utf8(src).map_err(|_| UriError::PinSource)?;
            if !src.starts_with("file:") || src.len() == 5 {
                return Err(UriError::PinSource);
            }
        }
        Ok(uri)
    }

    /// A path attribute's decoded bytes (`token`, `object`, `id`, `serial`, …).
    pub fn path_attr(&self, name: &str) -> Option<&[u8]> {
        self.path.get(name).map(Vec::as_slice)
    }

    /// A query attribute's decoded bytes (`module-path`, `pin-source`, …).
    pub fn query_attr(&self, name: &str) -> Option<&[u8]> {
        self.query.get(name).map(Vec::as_slice)
    }

    fn text<'a>(v: Option<&'a [u8]>, name: &str) -> Result<Option<&'a str>, UriError> {
        v.map(|b| std::str::from_utf8(b).map_err(|_| UriError::NotText(name.to_owned())))
            .transpose()
    }

    /// The token label (`token=`).
    ///
    /// # Errors
    /// [`UriError::NotText`].
    pub fn token(&self) -> Result<Option<&str>, UriError> {
        Self::text(self.path_attr("token"), "token")
    }

    /// The token serial number (`serial=`).
    ///
    /// # Errors
    /// [`UriError::NotText`].
    pub fn serial(&self) -> Result<Option<&str>, UriError> {
        Self::text(self.path_attr("serial"), "serial")
    }

    /// The object label (`object=`).
    ///
    /// # Errors
    /// [`UriError::NotText`].
    pub fn object(&self) -> Result<Option<&str>, UriError> {
        Self::text(self.path_attr("object"), "object")
    }

    /// The module's path (`module-path=`).
    ///
    /// # Errors
    /// [`UriError::NotText`].
    pub fn module_path(&self) -> Result<Option<PathBuf>, UriError> {
        Ok(Self::text(self.query_attr("module-path"), "module-path")?.map(PathBuf::from))
    }

    /// The file `pin-source=file:PATH` names (`file:///abs` and `file:/abs` both accepted).
    ///
    /// # Errors
    /// [`UriError::PinSource`].
    pub fn pin_file(&self) -> Result<Option<PathBuf>, UriError> {
        let Some(src) = Self::text(self.query_attr("pin-source"), "pin-source")? else {
            return Ok(None);
        };
        let p = src.strip_prefix("file:").ok_or(UriError::PinSource)?;
        let p = p.strip_prefix("//").unwrap_or(p);
        if p.is_empty() {
            return Err(UriError::PinSource);
        }
        Ok(Some(PathBuf::from(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pkcs11Uri {
        match Pkcs11Uri::parse(s) {
            Ok(u) => u,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    /// Every example URI of RFC 7512 §3 parses, with its attributes decoded (the one with
    /// `pin-value` is refused by design).
    #[test]
    fn rfc7512_examples() {
        let u = p("pkcs11:");
        assert_eq!(u.token(), Ok(None));
        let u = p("pkcs11:object=my-pubkey;type=public");
        assert_eq!(u.object(), Ok(Some("my-pubkey")));
        assert_eq!(u.path_attr("type"), Some(&b"public"[..]));
        let u = p("pkcs11:object=my-key;type=private?pin-source=file:/etc/token");
        assert_eq!(u.pin_file(), Ok(Some(PathBuf::from("/etc/token"))));
        let u = p("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;\
                   manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;\
                   id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin");
        assert_eq!(u.token(), Ok(Some("The Software PKCS#11 Softtoken")));
        assert_eq!(u.path_attr("manufacturer"), Some(&b"Snake Oil, Inc."[..]));
        assert_eq!(
            u.path_attr("id"),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        assert_eq!(u.serial(), Ok(Some("")));
        let u = p("pkcs11:object=my-sign-key;type=private?module-name=mypkcs11");
        assert_eq!(u.query_attr("module-name"), Some(&b"mypkcs11"[..]));
        let u = p("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1");
        assert_eq!(
            u.module_path(),
            Ok(Some(PathBuf::from("/mnt/libmypkcs11.so.1")))
        );
        assert_eq!(
            Pkcs11Uri::parse(
                "pkcs11:token=Software%20PKCS%2311%20softtoken;\
                 manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin"
            ),
            Err(UriError::PinValue)
        );
        let u = p("pkcs11:slot-description=Sun%20Metaslot");
        assert_eq!(u.path_attr("slot-description"), Some(&b"Sun Metaslot"[..]));
        let u = p("pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;\
                   library-description=Soft%20Token%20Library;library-version=1.23");
        assert_eq!(u.path_attr("library-version"), Some(&b"1.23"[..]));
        let u = p(
            "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;\
                   id=%01%02%03%Ba%dd%Ca%fe%04%05%06",
        );
        assert_eq!(u.token(), Ok(Some("My token% created by Joe")));
        assert_eq!(
            u.path_attr("id"),
            Some(&[1, 2, 3, 0xba, 0xdd, 0xca, 0xfe, 4, 5, 6][..])
        );
        let u = p("pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;\
                   object=my-certificate;type=cert");
        assert_eq!(u.token(), Ok(Some("A name with a substring %;")));
        let u = p(
            "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;\
                   object=my-certificate;type=cert",
        );
        assert_eq!(u.token(), Ok(Some("Name with a small A with acute: á")));
        let u = p(
            "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a\
                   ?pin-source=file:/etc/token_pin&vendor-bbb=value-b",
        );
        assert_eq!(u.path_attr("vendor-aaa"), Some(&b"value-a"[..]));
        assert_eq!(u.query_attr("vendor-bbb"), Some(&b"value-b"[..]));
        assert_eq!(u.pin_file(), Ok(Some(PathBuf::from("/etc/token_pin"))));
    }

    #[test]
    fn refusals() {
        assert_eq!(Pkcs11Uri::parse("pkcs12:token=a"), Err(UriError::Scheme));
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:token=a;token=b"),
            Err(UriError::Duplicate("token".into()))
        );
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:token"),
            Err(UriError::Attribute("token".into()))
        );
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:token=%4"),
            Err(UriError::Escape("%4".into()))
        );
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:token=a?pin-source=|cat"),
            Err(UriError::PinSource)
        );
        assert_eq!(
            Pkcs11Uri::parse("pkcs11:token=%ff").map(|u| u.token().is_err()),
            Ok(true)
        );
        let u = p("pkcs11:token=a?pin-source=file:///abs/pin");
        assert_eq!(u.pin_file(), Ok(Some(PathBuf::from("/abs/pin"))));
    }
}

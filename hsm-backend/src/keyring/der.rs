//! The few DER structures signing keys need: SubjectPublicKeyInfo of each key type (built from
//! the attributes the token reports), ECDSA signatures (PKCS#11's `r ‖ s` to and from ASN.1) and
//! the PKCS#1 v1.5 `DigestInfo` prefix.

/// `id-ecPublicKey` (1.2.840.10045.2.1).
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// `id-Ed25519` (1.3.101.112).
const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// `rsaEncryption` (1.2.840.113549.1.1.1) with its NULL parameters.
const RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// `secp256r1` (1.2.840.10045.3.1.7).
pub(crate) const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `secp384r1` (1.3.132.0.34).
pub(crate) const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// `secp521r1` (1.3.132.0.35).
pub(crate) const P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];

/// A DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Reads one TLV with tag `tag` from the front of `buf`: (content, rest).
fn read_tlv(buf: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = buf.split_first()?;
    if t != tag {
        return None;
    }
    let (&l, rest) = rest.split_first()?;
    let (len, rest) = if l < 0x80 {
        (usize::from(l), rest)
    } else {
        let k = usize::from(l & 0x7f);
        if k == 0 || k > 4 {
            return None;
        }
        let (lb, rest) = rest.split_at_checked(k)?;
        if lb.first() == Some(&0) {
            return None;
        }
        let len = lb.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b));
        if len < 0x80 {
            return None;
        }
        (len, rest)
    };
    rest.split_at_checked(len)
}

/// The content of a DER OCTET STRING (how tokens report `CKA_EC_POINT`).
pub(crate) fn octet_string(der: &[u8]) -> Option<&[u8]> {
    match read_tlv(der, 0x04)? {
        (c, []) => Some(c),
        _ => None,
    }
}

fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(content.len() + 1);
    c.push(0);
    c.extend_from_slice(content);
    tlv(0x03, &c)
}

/// A non-negative DER INTEGER from big-endian bytes.
fn integer(be: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = {
        let i = be.iter().position(|b| *b != 0).unwrap_or(be.len());
        &be[i..]
    };
    let mut c = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        c.push(0);
    }
    c.extend_from_slice(trimmed);
    tlv(0x02, &c)
}

/// SubjectPublicKeyInfo of an EC key on `curve` (DER OID) with uncompressed `point`.
pub(crate) fn spki_ec(curve: &[u8], point: &[u8]) -> Vec<u8> {
    let alg = tlv(0x30, &[EC_PUBLIC_KEY, curve].concat());
    tlv(0x30, &[alg, bit_string(point)].concat())
}

/// SubjectPublicKeyInfo of an Ed25519 key.
pub(crate) fn spki_ed25519(raw: &[u8]) -> Vec<u8> {
    let alg = tlv(0x30, ED25519);
    tlv(0x30, &[alg, bit_string(raw)].concat())
}

/// SubjectPublicKeyInfo of an RSA key (`n`, `e` big-endian).
pub(crate) fn spki_rsa(n: &[u8], e: &[u8]) -> Vec<u8> {
    let alg = tlv(0x30, RSA_ENCRYPTION);
    let key = tlv(0x30, &[integer(n), integer(e)].concat());
    tlv(0x30, &[alg, bit_string(&key)].concat())
}

/// The key inside a SubjectPublicKeyInfo (the BIT STRING's bytes).
#[cfg(test)]
pub(crate) fn spki_key(spki: &[u8]) -> Option<&[u8]> {
    let (seq, _) = read_tlv(spki, 0x30)?;
    let (_, rest) = read_tlv(seq, 0x30)?;
    let (bits, _) = read_tlv(rest, 0x03)?;
    bits.strip_prefix(&[0])
}

/// An ECDSA signature `r ‖ s` (PKCS#11) as ASN.1 `SEQUENCE { r INTEGER, s INTEGER }`.
pub(crate) fn ecdsa_to_asn1(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    tlv(0x30, &[integer(r), integer(s)].concat())
}

/// An ASN.1 ECDSA signature as `r ‖ s`, each `field` bytes; `None` when malformed.
pub(crate) fn ecdsa_from_asn1(der: &[u8], field: usize) -> Option<Vec<u8>> {
    let (seq, []) = read_tlv(der, 0x30)? else {
        return None;
    };
    let (r, rest) = read_tlv(seq, 0x02)?;
    let (s, []) = read_tlv(rest, 0x02)? else {
        return None;
    };
    let mut out = Vec::with_capacity(2 * field);
    for x in [r, s] {
        // Negative, or not minimal: not a DER ECDSA signature.
        if x.first().is_none_or(|b| b & 0x80 != 0) {
            return None;
        }
        let x = match x {
            [0, rest @ ..] if rest.first().is_some_and(|b| b & 0x80 != 0) => rest,
            [0, _, ..] => return None,
            x => x,
        };
        if x.len() > field {
            return None;
        }
        out.extend(std::iter::repeat_n(0u8, field - x.len()));
        out.extend_from_slice(x);
    }
    Some(out)
}

/// The PKCS#1 v1.5 `DigestInfo` prefix of a hash (RFC 8017 §9.2 note 1), by its OID's last
/// arc under 2.16.840.1.101.3.4.2 (SHA-2 and SHA-3), or SHA-1.
pub(crate) fn digest_info(prefix_of: DigestOid, digest: &[u8]) -> Vec<u8> {
    let oid = match prefix_of {
        DigestOid::Sha1 => vec![0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a],
        DigestOid::Nist(arc) => vec![
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, arc,
        ],
    };
    let alg = tlv(0x30, &[oid, vec![0x05, 0x00]].concat());
    tlv(0x30, &[alg, tlv(0x04, digest)].concat())
}

/// The OID of a digest in a `DigestInfo`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum DigestOid {
    /// 1.3.14.3.2.26.
    Sha1,
    /// 2.16.840.1.101.3.4.2.<arc>.
    Nist(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_round_trip_and_refusals() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80;
        raw[63] = 1;
        let der = ecdsa_to_asn1(&raw);
        assert_eq!(ecdsa_from_asn1(&der, 32).unwrap(), raw);
        assert!(ecdsa_from_asn1(&der[..der.len() - 1], 32).is_none());
        assert!(ecdsa_from_asn1(&der, 16).is_none());
        assert!(ecdsa_from_asn1(b"", 32).is_none());
    }

    #[test]
    fn digest_info_sha256_is_rfc8017() {
        let d = digest_info(DigestOid::Nist(1), &[0; 32]);
        assert_eq!(
            &d[..19],
            &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20
            ]
        );
    }

    #[test]
    fn spki_shapes() {
        let s = spki_ed25519(&[7; 32]);
        assert_eq!(s.len(), 44);
        assert_eq!(spki_key(&s).unwrap(), &[7; 32]);
        let r = spki_rsa(&[0xc0; 256], &[1, 0, 1]);
        assert!(spki_key(&r).is_some());
    }
}

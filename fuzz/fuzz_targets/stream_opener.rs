//! Fuzzes the object-stream reader two ways: arbitrary bytes (structure only), and a valid
//! stream under a fixed key that the input then cuts and flips. A modified stream must never
//! unseal cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootseal_bulk::{BatchCipher, StreamOpener, StreamSealer, MIN_CHUNK};
use zeroize::Zeroizing;

fn cipher() -> BatchCipher {
    BatchCipher::new("fuzz", 1, &[9u8; 60], &Zeroizing::new([7u8; 32])).expect("cipher")
}

/// As the HSM would: the key is bound to the header's version and wrapped bytes.
fn cipher_for(version: u32, wrapped: &[u8]) -> Option<BatchCipher> {
    BatchCipher::new("fuzz", version, wrapped, &Zeroizing::new([7u8; 32])).ok()
}

fn open(bytes: &[u8], step: usize) -> Result<Vec<u8>, ()> {
    let mut o = StreamOpener::new(b"");
    let mut out = Vec::new();
    let mut keyed = false;
    for p in bytes.chunks(step.max(1)) {
        o.push(p);
        if !keyed {
            match o.header() {
                Ok(Some(h)) => {
                    let (v, w) = (h.version, h.wrapped.clone());
                    o.set_cipher(cipher_for(v, &w).ok_or(())?);
                    keyed = true;
                }
                Ok(None) => continue,
                Err(_) => return Err(()),
            }
        }
        while o.next_chunk(&mut out).map_err(|_| ())?.is_some() {}
    }
    o.finish().map_err(|_| ())?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = open(rest, usize::from(mode >> 1) + 1);
        return;
    }
    // Valid stream of `rest`, then a cut at `cut` and a flip at `flip` chosen from the input.
    let (cut, flip, plain) = match rest {
        [a, b, c, d, p @ ..] => (
            u16::from_be_bytes([*a, *b]),
            u16::from_be_bytes([*c, *d]),
            p,
        ),
        _ => return,
    };
    let mut s = StreamSealer::new(cipher(), MIN_CHUNK, b"").expect("sealer");
    let mut sealed = Vec::new();
    s.header(&mut sealed);
    s.push(plain, &mut sealed).expect("push");
    s.finish(&mut sealed).expect("finish");
    assert_eq!(open(&sealed, 97).expect("valid stream"), plain);
    let mut m = sealed.clone();
    m.truncate(usize::from(cut) % (sealed.len() + 1));
    if let Some(b) = m.get_mut(usize::from(flip)) {
        *b ^= 0x80;
    }
    if m != sealed {
        assert!(open(&m, 61).is_err(), "a modified stream unsealed");
    }
});

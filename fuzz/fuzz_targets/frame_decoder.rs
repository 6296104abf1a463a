//! Fuzzes the binary frame decoder: arbitrary bytes, fed in pieces whose size the input picks
//! (copied with `push`, or zero-copy with `push_bytes`).
//! Must never panic, and never buffer more than it was given plus one bounded record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootseal_bulk::{split_error, split_item, FrameDecoder, Kind, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let (step, data) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => return,
    };
    // An odd step byte feeds pieces with the zero-copy `push_bytes`, an even one with `push`.
    let zero_copy = step % 2 == 1;
    let mut d = FrameDecoder::new();
    for piece in data.chunks(step) {
        if zero_copy {
            d.push_bytes(bytes::Bytes::copy_from_slice(piece));
        } else {
            d.push(piece);
        }
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.body.len() <= MAX_FRAME as usize);
                    match f.kind {
                        Kind::Item => drop(split_item(&f.body)),
                        Kind::Error => drop(split_error(&f.body)),
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(d.buffered() <= data.len());
    }
    let _ = d.finish();
});

//! Fuzzes the binary frame decoder: arbitrary bytes, fed in pieces whose size the input picks.
//! Must never panic, and never buffer more than it was given plus one bounded record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootseal::bulk::frame::{split_error, split_item, FrameDecoder, Kind, MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let (step, data) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => return,
    };
    let mut d = FrameDecoder::new();
    for piece in data.chunks(step) {
        d.push(piece);
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

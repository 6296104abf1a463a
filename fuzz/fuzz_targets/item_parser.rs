//! Fuzzes the sealed-item parsers (binary and `rsb1:` string forms).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootseal_bulk::{decode_item_string, parse_item};

fuzz_target!(|data: &[u8]| {
    let _ = parse_item(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let mut out = Vec::new();
        if decode_item_string(s, &mut out).is_ok() {
            let _ = parse_item(&out);
        }
    }
});

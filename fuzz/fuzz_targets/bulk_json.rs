//! Fuzzes the JSON bulk forms (`bulk/src/engine/json.rs`): a `bulk-unseal` body, whose items'
//! `rsb1:` headers are peeked from their base64 and whose batches are opened under a fixed key,
//! and a `bulk-seal` body, sealed under a fixed batch key. The first byte picks the form.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((m, body)) if m & 1 == 0 => rootseal_bulk::fuzzing::json_unseal(body),
        Some((_, body)) => rootseal_bulk::fuzzing::json_seal(body),
        None => {}
    }
});

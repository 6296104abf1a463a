//! Fuzzes the transit ciphertext string (`vault:v<N>:<base64>`, `plugin/src/routes/ciphertext.rs`)
//! as every decrypt, rewrap and datakey-decrypt request brings it. What parses must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rootseal::fuzzing::ciphertext(data);
});

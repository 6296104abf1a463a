//! Fuzzes the sealed-blob parser (`hsm-backend/src/blob.rs`): the bytes a key store hands back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rootseal_hsm::fuzzing::sealed_blob(data);
});

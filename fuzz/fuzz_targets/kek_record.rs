//! Fuzzes the KEK record parser (`hsm-backend/src/keyring/record.rs`, formats 1 to 3): a key
//! store's entry, before its MAC is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rootseal_hsm::fuzzing::kek_record(data);
});

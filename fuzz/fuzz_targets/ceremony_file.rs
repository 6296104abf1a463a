//! Fuzzes the governance parsers of files that pass from hand to hand or sit in the key store:
//! ceremony files, the operator registry, the quorum rules, the token store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootseal_governance::ceremony::CeremonyFile;
use rootseal_governance::quorum::QuorumRules;
use rootseal_governance::registry::Registry;
use rootseal_governance::tokens::TokenStore;

fuzz_target!(|data: &[u8]| {
    let _ = CeremonyFile::parse(data);
    let _ = Registry::parse(data);
    let _ = QuorumRules::parse(data);
    let _ = TokenStore::parse(data);
});

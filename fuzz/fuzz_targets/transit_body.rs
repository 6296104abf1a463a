//! Fuzzes the transit JSON bodies (`plugin/src/routes/transit/`): the first byte picks the route
//! (encrypt, decrypt, verify, sign, hmac, datakey, keys, config, config/keys, cache-config, trim,
//! import, random, hash), the rest is the body, decoded as that route does before any HSM work
//! (the weak typing the `bao` CLI needs, batch items, base64 fields, ciphertext and signature
//! strings, contexts).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&route, body)) = data.split_first() {
        rootseal::fuzzing::transit_body(route, body);
    }
});

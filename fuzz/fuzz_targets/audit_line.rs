//! Fuzzes the audit log's parsers as `rootseal audit verify` meets them: one line of the log, and
//! a checkpoint note (a witness copy, `--trusted-checkpoint`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootseal_audit::record::parse_line;
use rootseal_audit::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let _ = parse_line(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = Checkpoint::parse_note(s);
    }
});

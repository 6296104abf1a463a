//! The start-time clock check of `rootseal serve`: key lifecycle dates are enforced against the
//! system clock, so a clock earlier than what the audit log already recorded refuses to serve.

use std::path::Path;

/// Refuses to serve when the clock reads earlier than the last record of the audit log at
/// `audit_path` (every lifecycle date is read against this clock: a clock set back would
/// re-open versions past their protect-stop or deactivation). Both times are in the message. A
/// missing or empty log, or an unreadable last line (a torn tail the writer repairs), passes.
///
/// Audit times are fixed-width RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SS.mmmZ`), so they compare as
/// strings.
pub(super) fn check_clock(audit_path: &Path, now: &str) -> Result<(), String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    const TAIL: u64 = 64 * 1024;
    let Ok(mut f) = std::fs::File::open(audit_path) else {
        return Ok(());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(len.saturating_sub(TAIL))).is_err()
        || f.read_to_end(&mut buf).is_err()
    {
        return Ok(());
    }
    let last = buf
        .split(|b| *b == b'\n')
        .rev()
        .find_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .and_then(|v| v.get("time").and_then(|t| t.as_str()).map(str::to_owned));
    match last {
        Some(t) if now < t.as_str() => Err(format!(
            "the clock reads {now}, earlier than the last audit record ({t}) in {}: key \
             lifecycle dates (protect-stop, deactivation) are enforced against this clock, so \
             rootseal refuses to serve until it is corrected (check NTP)",
            audit_path.display()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_earlier_than_the_last_audit_record_refuses_with_both_times() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.log");
        assert!(
            check_clock(&p, "2026-01-01T00:00:00.000Z").is_ok(),
            "no log"
        );
        std::fs::write(
            &p,
            "{\"seq\":1,\"time\":\"2026-12-03T06:00:00.000Z\"}\n{\"seq\":2,\"time\":\"2026-12-03T07:00:00.000Z\"}\n{\"torn",
        )
        .unwrap();
        let e = check_clock(&p, "2026-12-03T06:59:59.999Z").unwrap_err();
        assert!(e.contains("2026-12-03T06:59:59.999Z"), "{e}");
        assert!(e.contains("2026-12-03T07:00:00.000Z"), "{e}");
        assert!(check_clock(&p, "2026-12-03T07:00:00.000Z").is_ok());
        assert!(check_clock(&p, "2027-01-01T00:00:00.000Z").is_ok());
    }
}

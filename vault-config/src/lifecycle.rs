//! `[lifecycle]` of `rootseal.toml`: the rotation lead time and, per lifecycle class, the
//! cryptoperiod (NIST SP 800-57 Part 1 Rev. 5 §5.3.6, Table 1). A period above the standard's
//! maximum is refused here, when the file is read, with the paragraph named.
//!
//! ```toml
//! [lifecycle]
//! lead_time = "30d"                    # rotate this long before a version's protect-stop
//! usage_limit = 4278190080             # AES-GCM encryptions per version (at most 2^32)
//! usage_block = 1048576                # encryptions reserved in the record at once
//! [lifecycle.l1-kek]
//! originator_usage_period = "1y"       # at most 2y
//! recipient_usage_period = "4y"        # at least the OUP, at most OUP + 3y
//! [lifecycle.seal-kek]
//! originator_usage_period = "180d"
//! ```

use rootseal_hsm::{Cryptoperiod, LifecyclePolicy, UsagePolicy};
use serde::Deserialize;

/// A refused `[lifecycle]` value: the dotted key and why (the config maps it to its
/// `ConfigError::Invalid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LifecycleError {
    pub(crate) key: String,
    pub(crate) reason: String,
}

impl std::fmt::Display for LifecycleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// `[lifecycle]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLifecycle {
    lead_time: Option<RawPeriod>,
    usage_limit: Option<u64>,
    usage_block: Option<u64>,
    #[serde(rename = "l1-kek")]
    l1_kek: Option<RawClass>,
    #[serde(rename = "seal-kek")]
    seal_kek: Option<RawClass>,
}

/// `[lifecycle.<class>]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClass {
    originator_usage_period: Option<RawPeriod>,
    recipient_usage_period: Option<RawPeriod>,
}

/// A period: whole seconds, or a string such as `"30d"`, `"1y"`, `"8760h"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPeriod {
    Secs(u64),
    Text(String),
}

impl RawPeriod {
    fn secs(&self, key: &str) -> Result<u64, LifecycleError> {
        let bad = || LifecycleError {
            key: key.to_owned(),
            reason: "expected a period such as \"30d\", \"1y\", \"8760h\" or a number of seconds"
                .into(),
        };
        match self {
            RawPeriod::Secs(n) => Ok(*n),
            RawPeriod::Text(t) => parse_period(t).ok_or_else(bad),
        }
    }
}

/// Parses `"45s"`, `"5m"`, `"12h"`, `"30d"`, `"1y"` (365 days) or whole seconds.
pub(crate) fn parse_period(t: &str) -> Option<u64> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "y" => rootseal_hsm::YEAR_SECS,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `[lifecycle]`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LifecycleSettings {
    /// The keyring's lifecycle policy: each class's cryptoperiod and the lead time.
    pub policy: LifecyclePolicy,
}

fn class(
    raw: Option<RawClass>,
    name: &str,
    default: Cryptoperiod,
) -> Result<Cryptoperiod, LifecycleError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let oup_key = format!("lifecycle.{name}.originator_usage_period");
    let rup_key = format!("lifecycle.{name}.recipient_usage_period");
    let oup = raw
        .originator_usage_period
        .map(|p| p.secs(&oup_key))
        .transpose()?
        .unwrap_or(0);
    let rup = raw
        .recipient_usage_period
        .map(|p| p.secs(&rup_key))
        .transpose()?
        .unwrap_or(0);
    default.with_overrides(oup, rup).map_err(|e| {
        let key = match e {
            rootseal_hsm::PeriodError::Oup(_) => oup_key,
            _ => rup_key,
        };
        LifecycleError {
            key,
            reason: e.to_string(),
        }
    })
}

/// `usage_limit` and `usage_block` (each absent: its default; a block above a smaller limit
/// given alone follows it down).
fn usage(
    limit: Option<u64>,
    block: Option<u64>,
    d: UsagePolicy,
) -> Result<UsagePolicy, LifecycleError> {
    let limit_v = limit.unwrap_or(d.limit());
    let block_v = block.unwrap_or(d.block().min(limit_v));
    UsagePolicy::new(limit_v, block_v).map_err(|e| LifecycleError {
        key: match e {
            rootseal_hsm::UsageError::Limit(_) => "lifecycle.usage_limit",
            _ => "lifecycle.usage_block",
        }
        .into(),
        reason: e.to_string(),
    })
}

/// Validates `[lifecycle]` (absent: the defaults).
///
/// # Errors
/// [`LifecycleError`] naming the key, for a malformed period or one above SP 800-57's
/// maximum (the message names the paragraph).
pub(crate) fn validate_lifecycle(
    raw: Option<RawLifecycle>,
) -> Result<LifecycleSettings, LifecycleError> {
    let raw = raw.unwrap_or_default();
    let d = LifecyclePolicy::default();
    let policy = LifecyclePolicy {
        l1_kek: class(raw.l1_kek, "l1-kek", d.l1_kek)?,
        seal_kek: class(raw.seal_kek, "seal-kek", d.seal_kek)?,
        lead_time_secs: raw
            .lead_time
            .map(|p| p.secs("lifecycle.lead_time"))
            .transpose()?
            .unwrap_or(d.lead_time_secs),
        usage: usage(raw.usage_limit, raw.usage_block, d.usage)?,
    };
    if policy.lead_time_secs >= policy.l1_kek.oup_secs().min(policy.seal_kek.oup_secs()) {
        return Err(LifecycleError {
            key: "lifecycle.lead_time".into(),
            reason: "lead_time must be shorter than every class's originator_usage_period".into(),
        });
    }
    Ok(LifecycleSettings { policy })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LifecycleSettings, LifecycleError> {
        #[derive(Deserialize)]
        struct T {
            lifecycle: Option<RawLifecycle>,
        }
        let t: T = toml::from_str(text).unwrap();
        validate_lifecycle(t.lifecycle)
    }

    #[test]
    fn absent_is_the_defaults() {
        let s = parse("").unwrap();
        assert_eq!(s.policy, LifecyclePolicy::default());
        assert_eq!(s.policy.lead_time_secs, 30 * 86_400);
    }

    #[test]
    fn periods_are_read_and_bounded_by_the_standard() {
        let s = parse(
            "[lifecycle]\nlead_time = \"7d\"\n[lifecycle.seal-kek]\noriginator_usage_period = \"180d\"\n",
        )
        .unwrap();
        assert_eq!(s.policy.lead_time_secs, 7 * 86_400);
        assert_eq!(s.policy.seal_kek.oup_secs(), 180 * 86_400);
        assert_eq!(s.policy.l1_kek, Cryptoperiod::default());

        let e = parse("[lifecycle.l1-kek]\noriginator_usage_period = \"3y\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("lifecycle.l1-kek.originator_usage_period"),
            "{msg}"
        );
        assert!(msg.contains("SP 800-57 Part 1 Rev. 5 §5.3.6"), "{msg}");

        let e = parse("[lifecycle.l1-kek]\nrecipient_usage_period = \"5y\"\n").unwrap_err();
        assert!(e.to_string().contains("recipient_usage_period"), "{e}");
        assert!(parse("[lifecycle]\nlead_time = \"2y\"\n").is_err());
    }

    #[test]
    fn usage_limits_are_read_and_bounded_by_sp_800_38d() {
        let d = parse("").unwrap();
        assert_eq!(d.policy.usage.limit(), rootseal_hsm::DEFAULT_USAGE_LIMIT);
        assert_eq!(d.policy.usage.block(), rootseal_hsm::DEFAULT_USAGE_BLOCK);
        let s = parse("[lifecycle]\nusage_limit = 100\n").unwrap();
        assert_eq!((s.policy.usage.limit(), s.policy.usage.block()), (100, 100));
        let s = parse("[lifecycle]\nusage_limit = 100\nusage_block = 10\n").unwrap();
        assert_eq!((s.policy.usage.limit(), s.policy.usage.block()), (100, 10));
        let e = parse("[lifecycle]\nusage_limit = 4294967297\n").unwrap_err();
        assert!(e.to_string().contains("lifecycle.usage_limit"), "{e}");
        assert!(e.to_string().contains("SP 800-38D §8.3"), "{e}");
        let e = parse("[lifecycle]\nusage_limit = 10\nusage_block = 11\n").unwrap_err();
        assert!(e.to_string().contains("lifecycle.usage_block"), "{e}");
        assert!(parse("[lifecycle]\nusage_block = 0\n").is_err());
        assert!(parse("[lifecycle]\nlead_time = \"soon\"\n").is_err());
    }
}

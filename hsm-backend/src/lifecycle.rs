//! Key lifecycle per NIST SP 800-57 Part 1 Rev. 5 ("Recommendation for Key Management: Part 1 –
//! General", May 2020): the states of a key version (§7: pre-activation, active, suspended,
//! deactivated, compromised, destroyed), its dates (KMIP 2.x names them Activation, Protect
//! Stop, Deactivation, Compromise Occurrence, Destroy), the lifecycle classes of rootseal's keys
//! with their cryptoperiods, and the rule that says which operation a version may do now.
//!
//! Cryptoperiods (§5.3.6, item 7 "Symmetric key-wrapping key", and §5.3.6 Table 1 "Suggested
//! cryptoperiods for key types"): a symmetric key-wrapping key, which every rootseal L1 is (it
//! wraps data keys, bulk batch keys and OpenBao's seal key), has an originator-usage period
//! (OUP: while it may apply protection) of up to 2 years, and a recipient-usage period (RUP:
//! while it may process, i.e. decrypt) of up to the OUP plus 3 years. rootseal measures both from
//! the version's activation: protect-stop is activation + OUP, deactivation is activation + RUP.
//!
//! The check is pure: a comparison of the clock against dates already in memory, no HSM or store
//! call (the hot path stays free).

use serde::{Deserialize, Serialize};

/// One year, as SP 800-57 counts cryptoperiods here (365 days).
pub const YEAR_SECS: u64 = 365 * 86_400;
/// The longest originator-usage period SP 800-57 Part 1 Rev. 5 suggests for a symmetric
/// key-wrapping key (§5.3.6 item 7, Table 1: "OUP ≤ 2 yrs").
pub const MAX_OUP_SECS: u64 = 2 * YEAR_SECS;
/// How far the recipient-usage period may extend past the originator-usage period (§5.3.6 item
/// 7, Table 1: "RUP ≤ OUP + 3 yrs").
pub const MAX_RUP_BEYOND_OUP_SECS: u64 = 3 * YEAR_SECS;
/// rootseal's default originator-usage period of both classes: 1 year.
pub const DEFAULT_OUP_SECS: u64 = YEAR_SECS;
/// rootseal's default recipient-usage period: the OUP plus the 3 years the standard allows.
pub const DEFAULT_RUP_SECS: u64 = DEFAULT_OUP_SECS + MAX_RUP_BEYOND_OUP_SECS;
/// The default `[lifecycle] lead_time`: a version is rotated this long before its protect-stop.
pub const DEFAULT_LEAD_TIME_SECS: u64 = 30 * 86_400;
/// The paragraph of the standard a refused period names.
pub const STANDARD_PARAGRAPH: &str = "NIST SP 800-57 Part 1 Rev. 5 §5.3.6 (Table 1)";
/// The most AES-GCM invocations with random 96-bit IVs one key may make (NIST SP 800-38D §8.3:
/// "the total number of invocations of the authenticated encryption function shall not exceed
/// 2^32, including all IV lengths and all instances of the authenticated encryption function
/// with the given key").
pub const GCM_RANDOM_IV_LIMIT: u64 = 1 << 32;
/// The margin below [`GCM_RANDOM_IV_LIMIT`] of the default usage limit (16 default blocks).
pub const USAGE_MARGIN: u64 = 1 << 24;
/// The default `[lifecycle] usage_limit`: a version is rotated after this many encryptions.
pub const DEFAULT_USAGE_LIMIT: u64 = GCM_RANDOM_IV_LIMIT - USAGE_MARGIN;
/// The default `[lifecycle] usage_block`: encryptions a process reserves in the record at once
/// (a crash loses at most this many from the count, never under-counts).
pub const DEFAULT_USAGE_BLOCK: u64 = 1 << 20;
/// The paragraph of the standard a refused usage limit names.
pub const USAGE_PARAGRAPH: &str = "NIST SP 800-38D §8.3";

/// The state of a key version (SP 800-57 Part 1 Rev. 5 §7). A version whose recorded state is
/// `active` is reported `pre-activation` before its activation time and `deactivated` from its
/// deactivation time on (see [`VersionLifecycle::state_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LifecycleState {
    /// Made, not yet to be used.
    PreActivation,
    /// In use: protects until protect-stop, processes until deactivation.
    Active,
    /// Temporarily out of use for protection; still processes until deactivation.
    Suspended,
    /// Past its recipient-usage period: neither protects nor processes.
    Deactivated,
    /// Known or suspected compromised: never protects again; processes only while the
    /// `lifecycle.compromise` ceremony's decision allows it ([`VersionLifecycle::process_until`]).
    Compromised,
    /// Its key material is destroyed: nothing.
    Destroyed,
}

impl LifecycleState {
    /// The name in records, API answers and messages (`pre-activation`, `active`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::PreActivation => "pre-activation",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deactivated => "deactivated",
            Self::Compromised => "compromised",
            Self::Destroyed => "destroyed",
        }
    }
}

/// A lifecycle class: which cryptoperiod defaults a key takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LifecycleClass {
    /// A Level 1 key-encryption key (transit, bulk): `l1-kek`.
    #[default]
    #[serde(rename = "l1-kek")]
    L1Kek,
    /// The key that seals OpenBao's root key (the KMS plugin's auto-unseal key): `seal-kek`.
    #[serde(rename = "seal-kek")]
    SealKek,
}

impl LifecycleClass {
    /// Every class.
    pub const ALL: [LifecycleClass; 2] = [LifecycleClass::L1Kek, LifecycleClass::SealKek];

    /// The class's name (`l1-kek`, `seal-kek`).
    pub fn name(self) -> &'static str {
        match self {
            Self::L1Kek => "l1-kek",
            Self::SealKek => "seal-kek",
        }
    }

    /// The class named `s`.
    pub fn from_name(s: &str) -> Option<LifecycleClass> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// Why a period is refused: it exceeds what SP 800-57 allows, or is inconsistent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// The OUP is zero or above the standard's maximum.
    #[error("originator_usage_period of {0}s is above the maximum of {MAX_OUP_SECS}s (2 years) of {STANDARD_PARAGRAPH} for a symmetric key-wrapping key, or zero")]
    Oup(u64),
    /// The RUP is shorter than the OUP or longer than the OUP plus 3 years.
    #[error("recipient_usage_period of {rup}s must be at least the originator_usage_period ({oup}s) and at most it plus {MAX_RUP_BEYOND_OUP_SECS}s (3 years), per {STANDARD_PARAGRAPH}")]
    Rup {
        /// The OUP it was checked against.
        oup: u64,
        /// The refused RUP.
        rup: u64,
    },
}

/// A cryptoperiod: the originator-usage and recipient-usage periods, both measured from
/// activation, checked against SP 800-57's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cryptoperiod {
    oup_secs: u64,
    rup_secs: u64,
}

impl Default for Cryptoperiod {
    fn default() -> Self {
        Cryptoperiod {
            oup_secs: DEFAULT_OUP_SECS,
            rup_secs: DEFAULT_RUP_SECS,
        }
    }
}

impl Cryptoperiod {
    /// A cryptoperiod of `oup_secs` and `rup_secs`.
    ///
    /// # Errors
    /// [`PeriodError`] when either exceeds SP 800-57 Part 1 Rev. 5 §5.3.6's bounds (the message
    /// names the paragraph), the OUP is zero, or the RUP is shorter than the OUP.
    pub fn new(oup_secs: u64, rup_secs: u64) -> Result<Cryptoperiod, PeriodError> {
        if oup_secs == 0 || oup_secs > MAX_OUP_SECS {
            return Err(PeriodError::Oup(oup_secs));
        }
        if rup_secs < oup_secs || rup_secs > oup_secs + MAX_RUP_BEYOND_OUP_SECS {
            return Err(PeriodError::Rup {
                oup: oup_secs,
                rup: rup_secs,
            });
        }
        Ok(Cryptoperiod { oup_secs, rup_secs })
    }

    /// The originator-usage period, seconds.
    pub fn oup_secs(&self) -> u64 {
        self.oup_secs
    }

    /// The recipient-usage period, seconds.
    pub fn rup_secs(&self) -> u64 {
        self.rup_secs
    }

    /// This cryptoperiod with a key's own overrides (0 keeps the value); the RUP follows a
    /// shorter OUP down when only the OUP is given, keeping `rup - oup`.
    ///
    /// # Errors
    /// [`PeriodError`] as [`Cryptoperiod::new`].
    pub fn with_overrides(&self, oup: u64, rup: u64) -> Result<Cryptoperiod, PeriodError> {
        let o = if oup == 0 { self.oup_secs } else { oup };
        let r = match (oup, rup) {
            (_, r) if r != 0 => r,
            (0, _) => self.rup_secs,
            (o, _) => o + (self.rup_secs - self.oup_secs),
        };
        Cryptoperiod::new(o, r)
    }
}

/// The lifecycle policy of a keyring: each class's cryptoperiod, the rotation lead time and the
/// usage limit of a version (`[lifecycle]` in `rootseal.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecyclePolicy {
    /// The `l1-kek` class.
    pub l1_kek: Cryptoperiod,
    /// The `seal-kek` class.
    pub seal_kek: Cryptoperiod,
    /// A version whose protect-stop comes within this many seconds is rotated ahead of it.
    pub lead_time_secs: u64,
    /// The AES-GCM encryptions one version may make; the key rotates when its latest version
    /// reaches it (at most [`GCM_RANDOM_IV_LIMIT`]; see [`UsagePolicy`]).
    pub usage: UsagePolicy,
}

/// How key versions count their AES-GCM encryptions (NIST SP 800-38D §8.3): each process
/// reserves `block` uses at a time in the version's record (a check-and-set write) and counts
/// within the block in memory; a version stops encrypting at `limit`, and the key rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsagePolicy {
    limit: u64,
    block: u64,
}

impl Default for UsagePolicy {
    fn default() -> Self {
        UsagePolicy {
            limit: DEFAULT_USAGE_LIMIT,
            block: DEFAULT_USAGE_BLOCK,
        }
    }
}

/// Why a usage policy is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// The limit is zero or above SP 800-38D's.
    #[error("usage_limit of {0} is above the {GCM_RANDOM_IV_LIMIT} AES-GCM invocations with random IVs that {USAGE_PARAGRAPH} allows one key, or zero")]
    Limit(u64),
    /// The block is zero or larger than the limit.
    #[error("usage_block of {block} must be at least 1 and at most usage_limit ({limit})")]
    Block {
        /// The limit it was checked against.
        limit: u64,
        /// The refused block.
        block: u64,
    },
}

impl UsagePolicy {
    /// A usage policy of `limit` encryptions per version, reserved `block` at a time.
    ///
    /// # Errors
    /// [`UsageError`] for a limit of 0 or above [`GCM_RANDOM_IV_LIMIT`], or a block of 0 or
    /// above the limit.
    pub fn new(limit: u64, block: u64) -> Result<UsagePolicy, UsageError> {
        if limit == 0 || limit > GCM_RANDOM_IV_LIMIT {
            return Err(UsageError::Limit(limit));
        }
        if block == 0 || block > limit {
            return Err(UsageError::Block { limit, block });
        }
        Ok(UsagePolicy { limit, block })
    }

    /// Encryptions per version.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Encryptions reserved in the record at once.
    pub fn block(&self) -> u64 {
        self.block
    }
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        LifecyclePolicy {
            l1_kek: Cryptoperiod::default(),
            seal_kek: Cryptoperiod::default(),
            lead_time_secs: DEFAULT_LEAD_TIME_SECS,
            usage: UsagePolicy::default(),
        }
    }
}

impl LifecyclePolicy {
    /// The cryptoperiod of `class`.
    pub fn class(&self, class: LifecycleClass) -> Cryptoperiod {
        match class {
            LifecycleClass::L1Kek => self.l1_kek,
            LifecycleClass::SealKek => self.seal_kek,
        }
    }
}

/// One version's lifecycle as its KEK record stores it (record format 3) and MACs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionLifecycle {
    /// The recorded state.
    pub state: LifecycleState,
    /// Activation time (unix seconds).
    pub activation: u64,
    /// Protect-stop time: the end of the originator-usage period.
    pub protect_stop: u64,
    /// Deactivation time: the end of the recipient-usage period.
    pub deactivation: u64,
    /// When the version was marked compromised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compromise: Option<u64>,
    /// When the version's key material was destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy: Option<u64>,
    /// A compromised version still processes (decrypts) before this time: the decision of the
    /// `lifecycle.compromise` ceremony that marked it (absent: never). Each such use is audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_until: Option<u64>,
}

/// The operation families the lifecycle distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Apply protection: encrypt, data keys, bulk seal, rewrap's encrypt half, sign, HMAC.
    Protect,
    /// Process protected data: decrypt, rewrap's decrypt half, bulk unseal.
    Process,
}

/// Why a version refused an operation (HTTP 400: "key version 3 is deactivated").
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("key version {version} {}", reason_text(*.reason))]
pub struct LifecycleRefusal {
    /// The version.
    pub version: u32,
    /// Its state, or `Active` for an active version past its protect-stop.
    pub reason: Refusal,
}

/// The reason of a [`LifecycleRefusal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The version is in this state.
    State(LifecycleState),
    /// The version is active but past its protect-stop (end of its originator-usage period).
    PastProtectStop,
    /// The version has made its usage limit of encryptions (SP 800-38D §8.3).
    UsageLimit,
}

fn reason_text(r: Refusal) -> String {
    match r {
        Refusal::State(s) => format!("is {}", s.name()),
        Refusal::PastProtectStop => {
            "is past its protect-stop time (its originator-usage period has ended): it decrypts but no longer encrypts".into()
        }
        Refusal::UsageLimit => {
            "has reached its usage limit of AES-GCM encryptions (NIST SP 800-38D §8.3): it decrypts but no longer encrypts; the key rotates".into()
        }
    }
}

impl VersionLifecycle {
    /// An active version activated at `now` with `period`.
    pub fn active(now: u64, period: Cryptoperiod) -> VersionLifecycle {
        VersionLifecycle {
            state: LifecycleState::Active,
            activation: now,
            protect_stop: now.saturating_add(period.oup_secs),
            deactivation: now.saturating_add(period.rup_secs),
            compromise: None,
            destroy: None,
            process_until: None,
        }
    }

    /// The state at `now`: the recorded state, except that an active or pre-activation version
    /// is deactivated from its deactivation time on, a pre-activation version is active from its
    /// activation time on, and an active one before it is pre-activation.
    pub fn state_at(&self, now: u64) -> LifecycleState {
        use LifecycleState::*;
        match self.state {
            Active | PreActivation | Suspended if now >= self.deactivation => Deactivated,
            PreActivation | Active if now < self.activation => PreActivation,
            PreActivation => Active,
            s => s,
        }
    }

    /// Whether version `version` may be used for `op` at `now`.
    ///
    /// # Errors
    /// The [`LifecycleRefusal`] naming the state that refuses it.
    pub fn check(&self, version: u32, op: Use, now: u64) -> Result<(), LifecycleRefusal> {
        let refuse = |reason| Err(LifecycleRefusal { version, reason });
        match (self.state_at(now), op) {
            (LifecycleState::Active, Use::Protect) if now < self.protect_stop => Ok(()),
            (LifecycleState::Active, Use::Protect) => refuse(Refusal::PastProtectStop),
            (LifecycleState::Active | LifecycleState::Suspended, Use::Process) => Ok(()),
            (LifecycleState::Compromised, Use::Process) if self.processes_compromised(now) => {
                Ok(())
            }
            (s, _) => refuse(Refusal::State(s)),
        }
    }

    /// Whether this compromised version may still process at `now` (the ceremony's decision,
    /// [`VersionLifecycle::process_until`]); never past its deactivation.
    pub fn processes_compromised(&self, now: u64) -> bool {
        self.state == LifecycleState::Compromised
            && self
                .process_until
                .is_some_and(|t| now < t && now < self.deactivation)
    }

    /// The next lifecycle event after `now`: its name and time, or `None` once deactivated (or
    /// compromised, destroyed).
    pub fn next_event(&self, now: u64) -> Option<(&'static str, u64)> {
        match self.state_at(now) {
            LifecycleState::PreActivation => Some(("activation", self.activation)),
            LifecycleState::Active if now < self.protect_stop => {
                Some(("protect_stop", self.protect_stop))
            }
            LifecycleState::Active | LifecycleState::Suspended => {
                Some(("deactivation", self.deactivation))
            }
            _ => None,
        }
    }
}

/// Unix seconds as RFC 3339 UTC (`2024-01-02T03:04:05Z`): how the lifecycle dates are shown
/// (transit's `keys` read, `GET /v1/rootseal/lifecycle`, the seal-key warning).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant), for dates after 1970.
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use LifecycleState::*;

    const T0: u64 = 1_800_000_000;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(T0), "2027-01-15T08:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    fn version(state: LifecycleState) -> VersionLifecycle {
        let mut v = VersionLifecycle::active(T0, Cryptoperiod::default());
        v.state = state;
        v
    }

    /// The full transition table: each recorded state x each operation x each period (before
    /// activation, within the OUP, between protect-stop and deactivation, after deactivation).
    #[test]
    fn transition_table_state_by_operation() {
        let before = T0 - 1;
        let in_oup = T0 + 10;
        let in_rup = T0 + DEFAULT_OUP_SECS + 10;
        let after = T0 + DEFAULT_RUP_SECS;
        let ok = None;
        let no = |s: LifecycleState| Some(Refusal::State(s));
        #[rustfmt::skip]
        let table: [(LifecycleState, u64, Option<Refusal>, Option<Refusal>); 24] = [
            // recorded state, time, protect, process
            (PreActivation, before, no(PreActivation), no(PreActivation)),
            (PreActivation, in_oup, ok, ok),
            (PreActivation, in_rup, Some(Refusal::PastProtectStop), ok),
            (PreActivation, after, no(Deactivated), no(Deactivated)),
            (Active, before, no(PreActivation), no(PreActivation)),
            (Active, in_oup, ok, ok),
            (Active, in_rup, Some(Refusal::PastProtectStop), ok),
            (Active, after, no(Deactivated), no(Deactivated)),
            (Suspended, before, no(Suspended), ok),
            (Suspended, in_oup, no(Suspended), ok),
            (Suspended, in_rup, no(Suspended), ok),
            (Suspended, after, no(Deactivated), no(Deactivated)),
            (Deactivated, before, no(Deactivated), no(Deactivated)),
            (Deactivated, in_oup, no(Deactivated), no(Deactivated)),
            (Deactivated, in_rup, no(Deactivated), no(Deactivated)),
            (Deactivated, after, no(Deactivated), no(Deactivated)),
            (Compromised, before, no(Compromised), no(Compromised)),
            (Compromised, in_oup, no(Compromised), no(Compromised)),
            (Compromised, in_rup, no(Compromised), no(Compromised)),
            (Compromised, after, no(Compromised), no(Compromised)),
            (Destroyed, before, no(Destroyed), no(Destroyed)),
            (Destroyed, in_oup, no(Destroyed), no(Destroyed)),
            (Destroyed, in_rup, no(Destroyed), no(Destroyed)),
            (Destroyed, after, no(Destroyed), no(Destroyed)),
        ];
        for (state, now, protect, process) in table {
            let v = version(state);
            for (op, want) in [(Use::Protect, protect), (Use::Process, process)] {
                let got = v.check(3, op, now).err().map(|r| r.reason);
                assert_eq!(got, want, "{state:?} at {now} for {op:?}");
            }
        }
    }

    #[test]
    fn a_compromised_version_processes_only_while_the_ceremony_allows() {
        let mut v = version(Compromised);
        assert!(v.check(1, Use::Process, T0 + 10).is_err());
        v.process_until = Some(T0 + 100);
        assert!(v.check(1, Use::Process, T0 + 10).is_ok());
        assert!(v.processes_compromised(T0 + 99));
        assert_eq!(
            v.check(1, Use::Process, T0 + 100).unwrap_err().reason,
            Refusal::State(Compromised)
        );
        // Never protects, whatever the decision.
        assert!(v.check(1, Use::Protect, T0 + 10).is_err());
        // Never past deactivation.
        v.process_until = Some(u64::MAX);
        assert!(v.check(1, Use::Process, v.deactivation).is_err());
    }

    #[test]
    fn refusals_name_the_version_and_state() {
        let v = version(Deactivated);
        let e = v.check(3, Use::Process, T0).unwrap_err();
        assert_eq!(e.to_string(), "key version 3 is deactivated");
        let e = version(Active)
            .check(2, Use::Protect, T0 + DEFAULT_OUP_SECS)
            .unwrap_err();
        assert!(e
            .to_string()
            .starts_with("key version 2 is past its protect-stop"));
    }

    #[test]
    fn periods_above_the_standard_are_refused_naming_the_paragraph() {
        assert!(Cryptoperiod::new(MAX_OUP_SECS, MAX_OUP_SECS + MAX_RUP_BEYOND_OUP_SECS).is_ok());
        let e = Cryptoperiod::new(MAX_OUP_SECS + 1, MAX_OUP_SECS + 1).unwrap_err();
        assert!(e.to_string().contains("§5.3.6"), "{e}");
        assert!(Cryptoperiod::new(0, 10).is_err());
        assert!(Cryptoperiod::new(YEAR_SECS, YEAR_SECS - 1).is_err());
        let e = Cryptoperiod::new(YEAR_SECS, YEAR_SECS + MAX_RUP_BEYOND_OUP_SECS + 1).unwrap_err();
        assert!(e.to_string().contains("§5.3.6"), "{e}");
    }

    #[test]
    fn overrides_keep_the_rup_margin_and_are_bounded() {
        let c = Cryptoperiod::default();
        let half = c.with_overrides(YEAR_SECS / 2, 0).unwrap();
        assert_eq!(half.rup_secs(), YEAR_SECS / 2 + MAX_RUP_BEYOND_OUP_SECS);
        assert_eq!(c.with_overrides(0, 0).unwrap(), c);
        assert!(c.with_overrides(3 * YEAR_SECS, 0).is_err());
    }

    #[test]
    fn next_event_walks_protect_stop_then_deactivation() {
        let v = version(Active);
        assert_eq!(v.next_event(T0), Some(("protect_stop", v.protect_stop)));
        assert_eq!(
            v.next_event(v.protect_stop),
            Some(("deactivation", v.deactivation))
        );
        assert_eq!(v.next_event(v.deactivation), None);
    }

    #[test]
    fn usage_limits_are_bounded_by_sp_800_38d() {
        let d = UsagePolicy::default();
        assert_eq!(d.limit(), (1u64 << 32) - (1 << 24));
        assert!(UsagePolicy::new(GCM_RANDOM_IV_LIMIT, 1).is_ok());
        let e = UsagePolicy::new(GCM_RANDOM_IV_LIMIT + 1, 1).unwrap_err();
        assert!(e.to_string().contains("SP 800-38D §8.3"), "{e}");
        assert!(UsagePolicy::new(0, 1).is_err());
        assert!(UsagePolicy::new(10, 0).is_err());
        assert!(UsagePolicy::new(10, 11).is_err());
    }

    #[test]
    fn classes_have_their_names() {
        for c in LifecycleClass::ALL {
            assert_eq!(LifecycleClass::from_name(c.name()), Some(c));
        }
        assert_eq!(
            serde_json::to_string(&LifecycleClass::SealKek).unwrap(),
            "\"seal-kek\""
        );
        assert_eq!(LifecycleClass::from_name("l2"), None);
    }
}

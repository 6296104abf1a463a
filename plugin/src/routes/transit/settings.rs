//! The transit mount's own settings, as Vault keeps them in its storage: `config/keys`
//! (`disable_upsert`) and `cache-config` (`size`). They live in the key store as one reserved record
//! (`rootseal-governance.transit-settings`), MACed inside the HSM like every other record
//! (`Keyring::seal_record`), so a store writer cannot turn upsert back on unseen.
//!
//! Each process caches the record for [`REFRESH`] (the same interval as the keyring's key cache), so
//! a change made through another replica sharing the store is in force everywhere within it; when
//! the record cannot be read, the mount does not create keys (upsert off) until it can.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use rootseal_hsm::{Keyring, KeyringError};
use serde::{Deserialize, Serialize};

/// The reserved store name of the settings record.
pub(crate) const SETTINGS_RECORD: &str = "rootseal-governance.transit-settings";
/// How long a process trusts its copy of the record.
const REFRESH: Duration = Duration::from_secs(5);
/// Vault's smallest non-zero `cache-config` size.
pub(crate) const MIN_CACHE_SIZE: u64 = 10;

/// The settings (format version 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Format version of this record body.
    #[serde(default = "one")]
    pub v: u16,
    /// `config/keys`: `encrypt` never creates a missing key.
    #[serde(default)]
    pub disable_upsert: bool,
    /// `cache-config`: most keys kept loaded in memory (0: no limit).
    #[serde(default)]
    pub cache_size: u64,
}

fn one() -> u16 {
    1
}

/// The process's cached copy.
#[derive(Debug, Default)]
pub(crate) struct SettingsCache {
    cached: RwLock<Option<(Settings, Instant)>>,
}

impl SettingsCache {
    /// The settings in force: the cached copy while fresh, else the stored record (applying its
    /// cache size to the keyring). `None` when the record cannot be read now.
    pub(crate) async fn current(&self, keyring: &Keyring) -> Option<Settings> {
        if let Some((s, at)) = *self.cached.read().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < REFRESH {
                return Some(s);
            }
        }
        match load(keyring).await {
            Ok((s, _)) => {
                self.remember(keyring, s);
                Some(s)
            }
            Err(e) => {
                tracing::warn!(error = %e, "transit settings record unreadable; upsert is off until it is read");
                None
            }
        }
    }

    /// Whether `encrypt` may create a missing key: the static `[transit] allow_upsert` and the
    /// stored `disable_upsert`, read only when the former allows it.
    pub(crate) async fn upsert(&self, keyring: &Keyring, allow_upsert: bool) -> bool {
        allow_upsert
            && self
                .current(keyring)
                .await
                .is_some_and(|s| !s.disable_upsert)
    }

    /// Replaces the cached copy (after a write) and applies the cache size.
    pub(crate) fn remember(&self, keyring: &Keyring, s: Settings) {
        keyring.set_cache_size(usize::try_from(s.cache_size).unwrap_or(usize::MAX));
        *self.cached.write().unwrap_or_else(|e| e.into_inner()) = Some((s, Instant::now()));
    }
}

/// Reads the stored settings (defaults when absent) and the record's store version (0: absent).
///
/// # Errors
/// `Integrity` for a record whose MAC fails or whose body is not settings; HSM and store errors.
pub(crate) async fn load(keyring: &Keyring) -> Result<(Settings, u64), KeyringError> {
    match keyring.open_record(SETTINGS_RECORD).await? {
        None => Ok((Settings::default(), 0)),
        Some((body, version)) => {
            let s: Settings = serde_json::from_slice(&body).map_err(|e| {
                KeyringError::integrity(format!("transit settings record: malformed: {e}"))
            })?;
            if s.v != 1 {
                return Err(KeyringError::UnsupportedFormat(s.v));
            }
            Ok((s, version))
        }
    }
}

/// Changes the stored settings with `f` (read, change, check-and-set write; retried on a
/// concurrent change) and returns them.
///
/// # Errors
/// As [`load`] and `Keyring::seal_record`.
pub(crate) async fn update(
    keyring: &Keyring,
    cache: &SettingsCache,
    f: impl Fn(&mut Settings),
) -> Result<Settings, KeyringError> {
    let mut tries = 0;
    loop {
        let (mut s, version) = load(keyring).await?;
        let before = s;
        f(&mut s);
        s.v = 1;
        if s == before && version != 0 {
            cache.remember(keyring, s);
            return Ok(s);
        }
        let body = serde_json::to_vec(&s)
            .map_err(|e| KeyringError::internal(format!("serialise settings: {e}")))?;
        match keyring.seal_record(SETTINGS_RECORD, &body, version).await {
            Ok(_) => {
                cache.remember(keyring, s);
                return Ok(s);
            }
            Err(KeyringError::Conflict) if tries < 5 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

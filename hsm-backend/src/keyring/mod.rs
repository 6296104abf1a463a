//! The [`Keyring`]: the key hierarchy's one API. Every face of rootseal (HTTP transit, the
//! OpenBao KMS plugin, the CLI) calls it; none talks to the HSM directly.
//!
//! It owns the policy of the hierarchy: which L1 keys exist and their versions, lifecycle checks
//! (`min_decryption_version`, allowed operations), where sealed records live ([`KekStore`]), and
//! the cache of loaded keys. One file per part:
//! * [`api`]: the types callers pass and get back;
//! * [`record`]: the stored KEK record format;
//! * `crate::lifecycle`: NIST SP 800-57 states, dates, classes and cryptoperiods of key versions
//!   (outside the keyring: the errors name its refusals);
//! * [`clock`]: the clock lifecycle decisions read (injectable for tests);
//! * [`state`]: a loaded key and its parsed blobs;
//! * [`jobs`]: what runs on an HSM worker (unwrap an L1, seal a new one, MAC a record);
//! * [`keys`]: create, read, list, delete, rotate, configure;
//! * [`crypto`]: encrypt, decrypt, rewrap, data keys;
//! * [`sign`]: sign, verify, HMAC, random bytes;
//! * [`der`]: the DER of public keys and signatures;
//! * [`batch`]: bulk-seal batch keys;
//! * [`rotation`]: root rotation, re-sealing every record under a new root;
//! * `compromise`: marking a version compromised (and rotating);
//! * `trim`: Vault's `trim`, destroying the versions below `min_available_version`;
//! * [`upkeep`]: scheduled key rotation (`auto_rotate_period`, protect-stop lead time, usage
//!   limit);
//! * `usage`: counting each version's AES-GCM encryptions in reserved blocks (usage limits);
//! * [`admin`]: root administration (init, status, attributes), which needs no keyring.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::custody::{self, Custody, CustodyReport};
use crate::error::KeyringError;
use crate::hsm::Hsm;
use crate::registry;
use crate::root;
use crate::store::{leaf_stores, valid_key_name, KekStore};
use crate::types::RootId;

pub(crate) mod aad;
pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod batch;
pub(crate) mod clock;
pub(crate) mod compromise;
mod counter;
pub(crate) mod crypto;
mod der;
pub(crate) mod governance;
pub(crate) mod import;
mod jobs;
mod keys;
pub(crate) mod record;
pub(crate) mod rotation;
pub(crate) mod sign;
mod state;
mod trim;
pub(crate) mod upkeep;
mod usage;

use crate::lifecycle::LifecyclePolicy;
use clock::Clock;
use record::Record;
use state::KeyState;

/// Result type of the keyring.
pub type Result<T, E = KeyringError> = std::result::Result<T, E>;

/// How long a loaded key is served before the store is asked again (another replica may have
/// rotated or reconfigured it).
const REFRESH: Duration = Duration::from_secs(5);
/// Check-and-set attempts before a write gives up with [`KeyringError::Conflict`].
const CAS_ATTEMPTS: usize = 8;

/// The hierarchy's API. Cheap to clone.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

struct Inner {
    hsm: Hsm,
    store: Arc<dyn KekStore>,
    keys: RwLock<HashMap<String, Arc<KeyState>>>,
    /// Most keys [`Inner::keys`] holds (0: no limit), as transit's `cache-config` sets it.
    cache_size: std::sync::atomic::AtomicUsize,
    writes: tokio::sync::Mutex<()>,
    /// The last custody check (at open, and at every health check).
    custody: RwLock<CustodyReport>,
    /// The clock every lifecycle decision reads.
    clock: Clock,
    /// Cryptoperiods of the lifecycle classes, and the rotation lead time.
    policy: LifecyclePolicy,
    /// Records each allowed use of a compromised version (`compromise.rs`).
    compromised_audit: RwLock<Option<compromise::CompromisedUseAudit>>,
}

/// How a [`Keyring`] is opened beyond its HSM and store.
#[derive(Clone, Debug, Default)]
pub struct KeyringOptions {
    /// The clock lifecycle decisions read (default: the system clock).
    pub clock: Clock,
    /// The lifecycle policy (`[lifecycle]` of `rootseal.toml`; default: SP 800-57 defaults).
    pub lifecycle: LifecyclePolicy,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("hsm", &self.inner.hsm)
            .field("store", &self.inner.store.describe())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Opens the keyring over `hsm` and `store`. Checks that the token holds a root.
    ///
    /// # Errors
    /// [`KeyringError::NoRoot`] when `rootseal init` has not run on this token;
    /// [`KeyringError::HsmUnavailable`] when the HSM does not answer.
    ///
    /// Registers `store`'s leaf stores on the token (see `registry.rs`) so that root rotation
    /// finds every record, and runs the custody check ([`Keyring::custody`]).
    pub async fn open(hsm: Hsm, store: Arc<dyn KekStore>) -> Result<Keyring> {
        Self::open_with(hsm, store, KeyringOptions::default()).await
    }

    /// [`Keyring::open`] with a clock and a lifecycle policy.
    ///
    /// # Errors
    /// As [`Keyring::open`].
    pub async fn open_with(
        hsm: Hsm,
        store: Arc<dyn KekStore>,
        options: KeyringOptions,
    ) -> Result<Keyring> {
        let locators: Vec<String> = leaf_stores(&store)
            .iter()
            .filter_map(|s| s.locator())
            .collect();
        let custody = hsm
            .run(move |ctx| {
                if !root::any_complete(ctx)? {
                    return Ok(None);
                }
                registry::register(ctx, &locators)?;
                Ok(Some(custody::check(ctx)?))
            })
            .await?
            .ok_or(KeyringError::NoRoot)?;
        for f in custody.failures() {
            tracing::warn!(failure = %f, "custody check");
        }
        Ok(Keyring {
            inner: Arc::new(Inner {
                hsm,
                store,
                keys: RwLock::new(HashMap::new()),
                cache_size: std::sync::atomic::AtomicUsize::new(0),
                writes: tokio::sync::Mutex::new(()),
                custody: RwLock::new(custody),
                clock: options.clock,
                policy: options.lifecycle,
                compromised_audit: RwLock::new(None),
            }),
        })
    }

    /// The last custody check: every root's keys read back against their templates.
    pub fn custody(&self) -> CustodyReport {
        self.inner
            .custody
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the keyring can serve: the HSM answers and the token holds a complete root (L0 wrap
    /// key and MAC key); returns the custody verdict. One HSM job.
    ///
    /// # Errors
    /// `HsmUnavailable` when the HSM does not answer; `NoRoot` when the root is missing or
    /// half-made.
    ///
    /// Runs the custody check again (a root rotation in another process changes the roots).
    pub async fn health(&self) -> Result<Custody> {
        let report = self
            .inner
            .hsm
            .run(|ctx| {
                if !root::any_complete(ctx)? {
                    return Ok(None);
                }
                Ok(Some(custody::check(ctx)?))
            })
            .await?
            .ok_or(KeyringError::NoRoot)?;
        let verdict = report.verdict();
        *self
            .inner
            .custody
            .write()
            .unwrap_or_else(|e| e.into_inner()) = report;
        Ok(verdict)
    }

    /// The HSM this keyring uses.
    pub fn hsm(&self) -> &Hsm {
        &self.inner.hsm
    }

    /// The clock this keyring's lifecycle decisions read.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// This keyring's lifecycle policy.
    pub fn lifecycle_policy(&self) -> &LifecyclePolicy {
        &self.inner.policy
    }

    /// The store this keyring uses.
    pub fn store(&self) -> &Arc<dyn KekStore> {
        &self.inner.store
    }

    /// Drops what this process cached about key `name`, so that its next use reads and verifies
    /// the stored record again: for a store that another writer changes (OpenBao's
    /// `InvalidateKey` on a standby node, a second writer of the same store).
    pub fn invalidate(&self, name: &str) {
        self.forget(name);
    }

    fn check_name(name: &str) -> Result<()> {
        if governance::is_governance_name(name) {
            return Err(KeyringError::InvalidRequest(format!(
                "invalid key name {name:?}: names starting with {:?} are reserved",
                governance::GOVERNANCE_PREFIX
            )));
        }
        if valid_key_name(name) {
            Ok(())
        } else {
            Err(KeyringError::InvalidRequest(format!(
                "invalid key name {name:?}: use 1-128 characters of A-Z a-z 0-9 _ - ."
            )))
        }
    }

    fn cached(&self, name: &str) -> Option<Arc<KeyState>> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn remember(&self, state: Arc<KeyState>) {
        let limit = self.cache_size();
        let mut keys = self.inner.keys.write().unwrap_or_else(|e| e.into_inner());
        if limit > 0 && !keys.contains_key(&state.record.name) {
            // Full: drop the entries loaded longest ago (a scan, only when the cache is full).
            while keys.len() >= limit {
                let Some(oldest) = keys
                    .iter()
                    .min_by_key(|(_, k)| k.loaded_at)
                    .map(|(n, _)| n.clone())
                else {
                    break;
                };
                keys.remove(&oldest);
            }
        }
        keys.insert(state.record.name.clone(), state);
    }

    /// Most keys kept loaded and verified in memory (0: no limit, the default); beyond it the key
    /// loaded longest ago is dropped and read (and its MAC checked in the HSM) again when next used.
    pub fn cache_size(&self) -> usize {
        self.inner
            .cache_size
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets [`Keyring::cache_size`]; a smaller limit takes effect as keys are next loaded.
    pub fn set_cache_size(&self, n: usize) {
        self.inner
            .cache_size
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many keys are loaded in memory now.
    pub fn cached_keys(&self) -> usize {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn forget(&self, name: &str) {
        self.inner
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    fn forget_all(&self) {
        self.inner
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Verifies a stored record in the HSM (record MAC) and parses its blobs.
    async fn verify(&self, name: &str, data: &[u8], store_version: u64) -> Result<Arc<KeyState>> {
        let record = Record::parse(name, data)?;
        let root_id = RootId::from_hex(&record.root_id).ok_or_else(|| {
            KeyringError::integrity(format!("key {name}: record root id is malformed"))
        })?;
        let signed = record.signed_bytes()?;
        let mac = B64.decode(&record.mac).map_err(|_| {
            KeyringError::integrity(format!("key {name}: record MAC is not base64"))
        })?;
        self.inner
            .hsm
            .run(move |ctx| jobs::verify_record_mac(ctx, &root_id, &signed, &mac))
            .await
            .map_err(|e| match KeyringError::from(e) {
                KeyringError::Integrity(c) => {
                    KeyringError::integrity(format!("key {name}: record MAC check failed: {c}"))
                }
                other => other,
            })?;
        Ok(Arc::new(self.state_of(record, store_version)?))
    }

    /// Caches and returns the state of a record this process just wrote at `store_version`
    /// (no store read, no MAC check: the HSM made the MAC a moment ago).
    fn written(&self, record: Record, store_version: u64) -> Result<Arc<KeyState>> {
        let state = Arc::new(self.state_of(record, store_version)?);
        self.remember(state.clone());
        Ok(state)
    }

    fn state_of(&self, record: Record, store_version: u64) -> Result<KeyState> {
        let previous = self.cached(&record.name);
        KeyState::from_record(
            record,
            store_version,
            &self.inner.policy,
            self.inner.clock.clone(),
            previous.as_deref(),
        )
    }

    /// The key's state: cached, or read from the store and verified. With the store unreachable,
    /// a cached key keeps serving.
    async fn load(&self, name: &str, force: bool) -> Result<Arc<KeyState>> {
        Self::check_name(name)?;
        let cached = self.cached(name);
        if let Some(c) = &cached {
            if !force && c.loaded_at.elapsed() < REFRESH {
                return Ok(c.clone());
            }
        }
        let stored = match self.inner.store.get(name).await {
            Ok(s) => s,
            Err(e) => {
                if let Some(c) = cached {
                    tracing::warn!(key = name, error = %e, "key store unreachable; serving the cached key");
                    return Ok(c);
                }
                return Err(e.into());
            }
        };
        let Some(stored) = stored else {
            self.forget(name);
            return Err(KeyringError::NotFound);
        };
        if let Some(c) = cached {
            // The same store version is not the same record: a key deleted and re-created
            // (elsewhere) starts its versions again. Only a record equal in every field to the
            // verified one is served without a new check: one changed in storage behind the
            // store's back (its version and MAC kept) is verified again, and refused.
            let same = c.store_version == stored.version
                && Record::parse(name, &stored.data).is_ok_and(|r| r == c.record);
            if same {
                let fresh = Arc::new(c.refreshed());
                self.remember(fresh.clone());
                return Ok(fresh);
            }
        }
        let state = self.verify(name, &stored.data, stored.version).await?;
        self.remember(state.clone());
        Ok(state)
    }
}

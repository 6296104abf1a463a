//! The [`Keyring`]: the key hierarchy's one API. Every face of rootseal (HTTP transit, the
//! OpenBao KMS plugin, the CLI) calls it; none talks to the HSM directly.
//!
//! It owns the policy of the hierarchy: which L1 keys exist and their versions, lifecycle checks
//! (`min_decryption_version`, allowed operations), where sealed records live ([`KekStore`]), and
//! the cache of loaded keys. One file per part:
//! * [`api`]: the types callers pass and get back;
//! * [`record`]: the stored KEK record format;
//! * [`state`]: a loaded key and its parsed blobs;
//! * [`jobs`]: what runs on an HSM worker (unwrap an L1, seal a new one, MAC a record);
//! * [`keys`]: create, read, list, delete, rotate, configure;
//! * [`crypto`]: encrypt, decrypt, rewrap, data keys;
//! * [`sign`]: sign, verify, HMAC, random bytes;
//! * [`der`]: the DER of public keys and signatures;
//! * [`batch`]: bulk-seal batch keys;
//! * [`rotation`]: root rotation, re-sealing every record under a new root;
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
pub(crate) mod crypto;
mod der;
pub(crate) mod governance;
mod jobs;
mod keys;
pub(crate) mod record;
pub(crate) mod rotation;
pub(crate) mod sign;
mod state;

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
    writes: tokio::sync::Mutex<()>,
    /// The last custody check (at open, and at every health check).
    custody: RwLock<CustodyReport>,
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
                writes: tokio::sync::Mutex::new(()),
                custody: RwLock::new(custody),
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
        self.inner
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(state.record.name.clone(), state);
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
        Ok(Arc::new(KeyState::from_record(record, store_version)?))
    }

    /// Caches and returns the state of a record this process just wrote at `store_version`
    /// (no store read, no MAC check: the HSM made the MAC a moment ago).
    fn written(&self, record: Record, store_version: u64) -> Result<Arc<KeyState>> {
        let state = Arc::new(KeyState::from_record(record, store_version)?);
        self.remember(state.clone());
        Ok(state)
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

//! The [`Keyring`]: the key hierarchy's one API. Every face of rootseal (HTTP transit, the
//! OpenBao KMS plugin, the CLI) calls it; none talks to the HSM directly.
//!
//! It owns the policy of the hierarchy: which L1 keys exist and their versions, lifecycle checks
//! (`min_decryption_version`, allowed operations), where sealed records live ([`KekStore`]), and
//! the cache of unwrapped session objects inside the HSM workers.

use std::collections::BTreeMap;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::error::KeyringError;
use crate::hsm::Hsm;
use crate::store::KekStore;

/// Result type of the keyring.
pub type Result<T, E = KeyringError> = std::result::Result<T, E>;

/// An operation a key may be allowed to do. Enforced on every call; stored in every sealed blob.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyOp {
    /// Transit encrypt (and the encrypt half of rewrap).
    Encrypt,
    /// Transit decrypt (and the decrypt half of rewrap).
    Decrypt,
    /// Generate Level 2 data keys.
    Datakey,
    /// Wrap and unwrap bulk-seal batch keys.
    BulkSeal,
}

impl KeyOp {
    /// Every operation: the default for new keys.
    pub const ALL: [KeyOp; 4] = [
        KeyOp::Encrypt,
        KeyOp::Decrypt,
        KeyOp::Datakey,
        KeyOp::BulkSeal,
    ];

    /// The name used in configs and errors.
    pub fn name(self) -> &'static str {
        match self {
            KeyOp::Encrypt => "encrypt",
            KeyOp::Decrypt => "decrypt",
            KeyOp::Datakey => "datakey",
            KeyOp::BulkSeal => "bulk_seal",
        }
    }
}

/// Options for a new key.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Allowed operations; `None` means all of [`KeyOp::ALL`].
    pub allowed_ops: Option<Vec<KeyOp>>,
    /// Whether the key may be deleted (Vault's `deletion_allowed`), default false.
    pub deletion_allowed: bool,
    /// Auto-rotation period in seconds (0 = never), Vault's `auto_rotate_period`.
    pub auto_rotate_period_secs: u64,
}

/// A key as Vault's `GET transit/keys/:name` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// Always `aes256-gcm96`.
    pub key_type: &'static str,
    /// The newest version.
    pub latest_version: u32,
    /// Ciphertexts older than this are refused.
    pub min_decryption_version: u32,
    /// Encryption uses at least this version (0 = latest).
    pub min_encryption_version: u32,
    /// Whether `DELETE` is allowed.
    pub deletion_allowed: bool,
    /// Auto-rotation period in seconds (0 = off).
    pub auto_rotate_period_secs: u64,
    /// Creation time (unix seconds) of each live version.
    pub versions: BTreeMap<u32, u64>,
    /// Allowed operations.
    pub allowed_ops: Vec<KeyOp>,
}

/// Changes to a key's configuration (`POST transit/keys/:name/config`); `None` leaves a field.
#[derive(Clone, Debug, Default)]
pub struct KeyConfigUpdate {
    /// New `min_decryption_version`.
    pub min_decryption_version: Option<u32>,
    /// New `min_encryption_version`.
    pub min_encryption_version: Option<u32>,
    /// New `deletion_allowed`.
    pub deletion_allowed: Option<bool>,
    /// New `auto_rotate_period` in seconds.
    pub auto_rotate_period_secs: Option<u64>,
}

/// A ciphertext under one key version: `iv (12) ‖ ciphertext ‖ tag (16)`, as Vault's aes256-gcm96.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The key version that sealed it.
    pub version: u32,
    /// `iv ‖ ct ‖ tag`.
    pub bytes: Vec<u8>,
}

/// One item to encrypt.
pub struct EncryptItem {
    /// The plaintext (zeroized on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Additional authenticated data (Vault's `associated_data`), may be empty.
    pub aad: Vec<u8>,
}

/// One item to decrypt.
#[derive(Clone, Debug)]
pub struct DecryptItem {
    /// The ciphertext and its version.
    pub sealed: Sealed,
    /// Additional authenticated data given at encryption.
    pub aad: Vec<u8>,
}

/// A fresh bulk-seal batch key: its plaintext for software AES-GCM, and its wrapped form
/// (sealed under the L1 version inside the HSM) that travels with every item.
pub struct BatchKey {
    /// The L1 version that wraps it.
    pub version: u32,
    /// The batch key sealed under that L1 version (`iv ‖ ct ‖ tag`).
    pub wrapped: Vec<u8>,
    /// The 32-byte key (zeroized on drop).
    pub key: Zeroizing<[u8; 32]>,
}

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
    refresh: Duration,
}

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use serde::{Deserialize, Serialize};

use crate::blob::{self, BlobHeader, SealedBlob};
use crate::error::Error as HsmError;
use crate::hsm::{SessionCtx, TokenIdentity};
use crate::root::{self, RootAttributes, RootId, RootInfo, RootRole};
use crate::store::valid_key_name;

/// The `format` field of a KEK record.
pub const RECORD_FORMAT: &str = "rootseal-kek";
/// The record format version this code writes.
pub const RECORD_VERSION: u16 = 1;

/// A key's configuration, as stored (and MACed) in its record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    min_decryption_version: u32,
    min_encryption_version: u32,
    deletion_allowed: bool,
    auto_rotate_period_secs: u64,
    allowed_ops: Vec<KeyOp>,
    created: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionEntry {
    version: u32,
    created: u64,
    /// The sealed blob, base64.
    blob: String,
}

/// A KEK record as stored: every version's sealed blob plus the key's configuration, MACed inside
/// the HSM with the MAC key of `root_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    format: String,
    format_version: u16,
    name: String,
    config: KeyConfig,
    versions: Vec<VersionEntry>,
    root_id: String,
    mac: String,
}

impl Record {
    /// The bytes the record MAC covers: the record serialised with an empty `mac`.
    fn signed_bytes(&self) -> Result<Vec<u8>> {
        let mut copy = self.clone();
        copy.mac = String::new();
        serde_json::to_vec(&copy).map_err(|e| {
            tracing::error!(error = %e, "cannot serialise record");
            KeyringError::Internal
        })
    }

    fn parse(name: &str, raw: &[u8]) -> Result<Record> {
        let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
            tracing::error!(key = name, error = %e, "stored entry is not JSON");
            KeyringError::Integrity
        })?;
        if v.get("format").and_then(|f| f.as_str()) != Some(RECORD_FORMAT) {
            tracing::error!(key = name, "stored entry is not a rootseal KEK record");
            return Err(KeyringError::Integrity);
        }
        let fv = v
            .get("format_version")
            .and_then(|f| f.as_u64())
            .and_then(|f| u16::try_from(f).ok())
            .unwrap_or(u16::MAX);
        if fv != RECORD_VERSION {
            tracing::error!(
                key = name,
                format_version = fv,
                "unsupported KEK record version"
            );
            return Err(KeyringError::UnsupportedFormat(fv));
        }
        let r: Record = serde_json::from_value(v).map_err(|e| {
            tracing::error!(key = name, error = %e, "malformed KEK record");
            KeyringError::Integrity
        })?;
        if r.name != name {
            tracing::error!(key = name, record = %r.name, "record is stored under another name");
            return Err(KeyringError::Integrity);
        }
        Ok(r)
    }
}

/// A parsed blob ready for the HSM, with the digest that keys the session cache.
struct BlobRef {
    digest: [u8; 32],
    parsed: SealedBlob,
}

impl BlobRef {
    fn new(raw: &[u8]) -> std::result::Result<BlobRef, blob::BlobError> {
        let parsed = blob::decode(raw)?;
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, raw);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(d.as_ref());
        Ok(BlobRef { digest, parsed })
    }
}

/// A loaded, verified key.
struct KeyState {
    record: Record,
    store_version: u64,
    blobs: BTreeMap<u32, Arc<BlobRef>>,
    loaded_at: Instant,
}

impl KeyState {
    fn latest(&self) -> u32 {
        self.blobs.keys().next_back().copied().unwrap_or(0)
    }

    fn info(&self) -> KeyInfo {
        let c = &self.record.config;
        KeyInfo {
            name: self.record.name.clone(),
            key_type: "aes256-gcm96",
            latest_version: self.latest(),
            min_decryption_version: c.min_decryption_version,
            min_encryption_version: c.min_encryption_version,
            deletion_allowed: c.deletion_allowed,
            auto_rotate_period_secs: c.auto_rotate_period_secs,
            versions: self
                .record
                .versions
                .iter()
                .map(|v| (v.version, v.created))
                .collect(),
            allowed_ops: c.allowed_ops.clone(),
        }
    }

    fn allows(&self, op: KeyOp) -> Result<()> {
        if self.record.config.allowed_ops.contains(&op) {
            Ok(())
        } else {
            Err(KeyringError::PolicyDenied(op.name()))
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The AAD that binds a bulk-seal batch key to its key name and version.
fn batch_key_aad(name: &str, version: u32) -> Vec<u8> {
    format!("rootseal:batch-key:v1:{name}:{version}").into_bytes()
}

/// What a root rotation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootRotationReport {
    /// The root that was replaced (none when resuming after it was already destroyed).
    pub old_root: Option<String>,
    /// The new active root.
    pub new_root: String,
    /// Records re-sealed by this run.
    pub resealed: usize,
    /// Records found already under the new root (moved by an earlier, interrupted run).
    pub already_done: usize,
}

/// The state of the roots on the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootStatus {
    /// The token.
    pub token: TokenIdentity,
    /// Every root found, with its role.
    pub roots: Vec<RootInfo>,
}

/// What `init` found or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// A new root was created.
    Created(RootId),
    /// A root already existed; nothing changed.
    Exists(RootId),
}

// ---------------------------------------------------------------------------------------------
// Work done on an HSM worker (blocking, inside one session).

fn check_blob_identity(ctx: &SessionCtx<'_>, b: &SealedBlob) -> std::result::Result<(), HsmError> {
    let h = &b.header.hsm;
    let me = ctx.identity;
    if h.manufacturer != me.manufacturer || h.model != me.model || h.serial != me.serial {
        return Err(HsmError::Blob(format!(
            "key {:?} v{} was sealed by token {} {} serial {}, but this token is {}",
            b.header.key_name, b.header.key_version, h.manufacturer, h.model, h.serial, me
        )));
    }
    if b.header.level != 1 {
        return Err(HsmError::Blob(format!(
            "blob level {} is not 1",
            b.header.level
        )));
    }
    Ok(())
}

/// The L1 session object for `b`: from the session cache, or verified and unwrapped under L0.
fn l1_handle(ctx: &mut SessionCtx<'_>, b: &BlobRef) -> std::result::Result<ObjectHandle, HsmError> {
    if let Some(h) = ctx.cached_l1(&b.digest) {
        return Ok(h);
    }
    check_blob_identity(ctx, &b.parsed)?;
    let root = ctx.root(&b.parsed.root_id)?;
    ctx.hmac_verify(root.mac, &b.parsed.signed, &b.parsed.mac)?;
    let h = ctx.unwrap_kwp(root.wrap, &b.parsed.wrapped, false)?;
    ctx.cache_l1(b.digest, h);
    Ok(h)
}

/// Generates a new L1 inside the HSM and seals it under `root_id`. Returns the raw blob.
fn seal_new_l1(
    ctx: &mut SessionCtx<'_>,
    root_id: &RootId,
    name: &str,
    version: u32,
    ops: &[KeyOp],
) -> std::result::Result<Vec<u8>, HsmError> {
    let root = ctx.root(root_id)?;
    // Extractable only so it can be wrapped under L0 once; destroyed right after.
    let k = ctx.generate(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ],
    )?;
    let wrapped = ctx.wrap_kwp(root.wrap, k);
    let _ = ctx.destroy(k);
    let header = BlobHeader {
        level: 1,
        key_name: name.to_owned(),
        key_version: version,
        root_id: root_id.to_hex(),
        hsm: ctx.identity.clone(),
        created: now(),
        allowed_ops: ops.to_vec(),
        policy_digest: String::new(),
        algorithm: "aes-256-gcm".into(),
        wrap_mechanism: "CKM_AES_KEY_WRAP_PAD".into(),
    };
    seal_blob(ctx, root.mac, &header, &wrapped?)
}

fn seal_blob(
    ctx: &mut SessionCtx<'_>,
    mac_key: ObjectHandle,
    header: &BlobHeader,
    wrapped: &[u8],
) -> std::result::Result<Vec<u8>, HsmError> {
    let unsigned =
        blob::encode_unsigned(header, wrapped).map_err(|e| HsmError::Blob(e.to_string()))?;
    let mac = ctx.hmac(mac_key, &unsigned)?;
    Ok(blob::finish(unsigned, &mac))
}

/// MACs a record under `root_id` (sets `root_id` and `mac`).
fn mac_record(
    ctx: &mut SessionCtx<'_>,
    record: &mut Record,
    root_id: &RootId,
) -> std::result::Result<(), HsmError> {
    let root = ctx.root(root_id)?;
    record.root_id = root_id.to_hex();
    record.mac = String::new();
    let bytes = serde_json::to_vec(&*record).map_err(|e| HsmError::Blob(e.to_string()))?;
    let mac = ctx.hmac(root.mac, &bytes)?;
    record.mac = B64.encode(mac);
    Ok(())
}

/// Where new blobs go: the `next` root while a rotation runs, else the active root.
fn seal_target(ctx: &mut SessionCtx<'_>) -> std::result::Result<Option<RootId>, HsmError> {
    let roots = root::list(ctx)?;
    if let Some(next) = roots
        .iter()
        .find(|r| r.role == RootRole::Next && r.complete)
    {
        // A `next` root left broken by an interrupted rotation is skipped (the rotation's next
        // run replaces it); new blobs then go under the active root.
        if root::self_test(ctx, &next.id) {
            return Ok(Some(next.id));
        }
    }
    root::active(ctx)
}

// ---------------------------------------------------------------------------------------------

impl Keyring {
    /// Opens the keyring over `hsm` and `store`. Checks that the token holds a root.
    ///
    /// # Errors
    /// [`KeyringError::NoRoot`] when `rootseal init` has not run on this token;
    /// [`KeyringError::HsmUnavailable`] when the HSM does not answer.
    pub async fn open(hsm: Hsm, store: Arc<dyn KekStore>) -> Result<Keyring> {
        let active = hsm.run(root::active).await?;
        if active.is_none() {
            return Err(KeyringError::NoRoot);
        }
        Ok(Keyring {
            inner: Arc::new(Inner {
                hsm,
                store,
                keys: RwLock::new(HashMap::new()),
                writes: tokio::sync::Mutex::new(()),
                refresh: Duration::from_secs(5),
            }),
        })
    }

    /// Creates the root (L0 wrap key and MAC key) on the token unless one exists.
    ///
    /// # Errors
    /// HSM errors.
    pub async fn init_root(hsm: &Hsm) -> Result<InitOutcome> {
        Ok(hsm
            .run(|ctx| {
                let roots = root::list(ctx)?;
                // A root whose MAC key is missing (a process killed between the two key
                // generations) never sealed anything: sealing needs the MAC key. Replace it.
                for r in roots
                    .iter()
                    .filter(|r| r.role == RootRole::Active && !r.complete)
                {
                    tracing::warn!(root = %r.id, "removing a half-created root");
                    root::destroy(ctx, &r.id)?;
                }
                if let Some(id) = root::active(ctx)? {
                    return Ok(InitOutcome::Exists(id));
                }
                Ok(InitOutcome::Created(root::create(ctx, RootRole::Active)?))
            })
            .await?)
    }

    /// The roots on the token.
    ///
    /// # Errors
    /// HSM errors.
    pub async fn root_status(hsm: &Hsm) -> Result<RootStatus> {
        let token = hsm.identity().clone();
        let roots = hsm.run(root::list).await?;
        Ok(RootStatus { token, roots })
    }

    /// Reads back the protection attributes of root `id`'s L0 key (or MAC key).
    ///
    /// # Errors
    /// HSM errors; `Integrity` when the root is missing.
    pub async fn root_attributes(hsm: &Hsm, id: RootId, mac: bool) -> Result<RootAttributes> {
        Ok(hsm
            .run(move |ctx| root::read_attributes(ctx, &id, mac))
            .await?)
    }

    /// Whether the keyring can serve: the HSM answers and the token holds a complete root (L0 wrap
    /// key and MAC key) to seal under. One HSM job.
    ///
    /// # Errors
    /// `HsmUnavailable` when the HSM does not answer; `NoRoot` when the root is missing or
    /// half-made.
    pub async fn health(&self) -> Result<()> {
        let ok = self
            .inner
            .hsm
            .run(|ctx| {
                let target = seal_target(ctx)?;
                Ok(match target {
                    Some(id) => ctx.root(&id).is_ok(),
                    None => false,
                })
            })
            .await?;
        if ok {
            Ok(())
        } else {
            tracing::error!("health: the token has no complete root key");
            Err(KeyringError::NoRoot)
        }
    }

    /// The HSM this keyring uses.
    pub fn hsm(&self) -> &Hsm {
        &self.inner.hsm
    }

    /// The store this keyring uses.
    pub fn store(&self) -> &Arc<dyn KekStore> {
        &self.inner.store
    }

    fn check_name(name: &str) -> Result<()> {
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

    /// Verifies a stored record in the HSM (record MAC) and parses its blobs.
    async fn verify(&self, name: &str, data: &[u8], store_version: u64) -> Result<Arc<KeyState>> {
        let record = Record::parse(name, data)?;
        let root_id = RootId::from_hex(&record.root_id).ok_or_else(|| {
            tracing::error!(key = name, "record root id is malformed");
            KeyringError::Integrity
        })?;
        let signed = record.signed_bytes()?;
        let mac = B64.decode(&record.mac).map_err(|_| {
            tracing::error!(key = name, "record MAC is not base64");
            KeyringError::Integrity
        })?;
        self.inner
            .hsm
            .run(move |ctx| {
                let root = ctx.root(&root_id)?;
                ctx.hmac_verify(root.mac, &signed, &mac)
            })
            .await
            .inspect_err(|e| tracing::error!(key = name, error = %e, "record MAC check failed"))?;
        let mut blobs = BTreeMap::new();
        for v in &record.versions {
            let raw = B64.decode(&v.blob).map_err(|_| KeyringError::Integrity)?;
            let b = BlobRef::new(&raw).map_err(|e| {
                tracing::error!(key = name, version = v.version, error = %e, "sealed blob rejected");
                match e {
                    blob::BlobError::UnsupportedVersion(n) => KeyringError::UnsupportedFormat(n),
                    _ => KeyringError::Integrity,
                }
            })?;
            if b.parsed.header.key_name != name || b.parsed.header.key_version != v.version {
                tracing::error!(
                    key = name,
                    version = v.version,
                    "blob belongs to another key or version"
                );
                return Err(KeyringError::Integrity);
            }
            blobs.insert(v.version, Arc::new(b));
        }
        if blobs.is_empty() {
            tracing::error!(key = name, "record has no versions");
            return Err(KeyringError::Integrity);
        }
        Ok(Arc::new(KeyState {
            record,
            store_version,
            blobs,
            loaded_at: Instant::now(),
        }))
    }

    /// The key's state: cached, or read from the store and verified. With the store unreachable,
    /// a cached key keeps serving.
    async fn load(&self, name: &str, force: bool) -> Result<Arc<KeyState>> {
        Self::check_name(name)?;
        let cached = self.cached(name);
        if let Some(c) = &cached {
            if !force && c.loaded_at.elapsed() < self.inner.refresh {
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
            if c.store_version == stored.version {
                let fresh = Arc::new(KeyState {
                    record: c.record.clone(),
                    store_version: c.store_version,
                    blobs: c.blobs.clone(),
                    loaded_at: Instant::now(),
                });
                self.remember(fresh.clone());
                return Ok(fresh);
            }
        }
        let state = self.verify(name, &stored.data, stored.version).await?;
        self.remember(state.clone());
        Ok(state)
    }

    /// Creates key `name` (version 1) unless it exists; returns its description.
    ///
    /// # Errors
    /// `InvalidRequest` for a bad name, HSM and store errors.
    pub async fn create_key(&self, name: &str, opts: CreateOptions) -> Result<KeyInfo> {
        Self::check_name(name)?;
        match self.load(name, true).await {
            Ok(s) => return Ok(s.info()),
            Err(KeyringError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let ops = opts.allowed_ops.unwrap_or_else(|| KeyOp::ALL.to_vec());
        if ops.is_empty() {
            return Err(KeyringError::InvalidRequest(
                "allowed operations may not be empty".into(),
            ));
        }
        let owned = name.to_owned();
        let config = KeyConfig {
            min_decryption_version: 1,
            min_encryption_version: 0,
            deletion_allowed: opts.deletion_allowed,
            auto_rotate_period_secs: opts.auto_rotate_period_secs,
            allowed_ops: ops.clone(),
            created: now(),
        };
        let record = self
            .inner
            .hsm
            .run(move |ctx| {
                let target =
                    seal_target(ctx)?.ok_or_else(|| HsmError::RootMissing("active".into()))?;
                let raw = seal_new_l1(ctx, &target, &owned, 1, &ops)?;
                let mut record = Record {
                    format: RECORD_FORMAT.into(),
                    format_version: RECORD_VERSION,
                    name: owned.clone(),
                    config: config.clone(),
                    versions: vec![VersionEntry {
                        version: 1,
                        created: now(),
                        blob: B64.encode(raw),
                    }],
                    root_id: String::new(),
                    mac: String::new(),
                };
                mac_record(ctx, &mut record, &target)?;
                Ok(record)
            })
            .await?;
        let bytes = serde_json::to_vec(&record).map_err(|_| KeyringError::Internal)?;
        match self.inner.store.put(name, bytes, 0).await {
            Ok(_) | Err(crate::store::StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(key = name, "key created");
        Ok(self.load(name, true).await?.info())
    }

    /// Describes key `name`.
    ///
    /// # Errors
    /// `NotFound`, store and HSM errors.
    pub async fn key_info(&self, name: &str) -> Result<KeyInfo> {
        Ok(self.load(name, false).await?.info())
    }

    /// Lists key names.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list_keys(&self) -> Result<Vec<String>> {
        Ok(self.inner.store.list().await?)
    }

    /// Deletes key `name` if its configuration allows it.
    ///
    /// # Errors
    /// `DeletionNotAllowed`, `NotFound`, store errors.
    pub async fn delete_key(&self, name: &str) -> Result<()> {
        let s = self.load(name, true).await?;
        if !s.record.config.deletion_allowed {
            return Err(KeyringError::DeletionNotAllowed);
        }
        self.inner.store.delete(name).await?;
        self.forget(name);
        tracing::info!(key = name, "key deleted");
        Ok(())
    }

    /// Read-modify-write of a record with check-and-set; `f` returns the new record (unsigned) or
    /// `None` for no change. Retries on conflicts.
    async fn modify<F>(&self, name: &str, mut f: F) -> Result<Arc<KeyState>>
    where
        F: FnMut(&KeyState) -> Result<Option<(Record, bool)>>,
    {
        let _guard = self.inner.writes.lock().await;
        for _ in 0..8 {
            let s = self.load(name, true).await?;
            let Some((record, new_version)) = f(&s)? else {
                return Ok(s);
            };
            let ops = record.config.allowed_ops.clone();
            let owned = name.to_owned();
            let next = s.latest() + 1;
            let record = self
                .inner
                .hsm
                .run(move |ctx| {
                    let target =
                        seal_target(ctx)?.ok_or_else(|| HsmError::RootMissing("active".into()))?;
                    let mut r = record.clone();
                    if new_version {
                        let raw = seal_new_l1(ctx, &target, &owned, next, &ops)?;
                        r.versions.push(VersionEntry {
                            version: next,
                            created: now(),
                            blob: B64.encode(raw),
                        });
                    }
                    // The record MAC follows the seal target (the `next` root during a rotation).
                    mac_record(ctx, &mut r, &target)?;
                    Ok(r)
                })
                .await?;
            let bytes = serde_json::to_vec(&record).map_err(|_| KeyringError::Internal)?;
            match self.inner.store.put(name, bytes, s.store_version).await {
                Ok(_) => return self.load(name, true).await,
                Err(crate::store::StoreError::Conflict { .. }) => {
                    tracing::info!(key = name, "check-and-set conflict; retrying");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(KeyringError::Conflict)
    }

    /// Adds a new version to key `name`.
    ///
    /// # Errors
    /// `NotFound`, store and HSM errors.
    pub async fn rotate_key(&self, name: &str) -> Result<KeyInfo> {
        let s = self
            .modify(name, |s| Ok(Some((s.record.clone(), true))))
            .await?;
        tracing::info!(key = name, version = s.latest(), "key rotated");
        Ok(s.info())
    }

    /// Changes key `name`'s configuration.
    ///
    /// # Errors
    /// `InvalidRequest` for values Vault would refuse, `NotFound`, store and HSM errors.
    pub async fn update_key_config(&self, name: &str, upd: KeyConfigUpdate) -> Result<KeyInfo> {
        let s = self
            .modify(name, |s| {
                let mut r = s.record.clone();
                let latest = s.latest();
                if let Some(v) = upd.min_decryption_version {
                    if v > latest {
                        return Err(KeyringError::InvalidRequest(
                            "cannot set min_decryption_version higher than the latest version"
                                .into(),
                        ));
                    }
                    r.config.min_decryption_version = v.max(1);
                }
                if let Some(v) = upd.min_encryption_version {
                    if v > latest {
                        return Err(KeyringError::InvalidRequest(
                            "cannot set min_encryption_version higher than the latest version"
                                .into(),
                        ));
                    }
                    r.config.min_encryption_version = v;
                }
                if r.config.min_encryption_version != 0
                    && r.config.min_encryption_version < r.config.min_decryption_version
                {
                    return Err(KeyringError::InvalidRequest(
                        "min_encryption_version must be 0 or at least min_decryption_version"
                            .into(),
                    ));
                }
                if let Some(d) = upd.deletion_allowed {
                    r.config.deletion_allowed = d;
                }
                if let Some(p) = upd.auto_rotate_period_secs {
                    if p != 0 && p < 3600 {
                        return Err(KeyringError::InvalidRequest(
                            "auto_rotate_period must be 0 or at least one hour".into(),
                        ));
                    }
                    r.config.auto_rotate_period_secs = p;
                }
                if r.config == s.record.config {
                    return Ok(None);
                }
                Ok(Some((r, false)))
            })
            .await?;
        Ok(s.info())
    }

    /// Encrypts `items` under key `name` (version `version`, default the latest), inside the HSM
    /// with AES-256-GCM, in one HSM job. Creates the key first when `create_if_missing`.
    /// Per-item failures come back per item.
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, `InvalidRequest` (bad version), HSM and store errors.
    pub async fn encrypt(
        &self,
        name: &str,
        version: Option<u32>,
        items: Vec<EncryptItem>,
        create_if_missing: bool,
    ) -> Result<Vec<Result<Sealed>>> {
        let s = match self.load(name, false).await {
            Err(KeyringError::NotFound) if create_if_missing => {
                self.create_key(name, CreateOptions::default()).await?;
                self.load(name, false).await?
            }
            r => r?,
        };
        s.allows(KeyOp::Encrypt)?;
        let latest = s.latest();
        let v = match version {
            None | Some(0) => latest.max(s.record.config.min_encryption_version),
            Some(v) if v > latest => {
                return Err(KeyringError::InvalidRequest(
                    "requested version for encryption is higher than the latest key version".into(),
                ))
            }
            Some(v) if v < s.record.config.min_encryption_version => {
                return Err(KeyringError::InvalidRequest(
                    "requested version for encryption is less than the minimum encryption key version".into(),
                ))
            }
            Some(v) => v,
        };
        let blob = s.blobs.get(&v).cloned().ok_or(KeyringError::NotFound)?;
        let out = self
            .inner
            .hsm
            .run(move |ctx| {
                let k = l1_handle(ctx, &blob)?;
                let mut out = Vec::with_capacity(items.len());
                for it in &items {
                    match ctx.gcm_encrypt(k, &it.aad, &it.plaintext) {
                        Ok(bytes) => out.push(Ok(Sealed { version: v, bytes })),
                        Err(e) if e.recovery() != crate::error::Recovery::None => return Err(e),
                        Err(e) => out.push(Err(KeyringError::from(e))),
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(out)
    }

    /// Decrypts `items` under key `name` inside the HSM, in one HSM job. A ciphertext that does not
    /// verify is `InvalidCiphertext` for that item, with the detail in the log.
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, HSM and store errors.
    pub async fn decrypt(
        &self,
        name: &str,
        items: Vec<DecryptItem>,
    ) -> Result<Vec<Result<Zeroizing<Vec<u8>>>>> {
        let mut s = self.load(name, false).await?;
        s.allows(KeyOp::Decrypt)?;
        if items.iter().any(|i| i.sealed.version > s.latest()) {
            // Another replica may have rotated: look again before refusing.
            s = self.load(name, true).await?;
        }
        let min = s.record.config.min_decryption_version;
        let blobs = s.blobs.clone();
        let out = self
            .inner
            .hsm
            .run(move |ctx| {
                let mut out = Vec::with_capacity(items.len());
                for it in &items {
                    let v = it.sealed.version;
                    if v < min {
                        out.push(Err(KeyringError::VersionTooOld));
                        continue;
                    }
                    let Some(b) = blobs.get(&v) else {
                        tracing::debug!(version = v, "ciphertext names an unknown key version");
                        out.push(Err(KeyringError::InvalidCiphertext));
                        continue;
                    };
                    let k = l1_handle(ctx, b)?;
                    match ctx.gcm_decrypt(k, &it.aad, &it.sealed.bytes) {
                        Ok(pt) => out.push(Ok(pt)),
                        Err(HsmError::Integrity(what)) => {
                            tracing::debug!(what, "ciphertext failed to verify");
                            out.push(Err(KeyringError::InvalidCiphertext));
                        }
                        Err(e) if e.recovery() != crate::error::Recovery::None => return Err(e),
                        Err(e) => {
                            tracing::warn!(error = %e, "decrypt failed");
                            out.push(Err(KeyringError::InvalidCiphertext));
                        }
                    }
                }
                Ok(out)
            })
            .await?;
        Ok(out)
    }

    /// A new Level 2 data key of `len` bytes from the HSM RNG, and its ciphertext under the latest
    /// version of key `name` (one HSM job).
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, HSM errors.
    pub async fn generate_data_key(
        &self,
        name: &str,
        len: usize,
    ) -> Result<(Zeroizing<Vec<u8>>, Sealed)> {
        if !(1..=64).contains(&len) {
            return Err(KeyringError::InvalidRequest(
                "invalid data key length".into(),
            ));
        }
        let s = self.load(name, false).await?;
        s.allows(KeyOp::Datakey)?;
        let v = s.latest().max(s.record.config.min_encryption_version);
        let blob = s.blobs.get(&v).cloned().ok_or(KeyringError::NotFound)?;
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let k = l1_handle(ctx, &blob)?;
                let mut dk = Zeroizing::new(vec![0u8; len]);
                ctx.pooled_random(&mut dk)?;
                let bytes = ctx.gcm_encrypt(k, &[], &dk)?;
                Ok((dk, Sealed { version: v, bytes }))
            })
            .await?)
    }

    /// A fresh 256-bit bulk-seal batch key from the HSM RNG, sealed under the latest version of
    /// key `name` inside the HSM (one HSM job: at most one `C_GenerateRandom` and one
    /// `C_Encrypt`, once the L1 is cached).
    ///
    /// # Errors
    /// `NotFound`, `PolicyDenied`, HSM errors.
    pub async fn new_batch_key(&self, name: &str) -> Result<BatchKey> {
        let s = self.load(name, false).await?;
        s.allows(KeyOp::BulkSeal)?;
        let v = s.latest().max(s.record.config.min_encryption_version);
        let blob = s.blobs.get(&v).cloned().ok_or(KeyringError::NotFound)?;
        let aad = batch_key_aad(name, v);
        Ok(self
            .inner
            .hsm
            .run(move |ctx| {
                let k = l1_handle(ctx, &blob)?;
                let mut key = Zeroizing::new([0u8; 32]);
                ctx.pooled_random(key.as_mut())?;
                let wrapped = ctx.gcm_encrypt(k, &aad, key.as_ref())?;
                Ok(BatchKey {
                    version: v,
                    wrapped,
                    key,
                })
            })
            .await?)
    }

    /// Unseals a batch key made by [`Keyring::new_batch_key`] inside the HSM.
    ///
    /// # Errors
    /// `InvalidCiphertext` when it does not verify under key `name` version `version`;
    /// `VersionTooOld`, `NotFound`, `PolicyDenied`, HSM errors.
    pub async fn open_batch_key(
        &self,
        name: &str,
        version: u32,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>> {
        let mut s = self.load(name, false).await?;
        s.allows(KeyOp::BulkSeal)?;
        if version > s.latest() {
            s = self.load(name, true).await?;
        }
        if version < s.record.config.min_decryption_version {
            return Err(KeyringError::VersionTooOld);
        }
        let blob = s
            .blobs
            .get(&version)
            .cloned()
            .ok_or(KeyringError::InvalidCiphertext)?;
        let aad = batch_key_aad(name, version);
        let wrapped = wrapped.to_vec();
        let r = self
            .inner
            .hsm
            .run(move |ctx| {
                let k = l1_handle(ctx, &blob)?;
                ctx.gcm_decrypt(k, &aad, &wrapped)
            })
            .await;
        match r {
            Ok(pt) => {
                let arr = <[u8; 32]>::try_from(pt.as_slice())
                    .map_err(|_| KeyringError::InvalidCiphertext)?;
                Ok(Zeroizing::new(arr))
            }
            Err(HsmError::Integrity(what)) => {
                tracing::debug!(what, "batch key failed to verify");
                Err(KeyringError::InvalidCiphertext)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Moves every sealed record to a new root: generates a new L0 (and MAC key) labelled `next`,
    /// unwraps each L1 inside the HSM and re-seals it under the new root, writes each record back
    /// with check-and-set, then destroys the old root and promotes the new one. Interrupted at any
    /// point, running it again finishes the job; every record stays readable throughout, because
    /// the old root is destroyed only after a full pass found nothing left under it.
    ///
    /// # Errors
    /// `NoRoot`, HSM and store errors (the run can be repeated).
    pub async fn rotate_root(&self, grace: Duration) -> Result<RootRotationReport> {
        let hsm = &self.inner.hsm;
        let roots = hsm.run(root::list).await?;
        let old = roots
            .iter()
            .find(|r| r.role == RootRole::Active)
            .map(|r| r.id);
        // A `next` root that is incomplete or fails its self-test was cut short while being
        // created: nothing was sealed under it (sealing needs both keys to work), so replace it.
        let mut roots = roots;
        for r in roots.clone().iter().filter(|r| r.role == RootRole::Next) {
            let id = r.id;
            let works = r.complete && hsm.run(move |ctx| Ok(root::self_test(ctx, &id))).await?;
            if !works {
                tracing::warn!(root = %id, "root rotation: replacing a half-created next root");
                hsm.run(move |ctx| root::destroy(ctx, &id)).await?;
                roots.retain(|x| x.id != id);
            }
        }
        let next = match roots
            .iter()
            .find(|r| r.role == RootRole::Next && r.complete)
        {
            Some(n) => n.id,
            None => {
                if old.is_none() {
                    return Err(KeyringError::NoRoot);
                }
                let id = hsm.run(|ctx| root::create(ctx, RootRole::Next)).await?;
                tracing::info!(root = %id, "root rotation: new root created");
                id
            }
        };
        let mut report = RootRotationReport {
            old_root: old.map(|o| o.to_hex()),
            new_root: next.to_hex(),
            ..Default::default()
        };
        let mut grace_done = false;
        loop {
            let mut moved = 0;
            let names = self.inner.store.list().await?;
            for name in &names {
                moved += self.reseal_record(name, next, &mut report).await?;
            }
            report.already_done = names.len().saturating_sub(report.resealed);
            if moved == 0 {
                if grace_done || old.is_none() {
                    break;
                }
                // A writer that sealed under the old root just before `next` appeared has had
                // time to store its record by now; look once more.
                tokio::time::sleep(grace).await;
                grace_done = true;
            }
        }
        if let Some(old) = old {
            hsm.run(move |ctx| root::destroy(ctx, &old)).await?;
            tracing::info!(root = %old, "root rotation: old root destroyed");
        }
        hsm.run(move |ctx| root::relabel(ctx, &next, RootRole::Active))
            .await?;
        self.inner
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        tracing::info!(root = %next, "root rotation: new root active");
        Ok(report)
    }

    /// Re-seals one record under `next` unless already there. Returns 1 when it wrote.
    async fn reseal_record(
        &self,
        name: &str,
        next: RootId,
        report: &mut RootRotationReport,
    ) -> Result<usize> {
        for _ in 0..8 {
            let Some(stored) = self.inner.store.get(name).await? else {
                return Ok(0);
            };
            let state = self.verify(name, &stored.data, stored.version).await?;
            let nh = next.to_hex();
            if state.record.root_id == nh
                && state.blobs.values().all(|b| b.parsed.header.root_id == nh)
            {
                return Ok(0);
            }
            let record = state.record.clone();
            let blobs: Vec<(u32, Arc<BlobRef>)> =
                state.blobs.iter().map(|(v, b)| (*v, b.clone())).collect();
            let record = self
                .inner
                .hsm
                .run(move |ctx| {
                    let mut r = record.clone();
                    let new_root = ctx.root(&next)?;
                    for (entry, (v, b)) in r.versions.iter_mut().zip(blobs.iter()) {
                        if entry.version != *v {
                            return Err(HsmError::Blob("record versions out of order".into()));
                        }
                        if b.parsed.root_id == next {
                            continue;
                        }
                        check_blob_identity(ctx, &b.parsed)?;
                        let old = ctx.root(&b.parsed.root_id)?;
                        ctx.hmac_verify(old.mac, &b.parsed.signed, &b.parsed.mac)?;
                        // Extractable only inside the HSM, only to be wrapped under the new L0,
                        // destroyed right after.
                        let k = ctx.unwrap_kwp(old.wrap, &b.parsed.wrapped, true)?;
                        let wrapped = ctx.wrap_kwp(new_root.wrap, k);
                        let _ = ctx.destroy(k);
                        let mut header = b.parsed.header.clone();
                        header.root_id = next.to_hex();
                        let raw = seal_blob(ctx, new_root.mac, &header, &wrapped?)?;
                        entry.blob = B64.encode(raw);
                    }
                    mac_record(ctx, &mut r, &next)?;
                    Ok(r)
                })
                .await?;
            let bytes = serde_json::to_vec(&record).map_err(|_| KeyringError::Internal)?;
            match self.inner.store.put(name, bytes, stored.version).await {
                Ok(_) => {
                    tracing::info!(key = name, "root rotation: record re-sealed");
                    report.resealed += 1;
                    return Ok(1);
                }
                Err(crate::store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(KeyringError::Conflict)
    }
}

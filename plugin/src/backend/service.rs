//! The `pb.Backend` service OpenBao calls (and `logical.PluginVersion`): one mount's secrets
//! engine.
//!
//! * `Setup` dials the broker connection it names and keeps the mount's [`PluginStorage`];
//! * the mount's [`Engine`] (HSM login, keyring over the [`PluginKekStore`], the transit router)
//!   is opened on first use from the stored `config/hsm`, and replaced by a write to it;
//! * `HandleRequest` answers `config/hsm` here and every transit path through the HTTP face's
//!   router ([`super::paths`]);
//! * `HandleExistenceCheck` says whether the key a path names exists (ACL `create` vs `update`);
//! * `InvalidateKey` drops the cached state of a record another node changed;
//! * `Initialize` opens the engine of a configured mount, and every open engine watches the
//!   token's roots: after a root rotation (`rootseal root rotate`, which cannot reach this
//!   storage) it re-seals the mount's records under the current root and marks the mount as
//!   moved on the token, so the next rotation run may destroy the old root
//!   ([`Keyring::reseal_own_stores`]);
//! * `SpecialPaths`: nothing unauthenticated; `config/hsm` is a root path (needs `sudo`).

use std::sync::Arc;

use rootseal_hsm::{Custody, Hsm, Keyring, KeyringError};
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};
use tonic::{Request, Response, Status};

use super::hsm_config::{HsmEntry, CONFIG_ENTRY};
use super::paths::{self, Existence, Reply};
use super::proto::{logical, pb};
use super::storage::{key_entry, key_name_of, PluginKekStore, PluginStorage};
use crate::goplugin::broker::BrokerDialer;
use crate::routes::{transit_router, ApiConfig, AppState};

/// `TypeReply.type` of a secrets engine (`logical.TypeLogical`).
const TYPE_LOGICAL: u32 = 1;

/// The version this plugin reports (and is registered with).
pub fn plugin_version() -> String {
    format!("v{}", env!("CARGO_PKG_VERSION"))
}

/// How often an open engine checks the token for a root rotation to follow.
const ROOT_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// A mount's open HSM and the transit router over it.
struct Engine {
    keyring: Keyring,
    router: axum::Router,
    /// The root watcher ([`watch_roots`]), stopped with the engine.
    watcher: tokio::task::AbortHandle,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Follows root rotations: at once, then every [`ROOT_CHECK`], re-seals the mount's records
/// under the current root when the token holds a retiring root this mount has not moved from.
async fn watch_roots(keyring: Keyring, backend: String) {
    loop {
        match keyring.reseal_own_stores().await {
            Ok(Some(r)) => tracing::info!(
                backend = %backend,
                root = %r.new_root,
                resealed = r.resealed,
                already_done = r.already_done,
                "root rotation followed: this mount's records are under the current root"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                backend = %backend,
                error = %e,
                "root rotation: cannot re-seal this mount's records; the old root stays"
            ),
        }
        tokio::time::sleep(ROOT_CHECK).await;
    }
}

/// The mount the host set up.
struct Mount {
    storage: PluginStorage,
    uuid: String,
    /// `None` until first use, or after `config/hsm` changed.
    engine: RwLock<Option<Arc<Engine>>>,
    /// Serialises opening the engine and writing `config/hsm`.
    opening: Mutex<()>,
}

/// The `pb.Backend` service.
pub struct BackendService {
    dialer: BrokerDialer,
    mount: RwLock<Option<Arc<Mount>>>,
}

impl std::fmt::Debug for BackendService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendService").finish_non_exhaustive()
    }
}

/// Why the engine cannot serve. Messages are for the client: they name states, never a PIN.
#[derive(Debug)]
enum EngineError {
    /// The mount has no `config/hsm` yet.
    NotConfigured,
    /// A client's mistake in `config/hsm` (wrong token, wrong PIN source, no root, …): 400.
    Refused(String),
    /// The HSM or storage does not answer: 503.
    Unavailable(String),
}

impl EngineError {
    fn reply(&self) -> Reply {
        match self {
            Self::NotConfigured => Reply::bad_request(
                "this mount has no HSM yet: write config/hsm (module, token_label or \
                 token_serial, pin_file or pin_env)",
            ),
            Self::Refused(m) => Reply::bad_request(m.clone()),
            Self::Unavailable(m) => Reply::coded(503, m.clone()),
        }
    }
}

fn random_token() -> SecretString {
    let mut b = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        tracing::warn!("random source failed");
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    SecretString::from(hex)
}

/// Opens the HSM `entry` names and a keyring over the mount's storage. `existing` is a key the
/// mount already holds: it must verify under this HSM's root (else it is the wrong HSM).
async fn open_engine(
    entry: &HsmEntry,
    mount: &Mount,
    existing: Option<&str>,
) -> Result<(Engine, HsmEntry), EngineError> {
    let pin = entry
        .read_pin()
        .map_err(|e| EngineError::Refused(e.to_string()))?;
    let cfg = entry.hsm_config(pin);
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .map_err(|e| EngineError::Unavailable(format!("HSM open task failed: {e}")))?
        .map_err(|e| match e {
            rootseal_hsm::Error::Unavailable(_) => {
                EngineError::Unavailable(format!("the HSM is not available: {e}"))
            }
            other => EngineError::Refused(format!("cannot use the HSM: {other}")),
        })?;
    let identity = hsm.identity().clone();
    let store = Arc::new(PluginKekStore::new(mount.storage.clone(), &mount.uuid));
    let keyring = Keyring::open(hsm, store).await.map_err(|e| match e {
        KeyringError::NoRoot => EngineError::Refused(
            "the HSM token holds no rootseal root: run `rootseal init` on it first".into(),
        ),
        KeyringError::HsmUnavailable(_) | KeyringError::StoreUnavailable(_) => {
            EngineError::Unavailable(e.to_string())
        }
        other => EngineError::Refused(format!("cannot open the keyring: {other}")),
    })?;
    if keyring.custody().verdict() == Custody::Weak {
        return Err(EngineError::Refused(format!(
            "the HSM root is weak ({}): run `rootseal root rotate` as the Security Officer",
            keyring.custody().failures().join("; ")
        )));
    }
    if let Some(name) = existing {
        match keyring.key_info(name).await {
            Ok(_) => {}
            Err(KeyringError::Integrity(c)) => {
                tracing::warn!(key = name, cause = %c, "config/hsm: key does not verify under this HSM");
                return Err(EngineError::Refused(format!(
                    "wrong HSM: this mount's keys (key {name:?}) were not sealed under the root \
                     of token {identity}"
                )));
            }
            Err(KeyringError::NotFound) => {}
            Err(e @ (KeyringError::HsmUnavailable(_) | KeyringError::StoreUnavailable(_))) => {
                return Err(EngineError::Unavailable(e.to_string()))
            }
            Err(e) => {
                return Err(EngineError::Refused(format!(
                    "wrong HSM: this mount's key {name:?} cannot be opened under token \
                     {identity}: {e}"
                )))
            }
        }
    }
    let state = AppState::new(keyring.clone(), random_token(), ApiConfig::default());
    let router = transit_router(state);
    let mut accepted = entry.clone();
    accepted.token = Some(identity);
    let watcher = tokio::spawn(watch_roots(keyring.clone(), mount.uuid.clone())).abort_handle();
    Ok((
        Engine {
            keyring,
            router,
            watcher,
        },
        accepted,
    ))
}

impl Mount {
    async fn entry(&self) -> Result<Option<HsmEntry>, EngineError> {
        let raw = self
            .storage
            .get(CONFIG_ENTRY)
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        raw.map(|r| HsmEntry::decode(&r).map_err(EngineError::Refused))
            .transpose()
    }

    /// The engine, opened from the stored `config/hsm` on first use.
    async fn engine(&self) -> Result<Arc<Engine>, EngineError> {
        if let Some(e) = self.engine.read().await.as_ref() {
            return Ok(e.clone());
        }
        let _g = self.opening.lock().await;
        if let Some(e) = self.engine.read().await.as_ref() {
            return Ok(e.clone());
        }
        let entry = self.entry().await?.ok_or(EngineError::NotConfigured)?;
        let (engine, _) = open_engine(&entry, self, None).await?;
        let engine = Arc::new(engine);
        *self.engine.write().await = Some(engine.clone());
        tracing::info!(backend = %self.uuid, "HSM opened for this mount");
        Ok(engine)
    }

    async fn first_key(&self) -> Result<Option<String>, EngineError> {
        let names = self
            .storage
            .list(super::storage::KEYS_PREFIX)
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        Ok(names.into_iter().find(|n| rootseal_hsm::valid_key_name(n)))
    }

    /// `config/hsm`.
    async fn config_hsm(&self, req: &pb::Request) -> Reply {
        match req.operation.as_str() {
            "read" => match self.entry().await {
                Ok(Some(e)) => Reply::data(&e.public(), Vec::new()),
                Ok(None) => Reply::empty(),
                Err(e) => e.reply(),
            },
            "create" | "update" => self.write_config(req).await,
            "delete" => {
                let _g = self.opening.lock().await;
                if let Err(e) = self.storage.delete(CONFIG_ENTRY).await {
                    return EngineError::Unavailable(e.to_string()).reply();
                }
                *self.engine.write().await = None;
                Reply::empty()
            }
            _ => Reply::unsupported_operation(),
        }
    }

    async fn write_config(&self, req: &pb::Request) -> Reply {
        let data = match serde_json::from_str::<Value>(req.data.trim()) {
            Ok(Value::Object(m)) => m,
            Ok(Value::Null) => serde_json::Map::new(),
            _ => return Reply::bad_request("request data must be a JSON object"),
        };
        let entry = match HsmEntry::parse(&data) {
            Ok(e) => e,
            Err(e) => return Reply::bad_request(e.to_string()),
        };
        let _g = self.opening.lock().await;
        let existing = match self.first_key().await {
            Ok(k) => k,
            Err(e) => return e.reply(),
        };
        let (engine, accepted) = match open_engine(&entry, self, existing.as_deref()).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(backend = %self.uuid, error = ?e, "config/hsm refused");
                return e.reply();
            }
        };
        if let Err(e) = self.storage.put(CONFIG_ENTRY, accepted.encode()).await {
            return EngineError::Unavailable(e.to_string()).reply();
        }
        *self.engine.write().await = Some(Arc::new(engine));
        tracing::info!(backend = %self.uuid, "config/hsm written");
        Reply::data(&accepted.public(), Vec::new())
    }

    async fn handle(&self, req: &pb::Request) -> Reply {
        if req.path == CONFIG_ENTRY {
            return self.config_hsm(req).await;
        }
        if req.operation == "help" {
            return Reply::data(&serde_json::json!({ "help": paths::HELP }), Vec::new());
        }
        if paths::method(&req.operation).is_none() {
            return Reply::unsupported_operation();
        }
        match self.engine().await {
            Ok(engine) => paths::forward(engine.router.clone(), req).await,
            Err(e) => e.reply(),
        }
    }

    async fn exists(&self, path: &str) -> Result<(bool, bool), EngineError> {
        let key = match paths::existence(path) {
            Existence::None => return Ok((false, false)),
            Existence::HsmConfig => CONFIG_ENTRY.to_owned(),
            Existence::Key(name) if rootseal_hsm::valid_key_name(name) => key_entry(name),
            // An invalid name exists nowhere; the request itself then gets its 400.
            Existence::Key(_) => return Ok((true, false)),
        };
        let found = self
            .storage
            .get(&key)
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        Ok((true, found.is_some()))
    }

    async fn invalidate(&self, key: &str) {
        if key == CONFIG_ENTRY {
            *self.engine.write().await = None;
        } else if let Some(name) = key_name_of(key) {
            if let Some(e) = self.engine.read().await.as_ref() {
                e.keyring.invalidate(name);
            }
        }
    }
}

impl BackendService {
    /// A backend that reaches the host's storage through `dialer`.
    pub fn new(dialer: BrokerDialer) -> Self {
        Self {
            dialer,
            mount: RwLock::new(None),
        }
    }

    async fn mount(&self) -> Option<Arc<Mount>> {
        self.mount.read().await.clone()
    }
}

fn proto_reply(r: Reply) -> pb::HandleRequestReply {
    pb::HandleRequestReply {
        response: r.response,
        err: r.err,
    }
}

fn not_set_up() -> Reply {
    Reply::coded(503, "the plugin has not been set up by OpenBao")
}

#[tonic::async_trait]
impl pb::backend_server::Backend for BackendService {
    async fn handle_request(
        &self,
        request: Request<pb::HandleRequestArgs>,
    ) -> Result<Response<pb::HandleRequestReply>, Status> {
        let args = request.into_inner();
        let Some(req) = args.request else {
            return Ok(Response::new(proto_reply(Reply::bad_request("no request"))));
        };
        let reply = match self.mount().await {
            Some(m) => m.handle(&req).await,
            None => not_set_up(),
        };
        Ok(Response::new(proto_reply(reply)))
    }

    async fn special_paths(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<pb::SpecialPathsReply>, Status> {
        Ok(Response::new(pb::SpecialPathsReply {
            paths: Some(pb::Paths {
                root: vec![CONFIG_ENTRY.to_owned()],
                unauthenticated: Vec::new(),
                local_storage: Vec::new(),
                seal_wrap_storage: Vec::new(),
                write_forwarded_storage: Vec::new(),
            }),
        }))
    }

    async fn handle_existence_check(
        &self,
        request: Request<pb::HandleExistenceCheckArgs>,
    ) -> Result<Response<pb::HandleExistenceCheckReply>, Status> {
        let args = request.into_inner();
        let path = args.request.map(|r| r.path).unwrap_or_default();
        let Some(m) = self.mount().await else {
            return Ok(Response::new(pb::HandleExistenceCheckReply {
                check_found: false,
                exists: false,
                err: not_set_up().err,
            }));
        };
        let reply = match m.exists(&path).await {
            Ok((check_found, exists)) => pb::HandleExistenceCheckReply {
                check_found,
                exists,
                err: None,
            },
            Err(e) => pb::HandleExistenceCheckReply {
                check_found: false,
                exists: false,
                err: e.reply().err,
            },
        };
        Ok(Response::new(reply))
    }

    async fn cleanup(&self, _request: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        // The mount goes away (disable, reload, shutdown): drop the HSM sessions and storage.
        if let Some(m) = self.mount.write().await.take() {
            *m.engine.write().await = None;
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn invalidate_key(
        &self,
        request: Request<pb::InvalidateKeyArgs>,
    ) -> Result<Response<pb::Empty>, Status> {
        let key = request.into_inner().key;
        if let Some(m) = self.mount().await {
            m.invalidate(&key).await;
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn setup(
        &self,
        request: Request<pb::SetupArgs>,
    ) -> Result<Response<pb::SetupReply>, Status> {
        let args = request.into_inner();
        let channel = match self.dialer.dial(args.broker_id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach OpenBao's storage");
                return Ok(Response::new(pb::SetupReply {
                    err: format!("rootseal: cannot reach OpenBao's storage: {e}"),
                }));
            }
        };
        let mount = Arc::new(Mount {
            storage: PluginStorage::new(channel),
            uuid: args.backend_uuid.clone(),
            engine: RwLock::new(None),
            opening: Mutex::new(()),
        });
        *self.mount.write().await = Some(mount);
        tracing::debug!(backend = %args.backend_uuid, "backend set up");
        Ok(Response::new(pb::SetupReply { err: String::new() }))
    }

    async fn initialize(
        &self,
        _request: Request<pb::InitializeArgs>,
    ) -> Result<Response<pb::InitializeReply>, Status> {
        // A configured mount opens its HSM now (in the background: Initialize must not wait for
        // the HSM), so that it follows a root rotation even before its first request.
        if let Some(m) = self.mount().await {
            tokio::spawn(async move {
                match m.engine().await {
                    Ok(_) | Err(EngineError::NotConfigured) => {}
                    Err(e) => tracing::warn!(error = ?e, "the mount's HSM did not open"),
                }
            });
        }
        Ok(Response::new(pb::InitializeReply { err: None }))
    }

    async fn r#type(
        &self,
        _request: Request<pb::Empty>,
    ) -> Result<Response<pb::TypeReply>, Status> {
        Ok(Response::new(pb::TypeReply {
            r#type: TYPE_LOGICAL,
        }))
    }
}

/// `logical.PluginVersion`: the version OpenBao compares with the registered one.
#[derive(Debug, Default)]
pub struct VersionService;

#[tonic::async_trait]
impl logical::plugin_version_server::PluginVersion for VersionService {
    async fn version(
        &self,
        _request: Request<logical::Empty>,
    ) -> Result<Response<logical::VersionReply>, Status> {
        Ok(Response::new(logical::VersionReply {
            plugin_version: plugin_version(),
        }))
    }
}

//! [`VaultKvStore`]: sealed KEK records in Vault/OpenBao KV version 2.
//!
//! One KV entry per key name at `<kv_mount>/data/<prefix>/<name>`, holding
//! `{"rootseal_record": "<base64 of the record>", "format": "rootseal-kek/1"}`. Writes use KV v2
//! check-and-set (`options.cas`), so several rootseal replicas can share one Vault safely; the KV
//! entry's `metadata.version` is the record's version.
//!
//! The token is sent only as `X-Vault-Token`, is never logged and never appears in an error.

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use rootseal_hsm::{valid_key_name, BoxFuture, KekStore, StoreError, StoredRecord};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use crate::config::{normalize_address, normalize_mount, VaultSettings};

/// The `format` field of every KV entry rootseal writes (the entry wraps one KEK record).
const KV_ENTRY_FORMAT: &str = "rootseal-kek/1";
/// The prefix shared by every (present and future) record format.
const KV_ENTRY_FORMAT_FAMILY: &str = "rootseal-kek/";
/// TCP/TLS connect timeout towards Vault.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-request timeout towards Vault.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait before retrying a failed token renewal.
const RENEW_RETRY: Duration = Duration::from_secs(5);

/// Why a [`VaultKvStore`] could not be set up. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A store error (local file store, or Vault refusing us).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A setting is not acceptable (address, mount, prefix, token characters).
    #[error("invalid Vault storage setting: {0}")]
    InvalidSetting(String),
    /// The CA bundle for an https Vault could not be read or parsed.
    #[error("cannot use the CA bundle {path}: {reason}")]
    CaCert {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for Vault: {0}")]
    Client(String),
    /// Vault has no mount at `kv_mount` (or the token's policies grant nothing under it).
    #[error(
        "Vault at {address} has no KV mount at {mount}/, or the token is not valid or its \
         policies grant nothing under {mount}/ (enable it with: bao secrets enable -version=2 \
         -path={mount} kv)"
    )]
    MountMissing {
        /// The Vault address.
        address: String,
        /// The mount path.
        mount: String,
    },
    /// The mount is KV version 1.
    #[error(
        "the mount {mount}/ at {address} is KV version 1; rootseal needs KV version 2 for \
         check-and-set (upgrade it with: bao kv enable-versioning {mount}/)"
    )]
    KvVersion1 {
        /// The Vault address.
        address: String,
        /// The mount path.
        mount: String,
    },
    /// The mount is not a KV engine at all.
    #[error("the mount {mount}/ at {address} is a {found:?} secrets engine, not KV version 2")]
    NotKv {
        /// The Vault address.
        address: String,
        /// The mount path.
        mount: String,
        /// The engine type Vault reported.
        found: String,
    },
}

/// A [`KekStore`] over Vault/OpenBao KV version 2. Cheap to share behind an `Arc`.
///
/// Dropping the store stops its token-renewal task.
pub struct VaultKvStore {
    inner: Arc<Inner>,
    _renewal: Option<AbortOnDrop>,
}

struct Inner {
    client: reqwest::Client,
    address: String,
    token: SecretString,
    mount: String,
    prefix: String,
    mount_ok: OnceCell<()>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for VaultKvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKvStore")
            .field("address", &self.inner.address)
            .field("mount", &self.inner.mount)
            .field("prefix", &self.inner.prefix)
            .field("token", &"[REDACTED]")
            .finish()
    }
}

impl VaultKvStore {
    /// Build the store for `settings` (only `address`, `token`, `kv_mount`, `prefix` and
    /// `ca_cert` are used), check that the mount is KV version 2, and start renewing the token
    /// in the background when `auth/token/lookup-self` says it is renewable (at 2/3 of its TTL;
    /// failures are logged, never fatal).
    ///
    /// A Vault that cannot be reached, or is sealed, is **not** an error: rootseal may have to
    /// start first so that Vault can auto-unseal through it. The mount check then runs on the
    /// first operation, which fails with [`StoreError::Unavailable`] until Vault answers.
    ///
    /// Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`SetupError`] for a bad setting or CA bundle, or when Vault answers that the mount is
    /// missing, KV version 1, or not KV.
    pub async fn connect(settings: &VaultSettings) -> Result<Self, SetupError> {
        let address = normalize_address(&settings.address)
            .map_err(|e| SetupError::InvalidSetting(e.to_string()))?;
        let mount = normalize_mount("storage.kv_mount", &settings.kv_mount)
            .map_err(|e| SetupError::InvalidSetting(e.to_string()))?;
        let prefix = normalize_mount("storage.prefix", &settings.prefix)
            .map_err(|e| SetupError::InvalidSetting(e.to_string()))?;
        if settings.token.expose_secret().is_empty()
            || HeaderValue::from_str(settings.token.expose_secret()).is_err()
        {
            return Err(SetupError::InvalidSetting(
                "the Vault token is empty or contains characters not allowed in an HTTP header"
                    .into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // The token travels in `X-Vault-Token`, which reqwest does not strip on a redirect
                // to another host (only `Authorization` and `Cookie`). So a redirect is followed
                // only within the same origin (scheme, host and port); one elsewhere (a standby
                // pointing at the active node, or anyone who can answer for Vault) stops with
                // the redirect as the answer, and the token is not sent there. Point
                // `[storage] address` at the active node or a load balancer.
                let origin = |u: &reqwest::Url| (u.scheme().to_owned(), u.host_str().map(str::to_owned), u.port_or_known_default());
                let same = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| origin(first) == origin(attempt.url()));
                if !same {
                    tracing::warn!(
                        to = %attempt.url().host_str().unwrap_or("?"),
                        "Vault redirected to another host; not following (the token is not sent there)"
                    );
                    attempt.stop()
                } else if attempt.previous().len() > 3 {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }));
        if let Some(path) = &settings.ca_cert {
            let pem = std::fs::read(path).map_err(|e| SetupError::CaCert {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SetupError::CaCert {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(SetupError::CaCert {
                    path: path.clone(),
                    reason: "no PEM certificate in the file".into(),
                });
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder
            .build()
            .map_err(|e| SetupError::Client(error_chain(&e)))?;
        let inner = Arc::new(Inner {
            client,
            address,
            token: settings.token.clone(),
            mount,
            prefix,
            mount_ok: OnceCell::new(),
        });
        match inner.check_mount().await {
            Ok(()) => {
                let _ = inner.mount_ok.set(());
            }
            Err(SetupError::Store(StoreError::Unavailable(reason))) => {
                tracing::warn!(
                    store = %inner.describe(),
                    %reason,
                    "Vault is not reachable yet; the KV mount will be checked on first use"
                );
            }
            Err(e) => return Err(e),
        }
        let renewal = inner.start_renewal().await;
        tracing::info!(store = %inner.describe(), renewing = renewal.is_some(), "Vault KV v2 store ready");
        Ok(Self {
            inner,
            _renewal: renewal,
        })
    }

    /// Read a specific version of an entry, so that a caller can pin the version it verified.
    /// `Ok(None)` when the entry or that version does not exist (or was deleted); version 0 never
    /// exists.
    ///
    /// # Errors
    /// As for [`KekStore::get`].
    pub async fn get_version(
        &self,
        name: &str,
        version: u64,
    ) -> Result<Option<StoredRecord>, StoreError> {
        if version == 0 {
            check_name(name)?;
            return Ok(None);
        }
        self.inner.read(name, Some(version)).await
    }

    /// The Vault address this store talks to.
    pub fn address(&self) -> &str {
        &self.inner.address
    }
}

fn check_name(name: &str) -> Result<(), StoreError> {
    if valid_key_name(name) {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_owned()))
    }
}

/// An error and its sources, joined; reqwest errors are stripped of their URL first.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}

/// The `errors` array of a Vault error body, joined and bounded.
fn vault_errors(body: &[u8]) -> String {
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("errors").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .unwrap_or_default();
    let mut text: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    if text.is_empty() {
        text = "no error message".into();
    }
    text
}

impl Inner {
    fn describe(&self) -> String {
        format!("vault:{}/{}/{}", self.address, self.mount, self.prefix)
    }

    fn data_path(&self, name: &str) -> String {
        format!("{}/data/{}/{}", self.mount, self.prefix, name)
    }

    fn metadata_path(&self, name: &str) -> String {
        format!("{}/metadata/{}/{}", self.mount, self.prefix, name)
    }

    /// Send one request to `/v1/<path>`. Transport failures become [`StoreError::Unavailable`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Vec<u8>), StoreError> {
        // `query` is built here from numbers and literals only, never from user input.
        let url = if query.is_empty() {
            format!("{}/v1/{}", self.address, path)
        } else {
            format!("{}/v1/{}?{}", self.address, path, query)
        };
        let mut token = HeaderValue::from_str(self.token.expose_secret()).map_err(|_| {
            StoreError::Unavailable("the Vault token is not a valid HTTP header value".into())
        })?;
        token.set_sensitive(true);
        let mut req = self
            .client
            .request(method.clone(), &url)
            .header("X-Vault-Token", token)
            .header("X-Vault-Request", "true");
        if let Some(body) = body {
            req = req.json(&body);
        }
        let transport = |e: reqwest::Error| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            let e = e.without_url();
            StoreError::Unavailable(format!(
                "cannot reach Vault at {} ({what} on {method} {path}): {}",
                self.address,
                error_chain(&e)
            ))
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        Ok((status, bytes.to_vec()))
    }

    /// The error for a status this operation does not handle itself.
    fn status_error(&self, status: StatusCode, path: &str, body: &[u8]) -> StoreError {
        if status == StatusCode::FORBIDDEN {
            return StoreError::PermissionDenied(format!("permission denied by Vault at {path}"));
        }
        let errors = vault_errors(body);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            StoreError::Unavailable(format!(
                "Vault at {} is sealed or unavailable (503 on {path}): {errors}",
                self.address
            ))
        } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            StoreError::Unavailable(format!(
                "Vault at {} failed ({status} on {path}): {errors}",
                self.address
            ))
        } else {
            // No closer StoreError variant exists for "Vault refused the request"; the message
            // says exactly what happened.
            StoreError::Unavailable(format!(
                "Vault at {} rejected the request ({status} on {path}): {errors}",
                self.address
            ))
        }
    }

    /// Check that `mount` is KV version 2 (`sys/internal/ui/mounts/<mount>`, which any token
    /// with some access under the mount may call).
    async fn check_mount(&self) -> Result<(), SetupError> {
        let path = format!("sys/internal/ui/mounts/{}", self.mount);
        let (status, body) = self.send(Method::GET, &path, "", None).await?;
        let missing = || SetupError::MountMissing {
            address: self.address.clone(),
            mount: self.mount.clone(),
        };
        match status {
            StatusCode::OK => {}
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => {
                return Err(missing())
            }
            s => return Err(self.status_error(s, &path, &body).into()),
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            SetupError::Store(StoreError::Unavailable(format!(
                "Vault at {} sent a response to {path} that is not JSON",
                self.address
            )))
        })?;
        let data = &v["data"];
        let found = data["type"].as_str().unwrap_or_default();
        // The preflight answers for the longest mount that contains the path: make sure it is
        // this mount and not a parent.
        let mount_path = data["path"].as_str().unwrap_or_default().trim_matches('/');
        if mount_path != self.mount {
            return Err(missing());
        }
        if found != "kv" && found != "generic" {
            return Err(SetupError::NotKv {
                address: self.address.clone(),
                mount: self.mount.clone(),
                found: found.to_owned(),
            });
        }
        if data["options"]["version"].as_str() != Some("2") {
            return Err(SetupError::KvVersion1 {
                address: self.address.clone(),
                mount: self.mount.clone(),
            });
        }
        Ok(())
    }

    /// Run the mount check once (it is deferred when Vault was unreachable at startup).
    async fn ensure_mount(&self) -> Result<(), StoreError> {
        self.mount_ok
            .get_or_try_init(|| async {
                self.check_mount().await.map_err(|e| match e {
                    SetupError::Store(e) => e,
                    other => StoreError::Unavailable(other.to_string()),
                })
            })
            .await
            .map(|_| ())
    }

    async fn read(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<Option<StoredRecord>, StoreError> {
        check_name(name)?;
        self.ensure_mount().await?;
        let path = self.data_path(name);
        let query = version.map(|v| format!("version={v}")).unwrap_or_default();
        let (status, body) = self.send(Method::GET, &path, &query, None).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            s => return Err(self.status_error(s, &path, &body)),
        }
        let not_record = |reason: String| StoreError::NotARecord {
            name: name.to_owned(),
            reason,
        };
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| not_record("Vault's response is not JSON".into()))?;
        let entry = &v["data"]["data"];
        let meta_version = v["data"]["metadata"]["version"]
            .as_u64()
            .ok_or_else(|| not_record("the KV response has no metadata.version".into()))?;
        if entry.is_null() {
            // A deleted or destroyed version.
            return Ok(None);
        }
        if let Some(want) = version {
            if meta_version != want {
                return Err(not_record(format!(
                    "asked Vault for version {want}, got version {meta_version}"
                )));
            }
        }
        let format = entry["format"]
            .as_str()
            .ok_or_else(|| not_record("the KV entry has no `format` field".into()))?;
        if format != KV_ENTRY_FORMAT {
            let reason = if format.starts_with(KV_ENTRY_FORMAT_FAMILY) {
                format!(
                    "record format {format:?} is not supported (this rootseal reads {KV_ENTRY_FORMAT:?}; \
                     was it written by a newer rootseal?)"
                )
            } else {
                format!("the `format` field is {format:?}, not {KV_ENTRY_FORMAT:?}")
            };
            return Err(not_record(reason));
        }
        let b64 = entry["rootseal_record"]
            .as_str()
            .ok_or_else(|| not_record("the KV entry has no `rootseal_record` string".into()))?;
        let data = B64
            .decode(b64)
            .map_err(|_| not_record("`rootseal_record` is not valid base64".into()))?;
        Ok(Some(StoredRecord {
            data,
            version: meta_version,
        }))
    }

    async fn write(&self, name: &str, data: Vec<u8>, cas: u64) -> Result<u64, StoreError> {
        check_name(name)?;
        self.ensure_mount().await?;
        let path = self.data_path(name);
        let body = json!({
            "options": { "cas": cas },
            "data": { "rootseal_record": B64.encode(&data), "format": KV_ENTRY_FORMAT },
        });
        let (status, resp) = self.send(Method::POST, &path, "", Some(body)).await?;
        match status {
            StatusCode::OK | StatusCode::NO_CONTENT => {
                let v: Value = serde_json::from_slice(&resp).map_err(|_| {
                    StoreError::Unavailable(format!(
                        "Vault at {} sent a response to a write of {path} that is not JSON",
                        self.address
                    ))
                })?;
                v["data"]["version"].as_u64().ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "Vault at {} did not return the new version of {path}",
                        self.address
                    ))
                })
            }
            StatusCode::BAD_REQUEST if vault_errors(&resp).contains("check-and-set") => {
                Err(StoreError::Conflict {
                    name: name.to_owned(),
                })
            }
            s => Err(self.status_error(s, &path, &resp)),
        }
    }

    async fn remove(&self, name: &str) -> Result<(), StoreError> {
        check_name(name)?;
        self.ensure_mount().await?;
        let path = self.metadata_path(name);
        let (status, body) = self.send(Method::DELETE, &path, "", None).await?;
        match status {
            StatusCode::OK | StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
            s => Err(self.status_error(s, &path, &body)),
        }
    }

    /// Destroys (KV v2 `destroy`: the data is removed for good, unlike `delete`) every version
    /// of `name` older than `current` that is not destroyed yet. Needs the `update` capability
    /// on `<mount>/destroy/<prefix>/*` and `read` on its metadata.
    async fn shred_history(&self, name: &str, current: u64) -> Result<(), StoreError> {
        check_name(name)?;
        self.ensure_mount().await?;
        let meta = self.metadata_path(name);
        let (status, body) = self.send(Method::GET, &meta, "", None).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(()),
            s => return Err(self.status_error(s, &meta, &body)),
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            StoreError::Unavailable(format!(
                "Vault at {} sent metadata of {meta} that is not JSON",
                self.address
            ))
        })?;
        let old: Vec<u64> = v["data"]["versions"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| !e["destroyed"].as_bool().unwrap_or(false))
                    .filter_map(|(k, _)| k.parse::<u64>().ok())
                    .filter(|n| *n < current)
                    .collect()
            })
            .unwrap_or_default();
        if old.is_empty() {
            return Ok(());
        }
        let path = format!("{}/destroy/{}/{}", self.mount, self.prefix, name);
        let (status, body) = self
            .send(Method::POST, &path, "", Some(json!({ "versions": old })))
            .await?;
        match status {
            StatusCode::OK | StatusCode::NO_CONTENT => Ok(()),
            s => Err(self.status_error(s, &path, &body)),
        }
    }

    async fn list_names(&self) -> Result<Vec<String>, StoreError> {
        self.ensure_mount().await?;
        let path = format!("{}/metadata/{}/", self.mount, self.prefix);
        let (status, body) = self.send(Method::GET, &path, "list=true", None).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(Vec::new()),
            s => return Err(self.status_error(s, &path, &body)),
        }
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            StoreError::Unavailable(format!(
                "Vault at {} sent a list of {path} that is not JSON",
                self.address
            ))
        })?;
        let mut names: Vec<String> = v["data"]["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(Value::as_str)
                    // Sub-folders ("x/") and names rootseal would never write are not records.
                    .filter(|k| valid_key_name(k))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Look the token up; when it is renewable with a TTL, spawn the renewal task.
    async fn start_renewal(self: &Arc<Self>) -> Option<AbortOnDrop> {
        let path = "auth/token/lookup-self";
        let (ttl, increment) = match self.send(Method::GET, path, "", None).await {
            Ok((StatusCode::OK, body)) => {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let d = &v["data"];
                if d["renewable"].as_bool() != Some(true) {
                    tracing::debug!("the Vault token is not renewable; no renewal");
                    return None;
                }
                match d["ttl"].as_u64() {
                    Some(ttl) if ttl > 0 => (ttl, d["creation_ttl"].as_u64().unwrap_or(0)),
                    _ => return None,
                }
            }
            Ok((status, body)) => {
                let err = self.status_error(status, path, &body);
                tracing::warn!(error = %err, "cannot look up the Vault token; it will not be renewed");
                return None;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot look up the Vault token; it will not be renewed");
                return None;
            }
        };
        let weak = Arc::downgrade(self);
        Some(AbortOnDrop(tokio::spawn(renewal_loop(
            weak, ttl, increment,
        ))))
    }

    /// `auth/token/renew-self`; returns the new lease duration, or `None` when Vault says the
    /// token is no longer renewable.
    async fn renew_self(&self, increment: u64) -> Result<Option<u64>, StoreError> {
        let path = "auth/token/renew-self";
        let body = if increment > 0 {
            json!({ "increment": format!("{increment}s") })
        } else {
            json!({})
        };
        let (status, resp) = self.send(Method::POST, path, "", Some(body)).await?;
        if status != StatusCode::OK {
            return Err(self.status_error(status, path, &resp));
        }
        let v: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
        let auth = &v["auth"];
        let lease = auth["lease_duration"].as_u64().unwrap_or(0);
        if auth["renewable"].as_bool() == Some(true) && lease > 0 {
            Ok(Some(lease))
        } else {
            Ok(None)
        }
    }
}

/// Renew at 2/3 of the TTL; retry failures every few seconds; stop when the store is dropped or
/// Vault says the token is no longer renewable. Never fatal.
async fn renewal_loop(store: Weak<Inner>, ttl: u64, increment: u64) {
    let mut wait = Duration::from_secs(ttl * 2 / 3).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(wait).await;
        let Some(inner) = store.upgrade() else { return };
        match inner.renew_self(increment).await {
            Ok(Some(lease)) => {
                tracing::debug!(lease_seconds = lease, "renewed the Vault token");
                wait = Duration::from_secs(lease * 2 / 3).max(Duration::from_secs(1));
            }
            Ok(None) => {
                tracing::info!("the Vault token is no longer renewable; renewal stops");
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "renewing the Vault token failed; will retry");
                wait = RENEW_RETRY;
            }
        }
    }
}

impl KekStore for VaultKvStore {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<StoredRecord>, StoreError>> {
        Box::pin(self.inner.read(name, None))
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        data: Vec<u8>,
        cas: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.inner.write(name, data, cas))
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.inner.remove(name))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(self.inner.list_names())
    }

    fn shred_history<'a>(
        &'a self,
        name: &'a str,
        current: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.inner.shred_history(name, current))
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_errors_are_joined_and_bounded() {
        assert_eq!(vault_errors(br#"{"errors":["a","b"]}"#), "a; b");
        assert_eq!(vault_errors(b"<html>"), "no error message");
        let long = format!(r#"{{"errors":["{}"]}}"#, "x".repeat(1000));
        assert_eq!(vault_errors(long.as_bytes()).len(), 300);
    }

    #[tokio::test]
    async fn connect_rejects_bad_settings_without_echoing_the_token() {
        let mut s = VaultSettings {
            address: "http://127.0.0.1:1".into(),
            token: SecretString::from("tok\nen-secret"),
            kv_mount: "secret".into(),
            prefix: "rootseal".into(),
            ca_cert: None,
            local_path: "/tmp/x".into(),
            local_keys: vec![],
        };
        let err = VaultKvStore::connect(&s).await.unwrap_err().to_string();
        assert!(err.contains("token") && !err.contains("en-secret"), "{err}");
        s.token = SecretString::from("fine");
        s.kv_mount = "../sys".into();
        let err = VaultKvStore::connect(&s).await.unwrap_err().to_string();
        assert!(err.contains("kv_mount"), "{err}");
    }

    /// A listener answering every request with `answer(path)`; the raw requests it got.
    async fn http_server(
        answer: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let log = log.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let req = String::from_utf8_lossy(&buf).into_owned();
                    let path = req.split(' ').nth(1).unwrap_or("/").to_owned();
                    log.lock().unwrap().push(req);
                    let _ = s.write_all(answer(&path).as_bytes()).await;
                });
            }
        });
        (addr, seen)
    }

    /// A redirect to another host is not followed: the token never reaches it.
    #[tokio::test]
    async fn the_token_never_follows_a_redirect_to_another_host() {
        let (elsewhere, seen_elsewhere) = http_server(|_| {
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                .to_owned()
        })
        .await;
        let (vault, seen_vault) = http_server(move |path| {
            format!("HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}{path}\r\ncontent-length: 0\r\n\r\n")
        })
        .await;
        let s = VaultSettings {
            address: vault,
            token: SecretString::from("s.secret-kv-token"),
            kv_mount: "secret".into(),
            prefix: "rootseal".into(),
            ca_cert: None,
            local_path: "/tmp/x".into(),
            local_keys: vec![],
        };
        let r = match VaultKvStore::connect(&s).await {
            Ok(store) => store.get("k").await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        assert!(r.is_err(), "a redirected request succeeded");
        assert!(
            !seen_vault.lock().unwrap().is_empty(),
            "Vault was never asked"
        );
        let leaked = seen_elsewhere.lock().unwrap().clone();
        assert!(
            leaked
                .iter()
                .all(|r| !r.to_ascii_lowercase().contains("x-vault-token")),
            "the token followed the redirect: {leaked:?}"
        );
        assert!(leaked.is_empty(), "the redirect was followed: {leaked:?}");
    }
}

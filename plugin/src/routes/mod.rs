//! The HTTP face: Vault's transit API over the [`Keyring`].
//!
//! | Method | Path | Handler | Auth |
//! |---|---|---|---|
//! | `POST`/`PUT` | `/v1/{mount}/keys/{name}` | create a key | token |
//! | `GET` | `/v1/{mount}/keys/{name}` | read a key (404 `{"errors":[]}` if absent) | token |
//! | `DELETE` | `/v1/{mount}/keys/{name}` | delete (when `deletion_allowed`), 204 | token |
//! | `LIST`, `GET ?list=true` | `/v1/{mount}/keys` | list key names | token |
//! | `POST`/`PUT` | `/v1/{mount}/keys/{name}/rotate` | new version | token |
//! | `POST`/`PUT` | `/v1/{mount}/keys/{name}/trim` | remove versions below `min_available_version` | token |
//! | `POST`/`PUT` | `/v1/{mount}/keys/{name}/config` | `min_*_version`, `deletion_allowed`, `auto_rotate_period` | token |
//! | `POST`/`PUT` | `/v1/{mount}/encrypt/{name}` | encrypt (single or `batch_input`), upsert | token |
//! | `POST`/`PUT` | `/v1/{mount}/decrypt/{name}` | decrypt | token |
//! | `POST`/`PUT` | `/v1/{mount}/rewrap/{name}` | decrypt + encrypt under the latest version | token |
//! | `POST`/`PUT` | `/v1/{mount}/datakey/{plaintext\|wrapped}/{name}` | Level 2 data key (`key_version`) | token |
//! | `POST`/`PUT` | `/v1/{mount}/datakeys/{plaintext\|wrapped}/{name}` | `count` data keys | token |
//! | `POST`/`PUT` | `/v1/{mount}/sign/{name}(/{hash})` | sign in the HSM | token |
//! | `POST`/`PUT` | `/v1/{mount}/verify/{name}(/{hash})` | verify a `signature` or an `hmac` | token |
//! | `POST`/`PUT` | `/v1/{mount}/hmac/{name}(/{algorithm})` | HMAC in the HSM | token |
//! | `POST`/`PUT` | `/v1/{mount}/random(/{source})(/{bytes})` | random bytes (HSM RNG) | token |
//! | `POST`/`PUT` | `/v1/{mount}/hash(/{algorithm})` | digest (software) | token |
//! | `GET` | `/v1/{mount}/wrapping_key` | the BYOK RSA-4096 public key, made on the token (`transit/import.rs`) | root |
//! | `POST` | `/v1/{mount}/keys/{name}/import`, `/import_version` | BYOK, unwrapped inside the HSM | root |
//! | `GET`/`POST` | `/v1/{mount}/config/keys` | `disable_upsert`, stored (`transit/config_keys.rs`) | root |
//! | `GET`/`POST` | `/v1/{mount}/cache-config` | the key cache's `size`, stored (`transit/cache_config.rs`) | root |
//! | `POST` | `/v1/{mount}/bulk-seal/{name}`, `/bulk-unseal/{name}` | bulk seal (`routes/bulk.rs`) | token |
//! | `PUT`/`POST` | `/v1/auth/token/renew-self` | Vault's answer for a non-renewable token | token |
//! | `GET`/`POST` | `/v1/auth/token/lookup-self` | the caller's token and grant, Vault's shape | token |
//! | `GET` | `/v1/rootseal/audit/checkpoint` | the latest signed audit checkpoint (`routes/audit.rs`) | token |
//! | `GET` | `/v1/rootseal/lifecycle` | every key's next lifecycle event (`routes/lifecycle.rs`) | token |
//! | `GET` | `/v1/sys/health` | 200 when the HSM answers, 503 otherwise | none |
//! | `GET` | `/v1/sys/seal-status`, `/v1/sys/init`, `/v1/sys/leader` | Vault's shapes (`sealed` when keys cannot be served) | none |
//! | `GET` | `/v1/sys/mounts` | the transit mount, so `bao secrets list` works | token |
//! | `GET` | `/metrics` | Prometheus text | none |
//!
//! Everything else is 404 `{"errors":[]}`. Bodies are read as bytes and parsed as JSON whatever
//! the `Content-Type` (OpenBao's transit seal sends none), up to [`ApiConfig::max_body_bytes`]
//! (413 beyond). Errors are [`ApiError`] in Vault's envelope. The wire shapes follow Vault's
//! transit API documentation (<https://developer.hashicorp.com/vault/api-docs/secret/transit>);
//! `docs/api.md` lists them.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::FutureExt as _;
use rootseal_hsm::Keyring;
use secrecy::SecretString;
use serde::Serialize;
use tracing::Instrument;

pub mod audit;
pub mod auth;
pub(crate) mod bulk;
pub mod ciphertext;
pub mod de;
pub mod error;
pub(crate) mod lifecycle;
pub mod metrics;
pub mod sys;
pub mod transit;

pub use error::ApiError;

/// Default request body limit: 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;

/// Configuration of the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    /// The transit mount path (`transit`, or nested such as `a/b/transit`); leading and trailing
    /// slashes are ignored.
    pub mount: String,
    /// Whether `encrypt` creates a missing key (Vault's upsert). Default true.
    pub allow_upsert: bool,
    /// Largest request body in bytes (413 beyond). Default 32 MiB.
    pub max_body_bytes: usize,
    /// Most items one `batch_input` may carry (400 beyond). Default
    /// [`transit::DEFAULT_MAX_BATCH_ITEMS`].
    pub max_batch_items: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            mount: "transit".to_owned(),
            allow_upsert: true,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_items: transit::DEFAULT_MAX_BATCH_ITEMS,
        }
    }
}

/// A configuration the API cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiConfigError {
    /// The mount path is empty or has a segment that is not `A-Z a-z 0-9 _ - .`.
    #[error("invalid mount path {0:?}: use segments of A-Z a-z 0-9 _ - . separated by /")]
    InvalidMount(String),
    /// The mount collides with a path the server answers itself (`sys`, `auth`).
    #[error("mount path {0:?} is reserved")]
    ReservedMount(String),
    /// `max_body_bytes` is zero.
    #[error("max_body_bytes must be positive")]
    ZeroBodyLimit,
}

impl ApiConfig {
    /// Checks the configuration and returns the normalised mount (no leading/trailing `/`).
    ///
    /// # Errors
    /// [`ApiConfigError`].
    pub fn validate(&self) -> Result<String, ApiConfigError> {
        let mount = self.mount.trim_matches('/');
        let ok_segment = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if mount.is_empty() || !mount.split('/').all(ok_segment) {
            return Err(ApiConfigError::InvalidMount(self.mount.clone()));
        }
        let first = mount.split('/').next().unwrap_or_default();
        if matches!(first, "sys" | "auth") {
            return Err(ApiConfigError::ReservedMount(self.mount.clone()));
        }
        if self.max_body_bytes == 0 {
            return Err(ApiConfigError::ZeroBodyLimit);
        }
        Ok(mount.to_owned())
    }
}

/// The state every handler shares. Cheap to clone. Public so other faces (bulk seal) can mount
/// their routes behind the same auth and envelope.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

struct StateInner {
    keyring: Keyring,
    /// The root token's digest and the scoped tokens' grants (`auth.rs`).
    auth: auth::AuthState,
    cfg: ApiConfig,
    metrics: metrics::HttpMetrics,
    health: sys::HealthCache,
    /// The audit log every request is recorded in (`None`: not recorded).
    audit: Option<rootseal_audit::AuditLog>,
    /// The mount's stored settings (`config/keys`, `cache-config`), cached.
    settings: transit::settings::SettingsCache,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("cfg", &self.inner.cfg)
            .field("root_token", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl AppState {
    /// A state over `keyring`, accepting `root_token`. `cfg.mount` should be normalised
    /// ([`ApiConfig::validate`]).
    pub fn new(keyring: Keyring, root_token: SecretString, cfg: ApiConfig) -> Self {
        Self::with_auth(
            keyring,
            &auth::AuthConfig {
                root_token: Some(root_token),
                governance: false,
            },
            cfg,
            None,
        )
    }

    /// A state over `keyring` authenticating as `auth` says (root token, scoped tokens),
    /// recording every request in `audit` (`None`: not recorded).
    pub fn with_auth(
        keyring: Keyring,
        auth: &auth::AuthConfig,
        cfg: ApiConfig,
        audit: Option<rootseal_audit::AuditLog>,
    ) -> Self {
        Self {
            inner: Arc::new(StateInner {
                keyring,
                auth: auth::AuthState::new(auth),
                cfg,
                metrics: metrics::HttpMetrics::default(),
                health: sys::HealthCache::new(),
                audit,
                settings: transit::settings::SettingsCache::default(),
            }),
        }
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.inner.keyring
    }

    /// The API configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.cfg
    }

    /// The audit log, when requests are recorded.
    pub fn audit(&self) -> Option<&rootseal_audit::AuditLog> {
        self.inner.audit.as_ref()
    }

    /// The mount's stored settings, cached.
    pub(crate) fn settings(&self) -> &transit::settings::SettingsCache {
        &self.inner.settings
    }

    /// The HTTP counters.
    pub fn http_metrics(&self) -> &metrics::HttpMetrics {
        &self.inner.metrics
    }

    /// The cached health status (`GET /v1/sys/health`).
    pub(crate) fn health_cache(&self) -> &sys::HealthCache {
        &self.inner.health
    }

    /// The token-check state.
    pub(crate) fn auth(&self) -> &auth::AuthState {
        &self.inner.auth
    }

    /// Whether governance (scoped tokens, ceremonies) is on.
    pub fn governance(&self) -> bool {
        self.inner.auth.governance()
    }

    /// Whether the root token is accepted.
    pub fn root_token_enabled(&self) -> bool {
        self.inner.auth.root_token()
    }

    /// Reads a request body up to the configured limit.
    ///
    /// # Errors
    /// 413 beyond the limit; 400 when the body cannot be read.
    pub async fn read_body(&self, body: Body) -> Result<Bytes, ApiError> {
        read_body(body, self.inner.cfg.max_body_bytes).await
    }
}

impl FromRef<AppState> for Keyring {
    fn from_ref(s: &AppState) -> Keyring {
        s.inner.keyring.clone()
    }
}

/// The token a request presents, if any.
pub fn presented_token(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get("x-vault-token") {
        return Some(v.as_bytes()).filter(|t| !t.is_empty());
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = auth.split_at_checked(7)?;
    if scheme.eq_ignore_ascii_case(b"bearer ") {
        let t = rest.trim_ascii();
        (!t.is_empty()).then_some(t)
    } else {
        None
    }
}

/// Reads `body` up to `limit` bytes.
///
/// # Errors
/// [`ApiError::PayloadTooLarge`] beyond `limit`; 400 when the body cannot be read.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let inner = e.into_inner();
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
            while let Some(s) = src {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(ApiError::PayloadTooLarge { limit });
                }
                src = s.source();
            }
            tracing::debug!(error = %inner, "cannot read request body");
            Err(ApiError::bad_request("failed to read request body"))
        }
    }
}

pub use auth::require_token;

/// Middleware, the edge: a span with the matched route and method (never headers or the raw
/// URI), the request counters, a panic guard (opaque 500), and the one log line of an error
/// answer ([`error::ErrorDetail`]).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = metrics::method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let route_label = route.as_deref().unwrap_or("unmatched");
    let span = tracing::info_span!("http", method, route = route_label);
    // A panic below is a bug; answer it as an opaque 500 instead of dropping the connection.
    let resp = match std::panic::AssertUnwindSafe(next.run(req).instrument(span))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(method, route = route_label, "handler panicked");
            error::envelope(StatusCode::INTERNAL_SERVER_ERROR, Some(error::INTERNAL))
        }
    };
    if let Some(d) = resp.extensions().get::<error::ErrorDetail>() {
        let _g = tracing::info_span!("http", method, route = route_label).entered();
        d.log(resp.status());
    }
    state
        .http_metrics()
        .record(route_label, method, resp.status().as_u16(), start.elapsed());
    resp
}

/// A Vault response envelope around `data`.
#[derive(Serialize)]
struct Envelope<'a, T> {
    request_id: &'a str,
    lease_id: &'static str,
    renewable: bool,
    lease_duration: u64,
    data: T,
    wrap_info: Option<()>,
    warnings: Option<&'a [String]>,
    auth: Option<()>,
}

/// A fresh request id (a UUID v4, as Vault's).
pub fn request_id() -> String {
    let mut b = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        tracing::warn!("random source failed; request id is zero");
    }
    if let Some(x) = b.get_mut(6) {
        *x = (*x & 0x0f) | 0x40;
    }
    if let Some(x) = b.get_mut(8) {
        *x = (*x & 0x3f) | 0x80;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(x >> 4)]));
        s.push(char::from(HEX[usize::from(x & 0x0f)]));
    }
    s
}

/// Vault's success envelope `{"request_id",…,"data":data,…}` with `status`.
pub fn respond<T: Serialize>(status: StatusCode, data: T, warnings: &[String]) -> Response {
    let id = request_id();
    let env = Envelope {
        request_id: &id,
        lease_id: "",
        renewable: false,
        lease_duration: 0,
        data,
        wrap_info: None,
        warnings: (!warnings.is_empty()).then_some(warnings),
        auth: None,
    };
    match serde_json::to_vec(&env) {
        Ok(v) => error::json_bytes(status, v),
        Err(e) => ApiError::Keyring(rootseal_hsm::KeyringError::internal(format!(
            "cannot serialise response: {e}"
        )))
        .into_response(),
    }
}

/// A 200 envelope around `data`.
pub fn ok<T: Serialize>(data: T) -> Response {
    respond(StatusCode::OK, data, &[])
}

async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// The routes of the transit mount, relative to `/v1/{mount}` (no auth, no state yet).
fn transit_routes() -> Router<AppState> {
    use transit::{
        cache_config, config, config_keys, datakey, decrypt, encrypt, hash, hmac, import, keys,
        random, rewrap, rotate, sign, trim, verify,
    };
    Router::new()
        .route(
            "/keys",
            get(keys::list_get).fallback(keys::list_other_method),
        )
        .route(
            "/keys/",
            get(keys::list_get).fallback(keys::list_other_method),
        )
        .route(
            "/keys/{name}",
            post(keys::create)
                .put(keys::create)
                .get(keys::read)
                .delete(keys::delete),
        )
        .route(
            "/keys/{name}/rotate",
            post(rotate::rotate).put(rotate::rotate),
        )
        .route("/keys/{name}/trim", post(trim::trim).put(trim::trim))
        .route(
            "/keys/{name}/config",
            post(config::config).put(config::config),
        )
        .route(
            "/encrypt/{name}",
            post(encrypt::encrypt).put(encrypt::encrypt),
        )
        .route(
            "/decrypt/{name}",
            post(decrypt::decrypt).put(decrypt::decrypt),
        )
        .route("/rewrap/{name}", post(rewrap::rewrap).put(rewrap::rewrap))
        .route(
            "/datakey/{kind}/{name}",
            post(datakey::datakey).put(datakey::datakey),
        )
        .route(
            "/datakeys/{kind}/{name}",
            post(datakey::datakeys).put(datakey::datakeys),
        )
        .route("/sign/{name}", post(sign::sign).put(sign::sign))
        .route(
            "/sign/{name}/{hash}",
            post(sign::sign_hash).put(sign::sign_hash),
        )
        .route("/verify/{name}", post(verify::verify).put(verify::verify))
        .route(
            "/verify/{name}/{hash}",
            post(verify::verify_hash).put(verify::verify_hash),
        )
        .route("/hmac/{name}", post(hmac::hmac).put(hmac::hmac))
        .route(
            "/hmac/{name}/{alg}",
            post(hmac::hmac_alg).put(hmac::hmac_alg),
        )
        .route("/random", post(random::random).put(random::random))
        .route("/random/{a}", post(random::random1).put(random::random1))
        .route(
            "/random/{a}/{b}",
            post(random::random2).put(random::random2),
        )
        .route("/hash", post(hash::hash).put(hash::hash))
        .route("/hash/{alg}", post(hash::hash_alg).put(hash::hash_alg))
        .route("/wrapping_key", get(import::wrapping_key))
        .route(
            "/keys/{name}/import",
            post(import::import).put(import::import),
        )
        .route(
            "/keys/{name}/import_version",
            post(import::import_version).put(import::import_version),
        )
        .route(
            "/config/keys",
            get(config_keys::read)
                .post(config_keys::write)
                .put(config_keys::write),
        )
        .route(
            "/cache-config",
            get(cache_config::read)
                .post(cache_config::write)
                .put(cache_config::write),
        )
}

/// Extra routes under the transit mount (relative to `/v1/{mount}`), behind the same token check
/// and envelope: the bulk-seal engine's `bulk-seal/{name}` and `bulk-unseal/{name}`.
pub fn bulk_routes(max_body_bytes: usize) -> Router<AppState> {
    bulk::router::<AppState, Keyring>(max_body_bytes)
}

/// The transit paths (and bulk seal) at the root of the router (`/keys/{name}`,
/// `/encrypt/{name}`, …) over `state`, with the edge (one log line per error, panic guard,
/// counters) and the 404/405 envelopes, but **without rootseal's token check**: for a face whose
/// host authenticates and authorises every request before it arrives (the secrets-engine plugin,
/// behind OpenBao's tokens, ACL policies and audit devices).
pub fn transit_router(state: AppState) -> Router {
    let limit = state.config().max_body_bytes;
    transit_routes()
        .merge(bulk_routes(limit))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The whole API.
///
/// # Errors
/// [`ApiConfigError`] when `cfg` is invalid.
pub fn try_app(
    keyring: Keyring,
    root_token: SecretString,
    cfg: ApiConfig,
) -> Result<Router, ApiConfigError> {
    try_app_with(
        keyring,
        &auth::AuthConfig {
            root_token: Some(root_token),
            governance: false,
        },
        cfg,
        None,
    )
}

/// The whole API, authenticating as `auth` says and recording every request in `audit`
/// (`routes/audit.rs`; `None`: not recorded).
///
/// # Errors
/// [`ApiConfigError`] when `cfg` is invalid.
pub fn try_app_with(
    keyring: Keyring,
    auth: &auth::AuthConfig,
    mut cfg: ApiConfig,
    audit: Option<rootseal_audit::AuditLog>,
) -> Result<Router, ApiConfigError> {
    let mount = cfg.validate()?;
    cfg.mount.clone_from(&mount);
    let max_body_bytes = cfg.max_body_bytes;
    let state = AppState::with_auth(keyring, auth, cfg, audit);
    let authed = Router::new()
        .nest(
            &format!("/v1/{mount}"),
            transit_routes().merge(bulk_routes(max_body_bytes)),
        )
        .route(
            "/v1/auth/token/renew-self",
            post(sys::renew_self).put(sys::renew_self),
        )
        .route(
            "/v1/auth/token/lookup-self",
            get(auth::lookup_self).post(auth::lookup_self),
        )
        .route("/v1/rootseal/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/rootseal/lifecycle", get(lifecycle::lifecycle))
        .route("/v1/sys/mounts", get(sys::mounts))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let open = Router::new()
        .route("/v1/sys/health", get(sys::health))
        .route("/v1/sys/seal-status", get(sys::seal_status))
        .route("/v1/sys/init", get(sys::init_status))
        .route("/v1/sys/leader", get(sys::leader))
        .route("/metrics", get(sys::metrics));
    Ok(authed
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            audit::record_requests,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state))
}

/// The whole API: Vault's transit paths under `/v1/{cfg.mount}`, token renewal, health and
/// metrics. Serve it with [`crate::server::serve`].
///
/// # Panics
/// When `cfg` is invalid; check it first with [`ApiConfig::validate`] (or use [`try_app`]).
#[allow(clippy::panic)]
pub fn app(keyring: Keyring, root_token: SecretString, cfg: ApiConfig) -> Router {
    match try_app(keyring, root_token, cfg) {
        Ok(r) => r,
        Err(e) => panic!("invalid API configuration: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts() {
        let m = |s: &str| {
            ApiConfig {
                mount: s.to_owned(),
                ..ApiConfig::default()
            }
            .validate()
        };
        assert_eq!(m("transit").as_deref(), Ok("transit"));
        assert_eq!(m("/a/b/transit/").as_deref(), Ok("a/b/transit"));
        assert!(m("").is_err());
        assert!(m("a//b").is_err());
        assert!(m("a/{x}").is_err());
        assert!(m("../x").is_err());
        assert!(m("sys").is_err());
        assert!(m("auth/x").is_err());
    }

    #[test]
    fn tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), None);
        h.insert(
            "authorization",
            "Bearer abc".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(presented_token(&h), Some(&b"abc"[..]));
        h.insert(
            "authorization",
            "Basic abc".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(presented_token(&h), None);
        h.insert(
            "x-vault-token",
            "s.x".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(presented_token(&h), Some(&b"s.x"[..]));
    }

    #[test]
    fn request_ids() {
        let a = request_id();
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes().get(14), Some(&b'4'));
        assert_ne!(a, request_id());
    }
}

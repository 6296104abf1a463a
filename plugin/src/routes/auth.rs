//! Who may call what: the root token (for `rootseal dev`, governance off, or `[auth]
//! root_token_file` as a bootstrap) and the scoped API tokens of governance (a User or CO grant:
//! keys × operations, HSM-MACed in the key store, only SHA-256 digests kept). Scoped tokens are
//! accepted whether governance is on (issued by a `token.create` ceremony) or off (issued
//! directly by `rootseal token create`).
//!
//! The grant check runs in the token middleware for every authenticated route, keyed on the
//! route's pattern (which transit operation) and its `{name}` (which key), so no handler needs
//! to know about grants. A denial is 403 `{"errors":["permission denied"]}`, the reason in the
//! log. The token list is read from the store (its MAC checked in the HSM) at most every
//! [`REFRESH`], so a revocation by `rootseal token revoke` takes effect within that time.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::RequestPartsExt as _;
use rootseal_governance::{records, TokenGrant, TokenOp, TokenStore};
use rootseal_hsm::Keyring;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{presented_token, sha256, ApiError, AppState};

/// How long a loaded token list is used before the store is read again.
pub const REFRESH: Duration = Duration::from_secs(2);

/// How the API authenticates.
#[derive(Clone)]
pub struct AuthConfig {
    /// The root token, if any (every right).
    pub root_token: Option<SecretString>,
    /// Whether governance is on (reported in health; scoped tokens are checked either way).
    pub governance: bool,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "root_token",
                &self.root_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("governance", &self.governance)
            .finish()
    }
}

/// The token-check state of an [`AppState`].
pub(crate) struct AuthState {
    root_digest: Option<[u8; 32]>,
    governance: bool,
    /// The loaded grants (a std mutex held only to copy an `Arc`: no request waits on another).
    tokens: std::sync::Mutex<Option<(Instant, Arc<Grants>)>>,
    /// Held while the list is re-read, so that one request reads it.
    refresh: tokio::sync::Mutex<()>,
}

impl AuthState {
    pub(super) fn new(cfg: &AuthConfig) -> AuthState {
        AuthState {
            root_digest: cfg
                .root_token
                .as_ref()
                .map(|t| sha256(t.expose_secret().as_bytes())),
            governance: cfg.governance,
            tokens: std::sync::Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether governance is on.
    pub(super) fn governance(&self) -> bool {
        self.governance
    }

    /// Whether a root token is accepted.
    pub(super) fn root_token(&self) -> bool {
        self.root_digest.is_some()
    }

    fn is_root(&self, presented: &[u8]) -> bool {
        self.root_digest
            .is_some_and(|d| bool::from(sha256(presented).ct_eq(&d)))
    }

    async fn grants(&self, keyring: &Keyring) -> Result<Arc<Grants>, ApiError> {
        let fresh = || -> Option<Arc<Grants>> {
            let g = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            g.as_ref()
                .filter(|(at, _)| at.elapsed() < REFRESH)
                .map(|(_, ts)| ts.clone())
        };
        if let Some(ts) = fresh() {
            return Ok(ts);
        }
        let _one = self.refresh.lock().await;
        if let Some(ts) = fresh() {
            return Ok(ts);
        }
        let set = |ts: &Arc<Grants>| {
            *self.tokens.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), ts.clone()));
        };
        match keyring.open_record(records::TOKENS).await {
            Ok(Some((b, _))) => match TokenStore::parse(&b) {
                Ok(ts) => {
                    let ts = Arc::new(Grants::from_store(&ts));
                    set(&ts);
                    Ok(ts)
                }
                Err(e) => {
                    tracing::error!(error = %e, "token store unreadable; refusing scoped tokens");
                    Err(ApiError::PermissionDenied)
                }
            },
            Ok(None) => {
                let ts = Arc::new(Grants::from_store(&TokenStore::default()));
                set(&ts);
                Ok(ts)
            }
            Err(e) => {
                tracing::error!(error = %e, cause = ?e.cause(), "token store check failed; refusing scoped tokens");
                Err(ApiError::PermissionDenied)
            }
        }
    }
}

/// The grants of a loaded token list, by the SHA-256 of their token (what the store keeps): a
/// request costs one digest and one map lookup. Looking up by a digest of the presented token
/// reveals nothing about a stored token through timing.
struct Grants(std::collections::HashMap<[u8; 32], Arc<TokenGrant>>);

impl Grants {
    fn from_store(ts: &TokenStore) -> Grants {
        let mut m = std::collections::HashMap::new();
        for g in &ts.tokens {
            let mut d = [0u8; 32];
            let ok = g.sha256.len() == 64
                && (0..32).all(|i| {
                    match g
                        .sha256
                        .get(2 * i..2 * i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        Some(b) => {
                            if let Some(x) = d.get_mut(i) {
                                *x = b;
                            }
                            true
                        }
                        None => false,
                    }
                });
            // The first grant of a digest wins, as in `TokenStore::lookup`.
            if ok {
                m.entry(d).or_insert_with(|| Arc::new(g.clone()));
            }
        }
        Grants(m)
    }
}

/// Who is calling (a request extension set by [`require_token`]).
#[derive(Clone, Debug)]
pub enum Caller {
    /// The root token.
    Root,
    /// A scoped token.
    Scoped(Arc<TokenGrant>),
}

/// What a route asks of a grant.
enum Need {
    /// Any valid token (token self-lookup and renewal).
    Any,
    /// Listing keys.
    List,
    /// One operation on one key.
    Key(TokenOp),
    /// Nothing a scoped token may do (key deletion is a `key.destroy` ceremony).
    Never,
}

fn need(route: &str, method: &Method) -> Need {
    let has = |s: &str| route.ends_with(s);
    let keyless = [
        "/random",
        "/random/{a}",
        "/random/{a}/{b}",
        "/hash",
        "/hash/{alg}",
    ];
    if route.starts_with("/v1/auth/") || keyless.iter().any(|k| has(k)) {
        // No key involved: `random` and `hash` use no key material.
        Need::Any
    } else if has("/sign/{name}") || has("/sign/{name}/{hash}") {
        Need::Key(TokenOp::Sign)
    } else if has("/verify/{name}") || has("/verify/{name}/{hash}") {
        Need::Key(TokenOp::Verify)
    } else if has("/hmac/{name}") || has("/hmac/{name}/{alg}") {
        Need::Key(TokenOp::Hmac)
    } else if has("/datakeys/{kind}/{name}") {
        Need::Key(TokenOp::Datakey)
    } else if has("/keys") || has("/keys/") {
        Need::List
    } else if has("/encrypt/{name}") {
        Need::Key(TokenOp::Encrypt)
    } else if has("/decrypt/{name}") {
        Need::Key(TokenOp::Decrypt)
    } else if has("/rewrap/{name}") {
        Need::Key(TokenOp::Rewrap)
    } else if has("/datakey/{kind}/{name}") {
        Need::Key(TokenOp::Datakey)
    } else if has("/bulk-seal/{name}") || has("/bulk-unseal/{name}") {
        Need::Key(TokenOp::Bulk)
    } else if has("/keys/{name}/rotate") {
        Need::Key(TokenOp::Rotate)
    } else if has("/keys/{name}/config") {
        Need::Key(TokenOp::Config)
    } else if has("/keys/{name}") {
        match *method {
            Method::GET => Need::Key(TokenOp::Read),
            Method::POST | Method::PUT => Need::Key(TokenOp::Create),
            _ => Need::Never,
        }
    } else {
        Need::Never
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Middleware: the token and grant check for every route it wraps (use with `route_layer`).
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let auth = state.auth();
    let Some(presented) = presented_token(req.headers()) else {
        return ApiError::PermissionDenied.into_response();
    };
    if auth.is_root(presented) {
        let mut req = req;
        req.extensions_mut().insert(Caller::Root);
        let mut resp = next.run(req).await;
        resp.extensions_mut().insert(Caller::Root);
        return resp;
    }
    // Scoped tokens are checked with governance off too (`rootseal token create` issues them
    // directly there, e.g. the seal token of `vault seal-config`): a grant only ever narrows
    // what the root token could do.
    let presented = presented.to_vec();
    let store = match auth.grants(state.keyring()).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let Some(grant) = store.0.get(&sha256(&presented)).cloned() else {
        tracing::warn!(len = presented.len(), "unknown token");
        return ApiError::PermissionDenied.into_response();
    };
    let (mut parts, body) = req.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let key = match parts.extract::<RawPathParams>().await {
        Ok(p) => p
            .iter()
            .find(|(k, _)| *k == "name")
            .map(|(_, v)| v.to_owned()),
        Err(_) => None,
    };
    let t = now();
    let verdict = match (need(&route, &parts.method), key) {
        (Need::Any, _) => grant.allows_list(t).or_else(|e| match e {
            rootseal_governance::Denial::List(_) => Ok(()),
            e => Err(e),
        }),
        (Need::List, _) => grant.allows_list(t),
        (Need::Key(op), Some(k)) => grant.allows(&k, op, t),
        (Need::Key(_), None) | (Need::Never, _) => Err(rootseal_governance::Denial::Op {
            accessor: grant.accessor.clone(),
            op: "this call",
            key: String::new(),
        }),
    };
    if let Err(d) = verdict {
        tracing::warn!(route = %route, method = %parts.method, denial = %d, "permission denied by token grant");
        return ApiError::PermissionDenied.into_response();
    }
    let mut req = Request::from_parts(parts, body);
    let caller = Caller::Scoped(grant);
    req.extensions_mut().insert(caller.clone());
    // On the response too, for the audit layer outside this one (it records the token's name).
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(caller);
    resp
}

/// `GET|POST /v1/auth/token/lookup-self`: the caller's token in Vault's shape, with its grant
/// (`policies`, `meta`). Never echoes the token itself.
pub async fn lookup_self(req: Request) -> Response {
    let caller = req.extensions().get::<Caller>().cloned();
    let data = match caller {
        Some(Caller::Root) => json!({
            "accessor": "",
            "creation_time": 0,
            "creation_ttl": 0,
            "display_name": "root",
            "entity_id": "",
            "expire_time": null,
            "explicit_max_ttl": 0,
            "id": "",
            "meta": null,
            "num_uses": 0,
            "orphan": true,
            "path": "auth/token/root",
            "policies": ["root"],
            "renewable": false,
            "ttl": 0,
            "type": "service",
        }),
        Some(Caller::Scoped(g)) => {
            let t = now();
            let ttl = g.expires.map_or(0, |e| e.saturating_sub(t));
            let policies: Vec<String> = g
                .keys
                .iter()
                .flat_map(|k| {
                    g.ops
                        .iter()
                        .map(move |o| format!("rootseal-{}:{k}", o.name()))
                })
                .collect();
            json!({
                "accessor": g.accessor,
                "creation_time": g.created,
                "creation_ttl": g.expires.map_or(0, |e| e.saturating_sub(g.created)),
                "display_name": format!("token-{}", g.name),
                "entity_id": "",
                "expire_time": g.expires,
                "explicit_max_ttl": 0,
                "id": "",
                "meta": {
                    "role": g.role.name(),
                    "keys": g.keys.join(","),
                    "ops": g.ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(","),
                },
                "num_uses": 0,
                "orphan": true,
                "path": "auth/token/create",
                "policies": policies,
                "renewable": false,
                "ttl": ttl,
                "type": "service",
            })
        }
        None => return ApiError::PermissionDenied.into_response(),
    };
    super::ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(route: &str, m: &Method) -> Option<&'static str> {
        match need(route, m) {
            Need::Key(o) => Some(o.name()),
            Need::Any => Some("any"),
            Need::List => Some("list"),
            Need::Never => None,
        }
    }

    /// Every transit route asks for the operation its grant names; keyless routes need only a
    /// valid token; anything unknown is refused (fail closed). A mount name never changes it.
    #[test]
    fn each_route_needs_its_operation() {
        let p = Method::POST;
        for mount in ["/v1/transit", "/v1/hash/random"] {
            let r = |s: &str| format!("{mount}{s}");
            assert_eq!(op(&r("/encrypt/{name}"), &p), Some("encrypt"));
            assert_eq!(op(&r("/decrypt/{name}"), &p), Some("decrypt"));
            assert_eq!(op(&r("/rewrap/{name}"), &p), Some("rewrap"));
            assert_eq!(op(&r("/datakey/{kind}/{name}"), &p), Some("datakey"));
            assert_eq!(op(&r("/datakeys/{kind}/{name}"), &p), Some("datakey"));
            assert_eq!(op(&r("/sign/{name}"), &p), Some("sign"));
            assert_eq!(op(&r("/sign/{name}/{hash}"), &p), Some("sign"));
            assert_eq!(op(&r("/verify/{name}/{hash}"), &p), Some("verify"));
            assert_eq!(op(&r("/hmac/{name}/{alg}"), &p), Some("hmac"));
            assert_eq!(op(&r("/bulk-seal/{name}"), &p), Some("bulk"));
            assert_eq!(op(&r("/keys/{name}/rotate"), &p), Some("rotate"));
            assert_eq!(op(&r("/keys/{name}"), &Method::GET), Some("read"));
            assert_eq!(op(&r("/keys/{name}"), &Method::DELETE), None);
            assert_eq!(op(&r("/random/{a}"), &p), Some("any"));
            assert_eq!(op(&r("/hash/{alg}"), &p), Some("any"));
            assert_eq!(op(&r("/something/{name}"), &p), None);
        }
    }
}

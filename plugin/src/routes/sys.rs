//! `GET /v1/sys/health`, `GET /metrics` (both unauthenticated) and
//! `PUT /v1/auth/token/renew-self`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rootseal_hsm::{Custody, Keyring};
use serde::Serialize;
use tokio::sync::watch;

use super::{error, presented_token, AppState};

/// How long the health check waits for the HSM.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How old an answer may be before the next request starts a new check.
const HEALTH_MAX_AGE: Duration = Duration::from_secs(1);

/// One health check's result: the custody verdict, or `None` when the HSM did not answer or
/// holds no root.
#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    custody: Option<Custody>,
}

/// The health status, cached: `GET /v1/sys/health` is unauthenticated, so it never costs the
/// HSM anything per request. An answer older than [`HEALTH_MAX_AGE`] makes the request that
/// sees it start one background check (at most one runs at a time) and answer from the cache
/// at once; only the very first request waits for a check. A check that has not answered
/// within [`HEALTH_TIMEOUT`] makes the status unavailable (a hung HSM is reported, not waited
/// for). Each check logs its failure once, not once per request.
pub(crate) struct HealthCache {
    latest: watch::Sender<Option<Snapshot>>,
    /// When the check in flight started, if one is.
    running: Arc<Mutex<Option<Instant>>>,
}

impl HealthCache {
    pub(crate) fn new() -> Self {
        Self {
            latest: watch::channel(None).0,
            running: Arc::new(Mutex::new(None)),
        }
    }

    /// The status to answer with: the custody verdict, or `None` for "unavailable".
    async fn status(&self, keyring: &Keyring) -> Option<Custody> {
        let cached = *self.latest.borrow();
        if cached.is_none_or(|s| s.at.elapsed() > HEALTH_MAX_AGE) {
            self.refresh(keyring);
        }
        let snap = match cached {
            Some(s) => s,
            None => {
                let mut rx = self.latest.subscribe();
                let first = tokio::time::timeout(HEALTH_TIMEOUT, rx.wait_for(Option::is_some))
                    .await
                    .ok()
                    .and_then(|r| r.ok().and_then(|s| *s));
                first?
            }
        };
        let hung = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() > HEALTH_TIMEOUT);
        if hung {
            return None;
        }
        snap.custody
    }

    /// Starts a check unless one is running.
    fn refresh(&self, keyring: &Keyring) {
        {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            if running.is_some() {
                return;
            }
            *running = Some(Instant::now());
        }
        let keyring = keyring.clone();
        let latest = self.latest.clone();
        let running = self.running.clone();
        tokio::spawn(async move {
            let custody = match tokio::time::timeout(HEALTH_TIMEOUT, keyring.health()).await {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, cause = ?e.cause(), "health check failed");
                    None
                }
                Err(_) => {
                    tracing::error!("health check: the HSM does not answer");
                    None
                }
            };
            latest.send_replace(Some(Snapshot {
                at: Instant::now(),
                custody,
            }));
            *running.lock().unwrap_or_else(|e| e.into_inner()) = None;
        });
    }
}
/// Vault's `sys/health` shape.
#[derive(Serialize)]
struct Health {
    initialized: bool,
    sealed: bool,
    standby: bool,
    performance_standby: bool,
    replication_performance_mode: &'static str,
    replication_dr_mode: &'static str,
    server_time_utc: u64,
    version: &'static str,
    cluster_name: &'static str,
    hsm: &'static str,
    /// The custody check of the token's roots: `hardened`, `weak`, or `unknown` while the HSM
    /// does not answer. rootseal's own field (Vault clients ignore unknown fields).
    custody: &'static str,
    /// `on`, or `off` (single-operator behaviour: no ceremonies, no scoped tokens). rootseal's own.
    governance: &'static str,
    /// Whether the root token is accepted (`on`/`off`). rootseal's own.
    root_token: &'static str,
    /// The audit log: `block`, `best-effort` (development: requests never wait for it), `off`,
    /// `unsigned` (the audit key is missing: no checkpoints), or `failing` (block mode, the log
    /// cannot be written: requests get 503). rootseal's own field.
    audit: &'static str,
    /// Lifecycle warnings: a `seal-kek` key (OpenBao's auto-unseal key) past its protect-stop
    /// (it decrypts, so OpenBao unseals, but no longer encrypts). Absent when none. rootseal's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// `GET /v1/sys/health`: 200 when the HSM answers and holds a complete root, 503
/// (`"sealed":true`) otherwise.
pub async fn health(State(st): State<AppState>) -> Response {
    let custody = st.health_cache().status(st.keyring()).await;
    let hsm_ok = custody.is_some();
    let body = Health {
        initialized: true,
        sealed: !hsm_ok,
        standby: false,
        performance_standby: false,
        replication_performance_mode: "disabled",
        replication_dr_mode: "disabled",
        server_time_utc: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        version: env!("CARGO_PKG_VERSION"),
        cluster_name: "rootseal",
        hsm: if hsm_ok { "ok" } else { "unavailable" },
        custody: custody.map_or("unknown", |c| c.as_str()),
        governance: if st.governance() { "on" } else { "off" },
        root_token: if st.root_token_enabled() { "on" } else { "off" },
        audit: match st.audit().map(rootseal_audit::AuditLog::status) {
            None => "off",
            Some(a) if a.failing.is_some() => "failing",
            Some(a) if a.mode != rootseal_audit::Mode::Off && !a.signed => "unsigned",
            Some(a) => a.mode.as_str(),
        },
        warnings: st.keyring().seal_key_warnings(),
    };
    let status = if hsm_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    match serde_json::to_vec(&body) {
        Ok(v) => error::json_bytes(status, v),
        Err(_) => error::envelope(StatusCode::INTERNAL_SERVER_ERROR, Some(error::INTERNAL)),
    }
}

/// `GET /metrics`: the HSM operation counters and the HTTP counters, Prometheus text format.
pub async fn metrics(State(st): State<AppState>) -> Response {
    let mut out = String::with_capacity(4096);
    st.keyring().hsm().metrics().render_prometheus(&mut out);
    st.http_metrics().render_prometheus(&mut out);
    super::lifecycle::render_prometheus(st.keyring(), &mut out);
    super::audit::render_prometheus(st.audit(), &mut out);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response()
}

#[derive(Serialize)]
struct Auth<'a> {
    client_token: &'a str,
    accessor: &'static str,
    policies: [&'static str; 1],
    token_policies: [&'static str; 1],
    metadata: Option<()>,
    lease_duration: u64,
    renewable: bool,
    entity_id: &'static str,
    token_type: &'static str,
    orphan: bool,
}

#[derive(Serialize)]
struct RenewResponse<'a> {
    request_id: &'a str,
    lease_id: &'static str,
    renewable: bool,
    lease_duration: u64,
    data: Option<()>,
    wrap_info: Option<()>,
    warnings: Option<()>,
    auth: Auth<'a>,
}

/// `PUT /v1/auth/token/renew-self`: Vault's answer for a root token that does not expire and is
/// not renewable (`lease_duration: 0`, `renewable: false`), so OpenBao's seal renews once and
/// stops. Runs behind the token check; echoes the caller's own token as Vault does.
pub async fn renew_self(headers: HeaderMap) -> Response {
    let token = presented_token(&headers)
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or_default();
    let id = super::request_id();
    let body = RenewResponse {
        request_id: &id,
        lease_id: "",
        renewable: false,
        lease_duration: 0,
        data: None,
        wrap_info: None,
        warnings: None,
        auth: Auth {
            client_token: token,
            accessor: "",
            policies: ["root"],
            token_policies: ["root"],
            metadata: None,
            lease_duration: 0,
            renewable: false,
            entity_id: "",
            token_type: "service",
            orphan: true,
        },
    };
    match serde_json::to_vec(&body) {
        Ok(v) => error::json_bytes(StatusCode::OK, v),
        Err(_) => error::envelope(StatusCode::INTERNAL_SERVER_ERROR, Some(error::INTERNAL)),
    }
}

/// `GET /v1/sys/seal-status` (unauthenticated, as Vault's): Vault's shape, so `bao status` and
/// client libraries work. `sealed` is true whenever rootseal cannot serve keys (the HSM does not
/// answer, or its token holds no root), from the same cached check as health.
pub async fn seal_status(State(st): State<AppState>) -> Response {
    let up = st.health_cache().status(st.keyring()).await.is_some();
    let body = serde_json::json!({
        "type": "rootseal-hsm",
        "initialized": true,
        "sealed": !up,
        "t": 1,
        "n": 1,
        "progress": 0,
        "nonce": "",
        "version": env!("CARGO_PKG_VERSION"),
        "build_date": "",
        "migration": false,
        "cluster_name": "rootseal",
        "cluster_id": "",
        "recovery_seal": false,
        "storage_type": "rootseal",
    });
    error::json_bytes(StatusCode::OK, body.to_string().into_bytes())
}

/// `GET /v1/sys/init` (unauthenticated, as Vault's): `{"initialized": true}`. rootseal has no
/// init step over HTTP: `rootseal init` (Security Officer) makes the root; a server runs only once
/// it exists.
pub async fn init_status() -> Response {
    error::json_bytes(StatusCode::OK, br#"{"initialized":true}"#.to_vec())
}

/// `GET /v1/sys/mounts` (token): the transit mount in Vault's shape (each mount both at the top
/// level and under `data`, as Vault answers), so `bao secrets list` works.
pub async fn mounts(State(st): State<AppState>) -> Response {
    let path = format!("{}/", st.config().mount);
    let mount = serde_json::json!({
        "type": "transit",
        "description": "rootseal: keys inside the HSM",
        "accessor": "transit_rootseal",
        "uuid": "",
        "config": {
            "default_lease_ttl": 0,
            "max_lease_ttl": 0,
            "force_no_cache": false,
        },
        "options": null,
        "local": false,
        "seal_wrap": false,
        "external_entropy_access": false,
        "plugin_version": "",
        "running_plugin_version": concat!("v", env!("CARGO_PKG_VERSION"), "+rootseal"),
    });
    let mut data = serde_json::Map::new();
    data.insert(path, mount);
    let mut top = data.clone();
    top.insert("request_id".into(), super::request_id().into());
    top.insert("data".into(), serde_json::Value::Object(data));
    error::json_bytes(
        StatusCode::OK,
        serde_json::Value::Object(top).to_string().into_bytes(),
    )
}

/// `GET /v1/sys/leader` (unauthenticated, as Vault's; `bao status` asks it): a single node, no
/// high availability.
pub async fn leader() -> Response {
    let body = serde_json::json!({
        "ha_enabled": false,
        "is_self": true,
        "active_time": "0001-01-01T00:00:00Z",
        "leader_address": "",
        "leader_cluster_address": "",
        "performance_standby": false,
        "performance_standby_last_remote_wal": 0,
    });
    error::json_bytes(StatusCode::OK, body.to_string().into_bytes())
}

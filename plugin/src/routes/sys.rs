//! `GET /v1/sys/health`, `GET /metrics` (both unauthenticated) and
//! `PUT /v1/auth/token/renew-self`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{error, presented_token, AppState};

/// How long the health check waits for the HSM.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The audit log: `block`, `best-effort` (development: requests never wait for it), `off`,
    /// `unsigned` (the audit key is missing: no checkpoints), or `failing` (block mode, the log
    /// cannot be written: requests get 503). rootseal's own field.
    audit: &'static str,
}

/// `GET /v1/sys/health`: 200 when the HSM answers and holds a complete root, 503
/// (`"sealed":true`) otherwise.
pub async fn health(State(st): State<AppState>) -> Response {
    let custody = match tokio::time::timeout(HEALTH_TIMEOUT, st.keyring().health()).await {
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
        audit: match st.audit().map(rootseal_audit::AuditLog::status) {
            None => "off",
            Some(a) if a.failing.is_some() => "failing",
            Some(a) if a.mode != rootseal_audit::Mode::Off && !a.signed => "unsigned",
            Some(a) => a.mode.as_str(),
        },
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

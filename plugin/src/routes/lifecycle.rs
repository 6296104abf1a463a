//! `GET /v1/rootseal/lifecycle`: every key's next lifecycle event (NIST SP 800-57 dates and
//! Vault's `auto_rotate_period`), and whether its rotation is due or overdue.
//!
//! ```json
//! {"data":{"keys":{"app":{"latest_version":2,"lifecycle_class":"l1-kek",
//!   "next_event":"protect_stop","next_event_version":2,"next_event_time":"2027-12-03T06:00:00Z",
//!   "seconds_until_next_event":31535990,"rotation":"ok"}}}}
//! ```
//! `rotation` is `ok`, `due` (the latest version's protect-stop is within `[lifecycle]
//! lead_time`, or its `auto_rotate_period` has passed: the scheduler rotates it at its next
//! pass) or `overdue` (the latest version is past its protect-stop: encrypt is refused until a
//! rotation; decrypt keeps working).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use rootseal_hsm::{KeyInfo, KeyringError, LifecycleState};
use serde::Serialize;

use super::transit::keys::rfc3339;
use super::{ok, ApiError, AppState};

/// One key in the answer.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub(crate) struct KeyEvents {
    latest_version: u32,
    lifecycle_class: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_event: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_event_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_event_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds_until_next_event: Option<u64>,
    rotation: &'static str,
}

#[derive(Serialize)]
struct Data {
    keys: BTreeMap<String, KeyEvents>,
}

/// The events of `k` at `now` with rotation lead time `lead`.
pub(crate) fn key_events(k: &KeyInfo, now: u64, lead: u64) -> KeyEvents {
    let mut next: Option<(&'static str, u32, u64)> = None;
    let mut consider = |name, v, t: u64| {
        if t >= now && next.is_none_or(|(_, _, best)| t < best) {
            next = Some((name, v, t));
        }
    };
    for (v, l) in &k.lifecycle {
        if let Some((name, t)) = l.next_event {
            consider(name, *v, t);
        }
    }
    let latest = k.lifecycle.get(&k.latest_version);
    let mut rotation = "ok";
    if let Some(l) = latest {
        if k.auto_rotate_period_secs != 0 {
            let at = l.activation_time.saturating_add(k.auto_rotate_period_secs);
            consider("auto_rotate", k.latest_version, at);
            if now >= at {
                rotation = "due";
            }
        }
        let lead = lead.min(l.protect_stop_time.saturating_sub(l.activation_time) / 2);
        if l.state != LifecycleState::Active || now >= l.protect_stop_time {
            rotation = "overdue";
        } else if now.saturating_add(lead) >= l.protect_stop_time {
            rotation = "due";
        }
    }
    KeyEvents {
        latest_version: k.latest_version,
        lifecycle_class: k.lifecycle_class.name(),
        next_event: next.map(|n| n.0),
        next_event_version: next.map(|n| n.1),
        next_event_time: next.map(|n| rfc3339(n.2)),
        seconds_until_next_event: next.map(|n| n.2 - now),
        rotation,
    }
}

/// Appends the lifecycle gauges (Prometheus text) of every key the keyring has loaded:
/// `rootseal_key_protect_stop_seconds{key}` (until the latest version's protect-stop, negative
/// once past) and `rootseal_key_deactivation_seconds{key}` (until the earliest deactivation of a
/// version that still decrypts). From memory: no store or HSM call per scrape.
pub(crate) fn render_prometheus(keyring: &rootseal_hsm::Keyring, out: &mut String) {
    use std::fmt::Write as _;
    let gauges = keyring.lifecycle_gauges();
    let _ = writeln!(
        out,
        "# HELP rootseal_key_protect_stop_seconds Seconds until the key's latest version stops encrypting (negative: past).\n# TYPE rootseal_key_protect_stop_seconds gauge"
    );
    for g in &gauges {
        let _ = writeln!(
            out,
            "rootseal_key_protect_stop_seconds{{key=\"{}\"}} {}",
            g.name, g.protect_stop_in
        );
    }
    let _ = writeln!(
        out,
        "# HELP rootseal_key_deactivation_seconds Seconds until the key's oldest decrypting version deactivates.\n# TYPE rootseal_key_deactivation_seconds gauge"
    );
    for g in &gauges {
        if let Some(d) = g.deactivation_in {
            let _ = writeln!(
                out,
                "rootseal_key_deactivation_seconds{{key=\"{}\"}} {d}",
                g.name
            );
        }
    }
}

/// `GET /v1/rootseal/lifecycle`.
pub(crate) async fn lifecycle(State(st): State<AppState>) -> Result<Response, ApiError> {
    let keyring = st.keyring();
    let now = keyring.clock().now();
    let lead = keyring.lifecycle_policy().lead_time_secs;
    let mut keys = BTreeMap::new();
    for name in keyring.list_keys().await? {
        match keyring.key_info(&name).await {
            Ok(k) => {
                keys.insert(name, key_events(&k, now, lead));
            }
            Err(KeyringError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ok(Data { keys }))
}

//! The audit log in the server: the HSM checkpoint signer, opening the log for `serve` and `dev`,
//! and the KEK store wrapper that audits every record write and refuses rolled-back records
//! ([`store::AuditedStore`]). The record format, the writer and the verifier are the
//! `rootseal-audit` crate; the HTTP middleware is `routes/audit.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rootseal_audit::{AuditConfig, AuditLog, CheckpointSigner, Event, Mode};
use rootseal_hsm::{Hsm, Keyring, RootRole};

pub mod store;

/// Signs checkpoints with the token's `rootseal-audit` key, through the HSM worker pool.
pub struct HsmSigner {
    hsm: Hsm,
    name: String,
    public: [u8; 32],
    rt: tokio::runtime::Handle,
}

impl CheckpointSigner for HsmSigner {
    fn name(&self) -> &str {
        &self.name
    }

    fn public_key(&self) -> [u8; 32] {
        self.public
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        // The writer thread is not a runtime thread: waiting here blocks only it.
        self.rt
            .block_on(self.hsm.audit_sign(msg.to_vec()))
            .map_err(|e| e.to_string())
    }
}

/// The note key name of the audit key of token `serial`: `rootseal-audit/<serial>`.
pub fn key_name(serial: &str) -> String {
    format!("rootseal-audit/{}", serial.trim())
}

/// What a log being opened found about the audit key.
pub enum KeyState {
    /// The key is there and as its template says.
    Ok,
    /// The key is missing (a token made before the audit log): no checkpoints can be signed.
    Missing,
}

/// Opens the log of `cfg` over `hsm`'s token: the HSM signer (when the audit key exists), the
/// writer, and the per-key newest record writes the log has seen (for
/// [`store::AuditedStore`]). Writes the `<who>.start` record (`server`, or `cli` for an admin
/// command) and the start checkpoint.
///
/// # Errors
/// A message for the operator.
pub async fn open(
    cfg: &AuditConfig,
    hsm: &Hsm,
    who: &str,
) -> Result<(AuditLog, KeyState, HashMap<String, store::Seen>), String> {
    let public = hsm
        .audit_public_key()
        .await
        .map_err(|e| format!("cannot read the audit key: {e}"))?;
    let (signer, state): (Option<Arc<dyn CheckpointSigner>>, KeyState) = match public {
        Some(public) => (
            Some(Arc::new(HsmSigner {
                name: key_name(&hsm.identity().serial),
                hsm: hsm.clone(),
                public,
                rt: tokio::runtime::Handle::current(),
            })),
            KeyState::Ok,
        ),
        None => (None, KeyState::Missing),
    };
    let seen = if cfg.mode == Mode::Off {
        HashMap::new()
    } else {
        let path = cfg.path.clone();
        tokio::task::spawn_blocking(move || store::replay(&path))
            .await
            .map_err(|e| e.to_string())??
    };
    let status = rootseal_hsm::root_status(hsm)
        .await
        .map_err(|e| match e.cause() {
            Some(c) => format!("cannot read the roots: {e} ({c})"),
            None => format!("cannot read the roots: {e}"),
        })?;
    let root = status
        .roots
        .iter()
        .rev()
        .find(|r| r.role == RootRole::Current)
        .map_or_else(|| "none".to_owned(), |r| r.id.to_string());
    let origin = format!("rootseal/{}/{root}", hsm.identity().serial.trim());
    let c = cfg.clone();
    let log = tokio::task::spawn_blocking(move || AuditLog::open(&c, origin, signer))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let key_failures = hsm
        .audit_key_check()
        .await
        .unwrap_or_else(|e| vec![e.to_string()]);
    let start = Event::new(&format!("{who}.start"))
        .with("version", env!("CARGO_PKG_VERSION"))
        .with("audit_mode", cfg.mode.as_str())
        .with("token_serial", hsm.identity().serial.trim())
        .with("root", root)
        .with(
            "audit_key",
            if key_failures.is_empty() {
                "ok".to_owned()
            } else {
                key_failures.join("; ")
            },
        );
    log.record(start)
        .await
        .map_err(|e| format!("cannot write the audit log {}: {e}", cfg.path.display()))?;
    if matches!(state, KeyState::Ok) && cfg.mode != Mode::Off {
        log.checkpoint()
            .await
            .map_err(|e| format!("cannot sign the start checkpoint: {e}"))?;
    }
    Ok((log, state, seen))
}

/// Records the custody self-check of `keyring`'s token.
pub async fn record_custody(log: &AuditLog, keyring: &Keyring) {
    let c = keyring.custody();
    let ev = Event::new("custody.check")
        .with("verdict", c.verdict().as_str())
        .with("failures", c.failures());
    if let Err(e) = log.record(ev).await {
        tracing::error!(error = %e, "cannot record the custody check");
    }
}

/// Makes `log` record every use of a compromised key version that a `lifecycle.compromise`
/// ceremony's decision allows (`lifecycle.compromised_use`: key, version, operation, the end of
/// the decision), before the use: when the record cannot be written the use is refused.
pub fn audit_compromised_uses(log: &AuditLog, keyring: &Keyring) {
    let log = log.clone();
    keyring.set_compromised_use_audit(std::sync::Arc::new(move |u| {
        let log = log.clone();
        Box::pin(async move {
            let ev = Event::new("lifecycle.compromised_use")
                .with("key", u.key.as_str())
                .with("version", u.version)
                .with("op", u.op)
                .with("allowed_until", u.allowed_until);
            log.record(ev).await.map(|_| ()).map_err(|e| e.to_string())
        })
    }));
}

/// Writes the `<who>.stop` record and the final checkpoint.
pub async fn close(log: &AuditLog, who: &str) {
    if let Err(e) = log.record(Event::new(&format!("{who}.stop"))).await {
        tracing::error!(error = %e, "cannot write the stop record");
    }
    log.close().await;
}

/// The default log of a `rootseal dev` data directory.
pub fn dev_log_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("audit.log")
}

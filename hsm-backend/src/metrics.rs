//! Counters of PKCS#11 operations, by operation, for `rootseal_hsm_operations_total`.

use std::sync::atomic::{AtomicU64, Ordering};

/// The PKCS#11 operations rootseal performs, one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HsmOp {
    /// C_EncryptInit + C_Encrypt (AES-GCM under an L1 session key).
    Encrypt,
    /// C_DecryptInit + C_Decrypt.
    Decrypt,
    /// C_GenerateRandom.
    GenerateRandom,
    /// C_WrapKey (an L1 under L0).
    WrapKey,
    /// C_UnwrapKey (an L1 under L0 into a session object).
    UnwrapKey,
    /// C_Sign with the HMAC key.
    Sign,
    /// C_Verify with the HMAC key.
    Verify,
    /// C_GenerateKey.
    GenerateKey,
    /// C_FindObjects (by label or id).
    FindObjects,
    /// C_DestroyObject.
    DestroyObject,
    /// C_CreateObject (store registry entries only).
    CreateObject,
    /// C_OpenSession.
    OpenSession,
    /// C_Login.
    Login,
}

impl HsmOp {
    /// Every operation, in a stable order.
    pub const ALL: [HsmOp; 13] = [
        HsmOp::Encrypt,
        HsmOp::Decrypt,
        HsmOp::GenerateRandom,
        HsmOp::WrapKey,
        HsmOp::UnwrapKey,
        HsmOp::Sign,
        HsmOp::Verify,
        HsmOp::GenerateKey,
        HsmOp::FindObjects,
        HsmOp::DestroyObject,
        HsmOp::CreateObject,
        HsmOp::OpenSession,
        HsmOp::Login,
    ];

    /// The Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            HsmOp::Encrypt => "encrypt",
            HsmOp::Decrypt => "decrypt",
            HsmOp::GenerateRandom => "generate_random",
            HsmOp::WrapKey => "wrap_key",
            HsmOp::UnwrapKey => "unwrap_key",
            HsmOp::Sign => "sign",
            HsmOp::Verify => "verify",
            HsmOp::GenerateKey => "generate_key",
            HsmOp::FindObjects => "find_objects",
            HsmOp::DestroyObject => "destroy_object",
            HsmOp::CreateObject => "create_object",
            HsmOp::OpenSession => "open_session",
            HsmOp::Login => "login",
        }
    }

    fn index(self) -> usize {
        HsmOp::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }
}

/// Operation counters plus error and recovery counters. Cheap to bump from any thread.
#[derive(Debug, Default)]
pub struct HsmMetrics {
    ops: [AtomicU64; HsmOp::ALL.len()],
    errors: AtomicU64,
    session_recoveries: AtomicU64,
    device_recoveries: AtomicU64,
    jobs_refused: AtomicU64,
}

impl HsmMetrics {
    pub(crate) fn count(&self, op: HsmOp) {
        if let Some(c) = self.ops.get(op.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn session_recovered(&self) {
        self.session_recoveries.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn device_recovered(&self) {
        self.device_recoveries.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn job_refused(&self) {
        self.jobs_refused.fetch_add(1, Ordering::Relaxed);
    }
    /// Jobs refused because the HSM job queue was full.
    pub fn jobs_refused(&self) -> u64 {
        self.jobs_refused.load(Ordering::Relaxed)
    }

    /// How many times `op` ran.
    pub fn get(&self, op: HsmOp) -> u64 {
        self.ops
            .get(op.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
    /// The sum over all operations.
    pub fn total(&self) -> u64 {
        self.ops.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
    /// PKCS#11 calls that returned an error.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    /// Sessions replaced after a lost session.
    pub fn session_recoveries(&self) -> u64 {
        self.session_recoveries.load(Ordering::Relaxed)
    }
    /// Re-initialisations of the module after a lost device.
    pub fn device_recoveries(&self) -> u64 {
        self.device_recoveries.load(Ordering::Relaxed)
    }

    /// Renders the counters in Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP rootseal_hsm_operations_total PKCS#11 operations performed, by operation."
        );
        let _ = writeln!(out, "# TYPE rootseal_hsm_operations_total counter");
        for op in HsmOp::ALL {
            let _ = writeln!(
                out,
                "rootseal_hsm_operations_total{{operation=\"{}\"}} {}",
                op.label(),
                self.get(op)
            );
        }
        let _ = writeln!(
            out,
            "# HELP rootseal_hsm_errors_total PKCS#11 calls that failed."
        );
        let _ = writeln!(out, "# TYPE rootseal_hsm_errors_total counter");
        let _ = writeln!(out, "rootseal_hsm_errors_total {}", self.errors());
        let _ = writeln!(
            out,
            "# HELP rootseal_hsm_recoveries_total Recoveries from lost sessions and devices."
        );
        let _ = writeln!(out, "# TYPE rootseal_hsm_recoveries_total counter");
        let _ = writeln!(
            out,
            "rootseal_hsm_recoveries_total{{kind=\"session\"}} {}",
            self.session_recoveries()
        );
        let _ = writeln!(
            out,
            "rootseal_hsm_recoveries_total{{kind=\"device\"}} {}",
            self.device_recoveries()
        );
        let _ = writeln!(
            out,
            "# HELP rootseal_hsm_jobs_refused_total Requests refused at once because the HSM job queue was full."
        );
        let _ = writeln!(out, "# TYPE rootseal_hsm_jobs_refused_total counter");
        let _ = writeln!(
            out,
            "rootseal_hsm_jobs_refused_total {}",
            self.jobs_refused()
        );
    }
}

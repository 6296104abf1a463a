//! How to reach the HSM.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

/// Which token to use. Slot ids are not stable (SoftHSM2 renumbers them), so tokens are found by
/// label or serial number.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSelector {
    /// `CKA_LABEL` of the token (trailing blanks ignored).
    Label(String),
    /// The token's serial number.
    Serial(String),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(l) => write!(f, "label {l:?}"),
            Self::Serial(s) => write!(f, "serial {s:?}"),
        }
    }
}

/// Everything needed to open an [`crate::Hsm`]. The PIN never prints.
pub struct HsmConfig {
    /// Path of the PKCS#11 module (`libsofthsm2.so`, a vendor library, …).
    pub module: PathBuf,
    /// The token to use.
    pub token: TokenSelector,
    /// The User PIN.
    pub pin: SecretString,
    /// Number of sessions (one worker thread each). SoftHSM2 gains nothing past 2.
    pub pool_size: usize,
    /// Jobs that may wait for a worker ([`DEFAULT_QUEUE_LIMIT`]); one more is refused at once
    /// ([`crate::KeyringError::Overloaded`], HTTP 503 with `Retry-After`).
    pub queue_limit: usize,
    /// How long a caller waits for its job ([`DEFAULT_JOB_TIMEOUT`]): a job still queued then is
    /// never started, and a hung HSM answers `HSM unavailable` instead of hanging its callers.
    pub job_timeout: Duration,
}

/// Default [`HsmConfig::queue_limit`]: about a second of work for SoftHSM2 with two workers.
pub const DEFAULT_QUEUE_LIMIT: usize = 1024;
/// Default [`HsmConfig::job_timeout`].
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(30);

impl HsmConfig {
    /// A configuration with the default pool size (2), queue limit and job timeout.
    pub fn new(module: PathBuf, token: TokenSelector, pin: SecretString) -> Self {
        Self {
            module,
            token,
            pin,
            pool_size: 2,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            job_timeout: DEFAULT_JOB_TIMEOUT,
        }
    }
}

impl fmt::Debug for HsmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmConfig")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("pin", &"[REDACTED]")
            .field("pool_size", &self.pool_size)
            .field("queue_limit", &self.queue_limit)
            .field("job_timeout", &self.job_timeout)
            .finish()
    }
}

impl Clone for HsmConfig {
    fn clone(&self) -> Self {
        Self {
            module: self.module.clone(),
            token: self.token.clone(),
            pin: self.pin.clone(),
            pool_size: self.pool_size,
            queue_limit: self.queue_limit,
            job_timeout: self.job_timeout,
        }
    }
}

/// The SoftHSM2 module on Debian, found where the `libsofthsm2` package installs it.
pub fn default_softhsm_module() -> Option<PathBuf> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_pin() {
        let cfg = HsmConfig::new(
            "/x.so".into(),
            TokenSelector::Label("t".into()),
            SecretString::from("hunter2-pin"),
        );
        let s = format!("{cfg:?}");
        assert!(!s.contains("hunter2"), "{s}");
    }
}

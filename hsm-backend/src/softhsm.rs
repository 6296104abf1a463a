//! SoftHSM2 token directories: for `rootseal dev` (the embedded default) and for tests.
//!
//! SoftHSM2 reads its configuration file, named by `SOFTHSM2_CONF`, once per process at
//! `C_Initialize`. A process therefore uses one token directory; tokens must be created in it
//! before the module is first loaded (SoftHSM2 does not pick up tokens created later by another
//! process). The test runner (`cargo nextest`) gives each test its own process, so each test gets
//! its own directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{default_softhsm_module, HsmConfig, TokenSelector};

/// Errors preparing a SoftHSM2 directory or token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SoftHsmError {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `softhsm2-util` is missing or failed.
    #[error("softhsm2-util failed: {0} (is the Debian package softhsm2 installed?)")]
    Util(String),
    /// `libsofthsm2.so` was not found.
    #[error("libsofthsm2.so not found (install the Debian package softhsm2)")]
    NoModule,
}

/// A directory holding `softhsm2.conf` and `tokens/`.
#[derive(Clone, Debug)]
pub struct SoftHsmDir {
    /// The directory.
    pub dir: PathBuf,
    /// Its `softhsm2.conf`; point `SOFTHSM2_CONF` here (for `pkcs11-tool` too).
    pub conf: PathBuf,
    /// The token directory.
    pub tokens: PathBuf,
}

impl SoftHsmDir {
    /// Creates (or reuses) `dir/softhsm2.conf` and `dir/tokens/` (mode 0700).
    ///
    /// # Errors
    /// [`SoftHsmError::Io`].
    pub fn create(dir: &Path) -> Result<Self, SoftHsmError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SoftHsmError::Io { path, source }
        };
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(io(&tokens))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o700))
                .map_err(io(&tokens))?;
        }
        let conf = dir.join("softhsm2.conf");
        if !conf.exists() {
            let text = format!(
                "# SoftHSM2 configuration written by rootseal\n\
                 directories.tokendir = {}\n\
                 objectstore.backend = file\n\
                 log.level = ERROR\n\
                 slots.removable = false\n",
                tokens.display()
            );
            std::fs::write(&conf, text).map_err(io(&conf))?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            conf,
            tokens,
        })
    }

    /// Whether a token labelled `label` exists in this directory (asks `softhsm2-util`).
    ///
    /// # Errors
    /// [`SoftHsmError::Util`] when `softhsm2-util` cannot run.
    pub fn has_token(&self, label: &str) -> Result<bool, SoftHsmError> {
        let out = Command::new("softhsm2-util")
            .arg("--show-slots")
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .map_err(|e| SoftHsmError::Util(e.to_string()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Label:"))
            .any(|l| l.trim() == label))
    }

    /// Initialises a new token with `softhsm2-util --init-token --free`.
    ///
    /// The PINs pass through `softhsm2-util`'s argument list, as that tool requires; use this for
    /// development and test tokens only. Production tokens are created by their operators.
    ///
    /// # Errors
    /// [`SoftHsmError::Util`] with the tool's own message.
    pub fn init_token(
        &self,
        label: &str,
        pin: &SecretString,
        so_pin: &SecretString,
    ) -> Result<(), SoftHsmError> {
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label, "--pin"])
            .arg(pin.expose_secret())
            .arg("--so-pin")
            .arg(so_pin.expose_secret())
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .map_err(|e| SoftHsmError::Util(e.to_string()))?;
        if !out.status.success() {
            return Err(SoftHsmError::Util(format!(
                "exit {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Makes this directory the process's SoftHSM2 configuration (`SOFTHSM2_CONF`). Call it before
    /// the module is loaded, while the process has one thread.
    pub fn activate(&self) {
        std::env::set_var("SOFTHSM2_CONF", &self.conf);
    }
}

/// A fresh SoftHSM2 token for a test: its own directory (one per process), its own label and PIN.
#[derive(Debug)]
pub struct TestToken {
    /// The directory (removed when the last `TestToken` of the process is dropped… never: the
    /// directory lives in the system temp dir and is cleaned with it).
    pub dir: SoftHsmDir,
    /// The token label.
    pub label: String,
    /// The User PIN.
    pub pin: String,
    /// The module path.
    pub module: PathBuf,
}

impl TestToken {
    /// Creates a new token in the process's test directory. Create every token a test needs before
    /// the first [`crate::Hsm::open`] in that process.
    ///
    /// # Panics
    /// When SoftHSM2 is not installed: the tests need it (CI installs it).
    #[allow(clippy::expect_used, clippy::panic)]
    pub fn new() -> TestToken {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::OnceLock;
        static DIR: OnceLock<(tempfile_like::Dir, SoftHsmDir)> = OnceLock::new();
        static N: AtomicU32 = AtomicU32::new(0);
        let (_, dir) = DIR.get_or_init(|| {
            let td = tempfile_like::Dir::new("rootseal-softhsm");
            let d = SoftHsmDir::create(&td.path).expect("create SoftHSM2 dir");
            d.activate();
            (td, d)
        });
        let module =
            default_softhsm_module().expect("libsofthsm2.so not found: apt-get install softhsm2");
        let n = N.fetch_add(1, Ordering::SeqCst);
        let label = format!("t{}-{n}", std::process::id());
        let pin = format!("pin-{n}-{}", std::process::id());
        dir.init_token(
            &label,
            &SecretString::from(pin.clone()),
            &SecretString::from(format!("so-{pin}")),
        )
        .expect("softhsm2-util --init-token");
        TestToken {
            dir: dir.clone(),
            label,
            pin,
            module,
        }
    }

    /// An [`HsmConfig`] for this token.
    pub fn config(&self) -> HsmConfig {
        HsmConfig {
            module: self.module.clone(),
            token: TokenSelector::Label(self.label.clone()),
            pin: SecretString::from(self.pin.clone()),
            pool_size: 2,
        }
    }
}

impl TestToken {
    /// Opens this token, creates its root and returns the HSM and a keyring over a file store in
    /// `store_dir`: the fixture every SoftHSM2 test starts from.
    ///
    /// # Panics
    /// When the token cannot be opened or initialised (a test failure).
    #[allow(clippy::expect_used)]
    pub async fn keyring(&self, store_dir: &Path) -> (crate::Hsm, crate::Keyring) {
        let cfg = self.config();
        let hsm = tokio::task::spawn_blocking(move || crate::Hsm::open(cfg))
            .await
            .expect("HSM open task")
            .expect("open the test token");
        crate::Keyring::init_root(&hsm)
            .await
            .expect("create the root");
        let store = crate::store::FileStore::open(store_dir).expect("file store");
        let keyring = crate::Keyring::open(hsm.clone(), std::sync::Arc::new(store))
            .await
            .expect("open the keyring");
        (hsm, keyring)
    }
}

impl Default for TestToken {
    fn default() -> Self {
        Self::new()
    }
}

/// A tiny temporary directory (tempfile is a dev-dependency only).
mod tempfile_like {
    use std::path::PathBuf;

    #[derive(Debug)]
    pub(super) struct Dir {
        pub(super) path: PathBuf,
    }

    impl Dir {
        #[allow(clippy::expect_used)]
        pub(super) fn new(prefix: &str) -> Dir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let path =
                std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&path).expect("create temp dir");
            Dir { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

//! SoftHSM2 token directories: for `rootseal dev` (the embedded default) and for tests.
//!
//! SoftHSM2 reads its configuration file, named by `SOFTHSM2_CONF`, once per process at
//! `C_Initialize`. A process therefore uses one token directory; tokens must be created in it
//! before the module is first loaded (SoftHSM2 does not pick up tokens created later by another
//! process). Test tokens are made with this too (the `rootseal-testkit` crate).

use std::path::{Path, PathBuf};
use std::process::Command;

use secrecy::{ExposeSecret, SecretString};

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

//! `rootseal key compromise NAME --version N --config FILE`: marks a key version compromised
//! (NIST SP 800-57: it never protects nor processes again) and rotates the key when it was the
//! latest version.
//!
//! With governance on, this is a `lifecycle.compromise` ceremony (SO + CO by default), whose
//! decision may let the version decrypt for a while (`decrypt_secs`, each use audited); the
//! command refuses and names the ceremony rather than act on one operator's word.

use std::path::Path;

use super::admin::{key_error, load, open_keyring, print_key};
use super::CliResult;

/// `rootseal key compromise NAME --version N --config FILE`.
pub async fn key_compromise(path: &Path, name: &str, version: u32) -> CliResult {
    let cfg = load(path)?;
    if cfg.governance.enabled {
        return Err(format!(
            "marking key {name} v{version} compromised is a lifecycle.compromise ceremony when \
             governance is on: rootseal ceremony propose --op lifecycle.compromise \
             --param key={name} --param version={version} [--param decrypt_secs=N] \
             --config {}",
            path.display()
        ));
    }
    let keyring = open_keyring(&cfg).await?;
    let k = keyring
        .compromise_version(name, version)
        .await
        .map_err(|e| key_error(name, e))?;
    eprintln!("key {name} v{version} is marked compromised: it no longer encrypts nor decrypts");
    print_key(&k);
    Ok(())
}

//! `rootseal key compromise NAME --version N --config FILE`: marks a key version compromised
//! (NIST SP 800-57: it never protects nor processes again) and rotates the key when it was the
//! latest version.
//!
//! With governance on, this is to be a `lifecycle.compromise` ceremony; that ceremony is not
//! built yet, so the command refuses rather than act on one operator's word.

use std::path::Path;

use super::admin::{key_error, load, open_keyring, print_key};
use super::CliResult;

/// `rootseal key compromise NAME --version N --config FILE`.
pub async fn key_compromise(path: &Path, name: &str, version: u32) -> CliResult {
    let cfg = load(path)?;
    if cfg.governance.enabled {
        return Err(format!(
            "marking key {name} v{version} compromised needs a lifecycle.compromise ceremony when \
             governance is on, which this release does not have yet: with governance = \"off\" \
             run this command, or rotate the key and raise min_decryption_version past v{version}"
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

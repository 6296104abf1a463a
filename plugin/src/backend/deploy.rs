//! `rootseal openbao secrets-config --plugin-dir DIR`: install the binary into OpenBao's plugin
//! directory and print the commands that register and mount it, and a policy for an application.

use std::path::Path;

use crate::kms::deploy::{KmsConfigError, PLUGIN_BINARY};

/// The mount path the printed commands use.
pub const MOUNT: &str = "hsm";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KmsConfigError + '_ {
    move |source| KmsConfigError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Copies the running binary to `plugin_dir/rootseal` and returns the commands.
///
/// # Errors
/// [`KmsConfigError::Io`] when the binary cannot be copied or read.
pub fn secrets_config_command(plugin_dir: &Path) -> Result<String, KmsConfigError> {
    let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
    install(&exe, plugin_dir)
}

/// [`secrets_config_command`] with an explicit binary (tests).
///
/// # Errors
/// [`KmsConfigError::Io`].
pub fn install(exe: &Path, plugin_dir: &Path) -> Result<String, KmsConfigError> {
    let (plugin_dir, dest, sum) = crate::kms::deploy::install_binary(exe, plugin_dir)?;
    let version = super::service::plugin_version();
    Ok(format!(
        "# rootseal secrets-engine plugin installed as {dest}.\n\
         # The OpenBao server config must name its directory:\n\
         #   plugin_directory = \"{dir}\"\n\
         # Register and mount it. OpenBao gives a plugin no environment of its own: when the\n\
         # PKCS#11 module needs a variable (SoftHSM2: SOFTHSM2_CONF), register through the API\n\
         # instead, with env:\n\
         #   bao write sys/plugins/catalog/secret/{PLUGIN_BINARY} sha256={sum} version={version} command={PLUGIN_BINARY} env=SOFTHSM2_CONF=/etc/softhsm2.conf\n\
         bao plugin register -sha256={sum} -version={version} secret {PLUGIN_BINARY}\n\
         bao secrets enable -path={MOUNT} {PLUGIN_BINARY}\n\
         # Point the mount at the HSM token (needs sudo on {MOUNT}/config/hsm). The PIN is read by\n\
         # the plugin from pin_file (or pin_env) on this host and never stored in OpenBao:\n\
         #   bao write {MOUNT}/config/hsm module=/usr/lib/softhsm/libsofthsm2.so token_label=rootseal pin_file=/etc/rootseal/pin\n\
         # Policy for an application that encrypts and decrypts with key \"app\"\n\
         # (bao policy write app-transit app-transit.hcl):\n\
         path \"{MOUNT}/encrypt/app\" {{\n  capabilities = [\"update\"]\n}}\n\
         path \"{MOUNT}/decrypt/app\" {{\n  capabilities = [\"update\"]\n}}\n",
        dest = dest.display(),
        dir = plugin_dir.display(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_and_prints_the_commands() {
        let tmp = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let exe = tmp.path().join("bin");
        std::fs::write(&exe, b"binary").unwrap_or_else(|_| unreachable!());
        let out = install(&exe, &tmp.path().join("plugins")).unwrap_or_default();
        let sum = crate::kms::deploy::sha256_file(&tmp.path().join("plugins/rootseal"))
            .unwrap_or_default();
        assert!(out.contains(&format!(
            "bao plugin register -sha256={sum} -version=v{} secret rootseal\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(out.contains("bao secrets enable -path=hsm rootseal\n"));
        assert!(out.contains("path \"hsm/encrypt/app\""));
    }
}

//! `rootseal openbao kms-config`: install the binary into OpenBao's plugin directory and print the
//! server-config stanzas that declare it.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The arguments OpenBao passes to the binary (`plugin "kms" "rootseal" { args = … }`): the
/// subcommand that runs [`super::kms_plugin_main`].
pub const PLUGIN_ARGS: &[&str] = &["openbao", "kms-plugin"];
/// File name of the binary inside the plugin directory.
pub const PLUGIN_BINARY: &str = "rootseal";

/// Why `kms-config` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsConfigError {
    /// A file could not be read, copied or created.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KmsConfigError + '_ {
    move |source| KmsConfigError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, KmsConfigError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Copy the running binary to `plugin_dir/rootseal` (mode 0755, atomically) and return the
/// `plugin_directory`, `plugin "kms" "rootseal"` and `seal "rootseal"` stanzas for an OpenBao
/// server config, the seal pointing at `config` (a `rootseal.toml`).
pub fn kms_config_command(config: &Path, plugin_dir: &Path) -> Result<String, KmsConfigError> {
    let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
    install(&exe, config, plugin_dir)
}

/// Copies `exe` into `plugin_dir` as [`PLUGIN_BINARY`] (atomically, mode 0755; nothing to do
/// when it is already that file) and returns the canonical plugin directory (OpenBao resolves
/// symlinks in `plugin_directory` and requires the command inside it), the installed path and
/// its SHA-256 (hex), which OpenBao checks before it runs a plugin. Shared by every plugin's
/// deploy command.
///
/// # Errors
/// [`KmsConfigError::Io`].
pub fn install_binary(
    exe: &Path,
    plugin_dir: &Path,
) -> Result<(PathBuf, PathBuf, String), KmsConfigError> {
    std::fs::create_dir_all(plugin_dir).map_err(io(plugin_dir))?;
    let plugin_dir = std::fs::canonicalize(plugin_dir).map_err(io(plugin_dir))?;
    let dest = plugin_dir.join(PLUGIN_BINARY);
    let same = std::fs::canonicalize(exe)
        .ok()
        .zip(std::fs::canonicalize(&dest).ok())
        .is_some_and(|(a, b)| a == b);
    if !same {
        let tmp = plugin_dir.join(format!(".{PLUGIN_BINARY}.tmp.{}", std::process::id()));
        std::fs::copy(exe, &tmp).map_err(io(&tmp))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                .map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    }
    let sum = sha256_file(&dest)?;
    Ok((plugin_dir, dest, sum))
}

/// [`kms_config_command`] with an explicit binary (tests).
pub fn install(exe: &Path, config: &Path, plugin_dir: &Path) -> Result<String, KmsConfigError> {
    let config = std::fs::canonicalize(config).map_err(io(config))?;
    let (plugin_dir, _dest, sum) = install_binary(exe, plugin_dir)?;
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let config = config.to_string_lossy();
    let stanzas = rootseal_vault_config::render_kms_plugin_stanzas(
        &plugin_dir,
        PLUGIN_BINARY,
        PLUGIN_ARGS,
        &sum,
        &version,
        &[("config_file", &config)],
    );
    Ok(format!(
        "# rootseal KMS (auto-unseal) plugin: append to the OpenBao server config.\n\
         # The HSM PIN is never written here: the plugin reads it as rootseal.toml says\n\
         # (ROOTSEAL_HSM_PIN in OpenBao's environment, which the plugin inherits, or a PIN file).\n\
         {stanzas}"
    ))
}

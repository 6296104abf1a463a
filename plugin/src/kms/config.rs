//! The `seal "rootseal"` stanza: the config map OpenBao passes to `SetConfig`.
//!
//! Accepted keys (everything else is an error OpenBao logs):
//! * `config_file`: path of a `rootseal.toml` (HSM, local key store and `[lifecycle]` taken from
//!   it: the unseal key's versions get `[lifecycle.seal-kek]`'s periods, read and bounded as
//!   `rootseal serve` reads them), **or**
//!   inline: `module`, `token_label` or `token_serial`, `key_dir` (the local file store that holds
//!   the sealed unseal KEK), `pin_file` (optional); the lifecycle is then SP 800-57's defaults;
//! * `key_name` (default `openbao-unseal`), `pool_size` (HSM sessions, default 1);
//! * `allow_weak_root` (default `"false"`): serve from a root that fails the custody check;
//! * `audit_log`: the plugin's audit log (default `kms-audit.log` in the local key store
//!   directory); every `Encrypt`/`Decrypt` is recorded there in block mode (`docs/audit.md`).
//!
//! The PIN comes from `ROOTSEAL_HSM_PIN` in the plugin's environment or from `pin_file`; a PIN in
//! the stanza (`pin`, `hsm_pin`, …) is refused, because the server config is not a secret store.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use rootseal_hsm::TokenSelector;

/// Default name of the L1 unseal KEK.
pub const DEFAULT_KEY_NAME: &str = "openbao-unseal";
/// Environment variable holding the HSM User PIN.
pub const PIN_ENV: &str = "ROOTSEAL_HSM_PIN";
/// Keys that would carry the PIN: refused in the stanza, and declared sensitive to OpenBao.
pub const PIN_KEYS: &[&str] = &["pin", "hsm_pin", "user_pin", "so_pin", "pkcs11_pin"];
const KNOWN_KEYS: &[&str] = &[
    "config_file",
    "module",
    "token_label",
    "token_serial",
    "pin_file",
    "key_dir",
    "key_name",
    "pool_size",
    "allow_weak_root",
    "audit_log",
];

/// Where the HSM and key store settings come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A `rootseal.toml`.
    ConfigFile(PathBuf),
    /// Given inline in the stanza.
    Inline {
        /// PKCS#11 module path.
        module: PathBuf,
        /// The token.
        token: TokenSelectorKey,
        /// Local file store directory.
        key_dir: PathBuf,
        /// File holding the PIN, if not from the environment.
        pin_file: Option<PathBuf>,
    },
}

/// [`TokenSelector`] in a hashable form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TokenSelectorKey {
    /// By label.
    Label(String),
    /// By serial.
    Serial(String),
}

impl From<&TokenSelectorKey> for TokenSelector {
    fn from(t: &TokenSelectorKey) -> Self {
        match t {
            TokenSelectorKey::Label(l) => TokenSelector::Label(l.clone()),
            TokenSelectorKey::Serial(s) => TokenSelector::Serial(s.clone()),
        }
    }
}

/// The validated stanza.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SealSettings {
    /// HSM and store.
    pub source: Source,
    /// Name of the L1 unseal KEK.
    pub key_name: String,
    /// HSM sessions.
    pub pool_size: usize,
    /// Whether the PIN may come from the environment (`with_disallow_env_vars` turns it off).
    pub allow_env: bool,
    /// **Security warning**: serve from a root that fails the custody check (made by rootseal
    /// 0.1.0: a User-PIN holder could read its L1 keys). `allow_weak_root = "true"`; default false.
    pub allow_weak_root: bool,
    /// The plugin's audit log (`audit_log`; `None`: `kms-audit.log` in the key store directory).
    pub audit_log: Option<PathBuf>,
}

/// A stanza that cannot be used. The message is shown by OpenBao: it names keys, never values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A PIN in the stanza.
    #[error(
        "seal \"rootseal\": key {0:?} is not allowed: the HSM PIN must not be written in the server \
         config; set {PIN_ENV} in the plugin's environment (plugin \"kms\" env, or OpenBao's own \
         environment) or use pin_file"
    )]
    PinInStanza(String),
    /// Unknown keys.
    #[error("seal \"rootseal\": unknown config key(s) {0}; accepted keys: {accepted}", accepted = KNOWN_KEYS.join(", "))]
    UnknownKeys(String),
    /// Missing or conflicting keys.
    #[error("seal \"rootseal\": {0}")]
    Invalid(String),
}

impl SealSettings {
    /// Validate OpenBao's config map.
    pub fn parse(map: &HashMap<String, String>, disallow_env: bool) -> Result<Self, ConfigError> {
        if let Some(k) = map
            .keys()
            .find(|k| PIN_KEYS.contains(&k.to_ascii_lowercase().as_str()))
        {
            return Err(ConfigError::PinInStanza(k.clone()));
        }
        let unknown: BTreeSet<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN_KEYS.contains(k))
            .collect();
        if !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().map(|k| format!("{k:?}")).collect();
            return Err(ConfigError::UnknownKeys(list.join(", ")));
        }
        let get = |k: &str| map.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let invalid = |m: &str| ConfigError::Invalid(m.to_owned());

        let key_name = get("key_name").unwrap_or(DEFAULT_KEY_NAME).to_owned();
        if !rootseal_hsm::valid_key_name(&key_name) {
            return Err(invalid(
                "key_name must be 1-128 characters of [A-Za-z0-9_.-], not starting with '.'",
            ));
        }
        let pool_size = match get("pool_size") {
            None => 1,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=16).contains(&n) => n,
                _ => return Err(invalid("pool_size must be an integer from 1 to 16")),
            },
        };
        let inline_keys = [
            "module",
            "token_label",
            "token_serial",
            "key_dir",
            "pin_file",
        ];
        let source = if let Some(file) = get("config_file") {
            if let Some(k) = inline_keys.iter().find(|k| get(k).is_some()) {
                return Err(ConfigError::Invalid(format!(
                    "config_file and {k} are mutually exclusive (the HSM and key store come from the config file)"
                )));
            }
            Source::ConfigFile(PathBuf::from(file))
        } else {
            let module = get("module").ok_or_else(|| {
                invalid("set config_file (path of rootseal.toml), or module, token_label or token_serial, and key_dir")
            })?;
            let token = match (get("token_label"), get("token_serial")) {
                (Some(l), None) => TokenSelectorKey::Label(l.to_owned()),
                (None, Some(s)) => TokenSelectorKey::Serial(s.to_owned()),
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "token_label and token_serial are mutually exclusive",
                    ))
                }
                (None, None) => return Err(invalid("token_label or token_serial is required")),
            };
            let key_dir = get("key_dir").ok_or_else(|| {
                invalid("key_dir (local directory holding the sealed unseal key) is required")
            })?;
            Source::Inline {
                module: PathBuf::from(module),
                token,
                key_dir: PathBuf::from(key_dir),
                pin_file: get("pin_file").map(PathBuf::from),
            }
        };
        let allow_weak_root = match get("allow_weak_root") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(invalid("allow_weak_root must be \"true\" or \"false\"")),
        };
        Ok(Self {
            source,
            key_name,
            pool_size,
            allow_env: !disallow_env,
            allow_weak_root,
            audit_log: get("audit_log").map(PathBuf::from),
        })
    }
}

/// Read the PIN: `ROOTSEAL_HSM_PIN` (if allowed and set), else `pin_file` (one line; a trailing
/// newline is dropped). Errors never contain the PIN.
pub fn resolve_pin(
    allow_env: bool,
    pin_file: Option<&std::path::Path>,
) -> Result<secrecy::SecretString, String> {
    if allow_env {
        if let Ok(pin) = std::env::var(PIN_ENV) {
            if !pin.is_empty() {
                return Ok(secrecy::SecretString::from(pin));
            }
        }
    }
    let Some(path) = pin_file else {
        return Err(format!(
            "no HSM PIN: set {PIN_ENV} in the plugin's environment or pin_file in the seal stanza"
        ));
    };
    let raw = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read pin_file {}: {e}", path.display()))?,
    );
    let pin = raw.trim_end_matches(['\r', '\n']);
    if pin.is_empty() {
        return Err(format!("pin_file {} is empty", path.display()));
    }
    Ok(secrecy::SecretString::from(pin.to_owned()))
}

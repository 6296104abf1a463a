//! `config/hsm`: which HSM token a mount's keys live under, with the field names of
//! rootseal.toml's `[hsm]` table.
//!
//! Write: `module` (PKCS#11 library path on the OpenBao host), `token_label` **or**
//! `token_serial`, `pin_file` (a file on the OpenBao host holding the User PIN) **or** `pin_env`
//! (the name of an environment variable of the plugin process: the `env` of its plugin catalog
//! entry),
//! `pool_size` (HSM sessions, default 2). A `pin` (or any other PIN-like field) is refused: the
//! PIN is read by the plugin process where it runs and is never stored in OpenBao storage, never
//! returned, never logged. Read: the same fields and the token's identity, never the PIN.

use std::path::{Path, PathBuf};

use rootseal_hsm::{HsmConfig, TokenIdentity, TokenSelector};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The storage key of the mount's HSM settings.
pub const CONFIG_ENTRY: &str = "config/hsm";
/// The `format` of the stored settings.
const FORMAT: &str = "rootseal-hsm-config/1";
/// Default HSM sessions per plugin process.
const DEFAULT_POOL_SIZE: usize = 2;
/// Largest accepted `pool_size`.
const MAX_POOL_SIZE: usize = 64;
/// Fields that would carry a PIN: refused.
const PIN_FIELDS: &[&str] = &["pin", "hsm_pin", "user_pin", "so_pin", "pkcs11_pin"];
/// Fields a write accepts.
const FIELDS: &[&str] = &[
    "module",
    "token_label",
    "token_serial",
    "pin_file",
    "pin_env",
    "pool_size",
];

/// Where the User PIN comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinSource {
    /// A file on the OpenBao host (first line).
    File(PathBuf),
    /// An environment variable of the plugin process.
    Env(String),
}

/// The mount's HSM settings as stored (no PIN).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HsmEntry {
    format: String,
    /// PKCS#11 module path.
    pub module: PathBuf,
    /// `token_label`, if the token is chosen by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    /// `token_serial`, if the token is chosen by serial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_serial: Option<String>,
    /// Where the PIN comes from.
    pub pin: PinSource,
    /// HSM sessions.
    pub pool_size: usize,
    /// The token the settings were accepted for (filled in once it answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenIdentity>,
}

/// A write the mount refuses: the message names fields, never a PIN.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HsmConfigError {
    /// A PIN in the request.
    #[error(
        "field {0:?} is not accepted: the HSM PIN is never stored in OpenBao; give pin_file (a \
         file on the OpenBao host) or pin_env (an environment variable of the plugin, set in \
         the env of its plugin catalog entry)"
    )]
    PinGiven(String),
    /// Unknown fields.
    #[error("unknown field(s) {0}; config/hsm accepts module, token_label or token_serial, pin_file or pin_env, pool_size")]
    Unknown(String),
    /// A missing, conflicting or malformed field.
    #[error("{0}")]
    Invalid(String),
    /// The PIN source cannot be read.
    #[error("{0}")]
    Pin(String),
}

fn string_field(
    data: &serde_json::Map<String, Value>,
    k: &str,
) -> Result<Option<String>, HsmConfigError> {
    match data.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(HsmConfigError::Invalid(format!("{k} must be a string"))),
    }
}

impl HsmEntry {
    /// Validates a write's `data`.
    ///
    /// # Errors
    /// [`HsmConfigError`].
    pub fn parse(data: &serde_json::Map<String, Value>) -> Result<Self, HsmConfigError> {
        if let Some(k) = data
            .keys()
            .find(|k| PIN_FIELDS.contains(&k.to_ascii_lowercase().as_str()))
        {
            return Err(HsmConfigError::PinGiven(k.clone()));
        }
        let unknown: Vec<&str> = data
            .keys()
            .map(String::as_str)
            .filter(|k| !FIELDS.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(HsmConfigError::Unknown(unknown.join(", ")));
        }
        let module = string_field(data, "module")?
            .map(PathBuf::from)
            .ok_or_else(|| {
                HsmConfigError::Invalid("module is required (the PKCS#11 library path)".into())
            })?;
        if !module.is_absolute() {
            return Err(HsmConfigError::Invalid(
                "module must be an absolute path".into(),
            ));
        }
        let (token_label, token_serial) = match (
            string_field(data, "token_label")?,
            string_field(data, "token_serial")?,
        ) {
            (Some(l), None) => (Some(l), None),
            (None, Some(s)) => (None, Some(s)),
            _ => {
                return Err(HsmConfigError::Invalid(
                    "set exactly one of token_label and token_serial".into(),
                ))
            }
        };
        let pin = match (
            string_field(data, "pin_file")?,
            string_field(data, "pin_env")?,
        ) {
            (Some(f), None) => {
                let f = PathBuf::from(f);
                if !f.is_absolute() {
                    return Err(HsmConfigError::Invalid(
                        "pin_file must be an absolute path".into(),
                    ));
                }
                PinSource::File(f)
            }
            (None, Some(e)) => {
                if !e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(HsmConfigError::Invalid(
                        "pin_env must be an environment variable name (A-Z a-z 0-9 _)".into(),
                    ));
                }
                PinSource::Env(e)
            }
            _ => {
                return Err(HsmConfigError::Invalid(
                    "set exactly one of pin_file and pin_env".into(),
                ))
            }
        };
        let pool_size = match data.get("pool_size") {
            None | Some(Value::Null) => DEFAULT_POOL_SIZE,
            Some(v) => {
                let n = match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                match n.and_then(|n| usize::try_from(n).ok()) {
                    Some(n) if (1..=MAX_POOL_SIZE).contains(&n) => n,
                    _ => {
                        return Err(HsmConfigError::Invalid(format!(
                            "pool_size must be an integer from 1 to {MAX_POOL_SIZE}"
                        )))
                    }
                }
            }
        };
        Ok(Self {
            format: FORMAT.to_owned(),
            module,
            token_label,
            token_serial,
            pin,
            pool_size,
            token: None,
        })
    }

    /// Parses the stored settings.
    ///
    /// # Errors
    /// A message when the entry is not rootseal's or is a newer format.
    pub fn decode(raw: &[u8]) -> Result<Self, String> {
        let e: Self = serde_json::from_slice(raw)
            .map_err(|_| "config/hsm in storage is not a rootseal HSM configuration".to_owned())?;
        if e.format != FORMAT {
            return Err(format!(
                "config/hsm in storage has format {:?}; this rootseal understands {FORMAT}",
                e.format
            ));
        }
        Ok(e)
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// What `read config/hsm` returns: everything but the PIN (which is never here anyway).
    pub fn public(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(
            "module".into(),
            Value::from(self.module.display().to_string()),
        );
        if let Some(l) = &self.token_label {
            m.insert("token_label".into(), Value::from(l.clone()));
        }
        if let Some(s) = &self.token_serial {
            m.insert("token_serial".into(), Value::from(s.clone()));
        }
        match &self.pin {
            PinSource::File(f) => m.insert("pin_file".into(), Value::from(f.display().to_string())),
            PinSource::Env(e) => m.insert("pin_env".into(), Value::from(e.clone())),
        };
        m.insert("pool_size".into(), Value::from(self.pool_size));
        if let Some(t) = &self.token {
            m.insert(
                "token".into(),
                serde_json::json!({
                    "manufacturer": t.manufacturer,
                    "model": t.model,
                    "serial": t.serial,
                    "label": t.label,
                }),
            );
        }
        Value::Object(m)
    }

    /// Reads the PIN from its source, in the plugin process.
    ///
    /// # Errors
    /// [`HsmConfigError::Pin`] naming the source, never its content.
    pub fn read_pin(&self) -> Result<SecretString, HsmConfigError> {
        match &self.pin {
            PinSource::File(path) => read_pin_file(path),
            PinSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => Err(HsmConfigError::Pin(format!(
                    "pin_env {name}: the plugin process has no such environment variable \
                     (set it in the env of the plugin's catalog entry: bao write \
                     sys/plugins/catalog/secret/rootseal … env={name}=…)"
                ))),
            },
        }
    }

    /// The [`HsmConfig`] to open the token with `pin`.
    pub fn hsm_config(&self, pin: SecretString) -> HsmConfig {
        let token = match (&self.token_label, &self.token_serial) {
            (Some(l), _) => TokenSelector::Label(l.clone()),
            (None, Some(s)) => TokenSelector::Serial(s.clone()),
            (None, None) => TokenSelector::Label(String::new()),
        };
        HsmConfig {
            pool_size: self.pool_size,
            ..HsmConfig::new(self.module.clone(), token, pin)
        }
    }
}

fn read_pin_file(path: &Path) -> Result<SecretString, HsmConfigError> {
    let raw = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        HsmConfigError::Pin(format!(
            "pin_file {}: cannot read it: {}",
            path.display(),
            e.kind()
        ))
    })?);
    let pin = raw
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    if pin.is_empty() {
        return Err(HsmConfigError::Pin(format!(
            "pin_file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::from(pin.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn accepts_the_hsm_table_fields() {
        let e = HsmEntry::parse(&data(serde_json::json!({
            "module": "/usr/lib/softhsm/libsofthsm2.so",
            "token_label": "rootseal",
            "pin_file": "/etc/rootseal/pin",
            "pool_size": "3",
        })));
        let e = e.ok();
        assert_eq!(e.as_ref().map(|e| e.pool_size), Some(3));
        assert_eq!(
            e.as_ref().map(|e| e.pin.clone()),
            Some(PinSource::File("/etc/rootseal/pin".into()))
        );
        let public = e.map(|e| e.public()).unwrap_or_default();
        assert_eq!(public["token_label"], "rootseal");
        assert_eq!(public["pin_file"], "/etc/rootseal/pin");
    }

    #[test]
    fn refuses_a_pin_and_bad_combinations() {
        let base = serde_json::json!({"module": "/m.so", "token_label": "t", "pin_env": "P"});
        assert!(HsmEntry::parse(&data(base.clone())).is_ok());
        let mut with_pin = data(base.clone());
        with_pin.insert("pin".into(), Value::from("1234"));
        let err = HsmEntry::parse(&with_pin)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("\"pin\"") && !err.contains("1234"), "{err}");
        let mut both = data(base.clone());
        both.insert("token_serial".into(), Value::from("s"));
        assert!(HsmEntry::parse(&both).is_err());
        let mut unknown = data(base.clone());
        unknown.insert("slot".into(), Value::from(1));
        assert!(matches!(
            HsmEntry::parse(&unknown),
            Err(HsmConfigError::Unknown(_))
        ));
        assert!(HsmEntry::parse(&data(
            serde_json::json!({"module": "rel.so", "token_label": "t", "pin_env": "P"})
        ))
        .is_err());
        assert!(HsmEntry::parse(&data(
            serde_json::json!({"module": "/m.so", "token_label": "t"})
        ))
        .is_err());
        let mut pool = data(base);
        pool.insert("pool_size".into(), Value::from(0));
        assert!(HsmEntry::parse(&pool).is_err());
    }

    #[test]
    fn stored_form_round_trips_and_holds_no_pin() {
        let e = HsmEntry::parse(&data(
            serde_json::json!({"module": "/m.so", "token_serial": "s1", "pin_env": "P"}),
        ));
        let e = e.ok();
        let raw = e.as_ref().map(HsmEntry::encode).unwrap_or_default();
        assert_eq!(HsmEntry::decode(&raw).ok(), e);
        assert!(HsmEntry::decode(br#"{"format":"rootseal-hsm-config/2"}"#).is_err());
    }
}

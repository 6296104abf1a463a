//! `rootseal.toml`: parsed once, validated, and turned into the types the rest of rootseal uses.
//!
//! Secrets (the HSM User PIN, the root token that clients present, the Vault token) are read from
//! files named in the config or from environment variables, never from the command line, and are
//! held in [`SecretString`]s. No `Debug` here prints them.
//!
//! Relative paths in the file (except `hsm.module`, which is handed to the dynamic loader as is)
//! are resolved against the directory that holds the config file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rootseal_hsm::valid_key_name;
use rootseal_hsm::{HsmConfig, TokenSelector};
use secrecy::SecretString;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Default for `listener.max_request_bytes`: 32 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;
/// Default for `hsm.pool_size`: SoftHSM2 gains nothing past 2 sessions.
pub const DEFAULT_POOL_SIZE: usize = 2;
/// Largest accepted `hsm.pool_size`.
pub const MAX_POOL_SIZE: usize = 64;
/// Default for `storage.kv_mount`.
pub const DEFAULT_KV_MOUNT: &str = "secret";
/// Default for `storage.prefix`.
pub const DEFAULT_PREFIX: &str = "rootseal";
/// Default for `storage.local_keys`: the key name OpenBao's `seal "transit"` uses in rootseal's docs.
pub const DEFAULT_LOCAL_KEYS: &[&str] = &["autounseal"];
/// Default for `transit.mount`.
pub const DEFAULT_TRANSIT_MOUNT: &str = "transit";

/// Environment variable holding the HSM User PIN when `hsm.pin_file` is not set.
pub const ENV_HSM_PIN: &str = "ROOTSEAL_HSM_PIN";
/// Environment variable holding the root token when `auth.root_token_file` is not set.
pub const ENV_ROOT_TOKEN: &str = "ROOTSEAL_ROOT_TOKEN";
/// Environment variables holding the Vault token when `storage.token_file` is not set, in the
/// order they are tried.
pub const ENV_VAULT_TOKEN: &[&str] = &["ROOTSEAL_VAULT_TOKEN", "VAULT_TOKEN", "BAO_TOKEN"];

/// Why a configuration could not be loaded. Every variant names the key or the file at fault;
/// none contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read (missing, unreadable).
    #[error("cannot read config file {path}: {source}")]
    ReadConfig {
        /// The config file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What is wrong and where (line, column, table). Never contains a value.
        message: String,
    },
    /// A key has a value that is not acceptable.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The dotted key, e.g. `listener.address`.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A required key (or its environment-variable alternative) is missing.
    #[error("missing `{key}`: {hint}")]
    Missing {
        /// The dotted key, e.g. `hsm.pin_file`.
        key: String,
        /// How to provide it.
        hint: String,
    },
    /// A file holding a secret (PIN, token) could not be read.
    #[error("cannot read the file {path} named by `{key}`: {source}")]
    SecretFile {
        /// The dotted key that names the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listener: RawListener,
    hsm: RawHsm,
    #[serde(default)]
    auth: RawAuth,
    storage: RawStorage,
    #[serde(default)]
    transit: RawTransit,
    governance: Option<RawGovernance>,
    #[serde(default)]
    audit: RawAudit,
    lifecycle: Option<crate::lifecycle::RawLifecycle>,
}

/// `governance = "off"|"on"`, or a `[governance]` table.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawGovernance {
    Mode(String),
    Table(RawGovernanceTable),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGovernanceTable {
    mode: Option<String>,
    allow_requester_approval: Option<bool>,
    #[serde(default)]
    quorum: BTreeMap<String, BTreeMap<String, i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: Option<PathBuf>,
    mode: Option<String>,
    checkpoint_every: Option<u64>,
    checkpoint_interval_secs: Option<u64>,
    queue: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    address: String,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    max_request_bytes: Option<u64>,
    max_connections: Option<u64>,
    http_read_header_timeout: Option<RawDuration>,
    http_idle_timeout: Option<RawDuration>,
    http2_max_concurrent_streams: Option<u64>,
    unauthenticated_rate: Option<u64>,
    unauthenticated_burst: Option<u64>,
}

/// A duration as Vault writes them (`"10s"`, `"500ms"`, `"5m"`, `"1h"`) or whole seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Secs(u64),
    Text(String),
}

impl RawDuration {
    fn parse(&self, key: &str) -> Result<std::time::Duration, ConfigError> {
        use std::time::Duration;
        let bad = || {
            invalid(
                key,
                "expected a duration such as \"10s\", \"500ms\", \"5m\" or a number of seconds",
            )
        };
        match self {
            RawDuration::Secs(n) => Ok(Duration::from_secs(*n)),
            RawDuration::Text(t) => {
                let t = t.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let (num, unit) = t.split_at(split);
                let n: u64 = num.parse().map_err(|_| bad())?;
                let d = match unit {
                    "" | "s" => Duration::from_secs(n),
                    "ms" => Duration::from_millis(n),
                    "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
                    "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
                    _ => return Err(bad()),
                };
                Ok(d)
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHsm {
    module: PathBuf,
    token_label: Option<String>,
    token_serial: Option<String>,
    pin_file: Option<PathBuf>,
    pool_size: Option<usize>,
    queue_limit: Option<u64>,
    job_timeout: Option<RawDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    root_token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    backend: String,
    path: Option<PathBuf>,
    address: Option<String>,
    token_file: Option<PathBuf>,
    kv_mount: Option<String>,
    prefix: Option<String>,
    ca_cert_file: Option<PathBuf>,
    local_path: Option<PathBuf>,
    local_keys: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTransit {
    mount: Option<String>,
    allow_upsert: Option<bool>,
    max_batch_items: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// The validated configuration.

/// The whole validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was loaded from.
    pub source: PathBuf,
    /// `[listener]`.
    pub listener: ListenerSettings,
    /// `[hsm]`.
    pub hsm: HsmSettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[storage]`.
    pub storage: StorageSettings,
    /// `[transit]`.
    pub transit: TransitSettings,
    /// `governance` / `[governance]`.
    pub governance: GovernanceSettings,
    /// `[audit]`: the tamper-evident audit log.
    pub audit: AuditSettings,
    /// `[lifecycle]`: cryptoperiods of the key classes and the rotation lead time.
    pub lifecycle: crate::lifecycle::LifecycleSettings,
}

/// `governance = "off"` or `[governance]` (on by default): dual control of SO actions by signed
/// ceremonies, scoped API tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GovernanceSettings {
    /// False only with `governance = "off"` (today's single-operator behaviour, for development).
    pub enabled: bool,
    /// `[governance.quorum]` over the defaults, and `allow_requester_approval`.
    pub rules: rootseal_governance::QuorumRules,
}

/// `[listener]`: where the HTTP API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSettings {
    /// `address`.
    pub address: SocketAddr,
    /// TLS files; `None` means plain HTTP.
    pub tls: Option<TlsFiles>,
    /// `max_request_bytes` (default [`DEFAULT_MAX_REQUEST_BYTES`]).
    pub max_request_bytes: usize,
    /// `max_connections`: connections served at once (default 4096, 1 to 1,000,000).
    pub max_connections: usize,
    /// `http_read_header_timeout`: a connection must send a whole request header within this
    /// time of opening (default 10 s, Vault's default; 100 ms to 5 min).
    pub http_read_header_timeout: std::time::Duration,
    /// `http_idle_timeout`: a connection without a request in flight for this long is closed
    /// (default 10 s; 100 ms to 1 h).
    pub http_idle_timeout: std::time::Duration,
    /// `http2_max_concurrent_streams`: per HTTP/2 connection (default 250, Go's and so Vault's;
    /// 1 to 10,000).
    pub http2_max_concurrent_streams: u32,
    /// `unauthenticated_rate`: requests without a token (health, seal-status, metrics) per
    /// second per client address; beyond it answers are delayed, then refused with 429
    /// (default 100; 0 turns the limit off; at most 1,000,000).
    pub unauthenticated_rate: u32,
    /// `unauthenticated_burst`: how many such requests a client may send at once above its
    /// rate (default 200; 1 to 1,000,000).
    pub unauthenticated_burst: u32,
}

/// The listener's TLS files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls_cert_file`: PEM certificate chain.
    pub cert_file: PathBuf,
    /// `tls_key_file`: PEM private key.
    pub key_file: PathBuf,
    /// `client_ca_file`: PEM CA bundle; when set, clients must present a certificate (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// `[hsm]`: how to reach the HSM. The PIN never prints.
#[derive(Clone)]
pub struct HsmSettings {
    /// `module`: the PKCS#11 library.
    pub module: PathBuf,
    /// `token_label` or `token_serial`.
    pub token: TokenSelector,
    /// The User PIN, from `pin_file` or `ROOTSEAL_HSM_PIN`.
    pub pin: SecretString,
    /// `pool_size` (default [`DEFAULT_POOL_SIZE`]).
    pub pool_size: usize,
    /// `queue_limit`: HSM jobs that may wait (default 1024, 1 to 1,000,000); beyond it requests
    /// get 503 with `Retry-After` at once.
    pub queue_limit: usize,
    /// `job_timeout`: how long a request waits for its HSM job (default 30 s, 100 ms to 10 min).
    pub job_timeout: std::time::Duration,
}

impl fmt::Debug for HsmSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmSettings")
            .field("module", &self.module)
            .field("token", &self.token)
            .field("pin", &"[REDACTED]")
            .field("pool_size", &self.pool_size)
            .field("queue_limit", &self.queue_limit)
            .field("job_timeout", &self.job_timeout)
            .finish()
    }
}

/// `[auth]`: the token clients of rootseal's API present. Never prints.
#[derive(Clone)]
pub struct AuthSettings {
    /// The root token: with governance off, from `root_token_file` or `ROOTSEAL_ROOT_TOKEN`
    /// (required); with governance on, only from `root_token_file` (a bootstrap for migration),
    /// otherwise `None`: the API then accepts only scoped tokens.
    pub root_token: Option<SecretString>,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("root_token", &"[REDACTED]")
            .finish()
    }
}

/// `[storage]`: where sealed KEK records live.
#[derive(Clone, Debug)]
pub enum StorageSettings {
    /// `backend = "file"`: a local directory.
    File {
        /// `path`.
        path: PathBuf,
    },
    /// `backend = "vault"`: Vault/OpenBao KV v2, with some keys kept locally.
    Vault(VaultSettings),
}

/// `[storage]` with `backend = "vault"`. The token never prints.
#[derive(Clone)]
pub struct VaultSettings {
    /// `address`, e.g. `http://127.0.0.1:8200`, without a trailing slash.
    pub address: String,
    /// The Vault token, from `token_file` or `ROOTSEAL_VAULT_TOKEN` / `VAULT_TOKEN` / `BAO_TOKEN`.
    pub token: SecretString,
    /// `kv_mount` (default `secret`), without slashes at either end.
    pub kv_mount: String,
    /// `prefix` (default `rootseal`), without slashes at either end.
    pub prefix: String,
    /// `ca_cert_file`: PEM bundle trusted for an `https` address (instead of the system roots).
    pub ca_cert: Option<PathBuf>,
    /// `local_path`: the local file store for `local_keys`.
    pub local_path: PathBuf,
    /// `local_keys` (default `["autounseal"]`): key names kept in the local file store.
    pub local_keys: Vec<String>,
}

impl fmt::Debug for VaultSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSettings")
            .field("address", &self.address)
            .field("token", &"[REDACTED]")
            .field("kv_mount", &self.kv_mount)
            .field("prefix", &self.prefix)
            .field("ca_cert", &self.ca_cert)
            .field("local_path", &self.local_path)
            .field("local_keys", &self.local_keys)
            .finish()
    }
}

/// `[transit]`: the transit-compatible API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitSettings {
    /// `mount` (default `transit`): served under `/v1/<mount>/`, without slashes at either end.
    pub mount: String,
    /// `allow_upsert` (default `true`, as Vault's transit): whether encrypt creates a missing key.
    pub allow_upsert: bool,
    /// `max_batch_items`: items one `batch_input` may carry (default
    /// [`DEFAULT_MAX_BATCH_ITEMS`], 1 to 1,000,000); beyond it the request is a 400.
    pub max_batch_items: usize,
}

/// Default for `transit.max_batch_items`.
pub const DEFAULT_MAX_BATCH_ITEMS: usize = 10_000;

/// `[audit]`: the audit log (`docs/audit.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditSettings {
    /// `path` (default `audit.log` beside rootseal.toml).
    pub path: PathBuf,
    /// `mode`: `"block"` (default: a response waits for its record's fsync), `"best-effort"`
    /// (development), `"off"` (no log; benchmarks' anchor).
    pub mode: rootseal_audit::Mode,
    /// `checkpoint_every` (default 1000): a signed checkpoint after this many records.
    pub checkpoint_every: u64,
    /// `checkpoint_interval_secs` (default 10): a checkpoint this often when records came in.
    pub checkpoint_interval: std::time::Duration,
    /// `queue` (default 65536): records that may wait for the writer.
    pub queue: usize,
}

impl AuditSettings {
    /// The writer's configuration.
    pub fn audit_config(&self) -> rootseal_audit::AuditConfig {
        rootseal_audit::AuditConfig {
            path: self.path.clone(),
            mode: self.mode,
            checkpoint_every: self.checkpoint_every,
            checkpoint_interval: self.checkpoint_interval,
            queue: self.queue,
        }
    }
}

fn validate_audit(
    raw: RawAudit,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<AuditSettings, ConfigError> {
    let mode = match raw.mode.as_deref() {
        None => rootseal_audit::Mode::Block,
        Some(m) => rootseal_audit::Mode::parse(m).ok_or_else(|| {
            invalid(
                "audit.mode",
                "must be \"block\", \"best-effort\" or \"off\"",
            )
        })?,
    };
    let every = raw.checkpoint_every.unwrap_or(1000);
    if every == 0 {
        return Err(invalid("audit.checkpoint_every", "must be at least 1"));
    }
    let secs = raw.checkpoint_interval_secs.unwrap_or(10);
    if secs == 0 {
        return Err(invalid(
            "audit.checkpoint_interval_secs",
            "must be at least 1",
        ));
    }
    let queue = raw.queue.unwrap_or(65_536);
    if queue == 0 {
        return Err(invalid("audit.queue", "must be at least 1"));
    }
    Ok(AuditSettings {
        path: resolve(raw.path.unwrap_or_else(|| PathBuf::from("audit.log"))),
        mode,
        checkpoint_every: every,
        checkpoint_interval: std::time::Duration::from_secs(secs),
        queue,
    })
}

impl Config {
    /// Load and validate `path`, taking secrets from the files it names or from the process
    /// environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or key at fault.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::load`], with the environment given as a lookup function (for tests and for
    /// callers that sanitise their environment).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or key at fault.
    pub fn load_with_env(
        path: impl AsRef<Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, env)
    }

    /// Parse and validate the text of a config file; `source` is the file's path (used for
    /// messages and to resolve relative paths).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file or key at fault.
    pub fn parse(
        text: &str,
        source: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: source.to_owned(),
            message: describe_toml_error(text, &e),
        })?;
        let base = source.parent().unwrap_or(Path::new("")).to_owned();
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        let listener = validate_listener(raw.listener, &resolve)?;
        let hsm = validate_hsm(raw.hsm, &resolve, env)?;
        let governance = validate_governance(raw.governance)?;
        let root_token_file = raw.auth.root_token_file.map(&resolve);
        let auth = AuthSettings {
            root_token: if governance.enabled && root_token_file.is_none() {
                None
            } else {
                Some(read_secret(
                    "auth.root_token_file",
                    root_token_file.as_deref(),
                    if governance.enabled {
                        &[]
                    } else {
                        &[ENV_ROOT_TOKEN]
                    },
                    env,
                )?)
            },
        };
        let storage = validate_storage(raw.storage, &resolve, env)?;
        let transit = TransitSettings {
            mount: normalize_mount(
                "transit.mount",
                raw.transit
                    .mount
                    .as_deref()
                    .unwrap_or(DEFAULT_TRANSIT_MOUNT),
            )?,
            allow_upsert: raw.transit.allow_upsert.unwrap_or(true),
            max_batch_items: match raw.transit.max_batch_items {
                None => DEFAULT_MAX_BATCH_ITEMS,
                Some(n @ 1..=1_000_000) => usize::try_from(n).unwrap_or(DEFAULT_MAX_BATCH_ITEMS),
                Some(_) => {
                    return Err(invalid(
                        "transit.max_batch_items",
                        "must be between 1 and 1000000",
                    ))
                }
            },
        };
        let audit = validate_audit(raw.audit, &resolve)?;
        let lifecycle = crate::lifecycle::validate_lifecycle(raw.lifecycle)
            .map_err(|e| invalid(&e.key, e.reason))?;
        Ok(Self {
            source: source.to_owned(),
            listener,
            hsm,
            auth,
            storage,
            transit,
            governance,
            audit,
            lifecycle,
        })
    }

    /// The settings [`rootseal_hsm::Hsm`] opens the token with.
    pub fn hsm_config(&self) -> HsmConfig {
        HsmConfig {
            module: self.hsm.module.clone(),
            token: self.hsm.token.clone(),
            pin: self.hsm.pin.clone(),
            pool_size: self.hsm.pool_size,
            queue_limit: self.hsm.queue_limit,
            job_timeout: self.hsm.job_timeout,
        }
    }
}

fn validate_governance(raw: Option<RawGovernance>) -> Result<GovernanceSettings, ConfigError> {
    let table = match raw {
        None => RawGovernanceTable::default(),
        Some(RawGovernance::Mode(m)) => RawGovernanceTable {
            mode: Some(m),
            ..RawGovernanceTable::default()
        },
        Some(RawGovernance::Table(t)) => t,
    };
    let enabled = match table.mode.as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => {
            return Err(invalid(
                "governance",
                format!("expected \"on\" or \"off\", got {other:?}"),
            ))
        }
    };
    let rules = rootseal_governance::QuorumRules::from_config(
        &table.quorum,
        table.allow_requester_approval.unwrap_or(false),
    )
    .map_err(|e| invalid("governance.quorum", e.0))?;
    Ok(GovernanceSettings { enabled, rules })
}

/// A toml error without the source snippet (which could echo a secret someone pasted into the
/// file) and without the offending value; with the line, column and enclosing table.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut msg = e.message().trim().to_owned();
    if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        if let Some(i) = msg.find(", expected ") {
            msg = format!("wrong type or value, expected {}", &msg[i + 11..]);
        } else {
            msg = "wrong type or value".to_owned();
        }
    }
    if let Some(span) = e.span() {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        let table = before
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.split(']').next().unwrap_or(l).to_owned() + "]");
        match table {
            Some(t) => format!("{msg} (in {t}, line {line}, column {col})"),
            None => format!("{msg} (line {line}, column {col})"),
        }
    } else {
        msg
    }
}

fn validate_listener(
    raw: RawListener,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<ListenerSettings, ConfigError> {
    let address: SocketAddr = raw.address.trim().parse().map_err(|_| {
        invalid(
            "listener.address",
            format!(
                "expected an IP address and port such as 127.0.0.1:8210, got {:?}",
                raw.address
            ),
        )
    })?;
    let tls = match (raw.tls_cert_file, raw.tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert_file: resolve(cert),
            key_file: resolve(key),
            client_ca_file: raw.client_ca_file.map(resolve),
        }),
        (None, None) => {
            if raw.client_ca_file.is_some() {
                return Err(invalid(
                    "listener.client_ca_file",
                    "needs listener.tls_cert_file and listener.tls_key_file",
                ));
            }
            None
        }
        (Some(_), None) => {
            return Err(ConfigError::Missing {
                key: "listener.tls_key_file".into(),
                hint: "listener.tls_cert_file is set; TLS needs both".into(),
            })
        }
        (None, Some(_)) => {
            return Err(ConfigError::Missing {
                key: "listener.tls_cert_file".into(),
                hint: "listener.tls_key_file is set; TLS needs both".into(),
            })
        }
    };
    let max_request_bytes = match raw.max_request_bytes {
        None => DEFAULT_MAX_REQUEST_BYTES,
        Some(0) => return Err(invalid("listener.max_request_bytes", "must be at least 1")),
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|&n| n <= 1 << 30)
            .ok_or_else(|| invalid("listener.max_request_bytes", "must be at most 1 GiB"))?,
    };
    let bounded = |key: &str, v: Option<u64>, default: u64, max: u64| -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(_) => Err(invalid(key, format!("must be between 1 and {max}"))),
        }
    };
    let duration = |key: &str,
                    v: Option<&RawDuration>,
                    default: std::time::Duration,
                    max: std::time::Duration|
     -> Result<std::time::Duration, ConfigError> {
        let d = v.map(|d| d.parse(key)).transpose()?.unwrap_or(default);
        if d < std::time::Duration::from_millis(100) || d > max {
            return Err(invalid(
                key,
                format!("must be between 100ms and {}s", max.as_secs()),
            ));
        }
        Ok(d)
    };
    let max_connections = bounded(
        "listener.max_connections",
        raw.max_connections,
        4096,
        1_000_000,
    )?;
    let http2_max_concurrent_streams = bounded(
        "listener.http2_max_concurrent_streams",
        raw.http2_max_concurrent_streams,
        250,
        10_000,
    )?;
    Ok(ListenerSettings {
        address,
        tls,
        max_request_bytes,
        max_connections: usize::try_from(max_connections).unwrap_or(4096),
        http_read_header_timeout: duration(
            "listener.http_read_header_timeout",
            raw.http_read_header_timeout.as_ref(),
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(300),
        )?,
        http_idle_timeout: duration(
            "listener.http_idle_timeout",
            raw.http_idle_timeout.as_ref(),
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(3600),
        )?,
        http2_max_concurrent_streams: u32::try_from(http2_max_concurrent_streams).unwrap_or(250),
        unauthenticated_rate: match raw.unauthenticated_rate {
            None => 100,
            Some(n) if n <= 1_000_000 => u32::try_from(n).unwrap_or(100),
            Some(_) => {
                return Err(invalid(
                    "listener.unauthenticated_rate",
                    "must be between 0 (off) and 1000000".to_owned(),
                ))
            }
        },
        unauthenticated_burst: u32::try_from(bounded(
            "listener.unauthenticated_burst",
            raw.unauthenticated_burst,
            200,
            1_000_000,
        )?)
        .unwrap_or(200),
    })
}

fn validate_hsm(
    raw: RawHsm,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HsmSettings, ConfigError> {
    if raw.module.as_os_str().is_empty() {
        return Err(invalid("hsm.module", "must not be empty"));
    }
    let token = match (raw.token_label, raw.token_serial) {
        (Some(l), None) if !l.trim().is_empty() => TokenSelector::Label(l),
        (None, Some(s)) if !s.trim().is_empty() => TokenSelector::Serial(s),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "hsm.token_label",
                "set exactly one of hsm.token_label and hsm.token_serial, not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::Missing {
                key: "hsm.token_label".into(),
                hint: "set exactly one of hsm.token_label and hsm.token_serial".into(),
            })
        }
        (Some(_), None) => return Err(invalid("hsm.token_label", "must not be empty")),
        (None, Some(_)) => return Err(invalid("hsm.token_serial", "must not be empty")),
    };
    let pool_size = match raw.pool_size {
        None => DEFAULT_POOL_SIZE,
        Some(n) if (1..=MAX_POOL_SIZE).contains(&n) => n,
        Some(_) => {
            return Err(invalid(
                "hsm.pool_size",
                format!("must be between 1 and {MAX_POOL_SIZE}"),
            ))
        }
    };
    let pin = read_secret(
        "hsm.pin_file",
        raw.pin_file.map(resolve).as_deref(),
        &[ENV_HSM_PIN],
        env,
    )?;
    let queue_limit = match raw.queue_limit {
        None => rootseal_hsm::DEFAULT_QUEUE_LIMIT,
        Some(n) if (1..=1_000_000).contains(&n) => usize::try_from(n).unwrap_or(1_000_000),
        Some(_) => return Err(invalid("hsm.queue_limit", "must be between 1 and 1000000")),
    };
    let job_timeout = match &raw.job_timeout {
        None => rootseal_hsm::DEFAULT_JOB_TIMEOUT,
        Some(d) => {
            let d = d.parse("hsm.job_timeout")?;
            if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(600)
            {
                return Err(invalid("hsm.job_timeout", "must be between 100ms and 600s"));
            }
            d
        }
    };
    Ok(HsmSettings {
        module: raw.module,
        token,
        pin,
        pool_size,
        queue_limit,
        job_timeout,
    })
}

fn validate_storage(
    raw: RawStorage,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<StorageSettings, ConfigError> {
    match raw.backend.as_str() {
        "file" => {
            let vault_only = [
                ("storage.address", raw.address.is_some()),
                ("storage.token_file", raw.token_file.is_some()),
                ("storage.kv_mount", raw.kv_mount.is_some()),
                ("storage.prefix", raw.prefix.is_some()),
                ("storage.ca_cert_file", raw.ca_cert_file.is_some()),
                ("storage.local_path", raw.local_path.is_some()),
                ("storage.local_keys", raw.local_keys.is_some()),
            ];
            if let Some((key, _)) = vault_only.iter().find(|(_, set)| *set) {
                return Err(invalid(key, "only valid with storage.backend = \"vault\""));
            }
            let path = raw.path.ok_or_else(|| ConfigError::Missing {
                key: "storage.path".into(),
                hint: "storage.backend = \"file\" needs the directory to keep records in".into(),
            })?;
            Ok(StorageSettings::File {
                path: resolve(path),
            })
        }
        "vault" => {
            if raw.path.is_some() {
                return Err(invalid(
                    "storage.path",
                    "only valid with storage.backend = \"file\" (use storage.local_path for the local store)",
                ));
            }
            let address = raw.address.ok_or_else(|| ConfigError::Missing {
                key: "storage.address".into(),
                hint: "the Vault/OpenBao address, e.g. http://127.0.0.1:8200".into(),
            })?;
            let address = normalize_address(&address)?;
            let ca_cert = raw.ca_cert_file.map(resolve);
            if ca_cert.is_some() && !address.starts_with("https://") {
                return Err(invalid(
                    "storage.ca_cert_file",
                    "only valid when storage.address is https",
                ));
            }
            let local_path = raw.local_path.ok_or_else(|| ConfigError::Missing {
                key: "storage.local_path".into(),
                hint:
                    "storage.backend = \"vault\" needs a local file store for storage.local_keys \
                       (the KEK Vault auto-unseals with cannot live inside that Vault)"
                        .into(),
            })?;
            let local_keys = raw
                .local_keys
                .unwrap_or_else(|| DEFAULT_LOCAL_KEYS.iter().map(|&s| s.to_owned()).collect());
            if let Some(bad) = local_keys.iter().find(|k| !valid_key_name(k)) {
                return Err(invalid(
                    "storage.local_keys",
                    format!("{bad:?} is not a valid key name (1-128 of A-Z a-z 0-9 _ . -, not starting with .)"),
                ));
            }
            let token = read_secret(
                "storage.token_file",
                raw.token_file.map(resolve).as_deref(),
                ENV_VAULT_TOKEN,
                env,
            )?;
            Ok(StorageSettings::Vault(VaultSettings {
                address,
                token,
                kv_mount: normalize_mount(
                    "storage.kv_mount",
                    raw.kv_mount.as_deref().unwrap_or(DEFAULT_KV_MOUNT),
                )?,
                prefix: normalize_mount(
                    "storage.prefix",
                    raw.prefix.as_deref().unwrap_or(DEFAULT_PREFIX),
                )?,
                ca_cert,
                local_path: resolve(local_path),
                local_keys,
            }))
        }
        other => Err(invalid(
            "storage.backend",
            format!("expected \"file\" or \"vault\", got {other:?}"),
        )),
    }
}

/// Check a Vault address: http or https, a host, no credentials, no query; returned without a
/// trailing slash.
pub(crate) fn normalize_address(address: &str) -> Result<String, ConfigError> {
    const KEY: &str = "storage.address";
    let url = reqwest::Url::parse(address.trim())
        .map_err(|e| invalid(KEY, format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(KEY, "the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(KEY, "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            KEY,
            "must not contain credentials; use storage.token_file",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(KEY, "must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// A mount path or prefix: segments of `[A-Za-z0-9_.-]`, no `.`/`..`, no empty segment; returned
/// without slashes at either end.
pub(crate) fn normalize_mount(key: &str, value: &str) -> Result<String, ConfigError> {
    let trimmed = value.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    for seg in trimmed.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(invalid(
                key,
                format!("{value:?}: each path segment must be A-Z a-z 0-9 _ . - (not empty, not . or ..)"),
            ));
        }
    }
    Ok(trimmed.to_owned())
}

/// Read a secret from `file` (trailing newline removed) or else from the first non-empty
/// environment variable in `env_names`.
fn read_secret(
    key: &str,
    file: Option<&Path>,
    env_names: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretString, ConfigError> {
    if let Some(path) = file {
        let raw = Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
            ConfigError::SecretFile {
                key: key.to_owned(),
                path: path.to_owned(),
                source,
            }
        })?);
        warn_if_world_readable(key, path);
        let value = raw.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(invalid(
                key,
                format!("the file {} is empty", path.display()),
            ));
        }
        return Ok(SecretString::from(value));
    }
    for name in env_names {
        if let Some(v) = env(name) {
            let v = Zeroizing::new(v);
            let value = v.trim_end_matches(['\n', '\r']);
            if !value.is_empty() {
                return Ok(SecretString::from(value));
            }
        }
    }
    Err(ConfigError::Missing {
        key: key.to_owned(),
        hint: format!(
            "set `{key}` or the environment variable {} (secrets are never taken from the command line)",
            env_names.join(" / ")
        ),
    })
}

#[cfg(unix)]
fn warn_if_world_readable(key: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(key, path = %path.display(), "secret file is world-readable; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_world_readable(_key: &str, _path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    const PIN: &str = "pin-7f3a9c2e";
    const ROOT: &str = "root-token-5d8e1b4a";
    const VAULT: &str = "vault-token-0c6f2d9e";

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).unwrap();
            std::fs::write(dir.path().join("root"), format!("{ROOT}\r\n")).unwrap();
            std::fs::write(dir.path().join("vault"), VAULT).unwrap();
            Self { dir }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("rootseal.toml")
        }

        fn load(&self, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
            let env: HashMap<String, String> = env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            std::fs::write(self.path(), text).unwrap();
            Config::load_with_env(self.path(), &move |k| env.get(k).cloned())
        }
    }

    /// Every key of the documented example.
    fn full_example(dir: &Path) -> String {
        format!(
            r#"
[listener]
address = "127.0.0.1:8210"
tls_cert_file = "tls/cert.pem"
tls_key_file = "{d}/tls/key.pem"
client_ca_file = "tls/ca.pem"
max_request_bytes = 1048576

[hsm]
module = "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"
token_label = "rootseal"
pin_file = "pin"
pool_size = 3

[auth]
root_token_file = "{d}/root"

[storage]
backend = "vault"
address = "https://vault.example:8200/"
token_file = "vault"
kv_mount = "/kv/"
prefix = "team/rootseal"
ca_cert_file = "vault-ca.pem"
local_path = "/var/lib/rootseal"
local_keys = ["autounseal", "seal-2"]

[transit]
mount = "rootseal/transit"
allow_upsert = true
"#,
            d = dir.display()
        )
    }

    const MINIMAL_FILE: &str = r#"
[listener]
address = "[::1]:8210"
[hsm]
module = "libsofthsm2.so"
token_serial = "050ec397d99a4cfa"
[storage]
backend = "file"
path = "store"
"#;

    #[test]
    fn every_example_key_parses() {
        let f = Fixture::new();
        let d = f.dir.path();
        let c = f.load(&full_example(d), &[]).unwrap();
        assert_eq!(c.listener.address, "127.0.0.1:8210".parse().unwrap());
        assert_eq!(c.listener.max_request_bytes, 1_048_576);
        let tls = c.listener.tls.as_ref().unwrap();
        assert_eq!(tls.cert_file, d.join("tls/cert.pem"));
        assert_eq!(tls.key_file, d.join("tls/key.pem"));
        assert_eq!(tls.client_ca_file.as_deref(), Some(&*d.join("tls/ca.pem")));
        assert_eq!(
            c.hsm.module,
            Path::new("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
        );
        assert_eq!(c.hsm.token, TokenSelector::Label("rootseal".into()));
        assert_eq!(c.hsm.pin.expose_secret(), PIN);
        assert_eq!(c.hsm.pool_size, 3);
        assert_eq!(
            c.auth.root_token.as_ref().map(|t| t.expose_secret()),
            Some(ROOT)
        );
        assert!(c.governance.enabled);
        let StorageSettings::Vault(v) = &c.storage else {
            panic!("expected vault storage: {:?}", c.storage)
        };
        assert_eq!(v.address, "https://vault.example:8200");
        assert_eq!(v.token.expose_secret(), VAULT);
        assert_eq!(v.kv_mount, "kv");
        assert_eq!(v.prefix, "team/rootseal");
        assert_eq!(v.ca_cert.as_deref(), Some(&*d.join("vault-ca.pem")));
        assert_eq!(v.local_path, Path::new("/var/lib/rootseal"));
        assert_eq!(v.local_keys, vec!["autounseal", "seal-2"]);
        assert_eq!(
            c.transit,
            TransitSettings {
                mount: "rootseal/transit".into(),
                allow_upsert: true,
                max_batch_items: DEFAULT_MAX_BATCH_ITEMS,
            }
        );
        let h = c.hsm_config();
        assert_eq!((h.pool_size, h.pin.expose_secret()), (3, PIN));
    }

    /// Governance is on by default: the root token then comes only from `root_token_file`, and
    /// quorum rules that would need no approval (m = 0), name an unknown operation or role, or
    /// repeat a key are refused when the file is read.
    #[test]
    fn governance_settings() {
        let f = Fixture::new();
        let env = [(ENV_HSM_PIN, "p"), (ENV_ROOT_TOKEN, "r")];
        let c = f.load(MINIMAL_FILE, &env).unwrap();
        assert!(c.governance.enabled);
        assert!(
            c.auth.root_token.is_none(),
            "env root token ignored with governance on"
        );
        assert_eq!(
            c.governance.rules,
            rootseal_governance::QuorumRules::default()
        );
        let c = f
            .load(
                &format!("{MINIMAL_FILE}[governance]\nallow_requester_approval = true\n[governance.quorum]\nroot_rotate = {{ so = 3 }}\n"),
                &env,
            )
            .unwrap();
        assert!(c.governance.rules.allow_requester_approval);
        assert_eq!(
            c.governance.rules.rules["root_rotate"][&rootseal_governance::Role::So],
            3
        );
        for (bad, want) in [
            ("[governance.quorum]\nroot_rotate = { so = 0 }\n", "m = 0"),
            ("[governance.quorum]\nroot_rotate = {}\n", "empty"),
            (
                "[governance.quorum]\nkey_destroy = { so = 1, so = 1 }\n",
                "duplicate",
            ),
            (
                "[governance.quorum]\nroot_rotate = { so = 1 }\nroot_rotate = { so = 2 }\n",
                "duplicate",
            ),
            (
                "[governance.quorum]\nroot_rotate = { co = 1 }\n",
                "cannot approve",
            ),
            (
                "[governance.quorum]\nnope = { so = 1 }\n",
                "no such operation",
            ),
        ] {
            let e = f
                .load(&format!("{MINIMAL_FILE}{bad}"), &env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let e = f
            .load(&format!("governance = \"maybe\"\n{MINIMAL_FILE}"), &env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("governance"), "{e}");
    }

    #[test]
    fn defaults_apply_and_env_secrets_work() {
        let f = Fixture::new();
        let c = f
            .load(
                &format!("governance = \"off\"\n{MINIMAL_FILE}"),
                &[(ENV_HSM_PIN, "env-pin-1\n"), (ENV_ROOT_TOKEN, "env-root")],
            )
            .unwrap();
        assert_eq!(c.hsm.pin.expose_secret(), "env-pin-1");
        assert_eq!(
            c.auth.root_token.as_ref().map(|t| t.expose_secret()),
            Some("env-root")
        );
        assert!(!c.governance.enabled);
        assert_eq!(
            c.hsm.token,
            TokenSelector::Serial("050ec397d99a4cfa".into())
        );
        assert_eq!(c.hsm.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(c.listener.max_request_bytes, 32 * 1024 * 1024);
        assert!(c.listener.tls.is_none());
        assert!(
            matches!(&c.storage, StorageSettings::File { path } if *path == f.dir.path().join("store"))
        );
        assert_eq!(c.transit.mount, "transit");
        assert!(c.transit.allow_upsert);
    }

    #[test]
    fn vault_defaults_and_token_env_order() {
        let f = Fixture::new();
        let text = r#"
[listener]
address = "127.0.0.1:8210"
[hsm]
module = "m.so"
token_label = "t"
[storage]
backend = "vault"
address = "http://127.0.0.1:8200"
local_path = "local"
"#;
        let env = [
            (ENV_HSM_PIN, "p"),
            (ENV_ROOT_TOKEN, "r"),
            ("VAULT_TOKEN", "from-vault-token"),
            ("BAO_TOKEN", "from-bao-token"),
        ];
        let c = f.load(text, &env).unwrap();
        let StorageSettings::Vault(v) = &c.storage else {
            panic!()
        };
        assert_eq!(v.token.expose_secret(), "from-vault-token");
        assert_eq!(
            (v.kv_mount.as_str(), v.prefix.as_str()),
            ("secret", "rootseal")
        );
        assert_eq!(v.local_keys, vec!["autounseal"]);
        assert_eq!(v.local_path, f.dir.path().join("local"));
        let mut env2 = env.to_vec();
        env2.push(("ROOTSEAL_VAULT_TOKEN", "from-rootseal"));
        let c = f.load(text, &env2).unwrap();
        let StorageSettings::Vault(v) = &c.storage else {
            panic!()
        };
        assert_eq!(v.token.expose_secret(), "from-rootseal");
        // No token anywhere: the error names the key and the variables.
        let err = f.load(text, &env[..2]).unwrap_err().to_string();
        assert!(
            err.contains("storage.token_file") && err.contains("BAO_TOKEN"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let f = Fixture::new();
        for (table, line) in [
            ("[hsm]", "slot_id = 3"),
            ("[listener]", "adress_typo = \"x\""),
            ("[storage]", "kv_version = 2"),
            ("[transit]", "mount_path = \"t\""),
        ] {
            let text = MINIMAL_FILE.replace(table, &format!("{table}\n{line}"))
                + if table == "[transit]" {
                    "[transit]\nmount_path = \"t\"\n"
                } else {
                    ""
                };
            let err = f
                .load(&text, &[(ENV_HSM_PIN, "p"), (ENV_ROOT_TOKEN, "r")])
                .unwrap_err();
            let key = line.split(' ').next().unwrap();
            let msg = err.to_string();
            assert!(matches!(err, ConfigError::Parse { .. }), "{msg}");
            assert!(msg.contains(key), "{key} not in {msg}");
            assert!(msg.contains(table), "{table} not in {msg}");
        }
        // An unknown top-level table too.
        let err = f
            .load(&format!("{MINIMAL_FILE}[extra]\nx = 1\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("extra"), "{err}");
    }

    #[test]
    fn a_pin_pasted_into_the_file_is_not_echoed() {
        let f = Fixture::new();
        let text = MINIMAL_FILE.replace("[hsm]", "[hsm]\npin = \"s3cr3t-pin-value\"");
        let msg = f.load(&text, &[]).unwrap_err().to_string();
        assert!(msg.contains("`pin`"), "{msg}");
        assert!(!msg.contains("s3cr3t"), "{msg}");
        let text = MINIMAL_FILE.replace("[hsm]", "[hsm]\npool_size = \"s3cr3t-pin-value\"");
        let msg = f.load(&text, &[]).unwrap_err().to_string();
        assert!(!msg.contains("s3cr3t"), "{msg}");
        assert!(msg.contains("line 5"), "{msg}");
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = Config::load_with_env("/nonexistent/dir/rootseal.toml", &|_| None).unwrap_err();
        assert!(matches!(err, ConfigError::ReadConfig { .. }));
        assert!(
            err.to_string().contains("/nonexistent/dir/rootseal.toml"),
            "{err}"
        );
    }

    #[test]
    fn missing_pin_file_is_named() {
        let f = Fixture::new();
        let text = MINIMAL_FILE.replace("[hsm]", "[hsm]\npin_file = \"no-such-pin\"");
        // The env PIN does not paper over a pin_file that is missing.
        let err = f
            .load(&text, &[(ENV_HSM_PIN, "p"), (ENV_ROOT_TOKEN, "r")])
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::SecretFile { .. }), "{msg}");
        assert!(msg.contains("hsm.pin_file"), "{msg}");
        assert!(
            msg.contains(&*f.dir.path().join("no-such-pin").to_string_lossy()),
            "{msg}"
        );
        // No PIN at all.
        let msg = f
            .load(MINIMAL_FILE, &[(ENV_ROOT_TOKEN, "r")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("hsm.pin_file") && msg.contains(ENV_HSM_PIN),
            "{msg}"
        );
        // Empty PIN file.
        std::fs::write(f.dir.path().join("empty"), "\n").unwrap();
        let text = MINIMAL_FILE.replace("[hsm]", "[hsm]\npin_file = \"empty\"");
        let msg = f
            .load(&text, &[(ENV_ROOT_TOKEN, "r")])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("empty"), "{msg}");
    }

    #[test]
    fn debug_never_prints_secrets() {
        let f = Fixture::new();
        let c = f.load(&full_example(f.dir.path()), &[]).unwrap();
        let s = format!("{c:?} {:?} {:#?}", c.hsm_config(), c);
        for secret in [PIN, ROOT, VAULT] {
            assert!(!s.contains(secret), "{secret} leaked in {s}");
        }
        assert!(s.contains("[REDACTED]"), "{s}");
        assert!(s.contains("libsofthsm2.so"), "{s}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let f = Fixture::new();
        let env = [(ENV_HSM_PIN, "p"), (ENV_ROOT_TOKEN, "r")];
        let cases: &[(&str, &str, &str)] = &[
            (
                "address = \"[::1]:8210\"",
                "address = \"localhost\"",
                "listener.address",
            ),
            (
                "token_serial = \"050ec397d99a4cfa\"",
                "token_serial = \"x\"\ntoken_label = \"y\"",
                "hsm.token_label",
            ),
            ("token_serial = \"050ec397d99a4cfa\"", "", "hsm.token_label"),
            (
                "token_serial = \"050ec397d99a4cfa\"",
                "token_serial = \"s\"\npool_size = 0",
                "hsm.pool_size",
            ),
            ("backend = \"file\"", "backend = \"s3\"", "storage.backend"),
            ("path = \"store\"", "", "storage.path"),
            (
                "path = \"store\"",
                "path = \"store\"\nlocal_keys = [\"a\"]",
                "storage.local_keys",
            ),
            (
                "address = \"[::1]:8210\"",
                "address = \"[::1]:8210\"\ntls_cert_file = \"c.pem\"",
                "listener.tls_key_file",
            ),
            (
                "address = \"[::1]:8210\"",
                "address = \"[::1]:8210\"\nmax_request_bytes = 0",
                "listener.max_request_bytes",
            ),
        ];
        for (from, to, key) in cases {
            let text = MINIMAL_FILE.replacen(from, to, 1);
            let msg = f.load(&text, &env).unwrap_err().to_string();
            assert!(msg.contains(key), "{key} not in {msg}");
        }
        let vault = |extra: &str| {
            format!(
                "[listener]\naddress = \"127.0.0.1:1\"\n[hsm]\nmodule = \"m\"\ntoken_label = \"t\"\n\
                 [storage]\nbackend = \"vault\"\n{extra}\n"
            )
        };
        let env = [
            (ENV_HSM_PIN, "p"),
            (ENV_ROOT_TOKEN, "r"),
            ("VAULT_TOKEN", "v"),
        ];
        for (extra, key) in [
            ("address = \"http://v:8200\"", "storage.local_path"),
            ("local_path = \"l\"", "storage.address"),
            (
                "address = \"ftp://v\"\nlocal_path = \"l\"",
                "storage.address",
            ),
            (
                "address = \"http://user:pw@v:8200\"\nlocal_path = \"l\"",
                "storage.address",
            ),
            (
                "address = \"http://v:8200\"\nlocal_path = \"l\"\nca_cert_file = \"ca\"",
                "storage.ca_cert_file",
            ),
            (
                "address = \"http://v:8200\"\nlocal_path = \"l\"\nkv_mount = \"a/../b\"",
                "storage.kv_mount",
            ),
            (
                "address = \"http://v:8200\"\nlocal_path = \"l\"\nlocal_keys = [\"../x\"]",
                "storage.local_keys",
            ),
            (
                "address = \"http://v:8200\"\nlocal_path = \"l\"\npath = \"p\"",
                "storage.path",
            ),
        ] {
            let msg = f.load(&vault(extra), &env).unwrap_err().to_string();
            assert!(msg.contains(key), "{key} not in {msg}");
        }
        assert!(f
            .load(
                &vault("address = \"http://v:8200\"\nlocal_path = \"l\""),
                &env
            )
            .is_ok());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn build_store_file_backend() {
        let f = Fixture::new();
        let c = f
            .load(MINIMAL_FILE, &[(ENV_HSM_PIN, "p"), (ENV_ROOT_TOKEN, "r")])
            .unwrap();
        let store = crate::open_store(&c).await.unwrap();
        assert_eq!(store.put("k", b"x".to_vec(), 0).await.unwrap(), 1);
        assert!(f.dir.path().join("store/k.kek").exists());
        assert!(store.describe().starts_with("file:"));
    }

    #[test]
    fn listener_connection_bounds() {
        let parse = |extra: &str| {
            let f = Fixture::new();
            f.load(
                &format!(
                    "[listener]\naddress = \"127.0.0.1:8210\"\n{extra}\n[hsm]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin_file = \"pin\"\n[auth]\nroot_token_file = \"root\"\n[storage]\nbackend = \"file\"\npath = \"k\"\n"
                ),
                &[],
            )
        };
        let d = parse("").unwrap().listener;
        assert_eq!(d.max_connections, 4096);
        assert_eq!(
            d.http_read_header_timeout,
            std::time::Duration::from_secs(10)
        );
        assert_eq!(d.http_idle_timeout, std::time::Duration::from_secs(10));
        assert_eq!(d.http2_max_concurrent_streams, 250);
        assert_eq!(
            (d.unauthenticated_rate, d.unauthenticated_burst),
            (100, 200)
        );
        let l = parse(
            "max_connections = 10\nhttp_read_header_timeout = \"500ms\"\nhttp_idle_timeout = \"5m\"\nhttp2_max_concurrent_streams = 16\nunauthenticated_rate = 0\nunauthenticated_burst = 5",
        )
        .unwrap()
        .listener;
        assert_eq!(l.max_connections, 10);
        assert_eq!(
            l.http_read_header_timeout,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(l.http_idle_timeout, std::time::Duration::from_secs(300));
        assert_eq!(l.http2_max_concurrent_streams, 16);
        assert_eq!((l.unauthenticated_rate, l.unauthenticated_burst), (0, 5));
        assert_eq!(
            parse("http_idle_timeout = 30")
                .unwrap()
                .listener
                .http_idle_timeout,
            std::time::Duration::from_secs(30)
        );
        for bad in [
            "max_connections = 0",
            "http_read_header_timeout = \"10 parsecs\"",
            "http_read_header_timeout = \"1ms\"",
            "http_idle_timeout = \"2h\"",
            "http2_max_concurrent_streams = 0",
            "unauthenticated_rate = 1000001",
            "unauthenticated_burst = 0",
        ] {
            let e = parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"))
                .to_string();
            let key = bad.split(' ').next().unwrap();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }
}

//! Production commands driven by `rootseal.toml`: `serve`, `init`, `root`, `key`, and the config
//! printers `vault seal-config` and `openbao kms-config`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use rootseal_hsm::{CreateOptions, InitOutcome, KeyInfo};
use rootseal_hsm::{Custody, Hsm, Keyring, KeyringError};
use rootseal_vault_config::Config;
use secrecy::ExposeSecret;

use super::CliResult;

pub(super) fn load(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

async fn open_hsm(cfg: &Config) -> Result<Hsm, String> {
    let hc = cfg.hsm_config();
    // Dropping the last `Hsm` joins its workers (sessions closed before the process exits).
    tokio::task::spawn_blocking(move || Hsm::open(hc))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("HSM: {e}"))
}

pub(super) async fn open_keyring(cfg: &Config) -> Result<Keyring, String> {
    let hsm = open_hsm(cfg).await?;
    let store = rootseal_vault_config::open_store(cfg)
        .await
        .map_err(|e| e.to_string())?;
    keyring_over(cfg, hsm, store).await
}

async fn keyring_over(
    cfg: &Config,
    hsm: Hsm,
    store: std::sync::Arc<dyn rootseal_hsm::KekStore>,
) -> Result<Keyring, String> {
    let options = rootseal_hsm::KeyringOptions {
        lifecycle: cfg.lifecycle.policy,
        ..Default::default()
    };
    Keyring::open_with(hsm, store, options)
        .await
        .map_err(|e| match e {
            KeyringError::NoRoot => format!(
                "the HSM token has no rootseal root key: run `rootseal init --config {}` first",
                cfg.source.display()
            ),
            e => super::explain(&e),
        })
}

/// `rootseal serve --config FILE [--allow-weak-root]`.
pub async fn serve(path: &Path, allow_weak_root: bool) -> CliResult {
    let cfg = load(path)?;
    let hsm = open_hsm(&cfg).await?;
    let has_root = rootseal_hsm::root_status(&hsm)
        .await
        .map_err(|e| super::explain(&e))?
        .roots
        .iter()
        .any(|r| r.complete);
    if !has_root {
        return Err(format!(
            "the HSM token has no rootseal root key: run `rootseal init --config {}` first",
            cfg.source.display()
        ));
    }
    let audit_cfg = cfg.audit.audit_config();
    let audit_key = if audit_cfg.mode == rootseal_audit::Mode::Off {
        tracing::warn!("[audit] mode = \"off\": no audit log");
        true
    } else {
        hsm.audit_public_key()
            .await
            .map_err(|e| format!("HSM: {e}"))?
            .is_some()
    };
    if !audit_key {
        if !allow_weak_root {
            return Err(format!(
                "audit key missing: the HSM token has no rootseal-audit signing key (it predates \
                 the audit log), so the audit log's checkpoints cannot be signed. Run `rootseal \
                 root rotate --config {p}` or `rootseal init --config {p}` as the Security \
                 Officer to create it (or start with --allow-weak-root to serve with unsigned \
                 records)",
                p = cfg.source.display()
            ));
        }
        tracing::warn!(
            "audit key missing: serving with unsigned audit records (--allow-weak-root)"
        );
    }
    if audit_cfg.mode != rootseal_audit::Mode::Off {
        super::clock_check::check_clock(&audit_cfg.path, &rootseal_audit::now_rfc3339())?;
    }
    let (log, _, seen) = crate::audit::open(&audit_cfg, &hsm, "server").await?;
    let store = rootseal_vault_config::open_store(&cfg)
        .await
        .map_err(|e| e.to_string())?;
    let store: std::sync::Arc<dyn rootseal_hsm::KekStore> = std::sync::Arc::new(
        crate::audit::store::AuditedStore::new(store, log.clone(), seen),
    );
    let keyring = keyring_over(&cfg, hsm, store).await?;
    crate::audit::record_custody(&log, &keyring).await;
    crate::audit::audit_compromised_uses(&log, &keyring);
    // Auto-rotation and protect-stop lead time (`[lifecycle]`); ends with the process.
    let _scheduler = crate::scheduler::spawn(keyring.clone(), crate::scheduler::INTERVAL);
    let custody = keyring.custody();
    if custody.verdict() == Custody::Weak {
        for f in custody.failures() {
            tracing::warn!(failure = %f, "custody check");
        }
        if !allow_weak_root {
            return Err(format!(
                "the HSM root fails the custody check ({}): a holder of the User PIN could read \
                 its keys. Run `rootseal root rotate --config {}` as the Security Officer to move \
                 to a hardened root (or start with --allow-weak-root to serve anyway)",
                custody.failures().join("; "),
                cfg.source.display()
            ));
        }
        tracing::warn!("serving from a weak root (--allow-weak-root)");
    }
    if cfg.governance.enabled {
        tracing::info!(
            root_token = cfg.auth.root_token.is_some(),
            "governance on: scoped API tokens; SO actions only by signed ceremonies"
        );
        super::governance::spawn_ledger_auditor(keyring.clone(), log.clone());
    } else {
        tracing::warn!("governance is OFF (governance = \"off\"): single-operator mode, the root token can do everything; for development only");
        eprintln!("WARNING: governance is off: single-operator mode, for development only");
    }
    let router = crate::routes::try_app_with(
        keyring,
        &crate::routes::auth::AuthConfig {
            root_token: cfg.auth.root_token.clone(),
            governance: cfg.governance.enabled,
        },
        crate::routes::ApiConfig {
            mount: cfg.transit.mount.clone(),
            allow_upsert: cfg.transit.allow_upsert,
            max_body_bytes: cfg.listener.max_request_bytes,
            max_batch_items: cfg.transit.max_batch_items,
        },
        Some(log.clone()),
    )
    .map_err(|e| e.to_string())?;
    let tls = cfg.listener.tls.as_ref().map(|t| crate::server::TlsFiles {
        cert: t.cert_file.clone(),
        key: t.key_file.clone(),
        client_ca: t.client_ca_file.clone(),
    });
    tracing::info!(
        address = %cfg.listener.address,
        tls = tls.is_some(),
        mount = %cfg.transit.mount,
        "rootseal serving"
    );
    let served = crate::server::serve(
        crate::server::ListenerConfig {
            addr: cfg.listener.address,
            tls,
            limits: crate::server::ConnLimits {
                max_connections: cfg.listener.max_connections,
                read_header_timeout: cfg.listener.http_read_header_timeout,
                idle_timeout: cfg.listener.http_idle_timeout,
                http2_max_concurrent_streams: cfg.listener.http2_max_concurrent_streams,
                unauthenticated: crate::ratelimit::RateLimit {
                    rate: cfg.listener.unauthenticated_rate,
                    burst: cfg.listener.unauthenticated_burst,
                },
            },
        },
        router,
        super::dev::shutdown_signal(),
    )
    .await
    .map_err(|e| format!("server error: {e}"));
    crate::audit::close(&log, "server").await;
    served
}

/// Records an admin command's event in the audit log of `cfg`, when no server holds it (one
/// writer per log); otherwise says so on stderr (the operation is in the tracing log, and the
/// server records what it finds at its next start).
async fn audit_cli_event(cfg: &Config, ev: rootseal_audit::Event) {
    let audit_cfg = cfg.audit.audit_config();
    if audit_cfg.mode == rootseal_audit::Mode::Off {
        return;
    }
    let kind = ev.kind().to_owned();
    let hsm = match open_hsm(cfg).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("note: {kind} is not in the audit log: {e}");
            return;
        }
    };
    match crate::audit::open(&audit_cfg, &hsm, "cli").await {
        Ok((log, _, _)) => {
            if let Err(e) = log.record(ev).await {
                eprintln!("note: {kind} is not in the audit log: {e}");
            }
            crate::audit::close(&log, "cli").await;
        }
        Err(e) => eprintln!("note: {kind} is not in the audit log: {e}"),
    }
}

/// `rootseal init --config FILE [--so-pin-file FILE] [--operators FILE]`.
pub async fn init(path: &Path, so: &super::SoPinArg, operators: Option<&Path>) -> CliResult {
    let cfg = load(path)?;
    if cfg.governance.enabled {
        return match operators {
            Some(f) => super::governance::init_operators(&cfg, f).await,
            None => Err(format!(
                "governance is on in {}: the root is made by a root.init ceremony. Run `rootseal init --operators FILE` with the first operator registry, then `rootseal ceremony propose --op root.init`",
                cfg.source.display()
            )),
        };
    }
    if operators.is_some() {
        return Err("--operators needs governance on (remove governance = \"off\")".into());
    }
    // The SO PIN is needed only to make a root: a run on a token that has one reports it.
    let (existing, audit_key) = {
        let hsm = open_hsm(&cfg).await?;
        let root = rootseal_hsm::root_status(&hsm)
            .await
            .map_err(|e| super::explain(&e))?
            .roots
            .into_iter()
            .rev()
            .find(|r| r.complete);
        let key = hsm
            .audit_public_key()
            .await
            .map_err(|e| format!("HSM: {e}"))?
            .is_some();
        (root, key)
    };
    let outcome = match existing {
        Some(r) if audit_key => InitOutcome::Exists(r.id),
        Some(_) => {
            // A root made before the audit log: the SO makes its audit key now.
            let o = rootseal_hsm::init_root(&cfg.hsm_config(), &super::so_pin(so)?)
                .await
                .map_err(|e| super::explain(&e))?;
            println!("Created the audit signing key rootseal-audit (Ed25519, made by the Security Officer)");
            o
        }
        None => rootseal_hsm::init_root(&cfg.hsm_config(), &super::so_pin(so)?)
            .await
            .map_err(|e| super::explain(&e))?,
    };
    match outcome {
        InitOutcome::Created(id) => println!(
            "Created the L0 root {id} (AES-256 wrap key, made by the Security Officer, and HMAC \
             key) on token {}",
            cfg.hsm.token
        ),
        InitOutcome::Exists(id) => println!(
            "The L0 root {id} already exists on token {}; nothing changed",
            cfg.hsm.token
        ),
    }
    let hsm = open_hsm(&cfg).await?;
    let st = rootseal_hsm::root_status(&hsm)
        .await
        .map_err(|e| super::explain(&e))?;
    print_custody(&st.custody);
    drop(hsm);
    let (what, id) = match &outcome {
        InitOutcome::Created(id) => ("created", id.to_string()),
        InitOutcome::Exists(id) => ("exists", id.to_string()),
    };
    audit_cli_event(
        &cfg,
        rootseal_audit::Event::new("root.init")
            .with("outcome", what)
            .with("root", id)
            .with("custody", st.custody.verdict().as_str()),
    )
    .await;
    Ok(())
}

fn print_custody(c: &rootseal_hsm::CustodyReport) {
    println!("Custody: {}", c.verdict().as_str());
    for f in c.failures() {
        println!("  {f}");
    }
}

/// `rootseal root status --config FILE`.
pub async fn root_status(path: &Path) -> CliResult {
    let cfg = load(path)?;
    let hsm = open_hsm(&cfg).await?;
    let st = rootseal_hsm::root_status(&hsm)
        .await
        .map_err(|e| super::explain(&e))?;
    println!("Token: {}", st.token);
    if st.roots.is_empty() {
        println!("No root: run `rootseal init`");
    }
    for r in &st.roots {
        println!(
            "Root {} (generation {}, {:?}{}{})",
            r.id,
            r.generation,
            r.role,
            if r.trusted {
                ", trusted"
            } else {
                ", not trusted"
            },
            if r.complete { "" } else { ", MAC key missing" }
        );
    }
    print_custody(&st.custody);
    Ok(())
}

/// `rootseal root rotate --config FILE [--so-pin-file FILE]`.
pub async fn root_rotate(path: &Path, so: &super::SoPinArg, grace_secs: u64) -> CliResult {
    let cfg = load(path)?;
    if cfg.governance.enabled {
        return Err(format!(
            "governance is on in {}: a root rotation is a root.rotate ceremony (`rootseal ceremony propose --op root.rotate`)",
            cfg.source.display()
        ));
    }
    let so_pin = super::so_pin(so)?;
    let store = rootseal_vault_config::open_store(&cfg)
        .await
        .map_err(|e| e.to_string())?;
    let r = rootseal_hsm::rotate_root(
        &cfg.hsm_config(),
        &so_pin,
        store,
        Duration::from_secs(grace_secs),
    )
    .await
    .map_err(|e| {
        format!(
            "root rotation stopped (run it again to finish): {}",
            super::explain(&e)
        )
    })?;
    audit_cli_event(
        &cfg,
        rootseal_audit::Event::new("root.rotate")
            .with("new_root", r.new_root.clone())
            .with("old_roots", r.old_roots.clone())
            .with("resealed", r.resealed)
            .with("already_done", r.already_done)
            .with("stores", r.stores.clone())
            .with("old_roots_destroyed", r.destroyed),
    )
    .await;
    let old = if r.old_roots.is_empty() {
        "(none left)".to_owned()
    } else {
        r.old_roots.join(", ")
    };
    println!(
        "Root rotated: {old} -> {} ({} records re-sealed, {} already under the new root, in {} store(s): {})",
        r.new_root,
        r.resealed,
        r.already_done,
        r.stores.len(),
        r.stores.join(", ")
    );
    if !r.destroyed {
        return Err(format!(
            "the old root(s) {old} were kept: these stores registered on the token could not be \
             reached from here and may still hold records under them: {}. Run `rootseal root \
             rotate` again where they can be reached (or with a rootseal.toml naming them)",
            r.unreachable.join(", ")
        ));
    }
    println!("Old root(s) destroyed.");
    Ok(())
}

/// A key command's error, naming the key (and, for a store that refused, what to check).
pub(super) fn key_error(name: &str, e: KeyringError) -> String {
    match e {
        KeyringError::StoreDenied(_) => format!(
            "key {name}: permission denied by the key store (check the Vault token's policy on the KV path of [storage])"
        ),
        e => format!("key {name}: {}", super::explain(&e)),
    }
}

pub(super) fn print_key(k: &KeyInfo) {
    println!(
        "Key {}: type {}, latest version {}, min decryption version {}, min encryption version {}, deletion allowed {}, versions {:?}",
        k.name,
        k.key_type,
        k.latest_version,
        k.min_decryption_version,
        k.min_encryption_version,
        k.deletion_allowed,
        k.versions.keys().collect::<Vec<_>>()
    );
}

/// `rootseal key rotate NAME --config FILE`.
pub async fn key_rotate(path: &Path, name: &str) -> CliResult {
    let keyring = open_keyring(&load(path)?).await?;
    let k = keyring
        .rotate_key(name)
        .await
        .map_err(|e| key_error(name, e))?;
    print_key(&k);
    Ok(())
}

/// `rootseal key create NAME --config FILE`.
pub async fn key_create(path: &Path, name: &str) -> CliResult {
    let keyring = open_keyring(&load(path)?).await?;
    let k = keyring
        .create_key(name, CreateOptions::default())
        .await
        .map_err(|e| key_error(name, e))?;
    print_key(&k);
    Ok(())
}

/// `rootseal key show NAME --config FILE`.
pub async fn key_show(path: &Path, name: &str) -> CliResult {
    let keyring = open_keyring(&load(path)?).await?;
    let k = keyring
        .key_info(name)
        .await
        .map_err(|e| key_error(name, e))?;
    print_key(&k);
    Ok(())
}

/// `rootseal key list --config FILE`.
pub async fn key_list(path: &Path) -> CliResult {
    let keyring = open_keyring(&load(path)?).await?;
    for n in keyring.list_keys().await.map_err(|e| super::explain(&e))? {
        println!("{n}");
    }
    Ok(())
}

/// Arguments of `rootseal vault seal-config`.
#[derive(Debug, Args)]
pub struct SealConfigArgs {
    /// rootseal's address as Vault/OpenBao reaches it. With --config, defaults to the listener.
    #[arg(long)]
    address: Option<String>,
    /// Read the listener address, TLS and root token file from this rootseal.toml.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// File holding the token to put in the stanza as it is (e.g. `rootseal dev`'s
    /// dev-root-token). Without it, --config issues a scoped User token (encrypt and decrypt on
    /// --key-name only); with neither, the stanza has no token: set VAULT_TRANSIT_SEAL_TOKEN in
    /// Vault's environment.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// With governance on: the approved `token.create` ceremony of the seal token (role=user,
    /// keys=KEY_NAME, ops=encrypt,decrypt; a Crypto Officer approves it). It is executed here and
    /// its token goes into the stanza.
    #[arg(long, value_name = "FILE")]
    ceremony: Option<PathBuf>,
    /// The transit key Vault/OpenBao seals with.
    #[arg(long, default_value = "autounseal")]
    key_name: String,
    /// rootseal's transit mount.
    #[arg(long)]
    mount: Option<String>,
    /// CA certificate Vault/OpenBao should trust for rootseal's TLS listener.
    #[arg(long)]
    tls_ca_cert: Option<PathBuf>,
}

/// `rootseal vault seal-config`: the stanza carries a scoped User token (encrypt and decrypt
/// on the seal key only, Vault's transit-seal best practice), never the root token unless it is
/// handed in with --token-file. With --config and governance off the token is issued here; with
/// governance on issuing it is a Crypto Officer action, so it comes from an approved
/// `token.create` ceremony (`--ceremony FILE`), executed here.
pub async fn seal_config(a: &SealConfigArgs) -> CliResult {
    let cfg = match &a.config {
        Some(p) => Some(load(p)?),
        None => None,
    };
    let address = match (&a.address, &cfg) {
        (Some(addr), _) => addr.clone(),
        (None, Some(c)) => format!(
            "{}://{}",
            if c.listener.tls.is_some() {
                "https"
            } else {
                "http"
            },
            c.listener.address
        ),
        (None, None) => "http://127.0.0.1:8210".to_owned(),
    };
    let token: Option<secrecy::SecretString> = match (&a.token_file, &cfg) {
        (Some(f), _) => Some(secrecy::SecretString::from(
            std::fs::read_to_string(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .trim()
                .to_owned(),
        )),
        (None, Some(c)) if c.governance.enabled => {
            let Some(file) = &a.ceremony else {
                return Err(format!(
                    "governance is on in {}: the seal token is issued by a token.create ceremony a Crypto Officer approves: \
                     `rootseal ceremony propose --op token.create --param role=user --param keys={k} --param ops=encrypt,decrypt --param name=openbao-seal --requester NAME --out seal.json`, \
                     `rootseal ceremony approve seal.json --operator CO --signer URI`, then `rootseal vault seal-config --config {} --ceremony seal.json`",
                    c.source.display(),
                    c.source.display(),
                    k = a.key_name
                ));
            };
            let so = super::SoPinArg { so_pin_file: None };
            let t = super::governance::execute_ceremony(file, c, &so, Some(&a.key_name))
                .await?
                .ok_or("the ceremony issued no token")?;
            Some(t)
        }
        (None, Some(c)) => Some(super::governance::issue_seal_token(c, &a.key_name).await?),
        (None, None) => None,
    };
    let mount = a
        .mount
        .clone()
        .or_else(|| cfg.as_ref().map(|c| c.transit.mount.clone()))
        .unwrap_or_else(|| "transit".to_owned());
    let stanza = rootseal_vault_config::render_transit_seal_stanza(
        &address,
        token.as_ref().map(|t| t.expose_secret()),
        &a.key_name,
        &mount,
        a.tls_ca_cert.as_deref(),
    );
    println!("{stanza}");
    if token.is_none() {
        eprintln!("note: no token in the stanza; set VAULT_TRANSIT_SEAL_TOKEN for Vault/OpenBao");
    }
    Ok(())
}

/// Arguments of `rootseal openbao kms-config`.
#[derive(Debug, Args)]
pub struct KmsConfigArgs {
    /// rootseal.toml the plugin reads (its [hsm] and local key store).
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// OpenBao's plugin_directory; this binary is copied into it.
    #[arg(long)]
    plugin_dir: PathBuf,
}

/// `rootseal openbao kms-config`.
pub fn kms_config(a: &KmsConfigArgs) -> CliResult {
    let out =
        crate::kms::kms_config_command(&a.config, &a.plugin_dir).map_err(|e| e.to_string())?;
    println!("{out}");
    Ok(())
}

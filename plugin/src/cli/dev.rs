//! `rootseal dev`: the embedded default. A SoftHSM2 token in the data directory, the L0 root
//! created on first start, sealed L1 records in a local file store, the transit API on
//! 127.0.0.1:8210. Restarting with the same `--data-dir` keeps every key (and the dev PIN and
//! root token, kept in the directory with mode 0600).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use rootseal_hsm::default_softhsm_module;
use rootseal_hsm::FileStore;
use rootseal_hsm::InitOutcome;
use rootseal_hsm::SoftHsmDir;
use rootseal_hsm::{Hsm, HsmConfig, Keyring, TokenSelector};
use secrecy::{ExposeSecret, SecretString};

use super::CliResult;

/// The dev token's label.
pub const DEV_TOKEN_LABEL: &str = "rootseal-dev";

/// Arguments of `rootseal dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8210")]
    listen: SocketAddr,
    /// Root token clients must send (default: random, printed, kept in the data dir).
    #[arg(long)]
    dev_root_token: Option<String>,
    /// User PIN of the dev SoftHSM2 token (default: random, printed, kept in the data dir).
    #[arg(long)]
    dev_hsm_pin: Option<String>,
    /// Directory for the SoftHSM2 token and the key store (default: a temporary directory removed
    /// on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Transit mount path served under /v1/.
    #[arg(long, default_value = "transit")]
    mount: String,
    /// The audit log's mode (`DIR/audit.log`): `block` (a response waits for its record's
    /// fsync), `best-effort`, or `off`.
    #[arg(long, default_value = "block", value_parser = ["block", "best-effort", "off"])]
    audit_mode: String,
    /// Requests without a token (health, seal-status, metrics) per second per client address,
    /// as `[listener] unauthenticated_rate`; 0 turns the limit off.
    #[arg(long, default_value_t = crate::ratelimit::DEFAULT_RATE)]
    unauthenticated_rate: u32,
}

/// What `prepare` set up before the runtime started.
pub struct Prepared {
    listen: SocketAddr,
    data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    softhsm: SoftHsmDir,
    pin: SecretString,
    /// The dev token's Security Officer PIN (`DIR/dev-hsm-so-pin`): `dev` is its own SO, for
    /// making and hardening the root.
    so_pin: SecretString,
    token: SecretString,
    mount: String,
    audit_mode: rootseal_audit::Mode,
    unauthenticated_rate: u32,
}

fn random_hex(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| "no randomness".to_owned())?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Reads `dir/name` or, when absent, stores `default()` there (mode 0600).
fn remembered(
    dir: &Path,
    name: &str,
    given: Option<&str>,
    default: impl FnOnce() -> Result<String, String>,
) -> Result<SecretString, String> {
    let path = dir.join(name);
    let value = match (given, std::fs::read_to_string(&path)) {
        (Some(v), _) => v.to_owned(),
        (None, Ok(v)) => v.trim().to_owned(),
        (None, Err(_)) => default()?,
    };
    write_private(&path, &value)?;
    Ok(SecretString::from(value))
}

fn write_private(path: &Path, value: &str) -> Result<(), String> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(value.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Creates the data directory, the SoftHSM2 configuration and token, and points
/// `SOFTHSM2_CONF` at it. Runs before the runtime starts (one thread).
pub fn prepare(args: &DevArgs) -> Result<Prepared, String> {
    let (data_dir, temp) = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            (d.clone(), None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("rootseal-dev-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            (t.path().to_owned(), Some(t))
        }
    };
    let data_dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let softhsm = SoftHsmDir::create(&data_dir.join("softhsm")).map_err(|e| e.to_string())?;
    let pin = remembered(
        &data_dir,
        "dev-hsm-pin",
        args.dev_hsm_pin.as_deref(),
        || random_hex(8),
    )?;
    let so_pin = remembered(&data_dir, "dev-hsm-so-pin", None, || random_hex(8))?;
    if !softhsm
        .has_token(DEV_TOKEN_LABEL)
        .map_err(|e| e.to_string())?
    {
        softhsm
            .init_token(DEV_TOKEN_LABEL, &pin, &so_pin)
            .map_err(|e| e.to_string())?;
    }
    let token = remembered(
        &data_dir,
        "dev-root-token",
        args.dev_root_token.as_deref(),
        || Ok(format!("rs.{}", random_hex(16)?)),
    )?;
    softhsm.activate();
    Ok(Prepared {
        listen: args.listen,
        data_dir,
        _temp: temp,
        softhsm,
        pin,
        so_pin,
        token,
        mount: args.mount.trim_matches('/').to_owned(),
        unauthenticated_rate: args.unauthenticated_rate,
        audit_mode: rootseal_audit::Mode::parse(&args.audit_mode)
            .ok_or("--audit-mode must be block, best-effort or off")?,
    })
}

/// Opens the HSM, creates the root on first start, serves until SIGINT/SIGTERM.
pub async fn run(p: Prepared) -> CliResult {
    let module = default_softhsm_module()
        .ok_or("libsofthsm2.so not found: install the Debian package softhsm2")?;
    let cfg = HsmConfig::new(
        module,
        TokenSelector::Label(DEV_TOKEN_LABEL.into()),
        p.pin.clone(),
    );
    // The root first: its L0 is made in a Security Officer session, which needs this process
    // logged out as User.
    match rootseal_hsm::init_root(&cfg, &p.so_pin)
        .await
        .map_err(|e| format!("cannot create the dev root: {}", super::explain(&e)))?
    {
        InitOutcome::Created(id) => tracing::info!(root = %id, "created the L0 root"),
        InitOutcome::Exists(id) => tracing::info!(root = %id, "using the existing L0 root"),
    }
    let store: Arc<dyn rootseal_hsm::KekStore> =
        Arc::new(FileStore::open(p.data_dir.join("keys")).map_err(|e| e.to_string())?);
    let mut keyring = open_dev_keyring(&cfg, store.clone()).await?;
    if keyring.custody().verdict() == rootseal_hsm::Custody::Weak {
        // A data dir made by rootseal 0.1.0: dev is its own Security Officer, so it hardens it.
        tracing::warn!(failures = ?keyring.custody().failures(), "the dev root is weak; rotating it to a hardened root");
        drop(keyring);
        rootseal_hsm::rotate_root(&cfg, &p.so_pin, store.clone(), std::time::Duration::ZERO)
            .await
            .map_err(|e| format!("cannot harden the dev root: {}", super::explain(&e)))?;
        keyring = open_dev_keyring(&cfg, store.clone()).await?;
    }
    // The audit log, then the keyring over an audited store (every record write on the log).
    drop(keyring);
    let hsm = open_dev_hsm(&cfg).await?;
    let audit_cfg =
        rootseal_audit::AuditConfig::new(crate::audit::dev_log_path(&p.data_dir), p.audit_mode);
    let (log, _, seen) = crate::audit::open(&audit_cfg, &hsm, "server").await?;
    let store: Arc<dyn rootseal_hsm::KekStore> = Arc::new(crate::audit::store::AuditedStore::new(
        store,
        log.clone(),
        seen,
    ));
    let keyring = Keyring::open(hsm, store)
        .await
        .map_err(|e| super::explain(&e))?;
    crate::audit::record_custody(&log, &keyring).await;
    crate::audit::audit_compromised_uses(&log, &keyring);
    // Auto-rotation and protect-stop lead time, as `serve`.
    let _scheduler = crate::scheduler::spawn(keyring.clone(), crate::scheduler::INTERVAL);
    let router = crate::routes::try_app_with(
        keyring,
        &crate::routes::auth::AuthConfig {
            root_token: Some(p.token.clone()),
            governance: false,
        },
        crate::routes::ApiConfig {
            mount: p.mount.clone(),
            allow_upsert: true,
            max_body_bytes: 32 * 1024 * 1024,
            ..crate::routes::ApiConfig::default()
        },
        Some(log.clone()),
    )
    .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(p.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", p.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listen address: {e}"))?;
    let url = format!("http://{addr}");
    let stanza = rootseal_vault_config::render_transit_seal_stanza(
        &url,
        Some(p.token.expose_secret()),
        "autounseal",
        &format!("{}/", p.mount),
        None,
    );
    // The dev banner goes to stdout, like `bao server -dev`: the PIN and token are development
    // values, printed on purpose.
    println!(
        "rootseal dev server\n\n\
         \x20 Address:        {url}\n\
         \x20 Root token:     {token}\n\
         \x20 HSM token:      SoftHSM2 label {label:?}, User PIN {pin}\n\
         \x20 SOFTHSM2_CONF:  {conf}\n\
         \x20 Data dir:       {data}{temp}\n\
         \x20 Audit log:      {audit} (mode {audit_mode})\n\n\
         Try:\n\
         \x20 export BAO_ADDR={url} BAO_TOKEN={token}\n\
         \x20 bao write {mount}/encrypt/demo plaintext=$(printf hello | base64)\n\n\
         OpenBao/Vault auto-unseal stanza:\n\n{stanza}\n",
        token = p.token.expose_secret(),
        label = DEV_TOKEN_LABEL,
        pin = p.pin.expose_secret(),
        conf = p.softhsm.conf.display(),
        data = p.data_dir.display(),
        temp = if p._temp.is_some() {
            " (temporary: removed on exit; use --data-dir to keep keys)"
        } else {
            ""
        },
        mount = p.mount,
        audit = audit_cfg.path.display(),
        audit_mode = p.audit_mode.as_str(),
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let limits = crate::server::ConnLimits {
        unauthenticated: crate::ratelimit::RateLimit {
            rate: p.unauthenticated_rate,
            ..crate::ratelimit::RateLimit::default()
        },
        ..crate::server::ConnLimits::default()
    };
    crate::server::serve_listener_with(listener, None, limits, router, shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
    crate::audit::close(&log, "server").await;
    tracing::info!("rootseal dev stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// The [`HsmConfig`] of the dev token in `data_dir` (its PIN from `DIR/dev-hsm-pin`), for
/// admin commands run beside a `rootseal dev` (`SOFTHSM2_CONF` must point at
/// `DIR/softhsm/softhsm2.conf`).
///
/// # Errors
/// A message when the directory is not a dev data directory.
pub fn hsm_config_for(data_dir: &Path) -> Result<HsmConfig, String> {
    let pin = std::fs::read_to_string(data_dir.join("dev-hsm-pin")).map_err(|e| {
        format!(
            "{} is not a `rootseal dev` data directory ({e})",
            data_dir.display()
        )
    })?;
    let module = default_softhsm_module()
        .ok_or("libsofthsm2.so not found: install the Debian package softhsm2")?;
    Ok(HsmConfig::new(
        module,
        TokenSelector::Label(DEV_TOKEN_LABEL.into()),
        SecretString::from(pin.trim().to_owned()),
    ))
}

async fn open_dev_hsm(cfg: &HsmConfig) -> Result<Hsm, String> {
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open the dev HSM token: {e}"))
}

async fn open_dev_keyring(
    cfg: &HsmConfig,
    store: Arc<dyn rootseal_hsm::KekStore>,
) -> Result<Keyring, String> {
    let cfg = cfg.clone();
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(cfg))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open the dev HSM token: {e}"))?;
    Keyring::open(hsm, store)
        .await
        .map_err(|e| super::explain(&e))
}

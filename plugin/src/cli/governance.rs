//! Dual control from the command line: `operator key|enroll`, `init --operators`,
//! `ceremony propose|approve|show|execute`, `token create|list|revoke`.
//!
//! Each operator runs `ceremony approve` in their own process with their own token
//! (`--signer pkcs11:…`); the ceremony file passes from hand to hand and holds no secret.
//! `execute` verifies everything (`rootseal_governance::verify`), marks the ceremony id
//! `started` in the HSM-MACed ledger, runs the operation and marks it `done`; every operation is
//! written to be resumed by running `execute` again with the same file after a `kill -9`
//! (`rootseal_governance::ledger`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use rootseal_governance::ceremony::{check_params, DEFAULT_TTL_SECS, MAX_TTL_SECS};
use rootseal_governance::tokens::GrantRequest;
use rootseal_governance::{
    jcs, operation, records, CeremonyFile, CeremonyRequest, Ledger, LedgerEntry, LedgerState,
    OperatorKey, ParamKind, QuorumRules, Refusal, Registry, Role, TokenOp, TokenRef, TokenStore,
    VerifyContext,
};
use rootseal_hsm::{Hsm, KekStore, Keyring, KeyringError, OperatorSigner, Pkcs11Uri, RootRole};
use rootseal_vault_config::Config;
use secrecy::ExposeSecret;

use super::{CliResult, ConfigArg, SoPinArg};

/// `rootseal operator …`.
#[derive(Debug, Subcommand)]
pub enum OperatorCmd {
    /// Create the operator's signing key on their own token (if absent) and print its public key.
    Key {
        /// The operator's token and key, a PKCS#11 URI (RFC 7512).
        #[arg(long)]
        signer: String,
        /// The algorithm of a key made now: ed25519 (default) or ecdsa-p256 (for tokens
        /// without Ed25519, e.g. PIV cards). An existing key keeps its own.
        #[arg(long, default_value = "ed25519")]
        algorithm: String,
    },
    /// Add an operator to the first registry (before `root.init`; afterwards use an
    /// `operators.set` ceremony).
    Enroll(EnrollArgs),
}

/// `rootseal operator enroll`.
#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The operator's name.
    #[arg(long)]
    name: String,
    /// so, co or auditor.
    #[arg(long)]
    role: String,
    /// The PEM public key `rootseal operator key` printed.
    #[arg(long, value_name = "FILE")]
    public_key: PathBuf,
}

/// `rootseal ceremony …`.
#[derive(Debug, Subcommand)]
pub enum CeremonyCmd {
    /// Write a ceremony request.
    Propose(ProposeArgs),
    /// Append an operator's signature (the requester's first signature signs the request).
    Approve {
        /// The ceremony file (rewritten in place).
        file: PathBuf,
        /// The operator's registered name.
        #[arg(long)]
        operator: String,
        /// The operator's token and key, a PKCS#11 URI.
        #[arg(long)]
        signer: String,
    },
    /// Print what a ceremony asks for and who signed.
    Show {
        /// The ceremony file.
        file: PathBuf,
    },
    /// Verify a ceremony and run it.
    Execute {
        /// The ceremony file.
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        so_pin: SoPinArg,
    },
}

/// `rootseal ceremony propose`.
#[derive(Debug, Args)]
pub struct ProposeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The operation (root.init, root.rotate, key.destroy, operators.set, quorum.set).
    #[arg(long)]
    op: String,
    /// A parameter, KEY=VALUE (KEY=@FILE for a document). Repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Where to write the request.
    #[arg(long)]
    out: PathBuf,
    /// The registered operator who asks (they sign it first with `ceremony approve`; their own
    /// approval does not count unless allow_requester_approval).
    #[arg(long)]
    requester: String,
    /// Validity, e.g. 10m (default), at most 1h.
    #[arg(long, default_value = "10m")]
    ttl: String,
}

/// `rootseal token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Issue a scoped API token (printed once; only its SHA-256 is stored).
    Create(TokenCreateArgs),
    /// List the tokens' grants (never the tokens).
    List(ConfigArg),
    /// Revoke a token by accessor or name.
    Revoke {
        /// The token's accessor or name.
        who: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// `rootseal token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// user (data plane) or co (key administration).
    #[arg(long)]
    role: String,
    /// Comma-separated key names.
    #[arg(long, value_delimiter = ',')]
    keys: Vec<String>,
    /// Comma-separated operations (user: encrypt, decrypt, rewrap, datakey, bulk; co: read,
    /// create, rotate, config).
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
    /// Lifetime, e.g. 720h (default: none).
    #[arg(long)]
    ttl: Option<String>,
    /// A name for `token list` and `token revoke`.
    #[arg(long)]
    name: Option<String>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses `90s`, `10m`, `720h`, `7d`.
pub(crate) fn parse_duration(s: &str) -> Result<u64, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 10m, 720h, 7d"))?;
    let mul = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit (s, m, h, d)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too long"))
}

fn load(path: &Path) -> Result<Config, String> {
    Config::load(path).map_err(|e| e.to_string())
}

fn explain(e: &KeyringError) -> String {
    super::explain(e)
}

async fn open_hsm(cfg: &Config) -> Result<Hsm, String> {
    let hc = cfg.hsm_config();
    tokio::task::spawn_blocking(move || Hsm::open(hc))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("HSM: {e}"))
}

async fn open_store(cfg: &Config) -> Result<Arc<dyn KekStore>, String> {
    rootseal_vault_config::open_store(cfg)
        .await
        .map_err(|e| e.to_string())
}

fn require_governance(cfg: &Config) -> CliResult {
    if cfg.governance.enabled {
        Ok(())
    } else {
        Err(format!(
            "governance is off in {}: ceremonies and scoped tokens need it on",
            cfg.source.display()
        ))
    }
}

async fn open_signer(uri: &str) -> Result<OperatorSigner, String> {
    let uri = Pkcs11Uri::parse(uri).map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || OperatorSigner::open(&uri))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The current root's id, if any.
async fn current_root(hsm: &Hsm) -> Result<Option<String>, String> {
    let st = rootseal_hsm::root_status(hsm)
        .await
        .map_err(|e| explain(&e))?;
    Ok(st
        .roots
        .iter()
        .find(|r| r.role == RootRole::Current && r.complete)
        .map(|r| r.id.to_hex()))
}

fn token_ref(hsm: &Hsm) -> TokenRef {
    let t = hsm.identity();
    TokenRef {
        manufacturer: t.manufacturer.clone(),
        model: t.model.clone(),
        serial: t.serial.clone(),
    }
}

/// The governance state in force: the registry, the rules and the ledger, with the store
/// versions of the ledger.
struct State {
    registry: Registry,
    rules: QuorumRules,
    ledger: Ledger,
    ledger_version: u64,
}

async fn sealed_state(kr: &Keyring) -> Result<State, String> {
    let (reg, _) = kr
        .open_record(records::OPERATORS)
        .await
        .map_err(|e| explain(&e))?
        .ok_or(
            "no operator registry: run `rootseal init --operators FILE` and the root.init ceremony",
        )?;
    let registry = Registry::parse(&reg).map_err(|e| e.0)?;
    let (rules, _) = kr
        .open_record(records::QUORUM)
        .await
        .map_err(|e| explain(&e))?
        .ok_or("no approved quorum rules in the store")?;
    let rules = QuorumRules::parse(&rules).map_err(|e| e.0)?;
    let (ledger, ledger_version) = match kr
        .open_record(records::LEDGER)
        .await
        .map_err(|e| explain(&e))?
    {
        Some((b, v)) => (Ledger::parse(&b).map_err(|e| e.0)?, v),
        None => (Ledger::new(), 0),
    };
    Ok(State {
        registry,
        rules,
        ledger,
        ledger_version,
    })
}

async fn bootstrap_state(store: &Arc<dyn KekStore>) -> Result<(Registry, QuorumRules), String> {
    let (reg, _) = rootseal_hsm::read_bootstrap_record(store, records::OPERATORS)
        .await
        .map_err(|e| explain(&e))?
        .ok_or("no bootstrap registry: run `rootseal init --operators FILE` first (or the root was already initialised)")?;
    let (rules, _) = rootseal_hsm::read_bootstrap_record(store, records::QUORUM)
        .await
        .map_err(|e| explain(&e))?
        .ok_or("no bootstrap quorum rules: run `rootseal init --operators FILE` again")?;
    Ok((
        Registry::parse(&reg).map_err(|e| e.0)?,
        QuorumRules::parse(&rules).map_err(|e| e.0)?,
    ))
}

/// Refuses rules in rootseal.toml that differ from the approved ones.
fn check_config_rules(cfg: &Config, approved: &QuorumRules) -> CliResult {
    let mine = cfg.governance.rules.digest().map_err(|e| e.0)?;
    let theirs = approved.digest().map_err(|e| e.0)?;
    if mine != theirs {
        return Err(format!(
            "the quorum rules in {} ({mine}) are not the approved ones ({theirs}): approve them with a quorum.set ceremony first",
            cfg.source.display()
        ));
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> CliResult {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_ceremony(path: &Path) -> Result<CeremonyFile, String> {
    let b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    CeremonyFile::parse(&b).map_err(|e| format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// operator

/// `rootseal operator key --signer URI [--algorithm ed25519|ecdsa-p256]`.
pub async fn operator_key(signer: &str, algorithm: &str) -> CliResult {
    let want = rootseal_hsm::OperatorKeyAlg::parse(algorithm)
        .ok_or_else(|| format!("--algorithm {algorithm:?}: ed25519 or ecdsa-p256"))?;
    let s = open_signer(signer).await?;
    let (pem, made, alg) = s
        .public_key_pem_with(true, want)
        .await
        .map_err(|e| e.to_string())?;
    if made {
        eprintln!(
            "Created a new {} signing key (never extractable) on the operator token",
            alg.name()
        );
    } else if alg != want {
        eprintln!(
            "note: the token already has a {} key under that label; it is kept",
            alg.name()
        );
    }
    print!("{pem}");
    Ok(())
}

/// `rootseal operator enroll`.
pub async fn operator_enroll(a: &EnrollArgs) -> CliResult {
    let cfg = load(&a.config.config)?;
    require_governance(&cfg)?;
    let role = Role::parse(&a.role)
        .filter(|r| r.is_operator_role())
        .ok_or_else(|| format!("--role {:?}: use so, co or auditor", a.role))?;
    let pem = std::fs::read_to_string(&a.public_key)
        .map_err(|e| format!("{}: {e}", a.public_key.display()))?;
    OperatorKey::from_pem(&pem).map_err(|e| format!("{}: {e}", a.public_key.display()))?;
    let store = open_store(&cfg).await?;
    if store
        .get(records::OPERATORS)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
        && rootseal_hsm::read_bootstrap_record(&store, records::OPERATORS)
            .await
            .map_err(|e| explain(&e))?
            .is_none()
    {
        return Err(
            "the registry is sealed (root.init ran): change it with an operators.set ceremony"
                .into(),
        );
    }
    let (mut reg, version) = match rootseal_hsm::read_bootstrap_record(&store, records::OPERATORS)
        .await
        .map_err(|e| explain(&e))?
    {
        Some((b, v)) => (Registry::parse(&b).map_err(|e| e.0)?, v),
        None => (
            Registry {
                format: rootseal_governance::registry::REGISTRY_FORMAT.into(),
                format_version: rootseal_governance::registry::REGISTRY_VERSION,
                operators: Vec::new(),
            },
            0,
        ),
    };
    reg.operators.push(rootseal_governance::Operator {
        name: a.name.clone(),
        role,
        public_key: pem,
        revoked: false,
    });
    reg.validate().map_err(|e| e.0)?;
    write_bootstrap(&cfg, &store, &reg, version).await?;
    println!(
        "Enrolled {} as {role} (registry {})",
        a.name,
        reg.digest().map_err(|e| e.0)?
    );
    Ok(())
}

async fn write_bootstrap(
    cfg: &Config,
    store: &Arc<dyn KekStore>,
    reg: &Registry,
    version: u64,
) -> CliResult {
    rootseal_hsm::write_bootstrap_record(
        store,
        records::OPERATORS,
        &reg.to_canonical().map_err(|e| e.0)?,
        version,
    )
    .await
    .map_err(|e| explain(&e))?;
    let rules = jcs::canonical(&cfg.governance.rules).map_err(|e| e.0)?;
    let rv = rootseal_hsm::read_bootstrap_record(store, records::QUORUM)
        .await
        .map_err(|e| explain(&e))?
        .map_or(0, |(_, v)| v);
    rootseal_hsm::write_bootstrap_record(store, records::QUORUM, &rules, rv)
        .await
        .map_err(|e| explain(&e))?;
    Ok(())
}

/// `rootseal init --operators FILE`: records the first registry and the quorum rules (no root
/// yet: the root.init ceremony makes it).
pub async fn init_operators(cfg: &Config, file: &Path) -> CliResult {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let reg = Registry::parse(&bytes).map_err(|e| format!("{}: {}", file.display(), e.0))?;
    cfg.governance
        .rules
        .check_satisfiable(&reg)
        .map_err(|e| e.0)?;
    let hsm = open_hsm(cfg).await?;
    if current_root(&hsm).await?.is_some() {
        return Err(
            "the token already has a root: change the registry with an operators.set ceremony"
                .into(),
        );
    }
    drop(hsm);
    let store = open_store(cfg).await?;
    let version = rootseal_hsm::read_bootstrap_record(&store, records::OPERATORS)
        .await
        .map_err(|e| explain(&e))?
        .map_or(0, |(_, v)| v);
    write_bootstrap(cfg, &store, &reg, version).await?;
    println!(
        "Recorded the first operator registry ({} operators, sha256 {}). Next: `rootseal ceremony propose --op root.init --requester NAME --out FILE`, approved by {}",
        reg.operators.len(),
        reg.digest().map_err(|e| e.0)?,
        cfg.governance
            .rules
            .rules
            .get("root_init")
            .map(|r| r.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(" + "))
            .unwrap_or_default()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ceremony

/// `rootseal ceremony propose`.
pub async fn propose(a: &ProposeArgs) -> CliResult {
    let cfg = load(&a.config.config)?;
    require_governance(&cfg)?;
    let op = operation(&a.op).ok_or_else(|| {
        format!(
            "unknown operation {:?} (known: {})",
            a.op,
            rootseal_governance::OPERATIONS
                .iter()
                .map(|o| o.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let ttl = parse_duration(&a.ttl)?;
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(format!("--ttl {}: between 1s and 1h", a.ttl));
    }
    let mut params = BTreeMap::new();
    for p in &a.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("--param {p:?}: use KEY=VALUE"))?;
        let kind = op.params.iter().find(|s| s.name == k).map(|s| s.kind);
        let v = match (kind, v.strip_prefix('@')) {
            (Some(ParamKind::Document), Some(path)) => {
                let b = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
                let doc: serde_json::Value =
                    serde_json::from_slice(&b).map_err(|e| format!("{path}: {e}"))?;
                String::from_utf8(jcs::canonical(&doc).map_err(|e| e.0)?)
                    .map_err(|e| e.to_string())?
            }
            _ => v.to_owned(),
        };
        if params.insert(k.to_owned(), v).is_some() {
            return Err(format!("--param {k} given twice"));
        }
    }
    let hsm = open_hsm(&cfg).await?;
    let token = token_ref(&hsm);
    let root_id = current_root(&hsm).await?;
    let (registry, rules) = if op.needs_root {
        if root_id.is_none() {
            return Err(format!(
                "{} needs a root: run the root.init ceremony first",
                op.name
            ));
        }
        let store = open_store(&cfg).await?;
        let kr = Keyring::open(hsm.clone(), store)
            .await
            .map_err(|e| explain(&e))?;
        let st = sealed_state(&kr).await?;
        (st.registry, st.rules)
    } else {
        if root_id.is_some() {
            return Err(format!("{}: the token already has a root", op.name));
        }
        bootstrap_state(&open_store(&cfg).await?).await?
    };
    if op.name == "root.init" && !params.contains_key("registry_sha256") {
        params.insert(
            "registry_sha256".into(),
            registry.digest().map_err(|e| e.0)?,
        );
    }
    if op.name == "quorum.set" && !params.contains_key("rules") {
        let doc = jcs::canonical(&cfg.governance.rules).map_err(|e| e.0)?;
        params.insert(
            "rules".into(),
            String::from_utf8(doc).map_err(|e| e.to_string())?,
        );
    } else {
        check_config_rules(&cfg, &rules)?;
    }
    check_params(op, &params).map_err(|e| e.to_string())?;
    let requester = registry
        .get(&a.requester)
        .filter(|o| !o.revoked && matches!(o.role, Role::So | Role::Co))
        .ok_or_else(|| {
            format!(
                "--requester {:?} is not an active SO or CO in the registry",
                a.requester
            )
        })?;
    let id = hsm.random_bytes(16).await.map_err(|e| explain(&e))?;
    let created = now();
    let req = CeremonyRequest {
        id: jcs::hex(&id),
        op: op.name.to_owned(),
        params,
        token,
        root_id,
        quorum_sha256: rules.digest().map_err(|e| e.0)?,
        registry_sha256: registry.digest().map_err(|e| e.0)?,
        requester: requester.name.clone(),
        requester_signature: String::new(),
        created,
        expires: created + if ttl == 0 { DEFAULT_TTL_SECS } else { ttl },
    };
    let file = CeremonyFile::new(req);
    write_atomic(&a.out, &file.to_bytes().map_err(|e| e.0)?)?;
    println!(
        "Ceremony {} ({}) written to {}; {} signs it first: `rootseal ceremony approve {} --operator {} --signer URI`",
        file.request.id,
        op.name,
        a.out.display(),
        file.request.requester,
        a.out.display(),
        file.request.requester
    );
    Ok(())
}

/// `rootseal ceremony approve FILE --operator NAME --signer URI`.
pub async fn approve(file: &Path, operator: &str, signer: &str) -> CliResult {
    let mut c = read_ceremony(file)?;
    let s = open_signer(signer).await?;
    let (pem, _) = s.public_key_pem(false).await.map_err(|e| e.to_string())?;
    let key = OperatorKey::from_pem(&pem).map_err(|e| e.0)?;
    if operator == c.request.requester && c.request.requester_signature.is_empty() {
        let msg = c.request.request_message().map_err(|e| e.0)?;
        let sig = s.sign(msg.clone()).await.map_err(|e| e.to_string())?;
        if !key.verify(&msg, &sig) {
            return Err("the token's signature does not verify under its own public key".into());
        }
        use base64::Engine as _;
        c.request.requester_signature = base64::engine::general_purpose::STANDARD.encode(sig);
        write_atomic(file, &c.to_bytes().map_err(|e| e.0)?)?;
        println!(
            "{operator} signed ceremony {} as its requester (not counted as an approval)",
            c.request.id
        );
        return Ok(());
    }
    if c.request.requester_signature.is_empty() {
        return Err(format!(
            "the requester {} has not signed this request yet",
            c.request.requester
        ));
    }
    let msg = c.request.approval_message().map_err(|e| e.0)?;
    let sig = s.sign(msg).await.map_err(|e| e.to_string())?;
    c.add_approval(operator, &key, &sig, now())
        .map_err(|e| e.to_string())?;
    write_atomic(file, &c.to_bytes().map_err(|e| e.0)?)?;
    println!(
        "{operator} approved ceremony {} ({}); {} approval(s)",
        c.request.id,
        c.request.op,
        c.approvals.len()
    );
    Ok(())
}

/// `rootseal ceremony show FILE`.
pub fn show(file: &Path) -> CliResult {
    let c = read_ceremony(file)?;
    let r = &c.request;
    let op = operation(&r.op);
    println!("Ceremony {} (format v{})", r.id, c.format_version);
    println!(
        "  operation: {}{}",
        r.op,
        op.map(|o| format!(": {}", o.summary)).unwrap_or_default()
    );
    for (k, v) in &r.params {
        if v.len() > 200 {
            println!(
                "  param {k}: sha256 {} ({} bytes)",
                jcs::hex(&jcs::sha256(v.as_bytes())),
                v.len()
            );
        } else {
            println!("  param {k} = {v}");
        }
    }
    println!("  token: {}", r.token);
    println!(
        "  root: {}",
        r.root_id.as_deref().unwrap_or("(none: before root.init)")
    );
    println!("  quorum rules sha256: {}", r.quorum_sha256);
    println!("  registry sha256: {}", r.registry_sha256);
    println!(
        "  requester: {} ({})",
        r.requester,
        if r.requester_signature.is_empty() {
            "not signed yet"
        } else {
            "signed"
        }
    );
    println!(
        "  created: {}, expires: {} ({}s)",
        r.created,
        r.expires,
        r.expires.saturating_sub(r.created)
    );
    if now() >= r.expires {
        println!("  EXPIRED");
    }
    println!("  approvals: {}", c.approvals.len());
    for a in &c.approvals {
        println!(
            "    {} ({}, key sha256 {})",
            a.operator, a.alg, a.key_sha256
        );
    }
    Ok(())
}

/// `rootseal ceremony execute FILE [--so-pin-file F]`.
pub async fn execute(file: &Path, config: &Path, so: &SoPinArg) -> CliResult {
    let cfg = load(config)?;
    if let Some(token) = execute_ceremony(file, &cfg, so, None).await? {
        // The one place a token.create ceremony's token is ever shown.
        println!("{}", token.expose_secret());
    }
    Ok(())
}

/// Verifies and runs the ceremony in `file`; returns the token a `token.create` ceremony
/// issued. `seal_key`: refuse anything but a `token.create` of exactly the seal grant on that
/// key (`vault seal-config --ceremony`).
pub(crate) async fn execute_ceremony(
    file: &Path,
    cfg: &Config,
    so: &SoPinArg,
    seal_key: Option<&str>,
) -> Result<Option<secrecy::SecretString>, String> {
    let cfg = cfg.clone();
    require_governance(&cfg)?;
    let c = read_ceremony(file)?;
    if let Some(key) = seal_key {
        let ok = c.request.op == "token.create"
            && GrantRequest::from_params(&c.request.params, &c.request.id)
                .is_ok_and(|g| g.is_seal_grant(key));
        if !ok {
            return Err(format!(
                "{}: not a token.create ceremony for the seal grant (--param role=user --param keys={key} --param ops=encrypt,decrypt)",
                file.display()
            ));
        }
    }
    let op = operation(&c.request.op)
        .ok_or_else(|| Refusal::UnknownOperation(c.request.op.clone()).to_string())?;
    let refused = |e: Refusal| format!("ceremony {} refused: {e}", c.request.id);
    let digest = c.request.digest().map_err(|e| e.0)?;
    let transcript =
        String::from_utf8(jcs::canonical(&c).map_err(|e| e.0)?).map_err(|e| e.to_string())?;
    let store = open_store(&cfg).await?;
    let hsm = open_hsm(&cfg).await?;
    let token = token_ref(&hsm);
    let root_id = current_root(&hsm).await?;

    if op.name == "root.init" {
        // Before the root exists there is no ledger: the bootstrap registry is the guard (it is
        // replaced by the sealed one at the end, after which root.init is refused).
        let (registry, rules) = bootstrap_state(&store).await?;
        check_config_rules(&cfg, &rules)?;
        let ledger = Ledger::new();
        let v = rootseal_governance::verify(
            &c,
            &VerifyContext {
                registry: &registry,
                rules: &rules,
                token: &token,
                root_id: None,
                now: now(),
                ledger: &ledger,
            },
        )
        .map_err(refused)?;
        if c.request.params.get("registry_sha256") != Some(&registry.digest().map_err(|e| e.0)?) {
            return Err(refused(Refusal::BadParams(
                "registry_sha256 is not the bootstrap registry's".into(),
            )));
        }
        drop(hsm);
        let so_pin = super::so_pin(so)?;
        let outcome = rootseal_hsm::init_root(&cfg.hsm_config(), &so_pin)
            .await
            .map_err(|e| explain(&e))?;
        let hsm = open_hsm(&cfg).await?;
        let kr = Keyring::open(hsm, store.clone())
            .await
            .map_err(|e| explain(&e))?;
        let mut ledger = Ledger::new();
        let lv = match kr
            .open_record(records::LEDGER)
            .await
            .map_err(|e| explain(&e))?
        {
            Some((b, ver)) => {
                ledger = Ledger::parse(&b).map_err(|e| e.0)?;
                ver
            }
            None => 0,
        };
        ledger.executed.insert(
            c.request.id.clone(),
            LedgerEntry {
                op: op.name.into(),
                request_sha256: digest,
                approvers: v.approvers.values().flatten().cloned().collect(),
                root_id: current_root(kr.hsm()).await?,
                started: now(),
                finished: Some(now()),
                state: LedgerState::Done,
                transcript: Some(transcript.clone()),
                outcome: None,
                audited: false,
            },
        );
        kr.seal_record(records::LEDGER, &ledger.to_bytes().map_err(|e| e.0)?, lv)
            .await
            .map_err(|e| explain(&e))?;
        kr.seal_record(
            records::QUORUM,
            &jcs::canonical(&rules).map_err(|e| e.0)?,
            bootstrap_version(&store, records::QUORUM).await?,
        )
        .await
        .map_err(|e| explain(&e))?;
        // Last: sealing the registry ends the bootstrap.
        kr.seal_record(
            records::OPERATORS,
            &registry.to_canonical().map_err(|e| e.0)?,
            bootstrap_version(&store, records::OPERATORS).await?,
        )
        .await
        .map_err(|e| explain(&e))?;
        println!(
            "Ceremony {} executed: root.init ({outcome:?}); registry and quorum rules sealed",
            c.request.id
        );
        audit_ceremony(&cfg, &kr, &c.request.id).await;
        return Ok(None);
    }

    // The keyring takes the only handle of the token: root rotation drops it before its
    // Security Officer step.
    let kr = Keyring::open(hsm, store.clone())
        .await
        .map_err(|e| explain(&e))?;
    let st = sealed_state(&kr).await?;
    let resume = match st.ledger.get(&c.request.id) {
        Some(e) if e.state == LedgerState::Done => {
            return Err(refused(Refusal::Replayed(c.request.id.clone())))
        }
        Some(e) if e.request_sha256 == digest => Some(e.clone()),
        Some(_) => return Err(refused(Refusal::Replayed(c.request.id.clone()))),
        None => None,
    };
    let entry = match resume {
        Some(e) => {
            eprintln!(
                "Ceremony {} was started and interrupted: finishing it",
                c.request.id
            );
            e
        }
        None => {
            if op.name != "quorum.set" {
                check_config_rules(&cfg, &st.rules)?;
            }
            let v = rootseal_governance::verify(
                &c,
                &VerifyContext {
                    registry: &st.registry,
                    rules: &st.rules,
                    token: &token,
                    root_id: root_id.as_deref(),
                    now: now(),
                    ledger: &st.ledger,
                },
            )
            .map_err(refused)?;
            precheck(op.name, &c, &cfg, &kr, &st)
                .await
                .map_err(refused)?;
            let e = LedgerEntry {
                op: op.name.into(),
                request_sha256: digest.clone(),
                approvers: v.approvers.values().flatten().cloned().collect(),
                root_id: root_id.clone(),
                started: now(),
                finished: None,
                state: LedgerState::Started,
                transcript: Some(transcript.clone()),
                outcome: None,
                audited: false,
            };
            let mut ledger = st.ledger.clone();
            ledger.executed.insert(c.request.id.clone(), e.clone());
            // Check-and-set: of two racing executes, one wins; the other is refused here.
            kr.seal_record(
                records::LEDGER,
                &ledger.to_bytes().map_err(|e| e.0)?,
                st.ledger_version,
            )
            .await
            .map_err(|e| match e {
                KeyringError::Conflict => refused(Refusal::Replayed(c.request.id.clone())),
                e => explain(&e),
            })?;
            e
        }
    };
    let mut out = RunOutput::default();
    let kr = run_op(op.name, &c, &cfg, kr, &entry, so, &mut out).await?;
    let RunOutput { issued, outcome } = out;
    // Mark it done.
    let st = sealed_state(&kr).await?;
    let mut ledger = st.ledger;
    if let Some(e) = ledger.executed.get_mut(&c.request.id) {
        e.state = LedgerState::Done;
        e.finished = Some(now());
        e.outcome = outcome;
    }
    kr.seal_record(
        records::LEDGER,
        &ledger.to_bytes().map_err(|e| e.0)?,
        st.ledger_version,
    )
    .await
    .map_err(|e| explain(&e))?;
    audit_ceremony(&cfg, &kr, &c.request.id).await;
    // On stderr: stdout carries only the token of a token.create.
    eprintln!("Ceremony {} executed: {}", c.request.id, op.name);
    Ok(issued)
}

async fn bootstrap_version(store: &Arc<dyn KekStore>, name: &str) -> Result<u64, String> {
    Ok(store
        .get(name)
        .await
        .map_err(|e| e.to_string())?
        .map_or(0, |r| r.version))
}

/// Checks of the parameters against the running system, before anything runs.
async fn precheck(
    op: &str,
    c: &CeremonyFile,
    cfg: &Config,
    kr: &Keyring,
    st: &State,
) -> Result<(), Refusal> {
    let p = &c.request.params;
    match op {
        "key.destroy" | "lifecycle.compromise" => {
            let key = p.get("key").cloned().unwrap_or_default();
            let info = match kr.key_info(&key).await {
                Ok(i) => i,
                Err(KeyringError::NotFound) => {
                    return Err(Refusal::BadParams(format!("no key {key:?} on this system")))
                }
                Err(e) => return Err(Refusal::BadParams(explain(&e))),
            };
            if let Some(v) = version_param(p, "version") {
                if !info.versions.contains_key(&v) {
                    return Err(Refusal::BadParams(format!(
                        "key {key:?} has no version {v}"
                    )));
                }
            }
            if let Some(min) = version_param(p, "min_available_version") {
                // Vault's trim rules (min_decryption_version is raised to it when it runs).
                if min < info.min_available_version || min > info.latest_version {
                    return Err(Refusal::BadParams(format!(
                        "min_available_version {min} must be between the current {} and the latest version {}",
                        info.min_available_version, info.latest_version
                    )));
                }
            }
            Ok(())
        }
        "operators.set" => {
            let reg = Registry::parse(p.get("operators").map(String::as_bytes).unwrap_or_default())
                .map_err(|e| Refusal::BadParams(e.0))?;
            st.rules
                .check_satisfiable(&reg)
                .map_err(|e| Refusal::Unsatisfiable(e.0))
        }
        "quorum.set" => {
            let rules =
                QuorumRules::parse(p.get("rules").map(String::as_bytes).unwrap_or_default())
                    .map_err(|e| Refusal::BadParams(e.0))?;
            if rules != cfg.governance.rules {
                return Err(Refusal::BadParams(format!(
                    "the rules approved differ from those in {}",
                    cfg.source.display()
                )));
            }
            rules
                .check_satisfiable(&st.registry)
                .map_err(|e| Refusal::Unsatisfiable(e.0))
        }
        "token.create" => GrantRequest::from_params(p, &c.request.id)
            .map(|_| ())
            .map_err(|e| Refusal::BadParams(e.0)),
        "token.revoke" => {
            let who = p.get("who").cloned().unwrap_or_default();
            let (mut ts, _) = token_store(kr).await.map_err(Refusal::BadParams)?;
            if ts.revoke(&who) == 0 {
                return Err(Refusal::BadParams(format!(
                    "no active token with accessor or name {who:?}"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A version parameter (checked as a `Version` by the operation's schema).
fn version_param(p: &std::collections::BTreeMap<String, String>, name: &str) -> Option<u32> {
    p.get(name).and_then(|v| v.parse().ok())
}

/// What an operation produced besides its effect.
#[derive(Default)]
struct RunOutput {
    /// The token a `token.create` issued (shown once).
    issued: Option<secrecy::SecretString>,
    /// For the ledger and the audit record (never a secret).
    outcome: Option<String>,
}

/// Runs (or finishes) the operation; returns a keyring open on the result.
async fn run_op(
    op: &str,
    c: &CeremonyFile,
    cfg: &Config,
    kr: Keyring,
    entry: &LedgerEntry,
    so: &SoPinArg,
    out: &mut RunOutput,
) -> Result<Keyring, String> {
    let RunOutput { issued, outcome } = out;
    let p = &c.request.params;
    match op {
        "token.create" => {
            let req = GrantRequest::from_params(p, &c.request.id).map_err(|e| e.0)?;
            // Resumed after a kill: a token this ceremony issued before may never have been
            // shown, so it is revoked and a new one issued (the ceremony still issues one).
            let lost = revoke_where(&kr, |g| {
                g.ceremony.as_deref() == Some(c.request.id.as_str())
            })
            .await?;
            if lost > 0 {
                eprintln!("Revoked {lost} token(s) an interrupted run of this ceremony issued");
            }
            let name = req.name.clone();
            let (token, accessor) = issue_token(&kr, req).await?;
            eprintln!(
                "Token {name} (accessor {accessor}): shown once on stdout, only its SHA-256 is stored"
            );
            *issued = Some(token);
            *outcome = Some(format!("accessor {accessor}"));
            Ok(kr)
        }
        "token.revoke" => {
            let who = p.get("who").cloned().unwrap_or_default();
            // Resumed after a kill: already revoked is done.
            let n = revoke_where(&kr, |g| g.accessor == who || g.name == who).await?;
            eprintln!("Revoked {n} token(s) {who}");
            *outcome = Some(format!("revoked {n} token(s)"));
            Ok(kr)
        }
        "root.rotate" => {
            let from = entry.root_id.clone().unwrap_or_default();
            let still_there = rootseal_hsm::root_status(kr.hsm())
                .await
                .map_err(|e| explain(&e))?
                .roots
                .iter()
                .any(|r| r.id.to_hex() == from);
            let store = kr.store().clone();
            if still_there {
                let so_pin = super::so_pin(so)?;
                let grace = p
                    .get("grace_secs")
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(5);
                // No User session of this token may be open for the SO step.
                drop(kr);
                let r = rootseal_hsm::rotate_root(
                    &cfg.hsm_config(),
                    &so_pin,
                    store.clone(),
                    Duration::from_secs(grace),
                )
                .await
                .map_err(|e| {
                    format!(
                        "root rotation stopped (run `ceremony execute` again to finish): {}",
                        explain(&e)
                    )
                })?;
                println!(
                    "Root rotated: {} -> {} ({} records re-sealed)",
                    r.old_roots.join(", "),
                    r.new_root,
                    r.resealed
                );
            }
            let hsm = open_hsm(cfg).await?;
            Keyring::open(hsm, store).await.map_err(|e| explain(&e))
        }
        "key.destroy" => {
            let key = p.get("key").cloned().unwrap_or_default();
            if let Some(min) = version_param(p, "min_available_version") {
                // Trim: the versions below `min` stop decrypting first (Vault's rule
                // min_available_version <= min_decryption_version), then are destroyed. Resumed
                // after a kill, both steps are no-ops when done.
                let info = kr.key_info(&key).await.map_err(|e| explain(&e))?;
                if info.min_decryption_version < min
                    || (info.min_encryption_version != 0 && info.min_encryption_version < min)
                {
                    let upd = rootseal_hsm::KeyConfigUpdate {
                        min_decryption_version: Some(info.min_decryption_version.max(min)),
                        min_encryption_version: (info.min_encryption_version != 0)
                            .then_some(info.min_encryption_version.max(min)),
                        ..Default::default()
                    };
                    kr.update_key_config(&key, upd)
                        .await
                        .map_err(|e| explain(&e))?;
                }
                let info = kr.trim_key(&key, min).await.map_err(|e| explain(&e))?;
                println!("Key {key}: versions below {min} destroyed");
                *outcome = Some(format!(
                    "trimmed below v{min}; latest v{}",
                    info.latest_version
                ));
                return Ok(kr);
            }
            kr.destroy_key(&key).await.map_err(|e| explain(&e))?;
            println!("Key {key} destroyed");
            Ok(kr)
        }
        "lifecycle.compromise" => {
            let key = p.get("key").cloned().unwrap_or_default();
            let version = version_param(p, "version").unwrap_or(0);
            let secs: u64 = p
                .get("decrypt_secs")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            // The decision runs from the ceremony's execution (a resumed run keeps the first
            // execution's start: the ledger entry's time).
            let start = entry.started;
            let until = (secs > 0).then(|| start.saturating_add(secs));
            let info = kr
                .compromise_version_until(&key, version, until)
                .await
                .map_err(|e| explain(&e))?;
            match until {
                Some(t) => println!(
                    "Key {key} v{version} marked compromised; it decrypts until {t} (unix), each use audited; latest v{}",
                    info.latest_version
                ),
                None => println!(
                    "Key {key} v{version} marked compromised; it never encrypts nor decrypts again; latest v{}",
                    info.latest_version
                ),
            }
            *outcome = Some(format!(
                "v{version} compromised; decrypt until {}; latest v{}",
                until.map_or_else(|| "never".to_owned(), |t| t.to_string()),
                info.latest_version
            ));
            Ok(kr)
        }
        "operators.set" => {
            let reg = Registry::parse(p.get("operators").map(String::as_bytes).unwrap_or_default())
                .map_err(|e| e.0)?;
            let v = kr
                .open_record(records::OPERATORS)
                .await
                .map_err(|e| explain(&e))?
                .map_or(0, |(_, v)| v);
            kr.seal_record(records::OPERATORS, &reg.to_canonical().map_err(|e| e.0)?, v)
                .await
                .map_err(|e| explain(&e))?;
            println!(
                "Operator registry replaced ({} operators, sha256 {})",
                reg.operators.len(),
                reg.digest().map_err(|e| e.0)?
            );
            Ok(kr)
        }
        "quorum.set" => {
            let rules =
                QuorumRules::parse(p.get("rules").map(String::as_bytes).unwrap_or_default())
                    .map_err(|e| e.0)?;
            let v = kr
                .open_record(records::QUORUM)
                .await
                .map_err(|e| explain(&e))?
                .map_or(0, |(_, v)| v);
            kr.seal_record(
                records::QUORUM,
                &jcs::canonical(&rules).map_err(|e| e.0)?,
                v,
            )
            .await
            .map_err(|e| explain(&e))?;
            println!(
                "Quorum rules approved (sha256 {})",
                rules.digest().map_err(|e| e.0)?
            );
            Ok(kr)
        }
        other => Err(format!(
            "operation {other} has no executor in this rootseal"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// audit
//
// The audit log has one writer (the file is locked): while `serve` runs, the CLI cannot append.
// So the transcript of every executed ceremony is first written into the HSM-MACed ledger (as
// part of the entry `execute` already writes, before the operation is marked done); then
//   * the CLI appends the `ceremony.execute` record itself when the log is free and marks the
//     entry audited;
//   * otherwise `serve` (`spawn_ledger_auditor`) appends it when it next reads the ledger and
//     marks it audited.
// A crash between the append and the mark may record an entry twice, never zero times.

/// How often `serve` looks for executed ceremonies not yet in the audit log.
pub(crate) const LEDGER_AUDIT_EVERY: Duration = Duration::from_secs(2);

/// The `ceremony.execute` audit record of ledger entry `id`: the full transcript (request and
/// signatures), the approvers that counted, what it produced. Never a token or a PIN.
fn ceremony_event(id: &str, e: &LedgerEntry, by: &str) -> rootseal_audit::Event {
    let transcript = e
        .transcript
        .as_deref()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .unwrap_or(serde_json::Value::Null);
    rootseal_audit::Event::new("ceremony.execute")
        .with("id", id)
        .with("op", e.op.clone())
        .with("request_sha256", e.request_sha256.clone())
        .with("approvers", e.approvers.clone())
        .with("root", e.root_id.clone())
        .with("started", e.started)
        .with("finished", e.finished)
        .with("outcome", e.outcome.clone())
        .with("recorded_by", by)
        .with("transcript", transcript)
}

/// Marks the ledger entries `ids` audited (check-and-set, retried on a conflict).
async fn mark_audited(kr: &Keyring, ids: &[String]) -> Result<(), String> {
    for _ in 0..8 {
        let (b, v) = kr
            .open_record(records::LEDGER)
            .await
            .map_err(|e| explain(&e))?
            .ok_or("no ledger")?;
        let mut ledger = Ledger::parse(&b).map_err(|e| e.0)?;
        for id in ids {
            if let Some(e) = ledger.executed.get_mut(id) {
                e.audited = true;
            }
        }
        match kr
            .seal_record(records::LEDGER, &ledger.to_bytes().map_err(|e| e.0)?, v)
            .await
        {
            Ok(_) => return Ok(()),
            Err(KeyringError::Conflict) => continue,
            Err(e) => return Err(explain(&e)),
        }
    }
    Err("the ledger kept changing".into())
}

/// Appends `ev` to the audit log of `cfg` as the `cli` writer: false when the log is off,
/// held by a server, or failing (said on stderr).
async fn audit_direct(cfg: &Config, hsm: &Hsm, ev: rootseal_audit::Event) -> bool {
    let audit_cfg = cfg.audit.audit_config();
    if audit_cfg.mode == rootseal_audit::Mode::Off {
        return false;
    }
    match crate::audit::open(&audit_cfg, hsm, "cli").await {
        Ok((log, _, _)) => {
            let ok = log.record(ev).await.is_ok();
            crate::audit::close(&log, "cli").await;
            ok
        }
        Err(e) => {
            eprintln!("note: the audit log is not writable from here ({e})");
            false
        }
    }
}

/// After `execute`: the ceremony's audit record, now or (log held by `serve`) by `serve`.
async fn audit_ceremony(cfg: &Config, kr: &Keyring, id: &str) {
    let entry = match kr.open_record(records::LEDGER).await {
        Ok(Some((b, _))) => Ledger::parse(&b)
            .ok()
            .and_then(|l| l.executed.get(id).cloned()),
        _ => None,
    };
    let Some(entry) = entry else { return };
    if audit_direct(cfg, kr.hsm(), ceremony_event(id, &entry, "cli")).await {
        if let Err(e) = mark_audited(kr, &[id.to_owned()]).await {
            eprintln!("note: ceremony {id} is in the audit log but not marked so in the ledger ({e}): serve may record it again");
        }
    } else if cfg.audit.audit_config().mode != rootseal_audit::Mode::Off {
        eprintln!(
            "note: ceremony {id}'s transcript is in the ledger; the running server writes its audit record within {}s",
            LEDGER_AUDIT_EVERY.as_secs()
        );
    }
}

/// In `serve`: every [`LEDGER_AUDIT_EVERY`], appends the `ceremony.execute` record of each
/// executed ceremony the audit log does not have yet (the CLI could not: the server holds the
/// log) and marks it audited in the ledger.
pub(crate) fn spawn_ledger_auditor(kr: Keyring, log: rootseal_audit::AuditLog) {
    tokio::spawn(async move {
        loop {
            let pending: Vec<(String, LedgerEntry)> = match kr.open_record(records::LEDGER).await {
                Ok(Some((b, _))) => match Ledger::parse(&b) {
                    Ok(l) => l
                        .executed
                        .into_iter()
                        .filter(|(_, e)| e.state == LedgerState::Done && !e.audited)
                        .collect(),
                    Err(e) => {
                        tracing::error!(error = %e, "ceremony ledger unreadable");
                        Vec::new()
                    }
                },
                Ok(None) => Vec::new(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the ceremony ledger");
                    Vec::new()
                }
            };
            let mut done = Vec::new();
            for (id, e) in &pending {
                match log.record(ceremony_event(id, e, "server")).await {
                    Ok(_) => done.push(id.clone()),
                    Err(err) => {
                        tracing::error!(error = %err, ceremony = %id, "cannot audit a ceremony")
                    }
                }
            }
            if !done.is_empty() {
                if let Err(e) = mark_audited(&kr, &done).await {
                    tracing::error!(error = %e, "cannot mark ceremonies audited");
                }
            }
            tokio::time::sleep(LEDGER_AUDIT_EVERY).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// tokens

async fn open_keyring(cfg: &Config) -> Result<Keyring, String> {
    let hsm = open_hsm(cfg).await?;
    let store = open_store(cfg).await?;
    Keyring::open(hsm, store).await.map_err(|e| explain(&e))
}

async fn token_store(kr: &Keyring) -> Result<(TokenStore, u64), String> {
    match kr
        .open_record(records::TOKENS)
        .await
        .map_err(|e| explain(&e))?
    {
        Some((b, v)) => Ok((TokenStore::parse(&b).map_err(|e| e.0)?, v)),
        None => Ok((TokenStore::default(), 0)),
    }
}

/// Issues a token over an open keyring (also `vault seal-config`): returns it, shown once.
pub(crate) async fn issue_token(
    kr: &Keyring,
    req: GrantRequest,
) -> Result<(secrecy::SecretString, String), String> {
    for _ in 0..8 {
        let (mut ts, v) = token_store(kr).await?;
        let rnd = zeroize::Zeroizing::new(kr.random_bytes(40).await.map_err(|e| explain(&e))?);
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(rnd.get(..32).unwrap_or(&[0u8; 32]));
        let mut acc = [0u8; 8];
        acc.copy_from_slice(rnd.get(32..40).unwrap_or(&[0u8; 8]));
        let token = ts
            .issue(req.clone(), &secret, &acc, now())
            .map_err(|e| e.0)?;
        match kr
            .seal_record(records::TOKENS, &ts.to_bytes().map_err(|e| e.0)?, v)
            .await
        {
            Ok(_) => return Ok((token, jcs::hex(&acc))),
            Err(KeyringError::Conflict) => continue,
            Err(e) => return Err(explain(&e)),
        }
    }
    Err("the token store kept changing; try again".into())
}

/// With governance on, `token create` and `token revoke` are Crypto Officer actions: the
/// ceremony to run instead.
fn token_ceremony_hint(cfg: &Config, what: &str) -> CliResult {
    if cfg.governance.enabled {
        return Err(format!(
            "governance is on in {}: issuing and revoking API tokens is a Crypto Officer action, a ceremony: \
             `rootseal ceremony propose --op {what} {} --requester NAME --out FILE`, approved by a CO \
             (`rootseal ceremony approve FILE --operator CO --signer URI`), then `rootseal ceremony execute FILE`{}",
            cfg.source.display(),
            if what == "token.create" {
                "--param role=user --param keys=K1,K2 --param ops=encrypt,decrypt [--param ttl_secs=N] [--param name=NAME]"
            } else {
                "--param who=ACCESSOR_OR_NAME"
            },
            if what == "token.create" {
                " (it prints the token once)"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

/// `rootseal token create`: with governance off (single operator), issues directly; with
/// governance on, refuses and names the `token.create` ceremony.
pub async fn token_create(a: &TokenCreateArgs) -> CliResult {
    let cfg = load(&a.config.config)?;
    token_ceremony_hint(&cfg, "token.create")?;
    let role = match a.role.as_str() {
        "user" => Role::User,
        "co" => Role::Co,
        r => return Err(format!("--role {r:?}: user or co")),
    };
    let ops = a
        .ops
        .iter()
        .map(|o| TokenOp::parse(o).ok_or_else(|| format!("--ops: unknown operation {o:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let ttl = a.ttl.as_deref().map(parse_duration).transpose()?;
    let kr = open_keyring(&cfg).await?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", a.role, a.keys.join("+")));
    let (token, accessor) = issue_token(
        &kr,
        GrantRequest {
            name: name.clone(),
            role,
            keys: a.keys.clone(),
            ops,
            ttl_secs: ttl,
            ceremony: None,
        },
    )
    .await?;
    eprintln!("Token {name} (accessor {accessor}): shown once, only its SHA-256 is stored");
    println!("{}", token.expose_secret());
    token_audit(
        &cfg,
        &kr,
        rootseal_audit::Event::new("token.create")
            .with("accessor", accessor)
            .with("name", name)
            .with("role", a.role.clone())
            .with("keys", a.keys.clone())
            .with("ops", a.ops.clone())
            .with("ttl_secs", ttl),
    )
    .await;
    Ok(())
}

/// The audit record of a direct (governance off) token create or revoke. When a server holds
/// the log it is not written here; the server's store audit records the changed token record
/// (`kek.seen`, its SHA-256) when it next reads it.
async fn token_audit(cfg: &Config, kr: &Keyring, ev: rootseal_audit::Event) {
    let kind = ev.kind().to_owned();
    if !audit_direct(cfg, kr.hsm(), ev).await
        && cfg.audit.audit_config().mode != rootseal_audit::Mode::Off
    {
        eprintln!("note: {kind} is not in the audit log (a server holds it; it records the token store's change as kek.seen)");
    }
}

/// Issues the seal token of `vault seal-config` with governance off: a User token for
/// encrypt and decrypt on `key` only.
pub(crate) async fn issue_seal_token(
    cfg: &Config,
    key: &str,
) -> Result<secrecy::SecretString, String> {
    let kr = open_keyring(cfg).await?;
    if let Err(KeyringError::NotFound) = kr.key_info(key).await {
        eprintln!(
            "note: there is no key {key:?} yet: create it (`rootseal key create {key}`) before OpenBao starts, unless the server creates keys on first use"
        );
    }
    let (token, accessor) = issue_token(
        &kr,
        GrantRequest {
            name: format!("seal-{key}"),
            role: Role::User,
            keys: vec![key.to_owned()],
            ops: vec![TokenOp::Encrypt, TokenOp::Decrypt],
            ttl_secs: None,
            ceremony: None,
        },
    )
    .await?;
    eprintln!("Issued seal token seal-{key} (accessor {accessor}): encrypt and decrypt on {key} only; revoke it with `rootseal token revoke {accessor}`");
    Ok(token)
}

/// `rootseal token list`.
pub async fn token_list(config: &Path) -> CliResult {
    let cfg = load(config)?;
    let kr = open_keyring(&cfg).await?;
    let (ts, _) = token_store(&kr).await?;
    for g in &ts.tokens {
        println!(
            "{} {} role={} keys={} ops={} expires={} {}{}",
            g.accessor,
            g.name,
            g.role,
            g.keys.join(","),
            g.ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(","),
            g.expires.map_or("never".to_owned(), |e| e.to_string()),
            if g.revoked { "REVOKED" } else { "active" },
            g.ceremony
                .as_deref()
                .map(|c| format!(" ceremony={c}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Revokes every active grant `pick` selects; returns how many.
async fn revoke_where(
    kr: &Keyring,
    pick: impl Fn(&rootseal_governance::TokenGrant) -> bool,
) -> Result<usize, String> {
    for _ in 0..8 {
        let (mut ts, v) = token_store(kr).await?;
        let mut n = 0;
        for g in &mut ts.tokens {
            if !g.revoked && pick(g) {
                g.revoked = true;
                n += 1;
            }
        }
        if n == 0 {
            return Ok(0);
        }
        match kr
            .seal_record(records::TOKENS, &ts.to_bytes().map_err(|e| e.0)?, v)
            .await
        {
            Ok(_) => return Ok(n),
            Err(KeyringError::Conflict) => continue,
            Err(e) => return Err(explain(&e)),
        }
    }
    Err("the token store kept changing; try again".into())
}

/// `rootseal token revoke WHO`: direct with governance off; with governance on, refuses and
/// names the `token.revoke` ceremony.
pub async fn token_revoke(config: &Path, who: &str) -> CliResult {
    let cfg = load(config)?;
    token_ceremony_hint(&cfg, "token.revoke")?;
    let kr = open_keyring(&cfg).await?;
    let n = revoke_where(&kr, |g| g.accessor == who || g.name == who).await?;
    if n == 0 {
        return Err(format!("no active token with accessor or name {who:?}"));
    }
    println!("Revoked {n} token(s) {who}");
    token_audit(
        &cfg,
        &kr,
        rootseal_audit::Event::new("token.revoke")
            .with("who", who)
            .with("revoked", n),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("720h"), Ok(720 * 3600));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("7d"), Ok(7 * 86400));
        assert_eq!(parse_duration("5"), Ok(5));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5y").is_err());
    }
}

//! The command line: `rootseal dev`, `serve`, `init`, `root`, `key`, `vault`, `openbao`, `bulk`,
//! `audit`.
//!
//! `main` parses arguments, does what must happen while the process has one thread (SoftHSM2's
//! `SOFTHSM2_CONF` for `dev`), then starts the tokio runtime. Secrets never come from argv except
//! the `dev` flags, whose values are development-only and printed anyway.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod admin;
mod audit;
mod bulk;
mod clock_check;
mod dev;
mod governance;
mod lifecycle;

/// rootseal: hardware-rooted keys for HashiCorp Vault and OpenBao.
#[derive(Debug, Parser)]
#[command(name = "rootseal", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a development server on an embedded SoftHSM2 token (like `bao server -dev`).
    Dev(dev::DevArgs),
    /// Run the production server from a rootseal.toml.
    Serve(ServeArgs),
    /// Create the L0 root (by the Security Officer) and its MAC key on the HSM token; changes
    /// nothing if one exists.
    Init(InitArgs),
    /// Root (L0) lifecycle.
    #[command(subcommand)]
    Root(RootCmd),
    /// Level 1 key lifecycle.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Vault/OpenBao configuration helpers.
    #[command(subcommand)]
    Vault(VaultCmd),
    /// OpenBao KMS plugin.
    #[command(subcommand)]
    Openbao(OpenbaoCmd),
    /// Bulk seal and unseal through a running server (stdin to stdout)
    #[command(subcommand)]
    Bulk(bulk::BulkCmd),
    /// Operator signing keys and the first registry.
    #[command(subcommand)]
    Operator(governance::OperatorCmd),
    /// Signed m-of-n ceremonies for Security Officer actions.
    #[command(subcommand)]
    Ceremony(governance::CeremonyCmd),
    /// Scoped API tokens (the User and CO roles over HTTP).
    #[command(subcommand)]
    Token(governance::TokenCmd),
    /// The tamper-evident audit log: verify (offline), public-key, prove, cosign.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
}

/// `--config FILE`.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Path of rootseal.toml.
    #[arg(long, short = 'c', env = "ROOTSEAL_CONFIG")]
    pub config: PathBuf,
}

/// The HSM's Security Officer PIN: `--so-pin-file FILE`, or `ROOTSEAL_HSM_SO_PIN` in the
/// environment. Never from rootseal.toml, never kept by `serve`.
#[derive(Debug, Args)]
pub struct SoPinArg {
    /// File holding the HSM's Security Officer PIN (one line). Default: the
    /// ROOTSEAL_HSM_SO_PIN environment variable.
    #[arg(long, value_name = "FILE")]
    pub so_pin_file: Option<PathBuf>,
}

/// `rootseal init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// With governance on: the first operator registry (JSON `{"operators":[…]}`); the root is
    /// then made by the root.init ceremony.
    #[arg(long, value_name = "FILE")]
    operators: Option<PathBuf>,
    #[command(flatten)]
    so_pin: SoPinArg,
}

/// `rootseal serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// **Security warning**: serve from a root that fails the custody check (made by rootseal
    /// 0.1.0: a holder of the User PIN could read its L1 keys). Run `rootseal root rotate` instead.
    #[arg(long)]
    allow_weak_root: bool,
}

#[derive(Debug, Subcommand)]
enum RootCmd {
    /// Show the roots on the token.
    Status(ConfigArg),
    /// Re-seal every L1 under a new L0 (made by the Security Officer), then destroy the old L0.
    /// Safe to run again after an interruption: it finishes the job. Moves a root made by
    /// rootseal 0.1.0 to a hardened one.
    Rotate(RotateRootArgs),
}

#[derive(Debug, Args)]
struct RotateRootArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    so_pin: SoPinArg,
    /// Seconds to wait before the final pass, so that a record sealed under the old root just
    /// before the rotation started is stored and moved too.
    #[arg(long, default_value_t = 5)]
    grace_secs: u64,
}

#[derive(Debug, Subcommand)]
enum KeyCmd {
    /// Add a new version to key NAME.
    Rotate {
        /// The key's name.
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Create key NAME (no-op if it exists).
    Create {
        /// The key's name.
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show key NAME.
    Show {
        /// The key's name.
        name: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List keys.
    List(ConfigArg),
    /// Mark version N of key NAME compromised (it never encrypts nor decrypts again); rotates
    /// the key when N is its latest version.
    Compromise {
        /// The key's name.
        name: String,
        /// The compromised version.
        #[arg(long)]
        version: u32,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, Subcommand)]
enum VaultCmd {
    /// Print a `seal "transit"` stanza for Vault/OpenBao pointing at this rootseal.
    SealConfig(admin::SealConfigArgs),
}

#[derive(Debug, Subcommand)]
enum OpenbaoCmd {
    /// Copy this binary into DIR and print the plugin_directory, plugin "kms" and seal stanzas.
    KmsConfig(admin::KmsConfigArgs),
    /// The KMS plugin server (started by OpenBao, never by hand).
    KmsPlugin,
    /// Copy this binary into DIR and print the bao commands that register and mount it as a
    /// secrets engine, and a policy for an application.
    SecretsConfig(SecretsConfigArgs),
    /// The secrets-engine plugin server (started by OpenBao, never by hand; OpenBao runs the
    /// binary without arguments and the handshake environment selects this).
    SecretsPlugin,
}

/// `rootseal openbao secrets-config`.
#[derive(Debug, Args)]
pub struct SecretsConfigArgs {
    /// OpenBao's plugin_directory; this binary is copied into it.
    #[arg(long)]
    plugin_dir: PathBuf,
}

/// Which plugin the handshake environment asks for, when the binary runs without arguments
/// (how OpenBao executes a registered secrets plugin).
fn plugin_from_env() -> Option<OpenbaoCmd> {
    if std::env::args_os().len() > 1 {
        return None;
    }
    if crate::backend::started_as_backend_plugin() {
        Some(OpenbaoCmd::SecretsPlugin)
    } else if std::env::var_os(crate::kms::HANDSHAKE.cookie_key).is_some() {
        Some(OpenbaoCmd::KmsPlugin)
    } else {
        None
    }
}

/// Runs the CLI.
pub fn main() -> ExitCode {
    let cli = match plugin_from_env() {
        Some(plugin) => Cli {
            command: Command::Openbao(plugin),
        },
        None => Cli::parse(),
    };
    // The plugins are started by OpenBao with their own handshake rules, exit codes and
    // logging, and must set up their lifetime watcher before any other thread exists (the
    // runtime's).
    if let Command::Openbao(OpenbaoCmd::KmsPlugin) = cli.command {
        return crate::kms::kms_plugin_main();
    }
    if let Command::Openbao(OpenbaoCmd::SecretsPlugin) = cli.command {
        return crate::backend::secrets_plugin_main();
    }
    crate::telemetry::init();
    // Things that must happen while the process has one thread.
    let prepared = match &cli.command {
        Command::Dev(args) => match dev::prepare(args) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
        Command::Audit(audit::AuditCmd::PublicKey(a)) => {
            if let Some(d) = &a.data_dir {
                // The dev token's SoftHSM2 directory, before the module loads (one thread).
                std::env::set_var("SOFTHSM2_CONF", d.join("softhsm").join("softhsm2.conf"));
            }
            None
        }
        _ => None,
    };
    // Offline commands: no runtime, their own exit codes.
    match &cli.command {
        Command::Audit(audit::AuditCmd::Verify(a)) => return audit::verify(a),
        Command::Audit(audit::AuditCmd::Prove(a)) => return finish(audit::prove(a)),
        Command::Audit(audit::AuditCmd::Cosign(a)) => return finish(audit::cosign(a)),
        _ => {}
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Dev(_) => match prepared {
                Some(p) => dev::run(p).await,
                None => Err("internal: dev not prepared".into()),
            },
            Command::Serve(a) => admin::serve(&a.config.config, a.allow_weak_root).await,
            Command::Init(a) => {
                admin::init(&a.config.config, &a.so_pin, a.operators.as_deref()).await
            }
            Command::Root(RootCmd::Status(c)) => admin::root_status(&c.config).await,
            Command::Root(RootCmd::Rotate(a)) => {
                admin::root_rotate(&a.config.config, &a.so_pin, a.grace_secs).await
            }
            Command::Key(KeyCmd::Rotate { name, config }) => {
                admin::key_rotate(&config.config, &name).await
            }
            Command::Key(KeyCmd::Create { name, config }) => {
                admin::key_create(&config.config, &name).await
            }
            Command::Key(KeyCmd::Show { name, config }) => {
                admin::key_show(&config.config, &name).await
            }
            Command::Key(KeyCmd::List(c)) => admin::key_list(&c.config).await,
            Command::Key(KeyCmd::Compromise {
                name,
                version,
                config,
            }) => lifecycle::key_compromise(&config.config, &name, version).await,
            Command::Vault(VaultCmd::SealConfig(a)) => admin::seal_config(&a).await,
            Command::Openbao(OpenbaoCmd::KmsConfig(a)) => admin::kms_config(&a),
            Command::Openbao(OpenbaoCmd::KmsPlugin | OpenbaoCmd::SecretsPlugin) => Ok(()),
            Command::Openbao(OpenbaoCmd::SecretsConfig(a)) => {
                crate::backend::secrets_config_command(&a.plugin_dir)
                    .map(|out| println!("{out}"))
                    .map_err(|e| e.to_string())
            }
            Command::Bulk(c) => bulk::run(c).await,
            Command::Operator(governance::OperatorCmd::Key { signer, algorithm }) => {
                governance::operator_key(&signer, &algorithm).await
            }
            Command::Operator(governance::OperatorCmd::Enroll(a)) => {
                governance::operator_enroll(&a).await
            }
            Command::Ceremony(governance::CeremonyCmd::Propose(a)) => governance::propose(&a).await,
            Command::Ceremony(governance::CeremonyCmd::Approve {
                file,
                operator,
                signer,
            }) => governance::approve(&file, &operator, &signer).await,
            Command::Ceremony(governance::CeremonyCmd::Show { file }) => governance::show(&file),
            Command::Ceremony(governance::CeremonyCmd::Execute {
                file,
                config,
                so_pin,
            }) => governance::execute(&file, &config.config, &so_pin).await,
            Command::Token(governance::TokenCmd::Create(a)) => governance::token_create(&a).await,
            Command::Token(governance::TokenCmd::List(c)) => {
                governance::token_list(&c.config).await
            }
            Command::Token(governance::TokenCmd::Revoke { who, config }) => {
                governance::token_revoke(&config.config, &who).await
            }
            Command::Audit(audit::AuditCmd::PublicKey(a)) => audit::public_key(&a).await,
            Command::Audit(_) => Ok(()),
        }
    });
    finish(result)
}

fn finish(result: CliResult) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// A CLI error: a message for a human.
pub type CliResult = Result<(), String>;

/// The environment variable that may hold the Security Officer PIN.
pub const SO_PIN_ENV: &str = "ROOTSEAL_HSM_SO_PIN";

/// Reads the Security Officer PIN from `--so-pin-file` or [`SO_PIN_ENV`]. Errors never hold it.
pub(crate) fn so_pin(arg: &SoPinArg) -> Result<secrecy::SecretString, String> {
    if let Some(path) = &arg.so_pin_file {
        let raw = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --so-pin-file {}: {e}", path.display()))?,
        );
        let pin = raw.trim_end_matches(['\r', '\n']);
        if pin.is_empty() {
            return Err(format!("--so-pin-file {} is empty", path.display()));
        }
        return Ok(secrecy::SecretString::from(pin.to_owned()));
    }
    match std::env::var(SO_PIN_ENV) {
        Ok(pin) if !pin.is_empty() => Ok(secrecy::SecretString::from(pin)),
        _ => Err(format!(
            "this step needs the HSM's Security Officer PIN: give --so-pin-file FILE or set {SO_PIN_ENV}"
        )),
    }
}

/// A keyring error for the operator at the terminal: its message and, for an opaque failure,
/// its internal cause (never a secret), which the HTTP face keeps for its log.
pub(crate) fn explain(e: &rootseal_hsm::KeyringError) -> String {
    match e.cause() {
        Some(c) => format!("{e} ({c})"),
        None => e.to_string(),
    }
}

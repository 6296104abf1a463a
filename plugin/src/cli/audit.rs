//! `rootseal audit`: `verify` (offline: no HSM, no server), `public-key`, `prove`, `cosign`.
//!
//! `verify` exits 0 when the log is intact, 10 when a record was changed, 11 when records are
//! missing, 12 when the log is inconsistent with the trusted checkpoint (a fork or a rollback),
//! 13 when a signature is bad or by another key, and 1 when it cannot run (unreadable files); it
//! prints the first bad sequence number.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use clap::{Args, Subcommand, ValueEnum};
use rootseal_audit::checkpoint::Checkpoint;
use rootseal_audit::note::{self, Note};
use rootseal_audit::{merkle, proof, Options, Verdict};

use super::CliResult;

/// `rootseal audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify an audit log offline: every record's sequence, the tree, every checkpoint's
    /// signature and their consistency (exit 0 intact, 10 changed, 11 missing, 12 inconsistent
    /// with the trusted checkpoint, 13 bad signature).
    Verify(VerifyArgs),
    /// Print the audit key's public key (PEM, or the signed-note verifier key).
    PublicKey(PublicKeyArgs),
    /// Print an RFC 6962 inclusion proof (`--seq N`) or consistency proof (`--consistency SIZE1
    /// SIZE2`) from a log; `audit verify --proof FILE` checks it.
    Prove(ProveArgs),
    /// Add a witness cosignature (c2sp.org/tlog-cosignature) by an Auditor's Ed25519 key to a
    /// checkpoint; prints the cosigned checkpoint.
    Cosign(CosignArgs),
}

/// `rootseal audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audit log.
    #[arg(long, value_name = "FILE")]
    log: PathBuf,
    /// The audit key (PEM from `audit public-key`, or its note verifier key).
    #[arg(long, value_name = "FILE")]
    public_key: PathBuf,
    /// A checkpoint kept elsewhere (a witness copy): the log must contain its tree.
    #[arg(long, value_name = "FILE")]
    trusted_checkpoint: Option<PathBuf>,
    /// A proof printed by `audit prove`, checked against the verified log.
    #[arg(long, value_name = "FILE")]
    proof: Option<PathBuf>,
}

/// Output form of `audit public-key`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KeyFormat {
    /// PEM SubjectPublicKeyInfo (for `audit verify`, OpenSSL).
    Pem,
    /// The signed-note verifier key `<name>+<key id>+<base64 key>`.
    Note,
}

/// `rootseal audit public-key`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("src").required(true).args(["config", "data_dir"])))]
pub struct PublicKeyArgs {
    /// Path of rootseal.toml.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// A `rootseal dev` data directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Output form.
    #[arg(long, value_enum, default_value = "pem")]
    format: KeyFormat,
}

/// `rootseal audit prove`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["seq", "consistency"])))]
pub struct ProveArgs {
    /// The audit log.
    #[arg(long, value_name = "FILE")]
    log: PathBuf,
    /// Prove that record N is in the tree.
    #[arg(long, value_name = "N")]
    seq: Option<u64>,
    /// The tree size for `--seq` (default: the log's last checkpoint).
    #[arg(long, value_name = "SIZE", requires = "seq")]
    size: Option<u64>,
    /// Prove that the tree of SIZE1 records is a prefix of the tree of SIZE2.
    #[arg(long, num_args = 2, value_names = ["SIZE1", "SIZE2"])]
    consistency: Option<Vec<u64>>,
}

/// `rootseal audit cosign`.
#[derive(Debug, Args)]
pub struct CosignArgs {
    /// The checkpoint (from `GET /v1/rootseal/audit/checkpoint`).
    #[arg(long, value_name = "FILE")]
    checkpoint: PathBuf,
    /// The Auditor's Ed25519 private key, PKCS#8 PEM or DER (`openssl genpkey -algorithm
    /// ed25519`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The witness name in the cosignature line (e.g. `auditor.example/rootseal`).
    #[arg(long)]
    name: String,
    /// Check first that the checkpoint is signed by this audit key (recommended).
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_text(path: &Path) -> Result<String, String> {
    String::from_utf8(read(path)?).map_err(|_| format!("{} is not UTF-8", path.display()))
}

fn read_key(path: &Path) -> Result<[u8; 32], String> {
    note::parse_public_key(&read_text(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// `rootseal audit verify`: the exit code is the verdict's.
pub fn verify(a: &VerifyArgs) -> ExitCode {
    match run_verify(a) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_verify(a: &VerifyArgs) -> Result<u8, String> {
    let data = read(&a.log)?;
    let key = read_key(&a.public_key)?;
    let trusted = a.trusted_checkpoint.as_deref().map(read_text).transpose()?;
    let r = rootseal_audit::verify(
        &data,
        &key,
        &Options {
            trusted: trusted.as_deref(),
            keep_leaves: trusted.is_some() || a.proof.is_some(),
        },
    )
    .map_err(|e| e.to_string())?;
    if r.verdict != Verdict::Intact {
        println!("FAILED ({}): {}", r.verdict.exit_code(), r.message);
        if let Some(s) = r.first_bad_seq {
            println!("first bad seq: {s}");
        }
        return Ok(r.verdict.exit_code());
    }
    println!(
        "OK: {} records, {} checkpoints verified{}",
        r.records,
        r.checkpoints,
        if trusted.is_some() {
            ", consistent with the trusted checkpoint"
        } else {
            ""
        }
    );
    if r.unsigned_tail > 0 {
        println!(
            "note: the last {} records are not yet covered by a checkpoint (the next one signs them)",
            r.unsigned_tail
        );
    }
    if let Some(p) = &a.proof {
        let text = read_text(p)?;
        let pr: proof::Proof = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not an `audit prove` proof: {e}", p.display()))?;
        let covered = r.records - r.unsigned_tail;
        let roots = match proof::check(&pr) {
            Ok(roots) => roots,
            Err(e) => {
                println!("FAILED (10): {e}");
                return Ok(Verdict::Changed.exit_code());
            }
        };
        for (size, root) in roots {
            if size > covered {
                println!("FAILED (11): the proof's tree of {size} records is not covered by a checkpoint in the log ({covered})");
                return Ok(Verdict::Missing.exit_code());
            }
            let have = merkle::root_of(&r.leaves[..size as usize]);
            if have != root {
                println!("FAILED (12): the proof's tree of {size} records is not this log's");
                return Ok(Verdict::Inconsistent.exit_code());
            }
        }
        println!("proof OK");
    }
    Ok(0)
}

/// `rootseal audit public-key`.
pub async fn public_key(a: &PublicKeyArgs) -> CliResult {
    let cfg = match (&a.config, &a.data_dir) {
        (Some(c), _) => rootseal_vault_config::Config::load(c)
            .map_err(|e| e.to_string())?
            .hsm_config(),
        (None, Some(d)) => super::dev::hsm_config_for(d)?,
        (None, None) => return Err("give --config FILE or --data-dir DIR".into()),
    };
    let hsm = tokio::task::spawn_blocking(move || rootseal_hsm::Hsm::open(cfg))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("HSM: {e}"))?;
    let key = hsm
        .audit_public_key()
        .await
        .map_err(|e| format!("HSM: {e}"))?
        .ok_or(
            "audit key missing: the token predates the audit log; run `rootseal root rotate` (or \
             `rootseal init`) as the Security Officer to create it",
        )?;
    match a.format {
        KeyFormat::Pem => print!("{}", note::public_key_pem(&key)),
        KeyFormat::Note => println!(
            "{}",
            note::verifier_key(&crate::audit::key_name(&hsm.identity().serial), &key)
        ),
    }
    Ok(())
}

/// `rootseal audit prove`.
pub fn prove(a: &ProveArgs) -> CliResult {
    let data = read(&a.log)?;
    let mut leaves = Vec::new();
    let mut last_cp = 0u64;
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match rootseal_audit::record::parse_line(line) {
            Ok(rootseal_audit::record::Line::Record { .. }) => leaves.push(merkle::leaf_hash(line)),
            Ok(rootseal_audit::record::Line::Checkpoint { note, .. }) => {
                if let Ok((cp, _)) = Checkpoint::parse_note(&note) {
                    last_cp = cp.size;
                }
            }
            Err(e) => return Err(format!("{}: {e}", a.log.display())),
        }
    }
    let p = match (a.seq, &a.consistency) {
        (Some(seq), _) => {
            let size = a.size.unwrap_or(last_cp);
            proof::inclusion(&leaves, seq, size).ok_or(format!(
                "no record {seq} in a tree of {size} records (the log holds {}, its last checkpoint {last_cp})",
                leaves.len()
            ))?
        }
        (None, Some(c)) => match c.as_slice() {
            [s1, s2] => proof::consistency(&leaves, *s1, *s2).ok_or(format!(
                "no consistency proof from {s1} to {s2} (the log holds {} records)",
                leaves.len()
            ))?,
            _ => return Err("--consistency takes SIZE1 SIZE2".into()),
        },
        (None, None) => return Err("give --seq N or --consistency SIZE1 SIZE2".into()),
    };
    println!("{}", serde_json::to_string(&p).map_err(|e| e.to_string())?);
    Ok(())
}

/// `rootseal audit cosign`.
pub fn cosign(a: &CosignArgs) -> CliResult {
    let text = read_text(&a.checkpoint)?;
    let (_, mut n) =
        Checkpoint::parse_note(&text).map_err(|e| format!("{}: {e}", a.checkpoint.display()))?;
    if let Some(pk) = &a.public_key {
        if note::check_ed25519(&n, &read_key(pk)?) != note::KeyVerdict::Valid {
            return Err(format!(
                "{} is not signed by the audit key {}: not cosigning",
                a.checkpoint.display(),
                pk.display()
            ));
        }
    }
    if a.name.is_empty() || a.name.contains([' ', '+', '\n']) {
        return Err("--name must be non-empty, without spaces or '+'".into());
    }
    let raw = zeroize::Zeroizing::new(read(&a.key)?);
    let der = match std::str::from_utf8(&raw) {
        Ok(s) if s.contains("-----BEGIN PRIVATE KEY-----") => {
            use base64::Engine as _;
            let b64: String = s
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .concat();
            zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|_| format!("{}: bad PEM", a.key.display()))?,
            )
        }
        _ => raw.clone(),
    };
    let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|_| format!("{}: not an Ed25519 PKCS#8 private key", a.key.display()))?;
    let public: [u8; 32] = kp
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| "unexpected public key length".to_owned())?;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let sig = kp.sign(&note::cosignature_message(&n.text, ts));
    n.signatures
        .push(note::cosignature(&a.name, &public, ts, sig.as_ref()));
    print!("{}", Note::render(&n));
    Ok(())
}

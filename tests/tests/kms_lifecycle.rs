//! The KMS plugin's unseal key over its NIST SP 800-57 lifecycle, against real OpenBao 2.7.2 and
//! real SoftHSM2 (issue 13: "the KMS plugin's seal key refuses encrypt after protect-stop but
//! OpenBao still unseals (decrypt), and a warning says so").
//!
//! Time is moved by the plugin's injected clock, never by sleeping: OpenBao executes the
//! `rootseal-test-hooks` binary (`cargo build -p rootseal --features test-hooks`, copied next to
//! `rootseal` by `scripts/test`), whose keyring reads the system time plus
//! `ROOTSEAL_TEST_CLOCK_OFFSET_SECS` (`plugin/src/kms/backend.rs`, `seal_clock`). Each restart of
//! OpenBao starts a new plugin process with another offset.
//!
//! The unseal key `openbao-unseal` is class `seal-kek` with the defaults (OUP 1 year, RUP OUP + 3
//! years):
//! * now: OpenBao initialises and unseals, a KV secret is written;
//! * 400 days on (past protect-stop, before deactivation): OpenBao still unseals (Decrypt) and
//!   reads the secret; the plugin logs the `seal_key_warnings()` warning; a recovery-key rekey,
//!   which makes OpenBao encrypt the new recovery key with the seal, fails because the plugin
//!   refuses `Encrypt` naming the protect-stop, and the plugin's audit log records the refusal;
//! * 1500 days on (past deactivation): OpenBao stays sealed, the plugin refusing `Decrypt` with
//!   "key version 1 is deactivated" in OpenBao's log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rootseal_e2e::{bao, kms_rootseal_toml, kms_stanzas, rootseal_bin, wait_no_plugin, OpenBao};
use rootseal_testkit::TestToken;

const UNSEAL_TIMEOUT: Duration = Duration::from_secs(60);
const DAY: u64 = 86_400;
/// Past the default protect-stop (1 year = 365 days) and well before deactivation (4 years).
const PAST_PROTECT_STOP: u64 = 400 * DAY;
/// Past the default deactivation (OUP 1 year + 3 years = 1460 days).
const PAST_DEACTIVATION: u64 = 1500 * DAY;
/// The plugin's test-hook clock offset (`plugin/src/kms/backend.rs`).
const OFFSET_ENV: &str = "ROOTSEAL_TEST_CLOCK_OFFSET_SECS";

/// The `rootseal` binary built with `--features test-hooks`: `$ROOTSEAL_TEST_HOOKS_BIN`, else
/// `rootseal-test-hooks` next to `rootseal` (what `scripts/test` builds).
fn test_hooks_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ROOTSEAL_TEST_HOOKS_BIN") {
        return PathBuf::from(p);
    }
    let bin = rootseal_bin().with_file_name("rootseal-test-hooks");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p rootseal --features test-hooks && \
         cp target/debug/rootseal target/debug/rootseal-test-hooks`, then `cargo build -p \
         rootseal` again), as scripts/test does",
        bin.display()
    );
    bin
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The plugin and seal stanzas of `kms_stanzas`, with the test-hooks binary as the plugin.
fn stanzas(dir: &Path, token: &TestToken, key_dir: &Path) -> String {
    let extra = kms_stanzas(dir, &token.module, &token.label, key_dir);
    let plugin = dir.join("plugins").join("rootseal");
    let release_sum = sha256(&plugin);
    std::fs::copy(test_hooks_bin(), &plugin).unwrap();
    let sum = sha256(&plugin);
    assert!(extra.contains(&release_sum));
    extra.replace(&release_sum, &sum)
}

/// Starts OpenBao with the plugin's clock `offset` seconds ahead (0: not moved).
fn start(server: &mut OpenBao, token: &TestToken, offset: u64) {
    let conf = token.dir.conf.display().to_string();
    let offset = offset.to_string();
    let mut env = vec![
        ("ROOTSEAL_HSM_PIN", token.pin.as_str()),
        ("SOFTHSM2_CONF", conf.as_str()),
    ];
    if offset != "0" {
        env.push((OFFSET_ENV, offset.as_str()));
    }
    server.start(&env);
}

fn stop(server: &mut OpenBao, plugins: &Path) {
    server.stop();
    if let Err(left) = wait_no_plugin(plugins, Duration::from_secs(10)) {
        panic!("plugin processes outlived OpenBao: {left:?}");
    }
}

/// `bao operator rotate-keys -target=recovery` to one new share: OpenBao seals the new recovery key
/// with the seal (`Encrypt`). Returns whether it succeeded, and its output.
fn rekey_recovery(server: &OpenBao, root: &str, recovery: &str) -> (bool, String) {
    let (ok, out, err) = bao(
        &server.addr,
        Some(root),
        &[
            "operator",
            "rotate-keys",
            "-target=recovery",
            "-init",
            "-key-shares=1",
            "-key-threshold=1",
            "-format=json",
        ],
    );
    assert!(ok, "rotate-keys -init failed: {err}\n{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nonce = v["nonce"].as_str().unwrap().to_owned();
    let (ok, out, err) = bao(
        &server.addr,
        Some(root),
        &[
            "operator",
            "rotate-keys",
            "-target=recovery",
            "-format=json",
            &format!("-nonce={nonce}"),
            recovery,
        ],
    );
    if !ok {
        // Leave no rekey in progress behind.
        let _ = bao(
            &server.addr,
            Some(root),
            &["operator", "rotate-keys", "-target=recovery", "-cancel"],
        );
    }
    (ok, format!("{out}\n{err}"))
}

fn read_secret(server: &OpenBao, root: &str) -> String {
    let (ok, out, err) = bao(
        &server.addr,
        Some(root),
        &["kv", "get", "-field=answer", "kv/lifecycle"],
    );
    assert!(ok, "kv get failed: {err}\n{}", server.log());
    out.trim().to_owned()
}

/// Starts `server` with the real clock, initialises it (one recovery share) and waits until the
/// plugin has unsealed it: (root token, recovery key).
fn start_and_init(server: &mut OpenBao, token: &TestToken) -> (String, String) {
    start(server, token, 0);
    assert!(
        server.wait_status(UNSEAL_TIMEOUT).is_some(),
        "OpenBao did not answer:\n{}",
        server.log()
    );
    let keys = server.init_recovery();
    assert!(
        server.wait_sealed(false, UNSEAL_TIMEOUT),
        "not unsealed after init:\n{}",
        server.log()
    );
    keys
}

#[test]
fn seal_key_past_protect_stop_still_unseals_refuses_encrypt_and_warns() {
    let token = TestToken::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(token.init_root());
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let extra = stanzas(tmp.path(), &token, &keys);
    let plugins = std::fs::canonicalize(tmp.path().join("plugins")).unwrap();
    let mut server = OpenBao::new(&tmp.path().join("bao"), &extra);

    // Now: init → unsealed; a secret to read back later; no lifecycle warning yet; the seal
    // encrypts (a recovery rekey works).
    let (root, recovery) = start_and_init(&mut server, &token);
    let (ok, _, err) = bao(
        &server.addr,
        Some(&root),
        &["secrets", "enable", "-path=kv", "kv"],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = bao(
        &server.addr,
        Some(&root),
        &["kv", "put", "kv/lifecycle", "answer=42"],
    );
    assert!(ok, "{err}");
    let (ok, out) = rekey_recovery(&server, &root, &recovery);
    assert!(
        ok,
        "recovery rekey failed before protect-stop: {out}\n{}",
        server.log()
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let recovery = v["keys_base64"][0].as_str().unwrap().to_owned();
    let log = server.log();
    assert!(!log.contains("past its protect-stop"), "{log}");
    stop(&mut server, &plugins);

    // 400 days on: past protect-stop. OpenBao still unseals (Decrypt) and reads its data.
    start(&mut server, &token, PAST_PROTECT_STOP);
    assert!(
        server.wait_sealed(false, UNSEAL_TIMEOUT),
        "not unsealed past protect-stop (decrypt must still work):\n{}",
        server.log()
    );
    assert_eq!(read_secret(&server, &root), "42");
    let log = server.log();
    assert!(
        log.contains("the unseal key's lifecycle clock is moved forward"),
        "the plugin is not a test-hooks build, or ignored {OFFSET_ENV}:\n{log}"
    );
    // The warning of `seal_key_warnings()`, at open and at unseal.
    assert!(
        log.contains("seal key openbao-unseal v1 is past its protect-stop")
            && log.contains("OpenBao still unseals with it"),
        "no lifecycle warning in the plugin's log:\n{log}"
    );
    // Encrypt is refused: OpenBao cannot seal a new recovery key.
    let (ok, out) = rekey_recovery(&server, &root, &recovery);
    let log = server.log();
    assert!(
        !ok,
        "recovery rekey succeeded past protect-stop: {out}\n{log}"
    );
    assert!(
        log.contains("seal call refused")
            && log.contains("Encrypt")
            && log.contains("is past its protect-stop time"),
        "the plugin's Encrypt refusal is not in the log ({out}):\n{log}"
    );
    // OpenBao's side (2.7.2): the new recovery key cannot be sealed.
    assert!(
        log.contains("failed to set recovery key"),
        "OpenBao did not report the failed seal encrypt ({out}):\n{log}"
    );
    // The plugin's audit log has the refused encrypt (FAILED_PRECONDITION = 9).
    let audit = std::fs::read_to_string(keys.join("kms-audit.log")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("\"kms.encrypt\"")
            && l.contains("\"result\":\"error\"")
            && l.contains("\"grpc_code\":9")),
        "no refused kms.encrypt in the plugin's audit log:\n{audit}"
    );
    // Still unsealed and serving.
    assert_eq!(read_secret(&server, &root), "42");
    stop(&mut server, &plugins);

    // 1500 days on: past deactivation. The plugin refuses Decrypt: OpenBao stays sealed, and
    // its log says why.
    start(&mut server, &token, PAST_DEACTIVATION);
    let unsealed = server.wait_sealed(false, Duration::from_secs(15));
    let log = server.log();
    assert!(!unsealed, "OpenBao unsealed past deactivation:\n{log}");
    assert!(
        log.contains("key version 1 is deactivated"),
        "the deactivation is not reported:\n{log}"
    );
    stop(&mut server, &plugins);

    // The clock back to now: unseals again (nothing was destroyed by the refusals).
    start(&mut server, &token, 0);
    assert!(
        server.wait_sealed(false, UNSEAL_TIMEOUT),
        "not unsealed with the clock back:\n{}",
        server.log()
    );
    assert_eq!(read_secret(&server, &root), "42");
    stop(&mut server, &plugins);
}

/// The seal stanza names a `rootseal.toml` (`config_file`) whose `[lifecycle.seal-kek]` sets a
/// 90-day OUP: 100 days on, the plugin refuses `Encrypt` (the class default, 1 year, would not)
/// while OpenBao still unseals, so the plugin read the file's `[lifecycle]`. Then the remedy:
/// `rootseal key rotate`, after which OpenBao re-seals under v2 and unseals past v1's
/// deactivation.
#[test]
fn seal_key_lifecycle_comes_from_the_config_file() {
    let token = TestToken::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(token.init_root());
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let config = kms_rootseal_toml(
        tmp.path(),
        &token.module,
        &token.label,
        &token.pin,
        &keys,
        "[lifecycle.seal-kek]\noriginator_usage_period = \"90d\"\n",
    );
    let inline = stanzas(tmp.path(), &token, &keys);
    let (plugin, _) = inline.split_once("seal \"rootseal\"").unwrap();
    let extra = format!(
        "{plugin}seal \"rootseal\" {{\n  config_file = \"{}\"\n}}\n",
        config.display()
    );
    let plugins = std::fs::canonicalize(tmp.path().join("plugins")).unwrap();
    let mut server = OpenBao::new(&tmp.path().join("bao"), &extra);

    let (root, recovery) = start_and_init(&mut server, &token);
    stop(&mut server, &plugins);

    start(&mut server, &token, 100 * DAY);
    assert!(
        server.wait_sealed(false, UNSEAL_TIMEOUT),
        "not unsealed past the configured protect-stop:\n{}",
        server.log()
    );
    let (ok, out) = rekey_recovery(&server, &root, &recovery);
    let log = server.log();
    assert!(
        !ok,
        "recovery rekey succeeded past the configured protect-stop: {out}\n{log}"
    );
    assert!(
        log.contains("seal key openbao-unseal v1 is past its protect-stop")
            && log.contains("seal call refused")
            && log.contains("is past its protect-stop time"),
        "the [lifecycle.seal-kek] OUP of the config file was not applied:\n{log}"
    );
    stop(&mut server, &plugins);

    // The remedy the warning names: rotate (by the CLI, on the system clock, with a 1-year OUP
    // now in the file). At the next unseal OpenBao re-seals its stored keys under v2, and the
    // recovery-key rotation works again.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "originator_usage_period = \"90d\"",
            "originator_usage_period = \"1y\"",
        ),
    )
    .unwrap();
    let out = Command::new(rootseal_bin())
        .args(["key", "rotate", "openbao-unseal", "--config"])
        .arg(&config)
        .env("SOFTHSM2_CONF", &token.dir.conf)
        .env_remove("ROOTSEAL_HSM_PIN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rootseal key rotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start(&mut server, &token, 100 * DAY);
    assert!(
        server.wait_sealed(false, UNSEAL_TIMEOUT),
        "not unsealed after the rotation:\n{}",
        server.log()
    );
    let (ok, out) = rekey_recovery(&server, &root, &recovery);
    assert!(
        ok,
        "recovery rekey failed after the rotation: {out}\n{}",
        server.log()
    );
    stop(&mut server, &plugins);

    // Past v1's deactivation (90 days + 3 years), before v2's (4 years): OpenBao unseals and
    // never asks for v1, so nothing it needs is sealed under v1 any more. v2 is past its own
    // protect-stop by then (1 year), and the warning names it.
    start(&mut server, &token, (90 + 3 * 365 + 10) * DAY);
    assert!(
        server.wait_sealed(false, UNSEAL_TIMEOUT),
        "not unsealed past v1's deactivation (stored keys not re-sealed under v2):\n{}",
        server.log()
    );
    let log = server.log();
    assert!(!log.contains("key version 1 is deactivated"), "{log}");
    assert!(
        log.contains("seal key openbao-unseal v2 is past its protect-stop"),
        "{log}"
    );
    stop(&mut server, &plugins);
}

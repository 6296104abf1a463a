//! Issue 10: root rotation re-seals every record rootseal ever wrote, wherever it lives. With
//! `[storage] backend = "vault"`, two OpenBao servers auto-unseal through the KMS plugin, one
//! configured from rootseal.toml (`config_file`), one inline (`key_dir`); `rootseal root rotate`
//! runs while they are up, destroys the old root, and both restart unsealed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rootseal_e2e::{dev_bao, free_port, kms_stanzas, rootseal_bin, OpenBao};
use rootseal_testkit::TestToken;

const UNSEAL_TIMEOUT: Duration = Duration::from_secs(60);

fn secret_file(path: &Path, value: &str) {
    std::fs::write(path, value).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Runs `rootseal args` as an operator with the SO PIN: (success, stdout, stderr).
fn rootseal(token: &TestToken, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(rootseal_bin())
        .args(args)
        .env("SOFTHSM2_CONF", &token.dir.conf)
        .env_remove("ROOTSEAL_HSM_PIN")
        .env_remove("ROOTSEAL_HSM_SO_PIN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(token: &TestToken, args: &[&str]) -> String {
    let (ok, out, err) = rootseal(token, args);
    assert!(ok, "rootseal {args:?} failed:\n{out}\n{err}");
    out
}

fn start_unsealed(bao: &mut OpenBao, env: &[(&str, &str)], first: bool) {
    bao.start(env);
    if first {
        assert_eq!(
            bao.wait_status(UNSEAL_TIMEOUT),
            Some((false, true)),
            "{}",
            bao.log()
        );
        let _ = bao.init();
    }
    assert!(
        bao.wait_sealed(false, UNSEAL_TIMEOUT),
        "OpenBao did not unseal:\n{}",
        bao.log()
    );
}

#[test]
fn root_rotation_with_a_vault_backend_keeps_both_kms_plugins_unsealing() {
    let token = TestToken::new();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let kv = dev_bao(&d.join("kv"), free_port(), "kv-root", "bao.log");
    secret_file(&d.join("hsm-pin"), &token.pin);
    secret_file(&d.join("so-pin"), &token.so_pin);
    secret_file(&d.join("vault-token"), &kv.token);
    secret_file(&d.join("root-token"), "s.unused-by-the-plugin");
    let config = d.join("rootseal.toml");
    std::fs::write(
        &config,
        format!(
            "governance = \"off\"\n[listener]\naddress = \"127.0.0.1:0\"\n\
             [hsm]\nmodule = \"{module}\"\ntoken_label = \"{label}\"\npin_file = \"{pin}\"\n\
             [auth]\nroot_token_file = \"{tok}\"\n\
             [storage]\nbackend = \"vault\"\naddress = \"{kv}\"\ntoken_file = \"{vt}\"\n\
             kv_mount = \"secret\"\nprefix = \"rootseal\"\nlocal_path = \"{local}\"\n\
             local_keys = [\"autounseal\"]\n",
            module = token.module.display(),
            label = token.label,
            pin = d.join("hsm-pin").display(),
            tok = d.join("root-token").display(),
            kv = kv.addr,
            vt = d.join("vault-token").display(),
            local = d.join("local").display(),
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let so = d.join("so-pin");
    let so = so.to_str().unwrap();
    ok(&token, &["init", "--config", cfg, "--so-pin-file", so]);

    // OpenBao A: the KMS plugin reads rootseal.toml (the vault backend).
    let stanzas = ok(
        &token,
        &[
            "openbao",
            "kms-config",
            "--config",
            cfg,
            "--plugin-dir",
            d.join("plugins-a").to_str().unwrap(),
        ],
    );
    assert!(stanzas.contains("config_file"), "{stanzas}");
    let conf = token.dir.conf.display().to_string();
    let env_a = [("SOFTHSM2_CONF", conf.as_str())];
    let mut a = OpenBao::new(&d.join("bao-a"), &stanzas);
    start_unsealed(&mut a, &env_a, true);

    // OpenBao B: an inline seal stanza with its own key directory.
    let inline = kms_stanzas(
        &d.join("b"),
        &token.module,
        &token.label,
        &d.join("inline-keys"),
    );
    let env_b = [
        ("SOFTHSM2_CONF", conf.as_str()),
        ("ROOTSEAL_HSM_PIN", token.pin.as_str()),
    ];
    let mut b = OpenBao::new(&d.join("bao-b"), &inline);
    start_unsealed(&mut b, &env_b, true);

    let before = ok(&token, &["root", "status", "--config", cfg]);

    // Rotate while both run: every store the token has seen is re-sealed, the old root goes.
    let out = ok(
        &token,
        &[
            "root",
            "rotate",
            "--config",
            cfg,
            "--so-pin-file",
            so,
            "--grace-secs",
            "0",
        ],
    );
    assert!(out.contains("Old root(s) destroyed."), "{out}");
    let after = ok(&token, &["root", "status", "--config", cfg]);
    assert_ne!(before, after);
    assert_eq!(after.matches("Current").count(), 1, "{after}");
    assert!(!after.contains("Retiring"), "{after}");

    for (bao, env) in [(&mut a, &env_a[..]), (&mut b, &env_b[..])] {
        bao.stop();
        start_unsealed(bao, env, false);
    }
    // And once more: the re-sealed records are durable, not a cached state.
    for (bao, env) in [(&mut a, &env_a[..]), (&mut b, &env_b[..])] {
        bao.stop();
        start_unsealed(bao, env, false);
    }
}

//! End-to-end tests of the secrets plugin's records in OpenBao storage (issue 14), with real
//! OpenBao 2.7.2 (raft, a `plugin_directory`, `raw_storage_endpoint`) sealed by rootseal itself
//! (`seal "transit"` against a `rootseal dev` with its own SoftHSM2 token), and the mount's keys
//! on a second, real SoftHSM2 token:
//!
//! * a record changed in the mount's storage (through `sys/raw`) is refused with an opaque 500,
//!   the detail in the plugin's log; put back, it works again;
//! * `rootseal root rotate`: the mount follows it (its records re-sealed under the new root by
//!   the plugin, through OpenBao's storage), the old root stays until the mount has moved and is
//!   then destroyed by the next rotation run; ciphertexts made before still decrypt;
//! * OpenBao sealed and unsealed, then restarted, with rootseal's seal: the keys survive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use rootseal_e2e::{bao, free_port, rootseal_bin, rootseal_dev, wait_for, OpenBao};
use rootseal_testkit::TestToken;
use serde_json::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const UNSEAL: Duration = Duration::from_secs(60);

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// `bao -format=json` as root, parsed; panics with the server log on failure.
fn json(ob: &OpenBao, root: &str, args: &[&str]) -> Value {
    // `-format` goes after the (sub)command words.
    let at = if matches!(args[0], "secrets" | "plugin" | "operator") {
        2
    } else {
        1
    };
    let mut a = args[..at].to_vec();
    a.push("-format=json");
    a.extend_from_slice(&args[at..]);
    let (ok, out, err) = bao(&ob.addr, Some(root), &a);
    assert!(ok, "bao {a:?} failed: {err}\n{out}\n{}", tail(&ob.log()));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bao {a:?}: not JSON ({e}): {out}"))
}

/// A blocking JSON POST to OpenBao: (status, body).
fn post(url: &str, token: &str, body: &Value) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(url)
            .header("X-Vault-Token", token)
            .json(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    })
}

fn encrypt(ob: &OpenBao, root: &str, key: &str, pt: &str) -> (u16, Value) {
    post(
        &format!("{}/v1/hsm/encrypt/{key}", ob.addr),
        root,
        &serde_json::json!({ "plaintext": B64.encode(pt) }),
    )
}

fn decrypt(ob: &OpenBao, root: &str, key: &str, ct: &str) -> (u16, Value) {
    post(
        &format!("{}/v1/hsm/decrypt/{key}", ob.addr),
        root,
        &serde_json::json!({ "ciphertext": ct }),
    )
}

/// Decrypts `ct` under `key` within 30 s (a plugin process may be starting): the plaintext.
fn decrypts(ob: &OpenBao, root: &str, key: &str, ct: &str) -> String {
    let pt = wait_for(Duration::from_secs(30), || {
        let (s, v) = decrypt(ob, root, key, ct);
        (s == 200).then(|| v["data"]["plaintext"].as_str().unwrap().to_owned())
    })
    .unwrap_or_else(|| panic!("{key}: {ct} does not decrypt\n{}", tail(&ob.log())));
    String::from_utf8(B64.decode(pt).unwrap()).unwrap()
}

fn ciphertext(ob: &OpenBao, root: &str, key: &str, pt: &str) -> String {
    let (s, v) = encrypt(ob, root, key, pt);
    assert_eq!(s, 200, "{v}\n{}", tail(&ob.log()));
    v["data"]["ciphertext"].as_str().unwrap().to_owned()
}

/// The raw storage entry of key `name` of the mount `uuid` (OpenBao's `sys/raw`).
fn raw_entry(ob: &OpenBao, root: &str, uuid: &str, name: &str) -> String {
    let v = json(
        ob,
        root,
        &["read", &format!("sys/raw/logical/{uuid}/keys/{name}")],
    );
    v["data"]["value"].as_str().unwrap().to_owned()
}

fn write_raw_entry(ob: &OpenBao, root: &str, uuid: &str, name: &str, value: &str) {
    let (ok, out, err) = bao(
        &ob.addr,
        Some(root),
        &[
            "write",
            &format!("sys/raw/logical/{uuid}/keys/{name}"),
            &format!("value={value}"),
        ],
    );
    assert!(ok, "sys/raw write: {err} {out}");
}

/// The KEK record inside a raw entry, parsed.
fn record_of(entry: &str) -> Value {
    let e: Value = serde_json::from_str(entry).unwrap();
    assert_eq!(e["format"], "rootseal-kek/1", "{e}");
    let rec = B64.decode(e["rootseal_record"].as_str().unwrap()).unwrap();
    serde_json::from_slice(&rec).unwrap()
}

/// The entry with its record's bytes changed by `f` (the record re-encoded, the entry kept).
fn tampered(entry: &str, f: impl Fn(String) -> String) -> String {
    let mut e: Value = serde_json::from_str(entry).unwrap();
    let rec = B64.decode(e["rootseal_record"].as_str().unwrap()).unwrap();
    let changed = f(String::from_utf8(rec).unwrap());
    e["rootseal_record"] = Value::from(B64.encode(changed));
    e.to_string()
}

/// `rootseal ARGS` as the operator of `token`: (success, stdout, stderr).
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

/// `(current root id, retiring root ids)` from `rootseal root status`.
fn roots(token: &TestToken, cfg: &str) -> (String, Vec<String>) {
    let (ok, out, err) = rootseal(token, &["root", "status", "--config", cfg]);
    assert!(ok, "{out}\n{err}");
    let id = |l: &str| l.split_whitespace().nth(1).unwrap().to_owned();
    let current = out
        .lines()
        .filter(|l| l.starts_with("Root ") && l.contains("Current"))
        .map(id)
        .next()
        .unwrap_or_else(|| panic!("no current root: {out}"));
    let retiring = out
        .lines()
        .filter(|l| l.starts_with("Root ") && l.contains("Retiring"))
        .map(id)
        .collect();
    (current, retiring)
}

fn secret_file(path: &Path, value: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, value).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn secrets_plugin_records_in_openbao_storage() {
    let a = TestToken::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(a.init_root());
    drop(rt);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let pin = d.join("pin");
    secret_file(&pin, &format!("{}\n", a.pin));
    let so = d.join("so-pin");
    secret_file(&so, &a.so_pin);
    secret_file(&d.join("root-token"), "unused");
    // The operator's rootseal.toml on the mount's token (its own file store).
    let config = d.join("rootseal.toml");
    std::fs::write(
        &config,
        format!(
            "governance = \"off\"\n[listener]\naddress = \"127.0.0.1:0\"\n\
             [hsm]\nmodule = \"{module}\"\ntoken_label = \"{label}\"\npin_file = \"{pin}\"\n\
             [auth]\nroot_token_file = \"{tok}\"\n\
             [storage]\nbackend = \"file\"\npath = \"{keys}\"\n",
            module = a.module.display(),
            label = a.label,
            pin = pin.display(),
            tok = d.join("root-token").display(),
            keys = d.join("cli-keys").display(),
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();

    // OpenBao sealed by a second rootseal (`seal "transit"` → `rootseal dev`).
    let rs_port = free_port();
    let rs_data = d.join("seal-rootseal");
    let _rs = rootseal_dev(
        &rs_data,
        rs_port,
        "seal-token",
        &d.join("seal-rootseal.log"),
    );
    let out = Command::new(rootseal_bin())
        .args(["vault", "seal-config", "--address"])
        .arg(format!("http://127.0.0.1:{rs_port}"))
        .arg("--token-file")
        .arg(rs_data.join("dev-root-token"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seal = String::from_utf8(out.stdout).unwrap();
    let plugins = d.join("plugins");
    let out = Command::new(rootseal_bin())
        .args(["openbao", "secrets-config", "--plugin-dir"])
        .arg(&plugins)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let register = text
        .lines()
        .find(|l| l.starts_with("bao plugin register "))
        .unwrap()
        .to_owned();
    let field = |p: &str| {
        register
            .split_whitespace()
            .find_map(|w| w.strip_prefix(p))
            .unwrap()
            .to_owned()
    };
    let (sum, version) = (field("-sha256="), field("-version="));
    let plugins = std::fs::canonicalize(&plugins).unwrap();
    let extra = format!(
        "{seal}\nplugin_directory = \"{}\"\nraw_storage_endpoint = true\n",
        plugins.display()
    );
    let mut ob = OpenBao::new(&d.join("bao"), &extra);
    ob.start(&[]);
    assert_eq!(ob.wait_status(UNSEAL), Some((false, true)), "{}", ob.log());
    let root = ob.init();
    assert!(ob.wait_sealed(false, UNSEAL), "{}", ob.log());

    let conf = a.dir.conf.display().to_string();
    let ok = |args: &[&str]| {
        let (ok, out, err) = bao(&ob.addr, Some(&root), args);
        assert!(ok, "bao {args:?}: {err}\n{out}\n{}", tail(&ob.log()));
        out
    };
    ok(&[
        "write",
        "sys/plugins/catalog/secret/rootseal",
        &format!("sha256={sum}"),
        &format!("version={version}"),
        "command=rootseal",
        &format!("env=SOFTHSM2_CONF={conf}"),
    ]);
    ok(&["secrets", "enable", "-path=hsm", "rootseal"]);
    ok(&[
        "write",
        "hsm/config/hsm",
        &format!("module={}", a.module.display()),
        &format!("token_label={}", a.label),
        &format!("pin_file={}", pin.display()),
    ]);
    let mounts = json(&ob, &root, &["secrets", "list"]);
    let uuid = mounts["hsm/"]["uuid"].as_str().unwrap().to_owned();
    ok(&["write", "-f", "hsm/keys/app"]);
    ok(&["write", "-f", "hsm/keys/victim"]);
    let ct = ciphertext(&ob, &root, "app", "before rotation");
    let vct = ciphertext(&ob, &root, "victim", "victim");

    tampered_record_is_refused(&ob, &root, &uuid, &vct);
    root_rotation_reaches_the_mount(&ob, &root, &uuid, &a, cfg, so.to_str().unwrap(), &ct);

    // Sealed and unsealed with rootseal's seal: an auto-unsealed OpenBao unseals again when
    // restarted (`operator unseal` takes no recovery key); the keys survive.
    ok(&["operator", "seal"]);
    assert!(ob.wait_sealed(true, Duration::from_secs(20)));
    let (s, _) = decrypt(&ob, &root, "app", &ct);
    assert_eq!(s, 503, "a sealed OpenBao answers 503");
    ob.stop();
    ob.start(&[]);
    assert!(ob.wait_sealed(false, UNSEAL), "{}", ob.log());
    assert_eq!(decrypts(&ob, &root, "app", &ct), "before rotation");
    // Restarted again (SIGTERM, a new process on the same raft data): the keys survive.
    let ct2 = ciphertext(&ob, &root, "app", "after restart");
    ob.stop();
    ob.start(&[]);
    assert!(ob.wait_sealed(false, UNSEAL), "{}", ob.log());
    assert_eq!(decrypts(&ob, &root, "app", &ct2), "after restart");
    assert_eq!(decrypts(&ob, &root, "app", &ct), "before rotation");
    assert_eq!(decrypts(&ob, &root, "victim", &vct), "victim");
}

/// A record changed in storage is refused with an opaque 500 (the detail in the log), for
/// encrypt and decrypt; the original entry put back, the key works again.
fn tampered_record_is_refused(ob: &OpenBao, root: &str, uuid: &str, vct: &str) {
    let original = raw_entry(ob, root, uuid, "victim");
    let rec = record_of(&original);
    assert_eq!(rec["name"], "victim", "{rec}");
    // An attacker with storage access allows deletion: valid JSON, a valid record, a stale MAC.
    let allow = tampered(&original, |r| {
        assert!(r.contains("\"deletion_allowed\":false"), "{r}");
        r.replace("\"deletion_allowed\":false", "\"deletion_allowed\":true")
    });
    // And one flipped byte of the MAC.
    let flipped = tampered(&original, |r| {
        let at = r.find("\"mac\":\"").unwrap() + 8;
        let mut b = r.into_bytes();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    });
    for bad in [&allow, &flipped] {
        write_raw_entry(ob, root, uuid, "victim", bad);
        assert_eq!(
            &raw_entry(ob, root, uuid, "victim"),
            bad,
            "sys/raw did not write"
        );
        // OpenBao does not signal a raw write to the plugin: the keyring re-reads a cached
        // record after 5 s.
        let refused = wait_for(Duration::from_secs(20), || {
            let (s, v) = encrypt(ob, root, "victim", "x");
            (s != 200).then_some((s, v))
        });
        let (s, v) =
            refused.unwrap_or_else(|| panic!("tampered record served\n{}", tail(&ob.log())));
        assert_eq!(s, 500, "{v}");
        let errors = v["errors"].to_string();
        assert!(errors.contains("internal error"), "{v}");
        assert!(
            !errors.contains("MAC") && !errors.contains("victim"),
            "detail leaked: {v}"
        );
        let (s, v) = decrypt(ob, root, "victim", vct);
        assert_eq!(s, 500, "{v}");
        let (s, _) = post(
            &format!("{}/v1/hsm/keys/victim/config", ob.addr),
            root,
            &serde_json::json!({ "deletion_allowed": false }),
        );
        assert_eq!(s, 500);
        // The plugin's log (stderr, captured by OpenBao) names the key and the failure.
        let log = ob.log();
        assert!(
            log.lines()
                .any(|l| l.contains("victim") && l.to_lowercase().contains("integrity")),
            "no integrity failure logged for victim:\n{}",
            tail(&log)
        );
    }
    write_raw_entry(ob, root, uuid, "victim", &original);
    let back = wait_for(Duration::from_secs(20), || {
        (decrypt(ob, root, "victim", vct).0 == 200).then_some(())
    });
    assert!(
        back.is_some(),
        "the restored record is refused\n{}",
        tail(&ob.log())
    );
}

/// `rootseal root rotate`, which cannot reach the mount's storage: the plugin re-seals the
/// mount's records under the new root; the old root is destroyed once the mount has moved.
fn root_rotation_reaches_the_mount(
    ob: &OpenBao,
    root: &str,
    uuid: &str,
    token: &TestToken,
    cfg: &str,
    so: &str,
    ct: &str,
) {
    let (old, retiring) = roots(token, cfg);
    assert!(retiring.is_empty());
    assert_eq!(
        record_of(&raw_entry(ob, root, uuid, "app"))["root_id"],
        old.as_str()
    );
    let rotate = [
        "root",
        "rotate",
        "--config",
        cfg,
        "--so-pin-file",
        so,
        "--grace-secs",
        "0",
    ];
    let (done, out, err) = rootseal(token, &rotate);
    let (new, _) = roots(token, cfg);
    assert_ne!(new, old, "{out}\n{err}");
    // The mount registers itself by its backend UUID (from `Setup`, not the mount's uuid).
    let locator = "openbao-plugin:";
    if !done {
        // The mount had not followed yet: the old root is kept, and the run names the mount.
        assert!(err.contains(locator), "{out}\n{err}");
        let (_, retiring) = roots(token, cfg);
        assert_eq!(retiring, vec![old.clone()]);
        // Meanwhile every ciphertext still decrypts (the old root is still there).
        assert_eq!(decrypts(ob, root, "app", ct), "before rotation");
    }
    // The plugin follows within its check interval (10 s): both records under the new root,
    // written back through OpenBao's storage.
    let moved = wait_for(Duration::from_secs(40), || {
        ["app", "victim"]
            .iter()
            .all(|k| record_of(&raw_entry(ob, root, uuid, k))["root_id"] == new.as_str())
            .then_some(())
    });
    assert!(
        moved.is_some(),
        "the mount's records stayed under the old root\n{}",
        tail(&ob.log())
    );
    // The next run counts the mount as done and destroys the old root (it may take a moment
    // after the records are written: the mount marks itself after its pass).
    let finished = wait_for(Duration::from_secs(30), || {
        if done {
            return Some(String::new());
        }
        let (ok, out, _) = rootseal(token, &rotate);
        ok.then_some(out)
    });
    let finished =
        finished.unwrap_or_else(|| panic!("rotation never finished\n{}", tail(&ob.log())));
    assert!(
        done || finished.contains("Old root(s) destroyed."),
        "{finished}"
    );
    if !done {
        assert!(finished.contains(locator), "{finished}");
    }
    println!(
        "root rotation: first run finished: {done}; the run after the mount moved:\n{finished}"
    );
    let (current, retiring) = roots(token, cfg);
    assert_eq!((current.as_str(), retiring.len()), (new.as_str(), 0));
    // After the old root is gone: old ciphertexts decrypt, new ones are made, the plugin reloaded
    // (a fresh process, nothing cached) still opens every key.
    assert_eq!(decrypts(ob, root, "app", ct), "before rotation");
    let ct_new = ciphertext(ob, root, "app", "after rotation");
    let (ok, _, err) = bao(
        &ob.addr,
        Some(root),
        &["plugin", "reload", "-plugin=rootseal"],
    );
    assert!(ok, "{err}");
    assert_eq!(decrypts(ob, root, "app", &ct_new), "after rotation");
    assert_eq!(decrypts(ob, root, "app", ct), "before rotation");
}

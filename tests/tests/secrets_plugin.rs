//! End-to-end tests of rootseal as an OpenBao secrets-engine plugin: the real `rootseal` binary
//! registered in and executed by real OpenBao 2.7.2 (raft storage, a `plugin_directory`), its
//! keys rooted in real SoftHSM2 and their sealed records in the mount's storage.
//!
//! Covered, through the `bao` CLI: register, enable at `hsm/`, `config/hsm`, create, encrypt,
//! decrypt, rotate, rewrap, datakey, batch, read, list, key config, delete; an ACL policy that
//! grants only `hsm/encrypt/app` (decrypt and other keys denied by OpenBao, existence checks
//! asking `create` for a new key); a file audit device recording the plugin's requests with
//! HMACed fields; two mounts holding separate keys; seal/unseal and a restart of OpenBao keeping
//! the keys; the plugin killed with SIGKILL (the next request works); a wrong HSM refused at
//! `config/hsm`; a PIN refused in `config/hsm`; bad input answered with the same 4xx as
//! rootseal's own HTTP listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use rootseal_e2e::{bao, free_port, rootseal_bin, rootseal_dev, wait_for, OpenBao};
use rootseal_testkit::TestToken;
use serde_json::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn init_root(token: &TestToken) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(token.init_root());
}

/// Run by a human (or with a wrong cookie), the plugin explains itself and exits 1.
fn started_by_hand() {
    let out = Command::new(rootseal_bin())
        .args(["openbao", "secrets-plugin"])
        .env_remove("VAULT_BACKEND_PLUGIN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("VAULT_BACKEND_PLUGIN") && err.contains("secrets-config"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = Command::new(rootseal_bin())
        .env("VAULT_BACKEND_PLUGIN", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

/// A running OpenBao with its root token and unseal key.
struct Bao {
    server: OpenBao,
    root: String,
    unseal_key: String,
    softhsm_conf: String,
}

impl Bao {
    /// `bao` as root; panics with the server log on failure.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = bao(&self.server.addr, Some(&self.root), args);
        assert!(
            ok,
            "bao {args:?} failed: {err}\n{out}\n{}",
            tail(&self.server.log())
        );
        out
    }

    /// `bao -format=json` as `token`, parsed.
    fn json(&self, token: &str, args: &[&str]) -> Value {
        // `-format` goes after the (sub)command words.
        let at = if matches!(
            args[0],
            "secrets" | "token" | "policy" | "plugin" | "operator"
        ) {
            2
        } else {
            1
        };
        let mut a = args[..at].to_vec();
        a.push("-format=json");
        a.extend_from_slice(&args[at..]);
        let (ok, out, err) = bao(&self.server.addr, Some(token), &a);
        assert!(
            ok,
            "bao {a:?} failed: {err}\n{out}\n{}",
            tail(&self.server.log())
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bao {a:?}: not JSON ({e}): {out}"))
    }

    /// `bao` as `token` that must fail; returns stderr.
    fn fails(&self, token: &str, args: &[&str]) -> String {
        let (ok, out, err) = bao(&self.server.addr, Some(token), args);
        assert!(!ok, "bao {args:?} should have failed: {out}");
        err
    }

    fn unseal(&self) {
        let (ok, out, err) = bao(
            &self.server.addr,
            None,
            &["operator", "unseal", &self.unseal_key],
        );
        assert!(ok, "unseal failed: {err} {out}");
        assert!(self.server.wait_sealed(false, Duration::from_secs(60)));
    }

    fn start(&mut self) {
        self.server.start(&[]);
        assert!(
            self.server.wait_status(Duration::from_secs(60)).is_some(),
            "OpenBao did not answer:\n{}",
            self.server.log()
        );
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// `rootseal openbao secrets-config --plugin-dir DIR`: (sha256, version) from the printed
/// register command, after checking the enable command and the policy are printed.
fn secrets_config(plugins: &Path) -> (String, String) {
    let out = Command::new(rootseal_bin())
        .args(["openbao", "secrets-config", "--plugin-dir"])
        .arg(plugins)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("bao secrets enable -path=hsm rootseal\n"),
        "{text}"
    );
    assert!(text.contains("path \"hsm/encrypt/app\""), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("bao plugin register "))
        .unwrap_or_else(|| panic!("no register command in:\n{text}"));
    let field = |p: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(p))
            .unwrap()
            .to_owned()
    };
    assert!(line.ends_with(" secret rootseal"), "{line}");
    let sum = field("-sha256=");
    let installed = Command::new("sha256sum")
        .arg(plugins.join("rootseal"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&installed.stdout).starts_with(&sum));
    (sum, field("-version="))
}

/// Pids of live plugin processes: `<plugins>/rootseal` run without arguments.
fn plugin_pids(plugins: &Path) -> Vec<u32> {
    let exe = plugins.join("rootseal").display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if cmd.trim_end_matches('\0') == exe && !zombie {
            out.push(pid);
        }
    }
    out
}

/// Waits (30 s) until `hsm/decrypt/keep` of `ct` answers through the bao CLI (a plugin process
/// may be starting); its JSON output.
fn decrypts_within_30s(b: &Bao, root: &str, ct: &str) -> Option<String> {
    wait_for(Duration::from_secs(30), || {
        let (ok, out, _) = bao(
            &b.server.addr,
            Some(root),
            &[
                "write",
                "-format=json",
                "hsm/decrypt/keep",
                &format!("ciphertext={ct}"),
            ],
        );
        ok.then_some(out)
    })
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

fn encrypt(b: &Bao, token: &str, mount: &str, key: &str, pt: &str) -> String {
    let v = b.json(
        token,
        &[
            "write",
            &format!("{mount}/encrypt/{key}"),
            &format!("plaintext={}", b64(pt)),
        ],
    );
    v["data"]["ciphertext"].as_str().unwrap().to_owned()
}

fn decrypt(b: &Bao, token: &str, mount: &str, key: &str, ct: &str) -> String {
    let v = b.json(
        token,
        &[
            "write",
            &format!("{mount}/decrypt/{key}"),
            &format!("ciphertext={ct}"),
        ],
    );
    let pt = B64
        .decode(v["data"]["plaintext"].as_str().unwrap())
        .unwrap();
    String::from_utf8(pt).unwrap()
}

/// A blocking JSON POST: (status, body).
fn post(url: &str, token: &str, body: &str) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(url)
            .header("X-Vault-Token", token)
            .body(body.to_owned())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    })
}

/// One test function: SoftHSM2 sees only the tokens that exist when a process first loads it,
/// so both tokens are made first, and the scenarios run in sequence on one OpenBao.
#[test]
fn secrets_plugin_end_to_end() {
    let a = TestToken::new();
    let b = TestToken::new();
    init_root(&a);
    init_root(&b);
    let tmp = tempfile::tempdir().unwrap();
    let pin_a = tmp.path().join("pin-a");
    let pin_b = tmp.path().join("pin-b");
    std::fs::write(&pin_a, format!("{}\n", a.pin)).unwrap();
    std::fs::write(&pin_b, format!("{}\n", b.pin)).unwrap();

    started_by_hand();
    let plugins = tmp.path().join("plugins");
    let (sum, version) = secrets_config(&plugins);
    let plugins = std::fs::canonicalize(&plugins).unwrap();
    let audit = tmp.path().join("audit.log");
    let extra = format!(
        "plugin_directory = \"{}\"\n\
         audit \"file\" \"file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
        plugins.display(),
        audit.display()
    );
    let server = OpenBao::new(&tmp.path().join("bao"), &extra);
    let mut b_ = Bao {
        server,
        root: String::new(),
        unseal_key: String::new(),
        softhsm_conf: a.dir.conf.display().to_string(),
    };
    b_.start();
    let (ok, out, err) = bao(
        &b_.server.addr,
        None,
        &[
            "operator",
            "init",
            "-key-shares=1",
            "-key-threshold=1",
            "-format=json",
        ],
    );
    assert!(ok, "init: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    b_.root = v["root_token"].as_str().unwrap().to_owned();
    b_.unseal_key = v["unseal_keys_b64"][0].as_str().unwrap().to_owned();
    b_.unseal();

    // Register: the printed command, then through the API with the environment SoftHSM2 needs
    // (the CLI has no flag for a catalog entry's env).
    b_.ok(&[
        "plugin",
        "register",
        &format!("-sha256={sum}"),
        &format!("-version={version}"),
        "secret",
        "rootseal",
    ]);
    b_.ok(&[
        "write",
        "sys/plugins/catalog/secret/rootseal",
        &format!("sha256={sum}"),
        &format!("version={version}"),
        "command=rootseal",
        &format!("env=SOFTHSM2_CONF={}", b_.softhsm_conf),
    ]);
    b_.ok(&["secrets", "enable", "-path=hsm", "rootseal"]);
    let mounts = b_.json(&b_.root.clone(), &["secrets", "list"]);
    assert_eq!(mounts["hsm/"]["type"], "rootseal", "{mounts}");
    assert_eq!(
        mounts["hsm/"]["running_plugin_version"],
        version.as_str(),
        "{mounts}"
    );

    let root = b_.root.clone();
    // Before config/hsm: a clear 400.
    let e = b_.fails(&root, &["write", "-f", "hsm/keys/app"]);
    assert!(e.contains("Code: 400") && e.contains("config/hsm"), "{e}");
    // A PIN is never accepted in config/hsm.
    let module = a.module.display().to_string();
    let e = b_.fails(
        &root,
        &[
            "write",
            "hsm/config/hsm",
            &format!("module={module}"),
            &format!("token_label={}", a.label),
            &format!("pin={}", a.pin),
        ],
    );
    assert!(e.contains("Code: 400") && !e.contains(&a.pin), "{e}");
    let cfg = b_.json(
        &root,
        &[
            "write",
            "hsm/config/hsm",
            &format!("module={module}"),
            &format!("token_label={}", a.label),
            &format!("pin_file={}", pin_a.display()),
        ],
    );
    assert_eq!(cfg["data"]["token_label"], a.label.as_str(), "{cfg}");
    let read = b_.json(&root, &["read", "hsm/config/hsm"]);
    assert_eq!(
        read["data"]["pin_file"],
        pin_a.display().to_string().as_str()
    );
    assert!(!read.to_string().contains(&a.pin));

    lifecycle(&b_, &root);
    policies(&b_, &root);
    audit_records(&audit);
    two_mounts(&b_, &root, &a, &pin_a);
    wrong_hsm(&b_, &root, &b, &pin_b);
    same_4xx_as_http(&b_, &root, tmp.path());

    // Survives: seal/unseal, a restart, and a SIGKILLed plugin.
    let ct = encrypt(&b_, &root, "hsm", "keep", "survivor");
    b_.ok(&["operator", "seal"]);
    assert!(b_.server.wait_sealed(true, Duration::from_secs(20)));
    b_.unseal();
    assert_eq!(decrypt(&b_, &root, "hsm", "keep", &ct), "survivor");

    b_.server.stop();
    b_.start();
    b_.unseal();
    let survived = decrypts_within_30s(&b_, &root, &ct);
    assert!(
        survived.is_some_and(|o| o.contains(&b64("survivor"))),
        "{}",
        tail(&b_.server.log())
    );

    let pids = plugin_pids(&plugins);
    assert!(!pids.is_empty(), "no plugin process");
    for pid in &pids {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(wait_for(Duration::from_secs(10), || {
        let now = plugin_pids(&plugins);
        pids.iter().all(|p| !now.contains(p)).then_some(())
    })
    .is_some());
    assert_eq!(decrypt(&b_, &root, "hsm", "keep", &ct), "survivor");
    assert!(plugin_pids(&plugins).iter().any(|p| !pids.contains(p)));

    // `bao plugin reload` restarts the mount's plugin; the keys stay.
    b_.ok(&["plugin", "reload", "-plugin=rootseal"]);
    let reloaded = decrypts_within_30s(&b_, &root, &ct);
    assert!(reloaded.is_some(), "{}", tail(&b_.server.log()));

    // Issue 17: OpenBao killed with SIGKILL while the mount's plugin runs: no plugin process is
    // left 3 s later, and a fresh OpenBao on the same data serves the keys through a new one.
    for round in 0..2 {
        let before = plugin_pids(&plugins);
        assert!(!before.is_empty(), "round {round}: no plugin running");
        if let Some(p) = b_.server.proc.as_mut() {
            p.signal("KILL", Duration::from_secs(5));
        }
        b_.server.proc = None;
        assert!(
            wait_for(Duration::from_secs(3), || plugin_pids(&plugins)
                .is_empty()
                .then_some(()))
            .is_some(),
            "round {round}: plugin processes outlived a SIGKILLed OpenBao: {:?}",
            plugin_pids(&plugins)
        );
        b_.start();
        b_.unseal();
        let again = decrypts_within_30s(&b_, &root, &ct);
        assert!(again.is_some(), "round {round}: {}", tail(&b_.server.log()));
    }

    b_.server.stop();
    assert!(
        wait_for(Duration::from_secs(10), || plugin_pids(&plugins)
            .is_empty()
            .then_some(()))
        .is_some(),
        "plugin processes outlived OpenBao: {:?}",
        plugin_pids(&plugins)
    );
}

/// create, encrypt, decrypt, rotate, rewrap, datakey, batch, read, list, config, delete.
fn lifecycle(b: &Bao, root: &str) {
    let created = b.json(root, &["write", "-f", "hsm/keys/app"]);
    assert_eq!(created["data"]["latest_version"], 1, "{created}");
    assert_eq!(created["data"]["type"], "aes256-gcm96");

    let ct = encrypt(b, root, "hsm", "app", "hello");
    assert!(ct.starts_with("vault:v1:"), "{ct}");
    assert_eq!(decrypt(b, root, "hsm", "app", &ct), "hello");

    b.ok(&["write", "-f", "hsm/keys/app/rotate"]);
    let info = b.json(root, &["read", "hsm/keys/app"]);
    assert_eq!(info["data"]["latest_version"], 2, "{info}");

    let rw = b.json(
        root,
        &["write", "hsm/rewrap/app", &format!("ciphertext={ct}")],
    );
    let ct2 = rw["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(ct2.starts_with("vault:v2:"), "{rw}");
    assert_eq!(decrypt(b, root, "hsm", "app", &ct2), "hello");

    let dk = b.json(root, &["write", "-f", "hsm/datakey/plaintext/app"]);
    let dk_pt = dk["data"]["plaintext"].as_str().unwrap().to_owned();
    let dk_ct = dk["data"]["ciphertext"].as_str().unwrap().to_owned();
    let back = b.json(
        root,
        &["write", "hsm/decrypt/app", &format!("ciphertext={dk_ct}")],
    );
    assert_eq!(back["data"]["plaintext"], dk_pt.as_str());
    let wrapped = b.json(root, &["write", "-f", "hsm/datakey/wrapped/app"]);
    assert!(wrapped["data"].get("plaintext").is_none(), "{wrapped}");

    // batch_input (a request body from a file, as Vault's docs show).
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("batch.json");
    std::fs::write(
        &body,
        serde_json::json!({"batch_input": [{"plaintext": b64("one")}, {"plaintext": b64("two")}]})
            .to_string(),
    )
    .unwrap();
    let batch = b.json(
        root,
        &["write", "hsm/encrypt/app", &format!("@{}", body.display())],
    );
    let results = batch["data"]["batch_results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{batch}");
    let ct_two = results[1]["ciphertext"].as_str().unwrap();
    assert_eq!(decrypt(b, root, "hsm", "app", ct_two), "two");

    // list, config, delete.
    b.ok(&["write", "-f", "hsm/keys/other"]);
    let list = b.json(root, &["list", "hsm/keys"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(names.contains(&"app") && names.contains(&"other"), "{list}");
    let e = b.fails(root, &["delete", "hsm/keys/other"]);
    assert!(
        e.contains("Code: 400"),
        "deletion must need deletion_allowed: {e}"
    );
    let cfg = b.json(
        root,
        &["write", "hsm/keys/other/config", "deletion_allowed=true"],
    );
    assert_eq!(cfg["data"]["deletion_allowed"], true, "{cfg}");
    b.ok(&["delete", "hsm/keys/other"]);
    let (ok, out, err) = bao(&b.server.addr, Some(root), &["read", "hsm/keys/other"]);
    assert!(
        !ok && (err.contains("No value found") || out.contains("No value found")),
        "{out} {err}"
    );
    let list = b.json(root, &["list", "hsm/keys"]);
    assert!(!list.to_string().contains("\"other\""), "{list}");
}

/// A token whose policy grants only `update` on `hsm/encrypt/app`.
fn policies(b: &Bao, root: &str) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("enc.hcl");
    std::fs::write(
        &policy,
        "path \"hsm/encrypt/app\" {\n  capabilities = [\"update\"]\n}\n",
    )
    .unwrap();
    b.ok(&["policy", "write", "enc-only", &policy.display().to_string()]);
    let t = b.json(root, &["token", "create", "-policy=enc-only"]);
    let app = t["auth"]["client_token"].as_str().unwrap().to_owned();

    let ct = encrypt(b, &app, "hsm", "app", "secret");
    assert!(ct.starts_with("vault:v2:"));
    let e = b.fails(
        &app,
        &["write", "hsm/decrypt/app", &format!("ciphertext={ct}")],
    );
    assert!(
        e.contains("Code: 403") && e.contains("permission denied"),
        "{e}"
    );
    let e = b.fails(
        &app,
        &[
            "write",
            "hsm/encrypt/other",
            &format!("plaintext={}", b64("x")),
        ],
    );
    assert!(e.contains("Code: 403"), "{e}");
    let e = b.fails(&app, &["read", "hsm/keys/app"]);
    assert!(e.contains("Code: 403"), "{e}");

    // Upsert: encrypting under a key that does not exist yet is a `create` (the existence check
    // says the key is absent), which this policy does not grant; `update` alone is not enough.
    std::fs::write(
        &policy,
        "path \"hsm/encrypt/*\" {\n  capabilities = [\"update\"]\n}\n",
    )
    .unwrap();
    b.ok(&[
        "policy",
        "write",
        "enc-update",
        &policy.display().to_string(),
    ]);
    let t = b.json(root, &["token", "create", "-policy=enc-update"]);
    let upd = t["auth"]["client_token"].as_str().unwrap().to_owned();
    let e = b.fails(
        &upd,
        &[
            "write",
            "hsm/encrypt/brand-new",
            &format!("plaintext={}", b64("x")),
        ],
    );
    assert!(e.contains("Code: 403"), "{e}");
    assert!(encrypt(b, &upd, "hsm", "app", "ok").starts_with("vault:"));
    let (ok, _, _) = bao(&b.server.addr, Some(root), &["read", "hsm/keys/brand-new"]);
    assert!(!ok, "the denied upsert must not have made the key");

    // config/hsm is a root path: update alone does not reach it.
    std::fs::write(
        &policy,
        "path \"hsm/*\" {\n  capabilities = [\"create\", \"read\", \"update\"]\n}\n",
    )
    .unwrap();
    b.ok(&["policy", "write", "broad", &policy.display().to_string()]);
    let t = b.json(root, &["token", "create", "-policy=broad"]);
    let broad = t["auth"]["client_token"].as_str().unwrap().to_owned();
    let e = b.fails(&broad, &["read", "hsm/config/hsm"]);
    assert!(e.contains("Code: 403"), "{e}");
}

/// The file audit device recorded the plugin's requests, with fields HMACed.
fn audit_records(audit: &Path) {
    let log = std::fs::read_to_string(audit).unwrap();
    let entries: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let enc = entries.iter().find(|e| {
        e["type"] == "response"
            && e["request"]["path"] == "hsm/encrypt/app"
            && e["request"]["mount_type"] == "rootseal"
    });
    let enc =
        enc.unwrap_or_else(|| panic!("no audited encrypt response in {} entries", entries.len()));
    let ct = enc["response"]["data"]["ciphertext"].as_str().unwrap();
    assert!(ct.starts_with("hmac-sha256:"), "{enc}");
    let pt = enc["request"]["data"]["plaintext"].as_str().unwrap();
    assert!(pt.starts_with("hmac-sha256:"), "{enc}");
    assert!(entries
        .iter()
        .any(|e| e["request"]["path"] == "hsm/decrypt/app"
            && e["error"]
                .as_str()
                .is_some_and(|x| x.contains("permission denied"))));
}

/// A second mount has its own keys.
fn two_mounts(b: &Bao, root: &str, a: &TestToken, pin: &Path) {
    b.ok(&["secrets", "enable", "-path=hsm2", "rootseal"]);
    b.ok(&[
        "write",
        "hsm2/config/hsm",
        &format!("module={}", a.module.display()),
        &format!("token_label={}", a.label),
        &format!("pin_file={}", pin.display()),
    ]);
    let (ok, _, _) = bao(&b.server.addr, Some(root), &["list", "hsm2/keys"]);
    assert!(!ok, "hsm2 must start empty");
    let ct1 = encrypt(b, root, "hsm", "app", "mount one");
    let ct2 = encrypt(b, root, "hsm2", "app", "mount two");
    assert!(
        ct2.starts_with("vault:v1:"),
        "hsm2's app is its own key: {ct2}"
    );
    let e = b.fails(
        root,
        &["write", "hsm2/decrypt/app", &format!("ciphertext={ct1}")],
    );
    assert!(e.contains("Code: 400"), "{e}");
    assert_eq!(decrypt(b, root, "hsm2", "app", &ct2), "mount two");
    let list = b.json(root, &["list", "hsm2/keys"]);
    assert_eq!(list, serde_json::json!(["app"]));
}

/// Another token (its own root) is refused at config/hsm of a mount whose keys it did not seal.
fn wrong_hsm(b: &Bao, root: &str, other: &TestToken, pin: &Path) {
    let e = b.fails(
        root,
        &[
            "write",
            "hsm/config/hsm",
            &format!("module={}", other.module.display()),
            &format!("token_label={}", other.label),
            &format!("pin_file={}", pin.display()),
        ],
    );
    assert!(e.contains("Code: 400") && e.contains("wrong HSM"), "{e}");
    let read = b.json(root, &["read", "hsm/config/hsm"]);
    assert_ne!(
        read["data"]["token_label"],
        other.label.as_str(),
        "refused config was stored"
    );
    assert!(encrypt(b, root, "hsm", "app", "still here").starts_with("vault:"));
    // A missing token and a wrong PIN file are 400s too.
    let e = b.fails(
        root,
        &[
            "write",
            "hsm2/config/hsm",
            &format!("module={}", other.module.display()),
            "token_label=nope",
            &format!("pin_file={}", pin.display()),
        ],
    );
    assert!(e.contains("Code: 400"), "{e}");
    let e = b.fails(
        root,
        &[
            "write",
            "hsm2/config/hsm",
            &format!("module={}", other.module.display()),
            &format!("token_label={}", other.label),
            "pin_file=/nonexistent/pin",
        ],
    );
    assert!(e.contains("Code: 400"), "{e}");
}

/// The same bad requests over OpenBao to the plugin and to `rootseal dev`'s HTTP listener get
/// the same status and error text.
fn same_4xx_as_http(b: &Bao, root: &str, tmp: &Path) {
    let port = free_port();
    let dev = rootseal_dev(&tmp.join("dev"), port, "devroot", &tmp.join("dev.log"));
    let http = format!("http://127.0.0.1:{port}/v1/transit");
    let plugin = format!("{}/v1/hsm", b.server.addr);
    assert_eq!(post(&format!("{http}/keys/app"), "devroot", "{}").0, 200);
    let cases: &[(&str, &str)] = &[
        ("encrypt/app", "{}"),
        ("encrypt/app", r#"{"plaintext":"not base64!"}"#),
        ("encrypt/app", r#"{"plaintext":5}"#),
        ("encrypt/app", r#"{"plaintext":"aGk=","key_version":99}"#),
        (
            "encrypt/app",
            r#"{"plaintext":"aGk=","type":"chacha20-poly1305"}"#,
        ),
        ("decrypt/app", r#"{"ciphertext":"vault:v1:AAAA"}"#),
        ("decrypt/app", r#"{"ciphertext":"garbage"}"#),
        ("decrypt/missing", r#"{"ciphertext":"vault:v1:AAAA"}"#),
        ("keys/bad%20name", "{}"),
        ("datakey/bogus/app", "{}"),
        ("keys/app/config", r#"{"min_decryption_version":"x"}"#),
    ];
    for (path, body) in cases {
        let (hs, hb) = post(&format!("{http}/{path}"), "devroot", body);
        let (ps, pb) = post(&format!("{plugin}/{path}"), root, body);
        assert!(
            (400..500).contains(&hs),
            "{path} {body}: HTTP face answered {hs} {hb}"
        );
        assert_eq!((ps, &pb["errors"]), (hs, &hb["errors"]), "{path} {body}");
    }
    drop(dev);
}

//! Issue 3: the production server (`rootseal init`/`serve`/`root`/`key` from a `rootseal.toml`)
//! against real SoftHSM2 tokens and real OpenBao 2.7.2 (dev servers as the KV v2 store):
//! the bao CLI on rootseal's transit paths with records in OpenBao's KV, Vault unreachable, init
//! idempotence, root rotation under SIGKILL, HSM binding and tampering, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_e2e::{
    bao, dev_bao, free_port, http_get, rootseal_bin, softhsm_module, softhsm_tokens, vault_call,
    wait_for, DevBao, Proc,
};
use serde_json::{json, Value};

const PIN: &str = "4711";
const SO_PIN: &str = "0815";

/// One rootseal installation: a config file, its secret files, a port.
struct Rs {
    dir: PathBuf,
    cfg: PathBuf,
    softhsm_conf: PathBuf,
    addr: String,
    token: String,
}

/// The `[storage]` table of a file-backed installation.
const FILE_STORAGE: &str = "[storage]\nbackend = \"file\"\npath = \"store\"\n";

/// A file-backed installation on a fresh SoftHSM2 token labelled `prod` under `tmp`.
fn file_rs(tmp: &Path) -> Rs {
    let conf = softhsm_tokens(tmp, &["prod"], PIN, SO_PIN);
    Rs::new(&tmp.join("rs"), &conf, "prod", FILE_STORAGE)
}

impl Rs {
    /// Writes `dir/rootseal.toml` for token `label` with the `[storage]` table `storage`.
    fn new(dir: &Path, softhsm_conf: &Path, label: &str, storage: &str) -> Rs {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let token = format!("rs-root-{port}");
        std::fs::write(dir.join("pin"), format!("{PIN}\n")).unwrap();
        std::fs::write(dir.join("so-pin"), format!("{SO_PIN}\n")).unwrap();
        std::fs::write(dir.join("root-token"), &token).unwrap();
        for f in ["pin", "so-pin", "root-token"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let cfg = dir.join("rootseal.toml");
        std::fs::write(
            &cfg,
            format!(
                "governance = \"off\"\n[listener]\naddress = \"127.0.0.1:{port}\"\n\n[hsm]\nmodule = \"{}\"\n\
                 token_label = \"{label}\"\npin_file = \"pin\"\n\n[auth]\n\
                 root_token_file = \"root-token\"\n\n{storage}\n",
                softhsm_module()
            ),
        )
        .unwrap();
        Rs {
            dir: dir.to_owned(),
            cfg,
            softhsm_conf: softhsm_conf.to_owned(),
            addr: format!("http://127.0.0.1:{port}"),
            token,
        }
    }

    /// `rootseal ARGS --config CFG` (env: this test's SoftHSM2 only), with `--so-pin-file` for
    /// the Security Officer steps (`init`, `root rotate`).
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(rootseal_bin());
        c.args(args).arg("--config").arg(&self.cfg);
        if args.first() == Some(&"init") || args.starts_with(&["root", "rotate"]) {
            c.arg("--so-pin-file").arg(self.dir.join("so-pin"));
        }
        c.env("SOFTHSM2_CONF", &self.softhsm_conf)
            .env_remove("ROOTSEAL_HSM_PIN")
            .env_remove("ROOTSEAL_HSM_SO_PIN")
            .env_remove("ROOTSEAL_ROOT_TOKEN")
            .env_remove("ROOTSEAL_VAULT_TOKEN")
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            .env_remove("ROOTSEAL_CONFIG");
        c
    }

    /// Runs a CLI command to completion: (success, exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, Option<i32>, String, String) {
        let out = self.cmd(args).output().expect("run rootseal");
        (
            out.status.success(),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a CLI command that must succeed; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, code, out, err) = self.run(args);
        assert!(ok, "rootseal {args:?} exited {code:?}:\n{out}\n{err}");
        out
    }

    /// `rootseal serve`, waiting until /v1/sys/health answers 200.
    fn serve(&self, log: &str) -> Proc {
        self.serve_with(&[], log)
    }

    /// `rootseal serve EXTRA…`, waiting until /v1/sys/health answers 200.
    fn serve_with(&self, extra: &[&str], log: &str) -> Proc {
        let mut args = vec!["serve"];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn("rootseal serve", self.cmd(&args), &self.dir.join(log));
        let url = format!("{}/v1/sys/health", self.addr);
        let up = wait_for(Duration::from_secs(30), || {
            if p.exited().is_some() {
                return Some(false);
            }
            match http_get(&url) {
                Some((200, _)) => Some(true),
                _ => None,
            }
        });
        assert_eq!(
            up,
            Some(true),
            "rootseal serve did not become healthy:\n{}",
            p.output()
        );
        p
    }

    fn api(&self) -> Api {
        Api::new(&self.addr, &self.token)
    }

    /// The roots `rootseal root status` prints: (id, role line).
    fn roots(&self) -> Vec<(String, String)> {
        let out = self.ok(&["root", "status"]);
        out.lines()
            .filter_map(|l| l.strip_prefix("Root "))
            .map(|l| {
                let (id, rest) = l.split_once(' ').unwrap_or((l, ""));
                (id.to_owned(), rest.to_owned())
            })
            .collect()
    }
}

/// A blocking client for rootseal's HTTP API.
struct Api {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(base: &str, token: &str) -> Api {
        Api {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::new(),
            base: base.to_owned(),
            token: token.to_owned(),
        }
    }

    /// (status, JSON body or Null).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (s, v, _) = self.rt.block_on(vault_call(
            &self.client,
            method,
            &self.base,
            &self.token,
            path,
            body,
        ));
        (s, v)
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body))
    }

    fn create(&self, name: &str) {
        let (s, b) = self.post(&format!("transit/keys/{name}"), json!({}));
        assert!(s == 200 || s == 204, "create {name}: {s} {b}");
    }

    fn rotate(&self, name: &str) {
        let (s, b) = self.post(&format!("transit/keys/{name}/rotate"), json!({}));
        assert!(s == 200 || s == 204, "rotate {name}: {s} {b}");
    }

    fn encrypt(&self, name: &str, plaintext: &[u8]) -> (u16, Value) {
        self.post(
            &format!("transit/encrypt/{name}"),
            json!({ "plaintext": B64.encode(plaintext) }),
        )
    }

    fn encrypt_ok(&self, name: &str, plaintext: &[u8]) -> String {
        let (s, b) = self.encrypt(name, plaintext);
        assert_eq!(s, 200, "encrypt {name}: {b}");
        b["data"]["ciphertext"].as_str().unwrap().to_owned()
    }

    fn decrypt(&self, name: &str, ct: &str) -> (u16, Value) {
        self.post(
            &format!("transit/decrypt/{name}"),
            json!({ "ciphertext": ct }),
        )
    }

    fn decrypt_ok(&self, name: &str, ct: &str) -> Vec<u8> {
        let (s, b) = self.decrypt(name, ct);
        assert_eq!(s, 200, "decrypt {name} {ct}: {b}");
        B64.decode(b["data"]["plaintext"].as_str().unwrap())
            .unwrap()
    }
}

/// Asserts Vault's error envelope with `status` in `range`; returns the messages.
fn assert_envelope(
    what: &str,
    (s, b): &(u16, Value),
    range: std::ops::RangeInclusive<u16>,
) -> Vec<String> {
    assert!(range.contains(s), "{what}: status {s}, body {b}");
    let errs = b["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no errors envelope: {b}"));
    assert!(!errs.is_empty(), "{what}: empty errors: {b}");
    errs.iter()
        .map(|e| e.as_str().unwrap_or_default().to_owned())
        .collect()
}

fn vault_storage(kv_addr: &str) -> String {
    format!(
        "[storage]\nbackend = \"vault\"\naddress = \"{kv_addr}\"\ntoken_file = \"vault-token\"\n\
         kv_mount = \"secret\"\nprefix = \"rootseal\"\nlocal_path = \"local\"\n\
         local_keys = [\"autounseal\"]\n"
    )
}

/// A KV-backed rootseal against `kv` with the Vault token `vault_token`.
fn kv_rs(dir: &Path, conf: &Path, label: &str, kv: &str, vault_token: &str) -> Rs {
    let rs = Rs::new(dir, conf, label, &vault_storage(kv));
    std::fs::write(dir.join("vault-token"), vault_token).unwrap();
    std::fs::set_permissions(
        dir.join("vault-token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    rs
}

/// `bao kv get -format=json secret/rootseal/NAME` against the KV server: the entry's data.
fn kv_entry(kv: &DevBao, name: &str) -> Option<Value> {
    let (ok, out, _) = bao(
        &kv.addr,
        Some(&kv.token),
        &[
            "kv",
            "get",
            "-format=json",
            &format!("secret/rootseal/{name}"),
        ],
    );
    if !ok {
        return None;
    }
    let v: Value = serde_json::from_str(&out).unwrap();
    Some(v["data"].clone())
}

/// The decoded rootseal record stored in KV for `name`, and the KV version.
fn kv_record(kv: &DevBao, name: &str) -> (Value, u64) {
    let e = kv_entry(kv, name).unwrap_or_else(|| panic!("no KV entry for {name}"));
    let b64 = e["data"]["rootseal_record"]
        .as_str()
        .unwrap_or_else(|| panic!("no rootseal_record in {e}"));
    let rec: Value = serde_json::from_slice(&B64.decode(b64).unwrap()).unwrap();
    (rec, e["metadata"]["version"].as_u64().unwrap())
}

fn kv_put_record(kv: &DevBao, name: &str, record: &[u8]) {
    let (ok, _, err) = bao(
        &kv.addr,
        Some(&kv.token),
        &[
            "kv",
            "put",
            &format!("secret/rootseal/{name}"),
            &format!("rootseal_record={}", B64.encode(record)),
            "format=rootseal-kek/1",
        ],
    );
    assert!(ok, "bao kv put: {err}");
}

// ---------------------------------------------------------------------------------------------
// 1. KV-backed production server and the bao CLI on rootseal's paths

#[test]
fn kv_backed_server_serves_the_bao_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = softhsm_tokens(tmp.path(), &["prod"], PIN, SO_PIN);
    let kv = dev_bao(&tmp.path().join("kv"), free_port(), "kv-root", "bao.log");
    let rs = kv_rs(&tmp.path().join("rs"), &conf, "prod", &kv.addr, &kv.token);
    let out = rs.ok(&["init"]);
    assert!(out.contains("Created the L0 root"), "{out}");
    let _srv = rs.serve("serve.log");
    let t = Some(rs.token.as_str());
    let run = |args: &[&str]| -> String {
        let (ok, out, err) = bao(&rs.addr, t, args);
        assert!(ok, "bao {args:?}: {err}\n{out}");
        out
    };
    let pt = B64.encode(b"hello rootseal");

    run(&["write", "-f", "transit/keys/app"]);
    let enc: Value = serde_json::from_str(&run(&[
        "write",
        "-format=json",
        "transit/encrypt/app",
        &format!("plaintext={pt}"),
    ]))
    .unwrap();
    let ct1 = enc["data"]["ciphertext"].as_str().unwrap().to_owned();
    assert!(ct1.starts_with("vault:v1:"), "{ct1}");
    let dec = run(&[
        "write",
        "-field=plaintext",
        "transit/decrypt/app",
        &format!("ciphertext={ct1}"),
    ]);
    assert_eq!(dec.trim(), pt);

    let key: Value =
        serde_json::from_str(&run(&["read", "-format=json", "transit/keys/app"])).unwrap();
    assert_eq!(key["data"]["latest_version"], 1, "{key}");
    assert_eq!(key["data"]["type"], "aes256-gcm96", "{key}");
    assert_eq!(key["data"]["name"], "app", "{key}");

    run(&["write", "-f", "transit/keys/autounseal"]);
    let list: Value =
        serde_json::from_str(&run(&["list", "-format=json", "transit/keys"])).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&"app") && names.contains(&"autounseal"),
        "{list}"
    );

    run(&["write", "-f", "transit/keys/app/rotate"]);
    let latest = run(&["read", "-field=latest_version", "transit/keys/app"]);
    assert_eq!(latest.trim(), "2");
    let ct2 = run(&[
        "write",
        "-field=ciphertext",
        "transit/rewrap/app",
        &format!("ciphertext={ct1}"),
    ]);
    let ct2 = ct2.trim();
    assert!(ct2.starts_with("vault:v2:"), "{ct2}");
    let dec = run(&[
        "write",
        "-field=plaintext",
        "transit/decrypt/app",
        &format!("ciphertext={ct2}"),
    ]);
    assert_eq!(dec.trim(), pt);
    // The v1 ciphertext still decrypts after the rotation.
    let dec = run(&[
        "write",
        "-field=plaintext",
        "transit/decrypt/app",
        &format!("ciphertext={ct1}"),
    ]);
    assert_eq!(dec.trim(), pt);

    let dk: Value = serde_json::from_str(&run(&[
        "write",
        "-f",
        "-format=json",
        "transit/datakey/wrapped/app",
    ]))
    .unwrap();
    assert!(
        dk["data"].get("plaintext").is_none(),
        "wrapped datakey leaks plaintext: {dk}"
    );
    let dk_ct = dk["data"]["ciphertext"].as_str().unwrap();
    assert!(dk_ct.starts_with("vault:v2:"), "{dk}");
    let dk_pt = run(&[
        "write",
        "-field=plaintext",
        "transit/decrypt/app",
        &format!("ciphertext={dk_ct}"),
    ]);
    assert_eq!(B64.decode(dk_pt.trim()).unwrap().len(), 32);

    // The sealed record is in OpenBao's KV, not in the local directory.
    let (rec, version) = kv_record(&kv, "app");
    assert_eq!(rec["format"], "rootseal-kek", "{rec}");
    assert_eq!(rec["name"], "app", "{rec}");
    assert_eq!(rec["versions"].as_array().unwrap().len(), 2, "{rec}");
    assert!(version >= 2, "KV version {version}");
    let local = rs.dir.join("local");
    assert!(!local.join("app.kek").exists());
    // local_keys land in the local directory, not in KV.
    assert!(local.join("autounseal.kek").exists());
    assert!(
        kv_entry(&kv, "autounseal").is_none(),
        "autounseal leaked into KV"
    );
    let (ok, listing, _) = bao(
        &kv.addr,
        Some(&kv.token),
        &["kv", "list", "secret/rootseal"],
    );
    assert!(
        ok && listing.contains("app") && !listing.contains("autounseal"),
        "{listing}"
    );
    // The CLI reads the same stores.
    let keys = rs.ok(&["key", "list"]);
    assert!(
        keys.contains("app") && keys.contains("autounseal"),
        "{keys}"
    );
    let show = rs.ok(&["key", "show", "app"]);
    assert!(show.contains("latest version 2"), "{show}");
}

// ---------------------------------------------------------------------------------------------
// 2. Vault unreachable

#[test]
fn kv_unreachable_keeps_loaded_keys_and_answers_503() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = softhsm_tokens(tmp.path(), &["prod"], PIN, SO_PIN);
    let port = free_port();
    let mut kv = dev_bao(&tmp.path().join("kv"), port, "kv-root", "bao-1.log");
    let rs = kv_rs(&tmp.path().join("rs"), &conf, "prod", &kv.addr, &kv.token);
    rs.ok(&["init"]);
    let _srv = rs.serve("serve.log");
    let api = rs.api();
    api.create("warm");
    // Created by another process after the lifecycle scheduler's first pass (which loads every
    // key; the next is a minute later): the server has never loaded it.
    std::thread::sleep(Duration::from_secs(2));
    rs.ok(&["key", "create", "cold"]);
    let ct = api.encrypt_ok("warm", b"before");
    assert_eq!(api.decrypt_ok("warm", &ct), b"before");

    kv.proc
        .signal("KILL", Duration::from_secs(10))
        .expect("bao killed");
    // Past the keyring's 5 s refresh: the cached key must still serve.
    std::thread::sleep(Duration::from_millis(5500));
    let ct2 = api.encrypt_ok("warm", b"during");
    assert_eq!(api.decrypt_ok("warm", &ct2), b"during");
    assert_eq!(api.decrypt_ok("warm", &ct), b"before");
    for (what, r) in [
        ("encrypt with a key not loaded", api.encrypt("cold", b"x")),
        ("encrypt creating a new key", api.encrypt("fresh", b"x")),
        (
            "create a new key",
            api.post("transit/keys/fresh2", json!({})),
        ),
        (
            "read an unknown key",
            api.call("GET", "transit/keys/nope", None),
        ),
    ] {
        let msgs = assert_envelope(what, &r, 503..=503);
        assert!(
            !msgs.iter().any(|m| m.contains("kv-root")),
            "token leaked: {msgs:?}"
        );
    }

    // Back (a new dev server: dev mode keeps no data): new keys work again.
    drop(kv);
    let kv = dev_bao(&tmp.path().join("kv"), port, "kv-root", "bao-2.log");
    let ok = wait_for(Duration::from_secs(15), || {
        (api.encrypt("fresh", b"after").0 == 200).then_some(())
    });
    assert!(
        ok.is_some(),
        "new key after Vault came back: {:?}",
        api.encrypt("fresh", b"after")
    );
    let ct3 = api.encrypt_ok("fresh", b"after");
    assert_eq!(api.decrypt_ok("fresh", &ct3), b"after");
    assert!(kv_entry(&kv, "fresh").is_some());
}

// ---------------------------------------------------------------------------------------------
// 3. init idempotence

#[test]
fn init_is_idempotent_and_serve_never_creates_a_root() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = file_rs(tmp.path());
    let mut p = Proc::spawn(
        "rootseal serve",
        rs.cmd(&["serve"]),
        &rs.dir.join("serve-noroot.log"),
    );
    let st =
        wait_for(Duration::from_secs(30), || p.exited()).expect("serve without a root must exit");
    assert_eq!(st.code(), Some(1), "{}", p.output());
    let log = p.output();
    assert!(log.contains("rootseal init"), "{log}");
    assert!(
        log.contains(&rs.cfg.display().to_string()),
        "names the config: {log}"
    );
    assert!(rs.roots().is_empty(), "serve created a root");
    assert!(rs.ok(&["root", "status"]).contains("No root"));

    let first = rs.ok(&["init"]);
    assert!(first.contains("Created the L0 root"), "{first}");
    let (ok, code, second, err) = rs.run(&["init"]);
    assert!(ok, "second init exited {code:?}: {err}");
    assert!(
        second.contains("already exists") && second.contains("nothing changed"),
        "{second}"
    );
    let roots = rs.roots();
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert!(roots[0].1.contains("Current"), "{roots:?}");
    assert!(first.contains(&roots[0].0) && second.contains(&roots[0].0));
    let _srv = rs.serve("serve.log");
    rs.api().create("k");
    assert_eq!(rs.roots().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// 4. Root rotation under SIGKILL: no key lost

fn file_root_ids(store: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(store).unwrap().flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("kek") {
            continue;
        }
        let raw = std::fs::read_to_string(&p).unwrap();
        let json = raw.split_once('\n').unwrap().1;
        let rec: Value = serde_json::from_str(json).unwrap();
        out.push(rec["root_id"].as_str().unwrap().to_owned());
    }
    out
}

#[test]
fn root_rotation_survives_sigkill_without_losing_a_key() {
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let rs = file_rs(tmp.path());
    rs.ok(&["init"]);
    let old = rs.roots();
    assert_eq!(old.len(), 1);
    let old_id = old[0].0.clone();

    // ~30 keys, some at v2/v3, one ciphertext per version.
    let mut cts: Vec<(String, String, Vec<u8>)> = Vec::new();
    {
        let mut srv = rs.serve("serve-setup.log");
        let api = rs.api();
        for i in 0..30 {
            let name = format!("k{i:02}");
            api.create(&name);
            for v in 1..=(1 + i % 3) {
                if v > 1 {
                    api.rotate(&name);
                }
                let pt = format!("{name} v{v}").into_bytes();
                let ct = api.encrypt_ok(&name, &pt);
                assert!(ct.starts_with(&format!("vault:v{v}:")), "{ct}");
                cts.push((name.clone(), ct, pt));
            }
        }
        srv.signal("TERM", Duration::from_secs(10));
    }
    let store = rs.dir.join("store");
    assert_eq!(file_root_ids(&store).len(), 30);

    let check_all = |round: &str| {
        let mut srv = rs.serve(&format!("serve-{round}.log"));
        let api = rs.api();
        for (name, ct, pt) in &cts {
            let (s, b) = api.decrypt(name, ct);
            assert_eq!(s, 200, "after {round}: {name} {ct}: {b}\n{}", srv.output());
            assert_eq!(
                B64.decode(b["data"]["plaintext"].as_str().unwrap())
                    .unwrap(),
                *pt
            );
        }
        srv.signal("KILL", Duration::from_secs(10));
    };

    let mid_rotation = rotate_under_sigkill(&rs, &old_id, &check_all);
    // Idempotent once done.
    let again = rs.ok(&["root", "rotate", "--grace-secs", "0"]);
    eprintln!("{again}");
    let roots = rs.roots();
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert!(roots[0].1.contains("Current"), "{roots:?}");
    let new_id = &roots[0].0;
    assert_ne!(*new_id, old_id);
    assert!(
        file_root_ids(&store).iter().all(|r| r == new_id),
        "records not all under the new root"
    );
    check_all("final");
    let out = rs.ok(&["key", "rotate", "k00"]);
    assert!(out.contains("latest version 2"), "{out}");
    let out = rs.ok(&["key", "rotate", "k02"]);
    assert!(out.contains("latest version 4"), "{out}");
    eprintln!(
        "root rotation test: {mid_rotation} kills mid-rotation, {:?}",
        t0.elapsed()
    );
}

/// Runs `rootseal root rotate` and kills it at increasing delays after its last HSM login,
/// calling `check` after every kill, until a run finishes on its own (or one last run does);
/// returns how many kills landed mid-rotation. Every record of the file store must stay there.
fn rotate_under_sigkill(rs: &Rs, old_id: &str, check_all: &dyn Fn(&str)) -> usize {
    let store = rs.dir.join("store");
    let records = file_root_ids(&store).len();
    // Milliseconds after the rotation process logged in; re-sealing 30 records takes tens of
    // milliseconds on SoftHSM2, so the first kills land early and later ones let a run finish.
    let delays = [
        0u64, 2, 5, 8, 12, 16, 20, 30, 50, 100, 200, 400, 800, 1600, 3200, 6400, 15000,
    ];
    let mut mid_rotation = 0;
    let mut completed_alone = false;
    let mut torn = 0;
    for (i, ms) in delays.iter().enumerate() {
        let mut p = Proc::spawn(
            "rootseal root rotate",
            rs.cmd(&["root", "rotate", "--grace-secs", "0"]),
            &rs.dir.join(format!("rotate-{i}.log")),
        );
        // Kill only after the last HSM login: SoftHSM2 rewrites its token file at C_Login, and a
        // process killed in the middle of that rewrite can leave the token unreadable (a SoftHSM2
        // file-store hazard, not rootseal state; hardware HSMs do not share it). A rotation logs
        // in three times: User (which root to move to), Security Officer (the new L0) and User
        // again, which logs the second "HSM ready".
        let ready_by = std::time::Instant::now() + Duration::from_secs(20);
        while p.output().matches("HSM ready").count() < 2 && std::time::Instant::now() < ready_by {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The token files as they stand after those logins; see `mend_torn_token_file`.
        let token_files = token_object_files(&rs.softhsm_conf);
        std::thread::sleep(Duration::from_millis(*ms));
        if let Some(st) = p.exited() {
            assert!(
                st.success(),
                "an interrupted rotation must finish when run again (run {i}, after {ms} ms):\n{}",
                p.output()
            );
            completed_alone = true;
            break;
        }
        p.signal("KILL", Duration::from_secs(10)).expect("killed");
        if mend_torn_token_file(&token_files) {
            torn += 1;
            eprintln!("kill {i} after {ms} ms landed in SoftHSM2's rewrite of token.object at a later C_Login; restored it");
        }
        let roots = rs.roots();
        let ids = file_root_ids(&store);
        let moved = ids.iter().filter(|r| r.as_str() != old_id).count();
        let log = p.output();
        eprintln!(
            "kill {i} after {ms} ms: roots {roots:?}, {moved}/{records} records moved, stale lock {}; log tail: {}",
            store.join(".lock").exists(),
            log.lines().rev().take(2).collect::<Vec<_>>().join(" | ")
        );
        assert!(!roots.is_empty(), "no root left after kill {i}");
        assert!(roots.len() <= 2, "{roots:?}");
        if roots.iter().any(|r| r.1.contains("Next")) || (moved > 0 && moved < ids.len()) {
            mid_rotation += 1;
        }
        assert_eq!(ids.len(), records, "a record vanished");
        check_all(&format!("kill-{i}"));
    }
    assert!(
        mid_rotation > 0,
        "no kill landed mid-rotation: the test did not exercise recovery"
    );
    assert!(
        torn < 3,
        "{torn} kills landed in SoftHSM2's token.object rewrite: the test exercised SoftHSM2, not rootseal"
    );
    if !completed_alone {
        rs.ok(&["root", "rotate", "--grace-secs", "0"]);
    }
    mid_rotation
}

/// Every `token.object` of the SoftHSM2 behind `softhsm_conf`, with its bytes.
fn token_object_files(softhsm_conf: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let tokens = softhsm_conf.with_file_name("tokens");
    std::fs::read_dir(&tokens)
        .unwrap()
        .filter_map(|e| {
            let f = e.ok()?.path().join("token.object");
            Some((f.clone(), std::fs::read(&f).ok()?))
        })
        .collect()
}

/// SoftHSM2 rewrites `token.object` (the token's label, flags and PIN blobs) in place, truncating
/// it first, at every `C_Login` (Token::loginUser resets the PIN-count flags). A process killed
/// inside that rewrite leaves a token that no longer opens ("no token with label"): a hazard of
/// SoftHSM2's file store, not of rootseal's state (a hardware HSM does not share it; rootseal
/// never writes that file). A rotation logs in again after its re-sealing (its audit record), so
/// a kill can land there. Restores each `token.object` that is now shorter than before the kill;
/// returns whether one was.
fn mend_torn_token_file(before: &[(PathBuf, Vec<u8>)]) -> bool {
    let mut torn = false;
    for (f, bytes) in before {
        let now = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        if now < bytes.len() as u64 {
            std::fs::write(f, bytes).unwrap();
            torn = true;
        }
    }
    torn
}

/// Installs what rootseal 0.1.0 made on token `label` of `rs`: its root (User-made, modifiable,
/// untrusted, no unwrap template) and `n` keys whose L1s were generated extractable under any key,
/// in `rs`'s file store, with one ciphertext each. Runs in this process, as 0.1.0 would have.
fn previous_release_install(rs: &Rs, label: &str, n: usize) -> Vec<(String, String, Vec<u8>)> {
    std::env::set_var("SOFTHSM2_CONF", &rs.softhsm_conf);
    let cfg = rootseal_hsm::HsmConfig {
        pool_size: 1,
        ..rootseal_hsm::HsmConfig::new(
            softhsm_module().into(),
            rootseal_hsm::TokenSelector::Label(label.into()),
            secrecy::SecretString::from(PIN),
        )
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hsm = tokio::task::spawn_blocking(move || rootseal_hsm::Hsm::open(cfg))
            .await
            .unwrap()
            .unwrap();
        let old = rootseal_hsm::testing_init_previous_release_root(&hsm, false)
            .await
            .unwrap();
        let store = rootseal_hsm::FileStore::open(rs.dir.join("store")).unwrap();
        let k = rootseal_hsm::Keyring::open(hsm, std::sync::Arc::new(store))
            .await
            .unwrap();
        let mut cts = Vec::new();
        for i in 0..n {
            let name = format!("old{i:02}");
            k.testing_create_key_previous_release(&name, old)
                .await
                .unwrap();
            let pt = format!("0.1.0 secret {i}").into_bytes();
            let sealed = k
                .encrypt(
                    &name,
                    None,
                    vec![rootseal_hsm::EncryptItem {
                        plaintext: zeroize::Zeroizing::new(pt.clone()),
                        aad: Vec::new(),
                    }],
                    false,
                )
                .await
                .unwrap()
                .remove(0)
                .unwrap();
            let ct = format!("vault:v{}:{}", sealed.version, B64.encode(&sealed.bytes));
            cts.push((name, ct, pt));
        }
        cts
    })
}

/// An installation made by rootseal 0.1.0: `serve` refuses its weak root unless told, health
/// says `weak`, its keys keep working, new keys wait; `root rotate`, killed at increasing delays,
/// moves it to a hardened root without losing a key.
#[test]
fn a_previous_release_root_is_refused_then_hardened_by_rotation_under_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = file_rs(tmp.path());
    let cts = previous_release_install(&rs, "prod", 12);
    let old_id = rs.roots()[0].0.clone();
    let status = rs.ok(&["root", "status"]);
    assert!(
        status.contains("Custody: weak") && status.contains("CKA_TRUSTED"),
        "{status}"
    );

    // serve refuses, naming the way out; it never listens.
    let (ok, code, _, err) = rs.run(&["serve"]);
    assert!(!ok && code == Some(1), "{err}");
    assert!(
        err.contains("root rotate") && err.contains("--allow-weak-root"),
        "{err}"
    );

    let check_all = |round: &str| {
        let mut srv = rs.serve_with(&["--allow-weak-root"], &format!("serve-{round}.log"));
        let api = rs.api();
        for (name, ct, pt) in &cts {
            let (s, b) = api.decrypt(name, ct);
            assert_eq!(s, 200, "after {round}: {name} {ct}: {b}\n{}", srv.output());
            assert_eq!(
                B64.decode(b["data"]["plaintext"].as_str().unwrap())
                    .unwrap(),
                *pt
            );
        }
        srv.signal("KILL", Duration::from_secs(10));
    };
    {
        let _srv = rs.serve_with(&["--allow-weak-root"], "serve-weak.log");
        let (code, body) = http_get(&format!("{}/v1/sys/health", rs.addr)).unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"custody\":\"weak\""), "{body}");
        let api = rs.api();
        let (s, b) = api.post(
            "transit/encrypt/brand-new",
            serde_json::json!({"plaintext": B64.encode(b"x")}),
        );
        assert_eq!(s, 503, "{b}");
        assert!(b.to_string().contains("root rotate"), "{b}");
    }
    check_all("before");

    let mid_rotation = rotate_under_sigkill(&rs, &old_id, &check_all);
    eprintln!("previous-release migration: {mid_rotation} kills mid-rotation");
    let roots = rs.roots();
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert!(
        roots[0].1.contains("Current") && roots[0].1.contains("trusted"),
        "{roots:?}"
    );
    assert_ne!(roots[0].0, old_id);
    let status = rs.ok(&["root", "status"]);
    assert!(status.contains("Custody: hardened"), "{status}");
    // Served without the flag now, hardened, and keys can be made again.
    let _srv = rs.serve("serve-hardened.log");
    let (_, body) = http_get(&format!("{}/v1/sys/health", rs.addr)).unwrap();
    assert!(body.contains("\"custody\":\"hardened\""), "{body}");
    let api = rs.api();
    for (name, ct, pt) in &cts {
        assert_eq!(api.decrypt_ok(name, ct), *pt);
    }
    let ct = api.encrypt_ok("brand-new", b"y");
    assert_eq!(api.decrypt_ok("brand-new", &ct), b"y");
}

// ---------------------------------------------------------------------------------------------
// 5. HSM binding and tampered records

#[test]
fn records_are_bound_to_their_hsm_and_tampering_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = softhsm_tokens(tmp.path(), &["tokA", "tokB"], PIN, SO_PIN);
    let kv = dev_bao(&tmp.path().join("kv"), free_port(), "kv-root", "bao.log");
    let a = Rs::new(&tmp.path().join("a"), &conf, "tokA", FILE_STORAGE);
    let b = kv_rs(&tmp.path().join("b"), &conf, "tokB", &kv.addr, &kv.token);
    a.ok(&["init"]);
    b.ok(&["init"]);
    let _sa = a.serve("serve.log");
    let mut sb = b.serve("serve.log");
    let (api_a, api_b) = (a.api(), b.api());
    api_a.create("shared");
    let ct_a = api_a.encrypt_ok("shared", b"from A");
    api_b.create("own");
    let ct_own = api_b.encrypt_ok("own", b"B's own");
    let ct_tam = api_b.encrypt_ok("tam", b"tamper me");
    let ct_tam2 = api_b.encrypt_ok("tam2", b"tamper my blob");

    // A's record, copied byte for byte into B's store.
    let raw = std::fs::read_to_string(a.dir.join("store/shared.kek")).unwrap();
    let record_a = raw.split_once('\n').unwrap().1;
    kv_put_record(&kv, "shared", record_a.as_bytes());
    let r = api_b.decrypt("shared", &ct_a);
    let msgs = assert_envelope("foreign record", &r, 400..=599);
    let a_root = &a.roots()[0].0;
    assert!(
        !msgs
            .iter()
            .any(|m| m.contains(a_root.as_str()) || m.contains("tokA")),
        "not opaque: {msgs:?}"
    );
    assert!(sb.exited().is_none(), "B crashed:\n{}", sb.output());
    assert_eq!(api_b.decrypt_ok("own", &ct_own), b"B's own");
    assert_eq!(api_a.decrypt_ok("shared", &ct_a), b"from A");

    // Tampered records in KV: a config field, and one byte of a sealed blob.
    let (mut rec, _) = kv_record(&kv, "tam");
    rec["config"]["deletion_allowed"] = json!(true);
    kv_put_record(&kv, "tam", &serde_json::to_vec(&rec).unwrap());
    let (mut rec2, _) = kv_record(&kv, "tam2");
    let blob = rec2["versions"][0]["blob"].as_str().unwrap();
    let mut bytes = B64.decode(blob).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0x01;
    rec2["versions"][0]["blob"] = json!(B64.encode(&bytes));
    kv_put_record(&kv, "tam2", &serde_json::to_vec(&rec2).unwrap());
    // Past the keyring's refresh interval, so the server re-reads the store.
    std::thread::sleep(Duration::from_millis(5500));
    for (name, ct) in [("tam", &ct_tam), ("tam2", &ct_tam2)] {
        let r = api_b.decrypt(name, ct);
        assert_envelope(&format!("tampered {name}"), &r, 400..=599);
        let r = api_b.encrypt(name, b"x");
        assert_envelope(&format!("tampered {name} (encrypt)"), &r, 400..=599);
    }
    // A fresh process refuses them too, and names the key.
    let (ok, code, _, err) = b.run(&["key", "show", "tam"]);
    assert!(!ok && code == Some(1), "{err}");
    assert!(err.contains("tam"), "{err}");
    assert!(sb.exited().is_none(), "B crashed:\n{}", sb.output());
    assert_eq!(api_b.decrypt_ok("own", &ct_own), b"B's own");
    let ct = api_b.encrypt_ok("own", b"still");
    assert_eq!(api_b.decrypt_ok("own", &ct), b"still");
    // Nothing was "repaired" behind the operator's back.
    let (rec_now, _) = kv_record(&kv, "tam");
    assert_eq!(rec_now["config"]["deletion_allowed"], json!(true));
}

// ---------------------------------------------------------------------------------------------
// 6. Bad input

#[test]
fn malformed_config_names_the_key_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let good = file_rs(tmp.path());
    let conf = good.softhsm_conf.clone();
    let text = std::fs::read_to_string(&good.cfg).unwrap();
    let bad_cfg = good.dir.join("bad.toml");
    std::fs::write(&bad_cfg, text.replace("[hsm]\n", "[hsm]\nslot_id = 0\n")).unwrap();
    for args in [
        &["init"][..],
        &["serve"],
        &["root", "status"],
        &["key", "create", "k"],
    ] {
        let out = Command::new(rootseal_bin())
            .args(args)
            .arg("--config")
            .arg(&bad_cfg)
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("slot_id"),
            "{args:?}: error must name the key: {err}"
        );
        assert!(
            err.contains("[hsm]"),
            "{args:?}: error must name the table: {err}"
        );
        assert!(!err.contains(PIN), "{err}");
    }
    assert!(
        !good.dir.join("store").exists(),
        "store created from a bad config"
    );
    assert!(
        good.roots().is_empty(),
        "a root was created from a bad config"
    );
    // A missing config file is named too.
    let out = Command::new(rootseal_bin())
        .args(["init", "--config"])
        .arg(good.dir.join("missing.toml"))
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn wrong_pin_is_a_clear_error_without_lockout() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = file_rs(tmp.path());
    rs.ok(&["init"]);
    std::fs::write(rs.dir.join("pin"), "999999\n").unwrap();
    for i in 0..4 {
        let args: &[&str] = if i % 2 == 0 {
            &["serve"]
        } else {
            &["root", "status"]
        };
        let started = Instant::now();
        let (ok, code, _, err) = rs.run(args);
        assert!(!ok && code == Some(1), "{args:?} with a wrong PIN: {err}");
        assert!(err.contains("refused the PIN"), "{err}");
        assert!(err.contains("prod"), "names the token: {err}");
        assert!(!err.contains("999999"), "PIN echoed: {err}");
        assert!(started.elapsed() < Duration::from_secs(20), "retry loop?");
    }
    std::fs::write(rs.dir.join("pin"), format!("{PIN}\n")).unwrap();
    let _srv = rs.serve("serve.log");
    let api = rs.api();
    let ct = api.encrypt_ok("k", b"pin ok");
    assert_eq!(api.decrypt_ok("k", &ct), b"pin ok");
}

#[test]
fn kv_permission_denied_is_reported_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = softhsm_tokens(tmp.path(), &["prod"], PIN, SO_PIN);
    let kv = dev_bao(&tmp.path().join("kv"), free_port(), "kv-root", "bao.log");
    let policy = tmp.path().join("deny.hcl");
    std::fs::write(
        &policy,
        "path \"secret/*\" { capabilities = [\"deny\"] }\npath \"sys/*\" { capabilities = [\"deny\"] }\n",
    )
    .unwrap();
    let (ok, _, err) = bao(
        &kv.addr,
        Some(&kv.token),
        &["policy", "write", "deny-kv", &policy.display().to_string()],
    );
    assert!(ok, "{err}");
    let (ok, denied, err) = bao(
        &kv.addr,
        Some(&kv.token),
        &[
            "token",
            "create",
            "-policy=deny-kv",
            "-no-default-policy",
            "-field=token",
        ],
    );
    assert!(ok, "{err}");
    let denied = denied.trim().to_owned();
    let rs = kv_rs(&tmp.path().join("rs"), &conf, "prod", &kv.addr, &denied);
    rs.ok(&["init"]);

    // The CLI: a clear error.
    let (ok, code, _, err) = rs.run(&["key", "create", "app"]);
    assert!(!ok && code == Some(1), "{err}");
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
    assert!(!err.contains(&denied), "Vault token leaked: {err}");

    // The server: starts (or refuses to start naming the denial); first KV use answers an error
    // envelope and the log says permission denied.
    let mut p = Proc::spawn(
        "rootseal serve",
        rs.cmd(&["serve"]),
        &rs.dir.join("serve.log"),
    );
    let url = format!("{}/v1/sys/health", rs.addr);
    let up = wait_for(Duration::from_secs(30), || {
        if let Some(st) = p.exited() {
            return Some(Err(st));
        }
        http_get(&url).filter(|r| r.0 == 200).map(|_| Ok(()))
    })
    .expect("serve neither started nor exited");
    match up {
        Err(st) => {
            assert_eq!(st.code(), Some(1));
            assert!(
                p.output().to_lowercase().contains("permission denied"),
                "{}",
                p.output()
            );
        }
        Ok(()) => {
            let api = rs.api();
            let r = api.post("transit/keys/app", json!({}));
            let msgs = assert_envelope("create with a denied Vault token", &r, 400..=599);
            assert!(!msgs.iter().any(|m| m.contains(&denied)));
            let r = api.encrypt("app", b"x");
            assert_envelope("encrypt with a denied Vault token", &r, 400..=599);
            // Local keys do not need Vault.
            let ct = api.encrypt_ok("autounseal", b"local");
            assert_eq!(api.decrypt_ok("autounseal", &ct), b"local");
            let log = p.output();
            assert!(
                log.contains("permission denied by Vault at"),
                "server log must say permission denied:\n{log}"
            );
            assert!(!log.contains(&denied), "Vault token in the log");
        }
    }
}

#[test]
fn foreign_and_newer_kv_entries_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = softhsm_tokens(tmp.path(), &["prod"], PIN, SO_PIN);
    let kv = dev_bao(&tmp.path().join("kv"), free_port(), "kv-root", "bao.log");
    let rs = kv_rs(&tmp.path().join("rs"), &conf, "prod", &kv.addr, &kv.token);
    rs.ok(&["init"]);
    rs.ok(&["key", "create", "good"]);
    rs.ok(&["key", "create", "nv"]);

    // Not a rootseal record.
    let (ok, _, err) = bao(
        &kv.addr,
        Some(&kv.token),
        &["kv", "put", "secret/rootseal/x", "password=hunter2"],
    );
    assert!(ok, "{err}");
    // A record of a newer format version.
    let (mut rec, kv_version) = kv_record(&kv, "nv");
    // (4: version 3 is this release's format.)
    rec["format_version"] = json!(4);
    kv_put_record(&kv, "nv", &serde_json::to_vec(&rec).unwrap());
    let kv_version = kv_version + 1;

    let (ok, code, _, err) = rs.run(&["key", "show", "x"]);
    assert!(!ok && code == Some(1), "{err}");
    assert!(
        err.contains("x") && err.contains("not a rootseal record"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    for args in [&["key", "show", "nv"][..], &["key", "rotate", "nv"]] {
        let (ok, code, _, err) = rs.run(args);
        assert!(!ok && code == Some(1), "{args:?}: {err}");
        assert!(err.contains("nv"), "{args:?} must name the key: {err}");
        assert!(err.contains("format version 4"), "{args:?}: {err}");
    }
    // Nothing written: both entries unchanged in KV.
    let (rec_now, v_now) = kv_record(&kv, "nv");
    assert_eq!(v_now, kv_version, "the newer record was overwritten");
    assert_eq!(rec_now["format_version"], 4);
    let x = kv_entry(&kv, "x").unwrap();
    assert_eq!(x["data"], json!({"password": "hunter2"}));
    assert_eq!(x["metadata"]["version"], 1);

    let _srv = rs.serve("serve.log");
    let api = rs.api();
    for name in ["x", "nv"] {
        let r = api.encrypt(name, b"y");
        let msgs = assert_envelope(&format!("encrypt with {name}"), &r, 400..=599);
        assert!(!msgs.iter().any(|m| m.contains("hunter2")));
        let r = api.call("GET", &format!("transit/keys/{name}"), None);
        assert_envelope(&format!("read {name}"), &r, 400..=599);
    }
    let ct = api.encrypt_ok("good", b"fine");
    assert_eq!(api.decrypt_ok("good", &ct), b"fine");
    let (_, v_now) = kv_record(&kv, "nv");
    assert_eq!(v_now, kv_version, "the server overwrote the newer record");
    let list = rs.ok(&["key", "list"]);
    assert!(list.contains("good"), "{list}");
}

/// Makes the Security Officer's half of a new root on token `label` of `conf`, in this process.
fn new_l0_only(conf: &Path, label: &str) {
    std::env::set_var("SOFTHSM2_CONF", conf);
    let cfg = rootseal_hsm::HsmConfig {
        pool_size: 1,
        ..rootseal_hsm::HsmConfig::new(
            softhsm_module().into(),
            rootseal_hsm::TokenSelector::Label(label.into()),
            secrecy::SecretString::from(PIN),
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(rootseal_hsm::testing_new_l0(
        &cfg,
        &secrecy::SecretString::from(SO_PIN),
    ))
    .unwrap();
}

/// The state a SIGKILL leaves between the two steps that create the next root (the Security
/// Officer's L0 stored, the User's MAC key not yet). The kill loop above lands after both logins;
/// this makes the state between them deterministic. Running the rotation again must finish.
#[test]
fn root_rotation_recovers_from_a_half_created_next_root() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = file_rs(tmp.path());
    let conf = rs.softhsm_conf.clone();
    rs.ok(&["init"]);
    let old_id = rs.roots()[0].0.clone();
    let cts: Vec<(String, String)> = {
        let _srv = rs.serve("serve-setup.log");
        let api = rs.api();
        (0..3)
            .map(|i| {
                let name = format!("h{i}");
                (name.clone(), api.encrypt_ok(&name, name.as_bytes()))
            })
            .collect()
    };
    // Exactly what a kill between the Security Officer's L0 and the User's MAC key leaves.
    new_l0_only(&conf, "prod");
    let roots = rs.roots();
    assert!(
        roots
            .iter()
            .any(|r| r.1.contains("Next") && r.1.contains("MAC key missing")),
        "{roots:?}"
    );
    let (ok, code, out, err) = rs.run(&["root", "rotate", "--grace-secs", "0"]);
    assert!(
        ok,
        "rotation after a kill during `next` root creation must finish (exit {code:?}):\n{out}\n{err}"
    );
    let roots = rs.roots();
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert!(
        roots[0].1.contains("Current") && roots[0].0 != old_id,
        "{roots:?}"
    );
    let _srv = rs.serve("serve-final.log");
    let api = rs.api();
    for (name, ct) in &cts {
        assert_eq!(api.decrypt_ok(name, ct), name.as_bytes());
    }
}

/// A SIGKILL while a writer holds the file store's lock leaves `.lock` behind (the kill loop
/// above lands there now and then). Running `rootseal root rotate` again right away must finish,
/// as the runbook says; a lock whose owner is dead must not block every writer.
#[test]
fn root_rotation_rerun_is_not_blocked_by_a_killed_writers_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = file_rs(tmp.path());
    rs.ok(&["init"]);
    rs.ok(&["key", "create", "a"]);
    // Exactly what a writer killed between creating and removing its lock file leaves.
    std::fs::write(rs.dir.join("store/.lock"), b"").unwrap();
    let (ok, code, out, err) = rs.run(&["root", "rotate", "--grace-secs", "0"]);
    assert!(
        ok,
        "rotation blocked by the lock file of a dead process (exit {code:?}):\n{out}\n{err}"
    );
    let (ok, code, out, err) = rs.run(&["key", "rotate", "a"]);
    assert!(
        ok,
        "key rotate blocked by a dead process's lock (exit {code:?}):\n{out}\n{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Audit log: a KV record rolled back with OpenBao's own `kv rollback` is refused (issue 12)

#[test]
fn a_kv_record_rolled_back_in_openbao_is_refused_with_the_audit_log_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = softhsm_tokens(tmp.path(), &["prod"], PIN, SO_PIN);
    let kv = dev_bao(&tmp.path().join("kv"), free_port(), "kv-root", "bao.log");
    let rs = kv_rs(&tmp.path().join("rs"), &conf, "prod", &kv.addr, &kv.token);
    rs.ok(&["init"]);
    let mut srv = rs.serve("serve-1.log");
    let api = rs.api();
    api.create("victim");
    api.create("bystander");
    let old_ct = api.encrypt_ok("victim", b"before");
    let (_, v1) = kv_record(&kv, "victim");
    api.rotate("victim");
    let (rec, v2) = kv_record(&kv, "victim");
    assert!(v2 > v1);
    assert_eq!(rec["versions"].as_array().unwrap().len(), 2);
    assert!(srv.signal("TERM", Duration::from_secs(20)).is_some());
    // Someone with KV access puts the old, validly MACed record back (a new KV version).
    let (ok, _, err) = bao(
        &kv.addr,
        Some(&kv.token),
        &[
            "kv",
            "rollback",
            &format!("-version={v1}"),
            "secret/rootseal/victim",
        ],
    );
    assert!(ok, "bao kv rollback: {err}");
    let (rec, v3) = kv_record(&kv, "victim");
    assert!(v3 > v2, "KV rollback writes a new version");
    assert_eq!(rec["versions"].as_array().unwrap().len(), 1);
    let mut srv = rs.serve("serve-2.log");
    // A fresh client: the old one pools a connection to the stopped server.
    let api = rs.api();
    let (s, b) = api.encrypt("victim", b"after");
    assert!(s >= 400, "a rolled-back record served: {s} {b}");
    assert!(!b.to_string().contains("rolled back"), "detail leaked: {b}");
    let (s, _) = api.decrypt("victim", &old_ct);
    assert!(s >= 400);
    // Other keys keep working.
    api.encrypt_ok("bystander", b"fine");
    assert!(srv.signal("TERM", Duration::from_secs(20)).is_some());
    let log = std::fs::read_to_string(rs.dir.join("audit.log")).unwrap();
    let rb: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["event"]["type"] == "kek.rollback")
        .collect();
    assert!(!rb.is_empty(), "no kek.rollback record");
    assert_eq!(rb[0]["event"]["name"], "victim");
    let reason = rb[0]["event"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("latest key version is 1") && reason.contains("has seen 2"),
        "{reason}"
    );
    // The log itself verifies.
    let pem = rs.ok(&["audit", "public-key"]);
    std::fs::write(rs.dir.join("audit.pem"), pem).unwrap();
    let out = Command::new(rootseal_bin())
        .args(["audit", "verify", "--log"])
        .arg(rs.dir.join("audit.log"))
        .arg("--public-key")
        .arg(rs.dir.join("audit.pem"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn root_operations_from_the_cli_are_in_the_audit_log_unless_a_server_holds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let rs = file_rs(tmp.path());
    rs.ok(&["init"]);
    let log = rs.dir.join("audit.log");
    let events = || -> Vec<Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|r| r.get("event").cloned())
            .collect()
    };
    let init = events();
    let i = init
        .iter()
        .find(|e| e["type"] == "root.init")
        .expect("no root.init record");
    assert_eq!(i["outcome"], "created");
    assert!(init.iter().any(|e| e["type"] == "cli.start"));
    assert!(init.iter().any(|e| e["type"] == "cli.stop"));
    let (ok, _, _, err) = rs.run(&["root", "rotate", "--grace-secs", "0"]);
    assert!(ok, "{err}");
    let r = events()
        .into_iter()
        .find(|e| e["type"] == "root.rotate")
        .expect("no root.rotate record");
    assert_eq!(r["old_roots_destroyed"], true);
    // While a server holds the log, the command says its event is not in it.
    let mut srv = rs.serve("serve.log");
    let (ok, _, _, err) = rs.run(&["root", "rotate", "--grace-secs", "0"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("root.rotate is not in the audit log") && err.contains("in use"),
        "{err}"
    );
    assert!(srv.signal("TERM", Duration::from_secs(20)).is_some());
    let pem = rs.ok(&["audit", "public-key"]);
    std::fs::write(rs.dir.join("audit.pem"), pem).unwrap();
    let out = Command::new(rootseal_bin())
        .args(["audit", "verify", "--log"])
        .arg(&log)
        .arg("--public-key")
        .arg(rs.dir.join("audit.pem"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

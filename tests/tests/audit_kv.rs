//! Rollback detection with real OpenBao KV v2 as the key store: `rootseal serve` (SoftHSM2 token,
//! records in a `bao server -dev` KV) audits every KEK record write; a record restored to an
//! older KV version (`bao kv rollback`, what restoring a backup of the KV does) is refused at the
//! next start, the audit log names it, and the other keys keep working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_e2e::{bao, dev_bao, free_port, http_get, rootseal_bin, wait_for, Proc};
use serde_json::{json, Value};

const PIN: &str = "4711";
const SO_PIN: &str = "0815";

fn module() -> String {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libsofthsm2.so (apt install softhsm2)")
    .to_owned()
}

struct Rs {
    dir: PathBuf,
    cfg: PathBuf,
    conf: PathBuf,
    addr: String,
    token: String,
}

impl Rs {
    fn new(dir: &Path, kv_addr: &str, kv_token: &str) -> Rs {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", "prod"])
            .args(["--pin", PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap();
        assert!(out.status.success());
        let port = free_port();
        let token = format!("rs-root-{port}");
        for (f, v) in [
            ("pin", PIN),
            ("so-pin", SO_PIN),
            ("root-token", token.as_str()),
            ("vault-token", kv_token),
        ] {
            std::fs::write(dir.join(f), v).unwrap();
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let cfg = dir.join("rootseal.toml");
        std::fs::write(
            &cfg,
            format!(
                "governance = \"off\"\n[listener]\naddress = \"127.0.0.1:{port}\"\n\n[hsm]\n\
                 module = \"{}\"\ntoken_label = \"prod\"\npin_file = \"pin\"\n\n[auth]\n\
                 root_token_file = \"root-token\"\n\n[storage]\nbackend = \"vault\"\n\
                 address = \"{kv_addr}\"\ntoken_file = \"vault-token\"\nkv_mount = \"secret\"\n\
                 prefix = \"rootseal\"\nlocal_path = \"local\"\nlocal_keys = [\"autounseal\"]\n\n\
                 [audit]\nmode = \"block\"\n",
                module()
            ),
        )
        .unwrap();
        Rs {
            dir: dir.to_owned(),
            cfg,
            conf,
            addr: format!("http://127.0.0.1:{port}"),
            token,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(rootseal_bin());
        c.args(args).arg("--config").arg(&self.cfg);
        if args.first() == Some(&"init") {
            c.arg("--so-pin-file").arg(self.dir.join("so-pin"));
        }
        c.env("SOFTHSM2_CONF", &self.conf)
            .env_remove("ROOTSEAL_HSM_PIN")
            .env_remove("ROOTSEAL_ROOT_TOKEN")
            .env_remove("ROOTSEAL_VAULT_TOKEN")
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_TOKEN")
            .env_remove("ROOTSEAL_CONFIG");
        c
    }

    fn serve(&self, log: &str) -> Proc {
        let p = Proc::spawn("rootseal serve", self.cmd(&["serve"]), &self.dir.join(log));
        let url = format!("{}/v1/sys/health", self.addr);
        assert!(
            wait_for(Duration::from_secs(30), || match http_get(&url) {
                Some((200, _)) => Some(()),
                _ => None,
            })
            .is_some(),
            "rootseal serve did not become healthy:\n{}",
            p.output()
        );
        p
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = reqwest::Client::new()
                .post(format!("{}/v1/{path}", self.addr))
                .header("X-Vault-Token", &self.token)
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        })
    }
}

fn kv_version(addr: &str, token: &str, name: &str) -> u64 {
    let (ok, out, err) = bao(
        addr,
        Some(token),
        &[
            "kv",
            "get",
            "-format=json",
            &format!("secret/rootseal/{name}"),
        ],
    );
    assert!(ok, "bao kv get {name}: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["data"]["metadata"]["version"].as_u64().unwrap()
}

fn stop(mut p: Proc) {
    assert!(
        p.signal("TERM", Duration::from_secs(20)).is_some(),
        "rootseal did not stop"
    );
}

#[test]
fn a_kv_record_rolled_back_to_an_older_version_is_refused_and_named_in_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let kv = dev_bao(&tmp.path().join("kv"), free_port(), "kv-root", "bao.log");
    let rs = Rs::new(&tmp.path().join("rs"), &kv.addr, &kv.token);
    let out = rs.cmd(&["init"]).output().unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let srv = rs.serve("serve1.log");
    for k in ["victim", "other"] {
        let (s, v) = rs.post(&format!("transit/keys/{k}"), json!({}));
        assert!(matches!(s, 200 | 204), "create {k}: {s} {v}");
    }
    let before = kv_version(&kv.addr, &kv.token, "victim");
    let (s, v) = rs.post("transit/keys/victim/rotate", json!({}));
    assert!(matches!(s, 200 | 204), "rotate: {s} {v}");
    let (s, v) = rs.post(
        "transit/encrypt/victim",
        json!({"plaintext": B64.encode("v2 data")}),
    );
    assert_eq!(s, 200, "{v}");
    assert!(kv_version(&kv.addr, &kv.token, "victim") > before);
    stop(srv);

    // Someone with the KV token restores the victim's record to the version before the rotation.
    let (ok, _, err) = bao(
        &kv.addr,
        Some(&kv.token),
        &[
            "kv",
            "rollback",
            &format!("-version={before}"),
            "secret/rootseal/victim",
        ],
    );
    assert!(ok, "bao kv rollback: {err}");

    let srv = rs.serve("serve2.log");
    let (s, v) = rs.post(
        "transit/encrypt/victim",
        json!({"plaintext": B64.encode("after the rollback")}),
    );
    assert!(
        (400..600).contains(&s) && s != 503,
        "a rolled-back record was used: {s} {v}"
    );
    assert!(
        !v.to_string().contains("rolled back"),
        "the detail stays in the log: {v}"
    );
    let (s, v) = rs.post(
        "transit/encrypt/other",
        json!({"plaintext": B64.encode("other key")}),
    );
    assert_eq!(s, 200, "another key stopped working: {v}");
    stop(srv);

    let log = rs.dir.join("audit.log");
    let recs: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r.get("seq").is_some())
        .map(|r| r["event"].clone())
        .collect();
    assert!(
        recs.iter()
            .any(|e| e["type"] == "kek.write" && e["name"] == "victim"),
        "KEK record writes are not audited: {recs:#?}"
    );
    let rb = recs
        .iter()
        .find(|e| e["type"] == "kek.rollback")
        .unwrap_or_else(|| panic!("no kek.rollback record: {recs:#?}"));
    assert_eq!(rb["name"], "victim", "{rb}");
    assert!(
        rb["reason"].as_str().unwrap().contains("rolled back"),
        "{rb}"
    );
}

//! Real Vault clients against `rootseal dev` (issue 15): the Python client hvac 2.4.0 through
//! every transit method it has (`tests/python/transit_hvac.py`: signatures verified with the
//! independent `cryptography` package, hashes with hashlib), and the `bao` CLI for each new path
//! with `-format=json`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Command;

use rootseal_e2e::{bao, free_port, rootseal_dev};

const TOKEN: &str = "s.transit-clients";

#[test]
fn hvac_drives_every_transit_method() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _dev = rootseal_dev(
        &dir.path().join("data"),
        port,
        TOKEN,
        &dir.path().join("log"),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/transit_hvac.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(TOKEN)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "hvac script failed:\n{stdout}\n{stderr}\n(install it with `pip install hvac==2.4.0`: scripts/install-deps)"
    );
}

#[test]
fn bao_cli_on_each_new_path() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _dev = rootseal_dev(
        &dir.path().join("data"),
        port,
        TOKEN,
        &dir.path().join("log"),
    );
    let addr = format!("http://127.0.0.1:{port}");
    let json = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["write", "-format=json"];
        a.extend_from_slice(args);
        let (ok, out, err) = bao(&addr, Some(TOKEN), &a);
        assert!(ok, "bao {args:?}: {out} {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bao {args:?}: {e}: {out}"))
    };
    json(&["transit/keys/ed", "type=ed25519"]);
    json(&["transit/keys/mac", "type=hmac"]);
    json(&["transit/keys/aes", "type=aes256-gcm96"]);
    let input = "aGVsbG8=";
    let s = json(&["transit/sign/ed", &format!("input={input}")]);
    let sig = s["data"]["signature"].as_str().unwrap().to_owned();
    let v = json(&[
        "transit/verify/ed",
        &format!("input={input}"),
        &format!("signature={sig}"),
    ]);
    assert_eq!(v["data"]["valid"], true, "{v}");
    let s = json(&["transit/sign/ed/sha2-256", &format!("input={input}")]);
    assert!(s["data"]["signature"]
        .as_str()
        .unwrap()
        .starts_with("vault:v1:"));
    let h = json(&["transit/hmac/mac/sha2-256", &format!("input={input}")]);
    let mac = h["data"]["hmac"].as_str().unwrap().to_owned();
    let v = json(&[
        "transit/verify/mac/sha2-256",
        &format!("input={input}"),
        &format!("hmac={mac}"),
    ]);
    assert_eq!(v["data"]["valid"], true, "{v}");
    let r = json(&["transit/random/seal/24", "format=hex"]);
    assert_eq!(r["data"]["random_bytes"].as_str().unwrap().len(), 48);
    let r = json(&["transit/hash/sha2-256", &format!("input={input}")]);
    assert_eq!(
        r["data"]["sum"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    let d = json(&["transit/datakeys/wrapped/aes", "count=3"]);
    assert_eq!(d["data"]["keys"].as_array().unwrap().len(), 3);
    let d = json(&["transit/datakey/plaintext/aes", "key_version=1"]);
    assert_eq!(d["data"]["key_version"], 1);
    // config/keys and cache-config, written and read back with the CLI.
    let c = json(&["transit/config/keys", "disable_upsert=true"]);
    assert_eq!(c["data"]["disable_upsert"], true, "{c}");
    let (ok, out, err) = bao(
        &addr,
        Some(TOKEN),
        &["read", "-format=json", "transit/config/keys"],
    );
    assert!(ok, "{out} {err}");
    assert!(out.contains("\"disable_upsert\": true"), "{out}");
    let (ok, out, err) = bao(
        &addr,
        Some(TOKEN),
        &[
            "write",
            "transit/encrypt/not-upserted",
            &format!("plaintext={input}"),
        ],
    );
    assert!(!ok && (out + &err).contains("encryption key not found"));
    let c = json(&["transit/cache-config", "size=20"]);
    assert_eq!(c["data"]["size"], 20, "{c}");
    let (ok, out, err) = bao(
        &addr,
        Some(TOKEN),
        &["write", "transit/cache-config", "size=3"],
    );
    assert!(!ok && (out + &err).contains("size must be 0 or a value greater or equal to 10"));
    // A client mistake is a 4xx with Vault's message, which the CLI prints.
    let (ok, out, err) = bao(
        &addr,
        Some(TOKEN),
        &["write", "transit/sign/aes", "input=aGk="],
    );
    assert!(!ok && (out + &err).contains("not supported by key type aes256-gcm96"));
}

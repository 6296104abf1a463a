//! The complete example in docs/config-reference.md parses, and the keys it documents are the
//! keys the parser accepts.
#![allow(missing_docs)]

use rootseal_vault_config::{Config, StorageSettings};
use secrecy::ExposeSecret;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config-reference.md");
    std::fs::read_to_string(path).expect("docs/config-reference.md")
}

#[test]
fn documented_example_parses() {
    let doc = doc();
    let start = doc.find("```toml\n").expect("a toml example") + 8;
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    for (f, v) in [
        ("hsm-pin", "9876\n"),
        ("rootseal-token", "tok-root\n"),
        ("vault-token", "tok-vault\n"),
    ] {
        std::fs::write(secrets.join(f), v).unwrap();
    }
    let text = example.replace("/run/secrets/", &format!("{}/", secrets.display()));
    let file = dir.path().join("rootseal.toml");
    std::fs::write(&file, text).unwrap();
    let c = Config::load_with_env(&file, &|_| None).unwrap();
    assert_eq!(c.hsm.pin.expose_secret(), "9876");
    assert_eq!(
        c.auth.root_token.as_ref().unwrap().expose_secret(),
        "tok-root"
    );
    assert!(c.governance.enabled);
    let StorageSettings::Vault(v) = &c.storage else {
        panic!("{:?}", c.storage)
    };
    assert_eq!(v.local_keys, vec!["autounseal"]);
    assert!(c.listener.tls.as_ref().unwrap().client_ca_file.is_some());
}

#[test]
fn every_config_key_is_documented_and_unknown_keys_fail() {
    let doc = doc();
    // Table rows of the reference: "| `key` | ...".
    let documented: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    for key in [
        "address",
        "tls_cert_file",
        "tls_key_file",
        "client_ca_file",
        "max_request_bytes",
        "module",
        "token_label",
        "token_serial",
        "pin_file",
        "pool_size",
        "root_token_file",
        "backend",
        "path",
        "token_file",
        "kv_mount",
        "prefix",
        "ca_cert_file",
        "local_path",
        "local_keys",
        "mount",
        "allow_upsert",
    ] {
        assert!(documented.contains(&key), "{key} is not documented");
    }
    // And an undocumented key is rejected by the parser (the doc promises this).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rootseal.toml");
    std::fs::write(
        &file,
        "[listener]\naddress = \"127.0.0.1:1\"\nbind = \"x\"\n",
    )
    .unwrap();
    let msg = Config::load_with_env(&file, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`bind`") && msg.contains("[listener]"),
        "{msg}"
    );
    assert!(msg.contains(&*file.to_string_lossy()), "{msg}");
}

//! `open_store` with `backend = "vault"` against a real OpenBao: the seal KEK stays in
//! the local file store, application KEKs go to KV v2, and a Vault that is down at boot does not
//! stop rootseal from serving the seal key.
#![allow(missing_docs)]

mod common;

use std::path::Path;

use common::Bao;
use reqwest::Method;
use rootseal_hsm::StoreError;
use rootseal_vault_config::{Config, StorageSettings};

fn write_config(dir: &Path, vault_addr: &str, token: &str) -> Config {
    std::fs::write(dir.join("vault-token"), format!("{token}\n")).unwrap();
    std::fs::write(dir.join("pin"), "1234\n").unwrap();
    std::fs::write(dir.join("root-token"), "rootseal-root-token\n").unwrap();
    let text = format!(
        r#"
[listener]
address = "127.0.0.1:8210"
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "rootseal"
pin_file = "pin"
[auth]
root_token_file = "root-token"
[storage]
backend = "vault"
address = "{vault_addr}"
token_file = "vault-token"
local_path = "local"
local_keys = ["autounseal"]
"#
    );
    std::fs::write(dir.join("rootseal.toml"), text).unwrap();
    // No environment: everything comes from the files.
    Config::load_with_env(dir.join("rootseal.toml"), &|_| None).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn vault_backend_routes_local_keys_to_the_file_store() {
    let bao = Bao::dev().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &bao.addr, &bao.root_token);
    assert!(matches!(cfg.storage, StorageSettings::Vault(_)));
    let store = rootseal_vault_config::open_store(&cfg).await.unwrap();
    assert!(
        store.describe().starts_with("routed("),
        "{}",
        store.describe()
    );

    assert_eq!(
        store.put("autounseal", b"seal".to_vec(), 0).await.unwrap(),
        1
    );
    assert_eq!(store.put("app", b"app".to_vec(), 0).await.unwrap(), 1);
    assert!(dir.path().join("local/autounseal.kek").exists());
    assert!(!dir.path().join("local/app.kek").exists());
    let (status, _) = bao.api(Method::GET, "secret/data/rootseal/app", None).await;
    assert!(status.is_success(), "app lives in Vault");
    let (status, _) = bao
        .api(Method::GET, "secret/data/rootseal/autounseal", None)
        .await;
    assert_eq!(status.as_u16(), 404, "the seal KEK must not be in Vault");
    assert_eq!(store.list().await.unwrap(), vec!["app", "autounseal"]);
    assert_eq!(store.get("app").await.unwrap().unwrap().data, b"app");
}

#[tokio::test(flavor = "multi_thread")]
async fn vault_down_at_boot_still_serves_the_seal_key() {
    // Reserve a port with nothing listening on it.
    let port = common::free_port_pair();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &format!("http://127.0.0.1:{port}"), "t0k3n-x");
    let store = rootseal_vault_config::open_store(&cfg)
        .await
        .expect("Vault being down at boot is not fatal");
    assert_eq!(
        store.put("autounseal", b"seal".to_vec(), 0).await.unwrap(),
        1
    );
    assert_eq!(
        store.get("autounseal").await.unwrap().unwrap().data,
        b"seal"
    );
    match store.put("app", b"app".to_vec(), 0).await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
            assert!(!msg.contains("t0k3n-x"), "{msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

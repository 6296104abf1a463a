//! Crypto-shredding in Vault KV v2 (issue 13, item 6) against a real OpenBao 2.7.2: KV v2 keeps
//! older versions of an entry, so a key version removed from a KEK record (trim) would survive
//! there; `shred_history` destroys every older version (KV `destroy`: the data is gone, not only
//! marked deleted) and keeps the current one.
#![allow(missing_docs)]

mod common;

use common::Bao;
use reqwest::Method;
use rootseal_hsm::KekStore;
use rootseal_vault_config::{VaultKvStore, VaultSettings};
use secrecy::SecretString;

#[tokio::test(flavor = "multi_thread")]
async fn shred_history_destroys_every_older_version_and_keeps_the_current() {
    let bao = Bao::dev().await;
    let s = VaultKvStore::connect(&VaultSettings {
        address: bao.addr.clone(),
        token: SecretString::from(bao.root_token.as_str()),
        kv_mount: "secret".into(),
        prefix: "rootseal".into(),
        ca_cert: None,
        local_path: bao.dir.path().join("local"),
        local_keys: vec![],
    })
    .await
    .expect("connect");
    assert_eq!(s.put("k", b"with-v1-blob".to_vec(), 0).await.unwrap(), 1);
    assert_eq!(s.put("k", b"with-v1-blob+v2".to_vec(), 1).await.unwrap(), 2);
    assert_eq!(s.put("k", b"v2-only".to_vec(), 2).await.unwrap(), 3);
    // Before: KV still serves the old versions.
    let (st, v1) = bao
        .api(Method::GET, "secret/data/rootseal/k?version=1", None)
        .await;
    assert!(st.is_success() && !v1["data"]["data"].is_null(), "{v1}");

    s.shred_history("k", 3).await.unwrap();
    for old in [1, 2] {
        let (_, raw) = bao
            .api(
                Method::GET,
                &format!("secret/data/rootseal/k?version={old}"),
                None,
            )
            .await;
        assert!(
            raw["data"]["data"].is_null(),
            "v{old} still readable: {raw}"
        );
        assert_eq!(raw["data"]["metadata"]["destroyed"], true, "v{old}: {raw}");
    }
    let cur = s.get("k").await.unwrap().unwrap();
    assert_eq!((cur.data.as_slice(), cur.version), (&b"v2-only"[..], 3));
    // Again: nothing left to destroy, no error; a missing entry neither.
    s.shred_history("k", 3).await.unwrap();
    s.shred_history("absent", 1).await.unwrap();
}

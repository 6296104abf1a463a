//! `VaultKvStore` against a real OpenBao 2.7.2 (`bao server -dev`, KV v2 at `secret/`).
#![allow(missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::Bao;
use reqwest::Method;
use rootseal_hsm::{KekStore, StoreError};
use rootseal_vault_config::{SetupError, VaultKvStore, VaultSettings};
use secrecy::SecretString;
use serde_json::json;

fn settings(bao: &Bao, token: &str, mount: &str) -> VaultSettings {
    VaultSettings {
        address: bao.addr.clone(),
        token: SecretString::from(token),
        kv_mount: mount.into(),
        prefix: "rootseal".into(),
        ca_cert: None,
        local_path: bao.dir.path().join("local"),
        local_keys: vec![],
    }
}

async fn root_store(bao: &Bao) -> VaultKvStore {
    VaultKvStore::connect(&settings(bao, &bao.root_token, "secret"))
        .await
        .expect("connect")
}

const RW_POLICY: &str = r#"
path "secret/data/rootseal/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "secret/metadata/rootseal/*" { capabilities = ["read", "delete", "list"] }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn put_get_list_delete_round_trip() {
    let bao = Bao::dev().await;
    let s = root_store(&bao).await;
    assert!(s.describe().contains(&bao.addr), "{}", s.describe());
    assert!(
        s.describe().ends_with("/secret/rootseal"),
        "{}",
        s.describe()
    );

    // Nothing stored yet: the prefix does not exist (404) and lists as empty.
    assert_eq!(s.list().await.unwrap(), Vec::<String>::new());
    assert_eq!(s.get("a").await.unwrap(), None);

    let all_bytes: Vec<u8> = (0..=255u8).collect();
    assert_eq!(s.put("a", all_bytes.clone(), 0).await.unwrap(), 1);
    assert_eq!(s.put("b.v2_x-y", b"bee".to_vec(), 0).await.unwrap(), 1);
    let r = s.get("a").await.unwrap().unwrap();
    assert_eq!((r.data, r.version), (all_bytes.clone(), 1));

    // The KV entry has the documented shape.
    let (status, raw) = bao.api(Method::GET, "secret/data/rootseal/a", None).await;
    assert!(status.is_success(), "{raw}");
    assert_eq!(raw["data"]["data"]["format"], "rootseal-kek/1");
    assert_eq!(
        raw["data"]["data"]["rootseal_record"],
        base64::engine::general_purpose::STANDARD.encode(&all_bytes)
    );

    assert_eq!(s.put("a", b"second".to_vec(), 1).await.unwrap(), 2);
    let r = s.get("a").await.unwrap().unwrap();
    assert_eq!((r.data.as_slice(), r.version), (&b"second"[..], 2));
    assert_eq!(s.list().await.unwrap(), vec!["a", "b.v2_x-y"]);

    s.delete("a").await.unwrap();
    assert_eq!(s.get("a").await.unwrap(), None);
    assert_eq!(
        s.get_version("a", 1).await.unwrap(),
        None,
        "all versions go"
    );
    assert_eq!(s.list().await.unwrap(), vec!["b.v2_x-y"]);
    // Deleting a missing entry is not an error; a re-created entry starts at version 1 again.
    s.delete("a").await.unwrap();
    assert_eq!(s.put("a", b"again".to_vec(), 0).await.unwrap(), 1);

    // Sub-folders under the prefix are not records.
    bao.api_ok(
        Method::POST,
        "secret/data/rootseal/folder/inner",
        Some(json!({"data": {"x": "y"}})),
    )
    .await;
    assert_eq!(s.list().await.unwrap(), vec!["a", "b.v2_x-y"]);

    for bad in ["../x", "", ".hidden", "a/b", "sp ace"] {
        assert!(
            matches!(s.get(bad).await, Err(StoreError::InvalidName(_))),
            "{bad}"
        );
        assert!(matches!(
            s.put(bad, vec![], 0).await,
            Err(StoreError::InvalidName(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pinned_version_reads() {
    let bao = Bao::dev().await;
    let s = root_store(&bao).await;
    for (i, data) in [b"v1", b"v2", b"v3"].iter().enumerate() {
        assert_eq!(
            s.put("k", data.to_vec(), i as u64).await.unwrap(),
            i as u64 + 1
        );
    }
    for v in 1..=3u64 {
        let r = s.get_version("k", v).await.unwrap().unwrap();
        assert_eq!(r.version, v);
        assert_eq!(r.data, format!("v{v}").into_bytes());
    }
    assert_eq!(s.get("k").await.unwrap().unwrap().version, 3);
    assert_eq!(s.get_version("k", 4).await.unwrap(), None);
    assert_eq!(
        s.get_version("k", 0).await.unwrap(),
        None,
        "0 is never latest"
    );
    assert_eq!(s.get_version("missing", 1).await.unwrap(), None);
    // A soft-deleted version reads as absent, the others stay readable.
    bao.api_ok(
        Method::POST,
        "secret/delete/rootseal/k",
        Some(json!({"versions": [2]})),
    )
    .await;
    assert_eq!(s.get_version("k", 2).await.unwrap(), None);
    assert_eq!(s.get_version("k", 1).await.unwrap().unwrap().data, b"v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn cas_conflict_exactly_one_writer_wins() {
    let bao = Bao::dev().await;
    let a = Arc::new(root_store(&bao).await);
    let b = Arc::new(root_store(&bao).await);
    for round in 0..5 {
        let name = format!("race{round}");
        // Create: both with cas = 0.
        let (ra, rb) = tokio::join!(
            a.put(&name, b"from-a".to_vec(), 0),
            b.put(&name, b"from-b".to_vec(), 0)
        );
        let (winner, loser) = match (ra, rb) {
            (Ok(1), Err(StoreError::Conflict { name: n })) => {
                assert_eq!(n, name);
                (b"from-a", 1)
            }
            (Err(StoreError::Conflict { name: n }), Ok(1)) => {
                assert_eq!(n, name);
                (b"from-b", 1)
            }
            other => panic!("expected exactly one winner, got {other:?}"),
        };
        let _ = loser;
        assert_eq!(a.get(&name).await.unwrap().unwrap().data, winner);
        // Update: both with cas = 1.
        let (ra, rb) = tokio::join!(
            a.put(&name, b"a2".to_vec(), 1),
            b.put(&name, b"b2".to_vec(), 1)
        );
        let oks = [&ra, &rb].iter().filter(|r| matches!(r, Ok(2))).count();
        let conflicts = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Conflict { .. })))
            .count();
        assert_eq!((oks, conflicts), (1, 1), "{ra:?} {rb:?}");
    }
    // A stale cas and a cas on a missing entry conflict too.
    assert!(matches!(
        a.put("race0", b"x".to_vec(), 1).await,
        Err(StoreError::Conflict { .. })
    ));
    assert!(matches!(
        a.put("never", b"x".to_vec(), 3).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(a.get("never").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_entries_are_not_records() {
    let bao = Bao::dev().await;
    let s = root_store(&bao).await;
    let write = |name: &'static str, data: serde_json::Value| {
        let bao = &bao;
        async move {
            bao.api_ok(
                Method::POST,
                &format!("secret/data/rootseal/{name}"),
                Some(json!({ "data": data })),
            )
            .await;
        }
    };
    write("plain", json!({"password": "hunter2"})).await;
    write(
        "newer",
        json!({"format": "rootseal-kek/2", "rootseal_record": "AAAA"}),
    )
    .await;
    write(
        "badb64",
        json!({"format": "rootseal-kek/1", "rootseal_record": "not base64!"}),
    )
    .await;
    write("nodata", json!({"format": "rootseal-kek/1"})).await;
    for (name, needle) in [
        ("plain", "format"),
        ("newer", "newer rootseal"),
        ("badb64", "base64"),
        ("nodata", "rootseal_record"),
    ] {
        match s.get(name).await {
            Err(e @ StoreError::NotARecord { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(name) && msg.contains(needle), "{msg}");
                assert!(!msg.contains("hunter2"), "{msg}");
            }
            other => panic!("{name}: expected NotARecord, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_without_permission_is_denied() {
    let bao = Bao::dev().await;
    // Access elsewhere under secret/ (so the mount check passes), explicitly none to rootseal/.
    let token = bao
        .token_with_policy(
            "elsewhere",
            r#"
path "secret/data/other/*" { capabilities = ["read"] }
path "secret/data/rootseal/*" { capabilities = ["deny"] }
path "secret/metadata/rootseal/*" { capabilities = ["deny"] }
"#,
            "",
        )
        .await;
    let s = VaultKvStore::connect(&settings(&bao, &token, "secret"))
        .await
        .expect("the mount check passes: the token has access under secret/");
    match s.get("k").await {
        Err(StoreError::PermissionDenied(msg)) => {
            assert!(
                msg.contains("permission denied by Vault at secret/data/rootseal/k"),
                "{msg}"
            );
            assert!(!msg.contains(&token), "{msg}");
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert!(matches!(
        s.put("k", b"x".to_vec(), 0).await,
        Err(StoreError::PermissionDenied(_))
    ));
    assert!(matches!(
        s.list().await,
        Err(StoreError::PermissionDenied(_))
    ));
    assert!(matches!(
        s.delete("k").await,
        Err(StoreError::PermissionDenied(_))
    ));

    // A token with nothing at all under secret/ fails at startup with a clear error.
    let nothing = bao
        .token_with_policy(
            "nothing",
            r#"path "cubbyhole/*" { capabilities = ["read"] }"#,
            "",
        )
        .await;
    let err = VaultKvStore::connect(&settings(&bao, &nothing, "secret"))
        .await
        .unwrap_err();
    assert!(matches!(err, SetupError::MountMissing { .. }), "{err}");
    assert!(!err.to_string().contains(&nothing));

    // A token that is not a token at all.
    let err = VaultKvStore::connect(&settings(&bao, "s.bogus-token-value", "secret"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("secret/"), "{err}");
    assert!(!err.to_string().contains("bogus-token-value"), "{err}");

    // The same operations with a token that may: they work (so the denials above are real).
    let rw = bao.token_with_policy("rw", RW_POLICY, "").await;
    let s = VaultKvStore::connect(&settings(&bao, &rw, "secret"))
        .await
        .unwrap();
    assert_eq!(s.put("k", b"x".to_vec(), 0).await.unwrap(), 1);
    assert_eq!(s.list().await.unwrap(), vec!["k"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_or_sealed_server_is_unavailable() {
    let mut bao = Bao::dev().await;
    let s = root_store(&bao).await;
    s.put("k", b"x".to_vec(), 0).await.unwrap();

    // Sealed: 503.
    bao.api_ok(Method::POST, "sys/seal", None).await;
    match s.get("k").await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains("sealed") && msg.contains(&bao.addr), "{msg}");
            assert!(!msg.contains(&bao.root_token), "{msg}");
        }
        other => panic!("expected Unavailable (sealed), got {other:?}"),
    }

    // Killed: connection refused.
    bao.kill();
    let checks = [
        s.get("k").await.map(|_| ()),
        s.put("k", b"y".to_vec(), 1).await.map(|_| ()),
        s.list().await.map(|_| ()),
        s.delete("k").await,
    ];
    for r in checks {
        match r {
            Err(StoreError::Unavailable(msg)) => {
                assert!(msg.contains(&bao.addr), "{msg}");
                assert!(!msg.contains(&bao.root_token), "token leaked: {msg}");
                let full = StoreError::Unavailable(msg).to_string();
                assert!(!full.contains(&bao.root_token), "{full}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    // Starting while Vault is down is allowed (boot order); operations report Unavailable.
    let s = VaultKvStore::connect(&settings(&bao, &bao.root_token, "secret"))
        .await
        .expect("an unreachable Vault is not fatal at startup");
    assert!(matches!(s.get("k").await, Err(StoreError::Unavailable(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_v1_missing_and_non_kv_mounts_are_rejected() {
    let bao = Bao::dev().await;
    bao.api_ok(
        Method::POST,
        "sys/mounts/kv1",
        Some(json!({"type": "kv", "options": {"version": "1"}})),
    )
    .await;
    bao.api_ok(
        Method::POST,
        "sys/mounts/kvplain",
        Some(json!({"type": "kv"})),
    )
    .await;
    bao.api_ok(
        Method::POST,
        "sys/mounts/tr",
        Some(json!({"type": "transit"})),
    )
    .await;
    bao.api_ok(
        Method::POST,
        "sys/mounts/team/kv2",
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;

    for mount in ["kv1", "kvplain"] {
        let err = VaultKvStore::connect(&settings(&bao, &bao.root_token, mount))
            .await
            .unwrap_err();
        assert!(matches!(err, SetupError::KvVersion1 { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(mount) && msg.contains("version 1"), "{msg}");
    }
    let err = VaultKvStore::connect(&settings(&bao, &bao.root_token, "nope"))
        .await
        .unwrap_err();
    assert!(matches!(err, SetupError::MountMissing { .. }), "{err}");
    assert!(err.to_string().contains("nope/"), "{err}");
    // A path inside another mount is not a mount.
    let err = VaultKvStore::connect(&settings(&bao, &bao.root_token, "secret/sub"))
        .await
        .unwrap_err();
    assert!(matches!(err, SetupError::MountMissing { .. }), "{err}");
    let err = VaultKvStore::connect(&settings(&bao, &bao.root_token, "tr"))
        .await
        .unwrap_err();
    assert!(matches!(err, SetupError::NotKv { .. }), "{err}");

    // A nested KV v2 mount works.
    let s = VaultKvStore::connect(&settings(&bao, &bao.root_token, "team/kv2"))
        .await
        .unwrap();
    assert_eq!(s.put("k", b"x".to_vec(), 0).await.unwrap(), 1);
    let (status, _) = bao.api(Method::GET, "team/kv2/data/rootseal/k", None).await;
    assert!(status.is_success());
}

#[tokio::test(flavor = "multi_thread")]
async fn renewable_token_is_renewed() {
    let bao = Bao::dev().await;
    // A 6 s token: without renewal it is expired (403) well before the second read.
    let token = bao.token_with_policy("rw", RW_POLICY, "6s").await;
    let s = VaultKvStore::connect(&settings(&bao, &token, "secret"))
        .await
        .unwrap();
    s.put("k", b"x".to_vec(), 0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(s.get("k").await.unwrap().unwrap().data, b"x");

    // Dropping the store stops renewal: the token then expires.
    drop(s);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (status, _) = bao
        .api_as(&token, Method::GET, "auth/token/lookup-self", None)
        .await;
    assert_eq!(status.as_u16(), 403, "renewal kept running after drop");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_vault_with_ca_cert_file() {
    let bao = Bao::dev_tls().await;
    let mut with_ca = settings(&bao, &bao.root_token, "secret");
    with_ca.ca_cert = Some(bao.ca_file());
    let s = VaultKvStore::connect(&with_ca)
        .await
        .expect("connect over https");
    assert_eq!(s.put("k", b"tls".to_vec(), 0).await.unwrap(), 1);
    assert_eq!(s.get("k").await.unwrap().unwrap().data, b"tls");

    // Without the CA the server's certificate is not trusted: unavailable, never a silent
    // fallback to plain HTTP or to no verification.
    let without = settings(&bao, &bao.root_token, "secret");
    let s = VaultKvStore::connect(&without).await.unwrap();
    match s.get("k").await {
        Err(StoreError::Unavailable(msg)) => {
            assert!(msg.contains(&bao.addr), "{msg}");
            assert!(msg.to_lowercase().contains("certificate"), "{msg}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // A CA file that is not PEM is a setup error naming the file.
    let bogus = bao.dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let mut bad = settings(&bao, &bao.root_token, "secret");
    bad.ca_cert = Some(bogus.clone());
    let err = VaultKvStore::connect(&bad).await.unwrap_err();
    assert!(matches!(err, SetupError::CaCert { .. }), "{err}");
    assert!(err.to_string().contains(&*bogus.to_string_lossy()), "{err}");
}

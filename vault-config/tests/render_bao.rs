//! Rendered HCL fed to a real OpenBao 2.7.2 (`bao server -config`).
#![allow(missing_docs)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Bao;
use reqwest::Method;
use rootseal_vault_config::{render_openbao_server_config, render_transit_seal_stanza};
use serde_json::json;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Poll `sys/health` until the node is initialised, unsealed and active (200).
async fn wait_active(bao: &Bao) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = bao.api(Method::GET, "sys/health", None).await;
        if status.as_u16() == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "bao never became active: {status} {body}\n{}",
            bao.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_shamir_raft_config_runs_and_escapes_exactly() {
    // A node id that needs every kind of escaping survives the round trip through bao's parser.
    let node_id = "n1 \"quoted\" back\\slash ${not.interpolated} %{x} tab\t";
    let mut bao = Bao::with_config(|api, cluster, data| {
        render_openbao_server_config(data, node_id, addr(api), addr(cluster), None)
    })
    .await;
    let v = bao
        .api_ok(
            Method::PUT,
            "sys/init",
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    bao.root_token = v["root_token"].as_str().unwrap().to_owned();
    let key = v["keys_base64"][0].as_str().unwrap().to_owned();
    let v = bao
        .api_ok(Method::PUT, "sys/unseal", Some(json!({ "key": key })))
        .await;
    assert_eq!(v["sealed"], false, "{v}");
    wait_active(&bao).await;
    let v = bao
        .api_ok(Method::GET, "sys/storage/raft/configuration", None)
        .await;
    assert_eq!(v["data"]["config"]["servers"][0]["node_id"], node_id, "{v}");
    let v = bao.api_ok(Method::GET, "sys/leader", None).await;
    assert_eq!(
        v["leader_address"],
        format!("http://127.0.0.1:{}", bao.port),
        "{v}"
    );
    bao.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_transit_seal_auto_unseals_openbao() {
    // The transit provider: a dev server with a transit key (standing in for rootseal's API,
    // which speaks the same protocol).
    let provider = Bao::dev().await;
    provider
        .api_ok(
            Method::POST,
            "sys/mounts/seal-transit",
            Some(json!({"type": "transit"})),
        )
        .await;
    provider
        .api_ok(
            Method::POST,
            "seal-transit/keys/autounseal",
            Some(json!({})),
        )
        .await;
    let stanza = render_transit_seal_stanza(
        &provider.addr,
        Some(&provider.root_token),
        "autounseal",
        "/seal-transit",
        None,
    );
    let mut bao = Bao::with_config(|api, cluster, data| {
        render_openbao_server_config(data, "n1", addr(api), addr(cluster), Some(&stanza))
    })
    .await;
    let (status, v) = bao.api(Method::GET, "sys/seal-status", None).await;
    assert!(status.is_success(), "{v}");
    assert_eq!(v["type"], "transit", "{v}");
    let v = bao
        .api_ok(
            Method::PUT,
            "sys/init",
            Some(json!({"recovery_shares": 1, "recovery_threshold": 1})),
        )
        .await;
    assert!(v["root_token"].is_string(), "{v}");
    wait_active(&bao).await;

    // A restart unseals through the transit seal with no unseal key.
    bao.restart_with_config().await;
    wait_active(&bao).await;
    let (_, v) = bao.api(Method::GET, "sys/seal-status", None).await;
    assert_eq!(
        (v["sealed"].clone(), v["type"].clone()),
        (json!(false), json!("transit"))
    );
}

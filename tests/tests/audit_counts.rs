//! Item counts in the audit log, end to end (real `rootseal dev` in block mode, SoftHSM2): a
//! transit batch's record carries its batch size; a bulk JSON batch's record carries its item
//! and failure counts; a binary bulk request (frames, and one object as a stream) has its start
//! record and an `.end` record with the same request id counting what its response carried; and
//! the log verifies afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_e2e::{free_port, rootseal_bin, rootseal_dev, Proc};
use serde_json::{json, Value};

const TOKEN: &str = "audit-counts-root-token-77a1";

fn records(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("seq").is_some())
        .map(|v| v["event"].clone())
        .collect()
}

/// A frame stream of `n` seal items (`docs/bulk-seal.md` §4.2): `RSBF` ‖ 1, `ITEM` records
/// (`aad_len:u32 = 0 ‖ plaintext`), `END` with the count.
fn seal_frames(n: u64) -> Vec<u8> {
    let mut b = b"RSBF\x01".to_vec();
    for i in 0..n {
        let pt = format!("item number {i}");
        let mut body = 0u32.to_be_bytes().to_vec();
        body.extend_from_slice(pt.as_bytes());
        b.push(0x01);
        b.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        b.extend_from_slice(&body);
    }
    b.push(0x7F);
    b.extend_from_slice(&8u32.to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b
}

fn stop(mut p: Proc) {
    assert!(
        p.signal("TERM", Duration::from_secs(20)).is_some(),
        "rootseal did not stop"
    );
}

#[test]
fn batch_and_bulk_records_carry_their_item_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let port = free_port();
    let server = rootseal_dev(&data, port, TOKEN, &tmp.path().join("rootseal.log"));
    let base = format!("http://127.0.0.1:{port}/v1/transit");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>, ctype: &str| {
        let req = c
            .post(format!("{base}/{path}"))
            .header("X-Vault-Token", TOKEN)
            .header("Content-Type", ctype)
            .body(body);
        rt.block_on(async move {
            let r = req.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.bytes().await.unwrap().to_vec())
        })
    };
    let json_post = |path: &str, v: Value| {
        let (s, b) = post(path, v.to_string().into_bytes(), "application/json");
        (
            s,
            serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
        )
    };
    let (s, v) = json_post("keys/k", json!({}));
    assert!((200..300).contains(&s), "create key: {s} {v}");
    let pt = B64.encode(b"thirty-two bytes of plaintext!!!");

    // A transit batch of 3.
    let (s, _) = json_post(
        "encrypt/k",
        json!({"batch_input": [{"plaintext": pt}, {"plaintext": pt}, {"plaintext": pt}]}),
    );
    assert_eq!(s, 200);
    // A bulk JSON batch of 5, one of which is not base64 (fails alone).
    let mut items: Vec<Value> = (0..4).map(|_| json!({"plaintext": pt})).collect();
    items.push(json!({"plaintext": "%%% not base64 %%%"}));
    let (s, v) = json_post("bulk-seal/k", json!({ "batch_input": items }));
    assert_eq!(s, 400, "{v}");
    let json_id = v["request_id"].as_str().unwrap().to_owned();
    // Binary frames: 4 items sealed, then unsealed.
    let (s, sealed) = post("bulk-seal/k", seal_frames(4), "application/octet-stream");
    assert_eq!(s, 200);
    assert!(sealed.starts_with(b"RSBF"));
    let (s, opened) = post("bulk-unseal/k", sealed, "application/octet-stream");
    assert_eq!(s, 200);
    assert!(opened.ends_with(&[0x7F, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 4]));
    // One object as a stream.
    // An object that itself begins like a frame stream: still one object.
    let mut obj = b"RSBF\x01".to_vec();
    obj.resize(200_000, 7);
    let (s, sealed_obj) = post(
        "bulk-seal/k?mode=stream",
        obj.clone(),
        "application/octet-stream",
    );
    assert_eq!(s, 200);
    let (s, back) = post("bulk-unseal/k", sealed_obj, "application/octet-stream");
    assert_eq!(s, 200);
    assert_eq!(back, obj);
    stop(server);

    let log = data.join("audit.log");
    let recs = records(&log);
    let of = |t: &str| -> Vec<&Value> { recs.iter().filter(|e| e["type"] == t).collect() };

    let enc = of("transit.encrypt");
    assert_eq!(enc.len(), 1, "{enc:?}");
    assert_eq!(enc[0]["items"], 3, "{}", enc[0]);

    let seals = of("bulk.seal");
    let json_rec = seals
        .iter()
        .find(|e| e["request_id"] == json_id.as_str())
        .unwrap_or_else(|| panic!("no record of the JSON bulk batch {json_id}: {seals:?}"));
    assert_eq!(json_rec["items"], 5, "{json_rec}");
    assert_eq!(json_rec["failed"], 1, "{json_rec}");
    assert_eq!(json_rec["result"], "error", "{json_rec}");

    // Binary: a start record and an end record per request, paired by request id.
    let seal_ends = of("bulk.seal.end");
    let unseal_ends = of("bulk.unseal.end");
    assert_eq!(seal_ends.len(), 2, "{seal_ends:?}");
    assert_eq!(unseal_ends.len(), 2, "{unseal_ends:?}");
    let by_form = |ends: &[&Value], form: &str| -> Value {
        ends.iter()
            .find(|e| e["form"] == form)
            .map(|e| (*e).clone())
            .unwrap_or_else(|| panic!("no {form} end record in {ends:?}"))
    };
    for (ends, starts) in [
        (&seal_ends, of("bulk.seal")),
        (&unseal_ends, of("bulk.unseal")),
    ] {
        let frames = by_form(ends, "frames");
        assert_eq!(frames["items"], 4, "{frames}");
        assert_eq!(frames["failed"], 0, "{frames}");
        assert_eq!(frames["result"], "ok", "{frames}");
        assert_eq!(frames["key"], "k", "{frames}");
        assert!(frames["bytes"].as_u64().unwrap() > 0, "{frames}");
        let object = by_form(ends, "object");
        assert_eq!(object["items"], 1, "{object}");
        assert_eq!(object["result"], "ok", "{object}");
        for end in [&frames, &object] {
            let start = starts
                .iter()
                .find(|s| s["request_id"] == end["request_id"])
                .unwrap_or_else(|| panic!("no start record for {end}"));
            assert_eq!(start["form"], end["form"], "{start} {end}");
            assert_eq!(start["status"], 200, "{start}");
        }
    }

    // The log verifies.
    let out = Command::new(rootseal_bin())
        .args(["audit", "public-key", "--data-dir"])
        .arg(&data)
        .env_remove("SOFTHSM2_CONF")
        .output()
        .unwrap();
    assert!(out.status.success());
    let pem = tmp.path().join("audit.pem");
    std::fs::write(&pem, &out.stdout).unwrap();
    let out = Command::new(rootseal_bin())
        .args(["audit", "verify", "--log"])
        .arg(&log)
        .arg("--public-key")
        .arg(&pem)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

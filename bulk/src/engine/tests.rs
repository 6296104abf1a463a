// The tests encode and decode with the `base64` crate: an implementation independent of the
// engine's (`base64-simd`), so both must agree on every item.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use rootseal_hsm::KeyringError;
use tokio::sync::mpsc;

use super::*;
use crate::error::{BulkError, RequestError};
use crate::frame::{self, FrameDecoder, Kind, REQUEST_ERROR};
use crate::pool::threads;
use crate::stream::{StreamOpener, StreamSealer};
use crate::testkeys::SoftKeys;

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

fn results(o: &JsonOutcome) -> Vec<serde_json::Value> {
    let joined = o.parts.concat();
    let s = format!("[{}]", String::from_utf8(joined).unwrap());
    serde_json::from_str(&s).unwrap()
}

type SealItem<'a> = (&'a [u8], Option<&'a str>, Option<&'a [u8]>);

fn seal_body(items: &[SealItem<'_>]) -> Bytes {
    let v: Vec<serde_json::Value> = items
        .iter()
        .map(|(pt, r, aad)| {
            let mut o = serde_json::json!({ "plaintext": b64(pt) });
            if let Some(r) = r {
                o["reference"] = (*r).into();
            }
            if let Some(a) = aad {
                o["associated_data"] = b64(a).into();
            }
            o
        })
        .collect();
    Bytes::from(serde_json::json!({ "batch_input": v }).to_string())
}

fn unseal_body(cts: &[serde_json::Value]) -> Bytes {
    Bytes::from(serde_json::json!({ "batch_input": cts }).to_string())
}

fn keys() -> Arc<SoftKeys> {
    Arc::new(SoftKeys::new(&["k", "other"]))
}

#[tokio::test]
async fn json_round_trip_in_order_with_references() {
    let keys = keys();
    let items: Vec<Vec<u8>> = (0..300).map(|i| vec![i as u8; i * 7]).collect();
    let refs: Vec<String> = (0..300).map(|i| format!("r{i}")).collect();
    let input: Vec<_> = items
        .iter()
        .zip(&refs)
        .map(|(p, r)| (p.as_slice(), Some(r.as_str()), Some(&b"ctx"[..])))
        .collect();
    let sealed = seal_json_async(keys.clone(), "k".into(), seal_body(&input))
        .await
        .unwrap();
    assert_eq!((sealed.ok, sealed.failed, sealed.status()), (300, 0, 200));
    let res = results(&sealed);
    for (i, r) in res.iter().enumerate() {
        assert_eq!(r["reference"], refs[i]);
        assert_eq!(r["key_version"], 2);
        assert!(r["ciphertext"].as_str().unwrap().starts_with("rsb1:"));
    }
    let cts: Vec<_> = res
        .iter()
        .map(|r| serde_json::json!({"ciphertext": r["ciphertext"], "reference": r["reference"], "associated_data": b64(b"ctx")}))
        .collect();
    let before = keys.calls.load(Ordering::Relaxed);
    let opened = unseal_json_async(keys.clone(), "k".into(), unseal_body(&cts))
        .await
        .unwrap();
    assert_eq!(
        keys.calls.load(Ordering::Relaxed) - before,
        1,
        "one unwrap for the whole batch"
    );
    assert_eq!((opened.ok, opened.failed), (300, 0));
    for (i, r) in results(&opened).iter().enumerate() {
        assert_eq!(
            STANDARD.decode(r["plaintext"].as_str().unwrap()).unwrap(),
            items[i]
        );
        assert_eq!(r["reference"], refs[i]);
    }
    // Each item also unseals alone.
    let one = unseal_json_async(keys.clone(), "k".into(), unseal_body(&cts[17..18]))
        .await
        .unwrap();
    assert_eq!(
        STANDARD
            .decode(results(&one)[0]["plaintext"].as_str().unwrap())
            .unwrap(),
        items[17]
    );
}

#[tokio::test]
async fn large_batch_one_key_job_each_way() {
    let keys = keys();
    let pt = vec![0xabu8; 4096];
    let input: Vec<_> = (0..2000).map(|_| (pt.as_slice(), None, None)).collect();
    let sealed = seal_json_async(keys.clone(), "k".into(), seal_body(&input))
        .await
        .unwrap();
    assert_eq!(keys.calls.load(Ordering::Relaxed), 1);
    assert_eq!(
        sealed.parts.len(),
        threads().min(2000),
        "sealed on every core"
    );
    let cts: Vec<_> = results(&sealed)
        .iter()
        .map(|r| serde_json::json!({"ciphertext": r["ciphertext"]}))
        .collect();
    let opened = unseal_json_async(keys.clone(), "k".into(), unseal_body(&cts))
        .await
        .unwrap();
    assert_eq!(keys.calls.load(Ordering::Relaxed), 2);
    assert_eq!(opened.ok, 2000);
}

#[tokio::test]
async fn per_item_errors_leave_others_alone() {
    let keys = keys();
    let body = Bytes::from(
        r#"{"batch_input":[{"plaintext":"aGk="},{"plaintext":"not base64!","reference":"bad"},{"plaintext":"eQ==","associated_data":"%%"},{"reference":"none"}]}"#,
    );
    let o = seal_json_async(keys.clone(), "k".into(), body)
        .await
        .unwrap();
    assert_eq!((o.ok, o.failed, o.status()), (1, 3, 400));
    let r = results(&o);
    assert!(r[0]["ciphertext"].is_string());
    assert_eq!(r[1]["error"], "plaintext is not valid base64");
    assert_eq!(r[1]["reference"], "bad");
    assert_eq!(r[2]["error"], "associated_data is not valid base64");
    assert_eq!(r[3]["error"], "missing plaintext");

    // Unseal: good, tampered, truncated, foreign key name, wrong aad, transit ciphertext, junk.
    let input = [
        (&b"one"[..], None, None),
        (&b"two"[..], None, Some(&b"ad"[..])),
    ];
    let s = results(
        &seal_json_async(keys.clone(), "k".into(), seal_body(&input))
            .await
            .unwrap(),
    );
    let foreign = results(
        &seal_json_async(keys.clone(), "other".into(), seal_body(&input[..1]))
            .await
            .unwrap(),
    );
    let good = s[0]["ciphertext"].as_str().unwrap().to_owned();
    let mut raw = STANDARD.decode(&good[5..]).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    let tampered = format!("rsb1:{}", b64(&raw));
    let truncated = format!("rsb1:{}", b64(&raw[..raw.len() - 20]));
    let mut reindexed = STANDARD.decode(&good[5..]).unwrap();
    reindexed[1 + 4 + 2 + 60 + 3] = 1; // claim index 1
    let reindexed = format!("rsb1:{}", b64(&reindexed));
    let mut v9 = STANDARD.decode(&good[5..]).unwrap();
    v9[0] = 9;
    let v9 = format!("rsb1:{}", b64(&v9));
    let cts = vec![
        serde_json::json!({"ciphertext": good, "reference": "ok"}),
        serde_json::json!({"ciphertext": tampered}),
        serde_json::json!({"ciphertext": truncated}),
        serde_json::json!({"ciphertext": foreign[0]["ciphertext"]}),
        serde_json::json!({"ciphertext": s[1]["ciphertext"], "associated_data": b64(b"wrong")}),
        serde_json::json!({"ciphertext": "vault:v1:abcd"}),
        serde_json::json!({"ciphertext": "rsb1:***"}),
        serde_json::json!({"ciphertext": reindexed}),
        serde_json::json!({"ciphertext": v9}),
        serde_json::json!({"ciphertext": s[1]["ciphertext"], "associated_data": b64(b"ad")}),
    ];
    let o = unseal_json_async(keys.clone(), "k".into(), unseal_body(&cts))
        .await
        .unwrap();
    let r = results(&o);
    assert_eq!((o.ok, o.failed), (2, 8));
    assert_eq!(
        STANDARD
            .decode(r[0]["plaintext"].as_str().unwrap())
            .unwrap(),
        b"one"
    );
    assert_eq!(r[0]["reference"], "ok");
    for i in [1, 3, 4, 7] {
        assert_eq!(r[i]["error"], "invalid ciphertext", "item {i}: {}", r[i]);
    }
    assert!(
        r[2]["error"].as_str().unwrap().contains("truncated")
            || r[2]["error"] == "invalid ciphertext",
        "{}",
        r[2]
    );
    assert!(
        r[5]["error"].as_str().unwrap().contains("transit"),
        "{}",
        r[5]
    );
    assert!(r[6]["error"].as_str().unwrap().contains("base64"));
    assert_eq!(r[8]["error"], "unsupported bulk format version 9");
    assert_eq!(
        STANDARD
            .decode(r[9]["plaintext"].as_str().unwrap())
            .unwrap(),
        b"two"
    );
    // partial_failure_response_code
    let mut b: serde_json::Value = serde_json::from_slice(&unseal_body(&cts)).unwrap();
    b["partial_failure_response_code"] = 207.into();
    let o = unseal_json_async(keys.clone(), "k".into(), Bytes::from(b.to_string()))
        .await
        .unwrap();
    assert_eq!(o.status(), 207);
}

#[tokio::test]
async fn request_level_errors() {
    let keys = keys();
    let e = seal_json_async(
        keys.clone(),
        "k".into(),
        Bytes::from(r#"{"batch_input":[{"plaintext":5}]}"#),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("failed to parse JSON"), "{e}");
    for body in [
        r#"{"batch_input":[]}"#,
        r#"{}"#,
        r#"{"batch_input":"[]"}"#,
        "not json",
        "[1,2]",
    ] {
        let e = seal_json_async(keys.clone(), "k".into(), Bytes::from(body))
            .await
            .unwrap_err();
        assert!(matches!(e, RequestError::Bulk(_)), "{body}: {e}");
        let e = unseal_json_async(keys.clone(), "k".into(), Bytes::from(body))
            .await
            .unwrap_err();
        assert!(matches!(e, RequestError::Bulk(_)), "{body}: {e}");
    }
    assert_eq!(
        keys.calls.load(Ordering::Relaxed),
        0,
        "no HSM job for a bad request"
    );
    let e = seal_json_async(
        keys.clone(),
        "nope".into(),
        seal_body(&[(b"x", None, None)]),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, RequestError::Keyring(KeyringError::NotFound)));
}

// ---- binary frames ----

async fn run_frames(keys: Arc<SoftKeys>, seal: bool, input: Vec<u8>, piece: usize) -> Vec<u8> {
    let chunks: Vec<Result<Bytes, std::io::Error>> = input
        .chunks(piece.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut stream = futures_util::stream::iter(chunks);
    let mut dec = FrameDecoder::new();
    while !dec.header().unwrap() {
        match stream.next().await {
            Some(Ok(c)) => dec.push(&c),
            _ => panic!("no header"),
        }
    }
    let (tx, mut rx) = mpsc::channel(4);
    if seal {
        let c = new_cipher(&keys, "k").await.unwrap();
        tokio::spawn(seal_frames(keys, "k".into(), c, dec, stream, tx));
    } else {
        tokio::spawn(unseal_frames(keys, "k".into(), dec, stream, tx));
    }
    let mut out = Vec::new();
    while let Some(b) = rx.recv().await {
        out.extend_from_slice(&b.unwrap());
    }
    out
}

fn decode(out: &[u8]) -> (Vec<frame::Frame>, Result<(), BulkError>) {
    let mut d = FrameDecoder::new();
    d.push(out);
    let mut v = Vec::new();
    loop {
        match d.next_frame() {
            Ok(Some(f)) => v.push(f),
            Ok(None) => return (v, d.finish()),
            Err(e) => return (v, Err(e)),
        }
    }
}

fn seal_request(items: &[Vec<u8>]) -> Vec<u8> {
    let mut req = Vec::new();
    frame::put_header(&mut req);
    for it in items {
        frame::put_record(&mut req, Kind::Item, &[&0u32.to_be_bytes(), it]);
    }
    frame::put_end(&mut req, items.len() as u64);
    req
}

#[tokio::test]
async fn frames_round_trip_and_pipe() {
    let keys = keys();
    let items: Vec<Vec<u8>> = (0..3000)
        .map(|i| vec![(i % 251) as u8; (i * 13) % 5000])
        .collect();
    let sealed = run_frames(keys.clone(), true, seal_request(&items), 65536).await;
    let (frames, end) = decode(&sealed);
    end.unwrap();
    assert_eq!(frames[0].kind, Kind::Batch);
    assert_eq!(
        frames.iter().filter(|f| f.kind == Kind::Sealed).count(),
        3000
    );
    assert_eq!(keys.calls.load(Ordering::Relaxed), 1);
    // The seal response is an unseal request as is.
    let opened = run_frames(keys.clone(), false, sealed.clone(), 7777).await;
    assert_eq!(keys.calls.load(Ordering::Relaxed), 2);
    let (frames, end) = decode(&opened);
    end.unwrap();
    let plains: Vec<_> = frames
        .iter()
        .filter(|f| f.kind == Kind::Plain)
        .map(|f| f.body.to_vec())
        .collect();
    assert_eq!(plains, items);
}

#[tokio::test]
async fn frames_bad_items_and_streams() {
    let keys = keys();
    let items: Vec<Vec<u8>> = (0..5).map(|i| vec![i as u8; 100]).collect();
    let sealed = run_frames(keys.clone(), true, seal_request(&items), 1000).await;
    let (frames, _) = decode(&sealed);
    // Rebuild an unseal request: tamper item 1, swap items 3 and 4 (out of order).
    let mut req = Vec::new();
    frame::put_header(&mut req);
    frame::put_record(&mut req, Kind::Batch, &[&frames[0].body]);
    let s: Vec<_> = frames[1..6].iter().map(|f| f.body.to_vec()).collect();
    let mut t = s[1].clone();
    t[10] ^= 1;
    for body in [&s[0], &t, &s[2], &s[4], &s[3]] {
        frame::put_record(&mut req, Kind::Sealed, &[body]);
    }
    frame::put_end(&mut req, 5);
    let (out, end) = decode(&run_frames(keys.clone(), false, req, 50).await);
    end.unwrap();
    let kinds: Vec<_> = out.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [
            Kind::Plain,
            Kind::Error,
            Kind::Plain,
            Kind::Plain,
            Kind::Error,
            Kind::End
        ]
    );
    assert_eq!(
        frame::split_error(&out[1].body).unwrap(),
        (1, "invalid ciphertext".into())
    );
    assert_eq!(
        frame::split_error(&out[4].body).unwrap().1,
        "item out of order in its batch"
    );

    // A malformed ITEM is a per-item error in a seal.
    let mut req = Vec::new();
    frame::put_header(&mut req);
    frame::put_record(&mut req, Kind::Item, &[&0u32.to_be_bytes(), b"ok"]);
    frame::put_record(
        &mut req,
        Kind::Item,
        &[&99u32.to_be_bytes(), b"lying aad length"],
    );
    frame::put_end(&mut req, 2);
    let (out, end) = decode(&run_frames(keys.clone(), true, req, 3).await);
    end.unwrap();
    assert_eq!(
        out.iter().map(|f| f.kind).collect::<Vec<_>>(),
        [Kind::Batch, Kind::Sealed, Kind::Error, Kind::End]
    );

    // Cut short, lying frame length, empty: request-level ERROR and no END.
    let full = seal_request(&items);
    let mut lying = seal_request(&items[..1]);
    lying[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
    for (req, what) in [
        (full[..full.len() - 3].to_vec(), "truncated"),
        (lying, "exceeds"),
        (seal_request(&[]), "empty"),
    ] {
        let (out, end) = decode(&run_frames(keys.clone(), true, req, 64).await);
        assert!(end.is_err(), "{what}: no END");
        let last = out.last().unwrap();
        assert_eq!(last.kind, Kind::Error);
        let (item, msg) = frame::split_error(&last.body).unwrap();
        assert_eq!(item, REQUEST_ERROR);
        assert!(msg.contains(what), "{what}: {msg}");
    }
    // A foreign BATCH record: every item of that batch fails alone.
    let mut req = Vec::new();
    frame::put_header(&mut req);
    let mut fb = frames[0].body.to_vec();
    fb[20] ^= 1;
    frame::put_record(&mut req, Kind::Batch, &[&fb]);
    frame::put_record(&mut req, Kind::Sealed, &[&s[0]]);
    frame::put_record(&mut req, Kind::Batch, &[&frames[0].body]);
    frame::put_record(&mut req, Kind::Sealed, &[&s[1]]);
    frame::put_end(&mut req, 2);
    let (out, end) = decode(&run_frames(keys.clone(), false, req, 1000).await);
    end.unwrap();
    assert_eq!(
        out.iter().map(|f| f.kind).collect::<Vec<_>>(),
        [Kind::Error, Kind::Plain, Kind::End]
    );
}

#[tokio::test]
async fn stream_driver_round_trip_and_cut() {
    let keys = keys();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let sealer = StreamSealer::new(new_cipher(&keys, "k").await.unwrap(), 4096, b"x").unwrap();
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(10_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let (tx, mut rx) = mpsc::channel(4);
    tokio::spawn(seal_stream(sealer, futures_util::stream::iter(chunks), tx));
    let mut sealed = Vec::new();
    while let Some(b) = rx.recv().await {
        sealed.extend_from_slice(&b.unwrap());
    }
    for (input, ok) in [
        (sealed.clone(), true),
        (sealed[..sealed.len() - 100].to_vec(), false),
    ] {
        let mut opener = StreamOpener::new(b"x");
        opener.push(&input[..200]);
        let h = opener.header().unwrap().unwrap().clone();
        opener.set_cipher(
            open_cipher(&keys, "k", h.version, &h.wrapped)
                .await
                .unwrap(),
        );
        let rest: Vec<Result<Bytes, std::io::Error>> = input[200..]
            .chunks(5000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(unseal_stream(opener, futures_util::stream::iter(rest), tx));
        let mut out = Vec::new();
        let mut failed = false;
        while let Some(b) = rx.recv().await {
            match b {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => failed = true,
            }
        }
        assert_eq!(!failed, ok);
        if ok {
            assert_eq!(out, data);
        }
    }
}

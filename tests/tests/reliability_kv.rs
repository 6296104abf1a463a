//! Vault KV store faults with real parts (issue 16, build item 5): `rootseal serve` (SoftHSM2
//! token) keeps its KEK records in a real OpenBao 2.7.2 KV v2 (`bao server -dev`), reached through
//! the testkit's [`FaultProxy`], a real TCP proxy switched to answer 500, 503, or to be slow.
//! Each fault: a write answers 503 with `Retry-After: 1` in Vault's envelope (rootseal does not
//! retry a KV call itself; the client does), the keys already loaded keep serving, a KV slower
//! than the 10 s request timeout gives 503 within it (never a hang), and once the proxy forwards
//! again the same process writes; a restart finds every key and decrypts every ciphertext.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_e2e::{dev_bao, free_port, vault_request, KvRootseal, Proc};
use rootseal_testkit::{FaultProxy, ProxyMode};
use serde_json::{json, Value};

/// The installation under test: [`KvRootseal`] with this file's request helpers.
struct Rs(KvRootseal);

impl std::ops::Deref for Rs {
    type Target = KvRootseal;
    fn deref(&self) -> &KvRootseal {
        &self.0
    }
}

impl Rs {
    fn new(dir: &Path, kv_addr: &str, kv_token: &str) -> Rs {
        Rs(KvRootseal::new(dir, kv_addr, kv_token, ""))
    }

    /// POST (or GET without a body): status, body, `Retry-After`.
    fn call(&self, path: &str, body: Option<Value>) -> (u16, Value, Option<String>) {
        vault_request(&self.addr, &self.token, path, body)
    }

    fn encrypt(&self, key: &str, pt: &str) -> String {
        let (s, v, _) = self.call(
            &format!("transit/encrypt/{key}"),
            Some(json!({"plaintext": B64.encode(pt)})),
        );
        assert_eq!(s, 200, "encrypt {key}: {v}");
        v["data"]["ciphertext"].as_str().unwrap().to_owned()
    }

    fn decrypt(&self, key: &str, ct: &str) -> String {
        let (s, v, _) = self.call(
            &format!("transit/decrypt/{key}"),
            Some(json!({"ciphertext": ct})),
        );
        assert_eq!(s, 200, "decrypt {key}: {v}");
        String::from_utf8(
            B64.decode(v["data"]["plaintext"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    }
}

fn assert_2xx(what: &str, (s, v, _): (u16, Value, Option<String>)) {
    assert!((200..300).contains(&s), "{what}: {s} {v}");
}

fn assert_store_503(what: &str, (s, v, retry): (u16, Value, Option<String>)) {
    assert_eq!(s, 503, "{what}: {v}");
    assert_eq!(retry.as_deref(), Some("1"), "{what}: Retry-After");
    let msg = v["errors"][0].as_str().unwrap_or_default();
    assert!(msg.contains("key store unavailable"), "{what}: {v}");
}

fn stop(mut p: Proc) {
    assert!(
        p.signal("TERM", Duration::from_secs(20)).is_some(),
        "rootseal did not stop"
    );
}

#[test]
fn vault_kv_answering_500_503_and_slow_gives_503_loses_nothing_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let kv = dev_bao(&tmp.path().join("kv"), free_port(), "kv-root", "bao.log");
    let proxy = FaultProxy::start(&kv.addr);
    let rs = Rs::new(&tmp.path().join("rs"), &proxy.url(), &kv.token);
    let out = rs.cmd(&["init"]).output().unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let srv = rs.serve("serve1.log");
    assert_2xx("create a", rs.call("transit/keys/a", Some(json!({}))));
    let mut cts = vec![("a", rs.encrypt("a", "before"), "before")];

    for code in [500, 503] {
        proxy.set(ProxyMode::Status(code));
        let n0 = proxy.requests();
        assert_store_503(
            &format!("create b, KV answering {code}"),
            rs.call("transit/keys/b", Some(json!({}))),
        );
        let calls = proxy.requests() - n0;
        assert!(calls >= 1, "the KV was not asked");
        eprintln!("KV {code}: a refused create made {calls} KV request(s)");
        assert_store_503(
            &format!("rotate a, KV answering {code}"),
            rs.call("transit/keys/a/rotate", Some(json!({}))),
        );
        // The key already loaded keeps serving.
        cts.push(("a", rs.encrypt("a", "during"), "during"));
        assert_eq!(rs.decrypt("a", &cts[0].1), "before");
    }

    // A KV slower than the request timeout (10 s): 503 within it, not a hang.
    proxy.set(ProxyMode::Delay(Duration::from_secs(15)));
    let t0 = Instant::now();
    assert_store_503(
        "create b, KV slower than the timeout",
        rs.call("transit/keys/b", Some(json!({}))),
    );
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(14), "{took:?}");
    eprintln!("KV slower than the timeout: 503 after {took:?}");
    // A slow KV within the timeout: slower, but it works.
    proxy.set(ProxyMode::Delay(Duration::from_millis(500)));
    assert_2xx(
        "create b, slow KV",
        rs.call("transit/keys/b", Some(json!({}))),
    );
    cts.push(("b", rs.encrypt("b", "slow"), "slow"));

    // The KV is back: the same process writes again.
    proxy.set(ProxyMode::Forward);
    assert_2xx(
        "rotate a",
        rs.call("transit/keys/a/rotate", Some(json!({}))),
    );
    assert_2xx("create c", rs.call("transit/keys/c", Some(json!({}))));
    cts.push(("c", rs.encrypt("c", "after"), "after"));
    cts.push(("a", rs.encrypt("a", "v2"), "v2"));
    stop(srv);

    // Nothing lost: a new process finds every key at its version and decrypts everything.
    let srv = rs.serve("serve2.log");
    for (name, latest) in [("a", 2), ("b", 1), ("c", 1)] {
        let (s, v, _) = rs.call(&format!("transit/keys/{name}"), None);
        assert_eq!(s, 200, "{name}: {v}");
        assert_eq!(v["data"]["latest_version"], latest, "{name}: {v}");
    }
    for (name, ct, pt) in &cts {
        assert_eq!(&rs.decrypt(name, ct), pt);
    }
    stop(srv);
}

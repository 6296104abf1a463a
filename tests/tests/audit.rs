//! The audit log end to end: a real `rootseal dev` (SoftHSM2 token, its Ed25519 audit key), real
//! files, real signals.
//!
//! * `kill -9` during a burst of requests: every response a client received has its record, and
//!   `rootseal audit verify` passes on what is on disk (a last line cut mid-write is reported as
//!   such, and repaired and recorded at the next start).
//! * block mode on a full disk (a file-size limit on the server, `prlimit`): requests get 503, none
//!   is answered unaudited, and service resumes when space returns.
//! * a full run's log holds none of the secrets it used (root token, PINs, plaintexts, data
//!   keys, a wrong token).
//! * a KEK record restored to an older version (file store) is refused, with the log naming it,
//!   and the other keys keep working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_e2e::{free_port, http_get, rootseal_bin, rootseal_dev, wait_for, Proc};
use serde_json::{json, Value};

const TOKEN: &str = "audit-e2e-root-token-5f1c";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn post(
    c: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    match c
        .post(format!("{base}/v1/{path}"))
        .header("X-Vault-Token", token)
        .json(&body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
    {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// `rootseal audit public-key --data-dir DIR` into DIR/../audit.pem.
fn public_key(data: &Path) -> std::path::PathBuf {
    let out = Command::new(rootseal_bin())
        .args(["audit", "public-key", "--data-dir"])
        .arg(data)
        .env_remove("SOFTHSM2_CONF")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = String::from_utf8(out.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let p = data.parent().unwrap().join("audit.pem");
    std::fs::write(&p, pem).unwrap();
    p
}

/// `rootseal audit verify`: (exit code, stdout).
fn verify(log: &Path, key: &Path) -> (i32, String) {
    let out = Command::new(rootseal_bin())
        .args(["audit", "verify", "--log"])
        .arg(log)
        .arg("--public-key")
        .arg(key)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn records(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("seq").is_some())
        .collect()
}

fn stop(mut p: Proc) {
    assert!(
        p.signal("TERM", Duration::from_secs(20)).is_some(),
        "rootseal did not stop"
    );
}

#[test]
fn kill9_during_a_burst_leaves_a_record_for_every_answer_and_a_log_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let srv = rootseal_dev(&data, port, TOKEN, &tmp.path().join("dev.log"));
    let pid = srv.pid();
    let rt = rt();
    let answered: Vec<String> = rt.block_on(async {
        let c = reqwest::Client::new();
        assert!(matches!(
            post(&c, &base, TOKEN, "transit/keys/burst", json!({}))
                .await
                .0,
            200 | 204
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for t in 0..16 {
            let (c, base, stop) = (c.clone(), base.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(30) {
                    let body = json!({"batch_input": [{"plaintext": B64.encode(format!("t{t}"))}]});
                    let (s, v) = post(&c, &base, TOKEN, "transit/encrypt/burst", body).await;
                    match s {
                        200 => ids.push(v["request_id"].as_str().unwrap().to_owned()),
                        0 => break,
                        s => panic!("unexpected {s}: {v}"),
                    }
                }
                ids
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // kill -9 while the burst runs.
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    drop(srv);
    assert!(
        answered.len() > 50,
        "the burst got only {} answers",
        answered.len()
    );
    let log = data.join("audit.log");
    let logged: BTreeSet<String> = records(&log)
        .iter()
        .filter_map(|r| r["event"]["request_id"].as_str().map(str::to_owned))
        .collect();
    for id in &answered {
        assert!(
            logged.contains(id),
            "request {id} was answered but has no audit record"
        );
    }
    let key = public_key(&data);
    let (code, out) = verify(&log, &key);
    // What is on disk verifies; the only thing a SIGKILL may leave is a last line cut mid-write
    // (never acknowledged), which verify names as such.
    assert!(
        code == 0 || (code == 11 && out.contains("ends in the middle")),
        "verify after kill -9: {code}\n{out}"
    );
    // The next start cuts such a line off and records that; a clean stop signs the rest.
    let srv = rootseal_dev(&data, port, TOKEN, &tmp.path().join("dev2.log"));
    stop(srv);
    let (code, out) = verify(&log, &key);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK:"), "{out}");
}

#[test]
fn block_mode_on_a_full_disk_answers_503_and_nothing_unaudited_then_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // A file-size limit stands in for a full disk (no root, no tmpfs needed): the server ignores
    // SIGXFSZ (inherited from the shell), so a write past the limit fails with EFBIG. Its output
    // goes through a pipe (`cat`), which the limit does not reach.
    let bin = rootseal_bin();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "trap '' XFSZ; \"$0\" dev --listen 127.0.0.1:{port} --data-dir \"$1\" \
             --dev-root-token {TOKEN} --audit-mode block 2>&1 | cat"
        ))
        .arg(&bin)
        .arg(&data)
        .env_remove("SOFTHSM2_CONF");
    let shell = Proc::spawn("rootseal", cmd, &tmp.path().join("dev.log"));
    let health = format!("{base}/v1/sys/health");
    wait_for(Duration::from_secs(30), || match http_get(&health) {
        Some((200, b)) => Some(b),
        _ => None,
    })
    .unwrap_or_else(|| panic!("dev did not start:\n{}", shell.output()));
    let srv = Pid::of(&format!(
        "^{} dev --listen 127.0.0.1:{port} ",
        bin.display()
    ));
    let log = data.join("audit.log");
    let rt = rt();
    let c = reqwest::Client::new();
    let enc = |n: u32| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            post(
                &c,
                &base,
                TOKEN,
                "transit/encrypt/disk",
                json!({"plaintext": B64.encode(format!("p{n}"))}),
            )
            .await
        }
    };
    let mut ok_ids = Vec::new();
    rt.block_on(async {
        let (s, v) = enc(0).await;
        assert_eq!(s, 200, "{v}");
        ok_ids.push(v["request_id"].as_str().unwrap().to_owned());
    });
    let before = records(&log).len();
    // The log's content ends where the writer's zero padding (4 MiB kept ahead of the records)
    // begins: the limit is put there, so not even the padding can take another record.
    let size = std::fs::read(&log)
        .unwrap()
        .iter()
        .position(|&b| b == 0)
        .unwrap_or_else(|| panic!("no padding ahead of the records")) as u64;
    // The disk is full: not one more byte fits in the log.
    // The soft limit only: raising it back needs no privilege.
    let st = Command::new("prlimit")
        .arg(format!("--pid={}", srv.0))
        .arg(format!("--fsize={size}:unlimited"))
        .status()
        .unwrap();
    assert!(st.success());
    rt.block_on(async {
        for n in 1..=5 {
            let (s, v) = enc(n).await;
            assert_eq!(s, 503, "{v}");
            let msg = v["errors"][0].as_str().unwrap_or_default();
            assert!(msg.contains("audit log unavailable"), "{v}");
            assert!(v.get("data").is_none(), "an unaudited answer: {v}");
        }
    });
    let (_, h) = http_get(&health).unwrap();
    assert!(h.contains("\"audit\":\"failing\""), "{h}");
    let metric = |name: &str| -> u64 {
        let (_, m) = http_get(&format!("{base}/metrics")).unwrap();
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{m}"))
            .parse()
            .unwrap()
    };
    assert_eq!(metric("rootseal_audit_failing"), 1);
    assert_eq!(metric("rootseal_audit_records"), before as u64);
    let syncs = metric("rootseal_audit_syncs_total");
    assert!(syncs > 0);
    assert_eq!(
        records(&log).len(),
        before,
        "records were written past a full disk"
    );
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        size,
        "a partial write was left behind"
    );
    // Space returns: the next request is answered (after the resume record).
    let st = Command::new("prlimit")
        .arg(format!("--pid={}", srv.0))
        .arg("--fsize=unlimited:unlimited")
        .status()
        .unwrap();
    assert!(st.success());
    rt.block_on(async {
        let (s, v) = enc(6).await;
        assert_eq!(s, 200, "{v}");
        ok_ids.push(v["request_id"].as_str().unwrap().to_owned());
    });
    let (_, h) = http_get(&health).unwrap();
    assert!(h.contains("\"audit\":\"block\""), "{h}");
    assert_eq!(metric("rootseal_audit_failing"), 0);
    assert!(metric("rootseal_audit_syncs_total") > syncs);
    srv.stop();
    drop(shell);
    let recs = records(&log);
    assert!(recs.iter().any(|r| r["event"]["type"] == "audit.resume"));
    let ok_records = recs
        .iter()
        .filter(|r| r["event"]["type"] == "transit.encrypt" && r["event"]["result"] == "ok")
        .count();
    assert_eq!(
        ok_records, 2,
        "exactly the two answered encrypts are recorded"
    );
    for id in &ok_ids {
        assert!(recs.iter().any(|r| r["event"]["request_id"] == id.as_str()));
    }
    let key = public_key(&data);
    let (code, out) = verify(&log, &key);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_full_run_writes_no_secret_to_the_audit_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let pin = "pin-7d3a91e2";
    let mut cmd = Command::new(rootseal_bin());
    cmd.args([
        "dev",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--dev-root-token",
        TOKEN,
    ])
    .args(["--dev-hsm-pin", pin, "--data-dir"])
    .arg(&data)
    .env_remove("SOFTHSM2_CONF");
    let srv = Proc::spawn("rootseal", cmd, &tmp.path().join("dev.log"));
    wait_for(Duration::from_secs(30), || {
        match http_get(&format!("{base}/v1/sys/health")) {
            Some((200, _)) => Some(()),
            _ => None,
        }
    })
    .unwrap_or_else(|| panic!("dev did not start:\n{}", srv.output()));
    let so_pin = std::fs::read_to_string(data.join("dev-hsm-so-pin")).unwrap();
    let plaintext = "the-secret-plaintext-0a9f";
    let wrong_token = "wrong-token-83c1d0";
    let mut secrets: Vec<String> = vec![
        TOKEN.into(),
        pin.into(),
        so_pin.trim().into(),
        plaintext.into(),
        B64.encode(plaintext),
        wrong_token.into(),
    ];
    rt().block_on(async {
        let c = reqwest::Client::new();
        let (s, v) = post(
            &c,
            &base,
            TOKEN,
            "transit/encrypt/app",
            json!({"plaintext": B64.encode(plaintext)}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
        secrets.push(ct.clone());
        let (s, v) = post(
            &c,
            &base,
            TOKEN,
            "transit/decrypt/app",
            json!({"ciphertext": ct}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = post(&c, &base, TOKEN, "transit/datakey/plaintext/app", json!({})).await;
        assert_eq!(s, 200, "{v}");
        secrets.push(v["data"]["plaintext"].as_str().unwrap().to_owned());
        secrets.push(v["data"]["ciphertext"].as_str().unwrap().to_owned());
        let (s, _) = post(
            &c,
            &base,
            wrong_token,
            "transit/encrypt/app",
            json!({"plaintext": B64.encode(plaintext)}),
        )
        .await;
        assert_eq!(s, 403);
        assert_eq!(
            post(&c, &base, TOKEN, "transit/keys/app/rotate", json!({}))
                .await
                .0,
            200
        );
    });
    stop(srv);
    let text = std::fs::read_to_string(data.join("audit.log")).unwrap();
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "the audit log contains a secret ({} chars)",
            s.len()
        );
    }
    // What it does hold: every operation, the auth failure, start and stop.
    for kind in [
        "transit.encrypt",
        "transit.decrypt",
        "transit.datakey.plaintext",
        "auth.failure",
        "key.rotate",
        "server.start",
        "server.stop",
        "kek.write",
        "custody.check",
    ] {
        assert!(
            text.contains(&format!("\"type\":\"{kind}\"")),
            "no {kind} record"
        );
    }
    let key = public_key(&data);
    assert_eq!(verify(&data.join("audit.log"), &key).0, 0);
}

#[test]
fn a_kek_record_restored_to_an_older_version_is_refused_and_named_in_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("dev");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let srv = rootseal_dev(&data, port, TOKEN, &tmp.path().join("dev.log"));
    let keys = data.join("keys");
    let snapshot = tmp.path().join("keys-backup");
    rt().block_on(async {
        let c = reqwest::Client::new();
        for k in ["victim", "other"] {
            let s = post(&c, &base, TOKEN, &format!("transit/keys/{k}"), json!({}))
                .await
                .0;
            assert!(matches!(s, 200 | 204), "{s}");
        }
    });
    // A backup of the store taken now...
    copy_dir(&keys, &snapshot);
    rt().block_on(async {
        let c = reqwest::Client::new();
        assert_eq!(
            post(&c, &base, TOKEN, "transit/keys/victim/rotate", json!({}))
                .await
                .0,
            200
        );
    });
    stop(srv);
    // ... restored later: the victim's record goes back to its version 1.
    copy_dir(&snapshot, &keys);
    let srv = rootseal_dev(&data, port, TOKEN, &tmp.path().join("dev2.log"));
    rt().block_on(async {
        let c = reqwest::Client::new();
        let (s, v) = post(
            &c,
            &base,
            TOKEN,
            "transit/encrypt/victim",
            json!({"plaintext": "aGk="}),
        )
        .await;
        assert!(s >= 400, "a rolled-back record was used: {s} {v}");
        let text = v.to_string();
        assert!(
            !text.contains("rolled back"),
            "the detail stays in the log: {text}"
        );
        let (s, v) = post(
            &c,
            &base,
            TOKEN,
            "transit/encrypt/other",
            json!({"plaintext": "aGk="}),
        )
        .await;
        assert_eq!(s, 200, "another key stopped working: {v}");
    });
    stop(srv);
    let recs = records(&data.join("audit.log"));
    let rb = recs
        .iter()
        .find(|r| r["event"]["type"] == "kek.rollback")
        .expect("no kek.rollback record");
    assert_eq!(rb["event"]["name"], "victim");
    assert!(
        rb["event"]["reason"]
            .as_str()
            .unwrap()
            .contains("rolled back"),
        "{rb}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A process found by its command line, sent SIGKILL when dropped.
struct Pid(u32);

impl Pid {
    fn of(pattern: &str) -> Pid {
        let out = Command::new("pgrep")
            .args(["-f", pattern])
            .output()
            .unwrap();
        let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        assert_eq!(pids.len(), 1, "pgrep {pattern}: {pids:?}");
        Pid(pids[0])
    }

    /// SIGTERM, then waits for it to exit.
    fn stop(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
        let gone = wait_for(Duration::from_secs(20), || {
            (!Path::new(&format!("/proc/{}", self.0)).exists()).then_some(())
        });
        assert!(gone.is_some(), "rootseal did not stop");
    }
}

impl Drop for Pid {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

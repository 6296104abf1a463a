//! Benchmark (ignored by default): `rootseal audit verify` of a 1,000,000-record log on one core.
//! The log is written by the real writer (block mode, 64 records in flight, a checkpoint every
//! 1,000 records) with checkpoints signed inside SoftHSM2 by the token's `rootseal-audit` key;
//! then the `rootseal audit verify` command is timed, pinned to one core (`taskset -c 0`).
//!
//! Run: `cargo build --release -p rootseal && ROOTSEAL_BIN=target/release/rootseal cargo nextest
//! run -p rootseal-e2e --test audit_verify_bench --run-ignored ignored-only --no-capture`
//! (`BENCH_RECORDS` changes the size). Prints one `BENCH verify_cli …` line; with a release
//! binary it fails below 200,000 records/s (the goal).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_audit::{AuditConfig, AuditLog, CheckpointSigner, Event, Mode};
use rootseal_e2e::rootseal_bin;
use rootseal_hsm::Hsm;
use rootseal_testkit::TestToken;

/// Signs checkpoints with the token's audit key (inside SoftHSM2).
struct HsmSigner {
    hsm: Hsm,
    public: [u8; 32],
    rt: tokio::runtime::Handle,
}

impl CheckpointSigner for HsmSigner {
    fn name(&self) -> &str {
        "rootseal-audit/bench"
    }
    fn public_key(&self) -> [u8; 32] {
        self.public
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        self.rt
            .block_on(self.hsm.audit_sign(msg.to_vec()))
            .map_err(|e| e.to_string())
    }
}

#[test]
#[ignore = "benchmark: a minute of writing, then the timed verify"]
fn audit_verify_of_a_million_records_on_one_core() {
    let n: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let token = TestToken::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let public = rt.block_on(async {
        token.init_root().await;
        let hsm = token.open().await;
        let public = hsm.audit_public_key().await.unwrap().expect("audit key");
        let signer = Arc::new(HsmSigner {
            hsm,
            public,
            rt: tokio::runtime::Handle::current(),
        });
        let cfg = AuditConfig {
            checkpoint_interval: Duration::from_secs(3600),
            ..AuditConfig::new(path.clone(), Mode::Block)
        };
        let c = cfg.clone();
        let log = tokio::task::spawn_blocking(move || {
            AuditLog::open(&c, "rootseal/bench/00".into(), Some(signer))
        })
        .await
        .unwrap()
        .unwrap();
        let mut pending = Vec::new();
        for i in 0..n {
            let ev = Event::new("transit.encrypt")
                .with("key", "bench")
                .with("version", 1)
                .with("items", 1)
                .with("result", "ok")
                .with("status", 200)
                .with("token", "root")
                .with("client", "127.0.0.1:54321")
                .with("request_id", format!("00000000-0000-4000-8000-{i:012}"));
            let l = log.clone();
            pending.push(tokio::spawn(async move { l.record(ev).await }));
            if pending.len() == 64 {
                for p in pending.drain(..) {
                    p.await.unwrap().unwrap();
                }
            }
        }
        for p in pending {
            p.await.unwrap().unwrap();
        }
        log.close().await;
        public
    });
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(&public);
    let pem = dir.path().join("audit.pem");
    std::fs::write(
        &pem,
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            B64.encode(der)
        ),
    )
    .unwrap();
    let bin = rootseal_bin();
    let release = !bin.to_string_lossy().contains("/debug/");
    let bytes = std::fs::metadata(&path).unwrap().len();
    // The page cache holds the log (it was just written): the figure is the verifier's, not the
    // disk's. One core: taskset.
    let t = Instant::now();
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&bin)
        .args(["audit", "verify", "--log"])
        .arg(&path)
        .arg("--public-key")
        .arg(&pem)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("OK: {n} records")), "{text}");
    let rps = n as f64 / secs;
    println!(
        "BENCH verify_cli records={n} bytes={bytes} secs={secs:.2} records_per_s={rps:.0} \
         binary={}",
        if release { "release" } else { "debug" }
    );
    if release {
        assert!(rps >= 200_000.0, "{rps:.0} records/s is below the goal");
    }
}

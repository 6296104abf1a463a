//! `scripts/bench-audit`: writes a log of `BENCH_RECORDS` (default 1,000,000) transit-encrypt
//! records with the real writer (best-effort mode, a checkpoint every 1,000, signed with a
//! software Ed25519 key), then times the offline verifier on one core. Prints `BENCH` lines.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use rootseal_audit::{
    verify, AuditConfig, AuditLog, CheckpointSigner, Event, Mode, Options, Verdict,
};

struct Soft(Ed25519KeyPair);

impl CheckpointSigner for Soft {
    fn name(&self) -> &str {
        "rootseal-audit/bench"
    }
    fn public_key(&self) -> [u8; 32] {
        self.0.public_key().as_ref().try_into().unwrap()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        Ok(self.0.sign(msg).as_ref().to_vec())
    }
}

fn main() {
    let n: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let signer = Arc::new(Soft(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()));
    let key = signer.public_key();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let t = Instant::now();
    rt.block_on(async {
        let cfg = AuditConfig {
            checkpoint_interval: Duration::from_secs(3600),
            queue: 1 << 20,
            ..AuditConfig::new(path.clone(), Mode::Block)
        };
        let log = AuditLog::open(&cfg, "rootseal/bench/00".into(), Some(signer)).unwrap();
        // 64 requests in flight at a time, as a busy server would have them.
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
    });
    let write = t.elapsed();
    let data = std::fs::read(&path).unwrap();
    println!(
        "BENCH write records={n} bytes={} secs={:.2} records_per_s={:.0}",
        data.len(),
        write.as_secs_f64(),
        n as f64 / write.as_secs_f64()
    );
    let t = Instant::now();
    let r = verify(&data, &key, &Options::default()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.verdict, Verdict::Intact, "{}", r.message);
    assert_eq!(r.records, n);
    println!(
        "BENCH verify records={n} checkpoints={} secs={secs:.2} records_per_s={:.0}",
        r.checkpoints,
        n as f64 / secs
    );
}

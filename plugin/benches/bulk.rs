//! The bulk-seal benchmark (`scripts/bench-bulk`): run with
//! `cargo bench -p rootseal --bench bulk` (add `-- inproc` or `-- json-phases` for the two
//! profiling aids). It prints the "Bulk seal" section of `docs/benchmarks.md`: figures are
//! same-run ratios against raw aws-lc-rs AES-256-GCM on all cores and against OpenBao transit
//! `batch_input` (when `BENCH_BAO_ADDR` and `BENCH_BAO_TOKEN` point at a `bao server -dev` with
//! transit).
//!
//! It lives in the binary's crate, not in `rootseal-bulk`, because it measures the HTTP face
//! too (the bulk routes on the production listener, a reqwest client); the engine's figures go
//! through `rootseal_bulk`'s public API alone.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use rootseal::{bulk_routes, ApiConfig, AppState};
use rootseal_bulk::{put_end, put_header, put_record, threads, FrameDecoder, Kind};
use rootseal_hsm::{CreateOptions, Hsm, Keyring};
use rootseal_testkit::TestToken;
use secrecy::SecretString;
use tokio::sync::mpsc;

const ITEM: usize = 4096;

fn main() {
    // `cargo bench` passes `--bench`; the first other argument picks the run.
    let run = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| "bulk".to_owned());
    // As the test runtime the benchmark ran on before: two async workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match run.as_str() {
        "bulk" => rt.block_on(bench_bulk()),
        "inproc" => rt.block_on(bench_bulk_inproc_only()),
        "json-phases" => rt.block_on(bench_bulk_json_phases()),
        other => {
            eprintln!("unknown run {other:?}: expected bulk, inproc or json-phases");
            std::process::exit(2);
        }
    }
}

/// The engine's nonce: a 96-bit big-endian counter (`docs/bulk-seal.md` §3), for the anchors.
fn counter_nonce(counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn secs() -> f64 {
    std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0)
}

/// Raw AES-256-GCM over 4 KiB items on `threads` threads: bytes per second.
fn raw_gcm(threads: usize, dur: f64) -> f64 {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
    let key = &key;
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut buf = vec![1u8; ITEM];
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed().as_secs_f64() < dur {
                        for _ in 0..256 {
                            let tag = key
                                .seal_in_place_separate_tag(
                                    counter_nonce((t as u64) << 40 | n),
                                    Aad::from(&[0u8; 64][..]),
                                    &mut buf,
                                )
                                .unwrap();
                            let _ = std::hint::black_box(tag);
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 * ITEM as f64 / dur
}

/// The engine's minimum work per item on `threads` threads, without framing or scheduling: copy
/// each 4 KiB item from a 4 MiB source into a 4 MiB output buffer and seal it there in place.
/// Bytes per second. An anchor: what the cipher does on data that is not hot in L1.
fn raw_copy_seal(threads: usize, dur: f64) -> f64 {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
    let key = &key;
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let src = vec![1u8; 4 << 20];
                    let mut dst = vec![0u8; (4 << 20) + 1024 * 16];
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed().as_secs_f64() < dur {
                        let mut at = 0;
                        for item in src.chunks(ITEM) {
                            let out = &mut dst[at..at + ITEM];
                            out.copy_from_slice(item);
                            let tag = key
                                .seal_in_place_separate_tag(
                                    counter_nonce((t as u64) << 40 | n),
                                    Aad::from(&[0u8; 64][..]),
                                    out,
                                )
                                .unwrap();
                            dst[at + ITEM..at + ITEM + 16].copy_from_slice(tag.as_ref());
                            at += ITEM + 16;
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 * ITEM as f64 / dur
}

/// memcpy of a 4 MiB buffer into another on `threads` threads (out of L2, like the engine's one
/// copy of each item into its output record): bytes per second. An anchor, not a goal.
fn raw_memcpy(threads: usize, dur: f64) -> f64 {
    let total: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let src = vec![1u8; 4 << 20];
                    let mut dst = vec![0u8; 4 << 20];
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed().as_secs_f64() < dur {
                        dst.copy_from_slice(std::hint::black_box(&src));
                        std::hint::black_box(&mut dst);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total as f64 * (4u64 << 20) as f64 / dur
}

/// Raw loopback TCP echo in this process (no HTTP, no crypto): the client sends `total` bytes
/// in 1 MiB writes while reading the echo back; bytes per second one way. The upper bound of
/// the loopback figure, which moves the same bytes in and out.
async fn loopback_echo(total: usize) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::with_capacity(256 << 10, r);
        tokio::io::copy_buf(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let piece = vec![0x42u8; 1 << 20];
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            w.write_all(&piece).await.unwrap();
            sent += piece.len();
        }
        w.shutdown().await.unwrap();
        sent
    });
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0usize;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    let sent = writer.await.unwrap();
    server.await.unwrap();
    assert_eq!(got, sent);
    got as f64 / start.elapsed().as_secs_f64()
}

/// Raw loopback TCP one way in this process (no HTTP, no crypto, nothing sent back): the client
/// sends `total` bytes in 1 MiB writes, the server reads them into a 1 MiB buffer. Bytes per
/// second. What loopback itself carries on this machine, whatever runs above it.
async fn loopback_one_way(total: usize) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0usize;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break got;
            }
            got += n;
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let piece = vec![0x42u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&piece).await.unwrap();
        sent += piece.len();
    }
    s.shutdown().await.unwrap();
    let got = server.await.unwrap();
    assert_eq!(got, sent);
    got as f64 / start.elapsed().as_secs_f64()
}

fn item_frames(n: usize) -> Bytes {
    let mut out = Vec::with_capacity(n * (ITEM + 9));
    let pt = vec![0x42u8; ITEM];
    for _ in 0..n {
        put_record(&mut out, Kind::Item, &[&0u32.to_be_bytes(), &pt]);
    }
    Bytes::from(out)
}

/// A frame request of `total` items as a stream of ~1 MiB pieces (reusing one piece).
fn frame_request(total: usize) -> (Vec<Bytes>, usize) {
    let per = 256;
    let piece = item_frames(per);
    let mut v = Vec::new();
    let mut head = Vec::new();
    put_header(&mut head);
    v.push(Bytes::from(head));
    let mut n = 0;
    while n + per <= total {
        v.push(piece.clone());
        n += per;
    }
    let mut end = Vec::new();
    put_end(&mut end, n as u64);
    v.push(Bytes::from(end));
    (v, n)
}

async fn keyring() -> (Keyring, Hsm, tempfile::TempDir) {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (hsm, kr) = token.keyring(&dir.path().join("keys")).await;
    kr.create_key("bench", CreateOptions::default())
        .await
        .unwrap();
    (kr, hsm, dir)
}

/// In-process binary sealing through the engine's frame driver: plaintext bytes per second.
async fn in_process(kr: &Keyring, items: usize) -> f64 {
    let (pieces, n) = frame_request(items);
    let start = Instant::now();
    let mut dec = FrameDecoder::new();
    let mut it = pieces.into_iter();
    dec.push(&it.next().unwrap());
    assert!(dec.header().unwrap());
    let cipher = rootseal_bulk::new_cipher(kr, "bench").await.unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let input = futures_util::stream::iter(it.map(Ok::<_, std::io::Error>));
    tokio::spawn(rootseal_bulk::seal_frames(
        kr.clone(),
        "bench".into(),
        cipher,
        dec,
        input,
        tx,
    ));
    let mut out = 0usize;
    while let Some(b) = rx.recv().await {
        out += b.unwrap().len();
    }
    assert!(out > n * ITEM);
    (n * ITEM) as f64 / start.elapsed().as_secs_f64()
}

/// The bulk routes alone (no token check) on the production listener.
async fn serve(kr: Keyring) -> String {
    let state = AppState::new(kr, SecretString::from("bench"), ApiConfig::default());
    let app = axum::Router::new()
        .nest("/v1/{mount}", bulk_routes())
        .with_state(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // The production listener (TCP_NODELAY, keep-alive), not axum's default one.
    tokio::spawn(rootseal::serve_listener(
        l,
        None,
        app,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// Binary frames over loopback HTTP: plaintext bytes sealed per second.
async fn loopback_binary(base: &str, items: usize) -> f64 {
    let client = reqwest::Client::new();
    let (pieces, n) = frame_request(items);
    let start = Instant::now();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        pieces.into_iter().map(Ok::<_, std::io::Error>),
    ));
    let resp = client
        .post(format!("{base}/v1/transit/bulk-seal/bench"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let mut s = resp.bytes_stream();
    let mut got = 0usize;
    while let Some(b) = s.next().await {
        got += b.unwrap().len();
    }
    assert!(got > n * ITEM);
    (n * ITEM) as f64 / start.elapsed().as_secs_f64()
}

fn json_body(n: usize) -> String {
    let pt = STANDARD.encode(vec![0x42u8; ITEM]);
    let v: Vec<_> = (0..n)
        .map(|_| serde_json::json!({ "plaintext": pt }))
        .collect();
    serde_json::json!({ "batch_input": v }).to_string()
}

/// Repeated JSON batch requests on one connection for `dur`: plaintext bytes per second.
async fn json_rate(url: &str, token: Option<&str>, body: &str, n: usize, dur: f64) -> f64 {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let mut reqs = 0usize;
    while start.elapsed().as_secs_f64() < dur {
        let mut rb = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            rb = rb.header("X-Vault-Token", t);
        }
        let r = rb.send().await.unwrap();
        let st = r.status();
        let b = r.bytes().await.unwrap();
        assert!(
            st.is_success(),
            "{url}: {st} {}",
            String::from_utf8_lossy(&b[..b.len().min(300)])
        );
        reqs += 1;
    }
    (reqs * n * ITEM) as f64 / start.elapsed().as_secs_f64()
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat` (Linux; 0 where
/// it cannot be read). Used to tell "cores busy" from "cores waiting" in a figure.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn gb(x: f64) -> String {
    format!("{:.2} GB/s", x / 1e9)
}
fn mb(x: f64) -> String {
    format!("{:.0} MB/s", x / 1e6)
}

/// Only the in-process binary figure and its anchor, for profiling (`perf record` this run).
async fn bench_bulk_inproc_only() {
    let dur = secs();
    let raw = raw_gcm(threads(), dur);
    let copy_seal = raw_copy_seal(threads(), dur);
    let (kr, _hsm, _dir) = keyring().await;
    let items = (dur * 1.0e9 / ITEM as f64) as usize;
    let (c0, t0) = (cpu_secs(), Instant::now());
    let inproc = in_process(&kr, items).await;
    let busy = (cpu_secs() - c0) / (t0.elapsed().as_secs_f64() * threads() as f64);
    println!(
        "raw GCM {} copy+seal {} in-process {} ({:.0}% of raw, {:.0}% of copy+seal, cores {:.0}% busy)",
        gb(raw),
        gb(copy_seal),
        gb(inproc),
        100.0 * inproc / raw,
        100.0 * inproc / copy_seal,
        100.0 * busy
    );
}

/// Every figure of the "Bulk seal" section, printed between `BENCH-BEGIN` and `BENCH-END`.
async fn bench_bulk() {
    let dur = secs();
    let cores = threads();
    let raw1 = raw_gcm(1, dur);
    let raw = raw_gcm(cores, dur);
    let memcpy = raw_memcpy(cores, dur);
    let copy_seal = raw_copy_seal(cores, dur);
    let echo = loopback_echo((dur * 1.0e9) as usize).await;
    let one_way = loopback_one_way((dur * 1.0e9) as usize).await;
    let (kr, hsm, _dir) = keyring().await;
    // The key's first use after start loads its L1 into the HSM (unwrap and MAC check), once
    // per process: count the calls of the batches alone.
    let _ = rootseal_bulk::new_cipher(&kr, "bench").await.unwrap();
    let before = hsm.metrics().total();
    let items = (dur * 1.0e9 / ITEM as f64) as usize; // ~1 GB per second of budget
    let (c0, t0) = (cpu_secs(), Instant::now());
    let inproc = in_process(&kr, items).await;
    let busy = (cpu_secs() - c0) / (t0.elapsed().as_secs_f64() * cores as f64);
    let inproc_calls = hsm.metrics().total() - before;
    let base = serve(kr.clone()).await;
    let before = hsm.metrics().total();
    let bin = loopback_binary(&base, items).await;
    let bin_calls = hsm.metrics().total() - before;
    let body = json_body(400);
    let url = format!("{base}/v1/transit/bulk-seal/bench");
    let _ = json_rate(&url, None, &body, 400, 0.3).await;
    let json = json_rate(&url, None, &body, 400, dur).await;
    let bao = match (
        std::env::var("BENCH_BAO_ADDR"),
        std::env::var("BENCH_BAO_TOKEN"),
    ) {
        (Ok(addr), Ok(tok)) => {
            let url = format!("{addr}/v1/transit/encrypt/bench");
            let _ = json_rate(&url, Some(&tok), &body, 400, 0.3).await;
            Some(json_rate(&url, Some(&tok), &body, 400, dur).await)
        }
        _ => None,
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    println!("\nBENCH-BEGIN");
    println!("## Bulk seal\n");
    println!("Run by `scripts/bench-bulk` ({cores} cores, {dur} s per figure, 4 KiB items, release build, SoftHSM2). Ratios are against anchors measured in the same run.\n");
    println!("| figure | value | ratio | target |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| anchor: aws-lc-rs AES-256-GCM, 1 core | {} | | |",
        gb(raw1)
    );
    println!(
        "| anchor: aws-lc-rs AES-256-GCM, {cores} cores | {} | | |",
        gb(raw)
    );
    println!(
        "| anchor: memcpy 4 MiB → 4 MiB, {cores} cores | {} | | |",
        gb(memcpy)
    );
    println!(
        "| anchor: raw loopback TCP echo, no HTTP or crypto (same process) | {} | | |",
        gb(echo)
    );
    println!(
        "| anchor: raw loopback TCP one way, no HTTP or crypto (same process) | {} | | |",
        gb(one_way)
    );
    println!(
        "| anchor: copy each 4 KiB item into an output buffer and seal it there, {cores} cores (no framing, no scheduling) | {} | | |",
        gb(copy_seal)
    );
    println!("| in-process binary sealing (frame driver, all cores; cores {:.0}% busy) | {} | {:.0}% of raw GCM on {cores} cores, {:.0}% of copy+seal | ≥ 50% of raw GCM |", 100.0 * busy, gb(inproc), 100.0 * inproc / raw, 100.0 * inproc / copy_seal);
    // Loopback sealing needs, per byte, the echo's four socket copies *and* the copy+seal, on
    // the same cores: its bound is the harmonic sum of the two anchors.
    let bound = 1.0 / (1.0 / echo + 1.0 / copy_seal);
    println!("| binary form over loopback HTTP (client in the same process) | {} | {:.0}% of raw loopback echo; {:.0}% of the bound 1/(1/echo + 1/copy+seal) = {} | ≥ 2 GB/s |", gb(bin), 100.0 * bin / echo, 100.0 * bin / bound, gb(bound));
    match bao {
        Some(b) => {
            println!("| anchor: OpenBao 2.7.2 transit encrypt `batch_input`, 400 × 4 KiB per request | {} | | |", mb(b));
            println!("| rootseal JSON bulk-seal, 400 × 4 KiB per request | {} | {:.1}× OpenBao transit | ≥ 5× |", mb(json), json / b);
        }
        None => println!(
            "| rootseal JSON bulk-seal, 400 × 4 KiB per request | {} | (OpenBao not run) | ≥ 5× |",
            mb(json)
        ),
    }
    println!("| HSM calls per request, one batch each: in-process run ({items} items) / loopback run ({items} items) | {inproc_calls} / {bin_calls} | | ≤ 2 per batch |");
    println!("BENCH-END");
}

/// Where a JSON bulk-seal request's time goes (profiling aid): the HSM job for the batch key,
/// the engine (parse, decode, seal, encode on all cores), and the whole HTTP round trip.
async fn bench_bulk_json_phases() {
    let (kr, _hsm, _dir) = keyring().await;
    let body = json_body(400);
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        let _ = rootseal_bulk::new_cipher(&kr, "bench").await.unwrap();
    }
    let mint = t.elapsed().as_secs_f64() / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        let _ =
            rootseal_bulk::seal_json_async(kr.clone(), "bench".into(), Bytes::from(body.clone()))
                .await
                .unwrap();
    }
    let eng = t.elapsed().as_secs_f64() / n as f64;
    let base = serve(kr.clone()).await;
    let url = format!("{base}/v1/transit/bulk-seal/bench");
    let (c0, t0) = (cpu_secs(), Instant::now());
    let rate = json_rate(&url, None, &body, 400, 2.0).await;
    let busy = (cpu_secs() - c0) / (t0.elapsed().as_secs_f64() * threads() as f64);
    let http = 400.0 * ITEM as f64 / rate;
    println!(
        "per request: batch key {:.0} µs, engine {:.0} µs, HTTP round trip {:.0} µs ({}, cores {:.0}% busy)",
        mint * 1e6,
        eng * 1e6,
        http * 1e6,
        mb(rate),
        100.0 * busy
    );
}

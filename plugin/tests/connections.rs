//! Connection bounds over real sockets against real SoftHSM2 (issue 16, item 1): sockets that
//! send nothing, half a header, or only the HTTP/2 preface are closed at the header-read
//! deadline while a normal client is served; the connection cap refuses the excess at once;
//! an idle HTTP/2 connection is closed after the idle timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rootseal::{app, serve_listener_with, ApiConfig, ConnLimits};
use rootseal_testkit::TestToken;
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "s.conn-test-token";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct Server {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _token: TestToken,
    _dir: tempfile::TempDir,
}

async fn server(limits: ConnLimits) -> Server {
    let token = TestToken::new();
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, keyring) = token.keyring(&dir.path().join("keys")).await;
    let router = app(keyring, SecretString::from(TOKEN), ApiConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_listener_with(
        listener,
        None,
        limits,
        router,
        async move {
            let _ = rx.await;
        },
    ));
    Server {
        addr,
        _stop: tx,
        _token: token,
        _dir: dir,
    }
}

/// One encrypt on a fresh connection (HTTP/1.1, `Connection: close`): the status, or `None` when
/// the server closed the connection without an answer.
async fn encrypt(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let body = r#"{"plaintext":"aGVsbG8="}"#;
    let req = format!(
        "PUT /v1/transit/encrypt/k HTTP/1.1\r\nHost: {addr}\r\nX-Vault-Token: {TOKEN}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).and_then(|c| c.parse().ok())
}

/// Waits until the server closes `s` (EOF or reset), at most `limit`; returns how long it took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            // HTTP/2: the server's SETTINGS, pings, GOAWAY: keep reading until it closes.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_preface_only_sockets_are_closed_at_the_deadline_while_clients_are_served() {
    let deadline = Duration::from_secs(2);
    let srv = server(ConnLimits {
        read_header_timeout: deadline,
        idle_timeout: deadline,
        ..ConnLimits::default()
    })
    .await;
    assert_eq!(encrypt(srv.addr).await, Some(200));

    let opened = Instant::now();
    let mut held = Vec::new();
    for i in 0..4000 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        match i % 4 {
            0 | 1 => {}                                        // nothing at all
            2 => s.write_all(PREFACE).await.unwrap(),          // only the HTTP/2 preface
            _ => s.write_all(b"GET /v1/sys/h").await.unwrap(), // half a request line
        }
        held.push(s);
    }
    // A normal client is served while they are held.
    for _ in 0..20 {
        assert_eq!(encrypt(srv.addr).await, Some(200));
    }
    // Every held socket is closed, none before the deadline's order of magnitude, all soon after.
    let grace = deadline + Duration::from_secs(5);
    for (i, s) in held.iter_mut().enumerate() {
        let left = grace.saturating_sub(opened.elapsed());
        assert!(
            closed_within(s, left.max(Duration::from_millis(1)))
                .await
                .is_some(),
            "socket {i} (kind {}) still open {:?} after it was opened",
            i % 4,
            opened.elapsed()
        );
    }
    assert!(
        opened.elapsed() >= deadline - Duration::from_millis(300),
        "closed before the deadline"
    );
    assert_eq!(encrypt(srv.addr).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_refuses_the_excess_at_once() {
    let srv = server(ConnLimits {
        max_connections: 8,
        read_header_timeout: Duration::from_secs(2),
        ..ConnLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    // Give the accept loop time to take all eight.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(srv.addr).await.unwrap();
    let took = closed_within(&mut extra, Duration::from_secs(1)).await;
    assert!(
        took.is_some(),
        "the connection over the cap was not closed at once"
    );
    assert_eq!(encrypt(srv.addr).await, None, "served over the cap");
    // Once the held ones hit their deadline, there is room again.
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(8)).await.is_some());
    }
    let served = {
        let mut ok = false;
        for _ in 0..20 {
            if encrypt(srv.addr).await == Some(200) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ok
    };
    assert!(served, "no room after the held connections closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_and_a_busy_one_is_not() {
    let idle = Duration::from_secs(2);
    let srv = server(ConnLimits {
        read_header_timeout: idle,
        idle_timeout: idle,
        ..ConnLimits::default()
    })
    .await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("http://{}/v1/transit/encrypt/k", srv.addr);
    let send = || {
        client
            .put(&url)
            .header("X-Vault-Token", TOKEN)
            .body(r#"{"plaintext":"aGVsbG8="}"#)
            .send()
    };
    // Busy: a request every 500 ms for three idle periods, on one HTTP/2 connection.
    let start = Instant::now();
    while start.elapsed() < idle * 3 {
        let r = send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A raw HTTP/2 connection that sends the preface and SETTINGS and then nothing.
    let mut raw = TcpStream::connect(srv.addr).await.unwrap();
    raw.write_all(PREFACE).await.unwrap();
    raw.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let took = closed_within(&mut raw, idle + Duration::from_secs(5)).await;
    assert!(took.is_some(), "an idle HTTP/2 connection stayed open");
    // The client still works (reqwest opens a new connection if its old one was closed).
    assert_eq!(send().await.unwrap().status(), 200);
}

/// One `GET /v1/sys/health` from `local` (a loopback address of the client's choosing) on a new
/// connection: the status, the `Retry-After` header and the body.
async fn health_from(addr: SocketAddr, local: std::net::IpAddr) -> (u16, Option<String>, String) {
    let client = reqwest::Client::builder()
        .local_address(local)
        .build()
        .unwrap();
    let r = client
        .get(format!("http://{addr}/v1/sys/health"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_token_are_held_to_the_clients_rate_and_tokens_are_not() {
    // 2 per second, no burst: one answer now, two delayed (0.5 s and 1 s, the longest wait),
    // and every further one at once with 429.
    let srv = server(ConnLimits {
        unauthenticated: rootseal::RateLimit { rate: 2, burst: 1 },
        ..ConnLimits::default()
    })
    .await;
    let me: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let started = Instant::now();
    let flood: Vec<_> = (0..10)
        .map(|_| tokio::spawn(health_from(srv.addr, me)))
        .collect();
    // While they wait, requests with a token from the same address are answered, none limited.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..10 {
        assert_eq!(encrypt(srv.addr).await, Some(200));
    }
    // Another client address is not affected by this one's flood.
    let other = health_from(srv.addr, "127.0.0.2".parse().unwrap()).await;
    assert_eq!(other.0, 200, "another client was limited: {other:?}");
    let mut ok = 0;
    let mut refused = 0;
    for f in flood {
        let (status, retry, body) = f.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                refused += 1;
                assert_eq!(retry.as_deref(), Some("1"), "429 without Retry-After");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert!(
                    v["errors"][0].as_str().unwrap().contains("retry later"),
                    "{body}"
                );
            }
            s => panic!("health answered {s}: {body}"),
        }
    }
    assert!(
        (3..=4).contains(&ok),
        "{ok} answered within the rate of 2/s"
    );
    assert_eq!(ok + refused, 10);
    // The delayed answers came at the client's rate: the last one after about a second.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the flood was answered in {:?}, not held to its rate",
        started.elapsed()
    );
    // After its window the client is answered again at once.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(health_from(srv.addr, me).await.0, 200);

    // A made-up token does not lift the limit: refused tokens (403) count against it too.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let client = reqwest::Client::new();
    let forged: Vec<_> = (0..10)
        .map(|_| {
            let req = client
                .put(format!("http://{}/v1/transit/encrypt/k", srv.addr))
                .header("X-Vault-Token", "s.made-up")
                .body(r#"{"plaintext":"aGVsbG8="}"#)
                .send();
            tokio::spawn(async move { req.await.unwrap().status().as_u16() })
        })
        .collect();
    let mut codes = Vec::new();
    for f in forged {
        codes.push(f.await.unwrap());
    }
    let denied = codes.iter().filter(|c| **c == 403).count();
    let limited = codes.iter().filter(|c| **c == 429).count();
    assert!(
        (3..=4).contains(&denied) && denied + limited == 10,
        "made-up tokens: {codes:?}"
    );
    // The real token is still served at once.
    assert_eq!(encrypt(srv.addr).await, Some(200));
}

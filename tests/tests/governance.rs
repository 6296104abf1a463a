//! Dual control end to end, against real SoftHSM2: one token for rootseal and one token per
//! operator, each in its own `SOFTHSM2_CONF` directory, each approval in its own `rootseal`
//! process with that operator's environment only.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rootseal_e2e::{free_port, rootseal_bin, wait_for, Proc};
use rootseal_hsm::{default_softhsm_module, SoftHsmDir};
use secrecy::SecretString;

const PIN: &str = "main-pin-1234";

struct Op {
    name: String,
    conf: PathBuf,
    uri: String,
    pem: String,
}

struct World {
    dir: PathBuf,
    conf: PathBuf,
    cfg: PathBuf,
    port: u16,
    ops: Vec<Op>,
    _tmp: tempfile::TempDir,
}

fn module() -> String {
    default_softhsm_module()
        .expect("softhsm2")
        .display()
        .to_string()
}

/// Runs `rootseal ARGS` with only `conf` as SoftHSM2 configuration.
fn run_in(conf: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(rootseal_bin())
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .env_remove("ROOTSEAL_HSM_PIN")
        .env_remove("ROOTSEAL_HSM_SO_PIN")
        .env_remove("ROOTSEAL_ROOT_TOKEN")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run rootseal");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A SoftHSM2 directory with one token.
fn token_dir(dir: &Path, label: &str, pin: &str) -> PathBuf {
    let d = SoftHsmDir::create(dir).expect("softhsm dir");
    d.init_token(
        label,
        &SecretString::from(pin.to_owned()),
        &SecretString::from(format!("so-{pin}")),
    )
    .expect("init token");
    d.conf
}

impl World {
    /// rootseal's token, and one token per operator (`(name, role)`), each with its key made by
    /// `rootseal operator key` in its own process.
    fn new(operators: &[(&str, &str)], extra_config: &str) -> World {
        World::new_with_p256(operators, extra_config, &[])
    }

    /// As [`World::new`], the operators named in `p256` with ECDSA P-256 keys.
    fn new_with_p256(operators: &[(&str, &str)], extra_config: &str, p256: &[&str]) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let conf = token_dir(&dir.join("main"), "rootseal", PIN);
        std::fs::write(dir.join("pin"), format!("{PIN}\n")).unwrap();
        // The main token's SO PIN is what token_dir set.
        std::fs::write(dir.join("so-pin"), format!("so-{PIN}\n")).unwrap();
        let port = free_port();
        let cfg = dir.join("rootseal.toml");
        std::fs::write(
            &cfg,
            format!(
                "[listener]\naddress = \"127.0.0.1:{port}\"\n[hsm]\nmodule = \"{}\"\n\
                 token_label = \"rootseal\"\npin_file = \"pin\"\n[storage]\nbackend = \"file\"\n\
                 path = \"store\"\n{extra_config}",
                module()
            ),
        )
        .unwrap();
        let mut w = World {
            dir,
            conf,
            cfg,
            port,
            ops: Vec::new(),
            _tmp: tmp,
        };
        for (name, _) in operators {
            let alg = if p256.contains(name) {
                "ecdsa-p256"
            } else {
                "ed25519"
            };
            w.add_operator_alg(name, alg);
        }
        let list: Vec<serde_json::Value> = operators
            .iter()
            .map(|(n, r)| serde_json::json!({"name": n, "role": r, "public_key": w.op(n).pem}))
            .collect();
        std::fs::write(
            w.dir.join("operators.json"),
            serde_json::json!({ "operators": list }).to_string(),
        )
        .unwrap();
        w
    }

    fn add_operator(&mut self, name: &str) {
        self.add_operator_alg(name, "ed25519");
    }

    fn add_operator_alg(&mut self, name: &str, alg: &str) {
        let d = self.dir.join(format!("op-{name}"));
        let pin = format!("{name}-pin");
        let conf = token_dir(&d, name, &pin);
        std::fs::write(d.join("pin"), format!("{pin}\n")).unwrap();
        let uri = format!(
            "pkcs11:token={name};object=rootseal-op?module-path={}&pin-source=file:{}",
            module(),
            d.join("pin").display()
        );
        let (ok, pem, err) = run_in(
            &conf,
            &["operator", "key", "--signer", &uri, "--algorithm", alg],
        );
        assert!(ok, "operator key: {err}");
        assert!(err.contains(alg), "a new {alg} key: {err}");
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
        // Again: the same key (made once).
        let (ok, pem2, _) = run_in(&conf, &["operator", "key", "--signer", &uri]);
        assert!(ok && pem2 == pem, "operator key is stable");
        self.ops.push(Op {
            name: name.to_owned(),
            conf,
            uri,
            pem,
        });
    }

    fn op(&self, name: &str) -> &Op {
        self.ops.iter().find(|o| o.name == name).expect("operator")
    }

    /// `rootseal ARGS --config CFG` on rootseal's token.
    fn rs(&self, args: &[&str]) -> (bool, String, String) {
        let mut a: Vec<&str> = args.to_vec();
        let cfg = self.cfg.display().to_string();
        a.extend(["--config", &cfg]);
        run_in(&self.conf, &a)
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.rs(args);
        assert!(ok, "rootseal {args:?} failed: {err}");
        out
    }

    fn propose(&self, op: &str, params: &[&str], requester: &str, file: &str) -> PathBuf {
        let path = self.dir.join(file);
        let p = path.display().to_string();
        let mut a = vec![
            "ceremony",
            "propose",
            "--op",
            op,
            "--out",
            &p,
            "--requester",
            requester,
        ];
        for x in params {
            a.extend(["--param", x]);
        }
        self.ok(&a);
        path
    }

    /// `ceremony approve` in the operator's own process, with only their token.
    fn approve(&self, file: &Path, name: &str) -> (bool, String, String) {
        let op = self.op(name);
        run_in(
            &op.conf,
            &[
                "ceremony",
                "approve",
                &file.display().to_string(),
                "--operator",
                name,
                "--signer",
                &op.uri,
            ],
        )
    }

    fn approve_ok(&self, file: &Path, name: &str) {
        let (ok, _, err) = self.approve(file, name);
        assert!(ok, "approve by {name}: {err}");
    }

    fn execute(&self, file: &Path) -> (bool, String, String) {
        let so = self.dir.join("so-pin").display().to_string();
        self.rs(&[
            "ceremony",
            "execute",
            &file.display().to_string(),
            "--so-pin-file",
            &so,
        ])
    }

    fn refused(&self, file: &Path, want: &str) {
        let (ok, out, err) = self.execute(file);
        assert!(!ok, "executed, should be refused ({want}): {out}");
        assert!(err.contains(want), "refusal should name {want:?}: {err}");
    }

    /// `init --operators`, then a 2-of-3 SO `root.init` ceremony.
    fn bootstrap(&self, requester: &str, approvers: &[&str]) {
        let ops = self.dir.join("operators.json").display().to_string();
        self.ok(&["init", "--operators", &ops]);
        let f = self.propose("root.init", &[], requester, "init.json");
        self.approve_ok(&f, requester);
        for a in approvers {
            self.approve_ok(&f, a);
        }
        let (ok, out, err) = self.execute(&f);
        assert!(ok, "root.init: {err}");
        assert!(out.contains("root.init"), "{out}");
    }

    /// A `token.create` ceremony proposed by `requester`, approved by `approver`, executed:
    /// the token it prints.
    fn token_ceremony(&self, params: &[&str], requester: &str, approver: &str) -> String {
        let f = self.propose("token.create", params, requester, "token.json");
        self.approve_ok(&f, requester);
        self.approve_ok(&f, approver);
        let (ok, out, err) = self.execute(&f);
        assert!(ok, "token.create: {err}");
        let token = out.trim().to_owned();
        assert!(token.starts_with("rst.") && !token.contains('\n'), "{out}");
        token
    }

    /// `rootseal serve` on this world's config: the process, its base URL and its health body.
    fn serve(&self) -> (Proc, String, String) {
        let mut cmd = Command::new(rootseal_bin());
        cmd.args(["serve", "--config"])
            .arg(&self.cfg)
            .env("SOFTHSM2_CONF", &self.conf)
            .env_remove("ROOTSEAL_ROOT_TOKEN");
        let srv = Proc::spawn("serve", cmd, &self.dir.join("serve.log"));
        let base = format!("http://127.0.0.1:{}", self.port);
        let health = wait_for(Duration::from_secs(20), || {
            rootseal_e2e::http_get(&format!("{base}/v1/sys/health")).filter(|(s, _)| *s == 200)
        })
        .expect("server up");
        (srv, base, health.1)
    }

    fn current_root(&self) -> String {
        let out = self.ok(&["root", "status"]);
        out.lines()
            .find(|l| l.contains("Current"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_owned()
    }
}

const FOUR: &[(&str, &str)] = &[
    ("alice", "so"),
    ("bob", "so"),
    ("carol", "so"),
    ("dave", "co"),
];

#[test]
fn two_of_three_root_rotation_and_every_refusal() {
    let w = World::new(FOUR, "");
    // Before the bootstrap, today's direct commands are refused with governance on.
    let (ok, _, err) = w.rs(&["init"]);
    assert!(!ok && err.contains("root.init ceremony"), "{err}");
    w.bootstrap("alice", &["bob", "carol"]);
    let root0 = w.current_root();
    assert_eq!(
        root0.len(),
        32,
        "a root exists: {}",
        w.ok(&["root", "status"])
    );
    let (ok, _, err) = w.rs(&["root", "rotate"]);
    assert!(!ok && err.contains("root.rotate ceremony"), "{err}");
    w.ok(&["key", "create", "k0"]);

    // 2 of 3 SO (the requester alice signs the request; bob and carol approve).
    let good = w.propose("root.rotate", &["grace_secs=0"], "alice", "rotate.json");
    let (ok, shown, _) = run_in(&w.conf, &["ceremony", "show", &good.display().to_string()]);
    assert!(
        ok && shown.contains("root.rotate") && shown.contains("not signed yet"),
        "{shown}"
    );
    w.approve_ok(&good, "alice");
    w.approve_ok(&good, "bob");
    w.approve_ok(&good, "carol");
    let (_, shown, _) = run_in(&w.conf, &["ceremony", "show", &good.display().to_string()]);
    assert!(
        shown.contains("bob (ed25519") && shown.contains("carol (ed25519"),
        "{shown}"
    );
    let (ok, out, err) = w.execute(&good);
    assert!(ok, "2-of-3 rotation: {err}");
    assert!(out.contains("Root rotated"), "{out}");
    let root1 = w.current_root();
    assert_ne!(root0, root1, "the root changed");
    assert!(w.ok(&["key", "show", "k0"]).contains("k0"));

    // A replayed id.
    w.refused(&good, "already executed");

    // 1 of 2.
    let f = w.propose("root.rotate", &["grace_secs=0"], "alice", "one.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    w.refused(&f, "quorum not met");

    // The same operator twice: approve refuses it, and so does execute for a hand-made file.
    let (ok, _, err) = w.approve(&f, "bob");
    assert!(!ok && err.contains("approved twice"), "{err}");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    let first = v["approvals"][0].clone();
    v["approvals"].as_array_mut().unwrap().push(first);
    std::fs::write(&f, v.to_string()).unwrap();
    w.refused(&f, "approved twice");

    // The requester approving their own request.
    let f = w.propose("root.rotate", &["grace_secs=0"], "alice", "self.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    w.refused(&f, "approved their own request");

    // A wrong role: a Crypto Officer on an SO-only operation.
    let f = w.propose("root.rotate", &["grace_secs=0"], "alice", "role.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    w.approve_ok(&f, "dave");
    w.refused(&f, "role co cannot approve");

    // An expired request.
    let f = w.propose("root.rotate", &["grace_secs=0"], "alice", "exp.json");
    let (ok, _, _) = w.rs(&[
        "ceremony",
        "propose",
        "--op",
        "root.rotate",
        "--out",
        &f.display().to_string(),
        "--requester",
        "alice",
        "--ttl",
        "2s",
    ]);
    assert!(ok);
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    w.approve_ok(&f, "carol");
    std::thread::sleep(Duration::from_secs(3));
    w.refused(&f, "expired");

    // A changed parameter after signing (1 SO + 1 CO destruction).
    w.ok(&["key", "create", "k1"]);
    let f = w.propose("key.destroy", &["key=k1"], "alice", "destroy.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    w.approve_ok(&f, "dave");
    let text = std::fs::read_to_string(&f).unwrap();
    let changed = w.dir.join("destroy-changed.json");
    std::fs::write(&changed, text.replace("\"key\":\"k1\"", "\"key\":\"k0\"")).unwrap();
    let (ok, _, err) = w.execute(&changed);
    assert!(
        !ok && (err.contains("does not verify") || err.contains("requester")),
        "{err}"
    );
    assert!(w.ok(&["key", "show", "k0"]).contains("k0"), "k0 untouched");
    // The unchanged file destroys k1.
    let (ok, _, err) = w.execute(&f);
    assert!(ok, "key.destroy: {err}");
    let (ok, _, _) = w.rs(&["key", "show", "k1"]);
    assert!(!ok, "k1 destroyed");

    // An unregistered key, and an operator of a foreign registry signing under a registered
    // name.
    let mut w = w;
    w.add_operator("eve");
    let f = w.propose("root.rotate", &["grace_secs=0"], "alice", "eve.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    w.approve_ok(&f, "eve");
    w.refused(&f, "unregistered key");
    let f = w.propose("root.rotate", &["grace_secs=0"], "alice", "foreign.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    let eve = w.op("eve");
    let (ok, _, err) = run_in(
        &eve.conf,
        &[
            "ceremony",
            "approve",
            &f.display().to_string(),
            "--operator",
            "carol",
            "--signer",
            &eve.uri,
        ],
    );
    assert!(ok, "{err}");
    w.refused(&f, "unregistered key");

    // m = 0 in config: refused when the config is read.
    let good_cfg = std::fs::read_to_string(&w.cfg).unwrap();
    std::fs::write(
        &w.cfg,
        format!("{good_cfg}[governance.quorum]\nroot_rotate = {{ so = 0 }}\n"),
    )
    .unwrap();
    let f2 = w.dir.join("m0.json");
    let (ok, _, err) = w.rs(&[
        "ceremony",
        "propose",
        "--op",
        "root.rotate",
        "--out",
        &f2.display().to_string(),
        "--requester",
        "alice",
    ]);
    assert!(!ok && err.contains("m = 0"), "{err}");
    std::fs::write(&w.cfg, &good_cfg).unwrap();

    // An SO removed by operators.set can no longer approve.
    let reg = serde_json::json!({"operators": [
        {"name": "alice", "role": "so", "public_key": w.op("alice").pem},
        {"name": "bob", "role": "so", "public_key": w.op("bob").pem},
        {"name": "dave", "role": "co", "public_key": w.op("dave").pem},
    ]});
    let regf = w.dir.join("new-operators.json");
    std::fs::write(&regf, reg.to_string()).unwrap();
    let pending = w.propose("root.rotate", &["grace_secs=0"], "alice", "pending.json");
    let f = w.propose(
        "operators.set",
        &[&format!("operators=@{}", regf.display())],
        "alice",
        "opset.json",
    );
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    w.approve_ok(&f, "carol");
    let (ok, _, err) = w.execute(&f);
    assert!(ok, "operators.set: {err}");
    // A ceremony made under the old registry is refused.
    w.approve_ok(&pending, "alice");
    w.approve_ok(&pending, "bob");
    w.approve_ok(&pending, "carol");
    w.refused(&pending, "registry");
    let f = w.propose("root.rotate", &["grace_secs=0"], "bob", "after.json");
    w.approve_ok(&f, "bob");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "carol");
    w.refused(&f, "unregistered key");
}

#[test]
fn kill_during_execute_leaves_it_done_or_not_done() {
    let w = World::new(FOUR, "");
    w.bootstrap("alice", &["bob", "carol"]);
    for i in 0..6 {
        w.ok(&["key", "create", &format!("k{i}")]);
    }
    for (n, delay_ms) in [150u64, 400, 800, 1500].into_iter().enumerate() {
        let before = w.current_root();
        let f = w.propose(
            "root.rotate",
            &["grace_secs=0"],
            "alice",
            &format!("kill{n}.json"),
        );
        w.approve_ok(&f, "alice");
        w.approve_ok(&f, "bob");
        w.approve_ok(&f, "carol");
        let so = w.dir.join("so-pin");
        let mut c = Command::new(rootseal_bin());
        c.args(["ceremony", "execute"])
            .arg(&f)
            .arg("--so-pin-file")
            .arg(&so)
            .arg("--config")
            .arg(&w.cfg)
            .env("SOFTHSM2_CONF", &w.conf)
            .env("RUST_LOG", "warn");
        let mut p = Proc::spawn("execute", c, &w.dir.join(format!("kill{n}.log")));
        std::thread::sleep(Duration::from_millis(delay_ms));
        let status = p.signal("KILL", Duration::from_secs(10));
        // Whatever the kill interrupted, executing the same file again either finishes it (it
        // was started) or runs it (it was not), and then it is done, once.
        let (ok, _, err) = w.execute(&f);
        let finished_before = !ok && err.contains("already executed");
        assert!(
            ok || finished_before,
            "after kill at {delay_ms} ms ({status:?}): {err}"
        );
        w.refused(&f, "already executed");
        let after = w.current_root();
        assert_ne!(before, after, "rotated exactly once more");
        let st = w.ok(&["root", "status"]);
        assert_eq!(st.matches("Root ").count(), 1, "one root left: {st}");
        for i in 0..6 {
            assert!(w
                .ok(&["key", "show", &format!("k{i}")])
                .contains(&format!("k{i}")));
        }
    }
}

async fn call(
    c: &reqwest::Client,
    url: &str,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = c
        .post(url)
        .header("X-Vault-Token", token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[test]
fn user_token_grants_over_http() {
    let w = World::new(FOUR, "");
    w.bootstrap("alice", &["bob", "carol"]);
    for k in ["a", "b", "c"] {
        w.ok(&["key", "create", k]);
    }
    let token = w.token_ceremony(
        &[
            "role=user",
            "keys=a,b",
            "ops=encrypt,decrypt",
            "ttl_secs=2592000",
            "name=app",
        ],
        "alice",
        "dave",
    );
    assert!(token.starts_with("rst."), "{token}");
    let listed = w.ok(&["token", "list"]);
    assert!(
        listed.contains("app") && !listed.contains(&token),
        "{listed}"
    );
    let store = std::fs::read_dir(w.dir.join("store"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(!store.contains(&token), "the token itself is never stored");

    let (_srv, base, health) = w.serve();
    assert!(
        health.contains("\"governance\":\"on\"") && health.contains("\"root_token\":\"off\""),
        "{health}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let pt = serde_json::json!({"plaintext": "aGVsbG8="});
        let mut cts = std::collections::HashMap::new();
        for key in ["a", "b", "c"] {
            let (s, v) = call(
                &c,
                &format!("{base}/v1/transit/encrypt/{key}"),
                &token,
                pt.clone(),
            )
            .await;
            let want = if key == "c" { 403 } else { 200 };
            assert_eq!(s, want, "encrypt {key}: {v}");
            if s == 200 {
                cts.insert(key, v["data"]["ciphertext"].as_str().unwrap().to_owned());
            } else {
                assert_eq!(v, serde_json::json!({"errors": ["permission denied"]}));
            }
        }
        for key in ["a", "b", "c"] {
            let ct = cts
                .get(key)
                .cloned()
                .unwrap_or_else(|| "vault:v1:AAAA".into());
            let (s, v) = call(
                &c,
                &format!("{base}/v1/transit/decrypt/{key}"),
                &token,
                serde_json::json!({"ciphertext": ct}),
            )
            .await;
            assert_eq!(s, if key == "c" { 403 } else { 200 }, "decrypt {key}: {v}");
            for (path, body) in [
                (
                    format!("rewrap/{key}"),
                    serde_json::json!({"ciphertext": ct}),
                ),
                (format!("datakey/plaintext/{key}"), serde_json::json!({})),
                (format!("keys/{key}/rotate"), serde_json::json!({})),
                (
                    format!("keys/{key}/config"),
                    serde_json::json!({"deletion_allowed": true}),
                ),
                (format!("bulk-seal/{key}"), serde_json::json!({})),
            ] {
                let (s, v) = call(&c, &format!("{base}/v1/transit/{path}"), &token, body).await;
                assert_eq!(s, 403, "{path} is not granted: {v}");
            }
        }
        let (s, _) = call(
            &c,
            &format!("{base}/v1/transit/encrypt/a"),
            "rst.wrong",
            pt.clone(),
        )
        .await;
        assert_eq!(s, 403);
        let r = c
            .get(format!("{base}/v1/auth/token/lookup-self"))
            .header("X-Vault-Token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["data"]["display_name"], "token-app");
        assert_eq!(v["data"]["meta"]["keys"], "a,b");
        assert_eq!(v["data"]["meta"]["ops"], "encrypt,decrypt");
        assert!(v["data"]["ttl"].as_u64().unwrap() > 700 * 3600);
        assert!(
            !v.to_string().contains(&token),
            "lookup-self never echoes the token"
        );
    });

    // A revoked token is denied (within the token cache's refresh): a token.revoke ceremony.
    let f = w.propose("token.revoke", &["who=app"], "alice", "revoke.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "dave");
    let (ok, _, err) = w.execute(&f);
    assert!(ok, "token.revoke: {err}");
    rt.block_on(async {
        let c = reqwest::Client::new();
        let mut last = 0;
        for _ in 0..20 {
            let (s, _) = call(
                &c,
                &format!("{base}/v1/transit/encrypt/a"),
                &token,
                serde_json::json!({"plaintext": "aGk="}),
            )
            .await;
            last = s;
            if s == 403 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(last, 403, "revoked token denied");
    });
    // The server held the audit log while the CLI ran the revoke ceremony: the server writes its
    // record from the ledger.
    let rec = wait_for(Duration::from_secs(15), || {
        let log = std::fs::read_to_string(w.dir.join("audit.log")).unwrap_or_default();
        log.lines()
            .find(|l| l.contains("\"op\":\"token.revoke\"") && l.contains("ceremony.execute"))
            .map(str::to_owned)
    })
    .expect("the server records the token.revoke ceremony");
    assert!(
        rec.contains("\"recorded_by\":\"server\"")
            && rec.contains("\"approvals\"")
            && !rec.contains(&token),
        "{rec}"
    );
}

/// Issuing and revoking API tokens are Crypto Officer actions: with governance on `token
/// create|revoke` are refused, a `token.create` ceremony needs a CO's approval (an SO's does not
/// count: wrong role), and each ceremony runs once.
#[test]
fn token_issue_and_revoke_need_a_crypto_officer() {
    let w = World::new(FOUR, "");
    w.bootstrap("alice", &["bob", "carol"]);
    w.ok(&["key", "create", "a"]);
    let (ok, _, err) = w.rs(&[
        "token", "create", "--role", "user", "--keys", "a", "--ops", "encrypt",
    ]);
    assert!(!ok && err.contains("token.create"), "{err}");
    let (ok, _, err) = w.rs(&["token", "revoke", "x"]);
    assert!(!ok && err.contains("token.revoke"), "{err}");

    let params = ["role=user", "keys=a", "ops=encrypt", "name=t1"];
    // No CO approval: refused.
    let f = w.propose("token.create", &params, "alice", "t-none.json");
    w.approve_ok(&f, "alice");
    w.refused(&f, "quorum not met");
    // An SO's approval: wrong role.
    w.approve_ok(&f, "bob");
    w.refused(&f, "role so cannot approve");
    // A CO requester approving their own request does not count either.
    let f = w.propose("token.create", &params, "dave", "t-self.json");
    w.approve_ok(&f, "dave");
    w.approve_ok(&f, "dave");
    w.refused(&f, "approved their own request");
    // A grant that does not fit its role is refused before anything is issued.
    let f = w.propose(
        "token.create",
        &["role=user", "keys=a", "ops=rotate"],
        "alice",
        "t-bad.json",
    );
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "dave");
    w.refused(&f, "not a user operation");
    assert!(
        !w.ok(&["token", "list"]).contains("t1"),
        "nothing issued yet"
    );

    // With the CO: issued, once.
    let f = w.propose("token.create", &params, "alice", "t-ok.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "dave");
    let (ok, out, err) = w.execute(&f);
    assert!(ok, "{err}");
    assert!(out.trim().starts_with("rst."), "{out}");
    let listed = w.ok(&["token", "list"]);
    assert!(
        listed.contains("t1") && listed.contains("active") && listed.contains("ceremony="),
        "{listed}"
    );
    w.refused(&f, "already executed");
    // The audit log (no server holds it: the CLI wrote it) has the full transcript, never the
    // token.
    let log = std::fs::read_to_string(w.dir.join("audit.log")).unwrap();
    let rec: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| {
            r.to_string().contains("\"ceremony.execute\"")
                && r.to_string().contains("\"op\":\"token.create\"")
        })
        .unwrap_or_else(|| panic!("no token.create ceremony record in the audit log:\n{log}"));
    let text = rec.to_string();
    assert!(
        text.contains("\"recorded_by\":\"cli\"")
            && text.contains("\"approvals\"")
            && text.contains("dave"),
        "{text}"
    );
    assert!(
        !log.contains(out.trim()),
        "the token is never in the audit log"
    );
    let f = w.propose("token.revoke", &["who=t1"], "alice", "r-so.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    w.refused(&f, "role so cannot approve");
    let f = w.propose("token.revoke", &["who=t1"], "alice", "r-co.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "dave");
    let (ok, _, err) = w.execute(&f);
    assert!(ok, "{err}");
    assert!(w.ok(&["token", "list"]).contains("REVOKED"));
    // Nothing left to revoke: refused before it runs.
    let f = w.propose("token.revoke", &["who=t1"], "alice", "r-again.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "dave");
    w.refused(&f, "no active token");
}

/// `vault seal-config` puts a scoped User token in the stanza (encrypt and decrypt on the seal
/// key only), issued by a CO-approved `token.create` ceremony; OpenBao auto-unseals with it.
#[test]
fn seal_config_issues_a_scoped_seal_token_and_openbao_unseals_with_it() {
    let w = World::new(FOUR, "");
    w.bootstrap("alice", &["bob", "carol"]);
    for k in ["autounseal", "other"] {
        w.ok(&["key", "create", k]);
    }
    // Without a ceremony: refused, naming it.
    let (ok, _, err) = w.rs(&["vault", "seal-config"]);
    assert!(!ok && err.contains("token.create"), "{err}");
    // A ceremony for a wider grant is not a seal token.
    let wide = w.propose(
        "token.create",
        &["role=user", "keys=autounseal", "ops=encrypt,decrypt,rewrap"],
        "alice",
        "seal-wide.json",
    );
    w.approve_ok(&wide, "alice");
    w.approve_ok(&wide, "dave");
    let (ok, _, err) = w.rs(&[
        "vault",
        "seal-config",
        "--ceremony",
        &wide.display().to_string(),
    ]);
    assert!(
        !ok && err.contains("not a token.create ceremony for the seal grant"),
        "{err}"
    );
    // Not approved by a CO: refused.
    let f = w.propose(
        "token.create",
        &[
            "role=user",
            "keys=autounseal",
            "ops=encrypt,decrypt",
            "name=openbao-seal",
        ],
        "alice",
        "seal.json",
    );
    w.approve_ok(&f, "alice");
    let (ok, _, err) = w.rs(&[
        "vault",
        "seal-config",
        "--ceremony",
        &f.display().to_string(),
    ]);
    assert!(!ok && err.contains("quorum not met"), "{err}");
    w.approve_ok(&f, "dave");
    let stanza = w.ok(&[
        "vault",
        "seal-config",
        "--ceremony",
        &f.display().to_string(),
    ]);
    assert!(stanza.contains("seal \"transit\""), "{stanza}");
    let token = stanza
        .lines()
        .find(|l| l.trim_start().starts_with("token"))
        .and_then(|l| l.split('"').nth(1))
        .unwrap_or_default()
        .to_owned();
    assert!(
        token.starts_with("rst."),
        "a scoped token in the stanza: {stanza}"
    );

    let (_srv, base, _) = w.serve();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let (s, v) = call(
            &c,
            &format!("{base}/v1/transit/encrypt/autounseal"),
            &token,
            serde_json::json!({"plaintext": "aGVsbG8="}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let ct = v["data"]["ciphertext"].as_str().unwrap().to_owned();
        let (s, v) = call(
            &c,
            &format!("{base}/v1/transit/decrypt/autounseal"),
            &token,
            serde_json::json!({ "ciphertext": ct }),
        )
        .await;
        assert_eq!(
            (s, v["data"]["plaintext"].as_str()),
            (200, Some("aGVsbG8=")),
            "{v}"
        );
        for (path, body) in [
            ("encrypt/other", serde_json::json!({"plaintext": "aGk="})),
            ("decrypt/other", serde_json::json!({ "ciphertext": ct })),
            ("rewrap/autounseal", serde_json::json!({ "ciphertext": ct })),
            ("keys/autounseal/rotate", serde_json::json!({})),
            (
                "keys/autounseal/config",
                serde_json::json!({"deletion_allowed": true}),
            ),
            ("keys/newkey", serde_json::json!({})),
        ] {
            let (s, v) = call(&c, &format!("{base}/v1/transit/{path}"), &token, body).await;
            assert_eq!(s, 403, "{path} must be denied to the seal token: {v}");
        }
        let r = c
            .delete(format!("{base}/v1/transit/keys/autounseal"))
            .header("X-Vault-Token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "key deletion denied");
        let r = c
            .get(format!("{base}/v1/transit/keys?list=true"))
            .header("X-Vault-Token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "key listing denied");
    });

    // OpenBao auto-unseals through rootseal with that token: after init, and after a restart.
    let mut ob = rootseal_e2e::OpenBao::new(&w.dir.join("bao"), &stanza);
    ob.start(&[]);
    let st = ob.wait_status(Duration::from_secs(30));
    assert_eq!(st, Some((false, true)), "fresh OpenBao: {}", ob.log());
    let _root = ob.init();
    assert!(
        ob.wait_sealed(false, Duration::from_secs(30)),
        "not unsealed after init:\n{}",
        ob.log()
    );
    ob.stop();
    ob.start(&[]);
    assert!(
        ob.wait_sealed(false, Duration::from_secs(30)),
        "not auto-unsealed after restart:\n{}",
        ob.log()
    );
    ob.stop();
}

/// An operator whose token offers ECDSA P-256 only: `operator key --algorithm ecdsa-p256` makes
/// a P-256 key on it, `ceremony approve` signs with `CKM_ECDSA` over SHA-256, and a 2-of-3 root
/// rotation with that approval executes (and a P-256 signature over a changed request does not).
#[test]
fn two_of_three_with_one_p256_approver() {
    let w = World::new_with_p256(FOUR, "", &["carol"]);
    assert!(
        w.op("carol")
            .pem
            .starts_with("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"),
        "a P-256 SPKI: {}",
        w.op("carol").pem
    );
    // The P-256 operator approves root.init too.
    w.bootstrap("alice", &["bob", "carol"]);
    let root0 = w.current_root();
    let f = w.propose("root.rotate", &["grace_secs=0"], "alice", "p256.json");
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "carol");
    let (_, shown, _) = run_in(&w.conf, &["ceremony", "show", &f.display().to_string()]);
    assert!(shown.contains("carol (ecdsa-p256"), "{shown}");
    // Only the P-256 approval: 1 of 2, refused.
    w.refused(&f, "quorum not met");
    // A changed request: the P-256 signature does not verify.
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
    let mut changed = v.clone();
    changed["request"]["params"]["grace_secs"] = serde_json::json!("1");
    changed["request"]["requester_signature"] = v["request"]["requester_signature"].clone();
    let cf = w.dir.join("p256-changed.json");
    std::fs::write(&cf, changed.to_string()).unwrap();
    let (ok, _, err) = w.execute(&cf);
    assert!(
        !ok && (err.contains("does not verify") || err.contains("requester")),
        "{err}"
    );
    // With bob (Ed25519): 2 of 3, executed.
    w.approve_ok(&f, "bob");
    let (ok, out, err) = w.execute(&f);
    assert!(ok, "2-of-3 with a P-256 approver: {err}");
    assert!(out.contains("Root rotated"), "{out}");
    assert_ne!(root0, w.current_root());
}

/// Every file under `dir`, recursively, as text (lossy).
fn all_files_text(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
                out.push((p, text));
            }
        }
    }
    out
}

/// Issue 13: with governance on, marking a key version compromised is a `lifecycle.compromise`
/// ceremony (SO + CO), and trimming is a `key.destroy` ceremony with `min_available_version`,
/// which destroys the trimmed version's blob in the store (crypto-shredding).
#[test]
fn compromise_and_trim_are_ceremonies_and_trim_shreds_the_blob() {
    let w = World::new(FOUR, "");
    w.bootstrap("alice", &["bob", "carol"]);
    w.ok(&["key", "create", "k"]);
    let (ok, _, err) = w.rs(&["key", "compromise", "k", "--version", "1"]);
    assert!(!ok && err.contains("lifecycle.compromise"), "{err}");

    // The CO's approval is needed (default quorum SO + CO).
    let f = w.propose(
        "lifecycle.compromise",
        &["key=k", "version=1", "decrypt_secs=3600"],
        "alice",
        "compromise.json",
    );
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    w.refused(&f, "quorum not met");
    w.approve_ok(&f, "dave");
    let (ok, out, err) = w.execute(&f);
    assert!(ok, "lifecycle.compromise: {err}");
    assert!(out.contains("marked compromised"), "{out}");
    assert!(w.ok(&["key", "show", "k"]).contains("latest version 2"));
    // A version the key does not have is refused before anything runs.
    let f = w.propose(
        "lifecycle.compromise",
        &["key=k", "version=9"],
        "alice",
        "compromise9.json",
    );
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    w.approve_ok(&f, "dave");
    w.refused(&f, "no version 9");

    // v1's blob, as stored now.
    let store = w.dir.join("store");
    let blob_v1 = all_files_text(&store)
        .into_iter()
        .find_map(|(_, t)| {
            // `<name>.kek`: a header line, then the record.
            let v: serde_json::Value = serde_json::from_str(t.split_once('\n')?.1).ok()?;
            (v["name"] == "k").then(|| v["versions"][0]["blob"].as_str().unwrap().to_owned())
        })
        .expect("k's record in the store");
    assert!(blob_v1.len() > 40);

    let f = w.propose(
        "key.destroy",
        &["key=k", "min_available_version=2"],
        "alice",
        "trim.json",
    );
    w.approve_ok(&f, "alice");
    w.approve_ok(&f, "bob");
    w.approve_ok(&f, "dave");
    let (ok, out, err) = w.execute(&f);
    assert!(ok, "key.destroy (trim): {err}");
    assert!(out.contains("versions below 2 destroyed"), "{out}");
    let shown = w.ok(&["key", "show", "k"]);
    assert!(shown.contains("versions [2]"), "{shown}");
    assert!(shown.contains("min decryption version 2"), "{shown}");
    // Crypto-shredding: no file of the store holds v1's blob any more.
    for (p, t) in all_files_text(&store) {
        assert!(
            !t.contains(&blob_v1),
            "{} still holds v1's blob",
            p.display()
        );
    }
}

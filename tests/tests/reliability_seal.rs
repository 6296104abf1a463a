//! OpenBao 2.7.2 with `seal "transit"` pointing at `rootseal serve` whose HSM is SoftHSM2 behind
//! a real `p11-kit server` (issue 16, build item 5): with the HSM side killed, rootseal answers
//! 503 (`Retry-After: 1`) and a restarted OpenBao stays sealed; with the HSM back (the server
//! restarted on the same socket), the same rootseal process, never restarted, serves again and a
//! restarted OpenBao unseals with its data intact. The same for rootseal's OpenBao KMS plugin
//! (`seal "rootseal"`): with the HSM side killed, a restarted OpenBao stays sealed; once it is
//! back, that same OpenBao, never restarted, unseals through its plugin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_e2e::{
    free_port, http_get, kms_stanzas, rootseal_bin, vault_request, wait_for, wait_no_plugin,
    OpenBao, Proc,
};
use rootseal_testkit::{P11KitServer, TestToken};
use serde_json::{json, Value};

/// `dir/<name>.toml` for `module` and the token, file store in `dir/store`, the audit log in
/// block mode (`serve`'s default) in `dir/audit.log`: its checkpoints are signed with `CKM_EDDSA`
/// through p11-kit too (`scripts/build-p11kit`), so with the HSM away nothing is answered
/// unaudited either.
fn config(dir: &Path, name: &str, module: &Path, label: &str, port: u16) -> PathBuf {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "governance = \"off\"\n[listener]\naddress = \"127.0.0.1:{port}\"\n\n[hsm]\n\
             module = \"{}\"\ntoken_label = \"{label}\"\npin_file = \"pin\"\n\n[auth]\n\
             root_token_file = \"root-token\"\n\n[storage]\nbackend = \"file\"\npath = \"store\"\n\n\
             [audit]\nmode = \"block\"\npath = \"audit.log\"\n",
            module.display()
        ),
    )
    .unwrap();
    cfg
}

fn rootseal(cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(rootseal_bin());
    c.args(args)
        .arg("--config")
        .arg(cfg)
        .env_remove("ROOTSEAL_HSM_PIN")
        .env_remove("ROOTSEAL_ROOT_TOKEN")
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_TOKEN")
        .env_remove("ROOTSEAL_CONFIG");
    c
}

fn encrypt(addr: &str, token: &str) -> (u16, Value, Option<String>) {
    let body = json!({"plaintext": B64.encode("probe")});
    vault_request(addr, token, "transit/encrypt/probe", Some(body))
}

#[test]
fn openbao_unseals_once_the_hsm_behind_p11_kit_returns_without_restarting_rootseal() {
    let token = TestToken::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rs");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let root_token = format!("rs-root-{port}");
    for (f, v) in [
        ("pin", token.pin.as_str()),
        ("so-pin", token.so_pin.as_str()),
        ("root-token", root_token.as_str()),
    ] {
        std::fs::write(dir.join(f), v).unwrap();
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The root is made on SoftHSM2 directly (see reliability_faults.rs); rootseal serves
    // through p11-kit's client module only.
    let init_cfg = config(&dir, "init", &token.module, &token.label, port);
    let out = rootseal(&init_cfg, &["init"])
        .arg("--so-pin-file")
        .arg(dir.join("so-pin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut server = P11KitServer::start(&token);
    let cfg = config(&dir, "serve", &server.client_module(), &token.label, port);
    let rs = Proc::spawn(
        "rootseal serve",
        rootseal(&cfg, &["serve"]),
        &dir.join("serve.log"),
    );
    let health = format!("{addr}/v1/sys/health");
    assert!(
        wait_for(Duration::from_secs(30), || match http_get(&health) {
            Some((200, _)) => Some(()),
            _ => None,
        })
        .is_some(),
        "rootseal serve through p11-kit did not become healthy:\n{}",
        rs.output()
    );
    let (s, v, _) = encrypt(&addr, &root_token);
    assert_eq!(s, 200, "{v}");

    let out = Command::new(rootseal_bin())
        .args(["vault", "seal-config", "--address", &addr, "--token-file"])
        .arg(dir.join("root-token"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stanza = String::from_utf8(out.stdout).unwrap();
    let mut ob = OpenBao::new(&tmp.path().join("bao"), &stanza);
    ob.start(&[]);
    assert_eq!(
        ob.wait_status(Duration::from_secs(30)),
        Some((false, true)),
        "fresh OpenBao: {}",
        ob.log()
    );
    let root = ob.init();
    assert!(
        ob.wait_sealed(false, Duration::from_secs(30)),
        "not unsealed after init:\n{}",
        ob.log()
    );
    ob.write_secret(&root, "pw", "s3cret");

    // The HSM side is killed: rootseal answers 503 at once or within its job deadline, and a
    // restarted OpenBao stays sealed.
    ob.stop();
    server.kill();
    let (s, v, retry) = encrypt(&addr, &root_token);
    assert_eq!(s, 503, "HSM away: {v}");
    assert_eq!(retry.as_deref(), Some("1"), "{v}");
    ob.start(&[]);
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        !matches!(rootseal_e2e::bao_status(&ob.addr), Some((_, false))),
        "OpenBao unsealed while the HSM was away:\n{}",
        ob.log()
    );
    ob.stop();

    // The HSM returns; rootseal (same process) serves again; OpenBao unseals.
    server.restart();
    assert!(
        wait_for(Duration::from_secs(60), || (encrypt(&addr, &root_token).0
            == 200)
            .then_some(()))
        .is_some(),
        "rootseal did not recover after the HSM returned:\n{}",
        rs.output()
    );
    ob.start(&[]);
    assert!(
        ob.wait_sealed(false, Duration::from_secs(40)),
        "not unsealed after the HSM returned:\n{}",
        ob.log()
    );
    assert_eq!(ob.read_secret(&root, "pw"), "s3cret");
    drop(ob);
    drop(rs);
}

#[test]
fn openbao_unseals_through_the_kms_plugin_once_the_hsm_behind_p11_kit_returns() {
    let token = TestToken::new();
    // The root (L0, MAC key, audit key) is made on SoftHSM2 directly, as `rootseal init` must be.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(token.init_root());
    let mut server = P11KitServer::start(&token);
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let stanzas = kms_stanzas(tmp.path(), &server.client_module(), &token.label, &keys);
    let plugins = std::fs::canonicalize(tmp.path().join("plugins")).unwrap();
    let env = [
        ("ROOTSEAL_HSM_PIN", token.pin.clone()),
        (
            "P11_KIT_SERVER_ADDRESS",
            format!("unix:path={}", server.socket.display()),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut ob = OpenBao::new(&tmp.path().join("bao"), &stanzas);
    ob.start(&env);
    assert!(
        ob.wait_status(Duration::from_secs(60)).is_some(),
        "OpenBao did not answer:\n{}",
        ob.log()
    );
    let root = ob.init();
    assert!(
        ob.wait_sealed(false, Duration::from_secs(60)),
        "not unsealed through the KMS plugin behind p11-kit:\n{}",
        ob.log()
    );
    assert!(
        keys.join("openbao-unseal.kek").exists(),
        "no unseal key in the local store"
    );
    ob.write_secret(&root, "pw", "k3ms");

    // The HSM side is killed: a restarted OpenBao starts its plugin but stays sealed.
    ob.stop();
    wait_no_plugin(&plugins, Duration::from_secs(10)).expect("no plugin left after stop");
    server.kill();
    ob.start(&env);
    assert!(
        ob.wait_status(Duration::from_secs(60)).is_some(),
        "OpenBao did not answer with the HSM away:\n{}",
        ob.log()
    );
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        rootseal_e2e::bao_status(&ob.addr),
        Some((true, true)),
        "OpenBao is not initialized and sealed while the HSM is away:\n{}",
        ob.log()
    );

    // The HSM returns on the same socket: the same OpenBao, never restarted, unseals.
    server.restart();
    assert!(
        ob.wait_sealed(false, Duration::from_secs(90)),
        "OpenBao did not unseal through its plugin once the HSM returned:\n{}",
        ob.log()
    );
    assert_eq!(ob.read_secret(&root, "pw"), "k3ms");
    ob.stop();
    wait_no_plugin(&plugins, Duration::from_secs(10)).expect("no plugin left after stop");
}

//! OpenBao 2.7.2 auto-unseals from `rootseal dev` through `seal "transit"` (raft storage):
//! init → unsealed; restart → unsealed with no operator action; rootseal down → OpenBao does not
//! unseal; rootseal back with the same data directory → it does.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rootseal_e2e::{bao, free_port, rootseal_bin, rootseal_dev, wait_for, OpenBao, Proc};

fn seal_stanza(port: u16, token_file: &Path) -> String {
    let out = Command::new(rootseal_bin())
        .args(["vault", "seal-config", "--address"])
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--token-file")
        .arg(token_file)
        .output()
        .expect("rootseal vault seal-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("seal \"transit\""), "{s}");
    assert!(s.contains("key_name"), "{s}");
    s
}

#[test]
fn openbao_auto_unseals_from_rootseal_dev() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("rootseal");
    let port = free_port();
    let token = "e2e-root-token";
    let mut rs = rootseal_dev(&data, port, token, &tmp.path().join("rootseal-1.log"));
    let stanza = seal_stanza(port, &data.join("dev-root-token"));

    let mut ob = OpenBao::new(&tmp.path().join("bao"), &stanza);
    ob.start(&[]);
    let st = ob.wait_status(Duration::from_secs(30));
    assert_eq!(st, Some((false, true)), "fresh OpenBao: {}", ob.log());
    let root = ob.init();
    assert!(
        ob.wait_sealed(false, Duration::from_secs(30)),
        "not unsealed after init:\n{}",
        ob.log()
    );
    ob.write_secret(&root, "password", "s3cret");

    // Restart: unsealed with no operator action, data intact.
    ob.stop();
    ob.start(&[]);
    assert!(
        ob.wait_sealed(false, Duration::from_secs(30)),
        "not auto-unsealed after restart:\n{}",
        ob.log()
    );
    assert_eq!(ob.read_secret(&root, "password"), "s3cret");

    // rootseal down (SIGTERM: clean exit) → a restarted OpenBao does not unseal.
    ob.stop();
    let status = rs
        .signal("TERM", Duration::from_secs(10))
        .expect("rootseal exits on SIGTERM");
    assert!(status.success(), "rootseal exit status {status:?}");
    ob.start(&[]);
    std::thread::sleep(Duration::from_secs(10));
    let unsealed = matches!(rootseal_e2e::bao_status(&ob.addr), Some((_, false)));
    assert!(
        !unsealed,
        "OpenBao unsealed without rootseal:\n{}",
        ob.log()
    );
    ob.stop();

    // rootseal back with the same data directory: same keys, OpenBao unseals again.
    rs = rootseal_dev(&data, port, token, &tmp.path().join("rootseal-2.log"));
    ob.start(&[]);
    assert!(
        ob.wait_sealed(false, Duration::from_secs(40)),
        "not unsealed after rootseal came back:\n{}",
        ob.log()
    );
    assert_eq!(ob.read_secret(&root, "password"), "s3cret");
    drop(ob);
    drop(rs);
}

#[test]
fn openbao_stays_sealed_with_the_wrong_rootseal_token() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("rootseal");
    let port = free_port();
    let _rs = rootseal_dev(&data, port, "right-token", &tmp.path().join("rootseal.log"));
    let bad = tmp.path().join("bad-token");
    std::fs::write(&bad, "wrong-token").unwrap();
    let stanza = seal_stanza(port, &bad);
    let mut ob = OpenBao::new(&tmp.path().join("bao"), &stanza);
    ob.start(&[]);
    // The seal's setup probe gets 403: OpenBao refuses to start.
    let exited = wait_for(Duration::from_secs(30), || {
        ob.proc.as_mut().and_then(Proc::exited)
    });
    let st = exited.expect("OpenBao kept running with a refused seal");
    assert!(!st.success());
    let log = std::fs::read_to_string(ob.dir.join("bao-1.log")).unwrap_or_default();
    assert!(log.contains("permission denied"), "{log}");
}

#[test]
fn rootseal_dev_keeps_keys_across_restarts_and_prints_a_stanza() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("rootseal");
    let port = free_port();
    let log = tmp.path().join("rs.log");
    let mut rs = rootseal_dev(&data, port, "tok", &log);
    let addr = format!("http://127.0.0.1:{port}");
    let (ok, ct, err) = bao(
        &addr,
        Some("tok"),
        &[
            "write",
            "-field=ciphertext",
            "transit/encrypt/k",
            "plaintext=aGVsbG8=",
        ],
    );
    assert!(ok, "{err}");
    assert!(ct.starts_with("vault:v1:"), "{ct}");
    let banner = rs.output();
    assert!(banner.contains("seal \"transit\""), "{banner}");
    assert!(banner.contains(&addr), "{banner}");
    assert!(rs
        .signal("INT", Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let _rs2 = rootseal_dev(&data, port, "tok", &tmp.path().join("rs2.log"));
    let (ok, pt, err) = bao(
        &addr,
        Some("tok"),
        &[
            "write",
            "-field=plaintext",
            "transit/decrypt/k",
            &format!("ciphertext={}", ct.trim()),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(pt.trim(), "aGVsbG8=");
    // The dev token directory is inspectable with SOFTHSM2_CONF.
    assert!(data.join("softhsm/softhsm2.conf").exists());
}

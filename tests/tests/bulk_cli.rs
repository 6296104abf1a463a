//! `rootseal bulk seal | rootseal bulk unseal` against a real `rootseal dev` (SoftHSM2): 5 MiB of
//! random data round-trips through a shell pipe; a tampered or truncated sealed stream, a wrong
//! key name and a wrong token all exit non-zero with a clear message, and `--output FILE` leaves
//! nothing behind on failure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use rootseal_e2e::{free_port, rootseal_bin, rootseal_dev};

const TOKEN: &str = "bulk-cli-root-token";

fn create_key(addr: &str, name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{addr}/v1/transit/keys/{name}"))
            .header("X-Vault-Token", TOKEN)
            .send()
            .await
            .unwrap();
        let st = r.status();
        assert!(
            st.is_success(),
            "create key: {st} {}",
            r.text().await.unwrap()
        );
    });
}

/// Deterministic pseudo-random bytes (xorshift64*): incompressible test data.
fn random_bytes(n: usize, mut x: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(n);
    v
}

/// A `rootseal bulk …` command with a clean environment (no inherited address or token).
fn bulk(addr: &str, token: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(rootseal_bin());
    cmd.arg("bulk").args(args);
    for v in [
        "BAO_ADDR",
        "VAULT_ADDR",
        "BAO_TOKEN",
        "VAULT_TOKEN",
        "ROOTSEAL_TOKEN",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("BAO_ADDR", addr);
    if let Some(t) = token {
        cmd.env("BAO_TOKEN", t);
    }
    cmd
}

/// Runs `cmd` with `input` on stdin; returns its output.
fn run(mut cmd: Command, input: &[u8]) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn rootseal bulk");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Feed stdin from another thread: the command writes stdout while it reads.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bulk_cli_round_trip_and_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let rs = rootseal_dev(
        &tmp.path().join("data"),
        port,
        TOKEN,
        &tmp.path().join("rootseal.log"),
    );
    create_key(&addr, "k");
    create_key(&addr, "other");

    let data = random_bytes(5 << 20, 0x9e37_79b9_7f4a_7c15);
    let input = tmp.path().join("in.bin");
    let output = tmp.path().join("out.bin");
    std::fs::write(&input, &data).unwrap();

    // A real shell pipe: seal | unseal, both exit 0, output identical.
    let bin = rootseal_bin();
    let script = format!(
        "set -o pipefail; '{b}' bulk seal --key k < '{i}' | '{b}' bulk unseal --key k > '{o}'",
        b = bin.display(),
        i = input.display(),
        o = output.display()
    );
    let st = Command::new("bash")
        .args(["-c", &script])
        .env("BAO_ADDR", &addr)
        .env("BAO_TOKEN", TOKEN)
        .env_remove("VAULT_TOKEN")
        .env_remove("ROOTSEAL_TOKEN")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "pipe failed: {}\n{}",
        stderr(&st),
        rs.output()
    );
    let back = std::fs::read(&output).unwrap();
    assert!(
        back == data,
        "round trip changed the data ({} vs {} bytes)",
        back.len(),
        data.len()
    );

    // The sealed stream, kept for the failure cases (token from a file this time).
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let tf = token_file.to_str().unwrap();
    let s = run(
        bulk(&addr, None, &["seal", "--key", "k", "--token-file", tf]),
        &data,
    );
    assert!(s.status.success(), "seal: {}", stderr(&s));
    let sealed = s.stdout;
    assert!(sealed.starts_with(b"RSBS\x01"));
    assert!(sealed.len() > data.len());
    assert!(
        !sealed.windows(64).any(|w| w == &data[4096..4160]),
        "plaintext visible in the sealed stream"
    );
    let u = run(bulk(&addr, Some(TOKEN), &["unseal", "--key", "k"]), &sealed);
    assert!(u.status.success(), "unseal: {}", stderr(&u));
    assert!(u.stdout == data);

    // Tampered: one byte flipped in the middle → non-zero, never the whole plaintext.
    let mut tampered = sealed.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    let u = run(
        bulk(&addr, Some(TOKEN), &["unseal", "--key", "k"]),
        &tampered,
    );
    assert!(!u.status.success(), "tampered stream unsealed");
    assert!(u.stdout.len() < data.len(), "tampered: full-length output");
    assert!(
        data.starts_with(&u.stdout),
        "tampered: output is not a verified prefix"
    );
    assert!(stderr(&u).contains("error:"), "{}", stderr(&u));

    // Same with --output: the file is not created, no temporary file is left.
    let dest = tmp.path().join("outdir").join("plain.bin");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let d = dest.to_str().unwrap();
    let u = run(
        bulk(&addr, Some(TOKEN), &["unseal", "--key", "k", "-o", d]),
        &tampered,
    );
    assert!(!u.status.success());
    assert_eq!(
        std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
        0
    );
    let u = run(
        bulk(&addr, Some(TOKEN), &["unseal", "--key", "k", "-o", d]),
        &sealed,
    );
    assert!(u.status.success(), "{}", stderr(&u));
    assert!(u.stdout.is_empty());
    assert!(std::fs::read(&dest).unwrap() == data);

    // Truncated: cut in the middle of a chunk, and exactly at a chunk boundary (the final
    // chunk dropped): non-zero both times.
    let hdr = 4 + 1 + 4 + 2 + 60 + 4;
    let chunk = 5 + (64 << 10) + 16;
    for cut in [sealed.len() - 100, hdr + 10 * chunk, hdr + 3] {
        let u = run(
            bulk(&addr, Some(TOKEN), &["unseal", "--key", "k"]),
            &sealed[..cut],
        );
        assert!(!u.status.success(), "truncated at {cut} unsealed");
        assert!(u.stdout.len() < data.len());
        assert!(stderr(&u).contains("error:"), "{}", stderr(&u));
    }

    // Another key's name: the batch key does not unwrap.
    let u = run(
        bulk(&addr, Some(TOKEN), &["unseal", "--key", "other"]),
        &sealed,
    );
    assert!(!u.status.success());
    assert!(u.stdout.is_empty());
    assert!(stderr(&u).contains("invalid ciphertext"), "{}", stderr(&u));

    // Wrong token: both directions exit non-zero with "permission denied", and write nothing.
    let s = run(
        bulk(&addr, Some("wrong-token"), &["seal", "--key", "k"]),
        &data,
    );
    assert!(!s.status.success());
    assert!(s.stdout.is_empty());
    assert!(stderr(&s).contains("permission denied"), "{}", stderr(&s));
    let u = run(
        bulk(&addr, Some("wrong-token"), &["unseal", "--key", "k"]),
        &sealed,
    );
    assert!(!u.status.success());
    assert!(u.stdout.is_empty());
    assert!(stderr(&u).contains("permission denied"), "{}", stderr(&u));

    // A key that does not exist: named before any input is sent.
    let s = run(
        bulk(&addr, Some(TOKEN), &["seal", "--key", "missing"]),
        &data,
    );
    assert!(!s.status.success());
    assert!(s.stdout.is_empty());
    assert!(
        stderr(&s).contains("no key named \"missing\""),
        "{}",
        stderr(&s)
    );

    // No token at all: a clear local error.
    let s = run(bulk(&addr, None, &["seal", "--key", "k"]), b"x");
    assert!(!s.status.success());
    assert!(stderr(&s).contains("no token"), "{}", stderr(&s));

    // Server not there: non-zero with the address in the message.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let s = run(bulk(&dead, Some(TOKEN), &["seal", "--key", "k"]), b"x");
    assert!(!s.status.success());
    assert!(stderr(&s).contains("127.0.0.1"), "{}", stderr(&s));

    // Empty input seals to a valid stream that unseals to nothing.
    let s = run(bulk(&addr, Some(TOKEN), &["seal", "--key", "k"]), b"");
    assert!(s.status.success(), "{}", stderr(&s));
    let u = run(
        bulk(&addr, Some(TOKEN), &["unseal", "--key", "k"]),
        &s.stdout,
    );
    assert!(u.status.success(), "{}", stderr(&u));
    assert!(u.stdout.is_empty());
}

//! The writer and the verifier over real files: every tamper case gives its verdict (the exit
//! code of `rootseal audit verify`) and the first bad sequence number.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use rootseal_audit::checkpoint::Checkpoint;
use rootseal_audit::note::{check_ed25519, KeyVerdict, Note, NoteSignature, SIG_ED25519};
use rootseal_audit::{
    merkle, proof, verify, AuditConfig, AuditLog, CheckpointSigner, Event, Mode, Options, Verdict,
};

struct SoftSigner {
    name: String,
    key: Ed25519KeyPair,
}

impl SoftSigner {
    fn new(name: &str) -> Arc<SoftSigner> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
        Arc::new(SoftSigner {
            name: name.into(),
            key: Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
        })
    }
}

impl CheckpointSigner for SoftSigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn public_key(&self) -> [u8; 32] {
        self.key.public_key().as_ref().try_into().unwrap()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        Ok(self.key.sign(msg).as_ref().to_vec())
    }
}

const ORIGIN: &str = "rootseal/serial1/00112233445566778899aabbccddeeff";

fn cfg(path: &Path, every: u64) -> AuditConfig {
    AuditConfig {
        checkpoint_every: every,
        checkpoint_interval: Duration::from_secs(3600),
        ..AuditConfig::new(path.to_owned(), Mode::Block)
    }
}

/// A log of `n` records with a checkpoint every `every`, closed (final checkpoint).
async fn write_log(path: &Path, signer: &Arc<SoftSigner>, n: u64, every: u64) {
    let log = AuditLog::open(&cfg(path, every), ORIGIN.into(), Some(signer.clone())).unwrap();
    for i in 0..n {
        let seq = log
            .record(
                Event::new("transit.encrypt")
                    .with("key", format!("k{i}"))
                    .with("items", 1),
            )
            .await
            .unwrap();
        assert_eq!(seq, Some(i));
    }
    log.close().await;
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, l: &[String]) {
    let mut s = l.join("\n");
    s.push('\n');
    std::fs::write(path, s).unwrap();
}

/// Index of the line holding record `seq`.
fn line_of(l: &[String], seq: u64) -> usize {
    l.iter()
        .position(|x| x.contains(&format!("\"seq\":{seq},")))
        .unwrap()
}

fn check(path: &Path, key: &[u8; 32], trusted: Option<&str>) -> (Verdict, Option<u64>, String) {
    let data = std::fs::read(path).unwrap();
    let r = verify(
        &data,
        key,
        &Options {
            trusted,
            keep_leaves: true,
        },
    )
    .unwrap();
    (r.verdict, r.first_bad_seq, r.message)
}

async fn fixture(
    n: u64,
    every: u64,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Arc<SoftSigner>,
    [u8; 32],
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let signer = SoftSigner::new("rootseal-audit/serial1");
    write_log(&path, &signer, n, every).await;
    let key = signer.public_key();
    (dir, path, signer, key)
}

#[tokio::test]
async fn an_intact_log_verifies_with_its_checkpoints() {
    let (_d, path, _s, key) = fixture(25, 10).await;
    let data = std::fs::read(&path).unwrap();
    let r = verify(&data, &key, &Options::default()).unwrap();
    assert_eq!(r.verdict, Verdict::Intact, "{}", r.message);
    assert_eq!(r.records, 25);
    // Start (empty), 10, 20, and the stop checkpoint at 25.
    assert_eq!(r.checkpoints, 4);
    assert_eq!(r.unsigned_tail, 0);
    // The last checkpoint is a valid C2SP note over the tree.
    let (cp, note) = Checkpoint::parse_note(r.last_checkpoint.as_deref().unwrap()).unwrap();
    assert_eq!(cp.origin, ORIGIN);
    assert_eq!(cp.size, 25);
    assert_eq!(check_ed25519(&note, &key), KeyVerdict::Valid);
}

#[tokio::test]
async fn reopening_continues_the_tree_and_the_checkpoint_chain() {
    let (_d, path, signer, key) = fixture(7, 5).await;
    write_log_more(&path, &signer, 7, 6).await;
    let (v, _, m) = check(&path, &key, None);
    assert_eq!(v, Verdict::Intact, "{m}");
    let data = std::fs::read(&path).unwrap();
    assert_eq!(
        verify(&data, &key, &Options::default()).unwrap().records,
        13
    );
}

async fn write_log_more(path: &Path, signer: &Arc<SoftSigner>, from: u64, n: u64) {
    let log = AuditLog::open(&cfg(path, 5), ORIGIN.into(), Some(signer.clone())).unwrap();
    for i in 0..n {
        assert_eq!(log.record(Event::new("x")).await.unwrap(), Some(from + i));
    }
    log.close().await;
}

#[tokio::test]
async fn a_flipped_byte_is_a_changed_record() {
    let (_d, path, _s, key) = fixture(30, 10).await;
    let mut l = lines(&path);
    let i = line_of(&l, 13);
    l[i] = l[i].replace("\"key\":\"k13\"", "\"key\":\"k93\"");
    write_lines(&path, &l);
    assert_eq!(check(&path, &key, None).0, Verdict::Changed);
    assert_eq!(check(&path, &key, None).1, Some(13));
    assert_eq!(Verdict::Changed.exit_code(), 10);
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_record_before_a_checkpoint_is_caught_by_the_signed_root() {
    let (_d, path, _s, key) = fixture(30, 10).await;
    let mut l = lines(&path);
    let i = line_of(&l, 19);
    l[i] = l[i].replace("\"key\":\"k19\"", "\"key\":\"k18\"");
    write_lines(&path, &l);
    let (v, seq, m) = check(&path, &key, None);
    assert_eq!((v, seq), (Verdict::Changed, Some(19)), "{m}");
}

#[tokio::test]
async fn a_byte_that_breaks_the_json_is_a_changed_record() {
    let (_d, path, _s, key) = fixture(30, 10).await;
    let mut data = std::fs::read(&path).unwrap();
    let l = lines(&path);
    let offset: usize = l[..line_of(&l, 4)].iter().map(|x| x.len() + 1).sum();
    data[offset] ^= 0x01;
    std::fs::write(&path, data).unwrap();
    let (v, seq, m) = check(&path, &key, None);
    assert_eq!((v, seq), (Verdict::Changed, Some(4)), "{m}");
}

#[tokio::test]
async fn a_deleted_middle_record_is_missing() {
    let (_d, path, _s, key) = fixture(30, 10).await;
    let mut l = lines(&path);
    l.remove(line_of(&l, 14));
    write_lines(&path, &l);
    let (v, seq, m) = check(&path, &key, None);
    assert_eq!((v, seq), (Verdict::Missing, Some(14)), "{m}");
    assert_eq!(Verdict::Missing.exit_code(), 11);
}

#[tokio::test]
async fn a_truncated_tail_is_missing() {
    let (_d, path, _s, key) = fixture(30, 10).await;
    let data = std::fs::read(&path).unwrap();
    let l = lines(&path);
    // Cut in the middle of record 27's line.
    let offset: usize = l[..line_of(&l, 27)]
        .iter()
        .map(|x| x.len() + 1)
        .sum::<usize>()
        + 20;
    std::fs::write(&path, &data[..offset]).unwrap();
    let (v, seq, m) = check(&path, &key, None);
    assert_eq!((v, seq), (Verdict::Missing, Some(27)), "{m}");
}

#[tokio::test]
async fn a_torn_line_is_cut_off_and_recorded_when_the_writer_reopens() {
    let (_d, path, signer, key) = fixture(12, 5).await;
    let data = std::fs::read(&path).unwrap();
    std::fs::write(&path, [&data[..], b"{\"event\":{\"ty"].concat()).unwrap();
    assert_eq!(check(&path, &key, None).0, Verdict::Missing);
    write_log_more(&path, &signer, 13, 2).await;
    let (v, _, m) = check(&path, &key, None);
    assert_eq!(v, Verdict::Intact, "{m}");
    // Record 12 is the repair itself.
    assert!(lines(&path)
        .iter()
        .any(|l| l.contains("audit.torn_tail") && l.contains("\"seq\":12,")));
}

#[tokio::test]
async fn two_reordered_records_are_a_change() {
    let (_d, path, _s, key) = fixture(30, 10).await;
    let mut l = lines(&path);
    let (a, b) = (line_of(&l, 15), line_of(&l, 16));
    l.swap(a, b);
    write_lines(&path, &l);
    let (v, seq, m) = check(&path, &key, None);
    assert_eq!((v, seq), (Verdict::Changed, Some(15)), "{m}");
}

#[tokio::test]
async fn records_and_a_checkpoint_signed_by_another_key_are_a_bad_signature() {
    let (_d, path, _s, key) = fixture(20, 10).await;
    // Someone else's writer continues the log with its own key.
    let other = SoftSigner::new("rootseal-audit/serial1");
    write_log_more(&path, &other, 20, 3).await;
    let (v, seq, m) = check(&path, &key, None);
    assert_eq!((v, seq), (Verdict::BadSignature, Some(20)), "{m}");
    assert_eq!(Verdict::BadSignature.exit_code(), 13);
}

#[tokio::test]
async fn a_forged_signature_under_the_right_key_id_is_a_bad_signature() {
    let (_d, path, _s, key) = fixture(20, 10).await;
    let mut l = lines(&path);
    let i = l
        .iter()
        .rposition(|x| x.contains("\"checkpoint\""))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&l[i]).unwrap();
    let mut note = Note::parse(v["checkpoint"].as_str().unwrap()).unwrap();
    note.signatures[0].sig[3] ^= 1;
    l[i] = String::from_utf8(rootseal_audit::record::encode_checkpoint(&note.render()).unwrap())
        .unwrap();
    write_lines(&path, &l);
    // The records the bad checkpoint alone covers start at 10.
    let (v, seq, m) = check(&path, &key, None);
    assert_eq!((v, seq), (Verdict::BadSignature, Some(10)), "{m}");
}

/// A checkpoint of the log file at `size`, as a witness would have kept it.
fn checkpoint_at(path: &Path, size: u64) -> String {
    for l in lines(path) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if let Some(n) = v["checkpoint"].as_str() {
            if Checkpoint::parse_note(n).unwrap().0.size == size {
                return n.to_owned();
            }
        }
    }
    panic!("no checkpoint of size {size}");
}

#[tokio::test]
async fn a_fork_against_a_trusted_checkpoint_is_inconsistent() {
    let (_d, path, signer, key) = fixture(20, 10).await;
    // The same key signed a different tree of the same size (a split view).
    let (mut cp, _) = Checkpoint::parse_note(&checkpoint_at(&path, 20)).unwrap();
    cp.root = merkle::leaf_hash(b"another history");
    let text = cp.text();
    let fork = Note {
        text: text.clone(),
        signatures: vec![NoteSignature {
            name: signer.name().into(),
            key_id: rootseal_audit::note::key_id(signer.name(), SIG_ED25519, &key),
            sig: signer.sign(text.as_bytes()).unwrap(),
        }],
    }
    .render();
    let (v, seq, m) = check(&path, &key, Some(&fork));
    assert_eq!((v, seq), (Verdict::Inconsistent, Some(19)), "{m}");
    assert_eq!(Verdict::Inconsistent.exit_code(), 12);
    // The genuine checkpoint of that size is consistent, and so is an older one.
    assert_eq!(
        check(&path, &key, Some(&checkpoint_at(&path, 20))).0,
        Verdict::Intact
    );
    assert_eq!(
        check(&path, &key, Some(&checkpoint_at(&path, 10))).0,
        Verdict::Intact
    );
}

#[tokio::test]
async fn a_log_rolled_back_to_an_earlier_checkpoint_is_inconsistent_with_a_later_trusted_one() {
    let (_d, path, _s, key) = fixture(30, 10).await;
    let trusted = checkpoint_at(&path, 30);
    let l = lines(&path);
    // Cut right after the checkpoint of size 20: on its own, a perfectly valid log.
    let i = l
        .iter()
        .position(|x| x.contains("\"checkpoint\"") && x.contains("\\n20\\n"))
        .unwrap();
    write_lines(&path, &l[..=i]);
    assert_eq!(check(&path, &key, None).0, Verdict::Intact);
    let (v, seq, m) = check(&path, &key, Some(&trusted));
    assert_eq!((v, seq), (Verdict::Inconsistent, Some(20)), "{m}");
}

#[tokio::test]
async fn a_trusted_checkpoint_by_another_key_is_refused() {
    let (_d, path, _s, key) = fixture(10, 5).await;
    let other = SoftSigner::new("x");
    let (cp, _) = Checkpoint::parse_note(&checkpoint_at(&path, 10)).unwrap();
    let text = cp.text();
    let forged = Note {
        text: text.clone(),
        signatures: vec![NoteSignature {
            name: "x".into(),
            key_id: rootseal_audit::note::key_id("x", SIG_ED25519, &other.public_key()),
            sig: other.sign(text.as_bytes()).unwrap(),
        }],
    }
    .render();
    assert_eq!(check(&path, &key, Some(&forged)).0, Verdict::BadSignature);
}

#[tokio::test]
async fn proofs_from_the_log_verify_against_its_checkpoints() {
    let (_d, path, _s, key) = fixture(37, 10).await;
    let data = std::fs::read(&path).unwrap();
    let r = verify(
        &data,
        &key,
        &Options {
            trusted: None,
            keep_leaves: true,
        },
    )
    .unwrap();
    for seq in [0, 9, 20, 36] {
        let p = proof::inclusion(&r.leaves, seq, 37).unwrap();
        let roots = proof::check(&p).unwrap();
        assert_eq!(roots[0].0, 37);
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"type\":\"inclusion\""));
    }
    let c = proof::consistency(&r.leaves, 10, 30).unwrap();
    let roots = proof::check(&c).unwrap();
    let (cp10, _) = Checkpoint::parse_note(&checkpoint_at(&path, 10)).unwrap();
    let (cp30, _) = Checkpoint::parse_note(&checkpoint_at(&path, 30)).unwrap();
    assert_eq!(roots, vec![(10, cp10.root), (30, cp30.root)]);
    // A tampered proof fails.
    if let proof::Proof::Consistency {
        mut proof,
        size1,
        size2,
        root1,
        root2,
        v,
    } = c
    {
        proof.swap(0, 1);
        let bad = proof::Proof::Consistency {
            proof,
            size1,
            size2,
            root1,
            root2,
            v,
        };
        assert!(proof::check(&bad).is_err());
    }
}

#[tokio::test]
async fn group_commit_writes_concurrent_records_with_unique_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let signer = SoftSigner::new("rootseal-audit/serial1");
    let key = signer.public_key();
    let log = AuditLog::open(&cfg(&path, 100), ORIGIN.into(), Some(signer)).unwrap();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                seqs.push(
                    log.record(Event::new("e").with("t", t).with("i", i))
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..800).collect::<Vec<_>>());
    log.close().await;
    assert_eq!(check(&path, &key, None).0, Verdict::Intact);
}

#[tokio::test]
async fn a_failing_write_fails_the_requests_and_the_next_good_write_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let signer = SoftSigner::new("rootseal-audit/serial1");
    let key = signer.public_key();
    // /dev/full accepts the open and fails every write with ENOSPC; the log is a symlink to it
    // for a while, the real file after.
    let real = dir.path().join("real.log");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let log = AuditLog::open(&cfg(&path, 100), ORIGIN.into(), Some(signer.clone())).unwrap();
    let e = log.record(Event::new("e")).await.unwrap_err();
    assert!(e.to_string().contains("audit log unavailable"), "{e}");
    assert!(log.status().failing.is_some());
    log.close().await;
    drop(log);
    std::fs::remove_file(&path).unwrap();
    let log = AuditLog::open(&cfg(&real, 100), ORIGIN.into(), Some(signer)).unwrap();
    assert_eq!(log.record(Event::new("e")).await.unwrap(), Some(0));
    assert!(log.status().failing.is_none());
    log.close().await;
    assert_eq!(check(&real, &key, None).0, Verdict::Intact);
}

/// A log that was not closed (a crash, `kill -9`) ends in the writer's zero padding: it
/// verifies as it is, the writer continues it without a torn-tail record, and a clean close
/// cuts the padding off.
#[tokio::test]
async fn the_zero_padding_of_an_unclosed_log_is_not_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let signer = SoftSigner::new("rootseal-audit/serial1");
    let key = signer.public_key();
    {
        let log = AuditLog::open(&cfg(&path, 5), ORIGIN.into(), Some(signer.clone())).unwrap();
        for _ in 0..12 {
            log.record(Event::new("e")).await.unwrap();
        }
        // Not closed: the writer thread still holds the file; what is on disk is what a crash
        // leaves.
        let data = std::fs::read(&path).unwrap();
        let (end, junk) = rootseal_audit::record::content_len(&data);
        assert!(!junk);
        assert!(
            data.len() as u64 >= end as u64 + rootseal_audit::PREALLOCATE / 2,
            "no padding: {} bytes, content {end}",
            data.len()
        );
        assert_eq!(data[end - 1], b'\n');
        let (v, _, m) = check(&path, &key, None);
        assert_eq!(v, Verdict::Intact, "{m}");
        drop(log);
    }
    // The writer thread of the dropped handle ends when its channel closes (no final
    // checkpoint: as after a crash). Wait for its lock to go.
    let log = loop {
        match AuditLog::open(&cfg(&path, 5), ORIGIN.into(), Some(signer.clone())) {
            Ok(l) => break l,
            Err(e) if e.to_string().contains("in use") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(log.record(Event::new("after")).await.unwrap(), Some(12));
    log.close().await;
    let data = std::fs::read(&path).unwrap();
    assert!(!data.contains(&0), "padding left after a clean close");
    assert!(!lines(&path).iter().any(|l| l.contains("audit.torn_tail")));
    let (v, _, m) = check(&path, &key, None);
    assert_eq!(v, Verdict::Intact, "{m}");
}

/// Bytes past the padding's start (a group whose sync never finished, its pages written out of
/// order by a power loss) are a missing tail for the verifier, and are cut off and recorded
/// when the writer reopens.
#[tokio::test]
async fn bytes_past_the_padding_are_a_missing_tail_cut_off_at_reopen() {
    let (_d, path, signer, key) = fixture(12, 5).await;
    let mut data = std::fs::read(&path).unwrap();
    data.extend_from_slice(&[0u8; 5000]);
    data.extend_from_slice(b"\"seq\":99,\"time\":\"x\",\"v\":1}\n");
    data.extend_from_slice(&[0u8; 3000]);
    std::fs::write(&path, &data).unwrap();
    let (v, seq, m) = check(&path, &key, None);
    assert_eq!((v, seq), (Verdict::Missing, Some(12)), "{m}");
    write_log_more(&path, &signer, 13, 2).await;
    let (v, _, m) = check(&path, &key, None);
    assert_eq!(v, Verdict::Intact, "{m}");
    assert!(lines(&path)
        .iter()
        .any(|l| l.contains("audit.torn_tail") && l.contains("\"seq\":12,")));
}

/// Best-effort: a record never waits, is in the file without a close (its sync is only deferred,
/// [`rootseal_audit::BEST_EFFORT_SYNC`]), and the closed log verifies with every record.
#[tokio::test]
async fn best_effort_records_reach_the_file_at_once_and_the_closed_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let signer = SoftSigner::new("rootseal-audit/serial1");
    let key = signer.public_key();
    let c = AuditConfig {
        mode: Mode::BestEffort,
        ..cfg(&path, 1000)
    };
    let opened = std::time::Instant::now();
    let log = AuditLog::open(&c, ORIGIN.into(), Some(signer)).unwrap();
    for i in 0..200 {
        assert_eq!(
            log.record(Event::new("e").with("i", i)).await.unwrap(),
            None
        );
        // Some apart, so that they come as many groups.
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // Not closed, no checkpoint asked for: the records are written all the same.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let count = |p: &Path| {
        let data = std::fs::read(p).unwrap();
        let (end, _) = rootseal_audit::record::content_len(&data);
        data[..end]
            .split(|b| *b == b'\n')
            .filter(|l| l.starts_with(br#"{"event":{"i":"#))
            .count()
    };
    while count(&path) < 200 {
        assert!(std::time::Instant::now() < deadline, "records not written");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(log.status().size, 200);
    // About 20 groups, synced at most once per BEST_EFFORT_SYNC (plus the start checkpoint's),
    // not each.
    let bound = 2 + opened.elapsed().as_millis() / rootseal_audit::BEST_EFFORT_SYNC.as_millis();
    let syncs = log.status().syncs;
    assert!(
        u128::from(syncs) <= bound,
        "{syncs} syncs, at most {bound} allowed"
    );
    log.close().await;
    let (v, _, m) = check(&path, &key, None);
    assert_eq!(v, Verdict::Intact, "{m}");
    assert_eq!(count(&path), 200);
}

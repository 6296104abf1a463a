//! The offline verifier (`rootseal audit verify`): needs the log, the audit public key and,
//! optionally, a checkpoint kept elsewhere. No HSM, no server.
//!
//! It reads the log once, in order, and checks every record's version, sequence number and link
//! to the record before it (`prev`), recomputes the RFC 6962 tree, and at every checkpoint checks
//! the signature, the link to the previous checkpoint and that the signed root is the tree of
//! the records before it (which makes successive checkpoints consistent by construction). A
//! trusted checkpoint must be a tree the log contains (same size, same root); when the log has
//! grown past it, an RFC 6962 consistency proof from it to the log's last checkpoint is built
//! and checked as well.

use crate::checkpoint::{self, Checkpoint};
use crate::merkle::{self, leaf_hash, Frontier, Hash};
use crate::note::{check_ed25519, KeyVerdict};
use crate::record::{self, Line, RECORD_VERSION};

/// The verdict, with the exit code `rootseal audit verify` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Intact (exit 0).
    Intact,
    /// A record was changed (exit 10).
    Changed,
    /// Records are missing: a gap, a truncated tail, a deleted record (exit 11).
    Missing,
    /// The log is inconsistent with the trusted checkpoint: a fork or a rollback (exit 12).
    Inconsistent,
    /// A checkpoint's signature is bad or by another key (exit 13).
    BadSignature,
}

impl Verdict {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Intact => 0,
            Verdict::Changed => 10,
            Verdict::Missing => 11,
            Verdict::Inconsistent => 12,
            Verdict::BadSignature => 13,
        }
    }
}

/// What the verifier found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// The first bad sequence number (`None` when intact).
    pub first_bad_seq: Option<u64>,
    /// What is wrong, for a human.
    pub message: String,
    /// Records read.
    pub records: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Records after the last checkpoint (not yet covered by a signature).
    pub unsigned_tail: u64,
    /// The last checkpoint's note.
    pub last_checkpoint: Option<String>,
    /// The leaf hash of every record (kept for `audit prove`; empty unless asked for).
    pub leaves: Vec<Hash>,
}

/// Why verification could not run at all (not a verdict on the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The trusted checkpoint cannot be read.
    #[error("the trusted checkpoint is not a rootseal checkpoint: {0}")]
    TrustedCheckpoint(String),
    /// The log was written by a newer rootseal.
    #[error("line {line}: record format version {v} is newer than this rootseal reads ({RECORD_VERSION})")]
    NewerVersion {
        /// The line number (1-based).
        line: u64,
        /// Its version.
        v: u64,
    },
}

/// Options of one verification.
#[derive(Clone, Debug, Default)]
pub struct Options<'a> {
    /// A checkpoint kept elsewhere (a witness copy), as a signed note.
    pub trusted: Option<&'a str>,
    /// Keep every leaf hash in the report (for proofs).
    pub keep_leaves: bool,
}

struct State {
    frontier: Frontier,
    prev: Option<Hash>,
    last_cp: Option<(u64, Hash, Hash)>,
    checkpoints: u64,
    last_note: Option<String>,
    leaves: Vec<Hash>,
    keep: bool,
    /// The root at the trusted size, once reached.
    at_trusted: Option<Hash>,
}

impl State {
    fn report(&mut self, verdict: Verdict, seq: Option<u64>, message: String) -> Report {
        let records = self.frontier.size();
        Report {
            verdict,
            first_bad_seq: seq,
            message,
            records,
            checkpoints: self.checkpoints,
            unsigned_tail: records - self.last_cp.map_or(0, |c| c.0),
            last_checkpoint: self.last_note.clone(),
            leaves: std::mem::take(&mut self.leaves),
        }
    }

    /// The first record not covered by a verified checkpoint.
    fn uncovered(&self) -> u64 {
        self.last_cp.map_or(0, |c| c.0)
    }
}

/// Verifies the log `data` against `public_key`.
///
/// # Errors
/// [`VerifyError`] when verification cannot run (the verdict on the log is in the [`Report`]).
pub fn verify(
    data: &[u8],
    public_key: &[u8; 32],
    opts: &Options<'_>,
) -> Result<Report, VerifyError> {
    let trusted = match opts.trusted {
        None => None,
        Some(t) => {
            let (cp, note) = Checkpoint::parse_note(t)
                .map_err(|e| VerifyError::TrustedCheckpoint(e.to_string()))?;
            Some((cp, note))
        }
    };
    let mut st = State {
        frontier: Frontier::new(),
        prev: None,
        last_cp: None,
        checkpoints: 0,
        last_note: None,
        leaves: Vec::new(),
        keep: opts.keep_leaves,
        at_trusted: None,
    };
    if let Some((cp, note)) = &trusted {
        if check_ed25519(note, public_key) != KeyVerdict::Valid {
            return Ok(st.report(
                Verdict::BadSignature,
                None,
                "the trusted checkpoint is not signed by this audit key".into(),
            ));
        }
        if cp.size == 0 {
            st.at_trusted = Some(merkle::empty_root());
        }
    }
    let trusted_size = trusted.as_ref().map(|(c, _)| c.size);
    // The writer's zero padding is not content.
    let (end, junk) = record::content_len(data);
    let data = &data[..end];
    let mut pos = 0usize;
    let mut line_no = 0u64;
    while pos < data.len() {
        line_no += 1;
        let expected = st.frontier.size();
        let Some(nl) = data[pos..].iter().position(|&b| b == b'\n') else {
            return Ok(st.report(
                Verdict::Missing,
                Some(expected),
                format!(
                    "the log ends in the middle of line {line_no} (a truncated tail, or a crash \
                     mid-write: `rootseal serve` cuts such a line off, and records that, at its \
                     next start)"
                ),
            ));
        };
        let line = &data[pos..pos + nl];
        pos += nl + 1;
        let parsed = match record::parse_line(line) {
            Ok(l) => l,
            Err(e) => {
                return Ok(st.report(
                    Verdict::Changed,
                    Some(expected),
                    format!("line {line_no} is not a record or checkpoint ({e})"),
                ))
            }
        };
        match parsed {
            Line::Record { v, seq, prev } => {
                if v > RECORD_VERSION {
                    return Err(VerifyError::NewerVersion { line: line_no, v });
                }
                if v != RECORD_VERSION {
                    return Ok(st.report(
                        Verdict::Changed,
                        Some(expected),
                        format!("record {seq} has format version {v}"),
                    ));
                }
                if seq != expected {
                    let later = seq > expected && appears_later(&data[pos..], expected);
                    let (verdict, what) = if seq < expected || later {
                        (Verdict::Changed, "records are out of order")
                    } else {
                        (Verdict::Missing, "records are missing")
                    };
                    return Ok(st.report(
                        verdict,
                        Some(expected),
                        format!(
                            "{what}: line {line_no} holds seq {seq} where {expected} was expected"
                        ),
                    ));
                }
                if prev != st.prev {
                    // Record `seq` names the hash of the record before it; that one changed.
                    let bad = expected.saturating_sub(1);
                    return Ok(st.report(
                        Verdict::Changed,
                        Some(bad),
                        format!(
                            "record {bad} was changed (record {seq} names another hash for it)"
                        ),
                    ));
                }
                let h = leaf_hash(line);
                st.frontier.push(h);
                st.prev = Some(h);
                if st.keep {
                    st.leaves.push(h);
                }
                if trusted_size == Some(st.frontier.size()) {
                    st.at_trusted = Some(st.frontier.root());
                }
            }
            Line::Checkpoint { note, .. } => {
                let (cp, n) = match Checkpoint::parse_note(&note) {
                    Ok(x) => x,
                    Err(e) => {
                        return Ok(st.report(
                            Verdict::Changed,
                            Some(st.uncovered()),
                            format!("line {line_no}: checkpoint cannot be read ({e})"),
                        ))
                    }
                };
                match check_ed25519(&n, public_key) {
                    KeyVerdict::Valid => {}
                    v => {
                        let first = st.uncovered();
                        return Ok(st.report(
                            Verdict::BadSignature,
                            Some(first),
                            format!(
                                "line {line_no}: the checkpoint of size {} {}",
                                cp.size,
                                if v == KeyVerdict::Invalid {
                                    "has a bad signature"
                                } else {
                                    "is not signed by this audit key"
                                }
                            ),
                        ));
                    }
                }
                if cp.size != expected {
                    let (verdict, first) = if cp.size > expected {
                        (Verdict::Missing, expected)
                    } else {
                        (Verdict::Changed, cp.size)
                    };
                    return Ok(st.report(
                        verdict,
                        Some(first),
                        format!(
                            "line {line_no}: a checkpoint of size {} follows {expected} records",
                            cp.size
                        ),
                    ));
                }
                if cp.root != st.frontier.root() {
                    // Every record links to the one before it, so a change that kept the links
                    // is in the last record (or was re-linked from an earlier one).
                    let bad = expected.saturating_sub(1);
                    let from = st.uncovered();
                    return Ok(st.report(
                        Verdict::Changed,
                        Some(bad),
                        format!(
                            "the records do not match the signed checkpoint of size {}: record \
                             {bad} was changed (or records from {from} on were changed and \
                             re-linked)",
                            cp.size
                        ),
                    ));
                }
                let want_prev = st.last_cp.map(|c| c.1);
                if cp.prev != want_prev && st.last_cp.is_some() {
                    let first = st.uncovered();
                    return Ok(st.report(
                        Verdict::Missing,
                        Some(first),
                        format!(
                            "line {line_no}: the checkpoint of size {} does not follow the one \
                             before it (a checkpoint was removed)",
                            cp.size
                        ),
                    ));
                }
                st.last_cp = Some((cp.size, checkpoint::text_hash(&n.text), cp.root));
                st.checkpoints += 1;
                st.last_note = Some(note);
            }
        }
    }
    if junk {
        let size = st.frontier.size();
        return Ok(st.report(
            Verdict::Missing,
            Some(size),
            format!(
                "after record {} the log holds bytes past its zero padding (a crash during a \
                 write that was never acknowledged: `rootseal serve` cuts them off, and records \
                 that, at its next start)",
                size.saturating_sub(1)
            ),
        ));
    }
    if let Some((cp, _)) = &trusted {
        let size = st.frontier.size();
        match st.at_trusted {
            None => {
                return Ok(st.report(
                    Verdict::Inconsistent,
                    Some(size),
                    format!(
                        "the log holds {size} records but the trusted checkpoint signed {}: the \
                         log was rolled back or cut (records from {size} on are gone)",
                        cp.size
                    ),
                ))
            }
            Some(root) if root != cp.root => {
                let bad = cp.size.saturating_sub(1);
                return Ok(st.report(
                    Verdict::Inconsistent,
                    Some(bad),
                    format!(
                        "the log's tree of size {} is not the one the trusted checkpoint signed: a \
                         fork (the records up to {bad} differ)",
                        cp.size
                    ),
                ));
            }
            Some(_) => {
                if let Some((last_size, _, last_root)) = st.last_cp {
                    if st.keep && last_size > cp.size {
                        let leaves = &st.leaves[..last_size as usize];
                        let ok = merkle::consistency_proof(leaves, cp.size).is_some_and(|p| {
                            merkle::verify_consistency(cp.size, last_size, &cp.root, &last_root, &p)
                        });
                        if !ok {
                            return Ok(st.report(
                                Verdict::Inconsistent,
                                Some(cp.size),
                                "the consistency proof from the trusted checkpoint fails".into(),
                            ));
                        }
                    }
                }
            }
        }
    }
    let n = st.frontier.size();
    Ok(st.report(Verdict::Intact, None, format!("{n} records intact")))
}

/// Whether a record with `seq` appears in `rest` (a cheap scan for reordering).
fn appears_later(rest: &[u8], seq: u64) -> bool {
    rest.split(|&b| b == b'\n')
        .any(|l| matches!(record::parse_line(l), Ok(Line::Record { seq: s, .. }) if s == seq))
}

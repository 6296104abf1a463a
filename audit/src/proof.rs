//! `rootseal audit prove`: RFC 6962 inclusion and consistency proofs as JSON, and their check.
//!
//! ```json
//! {"v":1,"type":"inclusion","seq":5,"size":8,"leaf":"<b64>","root":"<b64>","proof":["<b64>",…]}
//! {"v":1,"type":"consistency","size1":2,"size2":8,"root1":"<b64>","root2":"<b64>","proof":[…]}
//! ```
//!
//! `root`, `root1` and `root2` are roots of checkpoints in the log (or of its whole tree), so
//! checking a proof means: the proof verifies, and each root is the root of a checkpoint signed
//! by the audit key ([`check`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::merkle::{self, Hash};

/// A proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Proof {
    /// Record `seq` is in the tree of `size` records.
    Inclusion {
        /// Format version (1).
        v: u64,
        /// The record.
        seq: u64,
        /// The tree size.
        size: u64,
        /// The record's leaf hash.
        leaf: String,
        /// The tree's root.
        root: String,
        /// The audit path.
        proof: Vec<String>,
    },
    /// The tree of `size1` records is a prefix of the tree of `size2`.
    Consistency {
        /// Format version (1).
        v: u64,
        /// The smaller tree.
        size1: u64,
        /// The larger tree.
        size2: u64,
        /// The smaller tree's root.
        root1: String,
        /// The larger tree's root.
        root2: String,
        /// The proof.
        proof: Vec<String>,
    },
}

fn b64(h: &Hash) -> String {
    B64.encode(h)
}

fn unb64(s: &str) -> Option<Hash> {
    B64.decode(s)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
}

/// The inclusion proof of record `seq` in the tree of the first `size` of `leaves`.
pub fn inclusion(leaves: &[Hash], seq: u64, size: u64) -> Option<Proof> {
    let tree = leaves.get(..usize::try_from(size).ok()?)?;
    let p = merkle::inclusion_proof(tree, seq)?;
    Some(Proof::Inclusion {
        v: 1,
        seq,
        size,
        leaf: b64(tree.get(usize::try_from(seq).ok()?)?),
        root: b64(&merkle::root_of(tree)),
        proof: p.iter().map(b64).collect(),
    })
}

/// The consistency proof between the trees of `size1` and `size2` of `leaves`.
pub fn consistency(leaves: &[Hash], size1: u64, size2: u64) -> Option<Proof> {
    if size1 > size2 {
        return None;
    }
    let tree = leaves.get(..usize::try_from(size2).ok()?)?;
    let p = merkle::consistency_proof(tree, size1)?;
    Some(Proof::Consistency {
        v: 1,
        size1,
        size2,
        root1: b64(&merkle::root_of(&tree[..size1 as usize])),
        root2: b64(&merkle::root_of(tree)),
        proof: p.iter().map(b64).collect(),
    })
}

/// Checks a proof's hashes; returns the roots it relies on (each must be a signed checkpoint's
/// root, or the tree's) with their sizes.
///
/// # Errors
/// A message saying what does not verify.
pub fn check(p: &Proof) -> Result<Vec<(u64, Hash)>, String> {
    let hashes = |v: &[String]| -> Result<Vec<Hash>, String> {
        v.iter()
            .map(|s| unb64(s).ok_or_else(|| "a proof hash is not base64 SHA-256".to_owned()))
            .collect()
    };
    match p {
        Proof::Inclusion {
            seq,
            size,
            leaf,
            root,
            proof,
            ..
        } => {
            let (leaf, root) = (
                unb64(leaf).ok_or("bad leaf hash")?,
                unb64(root).ok_or("bad root hash")?,
            );
            if merkle::verify_inclusion(&leaf, *seq, *size, &hashes(proof)?, &root) {
                Ok(vec![(*size, root)])
            } else {
                Err(format!(
                    "the inclusion proof of record {seq} in the tree of {size} fails"
                ))
            }
        }
        Proof::Consistency {
            size1,
            size2,
            root1,
            root2,
            proof,
            ..
        } => {
            let (r1, r2) = (
                unb64(root1).ok_or("bad root1 hash")?,
                unb64(root2).ok_or("bad root2 hash")?,
            );
            if merkle::verify_consistency(*size1, *size2, &r1, &r2, &hashes(proof)?) {
                Ok(vec![(*size1, r1), (*size2, r2)])
            } else {
                Err(format!(
                    "the consistency proof from {size1} to {size2} fails"
                ))
            }
        }
    }
}

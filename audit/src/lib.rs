//! rootseal's tamper-evident audit log. No PKCS#11 and no HTTP here: the HSM signs checkpoints
//! through a [`CheckpointSigner`] the binary provides.
//!
//! * [`record`]: one canonical JSON (RFC 8785) record per line, an RFC 6962 leaf each.
//! * [`merkle`]: the RFC 6962 tree, inclusion and consistency proofs.
//! * [`note`], [`checkpoint`]: C2SP signed notes and `tlog-checkpoint` checkpoints (Ed25519).
//! * [`AuditLog`]: the writer (group commit, block and best-effort modes, checkpoint policy).
//! * [`verify()`]: the offline verifier and its verdicts (`rootseal audit verify` exit codes).
//! * [`proof`]: the proofs `rootseal audit prove` prints.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod merkle;
pub mod note;
pub mod proof;
pub mod record;
mod time;
mod verify;
mod writer;

pub use checkpoint::Checkpoint;
pub use record::Event;
pub use time::now_rfc3339;
pub use verify::{verify, Options, Report, Verdict, VerifyError};
pub use writer::{
    AuditConfig, AuditError, AuditLog, AuditStatus, CheckpointSigner, Mode, BEST_EFFORT_SYNC,
    PREALLOCATE,
};

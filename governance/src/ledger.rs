//! The ledger of executed ceremonies: single use.
//!
//! `execute` is *verify → mark the id `started` durably (HSM-MACed, check-and-set) → run → mark
//! it `done`*. Marking before running means a ceremony id can never run twice, even when two
//! `execute`s race (check-and-set lets one win). Every executor is written to be resumed: a
//! `kill -9` after `started` leaves an id that only the **same** ceremony file (same request
//! digest) can take further, by running `execute` again, which finishes the operation and marks
//! it `done` — never a second, different run. So a ceremony is either not done (no entry:
//! nothing ran), or done, or started and finished by the next `execute`; never half.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::jcs;
use crate::GovError;

/// The `format` of a stored ledger.
pub const LEDGER_FORMAT: &str = "rootseal-ledger";
/// The ledger format version.
pub const LEDGER_VERSION: u16 = 1;

/// Where an executed ceremony stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerState {
    /// Verified and started; `execute` again finishes it.
    Started,
    /// Finished.
    Done,
}

/// One executed ceremony.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// The operation.
    pub op: String,
    /// Hex SHA-256 of the canonical request.
    pub request_sha256: String,
    /// Who approved it.
    pub approvers: Vec<String>,
    /// The root it applied to.
    pub root_id: Option<String>,
    /// When it started (Unix seconds).
    pub started: u64,
    /// When it finished.
    pub finished: Option<u64>,
    /// Where it stands.
    pub state: LedgerState,
    /// The full transcript: the ceremony file as executed (the request and every signature;
    /// it holds no secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// What it produced, for the audit record (the accessor of a token it issued; never a
    /// token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Whether its `ceremony.execute` audit record has been written (by the CLI when the log
    /// was free, else by `serve` when it sees the entry).
    #[serde(default)]
    pub audited: bool,
}

/// Ceremony id -> entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    /// [`LEDGER_FORMAT`].
    #[serde(default = "format")]
    pub format: String,
    /// [`LEDGER_VERSION`].
    #[serde(default = "version")]
    pub format_version: u16,
    /// The entries.
    pub executed: BTreeMap<String, LedgerEntry>,
}

fn format() -> String {
    LEDGER_FORMAT.into()
}

fn version() -> u16 {
    LEDGER_VERSION
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger {
            format: format(),
            format_version: version(),
            executed: BTreeMap::new(),
        }
    }

    /// Parses a stored ledger.
    ///
    /// # Errors
    /// [`GovError`] for another format or version.
    pub fn parse(bytes: &[u8]) -> Result<Ledger, GovError> {
        let l: Ledger =
            serde_json::from_slice(bytes).map_err(|e| GovError::new(format!("ledger: {e}")))?;
        if l.format != LEDGER_FORMAT || l.format_version != LEDGER_VERSION {
            return Err(GovError::new(format!(
                "ledger: format {:?} v{} is not {LEDGER_FORMAT} v{LEDGER_VERSION}",
                l.format, l.format_version
            )));
        }
        Ok(l)
    }

    /// The canonical stored form.
    ///
    /// # Errors
    /// As [`jcs::canonical`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, GovError> {
        jcs::canonical(self)
    }

    /// The entry of ceremony `id`.
    pub fn get(&self, id: &str) -> Option<&LedgerEntry> {
        self.executed.get(id)
    }
}

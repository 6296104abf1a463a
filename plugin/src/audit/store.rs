//! [`AuditedStore`]: every KEK record write is audited with the record's name, store version,
//! key version and SHA-256, and a record older than the log says it has been is refused.
//!
//! The log is the memory: at start the server replays its `kek.write` and `kek.delete` events
//! ([`replay`]) into the highest (store version, key version, hash) per key. A record loaded with
//! a lower store version, a lower latest key version, or the same store version but other bytes
//! is a rollback (a file store restored from a backup, a KV entry put back): refused as an
//! integrity failure, logged and audited, and the other keys keep working.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rootseal_audit::{AuditLog, Event};
use rootseal_hsm::{BoxFuture, KekStore, StoreError, StoredRecord};

/// The newest write of one record that the log has seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The store's version of the entry.
    pub store_version: u64,
    /// The key's latest version in the record.
    pub key_version: u64,
    /// SHA-256 of the record's bytes, hex.
    pub sha256: String,
}

/// Reads the per-key [`Seen`] state from the log at `path` (absent: empty).
///
/// # Errors
/// A message when the log cannot be read.
pub fn replay(path: &Path) -> Result<HashMap<String, Seen>, String> {
    let mut seen = HashMap::new();
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(seen),
        Err(e) => return Err(format!("cannot read the audit log {}: {e}", path.display())),
    };
    #[derive(serde::Deserialize)]
    struct Line {
        event: Option<serde_json::Value>,
    }
    for line in data.split(|&b| b == b'\n') {
        // Cheap filter first: only KEK events are parsed.
        if !contains(line, b"\"kek.") {
            continue;
        }
        let Ok(Line { event: Some(ev) }) = serde_json::from_slice::<Line>(line) else {
            continue;
        };
        let (Some(kind), Some(name)) = (ev["type"].as_str(), ev["name"].as_str()) else {
            continue;
        };
        match kind {
            "kek.write" | "kek.seen" => {
                let s = Seen {
                    store_version: ev["store_version"].as_u64().unwrap_or(0),
                    key_version: ev["key_version"].as_u64().unwrap_or(0),
                    sha256: ev["sha256"].as_str().unwrap_or_default().to_owned(),
                };
                seen.insert(name.to_owned(), s);
            }
            "kek.delete" => {
                seen.remove(name);
            }
            _ => {}
        }
    }
    Ok(seen)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn sha256_hex(b: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The latest key version a KEK record names (its `versions[].version`), 0 when unreadable (the
/// keyring refuses such a record anyway: its MAC does not verify).
fn key_version(data: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct V {
        version: u64,
    }
    #[derive(serde::Deserialize)]
    struct R {
        versions: Vec<V>,
    }
    serde_json::from_slice::<R>(data)
        .map(|r| r.versions.iter().map(|v| v.version).max().unwrap_or(0))
        .unwrap_or(0)
}

/// A [`KekStore`] that audits writes and refuses rollbacks.
pub struct AuditedStore {
    inner: Arc<dyn KekStore>,
    log: AuditLog,
    seen: Mutex<HashMap<String, Seen>>,
}

impl AuditedStore {
    /// Wraps `inner`, starting from what the log has `seen`.
    pub fn new(inner: Arc<dyn KekStore>, log: AuditLog, seen: HashMap<String, Seen>) -> Self {
        Self {
            inner,
            log,
            seen: Mutex::new(seen),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn record(&self, ev: Event) {
        if let Err(e) = self.log.record(ev).await {
            tracing::error!(error = %e, "cannot audit a KEK record event");
        }
    }

    /// Checks a loaded record against the log; the refusal reason when it is a rollback.
    fn check(&self, name: &str, rec: &StoredRecord) -> Result<Option<Seen>, String> {
        let now = Seen {
            store_version: rec.version,
            key_version: key_version(&rec.data),
            sha256: sha256_hex(&rec.data),
        };
        let seen = self.seen();
        let Some(last) = seen.get(name) else {
            return Ok(Some(now));
        };
        if now.store_version < last.store_version {
            return Err(format!(
                "rolled back: the store holds version {} but the audit log has seen version {}",
                now.store_version, last.store_version
            ));
        }
        if now.key_version < last.key_version {
            return Err(format!(
                "rolled back: the record's latest key version is {} but the audit log has seen {}",
                now.key_version, last.key_version
            ));
        }
        if now.store_version == last.store_version && now.sha256 != last.sha256 {
            return Err(format!(
                "replaced: store version {} does not hold the bytes the audit log recorded",
                now.store_version
            ));
        }
        Ok((now != *last).then_some(now))
    }
}

impl KekStore for AuditedStore {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<StoredRecord>, StoreError>> {
        Box::pin(async move {
            let Some(rec) = self.inner.get(name).await? else {
                return Ok(None);
            };
            match self.check(name, &rec) {
                Ok(None) => Ok(Some(rec)),
                Ok(Some(now)) => {
                    // A write this log did not see (another rootseal process, e.g. the CLI):
                    // recorded now, so that going back below it is refused from here on.
                    self.record(
                        Event::new("kek.seen")
                            .with("name", name)
                            .with("store_version", now.store_version)
                            .with("key_version", now.key_version)
                            .with("sha256", now.sha256.clone()),
                    )
                    .await;
                    self.seen().insert(name.to_owned(), now);
                    Ok(Some(rec))
                }
                Err(reason) => {
                    tracing::error!(key = name, reason = %reason, "KEK record refused");
                    self.record(
                        Event::new("kek.rollback")
                            .with("name", name)
                            .with("store_version", rec.version)
                            .with("reason", reason.clone()),
                    )
                    .await;
                    Err(StoreError::NotARecord {
                        name: name.to_owned(),
                        reason,
                    })
                }
            }
        })
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        data: Vec<u8>,
        cas: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let sha = sha256_hex(&data);
            let kv = key_version(&data);
            let version = self.inner.put(name, data, cas).await?;
            let now = Seen {
                store_version: version,
                key_version: kv,
                sha256: sha,
            };
            self.seen().insert(name.to_owned(), now.clone());
            self.record(
                Event::new("kek.write")
                    .with("name", name)
                    .with("store_version", version)
                    .with("key_version", kv)
                    .with("sha256", now.sha256),
            )
            .await;
            Ok(version)
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.inner.delete(name).await?;
            self.seen().remove(name);
            self.record(Event::new("kek.delete").with("name", name))
                .await;
            Ok(())
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.inner.list()
    }

    fn shred_history<'a>(
        &'a self,
        name: &'a str,
        current: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.inner.shred_history(name, current).await?;
            self.record(
                Event::new("kek.shred")
                    .with("name", name)
                    .with("kept_store_version", current),
            )
            .await;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn locator(&self) -> Option<String> {
        self.inner.locator()
    }

    fn parts(&self) -> Vec<Arc<dyn KekStore>> {
        self.inner.parts()
    }
}

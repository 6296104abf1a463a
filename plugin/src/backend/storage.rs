//! The mount's storage: OpenBao's `Storage` service, reached through the go-plugin broker
//! connection named in `Backend/Setup` ([`PluginStorage`]), and the [`KekStore`] of sealed KEK
//! records kept in it ([`PluginKekStore`]).
//!
//! OpenBao encrypts every entry with its barrier and replicates it with its storage (raft). Each
//! mount has its own storage view, so each mount is its own key namespace. Entries:
//!
//! | key | value |
//! |---|---|
//! | `keys/<name>` | `{"format":"rootseal-kek/1","version":N,"rootseal_record":"<base64 of the KEK record>"}` |
//! | `config/hsm` | the mount's HSM settings, never the PIN (`hsm_config.rs`) |
//!
//! The record inside is the same HSM-MACed KEK record (format v1) the file and KV stores keep,
//! wrapped the way the KV v2 store wraps it (`format`, `rootseal_record`), so rootseal's tools
//! read it alike. OpenBao's storage has no check-and-set: `version` is kept in the entry and
//! compared under one lock per plugin process, which is the only writer of its mount (a
//! standby node forwards writes to the active node, whose plugin process is the one writing).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rootseal_hsm::{valid_key_name, BoxFuture, KekStore, StoreError, StoredRecord};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::proto::pb;
use pb::storage_client::StorageClient;

/// Where key records live in the mount's storage.
pub const KEYS_PREFIX: &str = "keys/";
/// The `format` of a key entry.
const ENTRY_FORMAT: &str = "rootseal-kek/1";
/// The family every present and future entry format shares.
const ENTRY_FORMAT_FAMILY: &str = "rootseal-kek/";
/// One storage call's deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of the host's `Storage` service for one mount. Cheap to clone.
#[derive(Clone)]
pub struct PluginStorage {
    client: StorageClient<Channel>,
}

impl fmt::Debug for PluginStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginStorage").finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("OpenBao plugin storage {what}: {e}"))
}

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(CALL_TIMEOUT);
    r
}

impl PluginStorage {
    /// A client over `channel` (a broker connection).
    pub fn new(channel: Channel) -> Self {
        Self {
            client: StorageClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        }
    }

    /// Reads entry `key`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the host does not answer or reports an error.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self
            .client
            .clone()
            .get(request(pb::StorageGetArgs {
                key: key.to_owned(),
                txn: String::new(),
            }))
            .await
            .map_err(|e| unavailable("get", e.message()))?
            .into_inner();
        if !r.err.is_empty() {
            return Err(unavailable("get", r.err));
        }
        Ok(r.entry.map(|e| e.value))
    }

    /// Writes entry `key`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let r = self
            .client
            .clone()
            .put(request(pb::StoragePutArgs {
                entry: Some(pb::StorageEntry {
                    key: key.to_owned(),
                    value,
                    seal_wrap: false,
                }),
                txn: String::new(),
            }))
            .await
            .map_err(|e| unavailable("put", e.message()))?
            .into_inner();
        if r.err.is_empty() {
            Ok(())
        } else {
            Err(unavailable("put", r.err))
        }
    }

    /// Deletes entry `key` (a missing entry is not an error).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let r = self
            .client
            .clone()
            .delete(request(pb::StorageDeleteArgs {
                key: key.to_owned(),
                txn: String::new(),
            }))
            .await
            .map_err(|e| unavailable("delete", e.message()))?
            .into_inner();
        if r.err.is_empty() {
            Ok(())
        } else {
            Err(unavailable("delete", r.err))
        }
    }

    /// Lists the entries directly under `prefix` (names relative to it; sub-folders end in `/`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let r = self
            .client
            .clone()
            .list(request(pb::StorageListArgs {
                prefix: prefix.to_owned(),
                txn: String::new(),
            }))
            .await
            .map_err(|e| unavailable("list", e.message()))?
            .into_inner();
        if r.err.is_empty() {
            Ok(r.keys)
        } else {
            Err(unavailable("list", r.err))
        }
    }
}

/// A key entry as stored.
#[derive(Serialize, Deserialize)]
struct KeyEntry {
    format: String,
    version: u64,
    rootseal_record: String,
}

/// The storage key of key `name`'s record.
pub fn key_entry(name: &str) -> String {
    format!("{KEYS_PREFIX}{name}")
}

/// The key name a storage key names, if it is a key record's.
pub fn key_name_of(storage_key: &str) -> Option<&str> {
    storage_key
        .strip_prefix(KEYS_PREFIX)
        .filter(|n| valid_key_name(n))
}

/// Sealed KEK records in the mount's storage: a [`KekStore`].
pub struct PluginKekStore {
    storage: PluginStorage,
    backend: String,
    writes: tokio::sync::Mutex<()>,
}

impl fmt::Debug for PluginKekStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginKekStore")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl PluginKekStore {
    /// The store of the mount whose storage is `storage` (`backend` is the mount's backend UUID,
    /// for logs).
    pub fn new(storage: PluginStorage, backend: &str) -> Self {
        Self {
            storage,
            backend: backend.to_owned(),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    fn check(name: &str) -> Result<String, StoreError> {
        if valid_key_name(name) {
            Ok(key_entry(name))
        } else {
            Err(StoreError::InvalidName(name.to_owned()))
        }
    }

    async fn read(&self, name: &str) -> Result<Option<StoredRecord>, StoreError> {
        let key = Self::check(name)?;
        let Some(raw) = self.storage.get(&key).await? else {
            return Ok(None);
        };
        decode_entry(name, &raw).map(Some)
    }
}

/// Parses a stored key entry.
fn decode_entry(name: &str, raw: &[u8]) -> Result<StoredRecord, StoreError> {
    let bad = |reason: &str| StoreError::NotARecord {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let e: KeyEntry = serde_json::from_slice(raw).map_err(|_| bad("not a rootseal key entry"))?;
    if e.format != ENTRY_FORMAT {
        if e.format.starts_with(ENTRY_FORMAT_FAMILY) {
            return Err(bad(&format!(
                "entry format {:?} is newer than this rootseal understands ({ENTRY_FORMAT})",
                e.format
            )));
        }
        return Err(bad("not a rootseal key entry"));
    }
    let data = B64
        .decode(e.rootseal_record.as_bytes())
        .map_err(|_| bad("record is not base64"))?;
    if e.version == 0 {
        return Err(bad("entry version 0"));
    }
    Ok(StoredRecord {
        data,
        version: e.version,
    })
}

fn encode_entry(data: &[u8], version: u64) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&KeyEntry {
        format: ENTRY_FORMAT.to_owned(),
        version,
        rootseal_record: B64.encode(data),
    })
    .map_err(|e| StoreError::Unavailable(format!("cannot encode a key entry: {e}")))
}

impl KekStore for PluginKekStore {
    /// `openbao-plugin:<backend uuid>`: registered on the token like every store, so that
    /// `rootseal root rotate`, which cannot reach a mount's storage from outside OpenBao, counts
    /// it as unreachable and keeps the old root instead of destroying the root these records
    /// are sealed under.
    fn locator(&self) -> Option<String> {
        Some(format!("openbao-plugin:{}", self.backend))
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<StoredRecord>, StoreError>> {
        Box::pin(self.read(name))
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        data: Vec<u8>,
        cas: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let key = Self::check(name)?;
            let _w = self.writes.lock().await;
            let current = self.read(name).await?.map_or(0, |r| r.version);
            if current != cas {
                return Err(StoreError::Conflict {
                    name: name.to_owned(),
                });
            }
            let version = current + 1;
            self.storage
                .put(&key, encode_entry(&data, version)?)
                .await?;
            Ok(version)
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let key = Self::check(name)?;
            let _w = self.writes.lock().await;
            self.storage.delete(&key).await
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let mut names: Vec<String> = self
                .storage
                .list(KEYS_PREFIX)
                .await?
                .into_iter()
                .filter(|n| valid_key_name(n))
                .collect();
            names.sort();
            Ok(names)
        })
    }

    fn describe(&self) -> String {
        format!("openbao-plugin-storage:{}", self.backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let raw = encode_entry(b"record", 3).unwrap_or_default();
        let r = decode_entry("k", &raw).ok();
        assert_eq!(
            r,
            Some(StoredRecord {
                data: b"record".to_vec(),
                version: 3
            })
        );
    }

    #[test]
    fn foreign_and_newer_entries_are_refused_by_name() {
        let newer = br#"{"format":"rootseal-kek/2","version":1,"rootseal_record":""}"#;
        let e = decode_entry("k", newer).err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("newer")));
        assert!(decode_entry("k", b"{}").is_err());
        assert!(decode_entry("k", b"not json").is_err());
    }

    #[test]
    fn storage_keys_name_keys() {
        assert_eq!(key_name_of("keys/app"), Some("app"));
        assert_eq!(key_name_of("config/hsm"), None);
        assert_eq!(key_name_of("keys/a/b"), None);
        assert_eq!(key_entry("app"), "keys/app");
    }
}

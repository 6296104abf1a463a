//! Where sealed KEK records live: the [`KekStore`] trait, the local [`FileStore`] and the
//! [`RoutedStore`] that sends some key names to one store and the rest to another.
//!
//! A store keeps opaque bytes per key name with a version number for check-and-set. It never sees
//! key material in the clear: everything it holds is sealed under L0 and MACed inside the HSM.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, so that [`KekStore`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One stored record and the version the store gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record's bytes (a serialized, HSM-MACed KEK record).
    pub data: Vec<u8>,
    /// The store's version of this entry, used for check-and-set. Starts at 1.
    pub version: u64,
}

/// Errors from a [`KekStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Check-and-set failed: somebody else wrote the entry since it was read.
    #[error("check-and-set conflict on {name}: the entry changed since it was read")]
    Conflict {
        /// The key name.
        name: String,
    },
    /// The store cannot be reached (network, server down, sealed Vault).
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    /// The store refused us (for Vault: a 403).
    #[error("key store denied access: {0}")]
    PermissionDenied(String),
    /// The entry exists but is not a rootseal record.
    #[error("entry {name} is not a rootseal record: {reason}")]
    NotARecord {
        /// The key name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The key name is not acceptable to the store.
    #[error("invalid key name {0:?}")]
    InvalidName(String),
    /// Local I/O failed.
    #[error("key store I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Storage for sealed KEK records, one entry per key name.
///
/// `put` with `cas = 0` creates the entry only if it does not exist; `cas = n` replaces it only if
/// its current version is `n` (Vault KV v2 semantics). Implementations must be safe to call
/// concurrently from several tasks and, for shared backends, from several rootseal replicas.
pub trait KekStore: Send + Sync + 'static {
    /// Read an entry; `Ok(None)` when it does not exist.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<StoredRecord>, StoreError>>;
    /// Write an entry with check-and-set; returns the new version.
    fn put<'a>(
        &'a self,
        name: &'a str,
        data: Vec<u8>,
        cas: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Delete an entry (all versions). Deleting a missing entry is not an error.
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// List the entry names, sorted.
    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;
    /// A short human description for logs ("file:/var/lib/rootseal", "vault:http://…/secret/rootseal").
    fn describe(&self) -> String;

    /// Where this store keeps its entries, as a stable string another process can act on
    /// (`file:<absolute dir>`, `vault-kv:<address> <mount> <prefix>`): what the keyring registers
    /// on the token so that root rotation re-seals every record ([`open_by_locator`]). `None` for
    /// a store made of others ([`KekStore::parts`]) or one no other process can reach.
    fn locator(&self) -> Option<String> {
        None
    }

    /// The stores this one routes to (a [`RoutedStore`]'s local and shared store); empty for a
    /// store that keeps its own entries.
    fn parts(&self) -> Vec<Arc<dyn KekStore>> {
        Vec::new()
    }

    /// Destroys every older version the store keeps of entry `name` besides its current one,
    /// `current` (crypto-shredding: a key version removed from the record must not survive in
    /// the store's history). The default does nothing, for a store that keeps only the current
    /// entry: a [`FileStore`] replaces its file by rename, OpenBao's plugin storage overwrites.
    /// A versioned store (Vault KV v2) destroys the older versions' data.
    fn shred_history<'a>(
        &'a self,
        name: &'a str,
        current: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = (name, current);
        Box::pin(async { Ok(()) })
    }
}

/// The stores that keep their own entries under `store`: itself, or the leaves of its parts.
pub fn leaf_stores(store: &Arc<dyn KekStore>) -> Vec<Arc<dyn KekStore>> {
    let parts = store.parts();
    if parts.is_empty() {
        vec![store.clone()]
    } else {
        parts.iter().flat_map(leaf_stores).collect()
    }
}

/// Opens a store from its [`KekStore::locator`], for the kinds this crate can open without more
/// configuration (`file:`). `None` for any other kind.
pub fn open_by_locator(locator: &str) -> Option<Arc<dyn KekStore>> {
    let dir = locator.strip_prefix(FILE_LOCATOR)?;
    // Only a store directory that still exists: opening creates it, which must not happen for a
    // registered store that was removed.
    if !Path::new(dir).is_dir() {
        return None;
    }
    FileStore::open(dir)
        .ok()
        .map(|s| Arc::new(s) as Arc<dyn KekStore>)
}

/// The locator prefix of a [`FileStore`].
const FILE_LOCATOR: &str = "file:";

/// The reserved name prefix of governance records in a key store (`keyring/governance.rs`): no
/// transit key may have it.
pub const GOVERNANCE_PREFIX: &str = "rootseal-governance.";

/// Whether `name` is a governance record's (reserved) name.
pub fn is_governance_name(name: &str) -> bool {
    name.starts_with(GOVERNANCE_PREFIX)
}

/// Whether a key name is acceptable: 1–128 characters of `[A-Za-z0-9_.-]`, not starting with `.`.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A directory of `<name>.kek` files, written atomically (temp file, fsync, rename, fsync dir).
///
/// The version of an entry is kept in the file's first line so that check-and-set works across
/// processes; a lock file serialises writers.
pub struct FileStore {
    dir: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).finish()
    }
}

const FILE_MAGIC: &str = "rootseal-kek-file v1";

impl FileStore {
    /// Open (and create if needed, mode 0700) a file store in `dir`.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(Self {
            dir,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The directory this store writes to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, name: &str) -> Result<PathBuf, StoreError> {
        if !valid_key_name(name) {
            return Err(StoreError::InvalidName(name.to_owned()));
        }
        Ok(self.dir.join(format!("{name}.kek")))
    }

    fn read_file(path: &Path, name: &str) -> Result<Option<StoredRecord>, StoreError> {
        let raw = match std::fs::read(path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let not_record = |reason: &str| StoreError::NotARecord {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        let nl = raw
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| not_record("no header line"))?;
        let (head, rest) = raw.split_at(nl);
        let head = std::str::from_utf8(head).map_err(|_| not_record("header is not UTF-8"))?;
        let version = head
            .strip_prefix(FILE_MAGIC)
            .and_then(|v| v.trim().strip_prefix("version="))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| not_record("bad header line"))?;
        Ok(Some(StoredRecord {
            data: rest.get(1..).unwrap_or_default().to_vec(),
            version,
        }))
    }

    fn write_atomic(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let written = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(contents)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            // A full disk or a failed sync leaves no partial temporary file behind (the record
            // itself is untouched: it is only ever replaced by the rename).
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn with_file_lock<T>(
        dir: &Path,
        f: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // An OS advisory lock (flock) on `.lock` serialises writers from several processes, and
        // the kernel releases it when a writer dies, so a killed writer never blocks the others.
        let lock_path = dir.join(".lock");
        let io = |source| StoreError::Io {
            path: lock_path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        let out = f();
        let _ = file.unlock();
        out
    }
}

impl KekStore for FileStore {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<StoredRecord>, StoreError>> {
        Box::pin(async move {
            let path = self.path_of(name)?;
            let name = name.to_owned();
            tokio::task::spawn_blocking(move || Self::read_file(&path, &name))
                .await
                .map_err(|e| StoreError::Unavailable(format!("file store task failed: {e}")))?
        })
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        data: Vec<u8>,
        cas: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let path = self.path_of(name)?;
            let _guard = self.lock.lock().await;
            let dir = self.dir.clone();
            let name = name.to_owned();
            // Blocking file I/O (fsync) runs off the runtime; works on any runtime flavour.
            tokio::task::spawn_blocking(move || {
                Self::with_file_lock(&dir, || {
                    let current = Self::read_file(&path, &name)?.map_or(0, |r| r.version);
                    if current != cas {
                        return Err(StoreError::Conflict { name: name.clone() });
                    }
                    let version = current + 1;
                    let mut contents = format!("{FILE_MAGIC} version={version}\n").into_bytes();
                    contents.extend_from_slice(&data);
                    Self::write_atomic(&dir, &path, &contents)?;
                    Ok(version)
                })
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("file store task failed: {e}")))?
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let path = self.path_of(name)?;
            let _guard = self.lock.lock().await;
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StoreError::Io { path, source }),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let rd = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                source,
            })?;
            let mut names = BTreeSet::new();
            for entry in rd.flatten() {
                let file_name = entry.file_name();
                if let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".kek")) {
                    if valid_key_name(name) {
                        names.insert(name.to_owned());
                    }
                }
            }
            Ok(names.into_iter().collect())
        })
    }

    fn describe(&self) -> String {
        format!("file:{}", self.dir.display())
    }

    fn locator(&self) -> Option<String> {
        let dir = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        dir.to_str().map(|d| format!("{FILE_LOCATOR}{d}"))
    }
}

/// Sends the names in `local_names` to `local` and every other name to `shared`.
///
/// This breaks the boot cycle: the KEK that Vault auto-unseals with must not live in that Vault,
/// so it stays in the local file store while application KEKs live in Vault's KV.
pub struct RoutedStore {
    local: Arc<dyn KekStore>,
    shared: Arc<dyn KekStore>,
    local_names: HashSet<String>,
}

impl fmt::Debug for RoutedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutedStore")
            .field("local", &self.local.describe())
            .field("shared", &self.shared.describe())
            .field("local_names", &self.local_names)
            .finish()
    }
}

impl RoutedStore {
    /// A store that keeps `local_names` in `local` and the rest in `shared`.
    pub fn new(
        local: Arc<dyn KekStore>,
        shared: Arc<dyn KekStore>,
        local_names: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            local,
            shared,
            local_names: local_names.into_iter().collect(),
        }
    }

    fn route(&self, name: &str) -> &dyn KekStore {
        // Governance records (operator registry, quorum rules, ceremony ledger, API-token grants)
        // stay local: the seal token OpenBao unseals with is checked against them, so they
        // cannot live in the Vault that is waiting to unseal.
        if self.local_names.contains(name) || is_governance_name(name) {
            self.local.as_ref()
        } else {
            self.shared.as_ref()
        }
    }
}

impl KekStore for RoutedStore {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<StoredRecord>, StoreError>> {
        self.route(name).get(name)
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        data: Vec<u8>,
        cas: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.route(name).put(name, data, cas)
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.route(name).delete(name)
    }

    fn shred_history<'a>(
        &'a self,
        name: &'a str,
        current: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.route(name).shred_history(name, current)
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let mut names: BTreeSet<String> = self
                .local
                .list()
                .await?
                .into_iter()
                .filter(|n| self.local_names.contains(n) || is_governance_name(n))
                .collect();
            names.extend(
                self.shared
                    .list()
                    .await?
                    .into_iter()
                    .filter(|n| !self.local_names.contains(n) && !is_governance_name(n)),
            );
            Ok(names.into_iter().collect())
        })
    }

    fn parts(&self) -> Vec<Arc<dyn KekStore>> {
        vec![self.local.clone(), self.shared.clone()]
    }

    fn describe(&self) -> String {
        format!(
            "routed(local={} for {:?}, shared={})",
            self.local.describe(),
            self.local_names,
            self.shared.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn file_store_cas_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        assert_eq!(s.get("a").await.unwrap(), None);
        assert_eq!(s.put("a", b"one".to_vec(), 0).await.unwrap(), 1);
        assert!(matches!(
            s.put("a", b"x".to_vec(), 0).await,
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(s.put("a", b"two".to_vec(), 1).await.unwrap(), 2);
        let r = s.get("a").await.unwrap().unwrap();
        assert_eq!((r.data.as_slice(), r.version), (&b"two"[..], 2));
        s.put("b", b"b".to_vec(), 0).await.unwrap();
        assert_eq!(s.list().await.unwrap(), vec!["a", "b"]);
        s.delete("a").await.unwrap();
        assert_eq!(s.list().await.unwrap(), vec!["b"]);
        assert!(matches!(
            s.get("../etc").await,
            Err(StoreError::InvalidName(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn file_store_rejects_foreign_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.kek"), b"hello").unwrap();
        let s = FileStore::open(dir.path()).unwrap();
        assert!(matches!(
            s.get("x").await,
            Err(StoreError::NotARecord { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn routed_store_routes_by_name() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let local = Arc::new(FileStore::open(a.path()).unwrap());
        let shared = Arc::new(FileStore::open(b.path()).unwrap());
        let r = RoutedStore::new(local.clone(), shared.clone(), ["seal".to_owned()]);
        r.put("seal", b"s".to_vec(), 0).await.unwrap();
        r.put("app", b"a".to_vec(), 0).await.unwrap();
        assert!(local.get("seal").await.unwrap().is_some());
        assert!(shared.get("app").await.unwrap().is_some());
        assert!(local.get("app").await.unwrap().is_none());
        assert_eq!(r.list().await.unwrap(), vec!["app", "seal"]);
    }
}

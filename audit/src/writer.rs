//! The writer: one thread that appends records and checkpoints to the log file with group
//! commit.
//!
//! Requests hand their record to a bounded queue ([`AuditLog::record`]). The writer thread takes
//! everything queued, writes it with one `write`, makes it durable with one `fdatasync`, and only
//! then answers every waiter of that group; records that arrive while it syncs form the next
//! group. In [`Mode::Block`] a request waits for its record's sync; a write or sync that fails
//! (disk full, permission) answers the whole group with [`AuditError::Unavailable`], cuts the file
//! back to its last durable length, and the log reports itself failing until a write succeeds
//! again. In [`Mode::BestEffort`] nobody waits and a full queue drops the record (counted, and
//! the drop itself recorded as an `audit.dropped` event); its groups are written at once but
//! synced at most every [`BEST_EFFORT_SYNC`] (an `fdatasync` is the costliest part of a record on
//! a virtual disk, `docs/benchmarks.md`).
//!
//! A regular log file is kept [`PREALLOCATE`] bytes ahead of its records with written zeros, so
//! that a group's `fdatasync` flushes only data blocks already allocated, and no file-size or
//! extent change (no journal commit): on ext4 that about halves its latency. The log's content
//! ends at its first zero byte (a record is JSON and never contains one); readers ignore the
//! padding ([`record::content_len`]), and a clean close cuts it off.
//!
//! Checkpoints are signed by a [`CheckpointSigner`] (in rootseal, the HSM's `rootseal-audit` key):
//! every `checkpoint_every` records, every `checkpoint_interval` when records came in, at
//! [`AuditLog::checkpoint`] (start, ceremonies) and at [`AuditLog::close`].

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::checkpoint::{self, Checkpoint};
use crate::merkle::{leaf_hash, Frontier, Hash};
use crate::note::{Note, NoteSignature, SIG_ED25519};
use crate::record::{self, content_len, Event, Line};

/// How requests wait for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// A request's record is durable before its response is sent (the default for `serve`).
    Block,
    /// Records are written in the background; a request never waits and never fails for the
    /// log. For development.
    BestEffort,
    /// No log (benchmarks' anchor only).
    Off,
}

impl Mode {
    /// `"block"`, `"best-effort"` or `"off"`, as the config and health say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Block => "block",
            Mode::BestEffort => "best-effort",
            Mode::Off => "off",
        }
    }

    /// Parses the config value.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "block" => Some(Mode::Block),
            "best-effort" => Some(Mode::BestEffort),
            "off" => Some(Mode::Off),
            _ => None,
        }
    }
}

/// The log's settings (`[audit]` in rootseal.toml).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// The log file.
    pub path: PathBuf,
    /// How requests wait for it.
    pub mode: Mode,
    /// A checkpoint after this many records (default 1,000).
    pub checkpoint_every: u64,
    /// A checkpoint after this long when records came in (default 10 s).
    pub checkpoint_interval: Duration,
    /// Records that may wait for the writer (default 65,536); a full queue makes callers wait
    /// (block) or drops the record (best-effort).
    pub queue: usize,
}

impl AuditConfig {
    /// The defaults for a log at `path` in `mode`.
    pub fn new(path: PathBuf, mode: Mode) -> Self {
        Self {
            path,
            mode,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(10),
            queue: 65_536,
        }
    }
}

/// Signs checkpoint notes with an Ed25519 key. Called on the writer thread (blocking is fine; an
/// HSM signer submits to its worker pool and waits).
pub trait CheckpointSigner: Send + Sync + 'static {
    /// The note key name, e.g. `rootseal-audit/<token serial>`.
    fn name(&self) -> &str;
    /// The 32-byte Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// Signs `msg` (the checkpoint text): a 64-byte Ed25519 signature.
    ///
    /// # Errors
    /// A message for the log.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String>;
}

/// Why the log refused a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The log cannot be written (the reason: disk full, permission, …).
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// The log is closed.
    #[error("audit log closed")]
    Closed,
    /// The existing log file cannot be continued.
    #[error("{0}")]
    Open(String),
    /// No checkpoint signer (the audit key is missing).
    #[error("audit key missing: checkpoints cannot be signed")]
    NoSigner,
}

/// What the log reports about itself (health, metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditStatus {
    /// The mode.
    pub mode: Mode,
    /// Records durable in the log.
    pub size: u64,
    /// Why the last write failed, while no write has succeeded since.
    pub failing: Option<String>,
    /// Whether checkpoints are signed.
    pub signed: bool,
    /// Records dropped because the queue was full (best-effort only).
    pub dropped: u64,
    /// `fdatasync` calls the writer made (group commit: records per sync is `size / syncs`).
    pub syncs: u64,
}

type Reply<T> = oneshot::Sender<Result<T, AuditError>>;

enum Msg {
    /// An event's canonical bytes ([`record::encode_event`], made by the caller).
    Record(Vec<u8>, Option<Reply<u64>>, OwnedSemaphorePermit),
    Checkpoint(Reply<String>),
    Close(oneshot::Sender<()>),
}

struct Shared {
    mode: Mode,
    size: AtomicU64,
    dropped: AtomicU64,
    syncs: AtomicU64,
    failing: Mutex<Option<String>>,
    latest: Mutex<Option<String>>,
    signed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle on the audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<Msg>>,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("mode", &self.shared.mode)
            .finish_non_exhaustive()
    }
}

/// The state the writer continues from.
struct Tail {
    frontier: Frontier,
    prev: Option<Hash>,
    last_cp: Option<(u64, Hash)>,
    len: u64,
    torn: u64,
}

/// Bytes of written zeros kept ahead of the records of a regular log file (see the module docs).
pub const PREALLOCATE: u64 = 4 << 20;
/// The padding is extended when less than this is left ahead of a group.
const PREALLOCATE_LOW: u64 = 256 << 10;

/// Reads an existing log: its tree, its last leaf and checkpoint, and the length of its complete
/// lines (a final line cut short by a crash mid-write is cut off: it was never acknowledged).
fn recover(file: &mut File, path: &Path) -> Result<Tail, AuditError> {
    let mut data = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut data))
        .map_err(|e| AuditError::Open(format!("cannot read {}: {e}", path.display())))?;
    let (end, junk) = content_len(&data);
    let mut t = Tail {
        frontier: Frontier::new(),
        prev: None,
        last_cp: None,
        len: 0,
        torn: 0,
    };
    let padded = data.len() as u64;
    data.truncate(end);
    let mut pos = 0usize;
    while pos < data.len() {
        let Some(nl) = data[pos..].iter().position(|&b| b == b'\n') else {
            t.torn = (data.len() - pos) as u64;
            break;
        };
        let line = &data[pos..pos + nl];
        let damaged = |why: String| {
            AuditError::Open(format!(
                "the audit log {} cannot be continued: line {} {why}; check it with `rootseal audit \
                 verify` and move it aside to start a new log",
                path.display(),
                t.frontier.size() + 1
            ))
        };
        match record::parse_line(line).map_err(&damaged)? {
            Line::Record { seq, .. } if seq != t.frontier.size() => {
                return Err(damaged(format!(
                    "has seq {seq} where {} was expected",
                    t.frontier.size()
                )))
            }
            Line::Record { .. } => {
                let h = leaf_hash(line);
                t.frontier.push(h);
                t.prev = Some(h);
            }
            Line::Checkpoint { note, .. } => {
                let note = Note::parse(&note).map_err(|e| damaged(e.to_string()))?;
                t.last_cp = Some((
                    Checkpoint::parse_text(&note.text)
                        .map_err(|e| damaged(e.to_string()))?
                        .size,
                    checkpoint::text_hash(&note.text),
                ));
            }
        }
        pos += nl + 1;
        t.len = pos as u64;
    }
    if junk {
        // Bytes of a group that never finished its sync, past the padding's start: cut off
        // with the padding (it is made again).
        t.torn = padded - t.len;
    }
    Ok(t)
}

impl AuditLog {
    /// Opens (or creates) the log at `cfg.path` and starts the writer thread. `origin` is the
    /// checkpoints' origin line; `signer` signs them (`None`: records only, no checkpoints, and
    /// [`AuditStatus::signed`] is false). Blocking (reads the existing log).
    ///
    /// # Errors
    /// [`AuditError::Open`] when the file cannot be opened or continued.
    pub fn open(
        cfg: &AuditConfig,
        origin: String,
        signer: Option<Arc<dyn CheckpointSigner>>,
    ) -> Result<AuditLog, AuditError> {
        let shared = Arc::new(Shared {
            mode: cfg.mode,
            size: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            failing: Mutex::new(None),
            latest: Mutex::new(None),
            signed: signer.is_some(),
        });
        let permits = Arc::new(Semaphore::new(cfg.queue.max(1)));
        if cfg.mode == Mode::Off {
            return Ok(AuditLog {
                tx: None,
                permits,
                shared,
            });
        }
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            o.mode(0o600);
        }
        let mut file = o
            .open(&cfg.path)
            .map_err(|e| AuditError::Open(format!("cannot open {}: {e}", cfg.path.display())))?;
        let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        // One writer per log: a second process appending would break the sequence.
        if regular {
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(AuditError::Open(format!(
                        "the audit log {} is in use by another rootseal process",
                        cfg.path.display()
                    )))
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(AuditError::Open(format!(
                        "cannot lock {}: {e}",
                        cfg.path.display()
                    )))
                }
            }
        }
        // A log that is not a regular file (a pipe to a shipper, a device) is written, never read.
        let tail = if regular {
            recover(&mut file, &cfg.path)?
        } else {
            Tail {
                frontier: Frontier::new(),
                prev: None,
                last_cp: None,
                len: 0,
                torn: 0,
            }
        };
        if tail.torn > 0 {
            file.set_len(tail.len)
                .and_then(|()| file.sync_data())
                .map_err(|e| {
                    AuditError::Open(format!("cannot repair {}: {e}", cfg.path.display()))
                })?;
            tracing::warn!(
                bytes = tail.torn,
                "the audit log ended in a line cut short (a crash mid-write, never acknowledged); cut it off"
            );
        }
        if regular {
            file.seek(SeekFrom::Start(tail.len))
                .map_err(|e| AuditError::Open(format!("{}: {e}", cfg.path.display())))?;
        }
        // The padding already there (a log not closed cleanly) is used as it is.
        let alloc_end = if regular {
            file.metadata().map(|m| m.len()).unwrap_or(tail.len)
        } else {
            0
        };
        shared.size.store(tail.frontier.size(), Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        let torn = tail.torn;
        // ROOTSEAL_AUDIT_PREALLOCATE: bytes of padding (0: none; for file systems where writing
        // zeros ahead buys nothing, e.g. copy-on-write ones, and for benchmarks).
        let prealloc = std::env::var("ROOTSEAL_AUDIT_PREALLOCATE")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(PREALLOCATE);
        let mut w = Writer {
            prealloc,
            file,
            regular,
            alloc_end,
            origin,
            signer,
            committed: tail,
            shared: shared.clone(),
            every: cfg.checkpoint_every.max(1),
            interval: cfg.checkpoint_interval,
            spare: Vec::new(),
            last_sync: Instant::now(),
            unsynced: false,
        };
        std::thread::Builder::new()
            .name("rootseal-audit".into())
            .spawn(move || {
                let closers = w.run(rx);
                // Answered once the file (and its lock) is closed: a new writer may open it.
                drop(w);
                for c in closers {
                    let _ = c.send(());
                }
            })
            .map_err(|e| AuditError::Open(format!("cannot start the audit writer: {e}")))?;
        let log = AuditLog {
            tx: Some(tx),
            permits,
            shared,
        };
        if torn > 0 {
            // The repair itself is on the record.
            if let Ok(ev) = record::encode_event(&Event::new("audit.torn_tail").with("bytes", torn))
            {
                let _ = log.send(ev, None, None);
            }
        }
        Ok(log)
    }

    fn send(
        &self,
        event: Vec<u8>,
        reply: Option<Reply<u64>>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), AuditError> {
        let tx = self.tx.as_ref().ok_or(AuditError::Closed)?;
        let permit = match permit {
            Some(p) => p,
            None => self
                .permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| AuditError::Unavailable("audit queue full".into()))?,
        };
        tx.send(Msg::Record(event, reply, permit))
            .map_err(|_| AuditError::Closed)
    }

    /// Appends `event`. In [`Mode::Block`] returns once the record is durable, with its sequence
    /// number; in [`Mode::BestEffort`] returns at once (`None`); in [`Mode::Off`] does nothing.
    ///
    /// # Errors
    /// [`AuditError::Unavailable`] when the record could not be written (block mode only),
    /// [`AuditError::Closed`] after [`AuditLog::close`].
    pub async fn record(&self, event: Event) -> Result<Option<u64>, AuditError> {
        if self.shared.mode == Mode::Off {
            return Ok(None);
        }
        // Encoded here, on the caller's thread: the writer thread only splices bytes, and the
        // event's allocations are freed by the thread that made them.
        let encoded = record::encode_event(&event);
        drop(event);
        match encoded {
            Ok(ev) => self.record_encoded(ev).await,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an audit record");
                if self.shared.mode == Mode::BestEffort {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    return Ok(None);
                }
                Err(AuditError::Unavailable(format!(
                    "cannot encode the record: {e}"
                )))
            }
        }
    }

    /// [`AuditLog::record`] of an event already in its canonical form: the RFC 8785 bytes of a
    /// JSON object with a `type`, as [`record::encode_event`] makes them (the HTTP API's request
    /// records are serialised straight from a typed struct, without a map in between). The
    /// writer splices the bytes as they are; debug builds check that they are canonical.
    ///
    /// # Errors
    /// As [`AuditLog::record`].
    pub async fn record_encoded(&self, event: Vec<u8>) -> Result<Option<u64>, AuditError> {
        debug_assert!(
            record::is_canonical_object(&event),
            "an audit event is not canonical JSON: {}",
            String::from_utf8_lossy(&event)
        );
        match self.shared.mode {
            Mode::Off => Ok(None),
            Mode::BestEffort => {
                if self.send(event, None, None).is_err() {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None)
            }
            Mode::Block => {
                let permit = self
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| AuditError::Closed)?;
                let (tx, rx) = oneshot::channel();
                self.send(event, Some(tx), Some(permit))?;
                rx.await.map_err(|_| AuditError::Closed)?.map(Some)
            }
        }
    }

    /// Writes a checkpoint now (after every record queued before it) and returns its note.
    ///
    /// # Errors
    /// [`AuditError::NoSigner`], [`AuditError::Unavailable`], [`AuditError::Closed`].
    pub async fn checkpoint(&self) -> Result<String, AuditError> {
        let tx = self.tx.as_ref().ok_or(AuditError::Closed)?;
        let (rtx, rrx) = oneshot::channel();
        tx.send(Msg::Checkpoint(rtx))
            .map_err(|_| AuditError::Closed)?;
        rrx.await.map_err(|_| AuditError::Closed)?
    }

    /// Writes a final checkpoint and stops the writer (every record queued before is written).
    pub async fn close(&self) {
        let Some(tx) = self.tx.as_ref() else { return };
        let (rtx, rrx) = oneshot::channel();
        if tx.send(Msg::Close(rtx)).is_ok() {
            let _ = rrx.await;
        }
    }

    /// The latest checkpoint written (a signed note), if any since the log was opened.
    pub fn latest_checkpoint(&self) -> Option<String> {
        lock(&self.shared.latest).clone()
    }

    /// The log's state.
    pub fn status(&self) -> AuditStatus {
        AuditStatus {
            mode: self.shared.mode,
            size: self.shared.size.load(Ordering::SeqCst),
            failing: lock(&self.shared.failing).clone(),
            signed: self.shared.signed,
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
        }
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode
    }
}

/// Most messages one group takes.
const MAX_GROUP: usize = 4096;

/// In [`Mode::BestEffort`], the longest a written record waits for its `fdatasync` (a crash of
/// the machine can lose the records of the last this long; a crash of rootseal alone loses
/// nothing written). Block mode syncs every group before answering it.
pub const BEST_EFFORT_SYNC: Duration = Duration::from_millis(100);

struct Writer {
    file: File,
    regular: bool,
    /// The file's length, padding included (regular files).
    alloc_end: u64,
    /// Bytes of padding kept ahead ([`PREALLOCATE`] unless the environment says otherwise).
    prealloc: u64,
    origin: String,
    signer: Option<Arc<dyn CheckpointSigner>>,
    committed: Tail,
    shared: Arc<Shared>,
    every: u64,
    interval: Duration,
    /// The last group's buffer, kept for its capacity.
    spare: Vec<u8>,
    /// When the file was last synced.
    last_sync: Instant,
    /// Bytes were written since (best-effort only).
    unsynced: bool,
}

/// A group being assembled: its bytes and the tree after it.
struct Group {
    buf: Vec<u8>,
    frontier: Frontier,
    prev: Option<Hash>,
    last_cp: Option<(u64, Hash)>,
    checkpoints: Vec<String>,
    /// The records' time: one reading per group (they are written together).
    time: Option<String>,
    record_waiters: Vec<(Reply<u64>, u64)>,
    cp_waiters: Vec<(Reply<String>, Result<String, AuditError>)>,
    close: Vec<oneshot::Sender<()>>,
    permits: Vec<OwnedSemaphorePermit>,
}

impl Writer {
    /// Runs until closed; returns the waiters of [`AuditLog::close`].
    fn run(&mut self, rx: mpsc::Receiver<Msg>) -> Vec<oneshot::Sender<()>> {
        let mut last_cp = Instant::now();
        let mut since_cp =
            self.committed.frontier.size() - self.committed.last_cp.map_or(0, |(s, _)| s);
        // The start checkpoint, unless the log already ends with one of its size.
        let mut want_cp = since_cp > 0 || self.committed.last_cp.is_none();
        let mut closing = false;
        loop {
            let mut msgs = Vec::new();
            // The start checkpoint goes first, alone.
            if !want_cp {
                let mut wait = self.interval.saturating_sub(last_cp.elapsed());
                if self.unsynced {
                    wait = wait.min(BEST_EFFORT_SYNC.saturating_sub(self.last_sync.elapsed()));
                }
                match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                    Ok(m) => msgs.push(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => closing = true,
                }
                // Everything that queued up while the last group was syncing: one group.
                while !closing && msgs.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(m) => msgs.push(m),
                        Err(mpsc::TryRecvError::Empty) => break,
                        Err(mpsc::TryRecvError::Disconnected) => closing = true,
                    }
                }
            }
            let mut buf = std::mem::take(&mut self.spare);
            buf.clear();
            let mut g = Group {
                buf,
                time: None,
                frontier: self.committed.frontier.clone(),
                prev: self.committed.prev,
                last_cp: self.committed.last_cp,
                checkpoints: Vec::new(),
                record_waiters: Vec::new(),
                cp_waiters: Vec::new(),
                close: Vec::new(),
                permits: Vec::new(),
            };
            let dropped = self.shared.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                match record::encode_event(&Event::new("audit.dropped").with("records", dropped)) {
                    Ok(ev) => {
                        self.append(&mut g, &ev);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode an audit record"),
                }
            }
            let size_before = g.frontier.size();
            for m in msgs {
                match m {
                    Msg::Record(ev, reply, permit) => {
                        let seq = self.append(&mut g, &ev);
                        drop(ev);
                        g.permits.push(permit);
                        if let Some(r) = reply {
                            g.record_waiters.push((r, seq));
                        }
                    }
                    Msg::Checkpoint(r) => {
                        let res = self.checkpoint(&mut g);
                        g.cp_waiters.push((r, res));
                    }
                    Msg::Close(r) => {
                        closing = true;
                        g.close.push(r);
                    }
                }
            }
            since_cp += g.frontier.size() - size_before;
            let due = since_cp >= self.every
                || (since_cp > 0 && last_cp.elapsed() >= self.interval)
                || want_cp
                || (closing && g.last_cp.map(|(s, _)| s) != Some(g.frontier.size()));
            if due && g.last_cp.map(|(s, _)| s) != Some(g.frontier.size()) || want_cp {
                let _ = self.checkpoint(&mut g);
            }
            if g.last_cp.map(|(s, _)| s) == Some(g.frontier.size()) {
                since_cp = 0;
                last_cp = Instant::now();
            } else if due {
                // No signer, or it failed: try again after another interval.
                last_cp = Instant::now();
            }
            want_cp = false;
            let closers = self.commit(g);
            if closing {
                // (A dropped handle closes the channel without a Close: no final checkpoint, as
                // after a crash; the padding stays for the next writer.)
                return closers;
            }
        }
    }

    /// Adds the record of `ev` (an event's canonical bytes) to the group; its seq.
    fn append(&self, g: &mut Group, ev: &[u8]) -> u64 {
        let seq = g.frontier.size();
        let time = g.time.get_or_insert_with(crate::time::now_rfc3339);
        let start = g.buf.len();
        record::splice(&mut g.buf, seq, time, g.prev.as_ref(), ev);
        let h = leaf_hash(&g.buf[start..]);
        g.buf.push(b'\n');
        g.frontier.push(h);
        g.prev = Some(h);
        seq
    }

    /// Signs a checkpoint of the group's tree and adds its line.
    fn checkpoint(&self, g: &mut Group) -> Result<String, AuditError> {
        let signer = self.signer.as_ref().ok_or(AuditError::NoSigner)?;
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: g.frontier.size(),
            root: g.frontier.root(),
            time: crate::time::now_rfc3339(),
            prev: g.last_cp.map(|(_, h)| h),
        };
        let text = cp.text();
        let sig = signer.sign(text.as_bytes()).map_err(|e| {
            tracing::warn!(error = %e, "cannot sign an audit checkpoint");
            AuditError::Unavailable(format!("cannot sign the checkpoint: {e}"))
        })?;
        let public = signer.public_key();
        let note = Note {
            text: text.clone(),
            signatures: vec![NoteSignature {
                name: signer.name().to_owned(),
                key_id: crate::note::key_id(signer.name(), SIG_ED25519, &public),
                sig,
            }],
        }
        .render();
        let line = record::encode_checkpoint(&note).map_err(AuditError::Unavailable)?;
        g.buf.extend_from_slice(&line);
        g.buf.push(b'\n');
        g.last_cp = Some((cp.size, checkpoint::text_hash(&text)));
        g.checkpoints.push(note.clone());
        Ok(note)
    }

    /// Keeps [`PREALLOCATE`] bytes of written zeros ahead of a group that will end at `need`.
    /// A failure (disk full, file-size limit) is not the group's: it is written as an append.
    fn preallocate(&mut self, need: u64) {
        if !self.regular
            || self.prealloc == 0
            || need + PREALLOCATE_LOW.min(self.prealloc / 2) <= self.alloc_end
        {
            return;
        }
        use std::os::unix::fs::FileExt as _;
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut at = self.alloc_end.max(self.committed.len);
        let target = need + self.prealloc;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64) as usize;
            match self.file.write_all_at(&ZEROS[..n], at) {
                Ok(()) => at += n as u64,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot preallocate the audit log");
                    at = self.file.metadata().map_or(at, |m| m.len());
                    break;
                }
            }
        }
        self.alloc_end = at;
    }

    /// Cuts the padding off at a clean close.
    fn trim(&mut self) {
        if self.regular && self.alloc_end > self.committed.len {
            match self
                .file
                .set_len(self.committed.len)
                .and_then(|()| self.file.sync_data())
            {
                Ok(()) => self.alloc_end = self.committed.len,
                Err(e) => tracing::warn!(error = %e, "cannot cut the audit log's padding off"),
            }
        }
    }

    /// Writes `buf` (a group's bytes, possibly none) and, when `sync_now`, syncs everything
    /// written so far; whether it synced.
    fn write_group(&mut self, buf: &[u8], sync_now: bool) -> std::io::Result<bool> {
        if !buf.is_empty() {
            self.preallocate(self.committed.len + buf.len() as u64);
            self.file.write_all(buf)?;
        }
        if sync_now && (self.unsynced || !buf.is_empty()) {
            // Set before the attempt: a failing sync is retried after another interval, not in
            // a loop.
            self.last_sync = Instant::now();
            self.file.sync_data()?;
            self.shared.syncs.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes and syncs the group (best-effort: see [`BEST_EFFORT_SYNC`]), then answers its
    /// waiters (all but the close waiters, which it returns).
    fn commit(&mut self, g: Group) -> Vec<oneshot::Sender<()>> {
        // Best-effort: nobody waits for the disk, so its groups are written at once (readers see
        // them) but synced at most every BEST_EFFORT_SYNC, and whenever a checkpoint is waited
        // for or the log closes.
        let sync_now = self.shared.mode != Mode::BestEffort
            || !g.cp_waiters.is_empty()
            || !g.close.is_empty()
            || self.last_sync.elapsed() >= BEST_EFFORT_SYNC;
        let written = self.write_group(&g.buf, sync_now);
        match written {
            Ok(synced) => {
                if synced {
                    self.unsynced = false;
                } else if !g.buf.is_empty() {
                    self.unsynced = true;
                }
                self.committed.len += g.buf.len() as u64;
                self.alloc_end = self.alloc_end.max(self.committed.len);
                self.committed.frontier = g.frontier;
                self.committed.prev = g.prev;
                self.committed.last_cp = g.last_cp;
                self.shared
                    .size
                    .store(self.committed.frontier.size(), Ordering::SeqCst);
                if let Some(last) = g.checkpoints.last() {
                    *lock(&self.shared.latest) = Some(last.clone());
                }
                if !g.buf.is_empty() {
                    if let Some(was) = lock(&self.shared.failing).take() {
                        tracing::info!(was = %was, "the audit log is writable again");
                    }
                }
                for (r, seq) in g.record_waiters {
                    let _ = r.send(Ok(seq));
                }
                for (r, res) in g.cp_waiters {
                    let _ = r.send(res);
                }
            }
            Err(e) => {
                let why = e.to_string();
                tracing::error!(error = %why, "cannot write the audit log");
                // Cut back to the last durable length, so that the next write starts on a line.
                let mut cut = || -> std::io::Result<()> {
                    self.file.set_len(self.committed.len)?;
                    self.file.seek(SeekFrom::Start(self.committed.len))?;
                    Ok(())
                };
                match if self.regular { cut() } else { Ok(()) } {
                    // The padding went with it; it is made again when there is room.
                    Ok(()) => self.alloc_end = self.committed.len,
                    Err(e2) => {
                        tracing::error!(error = %e2, "cannot cut the audit log back after a failed write");
                        self.alloc_end = self.file.metadata().map_or(self.alloc_end, |m| m.len());
                    }
                }
                *lock(&self.shared.failing) = Some(why.clone());
                for (r, _) in g.record_waiters {
                    let _ = r.send(Err(AuditError::Unavailable(why.clone())));
                }
                for (r, _) in g.cp_waiters {
                    let _ = r.send(Err(AuditError::Unavailable(why.clone())));
                }
            }
        }
        drop(g.permits);
        // Kept for the next group (unless a burst made it large).
        if g.buf.capacity() <= 1 << 20 {
            self.spare = g.buf;
        }
        if !g.close.is_empty() {
            self.trim();
        }
        g.close
    }
}

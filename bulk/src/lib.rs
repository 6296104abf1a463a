//! Bulk seal: many items, or one large object, sealed with one HSM call per batch.
//!
//! The design and its reasoning are in `docs/bulk-seal.md`. In short: the keyring mints a fresh
//! 256-bit batch key inside the HSM and wraps it under the key's latest L1 version (one HSM job);
//! items are sealed in software with aws-lc-rs AES-256-GCM, nonce = item index, and an AAD that
//! binds key name, L1 version, batch id, item index and the caller's associated data.
//!
//! This crate knows no HTTP: the `rootseal` binary's `routes/bulk.rs` maps requests onto the
//! engine, and `fuzz/` drives the parsers directly. Its modules, all private:
//!
//! * `format`: the sealed-item format, the AADs, the per-batch [`BatchCipher`].
//! * `frame`: the length-prefixed binary framing (`application/octet-stream`).
//! * `stream`: chunked AEAD for one large object, and [`ShapeCheck`] for a client.
//! * `cache`: the bounded cache of unwrapped batch keys (one per binary unseal request).
//! * `pool`: the long-lived sealing threads, one per core.
//! * `engine`: batch sealing and unsealing in each form (JSON, frames, object streams).
//! * `source`: [`BatchKeySource`], where batch keys come from (the [`rootseal_hsm::Keyring`]).
//! * `error`: [`BulkError`] and [`RequestError`].
#![forbid(unsafe_code)]

mod cache;
mod engine;
mod error;
mod format;
mod frame;
mod pool;
mod source;
mod stream;
#[cfg(test)]
mod testkeys;

/// Items sealed under one batch key at most (the nonce is the item index); a larger binary
/// request starts a new batch.
pub const MAX_ITEMS_PER_BATCH: u32 = 1 << 24;

// The public interface is:

pub use engine::{
    new_cipher, open_cipher, seal_frames, seal_json_async, seal_stream, unseal_frames,
    unseal_json_async, unseal_stream, JsonOutcome, Sink,
};
pub use error::{BulkError, RequestError};
pub use format::{decode_item_string, parse_item, BatchCipher, ItemRef};
pub use frame::{
    put_end, put_header, put_record, split_error, split_item, Frame, FrameDecoder, Kind,
    FRAME_MAGIC, MAX_FRAME, REQUEST_ERROR,
};
pub use pool::threads;

/// Entry points of `fuzz/` (cargo-fuzz): the JSON bulk forms' parsers, with a fixed batch key
/// in place of the HSM. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::engine::fuzz_entry::{seal as json_seal, unseal as json_unseal};
}
pub use source::BatchKeySource;
pub use stream::{
    ShapeCheck, StreamHeader, StreamOpener, StreamSealer, DEFAULT_CHUNK, MAX_CHUNK, MIN_CHUNK,
    STREAM_MAGIC,
};

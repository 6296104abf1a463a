//! The bulk engine, independent of HTTP: one file per form, over one shared part.
//!
//! * `json`: JSON batches (`{"batch_input":[…]}`), parsed whole, sealed in parallel over cores.
//! * `frames`: binary frame streams, read and written as they flow, in bounded memory.
//! * `object`: one large object as a chunked AEAD stream.
//! * `pipeline`: what the forms share: minting and opening batch ciphers (and what a batch key
//!   that does not open means for a request), the output sink, and the ordered pipeline of parts
//!   on the sealing threads.

mod frames;
mod json;
mod object;
mod pipeline;
#[cfg(test)]
mod tests;

pub use frames::{seal_frames, unseal_frames};
#[doc(hidden)]
pub use json::fuzz_entry;
pub use json::{seal_json_async, unseal_json_async, JsonOutcome};
pub use object::{seal_stream, unseal_stream};
pub use pipeline::{new_cipher, open_cipher, Sink};

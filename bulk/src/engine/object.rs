//! The object-stream form: one large object as a chunked AEAD stream (`stream`), sealed and
//! opened as its bytes arrive.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::pipeline::{send, Sink};
use crate::error::BulkError;
use crate::stream::{StreamOpener, StreamSealer};

/// Sealed output is sent in pieces of about this many bytes.
const SEND_PIECE: usize = 256 << 10;

/// Drives a stream seal of one object: header, then chunks as the input arrives. A failure of
/// the input aborts the output (an `Err` on `tx`) before the final chunk.
pub async fn seal_stream<S, E>(mut sealer: StreamSealer, mut input: S, tx: Sink)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut out = Vec::new();
    sealer.header(&mut out);
    let r: Result<(), BulkError> = async {
        while let Some(chunk) = input.next().await {
            let chunk = chunk.map_err(|e| {
                tracing::debug!(error = %e, "stream seal: request body failed");
                BulkError::Truncated("request body")
            })?;
            sealer.push(&chunk, &mut out)?;
            if out.len() >= SEND_PIECE {
                send(&tx, std::mem::take(&mut out)).await?;
            }
        }
        sealer.finish(&mut out)?;
        send(&tx, out).await
    }
    .await;
    if let Err(e) = r {
        let _ = tx.send(Err(e)).await;
    }
}

/// Drives a stream unseal after the header was read and its key unwrapped: writes plaintext
/// as chunks verify. A failure (tampered, truncated, reordered) aborts the output with an `Err`.
pub async fn unseal_stream<S, E>(opener: StreamOpener, input: S, tx: Sink)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if let Err(e) = unseal_stream_inner(opener, input, &tx).await {
        tracing::debug!(error = %e, "stream unseal failed");
        let _ = tx.send(Err(e)).await;
    }
}

async fn unseal_stream_inner<S, E>(
    mut opener: StreamOpener,
    mut input: S,
    tx: &Sink,
) -> Result<(), BulkError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    // Each verified chunk's plaintext is sent as the buffer it was opened in (no copy). The
    // last one is held back until the end of input proved the stream complete (`finish`), so
    // a stream cut short never yields its last bytes before the error.
    let mut held: Option<Bytes> = None;
    loop {
        while let Some((plain, _final)) = opener.next_chunk_bytes()? {
            if let Some(prev) = held.replace(plain) {
                if !prev.is_empty() {
                    send(tx, prev).await?;
                }
            }
        }
        match input.next().await {
            Some(Ok(c)) => opener.push(&c),
            Some(Err(_)) => return Err(BulkError::Truncated("request body")),
            None => break,
        }
    }
    opener.finish()?;
    if let Some(last) = held.filter(|b| !b.is_empty()) {
        send(tx, last).await?;
    }
    Ok(())
}

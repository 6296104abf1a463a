//! `rootseal bulk seal --key NAME` and `rootseal bulk unseal --key NAME`: stdin to stdout
//! through a running server's `bulk-seal`/`bulk-unseal` endpoints in object-stream mode
//! (`?mode=stream`, chunked AEAD; `docs/bulk-seal.md` §4.3 and §10).
//!
//! Memory stays bounded whatever the input size: stdin is streamed into the request body in
//! pieces of at most [`READ_PIECE`] bytes (a 4-piece channel), and the response body is written
//! to stdout as it arrives.
//!
//! Failure rules: any error (server unreachable, 4xx/5xx, response broken off, stdin or stdout
//! failing) is a message on stderr and exit status 1. The server emits a chunk's plaintext only
//! after its tag verified, and aborts the response when a chunk fails or the stream is cut
//! short, so on a failed `unseal` stdout may hold a *verified but incomplete prefix*: check the
//! exit status (`set -o pipefail`), or use `--output FILE`, which writes to a temporary file
//! next to FILE and renames it only after the whole stream verified (nothing is left on
//! failure). `seal` also checks the shape of the sealed stream it receives (header, chunks,
//! final chunk, nothing after it: `rootseal_bulk::ShapeCheck`) before exiting 0.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use rootseal_bulk::ShapeCheck;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::CliResult;
use crate::routes::bulk::AAD_HEADER;

/// Bytes read from stdin per request-body piece.
pub const READ_PIECE: usize = 1 << 20;
/// Default server address when neither `--address` nor `BAO_ADDR`/`VAULT_ADDR` is set.
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8210";

/// `rootseal bulk …`.
#[derive(Debug, Subcommand)]
pub enum BulkCmd {
    /// Seal stdin as one object stream under key NAME; the sealed stream goes to stdout.
    Seal(SealArgs),
    /// Unseal an object stream from stdin; the plaintext goes to stdout (or --output FILE).
    Unseal(UnsealArgs),
}

/// Where the server is and how to talk to it.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The key's name (the sealed stream does not carry it: give the same name to unseal).
    #[arg(long)]
    key: String,
    /// Server address [default: $BAO_ADDR, else $VAULT_ADDR, else http://127.0.0.1:8210].
    #[arg(long)]
    address: Option<String>,
    /// File holding the token [default: $ROOTSEAL_TOKEN, else $BAO_TOKEN, else $VAULT_TOKEN].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Transit mount path.
    #[arg(long, default_value = "transit")]
    mount: String,
    /// PEM CA bundle to verify an https server (instead of the system roots).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Associated data (base64) bound to the object; the same value is needed to unseal.
    #[arg(long)]
    associated_data: Option<String>,
}

/// Arguments of `rootseal bulk seal`.
#[derive(Debug, Args)]
pub struct SealArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Plaintext bytes per chunk (1 KiB to 16 MiB; server default 64 KiB).
    #[arg(long)]
    chunk_size: Option<u32>,
}

/// Arguments of `rootseal bulk unseal`.
#[derive(Debug, Args)]
pub struct UnsealArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Write the plaintext to FILE instead of stdout, all or nothing: a temporary file next to
    /// it is renamed to FILE only once the whole stream verified.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

/// Runs a `bulk` subcommand.
pub async fn run(cmd: BulkCmd) -> CliResult {
    match cmd {
        BulkCmd::Seal(a) => {
            let mut q = vec![("mode", "stream".to_owned())];
            if let Some(c) = a.chunk_size {
                q.push(("chunk_size", c.to_string()));
            }
            // The stream format's own parsers check the shape of what the server returns.
            let mut shape = ShapeCheck::new();
            let mut out = Output::stdout();
            let r = transfer(&a.server, "bulk-seal", &q, &mut out, |b| {
                shape
                    .feed(b)
                    .map_err(|e| format!("the server returned a malformed sealed stream ({e})"))
            })
            .await;
            let r = r.and_then(|()| {
                shape.finish().map_err(|_| {
                    "the sealed stream from the server ended before its final chunk: output is incomplete"
                        .to_owned()
                })
            });
            out.finish(r.is_ok()).await.and(r)
        }
        BulkCmd::Unseal(a) => {
            let mut out = match &a.output {
                Some(p) => Output::file(p)?,
                None => Output::stdout(),
            };
            let r = transfer(&a.server, "bulk-unseal", &[], &mut out, |_| Ok(())).await;
            out.finish(r.is_ok()).await.and(r)
        }
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn address(a: &ServerArgs) -> String {
    let addr = a
        .address
        .clone()
        .or_else(|| env_nonempty("BAO_ADDR"))
        .or_else(|| env_nonempty("VAULT_ADDR"))
        .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
    addr.trim().trim_end_matches('/').to_owned()
}

fn token(a: &ServerArgs) -> Result<SecretString, String> {
    if let Some(p) = &a.token_file {
        let t = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read the token file {}: {e}", p.display()))?;
        let t = t.trim();
        if t.is_empty() {
            return Err(format!("the token file {} is empty", p.display()));
        }
        return Ok(SecretString::from(t.to_owned()));
    }
    ["ROOTSEAL_TOKEN", "BAO_TOKEN", "VAULT_TOKEN"]
        .iter()
        .find_map(|n| env_nonempty(n))
        .map(|t| SecretString::from(t.trim().to_owned()))
        .ok_or_else(|| {
            "no token: set ROOTSEAL_TOKEN, BAO_TOKEN or VAULT_TOKEN, or pass --token-file"
                .to_owned()
        })
}

fn client(a: &ServerArgs) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(p) = &a.ca_cert {
        let pem = std::fs::read(p)
            .map_err(|e| format!("cannot read the CA certificate {}: {e}", p.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in the file", p.display()));
        }
        b = b.tls_certs_only(certs);
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

fn url(a: &ServerArgs, op: &str, query: &[(&str, String)]) -> Result<reqwest::Url, String> {
    let base = address(a);
    let mut u = reqwest::Url::parse(&base).map_err(|e| format!("bad address {base:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "bad address {base:?}: expected http:// or https://"
        ));
    }
    if a.key.is_empty() {
        return Err("--key must not be empty".into());
    }
    {
        let mut p = u
            .path_segments_mut()
            .map_err(|()| format!("bad address {base:?}"))?;
        p.pop_if_empty().push("v1");
        for seg in a.mount.split('/').filter(|s| !s.is_empty()) {
            p.push(seg);
        }
        p.push(op).push(&a.key);
    }
    if !query.is_empty() {
        let mut q = u.query_pairs_mut();
        for (k, v) in query {
            q.append_pair(k, v);
        }
    }
    Ok(u)
}

/// Reads stdin on its own thread (a blocking read never holds up the runtime, and never keeps
/// the process alive at exit) into pieces of at most [`READ_PIECE`] bytes.
fn stdin_stream() -> ReceiverStream<Result<Bytes, std::io::Error>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = BytesMut::zeroed(READ_PIECE);
            let mut n = 0;
            // Fill the piece (fewer, larger request-body chunks), but never wait for more
            // once a read came back short and something is in hand.
            let r = loop {
                match stdin.read(buf.get_mut(n..).unwrap_or_default()) {
                    Ok(0) => break Ok(true),
                    Ok(k) => {
                        n += k;
                        if n == READ_PIECE || k < 64 << 10 {
                            break Ok(false);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(n);
            match r {
                Ok(eof) => {
                    if n > 0 && tx.blocking_send(Ok(buf.freeze())).is_err() {
                        return;
                    }
                    if eof {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(
                        e.kind(),
                        format!("reading stdin: {e}"),
                    )));
                    return;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Sends stdin to `op` and copies the response body to `out`, calling `check` on each piece.
async fn transfer(
    a: &ServerArgs,
    op: &str,
    query: &[(&str, String)],
    out: &mut Output,
    mut check: impl FnMut(&[u8]) -> CliResult,
) -> CliResult {
    let token = token(a)?;
    let url = url(a, op, query)?;
    let client = client(a)?;
    let mut tok = HeaderValue::from_str(token.expose_secret())
        .map_err(|_| "the token contains characters not allowed in an HTTP header".to_owned())?;
    tok.set_sensitive(true);
    // A cheap authenticated read first: a wrong token or a missing key is answered before any
    // input is sent. The server reads a refused request's body only up to 64 MiB before it
    // closes the connection (`server::UNREAD_BODY_LIMIT`); with a larger input the client would
    // see only "broken pipe", not the answer, and would have sent those 64 MiB for nothing.
    preflight(a, &client, &tok).await?;
    let mut req = client
        .post(url.clone())
        .header(CONTENT_TYPE, "application/octet-stream")
        .header("X-Vault-Token", tok)
        .body(reqwest::Body::wrap_stream(stdin_stream()));
    if let Some(ad) = &a.associated_data {
        if STANDARD.decode(ad.trim()).is_err() {
            return Err("--associated-data is not valid base64".into());
        }
        req = req.header(AAD_HEADER, ad.trim());
    }
    let resp = req.send().await.map_err(|e| {
        let hint = if !e.is_connect() && !e.is_builder() {
            " (the server closed the connection before it read the whole input)"
        } else {
            ""
        };
        format!(
            "{op} request to {} failed: {}{hint}",
            strip_query(&url),
            chain(&e)
        )
    })?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        return Err(format!(
            "server answered {status}: {}",
            server_message(&body)
        ));
    }
    let mut body = resp.bytes_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| {
            format!(
                "the server broke off the response ({}): the {op} failed, output is incomplete",
                chain(&e)
            )
        })?;
        check(&piece)?;
        out.write(&piece).await?;
    }
    Ok(())
}

/// `GET /v1/{mount}/keys/{name}`: the token is accepted and the key exists.
async fn preflight(a: &ServerArgs, client: &reqwest::Client, tok: &HeaderValue) -> CliResult {
    let url = url(a, "keys", &[])?;
    let resp = client
        .get(url.clone())
        .header("X-Vault-Token", tok.clone())
        .send()
        .await
        .map_err(|e| format!("request to {url} failed: {}", chain(&e)))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.bytes().await.unwrap_or_default();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(format!(
            "server answered {status}: no key named {:?} under the mount {:?}",
            a.key, a.mount
        ));
    }
    Err(format!(
        "server answered {status}: {}",
        server_message(&body)
    ))
}

fn strip_query(u: &reqwest::Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    u.to_string()
}

/// The message of a Vault error envelope `{"errors":[…]}`, else the body as text.
fn server_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<String>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) if !e.errors.is_empty() => e.errors.join("; "),
        _ => {
            let s = String::from_utf8_lossy(body.get(..body.len().min(500)).unwrap_or(body));
            if s.trim().is_empty() {
                "(no message)".into()
            } else {
                s.trim().to_owned()
            }
        }
    }
}

/// Where the response body goes.
enum Output {
    Stdout(tokio::io::Stdout),
    File {
        tmp: Option<tempfile::NamedTempFile>,
        dest: PathBuf,
    },
}

impl Output {
    fn stdout() -> Self {
        Output::Stdout(tokio::io::stdout())
    }

    fn file(dest: &Path) -> Result<Self, String> {
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".rootseal-unseal-")
            .tempfile_in(&dir)
            .map_err(|e| format!("cannot create a temporary file in {}: {e}", dir.display()))?;
        Ok(Output::File {
            tmp: Some(tmp),
            dest: dest.to_owned(),
        })
    }

    async fn write(&mut self, b: &[u8]) -> CliResult {
        match self {
            Output::Stdout(s) => {
                use tokio::io::AsyncWriteExt;
                s.write_all(b)
                    .await
                    .map_err(|e| format!("writing stdout: {e}"))
            }
            Output::File { tmp, .. } => match tmp {
                Some(t) => t
                    .write_all(b)
                    .map_err(|e| format!("writing {}: {e}", t.path().display())),
                None => Err("internal: output already closed".into()),
            },
        }
    }

    /// Flushes; for a file, renames it into place on success and removes it otherwise.
    async fn finish(self, ok: bool) -> CliResult {
        match self {
            Output::Stdout(mut s) => {
                use tokio::io::AsyncWriteExt;
                s.flush().await.map_err(|e| format!("writing stdout: {e}"))
            }
            Output::File { tmp, dest } => {
                let Some(mut t) = tmp else { return Ok(()) };
                if !ok {
                    // Dropping the NamedTempFile removes it.
                    return Ok(());
                }
                t.flush()
                    .and_then(|()| t.as_file().sync_all())
                    .map_err(|e| format!("writing {}: {e}", t.path().display()))?;
                t.persist(&dest)
                    .map(drop)
                    .map_err(|e| format!("cannot move the output to {}: {e}", dest.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn server_messages() {
        assert_eq!(
            server_message(br#"{"errors":["permission denied"]}"#),
            "permission denied"
        );
        assert_eq!(server_message(b""), "(no message)");
        assert_eq!(server_message(b"oops"), "oops");
    }
}

//! Batches, Vault's `batch_input`: one code path for every encrypt, decrypt and rewrap request.
//! A request without `batch_input` is a batch of one whose answer is shaped as a single item.
//!
//! Each request item becomes a [`Slot`]: refused while decoding ([`Slot::Failed`]), or sent to
//! the keyring ([`Slot::Pending`]) and then filled, in order, with the keyring's answer. Batch
//! answers follow Vault: results keep the input order and echo `reference`; if any item failed
//! the status is 400 (500 if only internal failures), unless `partial_failure_response_code` is
//! given and at least one item succeeded.

use axum::http::StatusCode;
use axum::response::Response;
use rootseal_hsm::KeyringError;
use serde::Serialize;

use crate::routes::de::WeakU64;
use crate::routes::error::{keyring_message, keyring_status, INVALID_CIPHERTEXT};
use crate::routes::{respond, ApiError};

/// Why one item failed.
#[derive(Debug)]
pub(crate) enum ItemError {
    /// The item's fields are unusable; the message is safe to show.
    BadRequest(String),
    /// A ciphertext that does not parse or does not verify (one opaque answer).
    InvalidCiphertext,
    /// The keyring refused or failed this item.
    Keyring(KeyringError),
}

impl ItemError {
    /// A 400 with `msg`.
    pub(crate) fn bad_request(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    /// Whether this is a server-side failure (a 5xx for a batch of only such failures).
    fn internal(&self) -> bool {
        match self {
            Self::BadRequest(_) | Self::InvalidCiphertext => false,
            Self::Keyring(e) => keyring_status(e).is_server_error(),
        }
    }

    /// The item's `error` in a batch answer.
    fn message(&self) -> String {
        match self {
            Self::BadRequest(m) => m.clone(),
            Self::InvalidCiphertext | Self::Keyring(KeyringError::InvalidCiphertext) => {
                INVALID_CIPHERTEXT.to_owned()
            }
            Self::Keyring(e) => keyring_message(e),
        }
    }
}

impl From<ItemError> for ApiError {
    fn from(e: ItemError) -> Self {
        match e {
            ItemError::BadRequest(m) => ApiError::BadRequest(m),
            ItemError::InvalidCiphertext => ApiError::InvalidCiphertext,
            ItemError::Keyring(e) => ApiError::Keyring(e),
        }
    }
}

/// One item of a batch on its way through the request.
pub(crate) enum Slot<T> {
    /// Sent to the keyring; the next keyring result fills it.
    Pending,
    /// Answered.
    Done(T),
    /// Refused or failed.
    Failed(ItemError),
}

/// Decoded items: their slots, in input order, and the items to send to the keyring (one per
/// [`Slot::Pending`], in the same order).
pub(crate) struct Prepared<T, I> {
    /// One slot per input item.
    pub(crate) slots: Vec<Slot<T>>,
    /// The items for the keyring.
    pub(crate) items: Vec<I>,
}

impl<T, I> Prepared<T, I> {
    /// Decodes each input with `decode`.
    pub(crate) fn new<In>(
        inputs: impl ExactSizeIterator<Item = In>,
        mut decode: impl FnMut(In) -> Result<I, ItemError>,
    ) -> Self {
        let mut slots = Vec::with_capacity(inputs.len());
        let mut items = Vec::with_capacity(inputs.len());
        for input in inputs {
            match decode(input) {
                Ok(item) => {
                    items.push(item);
                    slots.push(Slot::Pending);
                }
                Err(e) => slots.push(Slot::Failed(e)),
            }
        }
        Self { slots, items }
    }

    /// Takes the items to send (empty when every item was refused).
    pub(crate) fn take_items(&mut self) -> Vec<I> {
        std::mem::take(&mut self.items)
    }

    /// Replaces each pending slot, in order, with the next keyring result.
    pub(crate) fn fill(&mut self, results: Vec<Result<T, KeyringError>>) {
        let mut results = results.into_iter();
        for slot in &mut self.slots {
            if matches!(slot, Slot::Pending) {
                *slot = match results.next() {
                    Some(Ok(v)) => Slot::Done(v),
                    Some(Err(e)) => Slot::Failed(ItemError::Keyring(e)),
                    None => Slot::Failed(ItemError::Keyring(no_item())),
                };
            }
        }
    }

    /// The answer of a request without `batch_input`: its one item, or its error.
    ///
    /// # Errors
    /// The item's error.
    pub(crate) fn into_single(self) -> Result<T, ApiError> {
        match self.slots.into_iter().next() {
            Some(Slot::Done(v)) => Ok(v),
            Some(Slot::Failed(e)) => Err(e.into()),
            Some(Slot::Pending) | None => Err(ApiError::Keyring(no_item())),
        }
    }
}

/// One item's result in a batch answer: `ok` is the item's success fields.
#[derive(Serialize)]
struct ItemOut<'a, O> {
    #[serde(flatten)]
    ok: Option<O>,
    reference: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct BatchData<T> {
    batch_results: Vec<T>,
}

/// The answer of a batch: `batch_results` in input order with each `reference`, and Vault's
/// status rule. Internal item failures are logged here (the edge for them), once each.
pub(crate) fn response<'a, T, O: Serialize>(
    slots: Vec<Slot<T>>,
    references: impl Iterator<Item = &'a str>,
    partial: Option<WeakU64>,
    out: impl Fn(T) -> O,
) -> Response {
    let mut warnings = Vec::new();
    let status = status(&slots, partial, &mut warnings);
    let results: Vec<ItemOut<'_, O>> = slots
        .into_iter()
        .zip(references)
        .map(|(slot, reference)| match slot {
            Slot::Done(v) => ItemOut {
                ok: Some(out(v)),
                reference,
                error: None,
            },
            Slot::Failed(e) => {
                if e.internal() {
                    tracing::error!(error = ?e, "batch item failed");
                }
                ItemOut {
                    ok: None,
                    reference,
                    error: Some(e.message()),
                }
            }
            Slot::Pending => {
                let e = ItemError::Keyring(no_item());
                tracing::error!(error = ?e, "batch item failed");
                ItemOut {
                    ok: None,
                    reference,
                    error: Some(e.message()),
                }
            }
        })
        .collect();
    respond(
        status,
        BatchData {
            batch_results: results,
        },
        &warnings,
    )
}

/// Vault's status rule for a batch; adds a warning for an invalid override.
fn status<T>(
    slots: &[Slot<T>],
    partial: Option<WeakU64>,
    warnings: &mut Vec<String>,
) -> StatusCode {
    let any_ok = slots.iter().any(|s| matches!(s, Slot::Done(_)));
    let failed = |internal: bool| {
        slots.iter().any(|s| match s {
            Slot::Failed(e) => e.internal() == internal,
            Slot::Pending => internal,
            Slot::Done(_) => false,
        })
    };
    let (user_err, internal_err) = (failed(false), failed(true));
    if !user_err && !internal_err {
        return StatusCode::OK;
    }
    let code = if user_err {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    match partial {
        Some(p) if any_ok => match u16::try_from(p.0)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(c) => c,
            None => {
                warnings.push(format!(
                    "invalid HTTP response code override from partial_failure_response_code, reverting to {}",
                    code.as_u16()
                ));
                code
            }
        },
        _ => code,
    }
}

/// Refuses an empty `batch_input`.
///
/// # Errors
/// 400 `missing batch input to process`.
pub(crate) fn check_len(n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad_request("missing batch input to process"));
    }
    Ok(())
}

/// The items of `batch_input`, if given: a non-empty list of at most the API's
/// [`crate::ApiConfig::max_batch_items`].
///
/// # Errors
/// 400 for an empty `batch_input` or one with more items than allowed.
pub(crate) fn inputs<'b, T>(
    st: &crate::routes::AppState,
    b: Option<&'b crate::routes::de::BatchInput<T>>,
) -> Result<Option<&'b [T]>, ApiError> {
    let v = b.map(|crate::routes::de::BatchInput(v)| v.as_slice());
    if let Some(v) = v {
        check_len(v.len())?;
        check_cap(v.len(), st.config().max_batch_items)?;
    }
    Ok(v)
}

/// Refuses a `batch_input` of more than `max` items.
///
/// # Errors
/// 400 naming the limit.
pub(crate) fn check_cap(n: usize, max: usize) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::BadRequest(format!(
            "batch_input has {n} items; at most {max} are allowed in one request (transit.max_batch_items)"
        )));
    }
    Ok(())
}

/// Items per HSM job: a batch is sent to the keyring this many items at a time, so one batch
/// never holds an HSM worker for long (other requests' jobs queue between its jobs) and a batch
/// whose client has gone away stops at the next job (its request future is dropped, and a job
/// whose caller is gone never starts).
pub(crate) const JOB_ITEMS: usize = 256;

/// Runs `items` through `f` [`JOB_ITEMS`] at a time, one after the other, and concatenates the
/// per-item answers in order. A failure of a whole call ends the batch with that error.
///
/// # Errors
/// The first whole-call error of `f`.
pub(crate) async fn in_jobs<I, T, F, Fut>(
    items: Vec<I>,
    mut f: F,
) -> Result<Vec<Result<T, KeyringError>>, KeyringError>
where
    F: FnMut(Vec<I>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Result<T, KeyringError>>, KeyringError>>,
{
    if items.len() <= JOB_ITEMS {
        return f(items).await;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut rest = items.into_iter();
    loop {
        let chunk: Vec<I> = rest.by_ref().take(JOB_ITEMS).collect();
        if chunk.is_empty() {
            return Ok(out);
        }
        out.extend(f(chunk).await?);
    }
}

/// The error for a keyring answer with fewer items than were sent (cannot happen).
fn no_item() -> KeyringError {
    KeyringError::internal("the keyring answered fewer items than were sent")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(spec: &str) -> Vec<Slot<()>> {
        spec.chars()
            .map(|c| match c {
                'o' => Slot::Done(()),
                'u' => Slot::Failed(ItemError::bad_request("x")),
                'i' => Slot::Failed(ItemError::Keyring(KeyringError::internal("x"))),
                _ => Slot::Pending,
            })
            .collect()
    }

    #[test]
    fn vault_status_rule() {
        let mut w = Vec::new();
        assert_eq!(status(&slots("oo"), None, &mut w), StatusCode::OK);
        assert_eq!(status(&slots("ou"), None, &mut w), StatusCode::BAD_REQUEST);
        assert_eq!(status(&slots("ui"), None, &mut w), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(&slots("oi"), None, &mut w),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status(&slots("ou"), Some(WeakU64(207)), &mut w),
            StatusCode::MULTI_STATUS
        );
        // No item succeeded: the override does not apply.
        assert_eq!(
            status(&slots("uu"), Some(WeakU64(207)), &mut w),
            StatusCode::BAD_REQUEST
        );
        assert!(w.is_empty());
        assert_eq!(
            status(&slots("ou"), Some(WeakU64(1000)), &mut w),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(w.len(), 1);
        // A slot never filled counts as an internal failure, never as a success.
        assert_eq!(
            status(&slots("op"), None, &mut w),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn in_jobs_splits_in_order_and_stops_at_an_error() {
        let sizes = std::sync::Mutex::new(Vec::new());
        let items: Vec<usize> = (0..600).collect();
        let out = in_jobs(items, |c: Vec<usize>| {
            sizes.lock().unwrap().push(c.len());
            async move { Ok(c.into_iter().map(|i| Ok(i * 2)).collect()) }
        })
        .await
        .unwrap();
        assert_eq!(*sizes.lock().unwrap(), [256, 256, 88]);
        let got: Vec<usize> = out.into_iter().map(Result::unwrap).collect();
        assert_eq!(got, (0..600).map(|i| i * 2).collect::<Vec<_>>());
        // A failed job ends the batch: no later job is sent.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let r = in_jobs((0..1000).collect::<Vec<usize>>(), |_c| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 1 {
                    Err(KeyringError::internal("x"))
                } else {
                    Ok(Vec::<Result<(), KeyringError>>::new())
                }
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(check_cap(10, 10).is_ok());
        assert!(check_cap(11, 10).is_err());
    }

    #[test]
    fn fill_in_order() {
        let mut p: Prepared<u32, u32> = Prepared::new([1u32, 0, 3].into_iter(), |i| match i {
            0 => Err(ItemError::InvalidCiphertext),
            n => Ok(n),
        });
        assert_eq!(p.take_items(), vec![1, 3]);
        p.fill(vec![Ok(10), Err(KeyringError::InvalidCiphertext)]);
        let got: Vec<String> = p
            .slots
            .iter()
            .map(|s| match s {
                Slot::Done(v) => v.to_string(),
                Slot::Failed(e) => e.message(),
                Slot::Pending => "pending".into(),
            })
            .collect();
        assert_eq!(got, ["10", INVALID_CIPHERTEXT, INVALID_CIPHERTEXT]);
        // Fewer results than pending slots: the rest fail, they are never left pending.
        let mut q: Prepared<u32, u32> = Prepared::new([1u32, 2].into_iter(), Ok);
        q.fill(vec![Ok(1)]);
        assert!(matches!(q.slots.get(1), Some(Slot::Failed(_))));
    }
}

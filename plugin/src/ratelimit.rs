//! The per-client rate limit of requests that carry no token (`GET /v1/sys/health`,
//! `seal-status`, `/metrics`, and any other request without `X-Vault-Token` or a bearer token).
//!
//! These requests need no credentials, so a client on the network can send them as fast as it
//! can; each one is cheap, but a flood of them takes the CPU that decrypts need (issue 16: "a
//! health flood at full speed leaves concurrent decrypt p99 within 2× of its unloaded value").
//! A Generic Cell Rate Algorithm (GCRA, the token bucket in one timestamp per client) holds each
//! client address to `rate` requests per second with bursts of `burst`:
//!
//! * within its rate, a request is answered at once;
//! * beyond it, the answer is **delayed** until the client's next slot, up to [`MAX_WAIT`]: a
//!   client that waits for its answers before sending more (every load balancer, every probe and
//!   every closed-loop flood) is slowed to its rate instead of being answered 429 at full speed,
//!   which would cost the same CPU as answering;
//! * beyond that, the answer is 429 with `Retry-After` at once, so the number of delayed
//!   requests per client is bounded (`rate × MAX_WAIT` plus the burst).
//!
//! A client is its IPv4 address, or the /64 prefix of its IPv6 address (one host is usually given
//! a whole /64). The table is bounded ([`MAX_CLIENTS`]); when it is full of clients still inside
//! their window, new clients share one overflow entry. Requests with a valid token are not limited
//! here (they are authenticated, audited and bounded by the HSM queue instead); a request whose
//! token is refused (403) counts against the same limit once it has been answered, so a flood
//! with a made-up token is held to the rate too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The longest a request is held back before it is answered 429 instead.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// Clients tracked at once; beyond it, new clients share one entry.
pub const MAX_CLIENTS: usize = 4096;
/// Default for [`RateLimit::rate`]: requests per second per client address.
pub const DEFAULT_RATE: u32 = 100;
/// Default for [`RateLimit::burst`].
pub const DEFAULT_BURST: u32 = 200;

/// The limit (`[listener] unauthenticated_rate` and `unauthenticated_burst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second per client address; 0 turns the limit off.
    pub rate: u32,
    /// Requests a client may send at once above its rate (at least 1).
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Answer it now.
    Now,
    /// Answer it after this delay.
    After(Duration),
    /// Answer 429; the client may retry after this long.
    Refuse(Duration),
}

/// Who a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Client {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
    /// Every client that found the table full.
    Overflow,
}

impl Client {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Client::V4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Client::V4(u32::from(v4)),
                None => Client::V6(u64::try_from(u128::from(a) >> 64).unwrap_or(u64::MAX)),
            },
        }
    }
}

/// The limiter: per client, the theoretical arrival time of its next request (GCRA), in
/// nanoseconds since the limiter was made.
#[derive(Debug)]
pub struct Limiter {
    epoch: Instant,
    /// The time one request uses up (`1 / rate`), in nanoseconds.
    interval: u64,
    /// How far ahead of its schedule a client may be before it waits (`(burst - 1) × interval`).
    tolerance: u64,
    max_wait: u64,
    table: Mutex<HashMap<Client, u64>>,
}

impl Limiter {
    /// A limiter for `limit`; `None` when the limit is off (`rate = 0`).
    pub fn new(limit: RateLimit) -> Option<Self> {
        if limit.rate == 0 {
            return None;
        }
        let interval = 1_000_000_000 / u64::from(limit.rate);
        Some(Self {
            epoch: Instant::now(),
            interval,
            tolerance: interval.saturating_mul(u64::from(limit.burst.max(1) - 1)),
            max_wait: u64::try_from(MAX_WAIT.as_nanos()).unwrap_or(u64::MAX),
            table: Mutex::new(HashMap::new()),
        })
    }

    /// Admits one request from `ip` now.
    fn admit(&self, ip: IpAddr) -> Admission {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.admit_at(Client::of(ip), now)
    }

    fn admit_at(&self, client: Client, now: u64) -> Admission {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let mut key = client;
        if !table.contains_key(&key) && table.len() >= MAX_CLIENTS {
            // A client whose schedule is in the past is the same as a new one: forget it.
            table.retain(|_, tat| *tat > now);
            if table.len() >= MAX_CLIENTS {
                key = Client::Overflow;
            }
        }
        let tat = table.get(&key).copied().unwrap_or(now).max(now);
        let wait = tat.saturating_sub(self.tolerance).saturating_sub(now);
        if wait > self.max_wait {
            // Refused requests do not move the schedule: a client that keeps sending is
            // admitted again as soon as its delayed requests have gone.
            return Admission::Refuse(Duration::from_nanos(wait - self.max_wait));
        }
        table.insert(key, tat.saturating_add(self.interval));
        if wait == 0 {
            Admission::Now
        } else {
            Admission::After(Duration::from_nanos(wait))
        }
    }

    /// Waits for `ip`'s turn ([`Limiter::admit`]); `Err(retry_after)` when it is refused.
    pub async fn wait_turn(&self, ip: IpAddr) -> Result<(), Duration> {
        match self.admit(ip) {
            Admission::Now => Ok(()),
            Admission::After(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Admission::Refuse(retry) => Err(retry),
        }
    }
}

/// Whether a request carries a token, as the API reads one ([`crate::routes::presented_token`]):
/// requests without one are limited before they are served, those with one only when it is
/// refused.
pub fn has_token(headers: &http::HeaderMap) -> bool {
    crate::routes::presented_token(headers).is_some()
}

/// The 429 answer to `peer`, in Vault's error envelope, with `Retry-After` in whole seconds
/// (at least 1).
pub fn refusal(retry_after: Duration, peer: std::net::SocketAddr) -> axum::response::Response {
    tracing::debug!(%peer, "over the rate limit of requests without a valid token: 429");
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut resp = crate::routes::error::envelope(
        http::StatusCode::TOO_MANY_REQUESTS,
        Some("too many requests without a token from this address; retry later"),
    );
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(secs.max(1)),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn limiter(rate: u32, burst: u32) -> Limiter {
        Limiter::new(RateLimit { rate, burst }).unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn off_is_none() {
        assert!(Limiter::new(RateLimit { rate: 0, burst: 5 }).is_none());
    }

    #[test]
    fn a_burst_is_answered_at_once_then_requests_wait_for_their_slot() {
        let l = limiter(100, 3);
        let c = Client::V4(1);
        for _ in 0..3 {
            assert_eq!(l.admit_at(c, 0), Admission::Now);
        }
        // The fourth is 10 ms (one slot at 100/s) ahead of its schedule, the fifth 20 ms.
        assert_eq!(
            l.admit_at(c, 0),
            Admission::After(Duration::from_millis(10))
        );
        assert_eq!(
            l.admit_at(c, 0),
            Admission::After(Duration::from_millis(20))
        );
        // Another client is not affected.
        assert_eq!(l.admit_at(Client::V4(2), 0), Admission::Now);
        // A client that keeps to its rate is never delayed.
        let steady = Client::V4(3);
        for i in 0..1000 {
            assert_eq!(
                l.admit_at(steady, i * 10 * MS),
                Admission::Now,
                "request {i}"
            );
        }
    }

    #[test]
    fn beyond_the_longest_wait_requests_are_refused_without_moving_the_schedule() {
        let l = limiter(10, 1);
        let c = Client::V4(7);
        // 10/s, at most 1 s of waiting: 1 now and 10 delayed (the 11th waits exactly 1 s).
        assert_eq!(l.admit_at(c, 0), Admission::Now);
        for k in 1..=10 {
            assert_eq!(
                l.admit_at(c, 0),
                Admission::After(Duration::from_millis(100 * k))
            );
        }
        assert!(
            matches!(l.admit_at(c, 0), Admission::Refuse(d) if d == Duration::from_millis(100))
        );
        assert!(matches!(l.admit_at(c, 0), Admission::Refuse(_)));
        // Once the delayed ones have had their slots, the client is admitted again.
        assert_eq!(l.admit_at(c, 1_100 * MS), Admission::Now);
    }

    #[test]
    fn ipv6_counts_per_64_prefix_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap_or_else(|_| unreachable!());
        let b: IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(Client::of(a), Client::of(b));
        assert_ne!(Client::of(a), Client::of(c));
        let v4: IpAddr = "192.0.2.1".parse().unwrap_or_else(|_| unreachable!());
        let mapped: IpAddr = "::ffff:192.0.2.1"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(Client::of(v4), Client::of(mapped));
    }

    #[test]
    fn the_table_is_bounded_and_full_tables_share_the_overflow_entry() {
        let l = limiter(1, 1);
        for i in 0..MAX_CLIENTS {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            assert_eq!(l.admit_at(Client::V4(i), 0), Admission::Now);
        }
        // All still inside their window: the next two new clients share one entry.
        let n = u32::try_from(MAX_CLIENTS).unwrap_or(u32::MAX);
        assert_eq!(l.admit_at(Client::V4(n), 0), Admission::Now);
        assert!(matches!(
            l.admit_at(Client::V4(n + 1), 0),
            Admission::After(_)
        ));
        assert!(l.table.lock().map(|t| t.len()).unwrap_or(0) <= MAX_CLIENTS + 1);
        // Later, the expired entries are dropped and a new client gets its own entry.
        assert_eq!(l.admit_at(Client::V4(n + 2), 5_000 * MS), Admission::Now);
        assert!(l.table.lock().map(|t| t.len()).unwrap_or(0) <= 2);
    }

    #[test]
    fn tokens_are_recognised_as_vault_does() {
        let mut h = http::HeaderMap::new();
        assert!(!has_token(&h));
        h.insert(
            "authorization",
            http::HeaderValue::from_static("Basic eDp5"),
        );
        assert!(!has_token(&h));
        h.insert(
            "authorization",
            http::HeaderValue::from_static("bearer s.x"),
        );
        assert!(has_token(&h));
        let mut h = http::HeaderMap::new();
        h.insert("x-vault-token", http::HeaderValue::from_static("s.x"));
        assert!(has_token(&h));
    }

    #[test]
    fn the_refusal_is_a_vault_envelope_with_retry_after() {
        let r = refusal(Duration::from_millis(1_500), ([127, 0, 0, 1], 1).into());
        assert_eq!(r.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.headers().get(http::header::RETRY_AFTER),
            Some(&http::HeaderValue::from_static("2"))
        );
    }
}

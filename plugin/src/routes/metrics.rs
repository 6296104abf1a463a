//! HTTP request counters and a latency histogram, rendered after the HSM counters on `/metrics`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// (method, status, count) for one route.
type Count = (&'static str, u16, u64);

/// Counters per (route, method, status) and one latency histogram over all requests.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// route → [(method, code, count)]; the route is the matched template, so the set is small.
    counts: Mutex<HashMap<String, Vec<Count>>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A method label from a fixed set (no allocation, no unbounded label values).
pub fn method_label(m: &http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "PUT" => "PUT",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "LIST" => "LIST",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "OTHER",
    }
}

impl HttpMetrics {
    /// Records one request.
    pub fn record(&self, route: &str, method: &'static str, code: u16, elapsed: Duration) {
        {
            let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = map.get_mut(route) {
                if let Some(e) = v.iter_mut().find(|e| e.0 == method && e.1 == code) {
                    e.2 += 1;
                } else {
                    v.push((method, code, 1));
                }
            } else {
                map.insert(route.to_owned(), vec![(method, code, 1)]);
            }
        }
        let secs = elapsed.as_secs_f64();
        for (b, le) in self.buckets.iter().zip(BUCKETS) {
            if secs <= le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Renders the counters in Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP rootseal_http_requests_total HTTP requests answered, by matched route, method and status."
        );
        let _ = writeln!(out, "# TYPE rootseal_http_requests_total counter");
        {
            let map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let mut routes: Vec<_> = map.iter().collect();
            routes.sort_by(|a, b| a.0.cmp(b.0));
            for (route, v) in routes {
                for (method, code, n) in v {
                    let _ = writeln!(
                        out,
                        "rootseal_http_requests_total{{route=\"{}\",method=\"{method}\",code=\"{code}\"}} {n}",
                        escape(route)
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP rootseal_http_request_duration_seconds Time to answer HTTP requests."
        );
        let _ = writeln!(
            out,
            "# TYPE rootseal_http_request_duration_seconds histogram"
        );
        for (b, le) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "rootseal_http_request_duration_seconds_bucket{{le=\"{le}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "rootseal_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "rootseal_http_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "rootseal_http_request_duration_seconds_count {count}");
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let m = HttpMetrics::default();
        m.record(
            "/v1/transit/encrypt/{name}",
            "PUT",
            200,
            Duration::from_micros(80),
        );
        m.record(
            "/v1/transit/encrypt/{name}",
            "PUT",
            200,
            Duration::from_millis(3),
        );
        m.record(
            "/v1/transit/encrypt/{name}",
            "PUT",
            400,
            Duration::from_micros(80),
        );
        let mut out = String::new();
        m.render_prometheus(&mut out);
        assert!(out.contains(
            "rootseal_http_requests_total{route=\"/v1/transit/encrypt/{name}\",method=\"PUT\",code=\"200\"} 2"
        ));
        assert!(out.contains("code=\"400\"} 1"));
        assert!(out.contains("rootseal_http_request_duration_seconds_bucket{le=\"0.0001\"} 2"));
        assert!(out.contains("rootseal_http_request_duration_seconds_count 3"));
    }
}

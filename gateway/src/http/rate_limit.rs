//! Per-peer-IP token bucket for the login and admin routes (http-admin-ops.md §4.1): one
//! token every `max(1, 1000 / rate)` ms, bursts up to `burst`; exhausted -> 429.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Buckets above this count are pruned of full (idle) entries, bounding memory.
const MAX_TRACKED_PEERS: usize = 10_000;

/// The shared limiter.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    inner: Arc<Mutex<HashMap<IpAddr, Bucket>>>,
    interval: Duration,
    burst: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `per_second` tokens per second, `burst` at most (at least 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let interval_ms = (1000 / per_second.max(1)).max(1);
        RateLimiter {
            inner: Arc::new(Mutex::new(HashMap::new())),
            interval: Duration::from_millis(u64::from(interval_ms)),
            burst: burst.max(1),
        }
    }

    /// Takes a token for `ip`; `Err(wait)` when the bucket is empty.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.inner.lock();
        if buckets.len() > MAX_TRACKED_PEERS {
            let burst = f64::from(self.burst);
            let interval = self.interval;
            buckets.retain(|_, b| b.tokens + refill(b.updated, now, interval) < burst);
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: f64::from(self.burst),
            updated: now,
        });
        bucket.tokens =
            (bucket.tokens + refill(bucket.updated, now, self.interval)).min(f64::from(self.burst));
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.interval.mul_f64(1.0 - bucket.tokens))
        }
    }
}

fn refill(since: Instant, now: Instant, interval: Duration) -> f64 {
    now.saturating_duration_since(since).as_secs_f64() / interval.as_secs_f64()
}

/// Axum middleware applying the limiter to the routes it wraps.
pub async fn limit(State(limiter): State<RateLimiter>, request: Request, next: Next) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    match limiter.check(ip, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let secs = wait.as_secs();
            let value = HeaderValue::from(secs);
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too Many Requests! Wait for {secs}s"),
            )
                .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, value.clone());
            resp.headers_mut().insert("x-ratelimit-after", value);
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_allowed_then_tokens_refill_over_time() {
        let limiter = RateLimiter::new(10, 3);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip, t0).is_ok());
        }
        assert!(limiter.check(ip, t0).is_err(), "burst exhausted");
        assert!(
            limiter.check(IpAddr::from([10, 0, 0, 2]), t0).is_ok(),
            "other peers unaffected"
        );
        assert!(
            limiter.check(ip, t0 + Duration::from_millis(100)).is_ok(),
            "one token per 100 ms"
        );
        assert!(limiter.check(ip, t0 + Duration::from_millis(100)).is_err());
    }
}

//! The lifecycle a service reports on its ops port: starting, ready, draining.

use parking_lot::RwLock;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Running, but not able to serve yet (loading, bootstrapping, opening its store).
    Starting,
    /// Serving.
    Ready,
    /// Shutdown was requested: finishing in-flight work, taking no new work.
    Draining,
}

impl Lifecycle {
    /// The name used in `/health` (`starting`, `ready`, `draining`).
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Starting => "starting",
            Lifecycle::Ready => "ready",
            Lifecycle::Draining => "draining",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            0 => Lifecycle::Starting,
            1 => Lifecycle::Ready,
            _ => Lifecycle::Draining,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Lifecycle::Starting => 0,
            Lifecycle::Ready => 1,
            Lifecycle::Draining => 2,
        }
    }
}

/// Extra `/health` fields a service adds (its shard, backend, pending work...).
type Details = Box<dyn Fn() -> Map<String, Value> + Send + Sync>;

struct Inner {
    service: String,
    started: Instant,
    state: AtomicU8,
    details: RwLock<Option<Details>>,
}

/// The health of one service; clones share it, so the service flips the state while
/// the ops server reads it.
#[derive(Clone)]
pub struct HealthState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthState")
            .field("service", &self.inner.service)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl HealthState {
    /// A service named `service` (as reported in `/health`), starting now.
    pub fn new(service: impl Into<String>) -> Self {
        HealthState {
            inner: Arc::new(Inner {
                service: service.into(),
                started: Instant::now(),
                state: AtomicU8::new(Lifecycle::Starting.to_u8()),
                details: RwLock::new(None),
            }),
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The current state.
    pub fn state(&self) -> Lifecycle {
        Lifecycle::from_u8(self.inner.state.load(Ordering::Acquire))
    }

    /// Starting → ready. Ignored once draining: a late "loaded" must not make a
    /// stopping service look ready again.
    pub fn set_ready(&self) {
        let _ = self.inner.state.compare_exchange(
            Lifecycle::Starting.to_u8(),
            Lifecycle::Ready.to_u8(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Any state → draining (final).
    pub fn set_draining(&self) {
        self.inner
            .state
            .store(Lifecycle::Draining.to_u8(), Ordering::Release);
    }

    /// True only while ready: what `/health/ready` answers 200 for.
    pub fn is_ready(&self) -> bool {
        self.state() == Lifecycle::Ready
    }

    /// Whole seconds since the service started.
    pub fn uptime_secs(&self) -> u64 {
        self.inner.started.elapsed().as_secs()
    }

    /// Sets the function giving the service-specific `/health` fields. It runs on every
    /// `/health` request, so it must be cheap and must not block.
    pub fn set_details(&self, details: impl Fn() -> Map<String, Value> + Send + Sync + 'static) {
        *self.inner.details.write() = Some(Box::new(details));
    }

    /// The `/health` document: the service's own fields, then `service`, `state` and
    /// `uptime_secs` (which a detail of the same name cannot override).
    pub fn snapshot(&self) -> Value {
        let mut doc = match &*self.inner.details.read() {
            Some(details) => details(),
            None => Map::new(),
        };
        doc.insert("service".into(), Value::from(self.service()));
        doc.insert("state".into(), Value::from(self.state().as_str()));
        doc.insert("uptime_secs".into(), Value::from(self.uptime_secs()));
        Value::Object(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_forward_only_and_reports_details() {
        let health = HealthState::new("sync-service");
        assert_eq!(health.state(), Lifecycle::Starting);
        assert!(!health.is_ready());
        health.set_ready();
        assert!(health.is_ready());
        health.set_draining();
        health.set_ready();
        assert_eq!(health.state(), Lifecycle::Draining);

        health.set_details(|| {
            let mut m = Map::new();
            m.insert("pending_rows".into(), Value::from(3));
            m.insert("state".into(), Value::from("not allowed to override"));
            m
        });
        let doc = health.snapshot();
        assert_eq!(doc["service"], "sync-service");
        assert_eq!(doc["state"], "draining");
        assert_eq!(doc["pending_rows"], 3);
        assert!(doc["uptime_secs"].is_u64());
    }
}

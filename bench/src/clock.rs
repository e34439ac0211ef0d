//! HLC timestamps for the records the load generator writes (core.md §4.1–4.3).

use std::time::{SystemTime, UNIX_EPOCH};

/// An HLC timestamp. Field order makes the derived ordering the protocol's:
/// millis, then counter, then node id by bytes (core.md §4.2).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Epoch milliseconds.
    pub millis: u64,
    /// Logical counter within one millisecond.
    pub counter: u64,
    /// Id of the clock that produced it.
    pub node_id: String,
}

/// Current wall clock in epoch milliseconds.
pub fn wall_millis() -> u64 {
    // A clock before 1970 is a broken machine; 0 keeps the run going and the
    // timestamps still increase through the counter.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A per-connection hybrid logical clock, so every record a connection writes carries a
/// strictly increasing timestamp even when many are written in the same millisecond.
#[derive(Debug, Clone)]
pub struct Hlc {
    node_id: String,
    last_millis: u64,
    last_counter: u64,
}

impl Hlc {
    /// A clock named `node_id` (must not contain `:`, which separates the hashed fields).
    pub fn new(node_id: impl Into<String>) -> Self {
        Hlc {
            node_id: node_id.into(),
            last_millis: 0,
            last_counter: 0,
        }
    }

    /// The node id of this clock.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The next timestamp (core.md §4.3 `now()`).
    pub fn now(&mut self) -> Timestamp {
        self.tick(wall_millis())
    }

    fn tick(&mut self, wall: u64) -> Timestamp {
        if wall > self.last_millis {
            self.last_millis = wall;
            self.last_counter = 0;
        } else {
            self.last_counter += 1;
        }
        Timestamp {
            millis: self.last_millis,
            counter: self.last_counter,
            node_id: self.node_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_increase_within_one_millisecond_and_when_the_clock_goes_back() {
        let mut hlc = Hlc::new("n1");
        let a = hlc.tick(1000);
        let b = hlc.tick(1000);
        let c = hlc.tick(999);
        let d = hlc.tick(1001);
        assert_eq!((a.millis, a.counter), (1000, 0));
        assert_eq!((b.millis, b.counter), (1000, 1));
        assert_eq!((c.millis, c.counter), (1000, 2));
        assert_eq!((d.millis, d.counter), (1001, 0));
        assert!(a < b && b < c && c < d);
    }

    #[test]
    fn ordering_falls_back_to_node_id_bytes() {
        let a = Timestamp {
            millis: 5,
            counter: 1,
            node_id: "a".into(),
        };
        let b = Timestamp {
            millis: 5,
            counter: 1,
            node_id: "b".into(),
        };
        let c = Timestamp {
            millis: 5,
            counter: 2,
            node_id: "a".into(),
        };
        assert!(a < b);
        assert!(b < c);
    }
}

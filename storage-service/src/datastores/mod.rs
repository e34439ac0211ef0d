//! The [`DataStore`] trait and its three implementations: PostgreSQL, embedded SQLite
//! and the null store.
//!
//! Semantics shared by every durable store:
//! * one row per (map name, kind, key);
//! * an upsert only replaces a row whose stored timestamp is strictly older (the LWW
//!   guard), so batches applied out of order never let an old write win;
//! * a delete with `not_newer_than` only removes a row whose stored timestamp is not
//!   newer than the bound;
//! * a batch is one transaction, committed before `write_batch` returns.

mod null;
mod postgres;
mod sqlite;

pub use null::NullDataStore;
pub use postgres::PostgresDataStore;
pub use sqlite::SqliteDataStore;

use crate::error::StorageError;
use crate::model::{
    cmp_stored_order, MapCount, MapCursor, Mutation, Record, RecordKind, RecordRef,
};
use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

/// Table used when none is configured.
pub const DEFAULT_TABLE_NAME: &str = "topgun_maps";

/// Durable storage of map records. Object safe, so services hold an `Arc<dyn DataStore>`.
#[tonic::async_trait]
pub trait DataStore: Send + Sync + std::fmt::Debug {
    /// Creates the schema if it does not exist; harmless to call again.
    async fn initialize(&self) -> Result<(), StorageError>;

    /// Applies the mutations in order, in one transaction, and returns the number of
    /// rows written (inserted, replaced or deleted); upserts that lose to the LWW guard
    /// and deletes that find nothing are not counted.
    async fn write_batch(&self, mutations: Vec<Mutation>) -> Result<u64, StorageError>;

    /// Loads the given keys of one map; absent keys are simply missing from the result.
    async fn load_keys(
        &self,
        map_name: &str,
        kind: RecordKind,
        keys: &[String],
    ) -> Result<Vec<Record>, StorageError>;

    /// One page of a scan ordered by (map name, kind, key bytes), restricted to a map
    /// (`None` = every map) and to partitions (empty = every partition), starting after
    /// `after`. A page shorter than `page_size` is the last one.
    async fn load_map(
        &self,
        map_name: Option<&str>,
        partitions: &[u32],
        after: Option<&MapCursor>,
        page_size: u32,
    ) -> Result<Vec<Record>, StorageError>;

    /// Row counts per (map, kind), ordered by map name then kind.
    async fn list_maps(&self) -> Result<Vec<MapCount>, StorageError>;

    /// Deletes rows whose `expires_at` is set and not after `now_ms`; returns how many.
    async fn delete_expired(&self, now_ms: u64) -> Result<u64, StorageError>;

    /// Short backend name for logs (`postgres`, `sqlite`, `null`).
    fn backend_name(&self) -> &'static str;
}

/// Checks a table name against `^[a-zA-Z_][a-zA-Z0-9_]*$`. The name is spliced into SQL
/// text (identifiers cannot be bound), so this check is the injection guard.
pub fn validate_table_name(name: &str) -> Result<(), StorageError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StorageError::InvalidTableName(name.to_string()))
    }
}

/// One SQL statement's worth of a batch: a run of consecutive mutations of one type.
#[derive(Debug)]
pub(crate) enum Step {
    /// Upserts, at most one per row, sorted by row identity.
    Upserts(Vec<Record>),
    /// Deletes, sorted by row identity.
    Deletes(Vec<RecordRef>),
}

/// Splits a batch into runs of upserts and deletes, so each run can be one statement
/// while the batch keeps its order (a delete followed by an upsert of the same key
/// must leave the upsert).
///
/// Inside a run of upserts only the newest write of each row is kept: LWW makes the
/// run's outcome equal to its maximum, and an `ON CONFLICT` upsert may not touch the
/// same row twice. Rows are sorted by identity so concurrent batches lock shared rows
/// in the same order and cannot deadlock each other.
pub(crate) fn plan_batch(mutations: Vec<Mutation>) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for mutation in mutations {
        match (mutation, steps.last_mut()) {
            (Mutation::Upsert(r), Some(Step::Upserts(run))) => run.push(r),
            (Mutation::Delete(d), Some(Step::Deletes(run))) => run.push(d),
            (Mutation::Upsert(r), _) => steps.push(Step::Upserts(vec![r])),
            (Mutation::Delete(d), _) => steps.push(Step::Deletes(vec![d])),
        }
    }
    for step in &mut steps {
        match step {
            Step::Upserts(run) => {
                // Stable sort: among equal timestamps the earliest write stays first,
                // matching sequential application (an equal timestamp never replaces).
                run.sort_by(|a, b| {
                    row_order(a, b).then_with(|| cmp_stored_order(&b.timestamp, &a.timestamp))
                });
                run.dedup_by(|later, first| row_order(later, first) == Ordering::Equal);
            }
            Step::Deletes(run) => {
                run.sort_by(|a, b| {
                    (&a.map_name, a.kind, &a.key).cmp(&(&b.map_name, b.kind, &b.key))
                });
            }
        }
    }
    steps
}

/// Orders records by row identity (map name, kind, key).
fn row_order(a: &Record, b: &Record) -> Ordering {
    (&a.map_name, a.kind, &a.key).cmp(&(&b.map_name, b.kind, &b.key))
}

/// Wall-clock epoch millis for `created_at` / `updated_at` (bookkeeping only; the LWW
/// decision uses the records' HLC timestamps).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_proto::hlc::Timestamp;

    fn up(key: &str, millis: u64, node: &str) -> Mutation {
        Mutation::Upsert(Record {
            map_name: "m".into(),
            key: key.into(),
            partition: 0,
            kind: RecordKind::Lww,
            value: format!("{key}@{millis}").into_bytes(),
            timestamp: Timestamp::new(millis, 0, node),
            tombstone: false,
            ttl_ms: None,
            expires_at_ms: 0,
        })
    }

    fn del(key: &str) -> Mutation {
        Mutation::Delete(RecordRef {
            map_name: "m".into(),
            key: key.into(),
            kind: RecordKind::Lww,
            not_newer_than: None,
        })
    }

    #[test]
    fn table_names_follow_the_identifier_pattern() {
        for ok in ["topgun_maps", "_x", "A1_b2", "t"] {
            assert!(validate_table_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "a;drop table x", "a-b", "é", "a b", "a\"b"] {
            let err = validate_table_name(bad).expect_err(bad);
            assert_eq!(
                err.to_string(),
                format!("Invalid table name '{bad}': must match ^[a-zA-Z_][a-zA-Z0-9_]*$")
            );
        }
    }

    #[test]
    fn batches_split_into_ordered_runs_and_keep_the_newest_upsert_per_row() {
        let steps = plan_batch(vec![
            up("b", 1, "n"),
            up("a", 5, "n"),
            up("a", 9, "n"),
            up("a", 7, "z"),
            del("a"),
            up("a", 2, "n"),
        ]);
        assert_eq!(steps.len(), 3);
        let Step::Upserts(first) = &steps[0] else {
            panic!("upserts first")
        };
        let keys: Vec<_> = first
            .iter()
            .map(|r| (r.key.as_str(), r.timestamp.millis))
            .collect();
        assert_eq!(keys, vec![("a", 9), ("b", 1)]);
        assert!(matches!(&steps[1], Step::Deletes(d) if d.len() == 1));
        assert!(matches!(&steps[2], Step::Upserts(u) if u.len() == 1));
    }

    #[test]
    fn equal_timestamps_keep_the_first_write() {
        let mut a = up("a", 5, "n");
        if let Mutation::Upsert(r) = &mut a {
            r.value = b"first".to_vec();
        }
        let steps = plan_batch(vec![a, up("a", 5, "n")]);
        let Step::Upserts(run) = &steps[0] else {
            panic!("upserts")
        };
        assert_eq!(run.len(), 1);
        assert_eq!(run[0].value, b"first");
    }
}

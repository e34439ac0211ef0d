//! Domain types of the storage service, validated once from their protobuf form.
//!
//! Prost messages carry `Option`s, open enums and `u64`s that a database column cannot
//! hold; the `TryFrom` impls here turn them into values every store can write without
//! further checks (non-empty map names, no NUL bytes, integers that fit `BIGINT`).

use crate::error::StorageError;
use std::cmp::Ordering;
use topgun_proto::grpc::{common as pb_common, storage as pb};
use topgun_proto::hlc::Timestamp;
use topgun_proto::partition::PARTITION_COUNT;

/// Which CRDT a row belongs to; LWW and OR data of the same map name are independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    /// `value` is the MsgPack user value.
    Lww,
    /// `value` is the MsgPack of an OR key state.
    Or,
}

impl RecordKind {
    /// The `kind` column value.
    pub fn as_i16(self) -> i16 {
        match self {
            RecordKind::Lww => 0,
            RecordKind::Or => 1,
        }
    }

    /// Reads the `kind` column back.
    pub fn from_i16(value: i16) -> Result<Self, StorageError> {
        match value {
            0 => Ok(RecordKind::Lww),
            1 => Ok(RecordKind::Or),
            other => Err(StorageError::CorruptRow(format!("unknown kind {other}"))),
        }
    }

    /// Reads the open protobuf enum (an `i32` on the wire).
    pub fn from_proto(value: i32) -> Result<Self, StorageError> {
        match pb::RecordKind::try_from(value) {
            Ok(pb::RecordKind::Lww) => Ok(RecordKind::Lww),
            Ok(pb::RecordKind::Or) => Ok(RecordKind::Or),
            Err(_) => Err(StorageError::invalid(
                "kind",
                format!("unknown record kind {value}"),
            )),
        }
    }

    /// The protobuf enum.
    pub fn to_proto(self) -> pb::RecordKind {
        match self {
            RecordKind::Lww => pb::RecordKind::Lww,
            RecordKind::Or => pb::RecordKind::Or,
        }
    }
}

/// One durable row: one per (map, kind, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Map name, non-empty.
    pub map_name: String,
    /// Record key.
    pub key: String,
    /// Partition of the key (`< PARTITION_COUNT`).
    pub partition: u32,
    /// LWW or OR data.
    pub kind: RecordKind,
    /// Opaque MsgPack payload.
    pub value: Vec<u8>,
    /// HLC timestamp; the LWW guard compares it with the stored one.
    pub timestamp: Timestamp,
    /// Whether the record is a tombstone.
    pub tombstone: bool,
    /// Time to live the writer asked for, if any.
    pub ttl_ms: Option<u64>,
    /// Epoch millis after which the row may be purged; 0 = never.
    pub expires_at_ms: u64,
}

/// Identifies one row, for deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef {
    /// Map name, non-empty.
    pub map_name: String,
    /// Record key.
    pub key: String,
    /// LWW or OR data.
    pub kind: RecordKind,
    /// Delete only if the stored timestamp is not newer than this.
    pub not_newer_than: Option<Timestamp>,
}

/// One change in a write batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Insert, or replace a row with an older timestamp.
    Upsert(Record),
    /// Remove a row (subject to its `not_newer_than` guard).
    Delete(RecordRef),
}

/// Number of rows stored for one (map, kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapCount {
    /// Map name.
    pub map_name: String,
    /// LWW or OR data.
    pub kind: RecordKind,
    /// Rows, tombstones included.
    pub records: u64,
}

/// Resume point of a paged map scan: the last row of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapCursor {
    /// Map name of the last row returned.
    pub map_name: String,
    /// Kind of the last row returned.
    pub kind: RecordKind,
    /// Key of the last row returned.
    pub key: String,
}

impl MapCursor {
    /// The cursor that resumes right after `record`.
    pub fn after(record: &Record) -> Self {
        MapCursor {
            map_name: record.map_name.clone(),
            kind: record.kind,
            key: record.key.clone(),
        }
    }
}

/// The order the databases apply in the LWW guard: millis, counter, then node id by
/// bytes (PostgreSQL `COLLATE "C"`, SQLite `BINARY`). It equals the HLC order for every
/// ASCII node id; batches are collapsed with it so in-batch and in-database decisions agree.
pub fn cmp_stored_order(a: &Timestamp, b: &Timestamp) -> Ordering {
    (a.millis, a.counter, a.node_id.as_bytes()).cmp(&(b.millis, b.counter, b.node_id.as_bytes()))
}

/// Converts a `u64` into a `BIGINT`-compatible value.
pub(crate) fn to_i64(value: u64, field: &'static str) -> Result<i64, StorageError> {
    i64::try_from(value).map_err(|_| StorageError::invalid(field, "exceeds 2^63-1"))
}

/// Reads a `BIGINT` column back as the `u64` it was written from.
pub(crate) fn from_i64(value: i64, column: &'static str) -> Result<u64, StorageError> {
    u64::try_from(value).map_err(|_| StorageError::CorruptRow(format!("negative {column}")))
}

/// Rejects text a database column cannot hold (PostgreSQL rejects NUL in TEXT).
fn check_text(value: &str, field: &'static str) -> Result<(), StorageError> {
    if value.contains('\0') {
        return Err(StorageError::invalid(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

/// Validates a map name: non-empty, storable.
pub fn check_map_name(map_name: &str) -> Result<(), StorageError> {
    if map_name.is_empty() {
        return Err(StorageError::invalid("map_name", "must not be empty"));
    }
    check_text(map_name, "map_name")
}

/// Validates a record key: storable (the empty key is allowed).
pub fn check_key(key: &str) -> Result<(), StorageError> {
    check_text(key, "key")
}

/// Validates a protobuf timestamp and converts it.
fn timestamp_from_proto(
    ts: Option<pb_common::Timestamp>,
    field: &'static str,
) -> Result<Timestamp, StorageError> {
    let ts = ts.ok_or_else(|| StorageError::invalid(field, "missing timestamp"))?;
    to_i64(ts.millis, field)?;
    to_i64(ts.counter, field)?;
    check_text(&ts.node_id, field)?;
    Ok(Timestamp::from(ts))
}

impl TryFrom<pb::StoredRecord> for Record {
    type Error = StorageError;

    fn try_from(msg: pb::StoredRecord) -> Result<Self, StorageError> {
        check_map_name(&msg.map_name)?;
        check_key(&msg.key)?;
        if msg.partition >= PARTITION_COUNT {
            return Err(StorageError::invalid(
                "partition",
                format!("{} is not below {PARTITION_COUNT}", msg.partition),
            ));
        }
        if let Some(ttl) = msg.ttl_ms {
            to_i64(ttl, "ttl_ms")?;
        }
        to_i64(msg.expires_at_ms, "expires_at_ms")?;
        Ok(Record {
            kind: RecordKind::from_proto(msg.kind)?,
            timestamp: timestamp_from_proto(msg.timestamp, "timestamp")?,
            map_name: msg.map_name,
            key: msg.key,
            partition: msg.partition,
            value: msg.value,
            tombstone: msg.tombstone,
            ttl_ms: msg.ttl_ms,
            expires_at_ms: msg.expires_at_ms,
        })
    }
}

impl From<Record> for pb::StoredRecord {
    fn from(r: Record) -> Self {
        pb::StoredRecord {
            map_name: r.map_name,
            key: r.key,
            partition: r.partition,
            kind: r.kind.to_proto() as i32,
            value: r.value,
            timestamp: Some(pb_common::Timestamp::from(&r.timestamp)),
            tombstone: r.tombstone,
            ttl_ms: r.ttl_ms,
            expires_at_ms: r.expires_at_ms,
        }
    }
}

impl TryFrom<pb::RecordRef> for RecordRef {
    type Error = StorageError;

    fn try_from(msg: pb::RecordRef) -> Result<Self, StorageError> {
        check_map_name(&msg.map_name)?;
        check_key(&msg.key)?;
        let not_newer_than = match msg.not_newer_than {
            Some(ts) => Some(timestamp_from_proto(Some(ts), "not_newer_than")?),
            None => None,
        };
        Ok(RecordRef {
            kind: RecordKind::from_proto(msg.kind)?,
            map_name: msg.map_name,
            key: msg.key,
            not_newer_than,
        })
    }
}

impl TryFrom<pb::Mutation> for Mutation {
    type Error = StorageError;

    fn try_from(msg: pb::Mutation) -> Result<Self, StorageError> {
        match msg.kind {
            Some(pb::mutation::Kind::Upsert(r)) => Ok(Mutation::Upsert(r.try_into()?)),
            Some(pb::mutation::Kind::Delete(r)) => Ok(Mutation::Delete(r.try_into()?)),
            None => Err(StorageError::invalid(
                "mutation",
                "neither upsert nor delete",
            )),
        }
    }
}

impl From<MapCount> for pb::MapCount {
    fn from(c: MapCount) -> Self {
        pb::MapCount {
            map_name: c.map_name,
            kind: c.kind.to_proto() as i32,
            records: c.records,
        }
    }
}

/// A database row in column order, shared by the SQL stores so both decode alike.
pub(crate) struct RowParts {
    pub map_name: String,
    pub kind: i16,
    pub key: String,
    pub partition: i64,
    pub value: Vec<u8>,
    pub ts_millis: i64,
    pub ts_counter: i64,
    pub ts_node_id: String,
    pub tombstone: bool,
    pub ttl_ms: Option<i64>,
    pub expires_at: i64,
}

impl TryFrom<RowParts> for Record {
    type Error = StorageError;

    fn try_from(row: RowParts) -> Result<Self, StorageError> {
        let partition = u32::try_from(row.partition)
            .map_err(|_| StorageError::CorruptRow(format!("partition {}", row.partition)))?;
        Ok(Record {
            kind: RecordKind::from_i16(row.kind)?,
            partition,
            timestamp: Timestamp::new(
                from_i64(row.ts_millis, "ts_millis")?,
                from_i64(row.ts_counter, "ts_counter")?,
                row.ts_node_id,
            ),
            ttl_ms: row.ttl_ms.map(|t| from_i64(t, "ttl_ms")).transpose()?,
            expires_at_ms: from_i64(row.expires_at, "expires_at")?,
            map_name: row.map_name,
            key: row.key,
            value: row.value,
            tombstone: row.tombstone,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(map: &str, partition: u32, millis: u64) -> pb::StoredRecord {
        pb::StoredRecord {
            map_name: map.into(),
            key: "k".into(),
            partition,
            kind: 0,
            value: vec![0xc0],
            timestamp: Some(pb_common::Timestamp {
                millis,
                counter: 0,
                node_id: "n".into(),
            }),
            tombstone: false,
            ttl_ms: None,
            expires_at_ms: 0,
        }
    }

    #[test]
    fn validates_stored_records_on_receipt() {
        assert!(Record::try_from(stored("m", 3, 1)).is_ok());
        assert!(Record::try_from(stored("", 3, 1)).is_err());
        assert!(Record::try_from(stored("m\0", 3, 1)).is_err());
        assert!(Record::try_from(stored("m", PARTITION_COUNT, 1)).is_err());
        assert!(Record::try_from(stored("m", 3, u64::MAX)).is_err());
        let mut missing_ts = stored("m", 3, 1);
        missing_ts.timestamp = None;
        assert!(Record::try_from(missing_ts).is_err());
        let mut bad_kind = stored("m", 3, 1);
        bad_kind.kind = 7;
        assert!(Record::try_from(bad_kind).is_err());
    }

    #[test]
    fn round_trips_through_protobuf() {
        let record = Record::try_from(stored("m", 3, 9)).expect("valid");
        let back = Record::try_from(pb::StoredRecord::from(record.clone())).expect("valid");
        assert_eq!(record, back);
    }

    #[test]
    fn stored_order_compares_node_ids_by_bytes() {
        let a = Timestamp::new(1, 1, "a");
        let b = Timestamp::new(1, 1, "b");
        assert_eq!(cmp_stored_order(&a, &b), Ordering::Less);
        assert_eq!(
            cmp_stored_order(&Timestamp::new(2, 0, "a"), &b),
            Ordering::Greater
        );
        // UTF-16 order would put U+FF5E after U+1F600; byte order puts it before.
        assert_eq!(
            cmp_stored_order(
                &Timestamp::new(1, 1, "\u{FF5E}"),
                &Timestamp::new(1, 1, "😀")
            ),
            Ordering::Less
        );
    }
}

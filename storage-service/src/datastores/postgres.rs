//! PostgreSQL store over a bounded sqlx `PgPool`.
//!
//! Each batch run is one statement over `UNNEST`ed column arrays, so a batch of 1000
//! rows costs one round trip instead of 1000. Text columns use the `"C"` collation:
//! keys page in byte order (the same order as the SQLite store) and the LWW guard
//! compares node ids by bytes.

use super::{now_ms, plan_batch, validate_table_name, DataStore, Step, DEFAULT_TABLE_NAME};
use crate::error::StorageError;
use crate::model::{
    to_i64, MapCount, MapCursor, Mutation, Record, RecordKind, RecordRef, RowParts,
};
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use std::sync::Arc;

/// Columns in the order every `SELECT` returns them (see [`RowTuple`]).
const COLUMNS: &str = "map_name, kind, key, \"partition\", value, ts_millis, ts_counter, \
                       ts_node_id, tombstone, ttl_ms, expires_at";

/// One selected row, as decoded by sqlx.
type RowTuple = (
    String,
    i16,
    String,
    i32,
    Vec<u8>,
    i64,
    i64,
    String,
    bool,
    Option<i64>,
    i64,
);

/// SQL text for one table, built once after the name was validated.
#[derive(Debug)]
struct Statements {
    schema: Vec<Arc<str>>,
    upsert: Arc<str>,
    delete: Arc<str>,
    load_keys: Arc<str>,
    load_map_one: Arc<str>,
    load_map_all: Arc<str>,
    list_maps: Arc<str>,
    delete_expired: Arc<str>,
}

impl Statements {
    fn new(t: &str) -> Self {
        let schema = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                   map_name TEXT COLLATE \"C\" NOT NULL, \
                   kind SMALLINT NOT NULL, \
                   key TEXT COLLATE \"C\" NOT NULL, \
                   \"partition\" INTEGER NOT NULL, \
                   value BYTEA NOT NULL, \
                   ts_millis BIGINT NOT NULL, \
                   ts_counter BIGINT NOT NULL, \
                   ts_node_id TEXT COLLATE \"C\" NOT NULL, \
                   tombstone BOOLEAN NOT NULL, \
                   ttl_ms BIGINT NULL, \
                   expires_at BIGINT NOT NULL DEFAULT 0, \
                   created_at BIGINT NOT NULL, \
                   updated_at BIGINT NOT NULL, \
                   PRIMARY KEY (map_name, kind, key))"
            ),
            // The primary key already serves lookups by map name alone; this index adds
            // the partition so partition-restricted scans (shard bootstrap) stay cheap.
            format!("CREATE INDEX IF NOT EXISTS idx_{t}_map ON {t} (map_name, \"partition\")"),
            // Partial: most rows never expire and should cost the purge nothing.
            format!(
                "CREATE INDEX IF NOT EXISTS idx_{t}_expiry ON {t} (expires_at) WHERE expires_at > 0"
            ),
        ];
        let upsert = format!(
            "INSERT INTO {t} AS cur ({COLUMNS}, created_at, updated_at) \
             SELECT u.*, $12, $12 FROM UNNEST($1::text[], $2::int2[], $3::text[], $4::int4[], \
               $5::bytea[], $6::int8[], $7::int8[], $8::text[], $9::bool[], $10::int8[], $11::int8[]) AS u \
             ON CONFLICT (map_name, kind, key) DO UPDATE SET \
               \"partition\" = excluded.\"partition\", value = excluded.value, \
               ts_millis = excluded.ts_millis, ts_counter = excluded.ts_counter, \
               ts_node_id = excluded.ts_node_id, tombstone = excluded.tombstone, \
               ttl_ms = excluded.ttl_ms, expires_at = excluded.expires_at, \
               updated_at = excluded.updated_at \
             WHERE (excluded.ts_millis, excluded.ts_counter, excluded.ts_node_id COLLATE \"C\") \
                 > (cur.ts_millis, cur.ts_counter, cur.ts_node_id COLLATE \"C\")"
        );
        let delete = format!(
            "DELETE FROM {t} AS cur USING UNNEST($1::text[], $2::int2[], $3::text[], $4::bool[], \
               $5::int8[], $6::int8[], $7::text[]) \
               AS d(map_name, kind, key, guarded, ts_millis, ts_counter, ts_node_id) \
             WHERE cur.map_name = d.map_name AND cur.kind = d.kind AND cur.key = d.key \
               AND (NOT d.guarded OR (cur.ts_millis, cur.ts_counter, cur.ts_node_id COLLATE \"C\") \
                   <= (d.ts_millis, d.ts_counter, d.ts_node_id COLLATE \"C\"))"
        );
        let load_keys = format!(
            "SELECT {COLUMNS} FROM {t} WHERE map_name = $1 AND kind = $2 AND key = ANY($3::text[]) \
             ORDER BY key"
        );
        // The scan always carries a cursor (the first page starts after ('', min, '')), so
        // the row comparison is an index condition on the primary key and every page is a
        // range scan rather than a rescan from the start.
        let load_map_one = format!(
            "SELECT {COLUMNS} FROM {t} WHERE map_name = $1 \
               AND (cardinality($2::int4[]) = 0 OR \"partition\" = ANY($2::int4[])) \
               AND (map_name, kind, key) > ($3::text, $4::int2, $5::text) \
             ORDER BY map_name, kind, key LIMIT $6"
        );
        let load_map_all = format!(
            "SELECT {COLUMNS} FROM {t} WHERE \
               (cardinality($1::int4[]) = 0 OR \"partition\" = ANY($1::int4[])) \
               AND (map_name, kind, key) > ($2::text, $3::int2, $4::text) \
             ORDER BY map_name, kind, key LIMIT $5"
        );
        let list_maps = format!(
            "SELECT map_name, kind, COUNT(*) FROM {t} GROUP BY map_name, kind ORDER BY map_name, kind"
        );
        let delete_expired = format!("DELETE FROM {t} WHERE expires_at > 0 AND expires_at <= $1");
        Statements {
            schema: schema.into_iter().map(Arc::from).collect(),
            upsert: upsert.into(),
            delete: delete.into(),
            load_keys: load_keys.into(),
            load_map_one: load_map_one.into(),
            load_map_all: load_map_all.into(),
            list_maps: list_maps.into(),
            delete_expired: delete_expired.into(),
        }
    }
}

/// Records in a PostgreSQL table (default `topgun_maps`), one row per (map, kind, key).
#[derive(Debug, Clone)]
pub struct PostgresDataStore {
    pool: PgPool,
    table: String,
    sql: Arc<Statements>,
}

impl PostgresDataStore {
    /// A store over `pool` using `table_name` (default `topgun_maps`). Fails with
    /// [`StorageError::InvalidTableName`] unless the name matches `^[a-zA-Z_][a-zA-Z0-9_]*$`.
    /// Call [`DataStore::initialize`] before use.
    pub fn new(pool: PgPool, table_name: Option<String>) -> Result<Self, StorageError> {
        let table = table_name.unwrap_or_else(|| DEFAULT_TABLE_NAME.to_string());
        validate_table_name(&table)?;
        let sql = Arc::new(Statements::new(&table));
        Ok(PostgresDataStore { pool, table, sql })
    }

    /// The (validated) table name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn upsert(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        run: Vec<Record>,
        now: i64,
    ) -> Result<u64, StorageError> {
        let n = run.len();
        let mut maps = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut partitions = Vec::with_capacity(n);
        let mut values = Vec::with_capacity(n);
        let mut millis = Vec::with_capacity(n);
        let mut counters = Vec::with_capacity(n);
        let mut nodes = Vec::with_capacity(n);
        let mut tombstones = Vec::with_capacity(n);
        let mut ttls = Vec::with_capacity(n);
        let mut expiries = Vec::with_capacity(n);
        for r in run {
            // Range checks belong to validation, but a record built in-process skipped it.
            partitions.push(i32::try_from(r.partition).map_err(|_| {
                StorageError::invalid("partition", format!("{} out of range", r.partition))
            })?);
            millis.push(to_i64(r.timestamp.millis, "timestamp.millis")?);
            counters.push(to_i64(r.timestamp.counter, "timestamp.counter")?);
            ttls.push(r.ttl_ms.map(|t| to_i64(t, "ttl_ms")).transpose()?);
            expiries.push(to_i64(r.expires_at_ms, "expires_at_ms")?);
            maps.push(r.map_name);
            kinds.push(r.kind.as_i16());
            keys.push(r.key);
            values.push(r.value);
            nodes.push(r.timestamp.node_id);
            tombstones.push(r.tombstone);
        }
        let done = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.upsert)))
            .bind(maps)
            .bind(kinds)
            .bind(keys)
            .bind(partitions)
            .bind(values)
            .bind(millis)
            .bind(counters)
            .bind(nodes)
            .bind(tombstones)
            .bind(ttls)
            .bind(expiries)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }

    async fn delete(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        run: Vec<RecordRef>,
    ) -> Result<u64, StorageError> {
        let n = run.len();
        let mut maps = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut keys = Vec::with_capacity(n);
        let mut guarded = Vec::with_capacity(n);
        let mut millis = Vec::with_capacity(n);
        let mut counters = Vec::with_capacity(n);
        let mut nodes = Vec::with_capacity(n);
        for d in run {
            // Unguarded rows still need placeholders so the arrays stay aligned.
            guarded.push(d.not_newer_than.is_some());
            let (m, c, node) = match d.not_newer_than {
                Some(ts) => (
                    to_i64(ts.millis, "not_newer_than.millis")?,
                    to_i64(ts.counter, "not_newer_than.counter")?,
                    ts.node_id,
                ),
                None => (0, 0, String::new()),
            };
            maps.push(d.map_name);
            kinds.push(d.kind.as_i16());
            keys.push(d.key);
            millis.push(m);
            counters.push(c);
            nodes.push(node);
        }
        let done = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.delete)))
            .bind(maps)
            .bind(kinds)
            .bind(keys)
            .bind(guarded)
            .bind(millis)
            .bind(counters)
            .bind(nodes)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }
}

fn decode(rows: Vec<RowTuple>) -> Result<Vec<Record>, StorageError> {
    rows.into_iter()
        .map(
            |(
                map_name,
                kind,
                key,
                partition,
                value,
                ts_millis,
                ts_counter,
                ts_node_id,
                tombstone,
                ttl_ms,
                expires_at,
            )| {
                Record::try_from(RowParts {
                    map_name,
                    kind,
                    key,
                    partition: i64::from(partition),
                    value,
                    ts_millis,
                    ts_counter,
                    ts_node_id,
                    tombstone,
                    ttl_ms,
                    expires_at,
                })
            },
        )
        .collect()
}

#[tonic::async_trait]
impl DataStore for PostgresDataStore {
    async fn initialize(&self) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
        // Concurrent `CREATE TABLE IF NOT EXISTS` from several replicas can still collide
        // on the catalog; a transaction-scoped advisory lock per table serialises them.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("topgun-storage:{}", self.table))
            .execute(&mut *tx)
            .await?;
        for statement in &self.sql.schema {
            sqlx::query(AssertSqlSafe(Arc::clone(statement)))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn write_batch(&self, mutations: Vec<Mutation>) -> Result<u64, StorageError> {
        if mutations.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let mut written = 0;
        for step in plan_batch(mutations) {
            written += match step {
                Step::Upserts(run) => self.upsert(&mut tx, run, now).await?,
                Step::Deletes(run) => self.delete(&mut tx, run).await?,
            };
        }
        tx.commit().await?;
        Ok(written)
    }

    async fn load_keys(
        &self,
        map_name: &str,
        kind: RecordKind,
        keys: &[String],
    ) -> Result<Vec<Record>, StorageError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<RowTuple> = sqlx::query_as(AssertSqlSafe(Arc::clone(&self.sql.load_keys)))
            .bind(map_name)
            .bind(kind.as_i16())
            .bind(keys)
            .fetch_all(&self.pool)
            .await?;
        decode(rows)
    }

    async fn load_map(
        &self,
        map_name: Option<&str>,
        partitions: &[u32],
        after: Option<&MapCursor>,
        page_size: u32,
    ) -> Result<Vec<Record>, StorageError> {
        // An out-of-range partition must not be dropped: an emptied filter would mean
        // "every partition".
        let partitions = partitions
            .iter()
            .map(|p| {
                i32::try_from(*p)
                    .map_err(|_| StorageError::invalid("partitions", format!("{p} out of range")))
            })
            .collect::<Result<Vec<i32>, _>>()?;
        // ("", i16::MIN, "") sorts before every row under the "C" collation.
        let (cursor_map, cursor_kind, cursor_key) = match after {
            Some(c) => (c.map_name.as_str(), c.kind.as_i16(), c.key.as_str()),
            None => ("", i16::MIN, ""),
        };
        let query = match map_name {
            Some(map) => {
                sqlx::query_as(AssertSqlSafe(Arc::clone(&self.sql.load_map_one))).bind(map)
            }
            None => sqlx::query_as(AssertSqlSafe(Arc::clone(&self.sql.load_map_all))),
        };
        let rows: Vec<RowTuple> = query
            .bind(partitions)
            .bind(cursor_map)
            .bind(cursor_kind)
            .bind(cursor_key)
            .bind(i64::from(page_size))
            .fetch_all(&self.pool)
            .await?;
        decode(rows)
    }

    async fn list_maps(&self) -> Result<Vec<MapCount>, StorageError> {
        let rows: Vec<(String, i16, i64)> =
            sqlx::query_as(AssertSqlSafe(Arc::clone(&self.sql.list_maps)))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(map_name, kind, count)| {
                Ok(MapCount {
                    map_name,
                    kind: RecordKind::from_i16(kind)?,
                    records: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn delete_expired(&self, now_ms: u64) -> Result<u64, StorageError> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let done = sqlx::query(AssertSqlSafe(Arc::clone(&self.sql.delete_expired)))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    fn backend_name(&self) -> &'static str {
        "postgres"
    }
}

//! Embedded SQLite store: the zero-setup default of the `topgun` binary.
//!
//! Same schema and semantics as the PostgreSQL store. SQLite has no array binds, so
//! batches become multi-row `VALUES` lists, chunked to stay far below the bind-parameter
//! limit. Text compares with the `BINARY` collation (bytes), like PostgreSQL's `"C"`.

use super::{now_ms, plan_batch, validate_table_name, DataStore, Step, DEFAULT_TABLE_NAME};
use crate::error::StorageError;
use crate::model::{
    to_i64, MapCount, MapCursor, Mutation, Record, RecordKind, RecordRef, RowParts,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Sqlite, Transaction};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// File name of the database inside the data folder.
pub const SQLITE_FILE_NAME: &str = "topgun.db";

/// Rows per statement. 500 rows × 13 binds stays well under SQLite's 32766-parameter
/// limit while keeping the number of statements (and worker round trips) per batch low.
const ROWS_PER_STATEMENT: usize = 500;

/// How long a writer waits for another connection's write lock before failing with
/// SQLITE_BUSY (classified as retryable).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Columns in the order every `SELECT` returns them (see [`RowTuple`]).
const COLUMNS: &str = "map_name, kind, key, \"partition\", value, ts_millis, ts_counter, \
                       ts_node_id, tombstone, ttl_ms, expires_at";

/// One selected row, as decoded by sqlx.
type RowTuple = (
    String,
    i16,
    String,
    i64,
    Vec<u8>,
    i64,
    i64,
    String,
    bool,
    Option<i64>,
    i64,
);

/// Records in a table of an SQLite database file, one row per (map, kind, key).
#[derive(Debug, Clone)]
pub struct SqliteDataStore {
    pool: SqlitePool,
    table: Arc<str>,
}

impl SqliteDataStore {
    /// A store over an existing pool using `table_name` (default `topgun_maps`); the name
    /// is validated like the PostgreSQL store's. Call [`DataStore::initialize`] before use.
    pub fn new(pool: SqlitePool, table_name: Option<String>) -> Result<Self, StorageError> {
        let table = table_name.unwrap_or_else(|| DEFAULT_TABLE_NAME.to_string());
        validate_table_name(&table)?;
        Ok(SqliteDataStore {
            pool,
            table: table.into(),
        })
    }

    /// Opens (creating if needed) `<data_dir>/topgun.db` in WAL mode with a pool of at
    /// most `max_connections`, and returns a store over it (not yet initialized).
    ///
    /// `synchronous = FULL`: every commit is synced to disk before `write_batch` returns,
    /// so an acknowledged write survives a crash of the process or of the machine.
    pub async fn open(
        data_dir: &Path,
        table_name: Option<String>,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StorageError> {
        // Validate before touching the filesystem.
        let table = table_name.unwrap_or_else(|| DEFAULT_TABLE_NAME.to_string());
        validate_table_name(&table)?;
        tokio::fs::create_dir_all(data_dir)
            .await
            .map_err(|source| StorageError::Io {
                context: format!("cannot create data folder {}", data_dir.display()),
                source,
            })?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(SQLITE_FILE_NAME))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        Self::new(pool, Some(table))
    }

    /// The (validated) table name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn upsert(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        run: Vec<Record>,
        now: i64,
    ) -> Result<u64, StorageError> {
        let t = &*self.table;
        let mut written = 0;
        let mut rows = run.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Record> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
            // Anonymous `?` placeholders only: numbered ones (`?NNN`) make every bind look
            // its name up in a list as long as the statement, which measured 10x slower at
            // 500 rows per statement.
            let mut sql =
                format!("INSERT INTO {t} AS cur ({COLUMNS}, created_at, updated_at) VALUES ");
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 { "" } else { "," });
                sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?)");
            }
            sql.push_str(
                " ON CONFLICT (map_name, kind, key) DO UPDATE SET \
                   \"partition\" = excluded.\"partition\", value = excluded.value, \
                   ts_millis = excluded.ts_millis, ts_counter = excluded.ts_counter, \
                   ts_node_id = excluded.ts_node_id, tombstone = excluded.tombstone, \
                   ttl_ms = excluded.ttl_ms, expires_at = excluded.expires_at, \
                   updated_at = excluded.updated_at \
                 WHERE (excluded.ts_millis, excluded.ts_counter, excluded.ts_node_id COLLATE BINARY) \
                     > (cur.ts_millis, cur.ts_counter, cur.ts_node_id COLLATE BINARY)",
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                // Range checks belong to validation, but a record built in-process skipped it.
                query = query
                    .bind(r.map_name)
                    .bind(r.kind.as_i16())
                    .bind(r.key)
                    .bind(i64::from(r.partition))
                    .bind(r.value)
                    .bind(to_i64(r.timestamp.millis, "timestamp.millis")?)
                    .bind(to_i64(r.timestamp.counter, "timestamp.counter")?)
                    .bind(r.timestamp.node_id)
                    .bind(r.tombstone)
                    .bind(r.ttl_ms.map(|t| to_i64(t, "ttl_ms")).transpose()?)
                    .bind(to_i64(r.expires_at_ms, "expires_at_ms")?)
                    .bind(now)
                    .bind(now);
            }
            written += query.execute(&mut **tx).await?.rows_affected();
        }
        Ok(written)
    }

    async fn delete(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        run: Vec<RecordRef>,
    ) -> Result<u64, StorageError> {
        let t = &*self.table;
        let mut deleted = 0;
        let mut refs = run.into_iter().peekable();
        while refs.peek().is_some() {
            let chunk: Vec<RecordRef> = refs.by_ref().take(ROWS_PER_STATEMENT).collect();
            let mut sql =
                String::from("WITH d(map_name, kind, key, guarded, ts_millis, ts_counter, ts_node_id) AS (VALUES ");
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 {
                    "(?,?,?,?,?,?,?)"
                } else {
                    ",(?,?,?,?,?,?,?)"
                });
            }
            // Join from the (small) list of refs into the table by primary key, so the
            // delete never scans the table.
            let _ = write!(
                sql,
                ") DELETE FROM {t} WHERE rowid IN (SELECT cur.rowid FROM d JOIN {t} AS cur \
                   ON cur.map_name = d.map_name AND cur.kind = d.kind AND cur.key = d.key \
                   WHERE d.guarded = 0 OR (cur.ts_millis, cur.ts_counter, cur.ts_node_id COLLATE BINARY) \
                     <= (d.ts_millis, d.ts_counter, d.ts_node_id))"
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for d in chunk {
                let guarded = d.not_newer_than.is_some();
                // Unguarded rows still bind placeholders so the VALUES rows stay aligned.
                let (m, c, node) = match d.not_newer_than {
                    Some(ts) => (
                        to_i64(ts.millis, "not_newer_than.millis")?,
                        to_i64(ts.counter, "not_newer_than.counter")?,
                        ts.node_id,
                    ),
                    None => (0, 0, String::new()),
                };
                query = query
                    .bind(d.map_name)
                    .bind(d.kind.as_i16())
                    .bind(d.key)
                    .bind(guarded)
                    .bind(m)
                    .bind(c)
                    .bind(node);
            }
            deleted += query.execute(&mut **tx).await?.rows_affected();
        }
        Ok(deleted)
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
                    partition,
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
impl DataStore for SqliteDataStore {
    async fn initialize(&self) -> Result<(), StorageError> {
        let t = &*self.table;
        let statements = [
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                   map_name TEXT NOT NULL COLLATE BINARY, \
                   kind INTEGER NOT NULL, \
                   key TEXT NOT NULL COLLATE BINARY, \
                   \"partition\" INTEGER NOT NULL, \
                   value BLOB NOT NULL, \
                   ts_millis INTEGER NOT NULL, \
                   ts_counter INTEGER NOT NULL, \
                   ts_node_id TEXT NOT NULL COLLATE BINARY, \
                   tombstone BOOLEAN NOT NULL, \
                   ttl_ms INTEGER NULL, \
                   expires_at INTEGER NOT NULL DEFAULT 0, \
                   created_at INTEGER NOT NULL, \
                   updated_at INTEGER NOT NULL, \
                   PRIMARY KEY (map_name, kind, key))"
            ),
            // Same indexes as the PostgreSQL store (see there for why).
            format!("CREATE INDEX IF NOT EXISTS idx_{t}_map ON {t} (map_name, \"partition\")"),
            format!(
                "CREATE INDEX IF NOT EXISTS idx_{t}_expiry ON {t} (expires_at) WHERE expires_at > 0"
            ),
        ];
        let mut tx = self.pool.begin().await?;
        for statement in statements {
            sqlx::query(AssertSqlSafe(statement))
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
        let t = &*self.table;
        let mut records = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let mut sql =
                format!("SELECT {COLUMNS} FROM {t} WHERE map_name = ? AND kind = ? AND key IN (");
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 { "?" } else { ",?" });
            }
            sql.push(')');
            let mut query = sqlx::query_as(AssertSqlSafe(sql))
                .bind(map_name)
                .bind(kind.as_i16());
            for key in chunk {
                query = query.bind(key.as_str());
            }
            let rows: Vec<RowTuple> = query.fetch_all(&self.pool).await?;
            records.extend(decode(rows)?);
        }
        records.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(records)
    }

    async fn load_map(
        &self,
        map_name: Option<&str>,
        partitions: &[u32],
        after: Option<&MapCursor>,
        page_size: u32,
    ) -> Result<Vec<Record>, StorageError> {
        let t = &*self.table;
        let mut sql = format!("SELECT {COLUMNS} FROM {t} WHERE (map_name, kind, key) > (?, ?, ?)");
        if map_name.is_some() {
            sql.push_str(" AND map_name = ?");
        }
        if !partitions.is_empty() {
            sql.push_str(" AND \"partition\" IN (");
            for i in 0..partitions.len() {
                sql.push_str(if i == 0 { "?" } else { ",?" });
            }
            sql.push(')');
        }
        sql.push_str(" ORDER BY map_name, kind, key LIMIT ?");
        // ("", i16::MIN, "") sorts before every row under the BINARY collation, so the
        // first page needs no separate statement.
        let (cursor_map, cursor_kind, cursor_key) = match after {
            Some(c) => (c.map_name.as_str(), c.kind.as_i16(), c.key.as_str()),
            None => ("", i16::MIN, ""),
        };
        let mut query = sqlx::query_as(AssertSqlSafe(sql))
            .bind(cursor_map)
            .bind(cursor_kind)
            .bind(cursor_key);
        if let Some(map) = map_name {
            query = query.bind(map);
        }
        for p in partitions {
            query = query.bind(i64::from(*p));
        }
        let rows: Vec<RowTuple> = query
            .bind(i64::from(page_size))
            .fetch_all(&self.pool)
            .await?;
        decode(rows)
    }

    async fn list_maps(&self) -> Result<Vec<MapCount>, StorageError> {
        let t = &*self.table;
        let sql = format!(
            "SELECT map_name, kind, COUNT(*) FROM {t} GROUP BY map_name, kind ORDER BY map_name, kind"
        );
        let rows: Vec<(String, i16, i64)> = sqlx::query_as(AssertSqlSafe(sql))
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
        let t = &*self.table;
        let sql = format!("DELETE FROM {t} WHERE expires_at > 0 AND expires_at <= ?");
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    fn backend_name(&self) -> &'static str {
        "sqlite"
    }
}

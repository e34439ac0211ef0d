//! Batch write throughput of the durable stores (rows per second), printed as a
//! Markdown table.
//!
//! Run: `cargo bench -p topgun-storage --bench batch_write -j 2`
//! PostgreSQL comes from `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! the benchmark uses a fresh table and drops it afterwards. SQLite runs in a temp folder.
//! `BENCH_ROWS` sets the rows written per batch size (default 20000).

use std::time::{Duration, Instant};
use topgun_proto::hlc::Timestamp;
use topgun_storage::datastores::{DataStore, PostgresDataStore, SqliteDataStore};
use topgun_storage::model::{Mutation, Record, RecordKind};

const BATCH_SIZES: [usize; 4] = [1, 10, 100, 1000];
/// A typical small MsgPack document.
const VALUE_BYTES: usize = 128;

fn batch(start: usize, size: usize, round: u64) -> Vec<Mutation> {
    (start..start + size)
        .map(|i| {
            let key = format!("key-{i:08}");
            Mutation::Upsert(Record {
                map_name: "bench".into(),
                partition: topgun_proto::partition::partition_of(&key),
                key,
                kind: RecordKind::Lww,
                value: vec![0xa5; VALUE_BYTES],
                timestamp: Timestamp::new(1_700_000_000_000 + round, i as u64, "bench-node"),
                tombstone: false,
                ttl_ms: None,
                expires_at_ms: 0,
            })
        })
        .collect()
}

/// Writes `rows` rows in batches of `size` (sequentially: one batch in flight, as one
/// shard's write-through issues them) and returns rows per second.
async fn measure(store: &dyn DataStore, size: usize, rows: usize, round: u64) -> f64 {
    // Small batches are slow per row; cap their wall time rather than their row count.
    let rows = if size == 1 { rows.min(2_000) } else { rows };
    let batches = rows.div_ceil(size);
    let started = Instant::now();
    for b in 0..batches {
        let written = store.write_batch(batch(b * size, size, round)).await;
        if let Err(err) = written {
            eprintln!("write failed: {err}");
            std::process::exit(1);
        }
    }
    (batches * size) as f64 / started.elapsed().as_secs_f64().max(f64::EPSILON)
}

async fn run(name: &str, store: &dyn DataStore, rows: usize, out: &mut Vec<String>) {
    if let Err(err) = store.initialize().await {
        eprintln!("{name}: initialize failed: {err}");
        std::process::exit(1);
    }
    for (round, size) in BATCH_SIZES.into_iter().enumerate() {
        // Round 2k inserts fresh rows' timestamps; 2k+1 updates the same rows with
        // newer timestamps, exercising the ON CONFLICT path.
        let insert = measure(store, size, rows, 2 * round as u64).await;
        let update = measure(store, size, rows, 2 * round as u64 + 1).await;
        out.push(format!("| {name} | {size} | {insert:.0} | {update:.0} |"));
        eprintln!("{name} batch={size}: insert {insert:.0} rows/s, update {update:.0} rows/s");
        // Start each size on an empty map so the insert column measures inserts.
        let keys: Vec<String> = (0..rows.max(2_000))
            .map(|i| format!("key-{i:08}"))
            .collect();
        let deletes = keys
            .into_iter()
            .map(|key| {
                Mutation::Delete(topgun_storage::model::RecordRef {
                    map_name: "bench".into(),
                    key,
                    kind: RecordKind::Lww,
                    not_newer_than: None,
                })
            })
            .collect();
        if let Err(err) = store.write_batch(deletes).await {
            eprintln!("{name}: cleanup failed: {err}");
            std::process::exit(1);
        }
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; no other flags are understood.
    let rows: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let mut out = vec![
        "| store | batch size | insert rows/s | update rows/s |".to_string(),
        "|---|---:|---:|---:|".to_string(),
    ];

    let pool = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
    {
        Ok(pool) => pool,
        Err(err) => {
            eprintln!("PostgreSQL at {url} is required: {err}");
            std::process::exit(1);
        }
    };
    let table = format!("bench_{}", std::process::id());
    let pg = match PostgresDataStore::new(pool.clone(), Some(table.clone())) {
        Ok(store) => store,
        Err(err) => {
            eprintln!("{err}");
            std::process::exit(1);
        }
    };
    run("postgres", &pg, rows, &mut out).await;
    let drop = sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")));
    if let Err(err) = drop.execute(&pool).await {
        eprintln!("cannot drop {table}: {err}");
    }

    let dir = match tempfile::TempDir::new() {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!("no temp dir: {err}");
            std::process::exit(1);
        }
    };
    match SqliteDataStore::open(dir.path(), None, 2, Duration::from_secs(10)).await {
        Ok(sqlite) => run("sqlite", &sqlite, rows, &mut out).await,
        Err(err) => {
            eprintln!("sqlite: {err}");
            std::process::exit(1);
        }
    }

    println!("{}", out.join("\n"));
}

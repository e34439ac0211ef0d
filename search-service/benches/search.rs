//! Search-service benchmark (plain `main`, no harness):
//!
//! 1. engine only: index 100k small documents, then time one-shot searches; then a
//!    steady stream of small write batches to a map nobody searches (the CPU it costs
//!    and how long the first search afterwards takes);
//! 2. end to end with a real in-process sync shard: the lag from a write's
//!    acknowledgement to the live-search ENTER it causes, and the bulk ingestion rate
//!    through the change feed.
//!
//! Run: `cargo bench -p topgun-search --bench search -j 2`; results go to BENCH.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rmpv::Value;
use tokio::net::TcpListener;
use topgun_proto::grpc::common::{LwwRecord, WriteConcern};
use topgun_proto::grpc::search::search_service_client::SearchServiceClient;
use topgun_proto::grpc::search::{search_event, IndexStatusRequest, SearchRequest};
use topgun_proto::grpc::sync::sync_service_client::SyncServiceClient;
use topgun_proto::grpc::sync::{op, ApplyBatchRequest, Op};
use topgun_proto::hlc::{Hlc, Timestamp};
use topgun_proto::wire::encode_value;
use topgun_search::{DocUpdate, EngineConfig, SearchConfig, SearchEngine, SearchQuery};

const DOCS: usize = 100_000;
const QUERIES: usize = 2_000;
const LAG_SAMPLES: usize = 200;
const FEED_DOCS: usize = 20_000;
/// Steady writes: batches of this many updates...
const STEADY_BATCH: usize = 50;
/// ...this many times...
const STEADY_BATCHES: usize = 1_000;
/// ...this far apart, over this many distinct keys.
const STEADY_SPACING: Duration = Duration::from_millis(2);
const STEADY_KEYS: usize = 20_000;

/// Deterministic pseudo-random numbers (no dependency, same corpus every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % bound
    }
}

/// A vocabulary of pronounceable words; picks are skewed so some words are common.
fn vocabulary() -> Vec<String> {
    let syllables = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "po", "da", "gu",
    ];
    let mut words = Vec::new();
    for a in syllables {
        for b in syllables {
            for c in ["", "n", "r", "s"] {
                words.push(format!("{a}{b}{c}"));
            }
        }
    }
    words
}

fn pick<'a>(rng: &mut Lcg, words: &'a [String]) -> &'a str {
    // The minimum of two uniform picks favours low indexes: a crude Zipf.
    let i = rng.next(words.len()).min(rng.next(words.len()));
    &words[i]
}

fn sentence(rng: &mut Lcg, words: &[String], min: usize, max: usize) -> String {
    let n = min + rng.next(max - min + 1);
    (0..n)
        .map(|_| pick(rng, words))
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`;
/// `None` where that file does not exist. Resolution: one clock tick (10 ms).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14, 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn engine_bench() {
    let words = vocabulary();
    let mut rng = Lcg(42);
    let docs: Vec<DocUpdate> = (0..DOCS)
        .map(|i| {
            let value = Value::Map(vec![
                (
                    Value::from("title"),
                    Value::from(sentence(&mut rng, &words, 2, 6)),
                ),
                (
                    Value::from("body"),
                    Value::from(sentence(&mut rng, &words, 8, 20)),
                ),
                (Value::from("price"), Value::from(i as u64)),
            ]);
            DocUpdate::Lww {
                map: "products".into(),
                key: format!("p{i:06}"),
                timestamp: Timestamp::new(1, 0, "bench"),
                value: Some(encode_value(&value)),
            }
        })
        .collect();

    let engine = SearchEngine::start(EngineConfig::default()).expect("engine");
    let started = Instant::now();
    for chunk in docs.chunks(1_000) {
        engine.apply(chunk.to_vec()).await.expect("apply");
    }
    // The engine counts a document once the indexer has it (buffered or indexed).
    while engine.stats().documents < DOCS as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let applied = started.elapsed();
    engine.flush().await.expect("flush");
    let elapsed = started.elapsed();
    let stats = engine.stats();
    assert_eq!(stats.documents, DOCS as u64);
    println!(
        "indexing: {DOCS} docs in {:.2} s = {:.0} docs/s ({} commits; {:.2} s until the indexer had them all, then {:.2} s for the flush)",
        elapsed.as_secs_f64(),
        DOCS as f64 / elapsed.as_secs_f64(),
        stats.commits,
        applied.as_secs_f64(),
        (elapsed - applied).as_secs_f64()
    );

    let mut latencies = Vec::with_capacity(QUERIES);
    let mut hits = 0usize;
    for _ in 0..QUERIES {
        let terms = 1 + rng.next(3);
        let query = (0..terms)
            .map(|_| pick(&mut rng, &words))
            .collect::<Vec<_>>()
            .join(" ");
        let started = Instant::now();
        let results = engine
            .search(SearchQuery::new("products", query))
            .await
            .expect("search");
        latencies.push(started.elapsed());
        hits += results.len();
    }
    latencies.sort();
    println!(
        "search (limit 10, 1-3 terms, {QUERIES} queries over {DOCS} docs): p50 {} p99 {} max {} (avg {:.1} hits)",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies[latencies.len() - 1]),
        hits as f64 / QUERIES as f64
    );
    engine.shutdown().await;
}

/// A steady stream of small batches to a map nobody searches: the process CPU the
/// engine spends on it, then the latency of the first search of that map.
async fn steady_writes_bench() {
    let words = vocabulary();
    let mut rng = Lcg(99);
    let batches: Vec<Vec<DocUpdate>> = (0..STEADY_BATCHES)
        .map(|b| {
            (0..STEADY_BATCH)
                .map(|_| {
                    let text = sentence(&mut rng, &words, 8, 20);
                    DocUpdate::Lww {
                        map: "quiet".into(),
                        key: format!("q{:05}", rng.next(STEADY_KEYS)),
                        timestamp: Timestamp::new(b as u64 + 1, 0, "bench"),
                        value: Some(encode_value(&Value::Map(vec![(
                            Value::from("text"),
                            Value::from(text),
                        )]))),
                    }
                })
                .collect()
        })
        .collect();
    let engine = SearchEngine::start(EngineConfig::default()).expect("engine");
    let cpu_before = process_cpu();
    let started = Instant::now();
    for batch in batches {
        engine.apply(batch).await.expect("apply");
        tokio::time::sleep(STEADY_SPACING).await;
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let commits = engine.stats().commits;
    let searched = Instant::now();
    let hits = engine
        .search(SearchQuery::new("quiet", pick(&mut rng, &words)))
        .await
        .expect("search");
    let first_search = searched.elapsed();
    println!(
        "steady writes to an unsearched map ({STEADY_BATCHES} batches of {STEADY_BATCH}, {} ms apart, {STEADY_KEYS} keys): {:.2} s, process CPU {} ({:.0}% of one core), {commits} commits; first search then {} ({} hits)",
        STEADY_SPACING.as_millis(),
        elapsed.as_secs_f64(),
        cpu.map_or("n/a".to_string(), ms),
        cpu.map_or(0.0, |c| c.as_secs_f64() / elapsed.as_secs_f64() * 100.0),
        ms(first_search),
        hits.len()
    );
    engine.shutdown().await;
}

fn put(clock: &mut Hlc, map: &str, key: String, text: String) -> Op {
    Op {
        op_id: String::new(),
        map_name: map.into(),
        key,
        kind: Some(op::Kind::LwwPut(LwwRecord {
            value: encode_value(&Value::Map(vec![(Value::from("text"), Value::from(text))])),
            timestamp: Some((&clock.now()).into()),
            ttl_ms: None,
        })),
    }
}

/// Writes [`LAG_SAMPLES`] matching records to `map`, `spacing` apart, and returns for
/// each the time from the write's acknowledgement to its ENTER on a live search, sorted.
async fn live_lag(
    sync: &mut SyncServiceClient<tonic::transport::Channel>,
    search: &mut SearchServiceClient<tonic::transport::Channel>,
    clock: &mut Hlc,
    map: &str,
    spacing: Duration,
) -> Vec<Duration> {
    let request = SearchRequest {
        map_name: map.into(),
        query: "probe".into(),
        limit: 10,
        min_score: None,
    };
    let mut live = search
        .subscribe_search(request)
        .await
        .expect("subscribe")
        .into_inner();
    let _initial = live.next().await.expect("initial").expect("ok");
    // Events are read concurrently so a batch of them is timed on arrival.
    let reader = tokio::spawn(async move {
        let mut arrivals = HashMap::new();
        while arrivals.len() < LAG_SAMPLES {
            let event = tokio::time::timeout(Duration::from_secs(10), live.next())
                .await
                .expect("event in time")
                .expect("open")
                .expect("ok");
            if let Some(search_event::Kind::Change(change)) = event.kind {
                arrivals.insert(change.key, Instant::now());
            }
        }
        arrivals
    });
    let mut acks = HashMap::new();
    for i in 0..LAG_SAMPLES {
        let op = put(clock, map, format!("k{i}"), format!("probe number {i}"));
        sync.apply_batch(ApplyBatchRequest {
            ops: vec![op],
            write_concern: WriteConcern::Applied as i32,
            origin: None,
        })
        .await
        .expect("write");
        acks.insert(format!("k{i}"), Instant::now());
        tokio::time::sleep(spacing).await;
    }
    let arrivals = reader.await.expect("reader");
    let mut lags: Vec<Duration> = acks
        .iter()
        .map(|(key, acked)| arrivals[key].saturating_duration_since(*acked))
        .collect();
    lags.sort();
    lags
}

async fn end_to_end_bench() {
    let sync_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sync_addr = sync_listener.local_addr().expect("addr");
    tokio::spawn(topgun_sync::serve_with_listener(
        sync_listener,
        topgun_sync::SyncConfig::default(),
        std::future::pending::<()>(),
    ));
    let search_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let search_addr = search_listener.local_addr().expect("addr");
    let config = SearchConfig {
        sync_addrs: vec![format!("http://{sync_addr}")],
        ..SearchConfig::default()
    };
    tokio::spawn(topgun_search::serve_with_listener(
        search_listener,
        config,
        std::future::pending::<()>(),
    ));

    let mut sync = loop {
        if let Ok(client) = SyncServiceClient::connect(format!("http://{sync_addr}")).await {
            break client;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut search = loop {
        if let Ok(client) = SearchServiceClient::connect(format!("http://{search_addr}")).await {
            break client;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut clock = Hlc::new("bench");
    let apply = |ops: Vec<Op>| ApplyBatchRequest {
        ops,
        write_concern: WriteConcern::Applied as i32,
        origin: None,
    };
    // The shard takes writes once loaded.
    while sync
        .apply_batch(apply(vec![put(
            &mut clock,
            "warm",
            "w".into(),
            "up".into(),
        )]))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for (label, spacing) in [
        ("isolated writes, 100 ms apart", 100u64),
        ("steady writes, 2 ms apart", 2),
    ] {
        let map = format!("lag{spacing}");
        let lags = live_lag(
            &mut sync,
            &mut search,
            &mut clock,
            &map,
            Duration::from_millis(spacing),
        )
        .await;
        println!(
            "write ack -> live ENTER ({label}, {LAG_SAMPLES} writes, commit interval 50 ms): p50 {} p99 {} max {}",
            ms(percentile(&lags, 0.50)),
            ms(percentile(&lags, 0.99)),
            ms(lags[lags.len() - 1])
        );
    }

    let words = vocabulary();
    let mut rng = Lcg(7);
    let cpu_before = process_cpu();
    let started = Instant::now();
    for chunk in (0..FEED_DOCS).collect::<Vec<_>>().chunks(500) {
        let ops = chunk
            .iter()
            .map(|i| {
                put(
                    &mut clock,
                    "feed",
                    format!("f{i}"),
                    sentence(&mut rng, &words, 8, 20),
                )
            })
            .collect();
        sync.apply_batch(apply(ops)).await.expect("write");
    }
    let written = started.elapsed();
    loop {
        let status = search
            .index_status(IndexStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        if status.shards.iter().all(|s| s.lag_events == 0)
            && status.documents >= (FEED_DOCS + LAG_SAMPLES + 1) as u64
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let indexed = started.elapsed();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    println!(
        "change feed ingestion: {FEED_DOCS} docs written in {:.2} s ({:.0} docs/s), all indexed after {:.2} s ({:.0} docs/s end to end), process CPU (shard + search) {}",
        written.as_secs_f64(),
        FEED_DOCS as f64 / written.as_secs_f64(),
        indexed.as_secs_f64(),
        FEED_DOCS as f64 / indexed.as_secs_f64(),
        cpu.map_or("n/a".to_string(), ms)
    );
    let searched = Instant::now();
    let hits = search
        .search(SearchRequest {
            map_name: "feed".into(),
            query: pick(&mut rng, &words).into(),
            limit: 10,
            min_score: None,
        })
        .await
        .expect("search")
        .into_inner()
        .hits;
    println!(
        "first search of the fed map: {} ({} hits)",
        ms(searched.elapsed()),
        hits.len()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(engine_bench());
    runtime.block_on(steady_writes_bench());
    runtime.block_on(end_to_end_bench());
}

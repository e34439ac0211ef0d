//! `initial-sync`: time and bytes of a fresh client's Merkle walk over a seeded map, then of a
//! client that holds the old state after a small share of keys changed. The second sync must
//! cost in proportion to the change rather than to the map: a server that pushes the records
//! changed since the client's `lastSyncTimestamp` ahead of its root (this suite does) must push
//! exactly the changed keys and leave nothing to walk; one that does not must walk to exactly
//! the leaves that hold a changed key.

use super::seed::seed;
use super::{padded_value, Ctx};
use crate::cli::InitialSyncArgs;
use crate::conn::{Conn, Traffic};
use crate::decode::ServerMsg;
use crate::encode;
use crate::error::BenchError;
use crate::failures::{Failure, FailureKind, FailureTally};
use crate::merkle::{leaf_path, Replica, SyncWalk};
use crate::report::Report;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// One complete walk.
#[derive(Debug)]
pub struct SyncRun {
    /// From SYNC_INIT to the last answer.
    pub elapsed: Duration,
    /// Bytes and frames in both directions.
    pub traffic: Traffic,
    /// What the walk requested and received.
    pub walk: SyncWalk,
    /// Root the server announced.
    pub server_root: u32,
    /// Server HLC millis from SYNC_RESP_ROOT (the next `lastSyncTimestamp`).
    pub server_millis: u64,
    /// What went wrong.
    pub failures: FailureTally,
}

/// Runs SYNC_INIT and the whole walk on `conn`, merging into `replica`.
pub async fn sync_once(
    conn: &mut Conn,
    map_name: &str,
    replica: &mut Replica,
    last_sync: u64,
    timeout: Duration,
) -> Result<SyncRun, BenchError> {
    let before = conn.traffic();
    let start = Instant::now();
    let mut failures = FailureTally::default();
    let mut walk = SyncWalk::default();
    conn.send(&encode::sync_init(map_name, last_sync)).await?;
    let (server_root, server_millis) = loop {
        match conn.recv_timeout(timeout).await? {
            Some(ServerMsg::SyncRespRoot {
                map_name: m,
                root_hash,
                server_millis,
            }) if m == map_name => {
                break (root_hash, server_millis.unwrap_or(0));
            }
            Some(ServerMsg::SyncRespLeaf {
                map_name: m,
                records,
                bytes,
                ..
            }) if m == map_name => walk.on_pushed(replica, &records, bytes),
            Some(msg) => {
                if let Some(f) = sync_failure(&msg) {
                    failures.add(&f);
                    return Ok(SyncRun {
                        elapsed: start.elapsed(),
                        traffic: conn.traffic().since(&before),
                        walk,
                        server_root: 0,
                        server_millis: 0,
                        failures,
                    });
                }
            }
            None => {
                return Err(BenchError::Timeout(
                    timeout,
                    format!("SYNC_RESP_ROOT for {map_name}"),
                ))
            }
        }
    };
    for path in walk.start(replica, server_root) {
        conn.send(&encode::merkle_req_bucket(map_name, &path))
            .await?;
    }
    while !walk.is_complete() {
        let Some(msg) = conn.recv_timeout(timeout).await? else {
            let open = walk.unresolved(replica);
            let sample: Vec<String> = open
                .iter()
                .take(5)
                .map(|(p, want, have)| format!("{p:?} server {want} local {have}"))
                .collect();
            failures.add(&Failure::new(
                FailureKind::NoResponse,
                format!(
                    "{} Merkle paths unresolved after {timeout:?}: {}",
                    open.len(),
                    sample.join(", ")
                ),
            ));
            break;
        };
        match msg {
            ServerMsg::SyncRespBuckets {
                map_name: m,
                path,
                buckets,
            } if m == map_name => {
                for next in walk.on_buckets(replica, &path, &buckets) {
                    conn.send(&encode::merkle_req_bucket(map_name, &next))
                        .await?;
                }
            }
            ServerMsg::SyncRespLeaf {
                map_name: m,
                path,
                records,
                bytes,
            } if m == map_name => walk.on_leaf(replica, &path, &records, bytes),
            other => {
                if let Some(f) = sync_failure(&other) {
                    failures.add(&f);
                    break;
                }
            }
        }
    }
    let elapsed = start.elapsed();
    if walk.is_complete() && replica.tree().root() != server_root {
        failures.add(&mismatch(format!(
            "local root {} differs from the server root {server_root} after the walk",
            replica.tree().root()
        )));
    }
    Ok(SyncRun {
        elapsed,
        traffic: conn.traffic().since(&before),
        walk,
        server_root,
        server_millis,
        failures,
    })
}

/// A result that contradicts what the server holds or what the scenario changed.
fn mismatch(what: String) -> Failure {
    Failure::new(FailureKind::SyncMismatch, what)
}

fn sync_failure(msg: &ServerMsg) -> Option<Failure> {
    match msg {
        ServerMsg::Error { code, message } => Some(Failure::new(
            FailureKind::ProtocolError { code: *code },
            message.clone(),
        )),
        ServerMsg::SyncResetRequired { reason, .. } => Some(Failure::new(
            FailureKind::Unexpected,
            format!("SYNC_RESET_REQUIRED: {reason}"),
        )),
        _ => None,
    }
}

/// Keys changed for the delta: evenly spread, `percent` of `records`, at least one.
pub fn changed_indices(records: u64, percent: f64) -> Vec<u64> {
    let count = ((records as f64 * percent / 100.0).ceil() as u64).clamp(1, records);
    let step = (records / count).max(1);
    (0..count).map(|i| i * step).collect()
}

fn key(i: u64) -> String {
    format!("rec-{i:07}")
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &InitialSyncArgs) -> Result<Report, BenchError> {
    if args.records == 0 || !(args.change_percent > 0.0 && args.change_percent <= 100.0) {
        return Err(BenchError::InvalidOption(
            "--records must be at least 1 and --change-percent in (0, 100]".into(),
        ));
    }
    let map_name = ctx.map_name(&args.map, "sync");
    let entries = (0..args.records)
        .map(|i| (key(i), padded_value(i, args.value_bytes)))
        .collect();
    let seeded = seed(
        ctx,
        &map_name,
        entries,
        args.seed_batch,
        args.seed_connections,
        "seed",
    )
    .await?;
    let mut failures = FailureTally::default();

    // 1. A fresh client walks the whole tree.
    let mut replica = Replica::default();
    let mut conn = ctx.connect().await?;
    let full = sync_once(&mut conn, &map_name, &mut replica, 0, ctx.response_timeout).await?;
    conn.close().await;
    failures.merge(&full.failures);
    if replica.len() as u64 != args.records {
        failures.add(&mismatch(format!(
            "fresh client holds {} records, {} were written",
            replica.len(),
            args.records
        )));
    }

    // 2. Change a share of the keys. The pause guarantees the new timestamps are in a later
    //    millisecond than every seeded one, so they win the LWW comparison.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let changed = changed_indices(args.records, args.change_percent);
    let touched: BTreeSet<String> = changed.iter().map(|&i| leaf_path(&key(i))).collect();
    let changes = changed
        .iter()
        .map(|&i| (key(i), padded_value(i + args.records, args.value_bytes)))
        .collect();
    seed(ctx, &map_name, changes, args.seed_batch, 1, "change").await?;

    // 3. The client that holds the old state syncs again.
    let mut conn = ctx.connect().await?;
    let delta = sync_once(
        &mut conn,
        &map_name,
        &mut replica,
        full.server_millis,
        ctx.response_timeout,
    )
    .await?;
    failures.merge(&delta.failures);
    if delta.walk.records_pushed > 0 {
        if delta.walk.records_pushed != changed.len() as u64 {
            failures.add(&mismatch(format!(
                "the server pushed {} records, {} keys were changed",
                delta.walk.records_pushed,
                changed.len()
            )));
        }
        if delta.walk.requests != 0 {
            failures.add(&mismatch(format!(
                "after the push the walk still made {} requests",
                delta.walk.requests
            )));
        }
    } else if delta.walk.leaves_fetched != touched {
        let extra = delta.walk.leaves_fetched.difference(&touched).count();
        let missed = touched.difference(&delta.walk.leaves_fetched).count();
        failures.add(&mismatch(format!(
            "delta walk fetched {} leaves, {} hold changed keys ({extra} extra, {missed} missed)",
            delta.walk.leaves_fetched.len(),
            touched.len()
        )));
    }
    let delta_changed = delta.walk.records_changed + delta.walk.pushed_changed;
    if delta_changed != changed.len() as u64 {
        failures.add(&mismatch(format!(
            "delta sync changed {delta_changed} records, {} keys were changed",
            changed.len()
        )));
    }

    // 4. Nothing changed since: equal roots, no request at all.
    let again = sync_once(
        &mut conn,
        &map_name,
        &mut replica,
        delta.server_millis,
        ctx.response_timeout,
    )
    .await?;
    conn.close().await;
    failures.merge(&again.failures);
    if again.walk.requests != 0 {
        failures.add(&mismatch(format!(
            "an up-to-date client made {} bucket requests",
            again.walk.requests
        )));
    }

    let mut report = Report::new("initial-sync", &ctx.connect.url);
    report.duration_secs = (full.elapsed + delta.elapsed + again.elapsed).as_secs_f64();
    report
        .param("records", args.records)
        .param("change_percent", args.change_percent)
        .param("value_bytes", args.value_bytes)
        .param("seed_batch", args.seed_batch);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    report
        .metric(
            "seed write rate",
            seeded.ops as f64 / super::secs(seeded.elapsed),
            "ops/s",
        )
        .metric("full sync time", ms(full.elapsed), "ms")
        .metric(
            "full sync bytes received",
            full.traffic.bytes_received as f64,
            "bytes",
        )
        .metric(
            "full sync bytes sent",
            full.traffic.bytes_sent as f64,
            "bytes",
        )
        .metric("full sync requests", full.walk.requests as f64, "requests")
        .metric(
            "full sync time per request",
            ms(full.elapsed) / full.walk.requests.max(1) as f64,
            "ms",
        )
        .metric(
            "full sync leaves fetched",
            full.walk.leaves_fetched.len() as f64,
            "leaves",
        )
        .metric(
            "full sync records received",
            full.walk.records_received as f64,
            "records",
        )
        .metric("keys changed", changed.len() as f64, "keys")
        .metric(
            "leaves holding changed keys",
            touched.len() as f64,
            "leaves",
        )
        .metric("delta sync time", ms(delta.elapsed), "ms")
        .metric(
            "delta sync bytes received",
            delta.traffic.bytes_received as f64,
            "bytes",
        )
        .metric(
            "delta sync bytes sent",
            delta.traffic.bytes_sent as f64,
            "bytes",
        )
        .metric(
            "delta sync requests",
            delta.walk.requests as f64,
            "requests",
        )
        .metric(
            "delta sync records pushed",
            delta.walk.records_pushed as f64,
            "records",
        )
        .metric(
            "delta sync leaves fetched",
            delta.walk.leaves_fetched.len() as f64,
            "leaves",
        )
        .metric(
            "delta sync records received",
            delta.walk.records_received as f64,
            "records",
        )
        .metric(
            "delta/full bytes",
            delta.traffic.total_bytes() as f64 / full.traffic.total_bytes().max(1) as f64,
            "ratio",
        )
        .metric(
            "delta/full leaves",
            delta.walk.leaves_fetched.len() as f64 / full.walk.leaves_fetched.len().max(1) as f64,
            "ratio",
        )
        .metric(
            "delta bytes per changed key",
            delta.traffic.total_bytes() as f64 / changed.len() as f64,
            "bytes",
        )
        .metric("up-to-date resync time", ms(again.elapsed), "ms")
        .metric(
            "up-to-date resync bytes",
            again.traffic.total_bytes() as f64,
            "bytes",
        );
    report.set_failures(&failures);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_percent_of_ten_thousand_is_a_hundred_spread_keys() {
        let c = changed_indices(10_000, 1.0);
        assert_eq!(c.len(), 100);
        assert_eq!(c[1] - c[0], 100);
        assert_eq!(*c.last().expect("non-empty"), 9_900);
    }

    #[test]
    fn tiny_maps_still_change_one_key_and_never_more_than_all() {
        assert_eq!(changed_indices(10, 1.0), vec![0]);
        assert_eq!(changed_indices(3, 100.0), vec![0, 1, 2]);
    }
}

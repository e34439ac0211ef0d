//! `search`: concurrent one-shot SEARCH requests against a seeded map. A SEARCH_RESP with
//! `error` (e.g. no search service configured) is a failure, never a result.

use super::seed::seed;
use super::{document_value, secs, Ctx};
use crate::cli::SearchArgs;
use crate::conn::Conn;
use crate::decode::ServerMsg;
use crate::encode;
use crate::error::BenchError;
use crate::failures::{Failure, FailureKind, FailureTally};
use crate::latency::LatencyRecorder;
use crate::report::Report;
use std::time::{Duration, Instant};

/// Words documents are made of and queries ask for.
pub const VOCABULARY: [&str; 24] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray",
];

/// The outcome of one SEARCH.
#[derive(Debug, PartialEq)]
pub enum SearchOutcome {
    /// SEARCH_RESP without error, with this many results.
    Results(usize),
    /// Anything else, as a counted failure.
    Failed(Failure),
}

/// Sends one SEARCH and waits for the SEARCH_RESP with the same request id.
pub async fn search_once(
    conn: &mut Conn,
    request_id: &str,
    map_name: &str,
    query: &str,
    limit: u32,
    timeout: Duration,
) -> Result<SearchOutcome, BenchError> {
    conn.send(&encode::search(request_id, map_name, query, limit))
        .await?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match conn.recv_timeout(left).await {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                return Ok(SearchOutcome::Failed(Failure::new(
                    FailureKind::NoResponse,
                    format!("no SEARCH_RESP for {request_id} within {timeout:?}"),
                )))
            }
            Err(BenchError::Disconnected(why)) => {
                return Ok(SearchOutcome::Failed(Failure::new(
                    FailureKind::Disconnected,
                    why,
                )))
            }
            Err(e) => {
                return Ok(SearchOutcome::Failed(Failure::new(
                    FailureKind::Unexpected,
                    e.to_string(),
                )))
            }
        };
        if let Some(outcome) = classify(&msg, request_id) {
            return Ok(outcome);
        }
    }
}

/// What `msg` means for the search `request_id`; `None` when it is about something else.
pub fn classify(msg: &ServerMsg, request_id: &str) -> Option<SearchOutcome> {
    match msg {
        ServerMsg::SearchResp {
            request_id: r,
            error: Some(error),
            ..
        } if r == request_id => Some(SearchOutcome::Failed(Failure::new(
            FailureKind::SearchError,
            error.clone(),
        ))),
        ServerMsg::SearchResp {
            request_id: r,
            results,
            error: None,
        } if r == request_id => Some(SearchOutcome::Results(*results)),
        // Answers come in request order and only one search is outstanding per connection.
        ServerMsg::Error { code, message } => Some(SearchOutcome::Failed(Failure::new(
            FailureKind::ProtocolError { code: *code },
            message.clone(),
        ))),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Totals {
    sent: u64,
    ok: u64,
    results: u64,
    empty: u64,
    latency: LatencyRecorder,
    failures: FailureTally,
}

impl Totals {
    fn add(&mut self, outcome: SearchOutcome, latency: Duration) {
        self.sent += 1;
        match outcome {
            SearchOutcome::Results(n) => {
                self.ok += 1;
                self.results += n as u64;
                if n == 0 {
                    self.empty += 1;
                }
                self.latency.record(latency);
            }
            SearchOutcome::Failed(f) => self.failures.add(&f),
        }
    }

    fn merge(&mut self, o: &Totals) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.results += o.results;
        self.empty += o.empty;
        self.latency.merge(&o.latency);
        self.failures.merge(&o.failures);
    }
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx, args: &SearchArgs) -> Result<Report, BenchError> {
    if args.connections == 0 || args.records == 0 {
        return Err(BenchError::InvalidOption(
            "--connections and --records must be at least 1".into(),
        ));
    }
    let map_name = ctx.map_name(&args.map, "search");
    let docs = (0..args.records)
        .map(|i| (format!("doc-{i}"), document_value(i, &VOCABULARY)))
        .collect();
    seed(ctx, &map_name, docs, 500, 2, "seed").await?;

    // The first search may build the index from storage; measured on its own.
    let mut probe = ctx.connect().await?;
    let t0 = Instant::now();
    let first = search_once(
        &mut probe,
        &format!("bench-{}-probe", ctx.run_id),
        &map_name,
        VOCABULARY[0],
        args.limit,
        ctx.response_timeout,
    )
    .await?;
    let first_latency = t0.elapsed();
    probe.close().await;
    let mut totals = Totals::default();
    let first_results = match &first {
        SearchOutcome::Results(n) => *n,
        SearchOutcome::Failed(_) => 0,
    };
    totals.add(first, first_latency);

    let conns = ctx.connect_many(args.connections).await?;
    let start = Instant::now();
    let deadline = start + ctx.duration;
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (map_name, run_id, limit, timeout) = (
            map_name.clone(),
            ctx.run_id.clone(),
            args.limit,
            ctx.response_timeout,
        );
        let interval = Duration::from_millis(args.interval_ms);
        tasks.push(tokio::spawn(async move {
            let mut t = Totals::default();
            let mut n = 0usize;
            while Instant::now() < deadline {
                n += 1;
                let query = VOCABULARY[(i * 7 + n) % VOCABULARY.len()];
                let sent = Instant::now();
                let outcome = search_once(&mut conn, &format!("bench-{run_id}-s{i}-{n}"), &map_name, query, limit, timeout).await?;
                let gone = matches!(&outcome, SearchOutcome::Failed(f) if f.kind == FailureKind::Disconnected);
                t.add(outcome, sent.elapsed());
                if gone {
                    return Ok(t);
                }
                if !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
            }
            conn.close().await;
            Ok::<Totals, BenchError>(t)
        }));
    }
    let mut load = Totals::default();
    for task in tasks {
        load.merge(
            &task
                .await
                .map_err(|e| BenchError::Setup(format!("search task: {e}")))??,
        );
    }
    let elapsed = start.elapsed();
    totals.merge(&load);

    let mut report = Report::new("search", &ctx.connect.url);
    report.duration_secs = elapsed.as_secs_f64();
    report
        .param("connections", args.connections)
        .param("records", args.records)
        .param("limit", args.limit)
        .param("interval_ms", args.interval_ms)
        .param("duration_s", ctx.duration.as_secs());
    report
        .metric(
            "first search (may build the index)",
            first_latency.as_secs_f64() * 1000.0,
            "ms",
        )
        .metric("first search results", first_results as f64, "results")
        .metric(
            "searches answered/s",
            load.ok as f64 / secs(elapsed),
            "searches/s",
        )
        .metric("searches sent", totals.sent as f64, "searches")
        .metric("searches answered", totals.ok as f64, "searches")
        .metric(
            "mean results per answer",
            if totals.ok == 0 {
                0.0
            } else {
                totals.results as f64 / totals.ok as f64
            },
            "results",
        )
        .metric("answers with no result", totals.empty as f64, "searches");
    if totals.ok > 0 && totals.results == 0 {
        report.notes.push(format!(
            "every answer was empty although {} documents contain the queried words",
            args.records
        ));
    }
    report
        .latencies
        .push(load.latency.summary("SEARCH → SEARCH_RESP"));
    report.set_failures(&totals.failures);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_resp_with_error_is_a_failure_not_a_result() {
        let msg = ServerMsg::SearchResp {
            request_id: "r1".into(),
            results: 0,
            error: Some("not implemented: search service not configured".into()),
        };
        let Some(SearchOutcome::Failed(f)) = classify(&msg, "r1") else {
            panic!("not a failure")
        };
        assert_eq!(f.kind, FailureKind::SearchError);
        assert!(f.detail.contains("not configured"));
    }

    #[test]
    fn results_are_matched_by_request_id() {
        let ok = ServerMsg::SearchResp {
            request_id: "r2".into(),
            results: 4,
            error: None,
        };
        assert_eq!(classify(&ok, "r2"), Some(SearchOutcome::Results(4)));
        assert_eq!(classify(&ok, "r1"), None, "a stale answer is not ours");
        let err = ServerMsg::Error {
            code: Some(429),
            message: "server overloaded, try again later".into(),
        };
        assert!(matches!(
            classify(&err, "r2"),
            Some(SearchOutcome::Failed(Failure {
                kind: FailureKind::ProtocolError { code: Some(429) },
                ..
            }))
        ));
        assert_eq!(classify(&ServerMsg::ServerEvents { count: 1 }, "r2"), None);
    }

    #[test]
    fn totals_only_time_answered_searches() {
        let mut t = Totals::default();
        t.add(SearchOutcome::Results(3), Duration::from_millis(2));
        t.add(SearchOutcome::Results(0), Duration::from_millis(2));
        t.add(
            SearchOutcome::Failed(Failure::new(FailureKind::SearchError, "x")),
            Duration::from_millis(2),
        );
        assert_eq!((t.sent, t.ok, t.results, t.empty), (3, 2, 3, 1));
        assert_eq!(t.latency.count(), 2);
        assert_eq!(t.failures.total(), 1);
    }
}

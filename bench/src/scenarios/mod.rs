//! The scenarios and what they share: connection set-up, batch writing and settling.

pub mod fan_out;
pub mod initial_sync;
pub mod search;
pub mod seed;
pub mod write_ack;
pub mod write_flood;

use crate::cli::{CommonArgs, ScenarioArgs};
use crate::clock::Hlc;
use crate::conn::{Auth, Conn, ConnReader, ConnectOptions};
use crate::encode::{self, map, PutOp};
use crate::error::BenchError;
use crate::failures::{Failure, FailureKind, FailureTally};
use crate::in_flight::{BatchOutcome, InFlight};
use crate::latency::LatencyRecorder;
use crate::report::Report;
use crate::write_concern::WriteConcern;
use rmpv::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After OP_REJECTED or ERROR, how long to wait for the batch's trailing OP_ACK.
pub const FAILURE_GRACE: Duration = Duration::from_secs(1);

/// What every scenario needs to reach the server.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Where and how to connect.
    pub connect: ConnectOptions,
    /// Length of the measured phase.
    pub duration: Duration,
    /// Limit for any single answer.
    pub response_timeout: Duration,
    /// Connections opened at the same time.
    pub connect_parallelism: usize,
    /// Distinguishes maps, node ids and query ids of this run from earlier runs.
    pub run_id: String,
}

impl Ctx {
    /// Builds the context from the command line, minting a token unless one was given.
    pub fn from_args(common: &CommonArgs) -> Result<Ctx, BenchError> {
        let auth = if common.no_auth {
            Auth::None
        } else if let Some(token) = &common.token {
            Auth::Token(token.clone())
        } else {
            Auth::Token(crate::token::mint(
                &common.jwt_secret,
                "topgun-bench",
                Duration::from_secs(24 * 3600),
            )?)
        };
        if common.connect_parallelism == 0 {
            return Err(BenchError::InvalidOption(
                "--connect-parallelism must be at least 1".into(),
            ));
        }
        Ok(Ctx {
            connect: ConnectOptions {
                url: common.url.clone(),
                auth,
                handshake_timeout: Duration::from_millis(common.response_timeout_ms),
            },
            duration: Duration::from_secs(common.duration),
            response_timeout: Duration::from_millis(common.response_timeout_ms),
            connect_parallelism: common.connect_parallelism,
            run_id: format!("{:x}", crate::clock::wall_millis()),
        })
    }

    /// A node id for HLC timestamps, unique per run, role and connection (no `:` allowed).
    pub fn node_id(&self, role: &str, i: usize) -> String {
        format!("bench-{}-{role}-{i}", self.run_id)
    }

    /// A map name unique to this run unless the user chose one.
    pub fn map_name(&self, chosen: &Option<String>, scenario: &str) -> String {
        chosen
            .clone()
            .unwrap_or_else(|| format!("bench-{scenario}-{}", self.run_id))
    }

    /// One authenticated connection.
    pub async fn connect(&self) -> Result<Conn, BenchError> {
        Conn::connect(&self.connect).await
    }

    /// `n` authenticated connections, opened `connect_parallelism` at a time; any failure
    /// aborts the scenario, since a partial set would distort every number.
    pub async fn connect_many(&self, n: usize) -> Result<Vec<Conn>, BenchError> {
        let limit = Arc::new(tokio::sync::Semaphore::new(self.connect_parallelism));
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (limit, opts) = (limit.clone(), self.connect.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = limit
                    .acquire_owned()
                    .await
                    .map_err(|e| BenchError::Setup(e.to_string()))?;
                Conn::connect(&opts).await
            }));
        }
        let mut conns = Vec::with_capacity(n);
        for (i, task) in tasks.into_iter().enumerate() {
            let conn = task
                .await
                .map_err(|e| BenchError::Setup(format!("connection task {i}: {e}")))??;
            conns.push(conn);
        }
        Ok(conns)
    }
}

/// Runs the chosen scenario and adds the memory samples of `pids`.
pub async fn run(ctx: &Ctx, scenario: &ScenarioArgs, pids: &[u32]) -> Result<Report, BenchError> {
    let mut report = match scenario {
        ScenarioArgs::WriteAck(a) => write_ack::run(ctx, a).await?,
        ScenarioArgs::WriteFlood(a) => write_flood::run(ctx, a).await?,
        ScenarioArgs::FanOut(a) => fan_out::run(ctx, a).await?,
        ScenarioArgs::InitialSync(a) => initial_sync::run(ctx, a).await?,
        ScenarioArgs::Search(a) => search::run(ctx, a).await?,
    };
    for &pid in pids {
        match crate::rss::sample(pid) {
            Ok(s) => report.rss.push(s),
            Err(e) => report
                .notes
                .push(format!("memory of pid {pid} not available: {e}")),
        }
    }
    Ok(report)
}

/// A value of roughly `pad + 20` bytes: a counter and a string payload.
pub fn padded_value(n: u64, pad: usize) -> Value {
    map(vec![
        ("n", Value::from(n)),
        ("pad", Value::from("x".repeat(pad))),
    ])
}

/// A text document made of eight words of `vocabulary`, chosen deterministically from `n`
/// (a linear congruential sequence, so runs are repeatable without a random source).
pub fn document_value(n: u64, vocabulary: &[&str]) -> Value {
    const MUL: u64 = 6_364_136_223_846_793_005;
    const INC: u64 = 1_442_695_040_888_963_407;
    let mut x = n.wrapping_mul(MUL).wrapping_add(INC);
    let words: Vec<&str> = (0..8)
        .map(|_| {
            x = x.wrapping_mul(MUL).wrapping_add(INC);
            vocabulary[(x >> 33) as usize % vocabulary.len()]
        })
        .collect();
    map(vec![
        ("title", Value::from(format!("document {n} {}", words[0]))),
        ("body", Value::from(words[1..].join(" "))),
    ])
}

/// Builds OP_BATCHes for one connection: increasing op ids and HLC timestamps.
#[derive(Debug)]
pub struct BatchBuilder {
    hlc: Hlc,
    next_id: u64,
    map_name: String,
    write_concern: Option<WriteConcern>,
    write_timeout_ms: Option<u64>,
}

impl BatchBuilder {
    /// A builder for `map_name` with timestamps from a clock named `node_id`.
    pub fn new(node_id: String, map_name: String) -> Self {
        BatchBuilder {
            hlc: Hlc::new(node_id),
            next_id: 1,
            map_name,
            write_concern: None,
            write_timeout_ms: None,
        }
    }

    /// Requests `level` (with `timeout_ms`) for every batch.
    pub fn with_write_concern(
        mut self,
        level: Option<WriteConcern>,
        timeout_ms: Option<u64>,
    ) -> Self {
        self.write_concern = level;
        self.write_timeout_ms = timeout_ms;
        self
    }

    /// The OP_BATCH for `entries` and its id range (first, last).
    pub fn batch(
        &mut self,
        entries: impl IntoIterator<Item = (String, Value)>,
    ) -> (Value, u64, u64) {
        let first = self.next_id;
        let ops: Vec<PutOp> = entries
            .into_iter()
            .map(|(key, value)| {
                let id = self.next_id;
                self.next_id += 1;
                PutOp {
                    id,
                    map_name: self.map_name.clone(),
                    key,
                    value,
                    timestamp: self.hlc.now(),
                }
            })
            .collect();
        (
            encode::op_batch(&ops, self.write_concern, self.write_timeout_ms),
            first,
            self.next_id - 1,
        )
    }
}

/// What settling the in-flight batches of one connection produced.
#[derive(Debug, Default)]
pub struct Settled {
    /// Settled batches.
    pub outcomes: Vec<BatchOutcome>,
    /// Failures belonging to no batch.
    pub unattributed: Vec<Failure>,
    /// Set when the connection is gone.
    pub disconnected: Option<String>,
}

/// Reads until every batch in `tracker` is settled (acknowledged, failed or timed out).
pub async fn settle(reader: &mut ConnReader, tracker: &mut InFlight) -> Settled {
    let mut settled = Settled::default();
    while let Some(deadline) = tracker.next_deadline() {
        let wait = deadline.saturating_duration_since(Instant::now());
        match reader.recv_timeout(wait).await {
            Ok(Some(msg)) => {
                let observed = tracker.observe(&msg, Instant::now());
                settled.outcomes.extend(observed.outcomes);
                settled.unattributed.extend(observed.unattributed);
            }
            Ok(None) => settled.outcomes.extend(tracker.expire(Instant::now())),
            Err(BenchError::Disconnected(why)) => {
                let failure = Failure::new(FailureKind::Disconnected, why.clone());
                settled
                    .outcomes
                    .extend(tracker.abandon(Instant::now(), &failure));
                settled.disconnected = Some(why);
                break;
            }
            // An undecodable frame is the server's fault: count it and keep reading.
            Err(e) => settled
                .unattributed
                .push(Failure::new(FailureKind::Unexpected, e.to_string())),
        }
    }
    settled
}

/// Totals of batches written by one or more connections.
#[derive(Debug, Default, Clone)]
pub struct WriteTotals {
    /// Batches sent.
    pub batches: u64,
    /// Ops sent.
    pub ops_sent: u64,
    /// Ops in batches that succeeded.
    pub ops_acked: u64,
    /// Latency of successful batches.
    pub latency: LatencyRecorder,
    /// Every failure.
    pub failures: FailureTally,
    /// Connections the server closed.
    pub disconnects: u64,
}

impl WriteTotals {
    /// Accounts settled batches and stray failures.
    pub fn add_settled(&mut self, settled: &Settled) {
        for o in &settled.outcomes {
            if o.succeeded() {
                self.ops_acked += o.ops;
                self.latency.record(o.latency);
            }
            for f in &o.failures {
                self.failures.add(f);
            }
        }
        for f in &settled.unattributed {
            self.failures.add(f);
        }
        if settled.disconnected.is_some() {
            self.disconnects += 1;
        }
    }

    /// Adds another connection's totals.
    pub fn merge(&mut self, other: &WriteTotals) {
        self.batches += other.batches;
        self.ops_sent += other.ops_sent;
        self.ops_acked += other.ops_acked;
        self.latency.merge(&other.latency);
        self.failures.merge(&other.failures);
        self.disconnects += other.disconnects;
    }
}

/// Seconds as f64, never zero (rates divide by it).
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::field;

    #[test]
    fn batches_have_consecutive_ids_and_increasing_timestamps() {
        let mut b = BatchBuilder::new("n1".into(), "m".into())
            .with_write_concern(Some(WriteConcern::Persisted), Some(3000));
        let (msg, first, last) = b.batch((0..3).map(|i| (format!("k{i}"), Value::from(i))));
        assert_eq!((first, last), (1, 3));
        let (_, first2, last2) = b.batch([("k".to_string(), Value::Nil)]);
        assert_eq!((first2, last2), (4, 4));
        let payload = field(&msg, "payload").expect("payload");
        assert_eq!(
            field(payload, "writeConcern").and_then(Value::as_str),
            Some("PERSISTED")
        );
        let ops = field(payload, "ops")
            .and_then(Value::as_array)
            .expect("ops");
        let ts: Vec<_> = ops
            .iter()
            .map(|op| {
                crate::decode::timestamp(field(op, "timestamp").expect("timestamp"), "test")
                    .expect("timestamp decodes")
            })
            .collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
        let ids: Vec<_> = ops
            .iter()
            .map(|op| field(op, "id").and_then(Value::as_str).map(str::to_string))
            .collect();
        assert_eq!(
            ids,
            vec![Some("1".into()), Some("2".into()), Some("3".into())]
        );
    }

    #[test]
    fn totals_count_only_clean_batches_as_acked() {
        let mut totals = WriteTotals::default();
        let settled = Settled {
            outcomes: vec![
                BatchOutcome {
                    ops: 10,
                    latency: Duration::from_millis(2),
                    failures: vec![],
                },
                BatchOutcome {
                    ops: 10,
                    latency: Duration::from_millis(2),
                    failures: vec![Failure::new(
                        FailureKind::OpRejected { code: Some(403) },
                        "denied",
                    )],
                },
            ],
            unattributed: vec![Failure::new(FailureKind::UnexpectedAck, "lastId 99")],
            disconnected: Some("code 1000".into()),
        };
        totals.add_settled(&settled);
        assert_eq!(totals.ops_acked, 10);
        assert_eq!(totals.latency.count(), 1);
        assert_eq!(totals.failures.total(), 2);
        assert_eq!(totals.disconnects, 1);
    }

    #[test]
    fn documents_are_repeatable_and_use_the_vocabulary() {
        let vocab = ["alpha", "bravo", "charlie"];
        assert_eq!(document_value(5, &vocab), document_value(5, &vocab));
        assert_ne!(document_value(5, &vocab), document_value(6, &vocab));
        let body = field(&document_value(9, &vocab), "body")
            .and_then(Value::as_str)
            .map(str::to_string)
            .expect("body");
        assert_eq!(body.split(' ').count(), 7);
        assert!(body.split(' ').all(|w| vocab.contains(&w)), "{body}");
    }

    #[test]
    fn value_padding() {
        let v = padded_value(7, 5);
        assert_eq!(field(&v, "pad").and_then(Value::as_str), Some("xxxxx"));
        assert_eq!(field(&v, "n").and_then(Value::as_u64), Some(7));
    }
}

//! Batches awaiting their OP_ACK, and how the server's answers settle them
//! (core.md §3.4, §5.5–5.9).
//!
//! A batch succeeds only through an OP_ACK whose `lastId` is the batch's last op id, with no
//! failed per-op result and the requested write concern reached. OP_REJECTED, ERROR and
//! MERGE_REJECTED mark a batch failed; a compatible server follows them with an OP_ACK so
//! clients stop re-sending, but that OP_ACK never turns a failure into a success.

use crate::decode::{OpResult, ServerMsg};
use crate::failures::{Failure, FailureKind};
use crate::write_concern::WriteConcern;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many given-up batches are remembered for recognising late acks.
const GIVEN_UP_MEMORY: usize = 4096;

/// A batch that was sent.
#[derive(Debug, Clone)]
pub struct SentBatch {
    /// Id of its first op.
    pub first_id: u64,
    /// Id of its last op: what OP_ACK must echo.
    pub last_id: u64,
    /// When it was handed to the socket.
    pub sent_at: Instant,
}

impl SentBatch {
    fn ops(&self) -> u64 {
        self.last_id - self.first_id + 1
    }

    fn contains(&self, id: u64) -> bool {
        (self.first_id..=self.last_id).contains(&id)
    }
}

/// How one batch ended.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    /// Ops in the batch.
    pub ops: u64,
    /// From sending to the settling answer (or to giving up).
    pub latency: Duration,
    /// Empty when the batch succeeded.
    pub failures: Vec<Failure>,
}

impl BatchOutcome {
    /// Acknowledged with nothing wrong.
    pub fn succeeded(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What one server message did.
#[derive(Debug, Default, PartialEq)]
pub struct Observed {
    /// Batches that are now settled.
    pub outcomes: Vec<BatchOutcome>,
    /// Failures that match no batch in flight (still failures of the run).
    pub unattributed: Vec<Failure>,
}

#[derive(Debug)]
struct Pending {
    batch: SentBatch,
    failures: Vec<Failure>,
    /// When the first failure arrived: the trailing OP_ACK is awaited only for a grace period.
    failed_at: Option<Instant>,
    saw_error: bool,
}

/// The batches of one connection that await an answer, oldest first.
#[derive(Debug)]
pub struct InFlight {
    pending: VecDeque<Pending>,
    /// Last op ids of batches already settled as failed without their OP_ACK, so that an ack
    /// arriving after all is recognised (and not counted a second time).
    given_up: VecDeque<u64>,
    requested: Option<WriteConcern>,
    response_timeout: Duration,
    failure_grace: Duration,
}

impl InFlight {
    /// A tracker that requires `requested` (if any) to be reached, gives up on a batch after
    /// `response_timeout` and, once a batch is known to have failed, waits `failure_grace`
    /// for its trailing OP_ACK before settling it.
    pub fn new(
        requested: Option<WriteConcern>,
        response_timeout: Duration,
        failure_grace: Duration,
    ) -> Self {
        InFlight {
            pending: VecDeque::new(),
            given_up: VecDeque::new(),
            requested,
            response_timeout,
            failure_grace,
        }
    }

    /// Registers a batch; call before its frame is sent so the answer cannot overtake it.
    pub fn sent(&mut self, batch: SentBatch) {
        self.pending.push_back(Pending {
            batch,
            failures: Vec::new(),
            failed_at: None,
            saw_error: false,
        });
    }

    /// Takes back the batch ending at `last_id` because it never reached the socket.
    pub fn withdraw(&mut self, last_id: u64) -> bool {
        let before = self.pending.len();
        self.pending.retain(|p| p.batch.last_id != last_id);
        self.pending.len() != before
    }

    fn remember_given_up(&mut self, last_id: u64) {
        if self.given_up.len() == GIVEN_UP_MEMORY {
            self.given_up.pop_front();
        }
        self.given_up.push_back(last_id);
    }

    /// Batches still unsettled.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Nothing in flight.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The earliest moment at which `expire` can settle something.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .iter()
            .map(|p| {
                let timeout = p.batch.sent_at + self.response_timeout;
                p.failed_at
                    .map_or(timeout, |at| timeout.min(at + self.failure_grace))
            })
            .min()
    }

    /// Applies one server message.
    pub fn observe(&mut self, msg: &ServerMsg, now: Instant) -> Observed {
        let mut observed = Observed::default();
        match msg {
            ServerMsg::OpAck {
                last_id,
                achieved_level,
                results,
            } => self.on_ack(
                last_id,
                achieved_level.as_deref(),
                results,
                now,
                &mut observed,
            ),
            ServerMsg::OpRejected {
                op_id,
                reason,
                code,
            } => {
                let failure = Failure::new(
                    FailureKind::OpRejected { code: *code },
                    format!("op {op_id}: {reason}"),
                );
                let target = op_id
                    .parse::<u64>()
                    .ok()
                    .and_then(|id| self.pending.iter_mut().find(|p| p.batch.contains(id)));
                match target {
                    Some(p) => mark(p, failure, now),
                    None => observed.unattributed.push(failure),
                }
            }
            ServerMsg::Error { code, message } => {
                let failure =
                    Failure::new(FailureKind::ProtocolError { code: *code }, message.clone());
                // ERROR names no op. Answers come in request order and a rejected batch gets
                // exactly one ERROR before its OP_REJECTEDs, so it belongs to the oldest batch
                // that has not had one yet.
                match self.pending.iter_mut().find(|p| !p.saw_error) {
                    Some(p) => {
                        p.saw_error = true;
                        mark(p, failure, now);
                    }
                    None => observed.unattributed.push(failure),
                }
            }
            ServerMsg::MergeRejected {
                map_name,
                key,
                reason,
            } => {
                let failure = Failure::new(
                    FailureKind::MergeRejected,
                    format!("{map_name}/{key}: {reason}"),
                );
                match self.pending.front_mut() {
                    Some(p) => mark(p, failure, now),
                    None => observed.unattributed.push(failure),
                }
            }
            _ => {}
        }
        observed
    }

    fn on_ack(
        &mut self,
        last_id: &str,
        achieved: Option<&str>,
        results: &[OpResult],
        now: Instant,
        observed: &mut Observed,
    ) {
        let Ok(n) = last_id.parse::<u64>() else {
            // A non-numeric lastId makes a real client drop every pending op (core.md §5.6).
            observed.unattributed.push(Failure::new(
                FailureKind::UnexpectedAck,
                format!("non-numeric lastId {last_id:?}"),
            ));
            return;
        };
        let Some(pos) = self.pending.iter().position(|p| p.batch.last_id == n) else {
            if self.given_up.contains(&n) {
                // A late answer for a batch already counted as failed.
                return;
            }
            observed.unattributed.push(Failure::new(
                FailureKind::UnexpectedAck,
                format!("lastId {n} is not the last op of a batch in flight"),
            ));
            return;
        };
        // The client treats every op up to lastId as acknowledged, so older batches settle too
        // (with whatever failures they collected).
        let requested = self.requested;
        for mut p in self.pending.drain(..=pos) {
            let acked_here = p.batch.last_id == n;
            for r in results
                .iter()
                .filter(|r| r.op_id.parse::<u64>().is_ok_and(|id| p.batch.contains(id)))
            {
                if !r.success {
                    let text = r.error.clone().unwrap_or_else(|| "success=false".into());
                    p.failures.push(Failure::new(
                        FailureKind::OpResultFailed,
                        format!("op {}: {text}", r.op_id),
                    ));
                }
            }
            if acked_here {
                if let Some(f) = concern_failure(requested, &p.batch, achieved, results) {
                    p.failures.push(f);
                }
            }
            observed.outcomes.push(BatchOutcome {
                ops: p.batch.ops(),
                latency: now - p.batch.sent_at,
                failures: p.failures,
            });
        }
    }

    /// Settles batches whose grace period or response timeout has passed.
    pub fn expire(&mut self, now: Instant) -> Vec<BatchOutcome> {
        let (timeout, grace) = (self.response_timeout, self.failure_grace);
        let mut settled = Vec::new();
        let mut given_up = Vec::new();
        self.pending.retain_mut(|p| {
            let grace_over = p.failed_at.is_some_and(|at| now >= at + grace);
            let timed_out = now >= p.batch.sent_at + timeout;
            if !grace_over && !timed_out {
                return true;
            }
            let mut failures = std::mem::take(&mut p.failures);
            if failures.is_empty() {
                failures.push(Failure::new(
                    FailureKind::NoResponse,
                    format!(
                        "no OP_ACK for ops {}..={} within {timeout:?}",
                        p.batch.first_id, p.batch.last_id
                    ),
                ));
            }
            settled.push(BatchOutcome {
                ops: p.batch.ops(),
                latency: now - p.batch.sent_at,
                failures,
            });
            given_up.push(p.batch.last_id);
            false
        });
        for id in given_up {
            self.remember_given_up(id);
        }
        settled
    }

    /// Settles everything still in flight, e.g. when the connection is gone; batches without a
    /// failure of their own get `reason`.
    pub fn abandon(&mut self, now: Instant, reason: &Failure) -> Vec<BatchOutcome> {
        let pending: Vec<Pending> = self.pending.drain(..).collect();
        pending
            .into_iter()
            .map(|mut p| {
                self.remember_given_up(p.batch.last_id);
                if p.failures.is_empty() {
                    p.failures.push(reason.clone());
                }
                BatchOutcome {
                    ops: p.batch.ops(),
                    latency: now - p.batch.sent_at,
                    failures: p.failures,
                }
            })
            .collect()
    }
}

/// The batch's level is the payload's `achievedLevel`, else the lowest per-op level of its
/// ops; with a write concern requested, an unreported level is a failure too.
fn concern_failure(
    requested: Option<WriteConcern>,
    batch: &SentBatch,
    achieved: Option<&str>,
    results: &[OpResult],
) -> Option<Failure> {
    let requested = requested?;
    let reported = match achieved {
        Some(level) => Some(level.to_string()),
        None => results
            .iter()
            .filter(|r| r.op_id.parse::<u64>().is_ok_and(|id| batch.contains(id)))
            .filter_map(|r| r.achieved_level.clone())
            .min_by_key(|l| WriteConcern::parse(l)),
    };
    let Some(reported) = reported else {
        return Some(Failure::new(
            FailureKind::WriteConcernNotMet,
            format!("requested {requested}, OP_ACK reports no achievedLevel"),
        ));
    };
    match WriteConcern::parse(&reported) {
        Some(level) if level >= requested => None,
        _ => Some(Failure::new(
            FailureKind::WriteConcernNotMet,
            format!("requested {requested}, achieved {reported}"),
        )),
    }
}

fn mark(p: &mut Pending, failure: Failure, now: Instant) {
    p.failures.push(failure);
    p.failed_at.get_or_insert(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);
    const GRACE: Duration = Duration::from_secs(1);

    fn tracker(level: Option<WriteConcern>) -> InFlight {
        InFlight::new(level, TIMEOUT, GRACE)
    }

    fn batch(first: u64, last: u64, at: Instant) -> SentBatch {
        SentBatch {
            first_id: first,
            last_id: last,
            sent_at: at,
        }
    }

    fn ack(last: &str) -> ServerMsg {
        ServerMsg::OpAck {
            last_id: last.into(),
            achieved_level: Some("APPLIED".into()),
            results: vec![],
        }
    }

    #[test]
    fn an_ack_for_the_last_op_settles_the_batch_with_its_latency() {
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 10, t0));
        let got = t.observe(&ack("10"), t0 + Duration::from_millis(7));
        assert_eq!(
            got.outcomes,
            vec![BatchOutcome {
                ops: 10,
                latency: Duration::from_millis(7),
                failures: vec![]
            }]
        );
        assert!(got.unattributed.is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn error_then_rejections_then_ack_is_one_failed_batch() {
        // The sequence core.md §3.4 prescribes for a refused batch.
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 2, t0));
        let now = t0 + Duration::from_millis(3);
        for msg in [
            ServerMsg::Error {
                code: Some(403),
                message: "write access denied for map: secrets".into(),
            },
            ServerMsg::OpRejected {
                op_id: "1".into(),
                reason: "write access denied".into(),
                code: Some(403),
            },
            ServerMsg::OpRejected {
                op_id: "2".into(),
                reason: "write access denied".into(),
                code: Some(403),
            },
        ] {
            assert_eq!(t.observe(&msg, now), Observed::default());
        }
        let got = t.observe(&ack("2"), now);
        assert_eq!(got.outcomes.len(), 1);
        let outcome = &got.outcomes[0];
        assert!(!outcome.succeeded());
        let kinds: Vec<_> = outcome.failures.iter().map(|f| f.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                FailureKind::ProtocolError { code: Some(403) },
                FailureKind::OpRejected { code: Some(403) },
                FailureKind::OpRejected { code: Some(403) }
            ]
        );
    }

    #[test]
    fn an_error_without_a_trailing_ack_fails_the_batch_after_the_grace_period() {
        // What upstream does: ERROR and no OP_ACK.
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 10, t0));
        t.observe(
            &ServerMsg::Error {
                code: Some(429),
                message: "server overloaded, try again later".into(),
            },
            t0,
        );
        assert_eq!(t.next_deadline(), Some(t0 + GRACE));
        assert!(t.expire(t0 + Duration::from_millis(500)).is_empty());
        let settled = t.expire(t0 + GRACE);
        assert_eq!(settled.len(), 1);
        assert_eq!(
            settled[0].failures[0].kind,
            FailureKind::ProtocolError { code: Some(429) }
        );
        assert!(t.is_empty());
    }

    #[test]
    fn errors_go_to_the_oldest_batch_that_has_not_had_one() {
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 5, t0));
        t.sent(batch(6, 10, t0));
        let err = ServerMsg::Error {
            code: Some(500),
            message: "boom".into(),
        };
        t.observe(&err, t0);
        t.observe(&err, t0);
        let third = t.observe(&err, t0);
        assert_eq!(
            third.unattributed.len(),
            1,
            "a third ERROR has no batch left"
        );
        let settled = t.expire(t0 + GRACE);
        assert_eq!(settled.len(), 2);
        assert!(settled.iter().all(|o| o.failures.len() == 1));
    }

    #[test]
    fn a_later_ack_settles_older_batches_as_the_client_would() {
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 5, t0));
        t.sent(batch(6, 10, t0));
        t.sent(batch(11, 15, t0));
        let got = t.observe(&ack("10"), t0);
        assert_eq!(got.outcomes.len(), 2);
        assert!(got.outcomes.iter().all(BatchOutcome::succeeded));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn acks_that_match_no_batch_are_failures() {
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 10, t0));
        let middle = t.observe(&ack("5"), t0);
        assert_eq!(middle.unattributed[0].kind, FailureKind::UnexpectedAck);
        let unknown = t.observe(&ack("unknown"), t0);
        assert_eq!(unknown.unattributed[0].kind, FailureKind::UnexpectedAck);
        assert_eq!(t.len(), 1, "the batch is still waiting for its own ack");
    }

    #[test]
    fn a_rejection_of_an_op_never_sent_is_unattributed() {
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 10, t0));
        let got = t.observe(
            &ServerMsg::OpRejected {
                op_id: "op-x".into(),
                reason: "bad".into(),
                code: None,
            },
            t0,
        );
        assert_eq!(
            got.unattributed[0].kind,
            FailureKind::OpRejected { code: None }
        );
    }

    #[test]
    fn write_concern_must_be_reached() {
        let t0 = Instant::now();
        let mut t = tracker(Some(WriteConcern::Persisted));
        t.sent(batch(1, 2, t0));
        let low = t.observe(&ack("2"), t0);
        assert_eq!(
            low.outcomes[0].failures[0].kind,
            FailureKind::WriteConcernNotMet
        );

        t.sent(batch(3, 4, t0));
        let silent = ServerMsg::OpAck {
            last_id: "4".into(),
            achieved_level: None,
            results: vec![],
        };
        assert_eq!(
            t.observe(&silent, t0).outcomes[0].failures[0].kind,
            FailureKind::WriteConcernNotMet
        );

        t.sent(batch(5, 6, t0));
        let per_op = |id: &str| OpResult {
            op_id: id.into(),
            success: true,
            achieved_level: Some("PERSISTED".into()),
            error: None,
        };
        let ok = ServerMsg::OpAck {
            last_id: "6".into(),
            achieved_level: None,
            results: vec![per_op("5"), per_op("6")],
        };
        assert!(t.observe(&ok, t0).outcomes[0].succeeded());

        t.sent(batch(7, 8, t0));
        let ok = ServerMsg::OpAck {
            last_id: "8".into(),
            achieved_level: Some("PERSISTED".into()),
            results: vec![],
        };
        assert!(t.observe(&ok, t0).outcomes[0].succeeded());
    }

    #[test]
    fn a_failed_op_result_fails_the_batch() {
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 2, t0));
        let msg = ServerMsg::OpAck {
            last_id: "2".into(),
            achieved_level: Some("APPLIED".into()),
            results: vec![OpResult {
                op_id: "1".into(),
                success: false,
                achieved_level: Some("APPLIED".into()),
                error: Some("Timeout: achieved APPLIED, requested PERSISTED".into()),
            }],
        };
        let got = t.observe(&msg, t0);
        assert_eq!(
            got.outcomes[0].failures[0].kind,
            FailureKind::OpResultFailed
        );
        assert!(got.outcomes[0].failures[0].detail.contains("Timeout"));
    }

    #[test]
    fn silence_is_a_no_response_failure_and_abandon_settles_the_rest() {
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 10, t0));
        t.sent(batch(11, 20, t0 + Duration::from_secs(5)));
        assert_eq!(t.next_deadline(), Some(t0 + TIMEOUT));
        let settled = t.expire(t0 + TIMEOUT);
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].failures[0].kind, FailureKind::NoResponse);
        let gone = Failure::new(FailureKind::Disconnected, "closed");
        let rest = t.abandon(t0 + TIMEOUT, &gone);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].failures, vec![gone]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_late_ack_for_a_batch_given_up_is_not_counted_again() {
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 10, t0));
        assert_eq!(t.expire(t0 + TIMEOUT).len(), 1);
        assert_eq!(t.observe(&ack("10"), t0 + TIMEOUT * 2), Observed::default());
        t.sent(batch(11, 20, t0));
        t.abandon(t0, &Failure::new(FailureKind::Disconnected, "gone"));
        assert_eq!(t.observe(&ack("20"), t0), Observed::default());
    }

    #[test]
    fn a_withdrawn_batch_is_no_longer_awaited() {
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 10, t0));
        t.sent(batch(11, 20, t0));
        assert!(t.withdraw(20));
        assert!(!t.withdraw(20));
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.observe(&ack("20"), t0).unattributed[0].kind,
            FailureKind::UnexpectedAck
        );
    }

    #[test]
    fn other_messages_change_nothing() {
        let t0 = Instant::now();
        let mut t = tracker(None);
        t.sent(batch(1, 1, t0));
        assert_eq!(
            t.observe(&ServerMsg::ServerEvents { count: 3 }, t0),
            Observed::default()
        );
        assert_eq!(t.len(), 1);
    }
}

//! Counted failures: every refused, failed, missing or unanswered request is one, grouped by
//! kind so a report can say what happened without listing thousands of lines.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// What went wrong with one request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// OP_REJECTED for one of the batch's ops.
    OpRejected {
        /// Its code, if sent.
        code: Option<i64>,
    },
    /// A protocol ERROR message.
    ProtocolError {
        /// Its code, if sent.
        code: Option<i64>,
    },
    /// MERGE_REJECTED from a conflict resolver.
    MergeRejected,
    /// An OP_ACK result with `success: false`.
    OpResultFailed,
    /// The acknowledged level is below the requested write concern.
    WriteConcernNotMet,
    /// An OP_ACK that matches no batch this connection sent.
    UnexpectedAck,
    /// No answer before the response timeout.
    NoResponse,
    /// The server closed the connection.
    Disconnected,
    /// SEARCH_RESP carried an `error`.
    SearchError,
    /// A subscriber never received the QUERY_UPDATE for a write.
    MissingUpdate,
    /// The Merkle walk did not converge, or fetched more than what changed.
    SyncMismatch,
    /// The server sent something that has no place in the exchange (e.g. SYNC_RESET_REQUIRED).
    Unexpected,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = |c: &Option<i64>| c.map_or_else(|| "no code".to_string(), |c| c.to_string());
        match self {
            FailureKind::OpRejected { code: c } => write!(f, "OP_REJECTED ({})", code(c)),
            FailureKind::ProtocolError { code: c } => write!(f, "ERROR ({})", code(c)),
            FailureKind::MergeRejected => f.write_str("MERGE_REJECTED"),
            FailureKind::OpResultFailed => f.write_str("OP_ACK result success=false"),
            FailureKind::WriteConcernNotMet => f.write_str("write concern not met"),
            FailureKind::UnexpectedAck => f.write_str("unexpected OP_ACK"),
            FailureKind::NoResponse => f.write_str("no response"),
            FailureKind::Disconnected => f.write_str("disconnected"),
            FailureKind::SearchError => f.write_str("SEARCH_RESP error"),
            FailureKind::MissingUpdate => f.write_str("missing QUERY_UPDATE"),
            FailureKind::SyncMismatch => f.write_str("Merkle sync mismatch"),
            FailureKind::Unexpected => f.write_str("unexpected message"),
        }
    }
}

/// One failure with its detail text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The group it belongs to.
    pub kind: FailureKind,
    /// What the server said, or what was missing.
    pub detail: String,
}

impl Failure {
    /// A failure of `kind` described by `detail`.
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Self {
        Failure {
            kind,
            detail: detail.into(),
        }
    }
}

/// One group of a report's failure list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureSummary {
    /// The kind, as text.
    pub kind: String,
    /// How many.
    pub count: u64,
    /// The first one's detail.
    pub example: String,
}

/// Failures counted by kind, keeping the first detail of each kind as an example.
#[derive(Debug, Clone, Default)]
pub struct FailureTally {
    groups: BTreeMap<FailureKind, (u64, String)>,
}

impl FailureTally {
    /// Counts one failure.
    pub fn add(&mut self, failure: &Failure) {
        self.add_n(&failure.kind, 1, &failure.detail);
    }

    /// Counts `n` failures of one kind.
    pub fn add_n(&mut self, kind: &FailureKind, n: u64, example: &str) {
        if n == 0 {
            return;
        }
        let entry = self
            .groups
            .entry(kind.clone())
            .or_insert_with(|| (0, example.to_string()));
        entry.0 += n;
    }

    /// Adds another tally into this one.
    pub fn merge(&mut self, other: &FailureTally) {
        for (kind, (n, example)) in &other.groups {
            self.add_n(kind, *n, example);
        }
    }

    /// Total failures.
    pub fn total(&self) -> u64 {
        self.groups.values().map(|(n, _)| n).sum()
    }

    /// How many of one kind.
    pub fn count(&self, kind: &FailureKind) -> u64 {
        self.groups.get(kind).map_or(0, |(n, _)| *n)
    }

    /// No failure at all.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The groups, for a report.
    pub fn summary(&self) -> Vec<FailureSummary> {
        self.groups
            .iter()
            .map(|(kind, (count, example))| FailureSummary {
                kind: kind.to_string(),
                count: *count,
                example: example.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_kind_and_keeps_the_first_example() {
        let mut a = FailureTally::default();
        a.add(&Failure::new(
            FailureKind::OpRejected { code: Some(403) },
            "first",
        ));
        a.add(&Failure::new(
            FailureKind::OpRejected { code: Some(403) },
            "second",
        ));
        let mut b = FailureTally::default();
        b.add(&Failure::new(
            FailureKind::ProtocolError { code: Some(429) },
            "server overloaded",
        ));
        b.add(&Failure::new(
            FailureKind::OpRejected { code: Some(403) },
            "third",
        ));
        a.merge(&b);
        assert_eq!(a.total(), 4);
        assert_eq!(a.count(&FailureKind::OpRejected { code: Some(403) }), 3);
        let summary = a.summary();
        assert_eq!(summary.len(), 2);
        assert_eq!(
            summary[0],
            FailureSummary {
                kind: "OP_REJECTED (403)".into(),
                count: 3,
                example: "first".into()
            }
        );
        assert_eq!(summary[1].kind, "ERROR (429)");
    }

    #[test]
    fn an_empty_tally_reports_nothing() {
        let mut t = FailureTally::default();
        t.add_n(&FailureKind::NoResponse, 0, "x");
        assert!(t.is_empty());
        assert_eq!(t.total(), 0);
    }
}

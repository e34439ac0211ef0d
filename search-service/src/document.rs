//! What the search service knows about one key of one map, and the rules that make
//! ingestion idempotent: an LWW record older than the one held is ignored, and an
//! OR-Map key is always replaced by its latest full state.

use crate::text::append_text;
use rmpv::Value;
use topgun_proto::hlc::Timestamp;
use topgun_proto::wire::{decode_value, encode_value};

/// One change to the searchable content of a key, as the ingestion produces it.
#[derive(Debug, Clone, PartialEq)]
pub enum DocUpdate {
    /// The LWW record now stored under `key` (`value: None` = tombstone or expired).
    Lww {
        /// Map name.
        map: String,
        /// Record key.
        key: String,
        /// Write time of the record; older than the held one = ignored.
        timestamp: Timestamp,
        /// MsgPack of the live value, `None` when the record is a tombstone.
        value: Option<Vec<u8>>,
    },
    /// The full current state of an OR-Map key: the values of its live entries.
    Or {
        /// Map name.
        map: String,
        /// Record key.
        key: String,
        /// MsgPack of each live entry's value; empty = the key has no entries.
        values: Vec<Vec<u8>>,
    },
}

impl DocUpdate {
    /// The map the update belongs to.
    pub fn map(&self) -> &str {
        match self {
            DocUpdate::Lww { map, .. } | DocUpdate::Or { map, .. } => map,
        }
    }

    /// The key the update belongs to.
    pub fn key(&self) -> &str {
        match self {
            DocUpdate::Lww { key, .. } | DocUpdate::Or { key, .. } => key,
        }
    }
}

/// The LWW side of a key. Tombstones are kept (with `value: None`) so an older put
/// that arrives late cannot resurrect a removed record.
#[derive(Debug, Clone)]
struct LwwPart {
    timestamp: Timestamp,
    value: Option<Vec<u8>>,
    seen_gen: u64,
}

/// The OR-Map side of a key: its entry values encoded as one MsgPack array.
#[derive(Debug, Clone)]
struct OrPart {
    value: Vec<u8>,
    seen_gen: u64,
}

/// Who wrote a document: which shard owns it and which scan generation of that shard
/// last confirmed it (keys a newer scan did not see are swept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Provenance {
    pub shard: usize,
    pub generation: u64,
}

/// Everything held for one key of one map. LWW-Map and OR-Map data of the same name are
/// independent stores upstream; a map name that has both is searched as one index, so
/// a key can carry both sides.
#[derive(Debug, Clone, Default)]
pub(crate) struct DocState {
    shard: Option<usize>,
    lww: Option<LwwPart>,
    or: Option<OrPart>,
    /// Whether tantivy may hold a document for the key: one was added and not deleted
    /// since (committed or not). Kept by the indexer, so a key that never had a
    /// document costs no delete: each delete is a query tantivy runs against every
    /// segment at the next commit.
    in_index: bool,
}

impl DocState {
    /// Applies `update`; returns whether the searchable content (value or text) changed.
    pub fn apply(&mut self, update: &DocUpdate, from: Option<Provenance>) -> bool {
        if let Some(from) = from {
            self.shard = Some(from.shard);
        }
        let generation = from.map_or(0, |f| f.generation);
        match update {
            DocUpdate::Lww {
                timestamp, value, ..
            } => {
                if let Some(held) = &mut self.lww {
                    // Same or older record: a replay after a reconnect or a rescan.
                    if *timestamp <= held.timestamp {
                        held.seen_gen = held.seen_gen.max(generation);
                        return false;
                    }
                }
                let was = self.lww.as_ref().and_then(|p| p.value.clone());
                self.lww = Some(LwwPart {
                    timestamp: timestamp.clone(),
                    value: value.clone(),
                    seen_gen: generation,
                });
                was != *value
            }
            DocUpdate::Or { values, .. } => {
                let was = self.or.take().map(|p| p.value);
                if !values.is_empty() {
                    self.or = Some(OrPart {
                        value: encode_array(values),
                        seen_gen: generation,
                    });
                }
                was != self.or.as_ref().map(|p| p.value.clone())
            }
        }
    }

    /// Drops the parts that scan `generation` of `shard` did not confirm; returns
    /// whether anything searchable went away.
    pub fn sweep(&mut self, shard: usize, generation: u64) -> bool {
        if self.shard != Some(shard) {
            return false;
        }
        let before = self.is_live();
        if self.lww.as_ref().is_some_and(|p| p.seen_gen < generation) {
            self.lww = None;
        }
        if self.or.as_ref().is_some_and(|p| p.seen_gen < generation) {
            self.or = None;
        }
        before && !self.is_live()
    }

    /// True when nothing at all is held any more (not even a tombstone).
    pub fn is_empty(&self) -> bool {
        self.lww.is_none() && self.or.is_none()
    }

    /// True when the entry can be dropped: nothing is held, and tantivy holds no
    /// document of the key that still has to be deleted.
    pub fn is_forgettable(&self) -> bool {
        self.is_empty() && !self.in_index
    }

    /// See the `in_index` field.
    pub fn in_index(&self) -> bool {
        self.in_index
    }

    /// Records that a document of the key was added to (`true`) or deleted from
    /// (`false`) tantivy.
    pub fn set_in_index(&mut self, in_index: bool) {
        self.in_index = in_index;
    }

    /// True when the key has a value, i.e. belongs in the index.
    pub fn is_live(&self) -> bool {
        self.value().is_some()
    }

    /// MsgPack of the value search results carry: the LWW value, else the OR-Map
    /// entry values as an array; `None` when the key has neither.
    pub fn value(&self) -> Option<&[u8]> {
        if let Some(value) = self.lww.as_ref().and_then(|p| p.value.as_deref()) {
            return Some(value);
        }
        self.or.as_ref().map(|p| p.value.as_slice())
    }

    /// The all-text field of the key (LWW value first, then the OR-Map entries).
    pub fn text(&self) -> String {
        let mut out = String::new();
        for bytes in [
            self.lww.as_ref().and_then(|p| p.value.as_deref()),
            self.or.as_ref().map(|p| p.value.as_slice()),
        ]
        .into_iter()
        .flatten()
        {
            match decode_value(bytes) {
                Ok(value) => append_text(&value, &mut out),
                // The shard validated the value when it was written, so this is a bug
                // elsewhere; the key stays findable by `_key:` and keeps its value.
                Err(error) => tracing::warn!(%error, "undecodable value, indexed without text"),
            }
        }
        out
    }
}

/// MsgPack array of already-encoded values. Undecodable entries become nil rather than
/// corrupting the array.
fn encode_array(values: &[Vec<u8>]) -> Vec<u8> {
    let items = values
        .iter()
        .map(|bytes| decode_value(bytes).unwrap_or(Value::Nil))
        .collect();
    encode_value(&Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(millis: u64) -> Timestamp {
        Timestamp::new(millis, 0, "n1")
    }

    fn lww(millis: u64, value: Option<&str>) -> DocUpdate {
        DocUpdate::Lww {
            map: "m".into(),
            key: "k".into(),
            timestamp: ts(millis),
            value: value.map(|v| encode_value(&Value::from(v))),
        }
    }

    fn or(values: &[&str]) -> DocUpdate {
        DocUpdate::Or {
            map: "m".into(),
            key: "k".into(),
            values: values
                .iter()
                .map(|v| encode_value(&Value::from(*v)))
                .collect(),
        }
    }

    const SHARD0: Option<Provenance> = Some(Provenance {
        shard: 0,
        generation: 1,
    });

    #[test]
    fn older_lww_records_are_ignored_and_tombstones_stick() {
        let mut doc = DocState::default();
        assert!(doc.apply(&lww(10, Some("hello world")), SHARD0));
        assert_eq!(doc.text(), "hello world");
        // Replay of the same record and an older one change nothing.
        assert!(!doc.apply(&lww(10, Some("hello world")), SHARD0));
        assert!(!doc.apply(&lww(5, Some("stale")), SHARD0));
        assert_eq!(doc.text(), "hello world");
        // A newer tombstone removes it; a late older put cannot bring it back.
        assert!(doc.apply(&lww(20, None), SHARD0));
        assert!(!doc.is_live());
        assert!(!doc.apply(&lww(15, Some("zombie")), SHARD0));
        assert!(!doc.is_live());
        assert!(!doc.is_empty(), "the tombstone is remembered");
    }

    #[test]
    fn or_state_replaces_and_reads_as_one_array() {
        let mut doc = DocState::default();
        assert!(doc.apply(&or(&["red apple", "green pear"]), SHARD0));
        assert_eq!(doc.text(), "red apple green pear");
        let value = decode_value(doc.value().expect("live")).expect("msgpack");
        assert_eq!(
            value,
            Value::Array(vec![Value::from("red apple"), Value::from("green pear")])
        );
        assert!(!doc.apply(&or(&["red apple", "green pear"]), SHARD0));
        assert!(doc.apply(&or(&[]), SHARD0));
        assert!(!doc.is_live());
        assert!(doc.is_empty());
    }

    #[test]
    fn lww_value_wins_for_results_and_both_sides_are_text() {
        let mut doc = DocState::default();
        doc.apply(&or(&["entry"]), SHARD0);
        doc.apply(&lww(1, Some("record")), SHARD0);
        assert_eq!(doc.text(), "record entry");
        assert_eq!(
            doc.value(),
            Some(encode_value(&Value::from("record")).as_slice())
        );
    }

    #[test]
    fn an_entry_with_a_document_to_delete_is_not_forgettable() {
        let mut doc = DocState::default();
        doc.apply(&or(&["entry"]), SHARD0);
        doc.set_in_index(true);
        doc.apply(&or(&[]), SHARD0);
        assert!(doc.is_empty());
        assert!(!doc.is_forgettable(), "its document must be deleted first");
        doc.set_in_index(false);
        assert!(doc.is_forgettable());
    }

    #[test]
    fn sweep_drops_what_a_newer_scan_did_not_see() {
        let mut doc = DocState::default();
        doc.apply(
            &lww(1, Some("x")),
            Some(Provenance {
                shard: 2,
                generation: 1,
            }),
        );
        assert!(!doc.sweep(1, 5), "another shard's key is untouched");
        assert!(!doc.sweep(2, 1), "seen by this generation");
        // Seen again by scan 2 (an ignored replay still counts as seen).
        doc.apply(
            &lww(1, Some("x")),
            Some(Provenance {
                shard: 2,
                generation: 2,
            }),
        );
        assert!(!doc.sweep(2, 2));
        assert!(doc.sweep(2, 3));
        assert!(doc.is_empty());
    }
}

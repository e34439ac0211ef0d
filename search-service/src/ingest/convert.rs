//! Shard records and change events → [`DocUpdate`]s. Prost messages are checked here,
//! once, so nothing downstream sees a missing timestamp or an expired record.

use topgun_proto::grpc::common as pb;
use topgun_proto::hlc::Timestamp;

use crate::document::DocUpdate;
use crate::NIL_MSGPACK;

/// Expired: a non-zero TTL and `millis + ttl < now` (core.md §4.4; alive at equality).
fn expired(timestamp: &pb::Timestamp, ttl_ms: Option<u64>, now_ms: u64) -> bool {
    match ttl_ms {
        Some(ttl) if ttl > 0 => timestamp.millis.saturating_add(ttl) < now_ms,
        _ => false,
    }
}

/// The update for an LWW record; `None` (logged) when the record has no timestamp.
pub(crate) fn lww_update(
    map: &str,
    key: &str,
    record: pb::LwwRecord,
    now_ms: u64,
) -> Option<DocUpdate> {
    let Some(timestamp) = record.timestamp else {
        tracing::warn!(map, key, "lww record without timestamp ignored");
        return None;
    };
    // Empty bytes and MsgPack nil are both tombstones; an expired record reads as one.
    let live = !record.value.is_empty()
        && record.value != NIL_MSGPACK
        && !expired(&timestamp, record.ttl_ms, now_ms);
    Some(DocUpdate::Lww {
        map: map.to_string(),
        key: key.to_string(),
        timestamp: Timestamp::from(timestamp),
        value: live.then_some(record.value),
    })
}

/// The update for an OR-Map key from its live records (expired ones left out).
pub(crate) fn or_update(
    map: &str,
    key: &str,
    records: Vec<pb::OrRecord>,
    now_ms: u64,
) -> DocUpdate {
    let values = records
        .into_iter()
        .filter(|r| {
            r.timestamp
                .as_ref()
                .is_none_or(|ts| !expired(ts, r.ttl_ms, now_ms))
        })
        .map(|r| {
            if r.value.is_empty() {
                NIL_MSGPACK.to_vec()
            } else {
                r.value
            }
        })
        .collect();
    DocUpdate::Or {
        map: map.to_string(),
        key: key.to_string(),
        values,
    }
}

/// The update for a scanned or fetched key of a map of `kind`.
pub(crate) fn key_state_update(
    map: &str,
    kind: pb::MapKind,
    state: pb::KeyState,
    now_ms: u64,
) -> Option<DocUpdate> {
    match kind {
        pb::MapKind::Lww => lww_update(map, &state.key, state.lww?, now_ms),
        pb::MapKind::Or => Some(or_update(map, &state.key, state.or_records, now_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(millis: u64) -> Option<pb::Timestamp> {
        Some(pb::Timestamp {
            millis,
            counter: 0,
            node_id: "n".into(),
        })
    }

    #[test]
    fn tombstones_and_expired_records_have_no_value() {
        let live = pb::LwwRecord {
            value: vec![0xa1, b'x'],
            timestamp: ts(100),
            ttl_ms: None,
        };
        let Some(DocUpdate::Lww { value, .. }) = lww_update("m", "k", live.clone(), 1_000) else {
            panic!("an lww update");
        };
        assert_eq!(value, Some(vec![0xa1, b'x']));
        for dead in [
            pb::LwwRecord {
                value: NIL_MSGPACK.to_vec(),
                ..live.clone()
            },
            pb::LwwRecord {
                value: Vec::new(),
                ..live.clone()
            },
            pb::LwwRecord {
                ttl_ms: Some(10),
                ..live.clone()
            },
        ] {
            let Some(DocUpdate::Lww { value, .. }) = lww_update("m", "k", dead, 1_000) else {
                panic!("an lww update");
            };
            assert_eq!(value, None);
        }
        // Alive at exactly millis + ttl.
        let edge = pb::LwwRecord {
            ttl_ms: Some(900),
            ..live.clone()
        };
        assert!(matches!(
            lww_update("m", "k", edge, 1_000),
            Some(DocUpdate::Lww { value: Some(_), .. })
        ));
        assert!(lww_update(
            "m",
            "k",
            pb::LwwRecord {
                timestamp: None,
                ..live
            },
            0
        )
        .is_none());
    }

    #[test]
    fn or_updates_keep_live_values_in_order() {
        let record = |v: u8, ttl| pb::OrRecord {
            value: vec![v],
            timestamp: ts(100),
            tag: format!("t{v}"),
            ttl_ms: ttl,
        };
        let update = or_update(
            "m",
            "k",
            vec![record(1, None), record(2, Some(1)), record(3, None)],
            1_000,
        );
        assert_eq!(
            update,
            DocUpdate::Or {
                map: "m".into(),
                key: "k".into(),
                values: vec![vec![1], vec![3]]
            }
        );
    }
}

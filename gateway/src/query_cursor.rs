//! Opaque pagination cursors of live queries: base64url (unpadded) of MsgPack
//! `[position, queryDigest, createdMs]`. The client never inspects them; the digest
//! makes a cursor invalid for a different filter or sort, and they expire after 10 min.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use topgun_proto::hash::fnv1a;
use topgun_proto::hlc::wall_clock_ms;
use topgun_proto::predicate::Position;
use topgun_proto::wire::{self, Query};

/// Cursors older than this are expired.
pub const CURSOR_TTL_MS: u64 = 10 * 60 * 1000;

/// How a request's cursor was treated (`cursorStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorStatus {
    /// Used.
    Valid,
    /// Too old; first page returned.
    Expired,
    /// Undecodable or for another query; first page returned.
    Invalid,
}

impl CursorStatus {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CursorStatus::Valid => "valid",
            CursorStatus::Expired => "expired",
            CursorStatus::Invalid => "invalid",
        }
    }
}

fn digest(query: &Query) -> u32 {
    let filter = Query {
        where_: query.where_.clone(),
        predicate: query.predicate.clone(),
        sort: query.sort.clone(),
        ..Default::default()
    };
    let bytes = wire::encode_body(&filter);
    fnv1a(&URL_SAFE_NO_PAD.encode(bytes))
}

/// A cursor pointing after `last` for this query.
pub fn encode(last: &Position, query: &Query) -> String {
    let value = rmpv::Value::Array(vec![
        last.to_value(),
        rmpv::Value::from(digest(query)),
        rmpv::Value::from(wall_clock_ms()),
    ]);
    URL_SAFE_NO_PAD.encode(wire::encode_value(&value))
}

/// The position a cursor points after, or why it cannot be used.
pub fn decode(cursor: &str, query: &Query) -> Result<Position, CursorStatus> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| CursorStatus::Invalid)?;
    let value = wire::decode_value(&bytes).map_err(|_| CursorStatus::Invalid)?;
    let items = value.as_array().ok_or(CursorStatus::Invalid)?;
    let [position, query_digest, created] = items.as_slice() else {
        return Err(CursorStatus::Invalid);
    };
    if query_digest.as_u64() != Some(u64::from(digest(query))) {
        return Err(CursorStatus::Invalid);
    }
    let created = created.as_u64().ok_or(CursorStatus::Invalid)?;
    if wall_clock_ms().saturating_sub(created) > CURSOR_TTL_MS {
        return Err(CursorStatus::Expired);
    }
    Position::from_value(position).ok_or(CursorStatus::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_query() {
        let query = Query {
            limit: Some(2),
            ..Default::default()
        };
        let position = Position {
            sort_values: vec![rmpv::Value::from(3)],
            key: "k".into(),
        };
        let cursor = encode(&position, &query);
        assert_eq!(decode(&cursor, &query), Ok(position));
        let other = Query {
            sort: Some(rmpv::Value::Map(vec![("a".into(), "asc".into())])),
            ..Default::default()
        };
        assert_eq!(decode(&cursor, &other), Err(CursorStatus::Invalid));
        assert_eq!(decode("!!!", &query), Err(CursorStatus::Invalid));
    }
}

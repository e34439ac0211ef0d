//! Entry hashes of the two Merkle trees, exactly as the client computes them
//! (core.md §6.3 for LWW, §6.8 for OR-Maps).

use super::js_text::write_value_text;
use topgun_proto::hash::Fnv1a;
use topgun_proto::hlc::{cmp_utf16, Timestamp};
use topgun_proto::wire::OrMapRecord;

/// LWW entry hash: `fnv1a(key + ":" + millis + ":" + counter + ":" + nodeId)`. Neither
/// the value nor `ttlMs` is hashed, so tombstones and expired records hash like any record.
pub fn lww_entry_hash(key: &str, timestamp: &Timestamp) -> u32 {
    let mut h = Fnv1a::new();
    h.write_str(key);
    h.write_str(":");
    write_timestamp(&mut h, timestamp);
    h.finish()
}

/// OR-Map entry hash of a key's live records (tombstoned tags are not hashed):
/// `fnv1a("key:" + key + ("|" + seg(r))* )` over the records sorted by tag.
pub fn or_entry_hash<'a>(key: &str, records: impl IntoIterator<Item = &'a OrMapRecord>) -> u32 {
    let mut sorted: Vec<&OrMapRecord> = records.into_iter().collect();
    // The client sorts tags with the default JS sort: UTF-16 code units.
    sorted.sort_by(|a, b| cmp_utf16(&a.tag, &b.tag));
    let mut h = Fnv1a::new();
    h.write_str("key:");
    h.write_str(key);
    let mut text = String::new();
    for record in sorted {
        h.write_str("|");
        h.write_str(&record.tag);
        h.write_str(":");
        text.clear();
        write_value_text(&mut text, &record.value);
        h.write_str(&text);
        h.write_str(":");
        write_timestamp(&mut h, &record.timestamp);
        if let Some(ttl) = record.ttl_ms {
            h.write_str(":ttl=");
            write_u64(&mut h, ttl);
        }
    }
    h.finish()
}

/// `millis:counter:nodeId`, with the numbers in plain decimal (JS prints every
/// integer below 10^21 that way, and a u64 is always below it).
fn write_timestamp(h: &mut Fnv1a, ts: &Timestamp) {
    write_u64(h, ts.millis);
    h.write_str(":");
    write_u64(h, ts.counter);
    h.write_str(":");
    h.write_str(&ts.node_id);
}

/// Feeds the decimal digits of `n` without allocating: this runs once per merged op.
fn write_u64(h: &mut Fnv1a, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    if let Ok(digits) = std::str::from_utf8(&buf[start..]) {
        h.write_str(digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;
    use topgun_proto::hash::fnv1a;

    fn ts(millis: u64, counter: u64, node: &str) -> Timestamp {
        Timestamp::new(millis, counter, node)
    }

    #[test]
    fn lww_entry_hashes_match_the_worked_example() {
        assert_eq!(
            lww_entry_hash("user-1", &ts(1_700_000_000_000, 1, "node-1")),
            1214284741
        );
        assert_eq!(
            lww_entry_hash("user-2", &ts(1_700_000_000_001, 0, "node-2")),
            869552955
        );
        assert_eq!(
            lww_entry_hash("todo:42", &ts(1_700_000_000_500, 3, "c1")),
            2944331021
        );
        assert_eq!(
            lww_entry_hash("key1", &ts(100, 0, "test")),
            fnv1a("key1:100:0:test")
        );
        assert_eq!(
            lww_entry_hash("k", &ts(0, u64::MAX, "n")),
            fnv1a(&format!("k:0:{}:n", u64::MAX))
        );
    }

    #[test]
    fn or_entry_hashes_match_the_worked_examples() {
        let alice = OrMapRecord {
            value: Value::from("Alice"),
            timestamp: ts(1_700_000_000_000, 0, "n1"),
            tag: "1700000000000:0:n1".into(),
            ttl_ms: None,
        };
        assert_eq!(or_entry_hash("tags", [&alice]), 1599115293);

        let number = OrMapRecord {
            value: Value::F64(42.5),
            timestamp: ts(1_700_000_000_000, 0, "n1"),
            tag: "1700000000000:0:n1".into(),
            ttl_ms: None,
        };
        let object = OrMapRecord {
            value: Value::Map(vec![
                (Value::from("b"), Value::from(2)),
                (
                    Value::from("a"),
                    Value::Map(vec![
                        (Value::from("z"), Value::from(1)),
                        (Value::from("a"), Value::from(5)),
                    ]),
                ),
                (
                    Value::from("c"),
                    Value::Array(vec![
                        Value::from(1),
                        Value::Map(vec![
                            (Value::from("a"), Value::from(1)),
                            (Value::from("q"), Value::from(2)),
                        ]),
                    ]),
                ),
            ]),
            timestamp: ts(1_700_000_000_000, 1, "n1"),
            tag: "1700000000000:1:n1".into(),
            ttl_ms: Some(60_000),
        };
        let expected_text = "key:tags|1700000000000:0:n1:42.5:1700000000000:0:n1|\
             1700000000000:1:n1:{\"a\":{\"a\":5},\"b\":2,\"c\":[1,{\"a\":1}]}:1700000000000:1:n1:ttl=60000";
        assert_eq!(fnv1a(expected_text), 145664460);
        // Record order must not matter: the hash sorts by tag.
        assert_eq!(or_entry_hash("tags", [&object, &number]), 145664460);
        assert_eq!(or_entry_hash("tags", [&number, &object]), 145664460);
    }

    #[test]
    fn tags_sort_lexicographically() {
        let rec = |tag: &str| OrMapRecord {
            value: Value::from(1),
            timestamp: ts(1, 0, "a"),
            tag: tag.into(),
            ttl_ms: None,
        };
        let (ten, nine) = (rec("1700000000000:10:a"), rec("1700000000000:9:a"));
        let expected = fnv1a("key:k|1700000000000:10:a:1:1:0:a|1700000000000:9:a:1:1:0:a");
        assert_eq!(or_entry_hash("k", [&nine, &ten]), expected);
    }
}

//! What the index sees of a value, and what results report of a query
//! (queries-search-messaging.md §2.1–2.2).

use rmpv::Value;

/// The all-text field of a value: every non-empty string found anywhere in it, in
/// document order, joined by single spaces. Map keys, numbers, booleans, nil and
/// binaries contribute nothing.
pub fn extract_text(value: &Value) -> String {
    let mut out = String::new();
    append_text(value, &mut out);
    out
}

/// Appends the strings of `value` to `out` (space-separated from what is already there),
/// so several values — an OR-Map key's entries — read as one array.
pub fn append_text(value: &Value, out: &mut String) {
    // An explicit stack instead of recursion: values come from the network, and a
    // deeply nested one must not be able to overflow the indexer thread's stack.
    let mut stack: Vec<&Value> = vec![value];
    while let Some(next) = stack.pop() {
        match next {
            Value::String(s) => {
                let text = String::from_utf8_lossy(s.as_bytes());
                if text.is_empty() {
                    continue;
                }
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(&text);
            }
            // Pushed in reverse so the first element is popped (and written) first.
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Map(entries) => stack.extend(entries.iter().rev().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// `matchedTerms` of every result: the query split on whitespace, each piece trimmed of
/// leading and trailing non-alphanumeric characters and lowercased, empty pieces
/// dropped. It describes the query, not the document (§2.2).
pub fn matched_terms(query: &str) -> Vec<String> {
    query
        .split_whitespace()
        .map(|piece| {
            piece
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|piece| !piece.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::from(text)
    }

    #[test]
    fn walks_nested_values_in_order_and_skips_keys_and_non_strings() {
        let value = Value::Map(vec![
            (s("title"), s("Intro to ML")),
            (s("views"), Value::from(42)),
            (
                s("tags"),
                Value::Array(vec![s("ai"), s(""), Value::Nil, s("deep learning")]),
            ),
            (
                s("author"),
                Value::Map(vec![(s("name"), s("Ada")), (s("admin"), Value::from(true))]),
            ),
            (s("blob"), Value::Binary(b"bytes".to_vec())),
            (s("empty"), s("")),
        ]);
        assert_eq!(extract_text(&value), "Intro to ML ai deep learning Ada");
    }

    #[test]
    fn scalars_and_empty_values_give_no_text() {
        assert_eq!(extract_text(&Value::Nil), "");
        assert_eq!(extract_text(&Value::from(1.5)), "");
        assert_eq!(extract_text(&s("")), "");
        assert_eq!(extract_text(&s("solo")), "solo");
    }

    #[test]
    fn appending_several_values_reads_as_one_array() {
        let mut out = String::new();
        append_text(&Value::Map(vec![(s("a"), s("red apple"))]), &mut out);
        append_text(&Value::from(7), &mut out);
        append_text(&s("green pear"), &mut out);
        assert_eq!(out, "red apple green pear");
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let mut value = s("bottom");
        for _ in 0..100_000 {
            value = Value::Array(vec![value]);
        }
        assert_eq!(extract_text(&value), "bottom");
        // Dropping a deeply nested rmpv value recurses; leak it instead, it's a test.
        std::mem::forget(value);
    }

    #[test]
    fn matched_terms_follow_the_spec_example() {
        assert_eq!(
            matched_terms("\"Wireless\" +mouse -Pad"),
            vec!["wireless", "mouse", "pad"]
        );
        assert_eq!(
            matched_terms("  machine\tlearning \n"),
            vec!["machine", "learning"]
        );
        assert_eq!(matched_terms("(a OR b)^2 -- ++"), vec!["a", "or", "b)^2"]);
        assert!(matched_terms("").is_empty());
        assert_eq!(matched_terms("Ünïcode"), vec!["ünïcode"]);
    }
}

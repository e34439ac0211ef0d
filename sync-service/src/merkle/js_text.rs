//! The client's `valueText` for OR-Map entry hashes (core.md §6.8): JavaScript
//! `String(v)` for scalars and `JSON.stringify(v, sortedOwnKeys(v))` for maps and
//! arrays, reproduced byte for byte because any difference changes the Merkle root.

use rmpv::Value;
use std::fmt::Write;
use topgun_proto::hlc::cmp_utf16;

/// `valueText(v)` of a stored OR-Map value.
pub fn value_text(value: &Value) -> String {
    let mut out = String::new();
    write_value_text(&mut out, value);
    out
}

/// Appends `valueText(v)` to `out`.
pub fn write_value_text(out: &mut String, value: &Value) {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => write_js_number(out, integer_as_f64(i)),
        Value::F32(f) => write_js_number(out, f64::from(*f)),
        Value::F64(f) => write_js_number(out, *f),
        // Top-level strings go through `String(v)`: no quotes, no escaping.
        Value::String(s) => out.push_str(&String::from_utf8_lossy(s.as_bytes())),
        Value::Array(_) | Value::Map(_) | Value::Binary(_) | Value::Ext(..) => {
            let whitelist = sorted_own_keys(value);
            write_json(out, value, &whitelist);
        }
    }
}

/// JavaScript `Number.prototype.toString()` (ECMAScript Number::toString, radix 10).
pub fn js_number(x: f64) -> String {
    let mut out = String::new();
    write_js_number(&mut out, x);
    out
}

fn integer_as_f64(i: &rmpv::Integer) -> f64 {
    // The client turns 64-bit integers into Numbers, losing precision above 2^53 the
    // same way this conversion does.
    match (i.as_u64(), i.as_i64()) {
        (Some(u), _) => u as f64,
        (None, Some(s)) => s as f64,
        (None, None) => 0.0,
    }
}

fn write_js_number(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
        return;
    }
    if x == 0.0 {
        // Both +0 and -0 print as "0".
        out.push('0');
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` yields the shortest round-tripping digits, the same digit string
    // ECMAScript requires (k as small as possible); only the layout rules differ.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let k = digits.len() as i32;
    // ECMAScript's n: the value is 0.digits × 10^n.
    let n = exponent + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n - 1 < 0 { '-' } else { '+' });
        let _ = write!(out, "{}", (n - 1).abs());
    }
}

/// A JSON number: like `String(x)` except that NaN and ±Infinity become `null`.
fn write_json_number(out: &mut String, x: f64) {
    if x.is_finite() {
        write_js_number(out, x);
    } else {
        out.push_str("null");
    }
}

/// The property names JavaScript sees on a decoded value: map keys as strings, array
/// and byte-array indices as decimal strings.
fn own_keys(value: &Value) -> Vec<String> {
    match value {
        Value::Map(entries) => {
            let mut keys: Vec<String> = Vec::with_capacity(entries.len());
            for (k, _) in entries {
                if let Some(name) = property_name(k) {
                    // Duplicate MsgPack keys collapse into one JS property.
                    if !keys.contains(&name) {
                        keys.push(name);
                    }
                }
            }
            keys
        }
        Value::Array(items) => (0..items.len()).map(|i| i.to_string()).collect(),
        Value::Binary(bytes) => (0..bytes.len()).map(|i| i.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// The JavaScript default sort (UTF-16 code units) of the own keys.
fn sorted_own_keys(value: &Value) -> Vec<String> {
    let mut keys = own_keys(value);
    keys.sort_by(|a, b| cmp_utf16(a, b));
    keys
}

/// How the client's decoder turns a MsgPack map key into a property name.
fn property_name(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Integer(i) => Some(js_number(integer_as_f64(i))),
        Value::F32(f) => Some(js_number(f64::from(*f))),
        Value::F64(f) => Some(js_number(*f)),
        Value::Boolean(b) => Some(b.to_string()),
        Value::Nil => Some("null".to_string()),
        _ => None,
    }
}

/// The value of property `name` (the last one wins, as with repeated assignment).
fn lookup<'a>(entries: &'a [(Value, Value)], name: &str) -> Option<&'a Value> {
    entries
        .iter()
        .rev()
        .find(|(k, _)| property_name(k).is_some_and(|p| p == name))
        .map(|(_, v)| v)
}

/// `JSON.stringify` with a property-list replacer: objects list only whitelisted
/// properties, in whitelist order, at every depth; arrays list every element.
fn write_json(out: &mut String, value: &Value, whitelist: &[String]) {
    match value {
        Value::Nil => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => write_json_number(out, integer_as_f64(i)),
        Value::F32(f) => write_json_number(out, f64::from(*f)),
        Value::F64(f) => write_json_number(out, *f),
        Value::String(s) => write_json_string(out, &String::from_utf8_lossy(s.as_bytes())),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item, whitelist);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            let mut first = true;
            for name in whitelist {
                let Some(v) = lookup(entries, name) else {
                    continue;
                };
                if !first {
                    out.push(',');
                }
                first = false;
                write_json_string(out, name);
                out.push(':');
                write_json(out, v, whitelist);
            }
            out.push('}');
        }
        // A Uint8Array serializes as an object with index-named properties.
        Value::Binary(bytes) => {
            out.push('{');
            let mut first = true;
            for name in whitelist {
                let Some(byte) = name.parse::<usize>().ok().and_then(|i| bytes.get(i)) else {
                    continue;
                };
                if name.len() > 1 && name.starts_with('0') {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                write_json_string(out, name);
                out.push(':');
                let _ = write!(out, "{byte}");
            }
            out.push('}');
        }
        // The client never sends extension types; an object without own
        // properties is the closest thing its decoder would show.
        Value::Ext(..) => out.push_str("{}"),
    }
}

/// A JSON string literal with ECMAScript `QuoteJSONString` escaping.
fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn numbers_follow_ecmascript_number_to_string() {
        let cases: &[(f64, &str)] = &[
            (42.0, "42"),
            (42.5, "42.5"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e21, "1e+21"),
            (1e-7, "1e-7"),
            (-0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (1.5e21, "1.5e+21"),
            (0.000001, "0.000001"),
            (1.5e-7, "1.5e-7"),
            (-2.5, "-2.5"),
            (1700000000000.0, "1700000000000"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.5, "0.5"),
            (123.456, "123.456"),
        ];
        for (x, expected) in cases {
            assert_eq!(js_number(*x), *expected, "js_number({x:e})");
        }
    }

    #[test]
    fn scalars_use_string_conversion() {
        assert_eq!(value_text(&Value::Nil), "null");
        assert_eq!(value_text(&Value::from("Al\"ice\n")), "Al\"ice\n");
        assert_eq!(value_text(&Value::from(true)), "true");
        assert_eq!(value_text(&Value::from(42)), "42");
        assert_eq!(value_text(&Value::from(u64::MAX)), "18446744073709552000");
        assert_eq!(value_text(&Value::F64(f64::NAN)), "NaN");
        assert_eq!(value_text(&Value::F32(0.5)), "0.5");
        // float32 0.1 is widened exactly, as the client's decoder does.
        assert_eq!(value_text(&Value::F32(0.1)), "0.10000000149011612");
    }

    #[test]
    fn spec_examples_apply_the_whitelist_at_every_depth() {
        let v = map(vec![
            ("b", Value::from(2)),
            ("a", map(vec![("z", Value::from(1)), ("a", Value::from(5))])),
            (
                "c",
                Value::Array(vec![
                    Value::from(1),
                    map(vec![("a", Value::from(1)), ("q", Value::from(2))]),
                ]),
            ),
        ]);
        assert_eq!(value_text(&v), r#"{"a":{"a":5},"b":2,"c":[1,{"a":1}]}"#);

        let v = Value::Array(vec![
            Value::from(3),
            Value::from("x"),
            map(vec![("b", Value::from(1)), ("0", Value::from(2))]),
        ]);
        assert_eq!(value_text(&v), r#"[3,"x",{"0":2}]"#);
    }

    #[test]
    fn json_strings_and_special_numbers_inside_json() {
        let v = map(vec![
            (
                "s",
                Value::from("q\"b\\\u{08}\u{0c}\n\r\t\u{01}\u{1f}\u{2028}é"),
            ),
            ("n", Value::F64(f64::NAN)),
            ("i", Value::F64(f64::INFINITY)),
            ("z", Value::F64(-0.0)),
            ("e", Value::F64(1e21)),
            ("nil", Value::Nil),
        ]);
        assert_eq!(
            value_text(&v),
            "{\"e\":1e+21,\"i\":null,\"n\":null,\"nil\":null,\
             \"s\":\"q\\\"b\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\u{2028}é\",\"z\":0}"
        );
    }

    #[test]
    fn keys_sort_by_utf16_code_units_and_arrays_ignore_the_whitelist() {
        // "10" < "2" lexicographically, and an empty top-level object prints "{}".
        let v = map(vec![("2", Value::from(1)), ("10", Value::from(2))]);
        assert_eq!(value_text(&v), r#"{"10":2,"2":1}"#);
        assert_eq!(value_text(&map(vec![])), "{}");
        assert_eq!(value_text(&Value::Array(vec![])), "[]");
        let nested = Value::Array(vec![Value::Array(vec![Value::from(1), Value::from(2)])]);
        assert_eq!(value_text(&nested), "[[1,2]]");
        // Later duplicates win, as repeated property assignment would.
        let dup = Value::Map(vec![
            (Value::from("a"), Value::from(1)),
            (Value::from("a"), Value::from(2)),
        ]);
        assert_eq!(value_text(&dup), r#"{"a":2}"#);
        // Integer keys become property names.
        let int_keys = Value::Map(vec![(Value::from(1), Value::from("x"))]);
        assert_eq!(value_text(&int_keys), r#"{"1":"x"}"#);
    }

    #[test]
    fn byte_arrays_serialize_like_uint8array() {
        let bytes = Value::Binary((0..12).collect());
        assert_eq!(
            value_text(&bytes),
            r#"{"0":0,"1":1,"10":10,"11":11,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9}"#
        );
    }
}

//! The query language (queries-search-messaging.md §1.2–1.3): `where` maps, predicate
//! trees with JavaScript-compatible semantics, multi-field sort and projection. Shared
//! by sync shards (initial results) and gateways (live updates, RBAC conditions) so
//! both always agree.

use crate::hlc::cmp_utf16;
use regex::Regex;
use rmpv::Value;
use std::cmp::Ordering;

/// A query compiled once and evaluated against many records.
#[derive(Debug, Clone)]
pub struct QueryPlan {
    where_: Vec<(String, Value)>,
    predicate: Option<Node>,
    sort: Vec<(String, Direction)>,
}

/// Sort direction of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending, missing last.
    Asc,
    /// Descending, missing first.
    Desc,
}

/// Values that decide a row's place in query order: one per sort field, then the key.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// Sort field values (nil = missing).
    pub sort_values: Vec<Value>,
    /// Record key (final tie-break).
    pub key: String,
}

impl Position {
    /// MsgPack form `[sortValues..., key]` used between gateway and shards.
    pub fn to_value(&self) -> Value {
        let mut items = self.sort_values.clone();
        items.push(Value::from(self.key.as_str()));
        Value::Array(items)
    }

    /// Parses [`Position::to_value`]'s form.
    pub fn from_value(value: &Value) -> Option<Position> {
        let items = value.as_array()?;
        let (key, sort_values) = items.split_last()?;
        Some(Position {
            sort_values: sort_values.to_vec(),
            key: key.as_str()?.to_string(),
        })
    }
}

/// The caller's identity, for `valueRef: "auth.*"` in RBAC conditions.
#[derive(Debug, Clone, Default)]
pub struct EvalContext {
    /// `{id, roles}` of the principal, if any.
    pub auth: Option<Value>,
}

impl QueryPlan {
    /// Compiles the `where`, `predicate` and `sort` parts of a query; malformed parts
    /// compile to "matches nothing" rather than failing the subscription.
    pub fn new(where_: Option<&Value>, predicate: Option<&Value>, sort: Option<&Value>) -> Self {
        let where_ = match where_ {
            Some(Value::Map(entries)) => entries
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone())))
                .collect(),
            _ => Vec::new(),
        };
        let sort = match sort {
            Some(Value::Map(entries)) => entries
                .iter()
                .filter_map(|(k, v)| {
                    let dir = match v.as_str()? {
                        "asc" => Direction::Asc,
                        "desc" => Direction::Desc,
                        _ => return None,
                    };
                    Some((k.as_str()?.to_string(), dir))
                })
                .collect(),
            _ => Vec::new(),
        };
        QueryPlan {
            where_,
            predicate: predicate.filter(|p| !p.is_nil()).map(Node::compile),
            sort,
        }
    }

    /// Compiles a wire query.
    pub fn from_query(q: &crate::wire::Query) -> Self {
        Self::new(q.where_.as_ref(), q.predicate.as_ref(), q.sort.as_ref())
    }

    /// True if the record value matches (`where` AND `predicate`); nil never matches.
    pub fn matches(&self, value: &Value) -> bool {
        if value.is_nil() {
            return false;
        }
        let where_ok = self.where_.iter().all(|(field, expected)| {
            let actual = match value {
                Value::Map(entries) => lookup_literal(entries, field),
                _ => None,
            };
            strict_eq(actual, expected)
        });
        where_ok
            && self
                .predicate
                .as_ref()
                .is_none_or(|p| p.eval(value, &EvalContext::default()))
    }

    /// The row's position in query order.
    pub fn position(&self, key: &str, value: &Value) -> Position {
        Position {
            sort_values: self
                .sort
                .iter()
                .map(|(field, _)| {
                    resolve_attribute(value, field)
                        .cloned()
                        .unwrap_or(Value::Nil)
                })
                .collect(),
            key: key.to_string(),
        }
    }

    /// Query order: every sort field in wire order (unordered pairs tie), missing/nil
    /// last ascending and first descending, then key ascending by bytes.
    pub fn cmp_positions(&self, a: &Position, b: &Position) -> Ordering {
        for (i, (_, dir)) in self.sort.iter().enumerate() {
            let (x, y) = (a.sort_values.get(i), b.sort_values.get(i));
            let ord = match (present(x), present(y)) {
                (None, None) => Ordering::Equal,
                // Missing sorts as the largest value; `desc` then puts it first.
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => order(Some(x), y).unwrap_or(Ordering::Equal),
            };
            let ord = if *dir == Direction::Desc {
                ord.reverse()
            } else {
                ord
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        a.key.as_bytes().cmp(b.key.as_bytes())
    }

    /// Whether the query has a sort spec.
    pub fn has_sort(&self) -> bool {
        !self.sort.is_empty()
    }
}

fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_nil())
}

/// Evaluates one predicate tree (e.g. an RBAC condition) against a value.
pub fn evaluate(predicate: &Value, value: &Value, ctx: &EvalContext) -> bool {
    !value.is_nil() && Node::compile(predicate).eval(value, ctx)
}

/// Keeps only the listed top-level fields of a map value; other values pass unchanged.
pub fn project(fields: Option<&[String]>, value: &Value) -> Value {
    match (fields, value) {
        (Some(fields), Value::Map(entries)) => Value::Map(
            entries
                .iter()
                .filter(|(k, _)| k.as_str().is_some_and(|k| fields.iter().any(|f| f == k)))
                .cloned()
                .collect(),
        ),
        _ => value.clone(),
    }
}

#[derive(Debug, Clone)]
enum Operand {
    Literal(Value),
    Ref(String),
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeafOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Between,
    In,
    IsNull,
    IsNotNull,
    Like,
    Regex,
    Contains,
    ContainsAll,
    ContainsAny,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Option<Box<Node>>),
    Leaf {
        op: LeafOp,
        attribute: String,
        operand: Operand,
        pattern: Option<Regex>,
    },
    /// Unknown operators, leaves without attribute, malformed nodes.
    False,
}

impl Node {
    fn compile(node: &Value) -> Node {
        let Value::Map(entries) = node else {
            return Node::False;
        };
        let get = |name: &str| lookup_literal(entries, name);
        let Some(op) = get("op").and_then(Value::as_str) else {
            return Node::False;
        };
        let children = || -> Vec<Node> {
            get("children")
                .and_then(Value::as_array)
                .map_or_else(Vec::new, |c| c.iter().map(Node::compile).collect())
        };
        let leaf_op = match op {
            "and" => return Node::And(children()),
            "or" => return Node::Or(children()),
            "not" => return Node::Not(children().into_iter().next().map(Box::new)),
            "eq" => LeafOp::Eq,
            "neq" => LeafOp::Neq,
            "gt" => LeafOp::Gt,
            "gte" => LeafOp::Gte,
            "lt" => LeafOp::Lt,
            "lte" => LeafOp::Lte,
            "between" => LeafOp::Between,
            "in" => LeafOp::In,
            "isNull" => LeafOp::IsNull,
            "isNotNull" => LeafOp::IsNotNull,
            "like" => LeafOp::Like,
            "regex" => LeafOp::Regex,
            "contains" => LeafOp::Contains,
            "containsAll" => LeafOp::ContainsAll,
            "containsAny" => LeafOp::ContainsAny,
            "startsWith" => LeafOp::StartsWith,
            "endsWith" => LeafOp::EndsWith,
            // Full-text and unknown operators evaluate to false, as the TS evaluator does.
            _ => return Node::False,
        };
        let Some(attribute) = get("attribute").and_then(Value::as_str) else {
            return Node::False;
        };
        let operand = match (get("valueRef").and_then(Value::as_str), get("value")) {
            (Some(r), _) => Operand::Ref(r.to_string()),
            (None, Some(v)) => Operand::Literal(v.clone()),
            (None, None) => Operand::Absent,
        };
        let pattern = match (&operand, leaf_op) {
            (Operand::Literal(Value::String(p)), LeafOp::Like) => p.as_str().and_then(like_regex),
            (Operand::Literal(Value::String(p)), LeafOp::Regex) => {
                p.as_str().and_then(|p| Regex::new(p).ok())
            }
            _ => None,
        };
        Node::Leaf {
            op: leaf_op,
            attribute: attribute.to_string(),
            operand,
            pattern,
        }
    }

    fn eval(&self, record: &Value, ctx: &EvalContext) -> bool {
        match self {
            Node::And(children) => children.iter().all(|c| c.eval(record, ctx)),
            Node::Or(children) => children.iter().any(|c| c.eval(record, ctx)),
            Node::Not(child) => child.as_ref().is_none_or(|c| !c.eval(record, ctx)),
            Node::False => false,
            Node::Leaf {
                op,
                attribute,
                operand,
                pattern,
            } => {
                let x = if attribute == "auth" || attribute.starts_with("auth.") {
                    ctx.auth
                        .as_ref()
                        .and_then(|a| walk(a, attribute.strip_prefix("auth").unwrap_or("")))
                } else {
                    resolve_attribute(record, attribute)
                };
                let operand = match operand {
                    Operand::Literal(v) => Some(v),
                    Operand::Ref(path) => match resolve_ref(path, record, ctx) {
                        Some(v) => Some(v),
                        // An unresolvable reference never matches.
                        None if !matches!(op, LeafOp::IsNull | LeafOp::IsNotNull) => return false,
                        None => None,
                    },
                    Operand::Absent => None,
                };
                eval_leaf(*op, x, operand, pattern.as_ref())
            }
        }
    }
}

fn eval_leaf(op: LeafOp, x: Option<&Value>, t: Option<&Value>, pattern: Option<&Regex>) -> bool {
    match op {
        LeafOp::IsNull => x.is_none_or(Value::is_nil),
        LeafOp::IsNotNull => x.is_some_and(|v| !v.is_nil()),
        _ => {
            let Some(t) = t else {
                // An absent operand behaves like JS `undefined`.
                return match op {
                    LeafOp::Eq => x.is_none(),
                    LeafOp::Neq => x.is_some(),
                    _ => false,
                };
            };
            match op {
                LeafOp::Eq => strict_eq(x, t),
                LeafOp::Neq => !strict_eq(x, t),
                LeafOp::Gt => order(x, t) == Some(Ordering::Greater),
                LeafOp::Gte => matches!(order(x, t), Some(Ordering::Greater | Ordering::Equal)),
                LeafOp::Lt => order(x, t) == Some(Ordering::Less),
                LeafOp::Lte => matches!(order(x, t), Some(Ordering::Less | Ordering::Equal)),
                LeafOp::Between => match t.as_array().map(Vec::as_slice) {
                    Some([low, high]) => {
                        matches!(order(x, low), Some(Ordering::Greater | Ordering::Equal))
                            && matches!(order(x, high), Some(Ordering::Less | Ordering::Equal))
                    }
                    _ => false,
                },
                LeafOp::In => t
                    .as_array()
                    .is_some_and(|items| items.iter().any(|e| strict_eq(x, e))),
                LeafOp::Like | LeafOp::Regex => {
                    let (Some(Value::String(s)), Value::String(p)) = (x, t) else {
                        return false;
                    };
                    let (Some(s), Some(p)) = (s.as_str(), p.as_str()) else {
                        return false;
                    };
                    match pattern {
                        Some(re) => re.is_match(s),
                        None => {
                            let compiled = if op == LeafOp::Like {
                                like_regex(p)
                            } else {
                                Regex::new(p).ok()
                            };
                            compiled.is_some_and(|re| re.is_match(s))
                        }
                    }
                }
                LeafOp::Contains => match (x.and_then(Value::as_str), t.as_str()) {
                    (Some(s), Some(t)) => s.to_lowercase().contains(&t.to_lowercase()),
                    _ => false,
                },
                LeafOp::ContainsAll | LeafOp::ContainsAny => contains_set(op, x, t),
                LeafOp::StartsWith => match (x.and_then(Value::as_str), t.as_str()) {
                    (Some(s), Some(t)) => s.starts_with(t),
                    _ => false,
                },
                LeafOp::EndsWith => match (x.and_then(Value::as_str), t.as_str()) {
                    (Some(s), Some(t)) => s.ends_with(t),
                    _ => false,
                },
                LeafOp::IsNull | LeafOp::IsNotNull => unreachable!("handled above"),
            }
        }
    }
}

/// `containsAll` / `containsAny`: substring rule for string fields (TS client),
/// membership rule for array fields (upstream).
fn contains_set(op: LeafOp, x: Option<&Value>, t: &Value) -> bool {
    let all = op == LeafOp::ContainsAll;
    match x {
        Some(Value::String(s)) => {
            let (Some(s), Some(items)) = (s.as_str(), t.as_array()) else {
                return false;
            };
            let s = s.to_lowercase();
            let hit = |e: &Value| e.as_str().is_some_and(|e| s.contains(&e.to_lowercase()));
            if all {
                items.iter().all(hit)
            } else {
                items.iter().any(hit)
            }
        }
        Some(Value::Array(field)) => {
            let wanted: Vec<&Value> = match t {
                Value::Array(items) => items.iter().collect(),
                scalar => vec![scalar],
            };
            let hit = |e: &&Value| field.iter().any(|f| strict_eq(Some(f), e));
            if all {
                wanted.iter().all(hit)
            } else {
                wanted.iter().any(hit)
            }
        }
        _ => false,
    }
}

/// LIKE -> anchored, case-insensitive regex. `*` and `?` are deliberately left
/// unescaped: the TS client does not escape them, so they act as quantifiers.
fn like_regex(pattern: &str) -> Option<Regex> {
    let mut re = String::from("(?i)^");
    for c in pattern.chars() {
        match c {
            '%' => re.push_str(".*"),
            '_' => re.push('.'),
            '.' | '+' | '^' | '$' | '{' | '}' | '(' | ')' | '|' | '[' | ']' | '\\' => {
                re.push('\\');
                re.push(c);
            }
            c => re.push(c),
        }
    }
    re.push('$');
    Regex::new(&re).ok()
}

fn lookup_literal<'a>(entries: &'a [(Value, Value)], name: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
}

/// Literal top-level key first, then dotted traversal through nested maps.
fn resolve_attribute<'a>(record: &'a Value, attribute: &str) -> Option<&'a Value> {
    let Value::Map(entries) = record else {
        return None;
    };
    lookup_literal(entries, attribute).or_else(|| {
        if attribute.contains('.') {
            walk(record, attribute)
        } else {
            None
        }
    })
}

/// Follows a dotted path (a leading `.` is ignored) through nested maps.
fn walk<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(root, |v, seg| match v {
            Value::Map(entries) => lookup_literal(entries, seg),
            _ => None,
        })
}

fn resolve_ref<'a>(path: &str, record: &'a Value, ctx: &'a EvalContext) -> Option<&'a Value> {
    let (namespace, rest) = path.split_once('.').unwrap_or((path, ""));
    match namespace {
        "data" => walk(record, rest),
        "auth" => ctx.auth.as_ref().and_then(|a| walk(a, rest)),
        _ => None,
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => i.as_f64(),
        Value::F32(f) => Some(f64::from(*f)),
        Value::F64(f) => Some(*f),
        _ => None,
    }
}

/// JavaScript strict equality restricted to MsgPack types; arrays/maps never equal.
pub fn strict_eq(x: Option<&Value>, t: &Value) -> bool {
    let Some(x) = x else { return false };
    if let (Some(a), Some(b)) = (as_number(x), as_number(t)) {
        return a == b;
    }
    match (x, t) {
        (Value::String(a), Value::String(b)) => a.as_bytes() == b.as_bytes(),
        (Value::Boolean(a), Value::Boolean(b)) => a == b,
        (Value::Nil, Value::Nil) => true,
        _ => false,
    }
}

/// JavaScript ToNumber for MsgPack values (arrays, maps, binaries -> NaN).
pub fn to_number(v: &Value) -> f64 {
    match v {
        Value::Nil => 0.0,
        Value::Boolean(b) => f64::from(u8::from(*b)),
        Value::String(s) => s.as_str().map_or(f64::NAN, js_parse_number),
        other => as_number(other).unwrap_or(f64::NAN),
    }
}

fn js_parse_number(s: &str) -> f64 {
    let t = s.trim();
    if t.is_empty() {
        return 0.0;
    }
    let radix = |digits: &str, radix: u32| {
        u64::from_str_radix(digits, radix).map_or(f64::NAN, |n| n as f64)
    };
    match t.get(..2) {
        Some("0x") | Some("0X") => return radix(&t[2..], 16),
        Some("0o") | Some("0O") => return radix(&t[2..], 8),
        Some("0b") | Some("0B") => return radix(&t[2..], 2),
        _ => {}
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    // Rust accepts "inf"/"nan" spellings that JS does not.
    if t.chars()
        .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
    {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// JS relational order: strings by UTF-16 units, otherwise numerically after ToNumber;
/// `None` = unordered (missing field or NaN).
pub fn order(x: Option<&Value>, t: &Value) -> Option<Ordering> {
    let x = x?;
    if let (Value::String(a), Value::String(b)) = (x, t) {
        return Some(cmp_utf16(a.as_str()?, b.as_str()?));
    }
    to_number(x).partial_cmp(&to_number(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(j: serde_json::Value) -> Value {
        rmpv::ext::to_value(j).expect("json converts")
    }

    fn pred(j: serde_json::Value, record: serde_json::Value) -> bool {
        QueryPlan::new(None, Some(&v(j)), None).matches(&v(record))
    }

    #[test]
    fn comparison_operators_follow_js_semantics() {
        let r = json!({"age": 30, "name": "bob", "tags": ["a", "b"], "n": null});
        assert!(pred(
            json!({"op": "eq", "attribute": "age", "value": 30.0}),
            r.clone()
        ));
        assert!(pred(
            json!({"op": "neq", "attribute": "missing", "value": 1}),
            r.clone()
        ));
        assert!(!pred(
            json!({"op": "eq", "attribute": "tags", "value": ["a", "b"]}),
            r.clone()
        ));
        assert!(
            pred(
                json!({"op": "gt", "attribute": "age", "value": "29"}),
                r.clone()
            ),
            "string coerced"
        );
        assert!(pred(
            json!({"op": "lt", "attribute": "name", "value": "carl"}),
            r.clone()
        ));
        assert!(!pred(
            json!({"op": "gt", "attribute": "missing", "value": 1}),
            r.clone()
        ));
        assert!(pred(
            json!({"op": "between", "attribute": "age", "value": [30, 40]}),
            r.clone()
        ));
        assert!(pred(
            json!({"op": "in", "attribute": "name", "value": ["x", "bob"]}),
            r.clone()
        ));
        assert!(pred(json!({"op": "isNull", "attribute": "n"}), r.clone()));
        assert!(pred(
            json!({"op": "isNull", "attribute": "missing"}),
            r.clone()
        ));
        assert!(pred(
            json!({"op": "eq", "attribute": "n", "value": null}),
            r.clone()
        ));
        assert!(!pred(
            json!({"op": "eq", "attribute": "missing", "value": null}),
            r.clone()
        ));
    }

    #[test]
    fn string_operators_and_unknown_ops() {
        let r = json!({"title": "Buy Milk.", "tags": ["x", "y"]});
        assert!(pred(
            json!({"op": "like", "attribute": "title", "value": "buy%"}),
            r.clone()
        ));
        assert!(pred(
            json!({"op": "like", "attribute": "title", "value": "%milk_"}),
            r.clone()
        ));
        assert!(!pred(
            json!({"op": "like", "attribute": "title", "value": "buy"}),
            r.clone()
        ));
        assert!(pred(
            json!({"op": "regex", "attribute": "title", "value": "M[a-z]+"}),
            r.clone()
        ));
        assert!(!pred(
            json!({"op": "regex", "attribute": "title", "value": "("}),
            r.clone()
        ));
        assert!(pred(
            json!({"op": "contains", "attribute": "title", "value": "MILK"}),
            r.clone()
        ));
        assert!(pred(
            json!({"op": "containsAll", "attribute": "title", "value": ["buy", "milk"]}),
            r.clone()
        ));
        assert!(pred(
            json!({"op": "containsAny", "attribute": "tags", "value": ["z", "y"]}),
            r.clone()
        ));
        assert!(!pred(
            json!({"op": "containsAll", "attribute": "tags", "value": ["x", "z"]}),
            r.clone()
        ));
        assert!(pred(
            json!({"op": "startsWith", "attribute": "title", "value": "Buy"}),
            r.clone()
        ));
        assert!(!pred(
            json!({"op": "match", "attribute": "title", "query": "milk"}),
            r.clone()
        ));
        assert!(!pred(json!({"op": "whatever"}), r));
    }

    #[test]
    fn combinators_and_nil_records() {
        let yes = json!({"op": "eq", "attribute": "a", "value": 1});
        let no = json!({"op": "eq", "attribute": "a", "value": 2});
        let r = json!({"a": 1});
        assert!(pred(
            json!({"op": "and", "children": [yes.clone()]}),
            r.clone()
        ));
        assert!(pred(json!({"op": "and", "children": []}), r.clone()));
        assert!(!pred(json!({"op": "or", "children": []}), r.clone()));
        assert!(pred(
            json!({"op": "not", "children": [no.clone()]}),
            r.clone()
        ));
        assert!(pred(json!({"op": "not", "children": []}), r.clone()));
        assert!(
            !pred(json!({"op": "not", "children": []}), json!(null)),
            "nil never matches"
        );
    }

    #[test]
    fn where_and_predicate_are_combined() {
        let plan = QueryPlan::new(
            Some(&v(json!({"done": false}))),
            Some(&v(json!({"op": "gt", "attribute": "p", "value": 2}))),
            None,
        );
        assert!(plan.matches(&v(json!({"done": false, "p": 3}))));
        assert!(!plan.matches(&v(json!({"done": true, "p": 3}))));
        assert!(!plan.matches(&v(json!({"p": 3}))));
        let op_map = QueryPlan::new(Some(&v(json!({"age": {"$gt": 18}}))), None, None);
        assert!(!op_map.matches(&v(json!({"age": 30}))), "no $-operators");
    }

    #[test]
    fn attributes_resolve_literally_then_by_path() {
        let r = json!({"address.city": "A", "address": {"city": "B"}, "geo": {"lat": 1}});
        assert!(pred(
            json!({"op": "eq", "attribute": "address.city", "value": "A"}),
            r.clone()
        ));
        assert!(pred(
            json!({"op": "eq", "attribute": "geo.lat", "value": 1}),
            r
        ));
    }

    #[test]
    fn sort_uses_every_field_then_key_with_missing_last_ascending() {
        let plan = QueryPlan::new(None, None, Some(&v(json!({"p": "desc", "n": "asc"}))));
        let rows = [
            ("a", json!({"p": 1, "n": "z"})),
            ("b", json!({"p": 2, "n": "y"})),
            ("c", json!({"p": 2, "n": "x"})),
            ("d", json!({"n": "a"})),
            ("e", json!({"p": 2, "n": "x"})),
        ];
        let mut positions: Vec<Position> = rows
            .iter()
            .map(|(k, r)| plan.position(k, &v(r.clone())))
            .collect();
        positions.sort_by(|a, b| plan.cmp_positions(a, b));
        let keys: Vec<&str> = positions.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["d", "c", "e", "b", "a"], "desc puts missing first");
        let pos = &positions[1];
        assert_eq!(Position::from_value(&pos.to_value()).as_ref(), Some(pos));
    }

    #[test]
    fn rbac_conditions_resolve_auth_references() {
        let cond = v(json!({"op": "eq", "attribute": "ownerId", "valueRef": "auth.id"}));
        let ctx = EvalContext {
            auth: Some(v(json!({"id": "u1", "roles": ["USER"]}))),
        };
        assert!(evaluate(&cond, &v(json!({"ownerId": "u1"})), &ctx));
        assert!(!evaluate(&cond, &v(json!({"ownerId": "u2"})), &ctx));
        assert!(!evaluate(
            &cond,
            &v(json!({"ownerId": "u1"})),
            &EvalContext::default()
        ));
    }

    #[test]
    fn projection_keeps_listed_fields_only() {
        let fields = vec!["a".to_string()];
        assert_eq!(
            project(Some(&fields), &v(json!({"a": 1, "b": 2}))),
            v(json!({"a": 1}))
        );
        assert_eq!(project(Some(&fields), &v(json!(5))), v(json!(5)));
        assert_eq!(project(Some(&[]), &v(json!({"a": 1}))), v(json!({})));
    }

    #[test]
    fn js_number_parsing() {
        assert_eq!(to_number(&v(json!("0x1A"))), 26.0);
        assert_eq!(to_number(&v(json!(" 1e3 "))), 1000.0);
        assert_eq!(to_number(&v(json!(""))), 0.0);
        assert!(to_number(&v(json!("abc"))).is_nan());
        assert!(to_number(&v(json!("inf"))).is_nan());
    }
}

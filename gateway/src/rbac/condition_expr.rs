//! The textual policy condition language (`conditionExpr`, http-admin-ops.md §4.7),
//! compiled to the predicate-tree JSON that policies store and evaluate.
//!
//! Grammar (`||` binds looser than `&&`, `!` is prefix):
//!
//! ```text
//! expr       = and_expr ( "||" and_expr )*
//! and_expr   = unary ( "&&" unary )*
//! unary      = "!" unary | "(" expr ")" | comparison
//! comparison = path ( cmp_op | word_op ) operand
//! cmp_op     = "==" | "!=" | ">" | "<" | ">=" | "<="
//! word_op    = "in" | "contains" | "containsAll" | "containsAny" | "startsWith" | "endsWith"
//! operand    = path | string | number | "true" | "false"
//! path       = ident ( "." ident )*
//! string     = "'" ( any char except "'" | "''" )* "'"
//! number     = digit+ ( "." digit+ )?
//! ```
//!
//! Mapping to predicate nodes:
//!
//! * `==` `!=` `>` `<` `>=` `<=` become `eq` `neq` `gt` `lt` `gte` `lte`; word operators keep
//!   their name as the node `op`.
//! * The left path is the `attribute`, with a leading `data.` stripped. Other paths stay
//!   verbatim: `auth.*` attributes are resolved against the principal by the evaluator, any
//!   other bare name against the record.
//! * A path operand becomes `valueRef` (full dotted path) and must start with `data` or
//!   `auth`, the only namespaces the evaluator resolves — anything else would be a reference
//!   that silently never matches (typically a forgotten pair of quotes), so it is rejected.
//! * `auth.X OP data.Y` with a comparison operator is rewritten to
//!   `attribute: "Y", valueRef: "auth.X"` with the operator mirrored (`>` ↔ `<`, `>=` ↔ `<=`)
//!   so the meaning is unchanged. Word operators are not symmetric and are never swapped.
//! * `in` requires a path on its right side (there are no list literals).
//! * Literals go to `value`; `&&` / `||` / `!` become `and` / `or` / `not` nodes with
//!   `children` (a chain `a && b && c` is one node with three children).
//!
//! Doubling a quote inside a string (`'O''Brien'`) is an extension of the documented grammar:
//! without it a single quote could not be written at all.

use serde_json::{json, Number, Value};

/// Nesting limit for parentheses and `!`; guards the recursive parser against stack
/// exhaustion on hostile input.
const MAX_DEPTH: usize = 64;

/// Why a `conditionExpr` could not be parsed.
///
/// Displays as `parse error at position <n>: <reason>`, a newline, the input line holding
/// the error, a newline, and a caret under the offending character. Positions count
/// characters (not bytes) from 0 over the whole input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse error at position {position}: {reason}\n{line}\n{caret}")]
pub struct ParseError {
    position: usize,
    reason: String,
    line: String,
    caret: String,
}

impl ParseError {
    fn new(input: &[char], position: usize, reason: impl Into<String>) -> Self {
        let position = position.min(input.len());
        // Only the line holding the error is shown, so the caret lines up even when the
        // expression was written over several lines.
        let start = input[..position]
            .iter()
            .rposition(|&c| c == '\n')
            .map_or(0, |i| i + 1);
        let end = input[position..]
            .iter()
            .position(|&c| c == '\n')
            .map_or(input.len(), |i| position + i);
        let line: String = input[start..end].iter().collect();
        // Tabs are copied into the padding so the caret stays aligned in any tab width.
        let mut caret: String = input[start..position]
            .iter()
            .map(|&c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        caret.push('^');
        ParseError {
            position,
            reason: reason.into(),
            line: line.trim_end_matches('\r').to_string(),
            caret,
        }
    }

    /// Character offset (0-based) of the error in the input.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The reason alone, without position, snippet or caret.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Parses a `conditionExpr` into a predicate-tree JSON value.
///
/// `data.ownerId == auth.id` → `{"op":"eq","attribute":"ownerId","valueRef":"auth.id"}`.
pub fn parse(input: &str) -> Result<Value, ParseError> {
    let mut parser = Parser {
        lexer: Lexer {
            chars: input.chars().collect(),
            pos: 0,
        },
        peeked: None,
        depth: 0,
    };
    let node = parser.or_expr()?;
    let end = parser.bump()?;
    if end.tok != Tok::Eof {
        return Err(parser.error(
            end.pos,
            format!("expected '&&', '||' or end of input, found {}", end.tok),
        ));
    }
    Ok(node)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Neq,
    Gt,
    Lt,
    Gte,
    Lte,
}

impl CmpOp {
    fn node_op(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Neq => "neq",
            CmpOp::Gt => "gt",
            CmpOp::Lt => "lt",
            CmpOp::Gte => "gte",
            CmpOp::Lte => "lte",
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Neq => "!=",
            CmpOp::Gt => ">",
            CmpOp::Lt => "<",
            CmpOp::Gte => ">=",
            CmpOp::Lte => "<=",
        }
    }

    /// The operator that keeps the meaning when both sides trade places (`a > b` ⇔ `b < a`).
    fn mirrored(self) -> CmpOp {
        match self {
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Gte => CmpOp::Lte,
            CmpOp::Lte => CmpOp::Gte,
            same => same,
        }
    }
}

/// Word operators, spelled exactly as the predicate node ops they become.
const WORD_OPS: [&str; 6] = [
    "in",
    "contains",
    "containsAll",
    "containsAny",
    "startsWith",
    "endsWith",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Identifiers joined by `.`; also carries word operators and `true`/`false`, whose
    /// meaning depends on where they stand.
    Path(String),
    Str(String),
    Num(Number),
    Cmp(CmpOp),
    LParen,
    RParen,
    Not,
    And,
    Or,
    Eof,
}

impl std::fmt::Display for Tok {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Path(p) => write!(f, "'{p}'"),
            Tok::Str(s) => write!(f, "string '{s}'"),
            Tok::Num(n) => write!(f, "number {n}"),
            Tok::Cmp(op) => write!(f, "'{}'", op.symbol()),
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::Not => f.write_str("'!'"),
            Tok::And => f.write_str("'&&'"),
            Tok::Or => f.write_str("'||'"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

#[derive(Debug, Clone)]
struct Spanned {
    tok: Tok,
    pos: usize,
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

fn is_ident_continue(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

impl Lexer {
    fn at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn error(&self, pos: usize, reason: impl Into<String>) -> ParseError {
        ParseError::new(&self.chars, pos, reason)
    }

    fn next_token(&mut self) -> Result<Spanned, ParseError> {
        while self.at(0).is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
        let pos = self.pos;
        let Some(c) = self.at(0) else {
            return Ok(Spanned { tok: Tok::Eof, pos });
        };
        let followed_by = |expected: char| self.at(1) == Some(expected);
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '!' if followed_by('=') => (Tok::Cmp(CmpOp::Neq), 2),
            '!' => (Tok::Not, 1),
            '=' if followed_by('=') => (Tok::Cmp(CmpOp::Eq), 2),
            '=' => return Err(self.error(pos, "'=' is not an operator; use '==' to compare")),
            '>' if followed_by('=') => (Tok::Cmp(CmpOp::Gte), 2),
            '>' => (Tok::Cmp(CmpOp::Gt), 1),
            '<' if followed_by('=') => (Tok::Cmp(CmpOp::Lte), 2),
            '<' => (Tok::Cmp(CmpOp::Lt), 1),
            '&' if followed_by('&') => (Tok::And, 2),
            '&' => return Err(self.error(pos, "expected '&&'")),
            '|' if followed_by('|') => (Tok::Or, 2),
            '|' => return Err(self.error(pos, "expected '||'")),
            '\'' => return self.string(pos),
            c if c.is_ascii_digit() => return self.number(pos),
            c if is_ident_start(c) => return self.path(pos),
            other => return Err(self.error(pos, format!("unexpected character '{other}'"))),
        };
        self.pos += len;
        Ok(Spanned { tok, pos })
    }

    fn string(&mut self, start: usize) -> Result<Spanned, ParseError> {
        self.pos += 1;
        let mut text = String::new();
        loop {
            match self.at(0) {
                None => return Err(self.error(start, "unterminated string literal")),
                Some('\'') if self.at(1) == Some('\'') => {
                    text.push('\'');
                    self.pos += 2;
                }
                Some('\'') => {
                    self.pos += 1;
                    return Ok(Spanned {
                        tok: Tok::Str(text),
                        pos: start,
                    });
                }
                Some(c) => {
                    text.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn number(&mut self, start: usize) -> Result<Spanned, ParseError> {
        self.skip_digits();
        let mut fractional = false;
        if self.at(0) == Some('.') {
            if !self.at(1).is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.error(self.pos + 1, "expected a digit after '.'"));
            }
            fractional = true;
            self.pos += 1;
            self.skip_digits();
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        // Integers stay integers so `data.n == 3` compares as an integer on the wire;
        // integers beyond u64 fall back to a float rather than failing.
        let number = match (fractional, text.parse::<u64>()) {
            (false, Ok(n)) => Some(Number::from(n)),
            _ => text.parse::<f64>().ok().and_then(Number::from_f64),
        };
        let Some(number) = number else {
            return Err(self.error(start, "number out of range"));
        };
        Ok(Spanned {
            tok: Tok::Num(number),
            pos: start,
        })
    }

    fn skip_digits(&mut self) {
        while self.at(0).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn path(&mut self, start: usize) -> Result<Spanned, ParseError> {
        loop {
            while self.at(0).is_some_and(is_ident_continue) {
                self.pos += 1;
            }
            if self.at(0) != Some('.') {
                break;
            }
            if !self.at(1).is_some_and(is_ident_start) {
                return Err(self.error(self.pos + 1, "expected an identifier after '.'"));
            }
            self.pos += 1;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        Ok(Spanned {
            tok: Tok::Path(text),
            pos: start,
        })
    }
}

/// Right-hand side of a comparison.
enum Operand {
    Path(String),
    Literal(Value),
}

struct Parser {
    lexer: Lexer,
    /// One token of lookahead, lexed lazily so the first error in reading order wins.
    peeked: Option<Spanned>,
    depth: usize,
}

impl Parser {
    fn error(&self, pos: usize, reason: impl Into<String>) -> ParseError {
        self.lexer.error(pos, reason)
    }

    fn peek(&mut self) -> Result<&Spanned, ParseError> {
        let next = match self.peeked.take() {
            Some(t) => t,
            None => self.lexer.next_token()?,
        };
        Ok(self.peeked.insert(next))
    }

    fn bump(&mut self) -> Result<Spanned, ParseError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next_token(),
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(
                pos,
                format!("expression nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        Ok(())
    }

    fn or_expr(&mut self) -> Result<Value, ParseError> {
        let mut items = vec![self.and_expr()?];
        while self.peek()?.tok == Tok::Or {
            self.bump()?;
            items.push(self.and_expr()?);
        }
        Ok(combine("or", items))
    }

    fn and_expr(&mut self) -> Result<Value, ParseError> {
        let mut items = vec![self.unary()?];
        while self.peek()?.tok == Tok::And {
            self.bump()?;
            items.push(self.unary()?);
        }
        Ok(combine("and", items))
    }

    fn unary(&mut self) -> Result<Value, ParseError> {
        let next = self.peek()?.clone();
        match next.tok {
            Tok::Not => {
                self.bump()?;
                self.enter(next.pos)?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(json!({"op": "not", "children": [inner]}))
            }
            Tok::LParen => {
                self.bump()?;
                self.enter(next.pos)?;
                let inner = self.or_expr()?;
                let close = self.bump()?;
                if close.tok != Tok::RParen {
                    return Err(self.error(
                        close.pos,
                        format!(
                            "expected ')' to close the '(' at position {}, found {}",
                            next.pos, close.tok
                        ),
                    ));
                }
                self.depth -= 1;
                Ok(inner)
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Value, ParseError> {
        let first = self.bump()?;
        let Tok::Path(lhs) = first.tok else {
            return Err(self.error(
                first.pos,
                format!(
                    "expected a path (such as data.ownerId), '(' or '!', found {}",
                    first.tok
                ),
            ));
        };
        let op = self.bump()?;
        match op.tok {
            Tok::Cmp(cmp) => {
                let rhs = self.operand(cmp.symbol())?;
                Ok(comparison_node(cmp, &lhs, rhs))
            }
            Tok::Path(word) if WORD_OPS.contains(&word.as_str()) => {
                let rhs_pos = self.peek()?.pos;
                let rhs = self.operand(&word)?;
                if word == "in" {
                    if let Operand::Literal(v) = &rhs {
                        return Err(self.error(
                            rhs_pos,
                            format!("right side of 'in' must be a path, found {}", describe(v)),
                        ));
                    }
                }
                Ok(leaf(&word, attribute_of(&lhs), rhs))
            }
            other => Err(self.error(
                op.pos,
                format!(
                    "expected a comparison operator (== != > < >= <=) or one of in, contains, \
                     containsAll, containsAny, startsWith, endsWith after '{lhs}', found {other}"
                ),
            )),
        }
    }

    fn operand(&mut self, after: &str) -> Result<Operand, ParseError> {
        let next = self.bump()?;
        match next.tok {
            Tok::Path(p) if p == "true" => Ok(Operand::Literal(Value::Bool(true))),
            Tok::Path(p) if p == "false" => Ok(Operand::Literal(Value::Bool(false))),
            Tok::Path(p) => {
                let root = p.split('.').next().unwrap_or_default();
                if root != "data" && root != "auth" {
                    return Err(self.error(
                        next.pos,
                        format!(
                            "a path operand must start with 'data.' or 'auth.', found '{p}' \
                             (quote text literals: '{p}')"
                        ),
                    ));
                }
                Ok(Operand::Path(p))
            }
            Tok::Str(s) => Ok(Operand::Literal(Value::String(s))),
            Tok::Num(n) => Ok(Operand::Literal(Value::Number(n))),
            other => Err(self.error(
                next.pos,
                format!(
                    "expected a path, string, number, true or false after '{after}', found {other}"
                ),
            )),
        }
    }
}

fn describe(literal: &Value) -> String {
    match literal {
        Value::String(s) => format!("string '{s}'"),
        Value::Number(n) => format!("number {n}"),
        other => other.to_string(),
    }
}

/// A chain of one operand is that operand; longer chains become one combinator node.
fn combine(op: &str, mut items: Vec<Value>) -> Value {
    if items.len() == 1 {
        if let Some(only) = items.pop() {
            return only;
        }
    }
    json!({"op": op, "children": items})
}

fn is_data_path(path: &str) -> bool {
    path.starts_with("data.")
}

fn is_auth_path(path: &str) -> bool {
    path == "auth" || path.starts_with("auth.")
}

fn attribute_of(path: &str) -> &str {
    path.strip_prefix("data.").unwrap_or(path)
}

fn comparison_node(cmp: CmpOp, lhs: &str, rhs: Operand) -> Value {
    match rhs {
        // Canonical form keeps the record field as the attribute and the principal as the
        // reference, so `auth.x OP data.y` is turned around with the operator mirrored.
        Operand::Path(r) if is_auth_path(lhs) && is_data_path(&r) => leaf(
            cmp.mirrored().node_op(),
            attribute_of(&r),
            Operand::Path(lhs.to_string()),
        ),
        rhs => leaf(cmp.node_op(), attribute_of(lhs), rhs),
    }
}

fn leaf(op: &str, attribute: &str, operand: Operand) -> Value {
    match operand {
        Operand::Path(r) => json!({"op": op, "attribute": attribute, "valueRef": r}),
        Operand::Literal(v) => json!({"op": op, "attribute": attribute, "value": v}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Value {
        parse(input).unwrap_or_else(|e| panic!("`{input}` should parse:\n{e}"))
    }

    fn err(input: &str) -> ParseError {
        match parse(input) {
            Ok(v) => panic!("`{input}` should fail, got {v}"),
            Err(e) => e,
        }
    }

    #[test]
    fn spec_example_maps_to_valueref() {
        assert_eq!(
            ok("data.ownerId == auth.id"),
            json!({"op": "eq", "attribute": "ownerId", "valueRef": "auth.id"})
        );
    }

    #[test]
    fn comparison_operators_map_to_node_ops() {
        for (sym, op) in [
            ("==", "eq"),
            ("!=", "neq"),
            (">", "gt"),
            ("<", "lt"),
            (">=", "gte"),
            ("<=", "lte"),
        ] {
            assert_eq!(
                ok(&format!("data.age {sym} 18")),
                json!({"op": op, "attribute": "age", "value": 18}),
                "operator {sym}"
            );
        }
    }

    #[test]
    fn literals_strings_numbers_booleans() {
        assert_eq!(
            ok("data.name == 'hello world'"),
            json!({"op": "eq", "attribute": "name", "value": "hello world"})
        );
        assert_eq!(
            ok("data.score >= 9.5"),
            json!({"op": "gte", "attribute": "score", "value": 9.5})
        );
        assert_eq!(
            ok("data.done == false"),
            json!({"op": "eq", "attribute": "done", "value": false})
        );
        assert_eq!(
            ok("data.done != true"),
            json!({"op": "neq", "attribute": "done", "value": true})
        );
        assert_eq!(
            ok("data.name == 'O''Brien'"),
            json!({"op": "eq", "attribute": "name", "value": "O'Brien"})
        );
        assert_eq!(
            ok("data.name == ''"),
            json!({"op": "eq", "attribute": "name", "value": ""})
        );
        let big = ok("data.n == 99999999999999999999");
        assert_eq!(
            big["value"].as_f64(),
            Some(1e20),
            "beyond u64 becomes a float"
        );
        assert!(
            ok("data.n == 7")["value"].is_u64(),
            "integers stay integers"
        );
    }

    #[test]
    fn paths_keep_non_data_roots_and_nested_segments() {
        assert_eq!(
            ok("data.address.city == 'Oslo'"),
            json!({"op": "eq", "attribute": "address.city", "value": "Oslo"})
        );
        assert_eq!(
            ok("auth.id == 'u1'"),
            json!({"op": "eq", "attribute": "auth.id", "value": "u1"})
        );
        assert_eq!(
            ok("ownerId == 'u1'"),
            json!({"op": "eq", "attribute": "ownerId", "value": "u1"})
        );
        assert_eq!(
            ok("data.createdBy == data.ownerId"),
            json!({"op": "eq", "attribute": "createdBy", "valueRef": "data.ownerId"})
        );
        assert_eq!(
            ok("data.true == true"),
            json!({"op": "eq", "attribute": "true", "value": true}),
            "keywords are only special where an operand is expected"
        );
    }

    #[test]
    fn auth_on_the_left_of_data_is_swapped_with_mirrored_operator() {
        assert_eq!(
            ok("auth.id == data.ownerId"),
            json!({"op": "eq", "attribute": "ownerId", "valueRef": "auth.id"})
        );
        assert_eq!(
            ok("auth.id != data.ownerId"),
            json!({"op": "neq", "attribute": "ownerId", "valueRef": "auth.id"})
        );
        for (sym, op) in [(">", "lt"), ("<", "gt"), (">=", "lte"), ("<=", "gte")] {
            assert_eq!(
                ok(&format!("auth.level {sym} data.minLevel")),
                json!({"op": op, "attribute": "minLevel", "valueRef": "auth.level"}),
                "auth.level {sym} data.minLevel"
            );
        }
        // Only the auth/data pairing is turned around.
        assert_eq!(
            ok("auth.level > auth.other"),
            json!({"op": "gt", "attribute": "auth.level", "valueRef": "auth.other"})
        );
    }

    #[test]
    fn every_word_operator() {
        assert_eq!(
            ok("data.role in auth.roles"),
            json!({"op": "in", "attribute": "role", "valueRef": "auth.roles"})
        );
        assert_eq!(
            ok("auth.id in data.members"),
            json!({"op": "in", "attribute": "auth.id", "valueRef": "data.members"}),
            "word operators are never swapped"
        );
        assert_eq!(
            ok("data.title contains 'draft'"),
            json!({"op": "contains", "attribute": "title", "value": "draft"})
        );
        assert_eq!(
            ok("data.tags containsAll 'a'"),
            json!({"op": "containsAll", "attribute": "tags", "value": "a"})
        );
        assert_eq!(
            ok("data.tags containsAny auth.roles"),
            json!({"op": "containsAny", "attribute": "tags", "valueRef": "auth.roles"})
        );
        assert_eq!(
            ok("data.path startsWith 'docs/'"),
            json!({"op": "startsWith", "attribute": "path", "value": "docs/"})
        );
        assert_eq!(
            ok("data.file endsWith '.md'"),
            json!({"op": "endsWith", "attribute": "file", "value": ".md"})
        );
    }

    #[test]
    fn in_requires_a_path_on_the_right() {
        let e = err("data.role in 'admin'");
        assert_eq!(e.position(), 13);
        assert_eq!(
            e.reason(),
            "right side of 'in' must be a path, found string 'admin'"
        );
        assert_eq!(err("data.n in 5").position(), 10);
        assert_eq!(err("data.n in true").position(), 10);
    }

    #[test]
    fn and_binds_tighter_than_or_and_chains_flatten() {
        let a = json!({"op": "eq", "attribute": "a", "value": 1});
        let b = json!({"op": "eq", "attribute": "b", "value": 2});
        let c = json!({"op": "eq", "attribute": "c", "value": 3});
        assert_eq!(
            ok("data.a == 1 || data.b == 2 && data.c == 3"),
            json!({"op": "or", "children": [a, {"op": "and", "children": [b, c]}]})
        );
        assert_eq!(
            ok("data.a == 1 && data.b == 2 || data.c == 3"),
            json!({"op": "or", "children": [{"op": "and", "children": [a, b]}, c]})
        );
        assert_eq!(
            ok("(data.a == 1 || data.b == 2) && data.c == 3"),
            json!({"op": "and", "children": [{"op": "or", "children": [a, b]}, c]})
        );
        assert_eq!(
            ok("data.a == 1 && data.b == 2 && data.c == 3"),
            json!({"op": "and", "children": [a, b, c]})
        );
        assert_eq!(ok("((data.a == 1))"), a, "redundant parentheses vanish");
    }

    #[test]
    fn not_is_prefix_and_binds_tightest() {
        let a = json!({"op": "eq", "attribute": "a", "value": 1});
        let b = json!({"op": "eq", "attribute": "b", "value": 2});
        assert_eq!(
            ok("!data.a == 1 && data.b == 2"),
            json!({"op": "and", "children": [{"op": "not", "children": [a]}, b]})
        );
        assert_eq!(
            ok("!(data.a == 1 || data.b == 2)"),
            json!({"op": "not", "children": [{"op": "or", "children": [a, b]}]})
        );
        assert_eq!(
            ok("!!data.a == 1"),
            json!({"op": "not", "children": [{"op": "not", "children": [a]}]})
        );
    }

    #[test]
    fn whitespace_is_free_between_tokens() {
        assert_eq!(
            ok("  data.a==1&&(auth.id!=data.b)\n"),
            json!({"op": "and", "children": [
                {"op": "eq", "attribute": "a", "value": 1},
                {"op": "neq", "attribute": "b", "valueRef": "auth.id"}
            ]})
        );
    }

    #[test]
    fn error_display_has_position_snippet_and_caret() {
        let e = err("data.x ==");
        assert_eq!(
            e.to_string(),
            "parse error at position 9: expected a path, string, number, true or false after \
             '==', found end of input\ndata.x ==\n         ^"
        );
        let e = err("data.x = 1");
        assert_eq!(
            e.to_string(),
            "parse error at position 7: '=' is not an operator; use '==' to compare\n\
             data.x = 1\n       ^"
        );
    }

    #[test]
    fn error_positions() {
        let cases: [(&str, usize, &str); 14] = [
            (
                "",
                0,
                "expected a path (such as data.ownerId), '(' or '!', found end of input",
            ),
            ("data.x", 6, "expected a comparison operator"),
            (
                "data.x == 1 extra",
                12,
                "expected '&&', '||' or end of input, found 'extra'",
            ),
            (
                "(data.x == 1",
                12,
                "expected ')' to close the '(' at position 0",
            ),
            (
                "data.x == 1)",
                11,
                "expected '&&', '||' or end of input, found ')'",
            ),
            ("data.x == 'abc", 10, "unterminated string literal"),
            ("data.x == 1 & data.y == 2", 12, "expected '&&'"),
            ("data.x == 1 | data.y == 2", 12, "expected '||'"),
            ("data.x # 1", 7, "unexpected character '#'"),
            ("data. == 1", 5, "expected an identifier after '.'"),
            ("data.x == 5.", 12, "expected a digit after '.'"),
            ("data.x == -1", 10, "unexpected character '-'"),
            (
                "data.x == active",
                10,
                "a path operand must start with 'data.' or 'auth.'",
            ),
            ("data.x == 1 && ", 15, "expected a path"),
        ];
        for (input, pos, reason) in cases {
            let e = err(input);
            assert_eq!(e.position(), pos, "position for `{input}`: {e}");
            assert!(e.reason().starts_with(reason), "reason for `{input}`: {e}");
        }
    }

    #[test]
    fn operator_missing_between_paths() {
        let e = err("data.x data.y");
        assert_eq!(e.position(), 7);
        assert!(
            e.reason().ends_with("after 'data.x', found 'data.y'"),
            "{e}"
        );
        let e = err("'a' == data.x");
        assert_eq!(e.position(), 0);
        assert!(e.reason().ends_with("found string 'a'"), "{e}");
    }

    #[test]
    fn multiline_errors_show_the_offending_line() {
        let e = err("data.a == 1 &&\n  data.b ==");
        assert_eq!(e.position(), 26);
        let caret = format!("{}^", " ".repeat(11));
        assert_eq!(
            e.to_string().split('\n').skip(1).collect::<Vec<_>>(),
            ["  data.b ==", caret.as_str()]
        );
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let e = err("data.név == 'é' ==");
        assert_eq!(e.position(), 16);
        assert!(e.to_string().ends_with(&format!("\n{}^", " ".repeat(16))));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!(
            "{}data.a == 1{}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert!(parse(&deep).is_ok(), "the limit itself is allowed");
        let too_deep = format!("{}data.a == 1", "(".repeat(10_000));
        let e = err(&too_deep);
        assert_eq!(e.position(), MAX_DEPTH);
        assert!(e.reason().contains("nested too deeply"));
        let nots = format!("{}data.a == 1", "!".repeat(10_000));
        assert_eq!(err(&nots).position(), MAX_DEPTH);
    }
}

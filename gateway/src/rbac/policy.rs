//! Permission policies (core.md §3.3): the policy types, the admin API request shape
//! (http-admin-ops.md §4.7), a thread-safe in-memory store and the decision algorithm.

use super::condition_expr::{self, ParseError};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use topgun_proto::predicate::{evaluate, EvalContext};

/// The role that bypasses every policy. Exact, lowercase match only: upstream tests also
/// use `ADMIN`, which upstream does not treat as superuser (core.md §3.1).
pub const ADMIN_ROLE: &str = "admin";

/// What an operation does to a map; policies name the action they govern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Sync, Merkle and query reads.
    Read,
    /// Every client write, including LWW removes.
    Write,
    /// Accepted in policies for compatibility; upstream never produces it for operations.
    Remove,
    /// In a policy: matches any requested action.
    All,
}

impl Action {
    /// Wire spelling (`read`, `write`, `remove`, `all`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Remove => "remove",
            Action::All => "all",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a matching policy grants or refuses the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Grants the operation unless a matching deny exists.
    Allow,
    /// Refuses the operation; wins over any allow.
    Deny,
}

/// One permission policy, as stored and as returned by the admin API (`PolicyResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Unique id; storing a policy with an existing id replaces it.
    pub id: String,
    /// `*`, or dot-separated segments where a `*` segment matches any one segment.
    pub map_pattern: String,
    /// The action governed; [`Action::All`] governs every action.
    pub action: Action,
    /// Allow or deny.
    pub effect: Effect,
    /// Optional predicate tree (query predicate format); the policy applies only when it
    /// evaluates true. Omitted from JSON when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub condition: Option<serde_json::Value>,
}

impl Policy {
    /// True if this policy governs `action` (same action, or the policy says `all`).
    pub fn governs(&self, action: Action) -> bool {
        self.action == Action::All || self.action == action
    }

    /// True if the map pattern matches `map_name` (see [`map_pattern_matches`]).
    pub fn matches_map(&self, map_name: &str) -> bool {
        map_pattern_matches(&self.map_pattern, map_name)
    }
}

/// Map pattern matching of core.md §3.3: `*` matches every name; otherwise pattern and
/// name are split on `.` and match iff they have the same number of segments and each
/// pattern segment is `*` or equal to the name's segment.
///
/// `users.*` matches `users.42` but neither `users` nor `users.a.b`.
pub fn map_pattern_matches(pattern: &str, map_name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let mut pattern_segments = pattern.split('.');
    let mut name_segments = map_name.split('.');
    loop {
        match (pattern_segments.next(), name_segments.next()) {
            (None, None) => return true,
            (Some(p), Some(n)) if p == "*" || p == n => {}
            _ => return false,
        }
    }
}

/// Body of `POST /api/admin/policies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRequest {
    /// Id to create or replace; a UUID v4 is generated when absent or empty.
    #[serde(default)]
    pub id: Option<String>,
    /// See [`Policy::map_pattern`].
    pub map_pattern: String,
    /// See [`Policy::action`].
    pub action: Action,
    /// See [`Policy::effect`].
    pub effect: Effect,
    /// Predicate tree; wins over `condition_expr` when both are present.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub condition: Option<serde_json::Value>,
    /// Textual condition, compiled by [`condition_expr::parse`].
    #[serde(default)]
    pub condition_expr: Option<String>,
}

/// Why a [`PolicyRequest`] could not become a [`Policy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRequestError {
    /// `conditionExpr` did not parse; displays the parser's message verbatim.
    #[error(transparent)]
    ConditionExpr(#[from] ParseError),
}

impl PolicyRequestError {
    /// Name of the request field at fault, for the `field` member of the 400 body.
    pub fn field(&self) -> &'static str {
        match self {
            PolicyRequestError::ConditionExpr(_) => "conditionExpr",
        }
    }
}

impl PolicyRequest {
    /// Builds the policy to store: generates a missing id, takes `condition` over
    /// `conditionExpr`, and compiles `conditionExpr` otherwise.
    ///
    /// An empty or blank `conditionExpr` means "no condition" — admin forms send the empty
    /// string for an untouched field, and rejecting that would be unhelpful. A JSON `null`
    /// `condition` likewise means none.
    pub fn into_policy(self) -> Result<Policy, PolicyRequestError> {
        let condition = match (self.condition, self.condition_expr) {
            (Some(tree), _) if !tree.is_null() => Some(tree),
            (_, Some(expr)) if !expr.trim().is_empty() => Some(condition_expr::parse(&expr)?),
            _ => None,
        };
        let id = match self.id {
            Some(id) if !id.is_empty() => id,
            _ => uuid::Uuid::new_v4().to_string(),
        };
        Ok(Policy {
            id,
            map_pattern: self.map_pattern,
            action: self.action,
            effect: self.effect,
            condition,
        })
    }
}

/// The authenticated caller: JWT `sub` and roles (core.md §2.4, §3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// User id (`sub`).
    pub id: String,
    /// Free-form role strings.
    pub roles: Vec<String>,
}

impl Principal {
    /// Builds a principal from an id and roles.
    pub fn new(id: impl Into<String>, roles: Vec<String>) -> Self {
        Principal {
            id: id.into(),
            roles,
        }
    }

    /// True if the principal holds the exact role `admin`.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    /// The `{id, roles}` map that policy conditions see as `auth`.
    pub fn auth_value(&self) -> rmpv::Value {
        rmpv::Value::Map(vec![
            (rmpv::Value::from("id"), rmpv::Value::from(self.id.as_str())),
            (
                rmpv::Value::from("roles"),
                rmpv::Value::Array(
                    self.roles
                        .iter()
                        .map(|r| rmpv::Value::from(r.as_str()))
                        .collect(),
                ),
            ),
        ])
    }
}

/// Outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The operation may proceed.
    Allow,
    /// The operation is refused; the text says why, for logs. Client-facing wording
    /// (`write access denied for map: <map>`) is the caller's.
    Deny(String),
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// A policy condition converted once to the MsgPack form the evaluator takes.
#[derive(Debug)]
struct CompiledCondition {
    tree: rmpv::Value,
    /// Whether any leaf looks at the record; decides how nil data is treated.
    reads_data: bool,
}

#[derive(Debug)]
struct Entry {
    policy: Policy,
    condition: Option<CompiledCondition>,
}

impl Entry {
    fn new(policy: Policy) -> Self {
        let condition = policy.condition.as_ref().map(|json| CompiledCondition {
            // A tree that cannot be converted evaluates as nil, which matches nothing.
            tree: rmpv::ext::to_value(json).unwrap_or(rmpv::Value::Nil),
            reads_data: reads_data(json),
        });
        Entry { policy, condition }
    }

    /// Nil data (OR ops, tombstones) has no fields: a condition that reads the record is
    /// false there, while an `auth`-only condition is still answered, against an empty map
    /// (the evaluator refuses nil records outright).
    fn condition_holds(&self, data: &rmpv::Value, ctx: &EvalContext) -> bool {
        let Some(condition) = &self.condition else {
            return true;
        };
        if !data.is_nil() {
            return evaluate(&condition.tree, data, ctx);
        }
        !condition.reads_data && evaluate(&condition.tree, &rmpv::Value::Map(Vec::new()), ctx)
    }
}

/// True if a predicate tree refers to the record: a leaf attribute outside `auth`, or a
/// `valueRef` into `data`. Combinators look at their children.
fn reads_data(node: &serde_json::Value) -> bool {
    let Some(fields) = node.as_object() else {
        return false;
    };
    match fields.get("op").and_then(serde_json::Value::as_str) {
        Some("and" | "or" | "not") => fields
            .get("children")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|children| children.iter().any(reads_data)),
        _ => {
            let attribute_reads = fields
                .get("attribute")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|a| a != "auth" && !a.starts_with("auth."));
            let ref_reads = fields
                .get("valueRef")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|r| r == "data" || r.starts_with("data."));
            attribute_reads || ref_reads
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Keyed by id: replacement by id and a stable listing order come for free.
    entries: BTreeMap<String, Entry>,
    version: u64,
}

/// Thread-safe in-memory policy store.
///
/// [`PolicyStore::version`] grows by one on every call that changes the stored set, so
/// holders can cheaply notice changes (e.g. to persist or republish them).
#[derive(Debug, Default)]
pub struct PolicyStore {
    inner: RwLock<Inner>,
}

impl PolicyStore {
    /// An empty store (which allows everything, core.md §3.3).
    pub fn new() -> Self {
        Self::default()
    }

    /// All policies, ordered by id.
    pub fn list(&self) -> Vec<Policy> {
        self.inner
            .read()
            .entries
            .values()
            .map(|e| e.policy.clone())
            .collect()
    }

    /// The policy with this id, if stored.
    pub fn get(&self, id: &str) -> Option<Policy> {
        self.inner.read().entries.get(id).map(|e| e.policy.clone())
    }

    /// Stores `policy`, replacing any policy with the same id; returns the replaced one.
    /// Storing an identical policy is not a change and leaves the version alone.
    pub fn upsert(&self, policy: Policy) -> Option<Policy> {
        let mut inner = self.inner.write();
        let id = policy.id.clone();
        let unchanged = inner.entries.get(&id).is_some_and(|e| e.policy == policy);
        if unchanged {
            return Some(policy);
        }
        let previous = inner.entries.insert(id, Entry::new(policy));
        inner.version += 1;
        previous.map(|e| e.policy)
    }

    /// Removes the policy with this id; false if there was none.
    pub fn delete(&self, id: &str) -> bool {
        let mut inner = self.inner.write();
        let removed = inner.entries.remove(id).is_some();
        if removed {
            inner.version += 1;
        }
        removed
    }

    /// Replaces the whole set (hot reload from a shared source). Later duplicates of an id
    /// win. Reloading the set already held is not a change.
    pub fn replace_all(&self, policies: Vec<Policy>) {
        let entries: BTreeMap<String, Entry> = policies
            .into_iter()
            .map(|p| (p.id.clone(), Entry::new(p)))
            .collect();
        let mut inner = self.inner.write();
        let same = inner.entries.len() == entries.len()
            && inner
                .entries
                .values()
                .zip(entries.values())
                .all(|(a, b)| a.policy == b.policy);
        if !same {
            inner.entries = entries;
            inner.version += 1;
        }
    }

    /// True when no policy is stored (policies are then switched off).
    pub fn is_empty(&self) -> bool {
        self.inner.read().entries.is_empty()
    }

    /// Number of stored policies.
    pub fn len(&self) -> usize {
        self.inner.read().entries.len()
    }

    /// Change counter: starts at 0, +1 per change.
    pub fn version(&self) -> u64 {
        self.inner.read().version
    }
}

/// Decides whether `principal` may perform `action` on `resource` (a map, topic or
/// counter name) with `data` (the written value; nil when there is none), exactly as
/// core.md §3.3:
///
/// 1. empty store → allow;
/// 2. role `admin` → allow;
/// 3. of the policies whose pattern matches and whose action is `action` or `all`, keep
///    those without a condition or whose condition holds (with `auth = {id, roles}`,
///    absent without a principal);
/// 4. any of them denies → deny;
/// 5. any of them allows → allow;
/// 6. otherwise deny.
pub fn decide(
    store: &PolicyStore,
    principal: Option<&Principal>,
    action: Action,
    resource: &str,
    data: &rmpv::Value,
) -> Decision {
    let inner = store.inner.read();
    if inner.entries.is_empty() || principal.is_some_and(Principal::is_admin) {
        return Decision::Allow;
    }
    let ctx = EvalContext {
        auth: principal.map(Principal::auth_value),
    };
    let mut allowed = false;
    for entry in inner.entries.values() {
        let policy = &entry.policy;
        if !policy.governs(action)
            || !policy.matches_map(resource)
            || !entry.condition_holds(data, &ctx)
        {
            continue;
        }
        match policy.effect {
            // Deny wins, so the first one settles it; id order makes the named policy stable.
            Effect::Deny => {
                return Decision::Deny(format!(
                    "{action} on '{resource}' denied by policy '{}'",
                    policy.id
                ))
            }
            Effect::Allow => allowed = true,
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::Deny(format!("no policy allows {action} on '{resource}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(id: &str, pattern: &str, action: Action, effect: Effect) -> Policy {
        Policy {
            id: id.to_string(),
            map_pattern: pattern.to_string(),
            action,
            effect,
            condition: None,
        }
    }

    fn with_condition(mut p: Policy, expr: &str) -> Policy {
        p.condition = Some(condition_expr::parse(expr).expect("test condition parses"));
        p
    }

    fn store(policies: Vec<Policy>) -> PolicyStore {
        let store = PolicyStore::new();
        store.replace_all(policies);
        store
    }

    fn user(id: &str, roles: &[&str]) -> Principal {
        Principal::new(id, roles.iter().map(|r| r.to_string()).collect())
    }

    fn value(j: serde_json::Value) -> rmpv::Value {
        rmpv::ext::to_value(j).expect("json converts")
    }

    fn allowed(
        s: &PolicyStore,
        p: Option<&Principal>,
        action: Action,
        map: &str,
        data: serde_json::Value,
    ) -> bool {
        decide(s, p, action, map, &value(data)).is_allowed()
    }

    #[test]
    fn pattern_matching_table() {
        let cases = [
            ("*", "users", true),
            ("*", "users.42", true),
            ("*", "", true),
            ("users", "users", true),
            ("users", "users2", false),
            ("users", "users.42", false),
            ("users.*", "users", false),
            ("users.*", "users.42", true),
            ("users.*", "users.a.b", false),
            ("users.*", "posts.42", false),
            ("*.profile", "users.profile", true),
            ("*.profile", "profile", false),
            ("users.*.*", "users.a.b", true),
            ("users.42", "users.42", true),
            ("users.42", "users.43", false),
            ("Users", "users", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                map_pattern_matches(pattern, name),
                expected,
                "{pattern} vs {name}"
            );
        }
    }

    #[test]
    fn empty_store_allows_everything_even_anonymous() {
        let s = PolicyStore::new();
        assert!(s.is_empty());
        assert_eq!(
            decide(&s, None, Action::Write, "any", &rmpv::Value::Nil),
            Decision::Allow
        );
        assert!(allowed(
            &s,
            Some(&user("u", &[])),
            Action::Read,
            "x",
            json!(null)
        ));
    }

    #[test]
    fn default_deny_once_any_policy_exists() {
        let s = store(vec![policy("p1", "todos", Action::Write, Effect::Allow)]);
        let u = user("u1", &["user"]);
        assert!(allowed(&s, Some(&u), Action::Write, "todos", json!({})));
        assert!(!allowed(&s, Some(&u), Action::Write, "notes", json!({})));
        assert!(!allowed(&s, Some(&u), Action::Read, "todos", json!({})));
        assert_eq!(
            decide(&s, Some(&u), Action::Read, "todos", &rmpv::Value::Nil),
            Decision::Deny("no policy allows read on 'todos'".to_string())
        );
        assert!(
            allowed(&s, None, Action::Write, "todos", json!({})),
            "no principal needed"
        );
    }

    #[test]
    fn deny_beats_allow_regardless_of_order() {
        for (allow_id, deny_id) in [("a", "b"), ("b", "a")] {
            let s = store(vec![
                policy(allow_id, "*", Action::All, Effect::Allow),
                policy(deny_id, "secrets", Action::Write, Effect::Deny),
            ]);
            let u = user("u1", &[]);
            assert_eq!(
                decide(&s, Some(&u), Action::Write, "secrets", &rmpv::Value::Nil),
                Decision::Deny(format!("write on 'secrets' denied by policy '{deny_id}'"))
            );
            assert!(allowed(&s, Some(&u), Action::Read, "secrets", json!(null)));
            assert!(allowed(&s, Some(&u), Action::Write, "public", json!(null)));
        }
    }

    #[test]
    fn admin_bypass_is_lowercase_only() {
        let s = store(vec![policy("d", "*", Action::All, Effect::Deny)]);
        assert!(allowed(
            &s,
            Some(&user("root", &["user", "admin"])),
            Action::Write,
            "m",
            json!(1)
        ));
        assert!(!allowed(
            &s,
            Some(&user("root", &["ADMIN"])),
            Action::Write,
            "m",
            json!(1)
        ));
        assert!(!allowed(
            &s,
            Some(&user("root", &["Admin"])),
            Action::Write,
            "m",
            json!(1)
        ));
        assert!(!allowed(
            &s,
            Some(&user("admin", &[])),
            Action::Write,
            "m",
            json!(1)
        ));
    }

    #[test]
    fn action_all_governs_every_action_but_specific_actions_do_not() {
        let s = store(vec![policy("p", "m", Action::All, Effect::Allow)]);
        for action in [Action::Read, Action::Write, Action::Remove, Action::All] {
            assert!(allowed(&s, None, action, "m", json!(null)), "{action}");
        }
        let s = store(vec![policy("p", "m", Action::Remove, Effect::Allow)]);
        assert!(allowed(&s, None, Action::Remove, "m", json!(null)));
        assert!(!allowed(&s, None, Action::Write, "m", json!(null)));
        assert!(!allowed(&s, None, Action::All, "m", json!(null)));
    }

    #[test]
    fn owner_condition_allows_only_the_owner() {
        let s = store(vec![with_condition(
            policy("own", "todos", Action::Write, Effect::Allow),
            "auth.id == data.ownerId",
        )]);
        let alice = user("alice", &["user"]);
        assert!(allowed(
            &s,
            Some(&alice),
            Action::Write,
            "todos",
            json!({"ownerId": "alice"})
        ));
        assert!(!allowed(
            &s,
            Some(&alice),
            Action::Write,
            "todos",
            json!({"ownerId": "bob"})
        ));
        assert!(!allowed(
            &s,
            Some(&alice),
            Action::Write,
            "todos",
            json!({"title": "x"})
        ));
        assert!(
            !allowed(
                &s,
                None,
                Action::Write,
                "todos",
                json!({"ownerId": "alice"})
            ),
            "no auth"
        );
    }

    #[test]
    fn conditional_deny_only_applies_when_condition_holds() {
        let s = store(vec![
            policy("allow", "docs", Action::Write, Effect::Allow),
            with_condition(
                policy("locked", "docs", Action::Write, Effect::Deny),
                "data.locked == true",
            ),
        ]);
        let u = user("u", &[]);
        assert!(allowed(
            &s,
            Some(&u),
            Action::Write,
            "docs",
            json!({"locked": false})
        ));
        assert!(!allowed(
            &s,
            Some(&u),
            Action::Write,
            "docs",
            json!({"locked": true})
        ));
    }

    #[test]
    fn nil_data_fails_data_conditions_but_answers_auth_only_ones() {
        let s = store(vec![
            with_condition(
                policy("editors", "wiki", Action::Write, Effect::Allow),
                "auth.roles containsAny 'editor'",
            ),
            with_condition(
                policy("owner", "todos", Action::Write, Effect::Allow),
                "data.ownerId != auth.id",
            ),
        ]);
        let editor = user("e", &["editor"]);
        let reader = user("r", &["reader"]);
        assert!(allowed(
            &s,
            Some(&editor),
            Action::Write,
            "wiki",
            json!(null)
        ));
        assert!(!allowed(
            &s,
            Some(&reader),
            Action::Write,
            "wiki",
            json!(null)
        ));
        // `!=` would be true against an empty record; nil data must not satisfy it.
        assert!(!allowed(
            &s,
            Some(&editor),
            Action::Write,
            "todos",
            json!(null)
        ));
        assert!(allowed(
            &s,
            Some(&editor),
            Action::Write,
            "todos",
            json!({"ownerId": "x"})
        ));
    }

    #[test]
    fn role_membership_condition_via_in() {
        let s = store(vec![with_condition(
            policy("r", "*", Action::Write, Effect::Allow),
            "data.team in auth.roles || auth.id in data.members",
        )]);
        let u = user("u1", &["red"]);
        assert!(allowed(
            &s,
            Some(&u),
            Action::Write,
            "t",
            json!({"team": "red"})
        ));
        assert!(allowed(
            &s,
            Some(&u),
            Action::Write,
            "t",
            json!({"members": ["u0", "u1"]})
        ));
        assert!(!allowed(
            &s,
            Some(&u),
            Action::Write,
            "t",
            json!({"team": "blue"})
        ));
    }

    #[test]
    fn swapped_ordering_condition_keeps_its_meaning() {
        // auth.level > data.min ⇔ data.min < auth.level.
        let s = store(vec![with_condition(
            policy("lvl", "*", Action::Write, Effect::Allow),
            "auth.id > data.min",
        )]);
        let u = user("m", &[]);
        assert!(allowed(
            &s,
            Some(&u),
            Action::Write,
            "x",
            json!({"min": "a"})
        ));
        assert!(!allowed(
            &s,
            Some(&u),
            Action::Write,
            "x",
            json!({"min": "z"})
        ));
    }

    #[test]
    fn reads_data_classification() {
        let cases = [
            (
                json!({"op": "eq", "attribute": "ownerId", "value": 1}),
                true,
            ),
            (
                json!({"op": "eq", "attribute": "auth.id", "value": "x"}),
                false,
            ),
            (
                json!({"op": "in", "attribute": "auth.id", "valueRef": "data.m"}),
                true,
            ),
            (
                json!({"op": "eq", "attribute": "auth.id", "valueRef": "auth.x"}),
                false,
            ),
            (
                json!({"op": "not", "children": [{"op": "isNull", "attribute": "a"}]}),
                true,
            ),
            (json!({"op": "and", "children": []}), false),
            (json!("garbage"), false),
        ];
        for (tree, expected) in cases {
            assert_eq!(reads_data(&tree), expected, "{tree}");
        }
    }

    #[test]
    fn malformed_condition_matches_nothing() {
        let mut p = policy("bad", "*", Action::All, Effect::Allow);
        p.condition = Some(json!({"op": "whatever"}));
        let s = store(vec![p]);
        assert!(!allowed(&s, None, Action::Write, "m", json!({"a": 1})));
    }

    #[test]
    fn store_crud_and_versioning() {
        let s = PolicyStore::new();
        assert_eq!((s.version(), s.len()), (0, 0));
        assert_eq!(
            s.upsert(policy("b", "*", Action::Read, Effect::Allow)),
            None
        );
        assert_eq!(
            s.upsert(policy("a", "*", Action::Read, Effect::Allow)),
            None
        );
        assert_eq!(s.version(), 2);
        let ids: Vec<String> = s.list().into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["a", "b"], "listed by id");

        let replaced = s.upsert(policy("a", "x", Action::Write, Effect::Deny));
        assert_eq!(replaced.map(|p| p.map_pattern), Some("*".to_string()));
        assert_eq!(s.get("a").map(|p| p.effect), Some(Effect::Deny));
        assert_eq!((s.version(), s.len()), (3, 2));

        s.upsert(policy("a", "x", Action::Write, Effect::Deny));
        assert_eq!(s.version(), 3, "identical upsert is not a change");

        assert!(s.delete("a"));
        assert!(!s.delete("a"));
        assert_eq!((s.version(), s.len()), (4, 1));

        let set = vec![
            policy("z", "*", Action::Read, Effect::Allow),
            policy("y", "*", Action::Read, Effect::Allow),
            policy("z", "m", Action::Write, Effect::Deny),
        ];
        s.replace_all(set.clone());
        assert_eq!(s.version(), 5);
        assert_eq!(
            s.get("z").map(|p| p.map_pattern),
            Some("m".to_string()),
            "last wins"
        );
        assert_eq!(s.len(), 2);
        s.replace_all(set);
        assert_eq!(s.version(), 5, "reloading the same set is not a change");
        s.replace_all(Vec::new());
        assert!(s.is_empty());
        assert_eq!(s.version(), 6);
    }

    #[test]
    fn store_is_shareable_across_threads() {
        let s = std::sync::Arc::new(PolicyStore::new());
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    s.upsert(policy(&format!("p{i}"), "*", Action::Read, Effect::Allow));
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread finishes");
        }
        assert_eq!((s.len(), s.version()), (4, 4));
    }

    #[test]
    fn policy_json_shape() {
        let p = with_condition(
            policy("own-todos", "todos", Action::Write, Effect::Allow),
            "data.ownerId == auth.id",
        );
        assert_eq!(
            serde_json::to_value(&p).expect("serializes"),
            json!({"id": "own-todos", "mapPattern": "todos", "action": "write", "effect": "allow",
                   "condition": {"op": "eq", "attribute": "ownerId", "valueRef": "auth.id"}})
        );
        let bare = policy("p", "*", Action::All, Effect::Deny);
        assert_eq!(
            serde_json::to_value(&bare).expect("serializes"),
            json!({"id": "p", "mapPattern": "*", "action": "all", "effect": "deny"}),
            "condition omitted when none"
        );
        let back: Policy = serde_json::from_value(json!(
            {"id": "p", "mapPattern": "*", "action": "all", "effect": "deny", "condition": null}
        ))
        .expect("deserializes");
        assert_eq!(back, bare);
        assert!(serde_json::from_value::<Policy>(json!(
            {"id": "p", "mapPattern": "*", "action": "ALL", "effect": "deny"}
        ))
        .is_err());
    }

    fn request(j: serde_json::Value) -> PolicyRequest {
        serde_json::from_value(j).expect("request deserializes")
    }

    #[test]
    fn request_with_condition_expr_compiles_it() {
        let p = request(
            json!({"id": "own-todos", "mapPattern": "todos", "action": "write",
                               "effect": "allow", "conditionExpr": "data.ownerId == auth.id"}),
        )
        .into_policy()
        .expect("valid");
        assert_eq!(p.id, "own-todos");
        assert_eq!(
            p.condition,
            Some(json!({"op": "eq", "attribute": "ownerId", "valueRef": "auth.id"}))
        );
    }

    #[test]
    fn request_without_id_gets_a_uuid_v4() {
        for body in [
            json!({"mapPattern": "*", "action": "read", "effect": "allow"}),
            json!({"id": "", "mapPattern": "*", "action": "read", "effect": "allow"}),
        ] {
            let p = request(body).into_policy().expect("valid");
            let id = uuid::Uuid::parse_str(&p.id).expect("id is a uuid");
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(p.condition, None);
        }
    }

    #[test]
    fn request_condition_wins_over_expression() {
        let tree = json!({"op": "eq", "attribute": "a", "value": 1});
        let p = request(
            json!({"mapPattern": "*", "action": "read", "effect": "allow",
                               "condition": tree, "conditionExpr": "not (valid"}),
        )
        .into_policy()
        .expect("the broken expression is ignored");
        assert_eq!(p.condition, Some(tree));
        let p = request(
            json!({"mapPattern": "*", "action": "read", "effect": "allow",
                               "condition": null, "conditionExpr": "  "}),
        )
        .into_policy()
        .expect("blank expression means none");
        assert_eq!(p.condition, None);
    }

    #[test]
    fn request_with_bad_expression_reports_field_and_message() {
        let e = request(
            json!({"mapPattern": "*", "action": "read", "effect": "allow",
                               "conditionExpr": "data.x =="}),
        )
        .into_policy()
        .expect_err("parse error");
        assert_eq!(e.field(), "conditionExpr");
        assert!(
            e.to_string().starts_with("parse error at position 9: "),
            "{e}"
        );
        assert!(e.to_string().ends_with("\ndata.x ==\n         ^"), "{e}");
    }

    #[test]
    fn principal_auth_value_shape() {
        assert_eq!(
            user("u1", &["a", "b"]).auth_value(),
            value(json!({"id": "u1", "roles": ["a", "b"]}))
        );
    }
}

//! Layer-2 permission policies (core.md §3.3, http-admin-ops.md §4.7).
//!
//! * Policies (module `policy`, re-exported here): the [`Policy`] model, the admin API's
//!   [`PolicyRequest`], the shared [`PolicyStore`], the caller's [`Principal`] and
//!   [`decide`], which applies the §3.3 algorithm.
//! * [`condition_expr`]: the textual `conditionExpr` language, compiled to the predicate
//!   trees that policy conditions are stored as.
//!
//! Mapping operations to actions and turning a [`Decision::Deny`] into wire replies
//! (core.md §3.3–3.4) is left to the message handlers.

pub mod condition_expr;
mod policy;

pub use policy::{
    decide, map_pattern_matches, Action, Decision, Effect, Policy, PolicyRequest,
    PolicyRequestError, PolicyStore, Principal, ADMIN_ROLE,
};

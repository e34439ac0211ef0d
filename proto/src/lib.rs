//! The languages the TopGun suite speaks.
//!
//! * [`wire`] — the client wire protocol: MsgPack messages exchanged with TopGun clients.
//! * [`hlc`], [`hash`], [`partition`] — the clock, hash and partition function every
//!   component must agree on.
//! * [`merkle_hash`] — the client's exact Merkle entry hashes (LWW and OR-Map).
//! * [`predicate`] — the query evaluator shared by sync shards and gateways.
//! * [`grpc`] / [`convert`] — the internal gRPC APIs and their conversions.
//! * [`trace_context`] — the W3C trace id carried across gRPC hops.
//! * [`in_process`] — internal gRPC calls without a socket when caller and service share a
//!   process.

pub mod convert;
pub mod deadline;
pub mod grpc;
pub mod hash;
pub mod hlc;
pub mod in_process;
pub mod internal_auth;
pub mod internal_tls;
pub mod local_feed;
pub mod numbers;
pub mod partition;
pub mod predicate;
pub mod trace_context;
pub mod wire;

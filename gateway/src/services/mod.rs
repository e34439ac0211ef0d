//! gRPC clients of the services the gateway fans work out to.

pub mod search;
pub mod sync_cluster;

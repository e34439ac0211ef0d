//! The whole suite in one process: storage-service, a sync-service shard, a search
//! replica and the gateway, each a real gRPC server on a loopback port, so this runs exactly the code
//! paths of the distributed deployment. With `--cluster-port`/`--seed-nodes` several such
//! processes form a peer cluster that shares the 271 partitions.

pub mod cluster;
pub mod suite;

//! The internal gRPC APIs, generated from `topgun/*/v1/*.proto` by `build.rs`, plus
//! conversions between their messages and the wire/domain types.

#![allow(missing_docs, clippy::all)]

/// Generated modules, nested as their protobuf packages so cross-package paths resolve.
pub mod topgun {
    /// `topgun.common.v1`.
    pub mod common {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("topgun.common.v1");
        }
    }
    /// `topgun.sync.v1`.
    pub mod sync {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("topgun.sync.v1");
        }
    }
    /// `topgun.storage.v1`.
    pub mod storage {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("topgun.storage.v1");
        }
    }
    /// `topgun.search.v1`.
    pub mod search {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("topgun.search.v1");
        }
    }
    /// `topgun.cluster.v1`.
    pub mod cluster {
        /// Version 1.
        pub mod v1 {
            tonic::include_proto!("topgun.cluster.v1");
        }
    }
}

pub use topgun::cluster::v1 as cluster;
pub use topgun::common::v1 as common;
pub use topgun::search::v1 as search;
pub use topgun::storage::v1 as storage;
pub use topgun::sync::v1 as sync;

/// Encoded file descriptor set of every API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/topgun_descriptor.bin"));

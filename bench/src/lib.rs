//! Load generator for the TopGun client protocol: real WebSocket connections speaking
//! MsgPack to any TopGun-compatible server, HDR-histogram latencies, and failure accounting
//! that never counts an OP_REJECTED, an ERROR or a missing answer as success.

pub mod cli;
pub mod clock;
pub mod conn;
pub mod decode;
pub mod encode;
pub mod error;
pub mod failures;
pub mod in_flight;
pub mod latency;
pub mod machine_noise;
pub mod merkle;
pub mod report;
pub mod rss;
pub mod scenarios;
pub mod timeline;
pub mod token;
pub mod write_concern;

pub use error::BenchError;

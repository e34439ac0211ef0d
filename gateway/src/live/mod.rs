//! Everything pushed to clients without being asked: connection registry, live query
//! subscriptions, topic subscriptions, and the change-feed / topic-stream consumers
//! that drive them.

pub mod connections;
pub mod feed;
pub mod policy_sync;
pub mod queries;
pub mod topics;

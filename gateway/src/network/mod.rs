//! The embeddable network layer: configuration structs with the seed's defaults and the
//! [`module::NetworkModule`] that binds, serves and drains the gateway.

pub mod config;
pub mod module;
pub mod tls;

//! Reading and binding an `*_HTTP_ADDR` setting, where an empty value disables the port.

use crate::error::OpsError;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Parses the value of `setting`: a socket address, or `None` when it is empty (the ops
/// port is disabled, e.g. when a supervisor has no use for it).
pub fn parse_http_addr(setting: &'static str, value: &str) -> Result<Option<SocketAddr>, OpsError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e: std::net::AddrParseError| OpsError::InvalidAddress {
            setting,
            value: value.to_string(),
            reason: e.to_string(),
        })
}

/// Binds the ops port at `addr`; the error names `setting` so an operator knows which
/// variable to change.
pub async fn bind(setting: &'static str, addr: SocketAddr) -> Result<TcpListener, OpsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| OpsError::Bind {
            setting,
            addr,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_disables_and_junk_is_explained() {
        assert_eq!(parse_http_addr("X_HTTP_ADDR", "").ok(), Some(None));
        assert_eq!(parse_http_addr("X_HTTP_ADDR", "  ").ok(), Some(None));
        assert_eq!(
            parse_http_addr("X_HTTP_ADDR", "127.0.0.1:9091").ok(),
            Some(Some(SocketAddr::from(([127, 0, 0, 1], 9091))))
        );
        let err = parse_http_addr("X_HTTP_ADDR", "localhost").expect_err("no port");
        let text = err.to_string();
        assert!(
            text.starts_with("invalid X_HTTP_ADDR \"localhost\""),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_taken_port_names_the_setting() {
        let first = bind("X_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("ephemeral port");
        let taken = first.local_addr().expect("bound");
        let err = bind("X_HTTP_ADDR", taken).await.expect_err("in use");
        assert!(err.to_string().contains("cannot bind X_HTTP_ADDR"), "{err}");
    }
}

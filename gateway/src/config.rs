//! Configuration of the gateway binaries, from environment variables and CLI flags,
//! with the documented defaults. Shared by `gateway` and the single-process binaries.

use crate::network::config::{NetworkConfig, ServerConfig, TlsConfig};
use crate::network::module::{NetworkModule, ServiceEndpoints};
use crate::state::AdminCredentials;
use clap::Args;
use std::path::PathBuf;

/// Gateway options (every flag also reads its environment variable).
#[derive(Debug, Clone, Args)]
pub struct GatewayOptions {
    /// Client port (0 = ephemeral).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Bind address of the client listener.
    #[arg(
        long = "bind-addr",
        env = "TOPGUN_BIND_ADDR",
        default_value = "0.0.0.0"
    )]
    pub bind_addr: String,
    /// Node id of this gateway.
    #[arg(long, env = "NODE_ID", default_value = "gateway-1")]
    pub node_id: String,
    /// HMAC secret or RSA public key (PEM) for client JWTs; unset = no authentication.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Disable authentication even when a secret is set.
    #[arg(long, env = "TOPGUN_NO_AUTH", default_value_t = false)]
    pub no_auth: bool,
    /// Send detailed reasons in AUTH_FAIL and 401 bodies.
    #[arg(long, env = "INSECURE_FORWARD_AUTH_ERRORS", default_value_t = false)]
    pub insecure_forward_auth_errors: bool,
    /// Writes need an authenticated connection.
    #[arg(long, env = "TOPGUN_REQUIRE_AUTH", default_value_t = false)]
    pub require_auth: bool,
    /// Largest encoded record of a write (0 = unlimited).
    #[arg(long, env = "TOPGUN_MAX_VALUE_BYTES", default_value_t = 0)]
    pub max_value_bytes: u64,
    /// Largest inbound WebSocket message in bytes.
    #[arg(long, env = "TOPGUN_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Deadline of one operation (every internal call carries it).
    #[arg(long, env = "DEFAULT_OPERATION_TIMEOUT_MS", default_value_t = 30_000)]
    pub default_operation_timeout_ms: u64,
    /// Operations in flight before new ones are shed with 429.
    #[arg(long, env = "MAX_CONCURRENT_OPERATIONS", default_value_t = 1_000)]
    pub max_concurrent_operations: u32,
    /// Admin login user.
    #[arg(long, env = "TOPGUN_ADMIN_USERNAME", default_value = "admin")]
    pub admin_username: String,
    /// Admin login password; unset disables login.
    #[arg(long, env = "TOPGUN_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Folder of the admin dashboard (default: the one shipped in the repo).
    #[arg(long, env = "TOPGUN_ADMIN_DIR")]
    pub admin_dir: Option<PathBuf>,
    /// PEM certificate: serve wss:// and https://.
    #[arg(long, env = "TOPGUN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, env = "TOPGUN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: client certificates become mandatory.
    #[arg(long, env = "TOPGUN_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Comma-separated CORS origins (`*` = any, empty = none).
    #[arg(long, env = "TOPGUN_CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,
    /// Whole-request deadline of HTTP routes in ms (408 when exceeded).
    #[arg(long, env = "TOPGUN_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Shared token every internal gRPC call carries.
    #[arg(long, env = "TOPGUN_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Most changed records pushed ahead of the Merkle root to a reconnecting client (0 turns
    /// the push off).
    #[arg(long, env = "TOPGUN_SYNC_DELTA_PUSH_LIMIT", default_value_t = 20_000)]
    pub sync_delta_push_limit: u32,
    /// How far the sync shards' clocks may lag this gateway's, in ms: the delta push looks
    /// back this much further (0 suits one host or synchronised clocks).
    #[arg(long, env = "TOPGUN_SYNC_DELTA_SKEW_MS", default_value_t = 0)]
    pub sync_delta_skew_ms: u64,
}

impl GatewayOptions {
    /// Checks values that clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent_operations == 0 {
            return Err("MAX_CONCURRENT_OPERATIONS must be at least 1".into());
        }
        if self.default_operation_timeout_ms == 0 {
            return Err("DEFAULT_OPERATION_TIMEOUT_MS must be at least 1".into());
        }
        if self.max_message_bytes < 1024 {
            return Err("TOPGUN_MAX_MESSAGE_BYTES must be at least 1024".into());
        }
        if self.node_id.contains(':') {
            return Err("NODE_ID must not contain ':'".into());
        }
        if self.sync_delta_push_limit > 100_000 {
            return Err("TOPGUN_SYNC_DELTA_PUSH_LIMIT must be at most 100000".into());
        }
        if self.sync_delta_skew_ms > 600_000 {
            return Err("TOPGUN_SYNC_DELTA_SKEW_MS must be at most 600000 (10 minutes)".into());
        }
        Ok(())
    }

    /// A configured (not yet started) module talking to `services`.
    pub fn into_module(self, services: ServiceEndpoints) -> NetworkModule {
        let mut network = NetworkConfig {
            host: self.bind_addr,
            port: self.port,
            insecure_forward_auth_errors: self.insecure_forward_auth_errors,
            ..Default::default()
        };
        network.connection.max_message_size = self.max_message_bytes;
        network.cors_origins = self
            .cors_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect();
        network.request_timeout = std::time::Duration::from_millis(self.request_timeout_ms);
        network.tls = match (self.tls_cert, self.tls_key) {
            (Some(cert_path), Some(key_path)) => Some(TlsConfig {
                cert_path,
                key_path,
                ca_cert_path: self.tls_ca,
            }),
            _ => None,
        };
        let mut server = ServerConfig {
            node_id: self.node_id,
            default_operation_timeout_ms: self.default_operation_timeout_ms,
            max_concurrent_operations: self.max_concurrent_operations,
            delta_push_limit: self.sync_delta_push_limit,
            delta_clock_skew_ms: self.sync_delta_skew_ms,
            ..Default::default()
        };
        server.security.require_auth = self.require_auth;
        server.security.max_value_bytes = self.max_value_bytes;
        let mut module = NetworkModule::new(network);
        module.set_server_config(server);
        module.set_services(services);
        module.set_jwt_secret(if self.no_auth { None } else { self.jwt_secret });
        module.set_admin(AdminCredentials {
            username: self.admin_username,
            password: self.admin_password,
        });
        module.set_admin_dir(self.admin_dir);
        module
    }
}

/// Splits a comma-separated address list, dropping blanks, adding `http://` when missing.
pub fn parse_addr_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_string()
            } else {
                format!("http://{s}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lists_are_normalised() {
        assert_eq!(
            parse_addr_list(" a:1, ,http://b:2 "),
            vec!["http://a:1", "http://b:2"]
        );
        assert!(parse_addr_list("").is_empty());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        gateway: GatewayOptions,
    }

    fn parse(args: &[&str]) -> GatewayOptions {
        use clap::Parser;
        let argv = std::iter::once("gateway").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect("parses").gateway
    }

    #[test]
    fn delta_push_settings_default_on_and_are_bounded() {
        let defaults = parse(&[]);
        assert_eq!(defaults.sync_delta_push_limit, 20_000);
        assert_eq!(defaults.sync_delta_skew_ms, 0);
        assert!(defaults.validate().is_ok());
        let err = parse(&["--sync-delta-push-limit", "100001"])
            .validate()
            .expect_err("over the cap");
        assert!(err.contains("TOPGUN_SYNC_DELTA_PUSH_LIMIT"), "{err}");
        let err = parse(&["--sync-delta-skew-ms", "600001"])
            .validate()
            .expect_err("over the cap");
        assert!(err.contains("TOPGUN_SYNC_DELTA_SKEW_MS"), "{err}");
    }
}

//! Optional TLS for the internal gRPC APIs, configured the same way in every service:
//! `TOPGUN_INTERNAL_TLS_CERT` + `TOPGUN_INTERNAL_TLS_KEY` (PEM) make a service's gRPC
//! server speak TLS; `TOPGUN_INTERNAL_TLS_CA` (PEM) is the CA that clients verify servers
//! with — and, when a server has it too, the CA its clients' certificates must chain to.
//! Clients then address services with `https://` URLs.

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Environment variable: PEM certificate of this process's gRPC identity.
pub const CERT_ENV: &str = "TOPGUN_INTERNAL_TLS_CERT";
/// Environment variable: PEM private key of that certificate.
pub const KEY_ENV: &str = "TOPGUN_INTERNAL_TLS_KEY";
/// Environment variable: PEM CA bundle used to verify peers.
pub const CA_ENV: &str = "TOPGUN_INTERNAL_TLS_CA";

/// Internal TLS material, loaded once at start-up.
#[derive(Clone, Default)]
pub struct InternalTls {
    identity: Option<(Vec<u8>, Vec<u8>)>,
    ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for InternalTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalTls")
            .field("identity", &self.identity.is_some())
            .field("ca", &self.ca.is_some())
            .finish()
    }
}

fn read(var: &str) -> Result<Option<Vec<u8>>, String> {
    match std::env::var(var) {
        Ok(path) if !path.is_empty() => std::fs::read(&path)
            .map(Some)
            .map_err(|e| format!("{var}: cannot read {path}: {e}")),
        _ => Ok(None),
    }
}

impl InternalTls {
    /// Reads the three variables; a certificate without a key (or the reverse) is an error.
    pub fn from_env() -> Result<Self, String> {
        let identity = match (read(CERT_ENV)?, read(KEY_ENV)?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(format!("{CERT_ENV} and {KEY_ENV} must be set together")),
        };
        Ok(InternalTls {
            identity,
            ca: read(CA_ENV)?,
        })
    }

    /// Whether this process serves its gRPC API over TLS.
    pub fn serves_tls(&self) -> bool {
        self.identity.is_some()
    }

    /// Server TLS (with client-certificate verification when a CA is configured).
    pub fn server_config(&self) -> Option<ServerTlsConfig> {
        let (cert, key) = self.identity.as_ref()?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.ca {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        Some(config)
    }

    /// Client TLS for `https://` addresses: verifies servers with the CA and presents
    /// this process's certificate when it has one.
    pub fn client_config(&self) -> Option<ClientTlsConfig> {
        let ca = self.ca.as_ref()?;
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        Some(config)
    }
}

/// A gRPC server builder with the environment's internal TLS applied.
pub fn server_builder() -> Result<tonic::transport::Server, String> {
    let builder = tonic::transport::Server::builder();
    match InternalTls::from_env()?.server_config() {
        Some(config) => builder
            .tls_config(config)
            .map_err(|e| format!("internal TLS: {e}")),
        None => Ok(builder),
    }
}

/// Applies the environment's client TLS to an endpoint with an `https://` address.
pub fn client_endpoint(
    endpoint: tonic::transport::Endpoint,
) -> Result<tonic::transport::Endpoint, String> {
    if endpoint.uri().scheme_str() != Some("https") {
        return Ok(endpoint);
    }
    match InternalTls::from_env()?.client_config() {
        Some(config) => endpoint
            .tls_config(config)
            .map_err(|e| format!("internal TLS: {e}")),
        None => Err(format!(
            "{} is https but {CA_ENV} is not set",
            endpoint.uri()
        )),
    }
}

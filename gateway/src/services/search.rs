//! Search replicas: one-shot searches are spread round-robin over healthy replicas
//! (failing over on error); live searches are held on one replica and moved when it dies.
//! A configured address whose host name resolves to several IPs (a scaled compose or
//! Kubernetes service) counts as one replica per IP, and the set is re-resolved
//! periodically so scaling up or down is noticed.

use parking_lot::RwLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use topgun_proto::grpc::search::search_service_client::SearchServiceClient;
use topgun_proto::grpc::search::{
    GetIndexedMapsRequest, IndexedMaps, SearchEvent, SearchRequest, SearchResponse,
};
use topgun_proto::internal_auth::TokenAttach;

/// A search-service client carrying the internal token.
pub type SearchClient = SearchServiceClient<InterceptedService<Channel, TokenAttach>>;

/// One search replica.
#[derive(Debug)]
pub struct Replica {
    /// Its gRPC address.
    pub addr: String,
    client: SearchClient,
    healthy: AtomicBool,
}

impl Replica {
    /// Whether its last call succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Every known replica.
#[derive(Debug)]
pub struct SearchReplicas {
    configured: Vec<String>,
    token: TokenAttach,
    replicas: RwLock<Vec<Arc<Replica>>>,
    next: AtomicUsize,
    timeout: Duration,
}

fn connect(addr: &str, token: &TokenAttach) -> Result<Arc<Replica>, String> {
    let endpoint = Endpoint::from_shared(addr.to_string())
        .map_err(|e| format!("invalid search address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    let endpoint = topgun_proto::internal_tls::client_endpoint(endpoint)?;
    Ok(Arc::new(Replica {
        addr: addr.to_string(),
        client: SearchServiceClient::with_interceptor(endpoint.connect_lazy(), token.clone()),
        healthy: AtomicBool::new(true),
    }))
}

impl SearchReplicas {
    /// Lazily connected clients for `addrs` (one per address until [`Self::discover`] runs).
    pub fn new(addrs: &[String], token: TokenAttach, timeout: Duration) -> Result<Self, String> {
        let replicas = addrs
            .iter()
            .map(|addr| connect(addr, &token))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(SearchReplicas {
            configured: addrs.to_vec(),
            token,
            replicas: RwLock::new(replicas),
            next: AtomicUsize::new(0),
            timeout,
        })
    }

    /// Every replica.
    pub fn replicas(&self) -> Vec<Arc<Replica>> {
        self.replicas.read().clone()
    }

    /// Re-resolves the configured addresses: one replica per resolved IP, keeping the
    /// clients (and health) of addresses that did not change. An address that does not
    /// resolve right now is kept as configured.
    pub async fn discover(&self) {
        let mut wanted: Vec<String> = Vec::new();
        for configured in &self.configured {
            let resolved = match configured.parse::<http::Uri>() {
                Ok(uri) => match (uri.scheme_str(), uri.host(), uri.port_u16()) {
                    (Some(scheme), Some(host), Some(port))
                        if host.parse::<std::net::IpAddr>().is_err() =>
                    {
                        tokio::net::lookup_host((host, port))
                            .await
                            .map(|addrs| {
                                addrs.map(|a| format!("{scheme}://{a}")).collect::<Vec<_>>()
                            })
                            .unwrap_or_default()
                    }
                    _ => vec![],
                },
                Err(_) => vec![],
            };
            if resolved.is_empty() {
                wanted.push(configured.clone());
            } else {
                wanted.extend(resolved);
            }
        }
        wanted.sort();
        wanted.dedup();
        let current = self.replicas();
        if current
            .iter()
            .map(|r| r.addr.as_str())
            .eq(wanted.iter().map(String::as_str))
        {
            return;
        }
        let next: Vec<Arc<Replica>> = wanted
            .iter()
            .filter_map(|addr| match current.iter().find(|r| &r.addr == addr) {
                Some(existing) => Some(existing.clone()),
                None => connect(addr, &self.token).ok(),
            })
            .collect();
        tracing::info!(replicas = ?wanted, "search replica set changed");
        *self.replicas.write() = next;
    }

    /// Replicas in the order to try: healthy ones first, starting at a rotating offset.
    fn rotation(&self) -> Vec<Arc<Replica>> {
        let replicas = self.replicas();
        let n = replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<Arc<Replica>> =
            (0..n).map(|i| replicas[(start + i) % n].clone()).collect();
        order.sort_by_key(|r| !r.is_healthy());
        order
    }

    /// A one-shot search, failing over to the next replica on error.
    pub async fn search(&self, request: SearchRequest) -> Result<SearchResponse, tonic::Status> {
        let mut last = tonic::Status::unavailable("no search replica configured");
        for replica in self.rotation() {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(self.timeout);
            match replica.client.clone().search(req).await {
                Ok(resp) => {
                    replica.healthy.store(true, Ordering::Relaxed);
                    return Ok(resp.into_inner());
                }
                Err(status) => {
                    if matches!(status.code(), tonic::Code::InvalidArgument) {
                        return Err(status);
                    }
                    replica.healthy.store(false, Ordering::Relaxed);
                    last = status;
                }
            }
        }
        Err(last)
    }

    /// Opens a live search on the first replica that accepts it.
    pub async fn subscribe(
        &self,
        request: SearchRequest,
    ) -> Result<(Arc<Replica>, tonic::Streaming<SearchEvent>), tonic::Status> {
        let mut last = tonic::Status::unavailable("no search replica configured");
        for replica in self.rotation() {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(Duration::from_secs(365 * 24 * 3600));
            match replica.client.clone().subscribe_search(req).await {
                Ok(resp) => {
                    replica.healthy.store(true, Ordering::Relaxed);
                    return Ok((replica, resp.into_inner()));
                }
                Err(status) => {
                    replica.healthy.store(false, Ordering::Relaxed);
                    last = status;
                }
            }
        }
        Err(last)
    }

    /// Sets which maps every replica indexes (`None` = all); fails if any replica refuses,
    /// so replicas never silently disagree.
    pub async fn set_indexed_maps(&self, maps: Option<Vec<String>>) -> Result<(), tonic::Status> {
        let request = IndexedMaps {
            all: maps.is_none(),
            maps: maps.unwrap_or_default(),
        };
        for replica in self.replicas() {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(self.timeout);
            replica.client.clone().set_indexed_maps(req).await?;
        }
        Ok(())
    }

    /// The maps indexed by the first replica that answers (`None` = all).
    pub async fn indexed_maps(&self) -> Result<Option<Vec<String>>, tonic::Status> {
        let mut last = tonic::Status::unavailable("no search replica configured");
        for replica in self.rotation() {
            let mut req = tonic::Request::new(GetIndexedMapsRequest {});
            req.set_timeout(self.timeout);
            match replica.client.clone().get_indexed_maps(req).await {
                Ok(resp) => {
                    let maps = resp.into_inner();
                    return Ok((!maps.all).then_some(maps.maps));
                }
                Err(status) => last = status,
            }
        }
        Err(last)
    }

    /// Marks a replica unhealthy after its stream broke.
    pub fn mark_failed(&self, replica: &Replica) {
        replica.healthy.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn host_names_become_one_replica_per_resolved_address() {
        let replicas = SearchReplicas::new(
            &[
                "http://localhost:50052".to_string(),
                "http://10.1.2.3:50052".to_string(),
            ],
            TokenAttach::default(),
            Duration::from_secs(1),
        )
        .expect("valid addresses");
        replicas.discover().await;
        let addrs: Vec<String> = replicas.replicas().iter().map(|r| r.addr.clone()).collect();
        assert!(
            addrs.contains(&"http://127.0.0.1:50052".to_string()),
            "{addrs:?}"
        );
        assert!(
            addrs.contains(&"http://10.1.2.3:50052".to_string()),
            "{addrs:?}"
        );
        assert!(!addrs.iter().any(|a| a.contains("localhost")), "{addrs:?}");
    }
}

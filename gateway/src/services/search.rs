//! Search replicas: one-shot searches are spread round-robin over healthy replicas
//! (failing over on error); live searches are held on one replica and moved when it dies.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use topgun_proto::grpc::search::search_service_client::SearchServiceClient;
use topgun_proto::grpc::search::{SearchEvent, SearchRequest, SearchResponse};
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

/// Every configured replica.
#[derive(Debug)]
pub struct SearchReplicas {
    replicas: Vec<Arc<Replica>>,
    next: AtomicUsize,
    timeout: Duration,
}

impl SearchReplicas {
    /// Lazily connected clients for `addrs`.
    pub fn new(addrs: &[String], token: TokenAttach, timeout: Duration) -> Result<Self, String> {
        let replicas = addrs
            .iter()
            .map(|addr| {
                let endpoint = Endpoint::from_shared(addr.clone())
                    .map_err(|e| format!("invalid search address {addr:?}: {e}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true);
                Ok(Arc::new(Replica {
                    addr: addr.clone(),
                    client: SearchServiceClient::with_interceptor(
                        endpoint.connect_lazy(),
                        token.clone(),
                    ),
                    healthy: AtomicBool::new(true),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(SearchReplicas {
            replicas,
            next: AtomicUsize::new(0),
            timeout,
        })
    }

    /// Every replica.
    pub fn replicas(&self) -> &[Arc<Replica>] {
        &self.replicas
    }

    /// Replicas in the order to try: healthy ones first, starting at a rotating offset.
    fn rotation(&self) -> Vec<Arc<Replica>> {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<Arc<Replica>> = (0..n)
            .map(|i| self.replicas[(start + i) % n].clone())
            .collect();
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

    /// Marks a replica unhealthy after its stream broke.
    pub fn mark_failed(&self, replica: &Replica) {
        replica.healthy.store(false, Ordering::Relaxed);
    }
}

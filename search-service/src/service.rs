//! The `topgun.search.v1.SearchService` gRPC front: validates requests once, then
//! hands them to the [`SearchEngine`].

use tonic::{Request, Response, Status};
use topgun_proto::grpc::search::search_service_server::SearchService;
use topgun_proto::grpc::search::{
    IndexStatusRequest, IndexStatusResponse, SearchHit, SearchRequest, SearchResponse, ShardLag,
};

use crate::engine::{SearchEngine, SearchQuery, DEFAULT_LIMIT};
use crate::ingest::Ingestor;
use crate::live::LiveSearch;

/// The gRPC service over an engine and (optionally) the ingestion feeding it.
#[derive(Debug, Clone)]
pub struct SearchGrpc {
    engine: SearchEngine,
    ingest: Option<Ingestor>,
}

impl SearchGrpc {
    /// A service over `engine`; `ingest` supplies per-shard positions for IndexStatus.
    pub fn new(engine: SearchEngine, ingest: Option<Ingestor>) -> Self {
        SearchGrpc { engine, ingest }
    }
}

/// Converts a request into a [`SearchQuery`]: limit 0 means the default 10, a missing
/// or non-finite minimum score means none.
pub fn query_from(request: SearchRequest) -> SearchQuery {
    SearchQuery {
        map: request.map_name,
        query: request.query,
        limit: match request.limit {
            0 => DEFAULT_LIMIT,
            n => usize::try_from(n).unwrap_or(usize::MAX),
        },
        min_score: request.min_score.filter(|s| s.is_finite()).unwrap_or(0.0),
    }
}

#[tonic::async_trait]
impl SearchService for SearchGrpc {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let query = query_from(request.into_inner());
        tracing::debug!(map = %query.map, query = %query.query, "search");
        let hits = self.engine.search(query).await?;
        Ok(Response::new(SearchResponse {
            hits: hits.into_iter().map(SearchHit::from).collect(),
        }))
    }

    type SubscribeSearchStream = LiveSearch;

    async fn subscribe_search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<LiveSearch>, Status> {
        let query = query_from(request.into_inner());
        tracing::debug!(map = %query.map, query = %query.query, "live search");
        Ok(Response::new(self.engine.subscribe(query).await?))
    }

    async fn index_status(
        &self,
        _request: Request<IndexStatusRequest>,
    ) -> Result<Response<IndexStatusResponse>, Status> {
        let shards = match &self.ingest {
            Some(ingest) => ingest
                .lags()
                .await
                .into_iter()
                .map(|lag| ShardLag {
                    shard: lag.shard,
                    last_seq: lag.last_seq,
                    lag_events: lag.lag_events,
                })
                .collect(),
            None => Vec::new(),
        };
        let engine = self.engine.clone();
        // Summing document counts opens a searcher per map: keep it off the runtime.
        let documents = tokio::task::spawn_blocking(move || engine.stats().documents)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(IndexStatusResponse { documents, shards }))
    }
}

//! The `topgun.search.v1.SearchService` gRPC front: validates requests once, then
//! hands them to the [`SearchEngine`].

use std::time::Instant;

use tonic::{Request, Response, Status};
use topgun_proto::grpc::search::search_service_server::SearchService;
use topgun_proto::grpc::search::{
    IndexStatusRequest, IndexStatusResponse, SearchHit, SearchRequest, SearchResponse, ShardLag,
};

use crate::engine::{SearchEngine, SearchQuery, DEFAULT_LIMIT};
use crate::ingest::Ingestor;
use crate::live::LiveSearch;
use crate::maps::IndexedMaps;
use crate::metrics::{SearchMetrics, KIND_LIVE, KIND_ONE_SHOT};
use topgun_proto::grpc::search::{GetIndexedMapsRequest, IndexedMaps as PbIndexedMaps};

/// The gRPC service over an engine and (optionally) the ingestion feeding it.
#[derive(Debug, Clone)]
pub struct SearchGrpc {
    engine: SearchEngine,
    ingest: Option<Ingestor>,
    metrics: SearchMetrics,
}

impl SearchGrpc {
    /// A service over `engine`; `ingest` supplies per-shard positions for IndexStatus.
    /// Metrics go to a registry of their own until [`SearchGrpc::with_metrics`]
    /// supplies the served one.
    pub fn new(engine: SearchEngine, ingest: Option<Ingestor>) -> Self {
        SearchGrpc {
            engine,
            ingest,
            metrics: SearchMetrics::new(),
        }
    }

    /// Records searches in `metrics`.
    pub fn with_metrics(mut self, metrics: SearchMetrics) -> Self {
        self.metrics = metrics;
        self
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
        let started = Instant::now();
        let hits = self.engine.search(query).await;
        self.metrics
            .record_search(KIND_ONE_SHOT, hits.is_ok(), started.elapsed());
        let hits = hits?;
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
        let started = Instant::now();
        let live = self.engine.subscribe(query).await;
        self.metrics
            .record_search(KIND_LIVE, live.is_ok(), started.elapsed());
        Ok(Response::new(live?))
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
        // Per-map counters kept by the indexer: cheap, and they include buffered
        // writes, which any search indexes before it runs.
        let documents = self.engine.stats().documents;
        Ok(Response::new(IndexStatusResponse { documents, shards }))
    }

    async fn set_indexed_maps(
        &self,
        request: Request<PbIndexedMaps>,
    ) -> Result<Response<PbIndexedMaps>, Status> {
        let request = request.into_inner();
        let maps = if request.all {
            IndexedMaps::All
        } else {
            if request.maps.iter().any(|m| m.is_empty()) {
                return Err(Status::invalid_argument("map names must not be empty"));
            }
            IndexedMaps::Only(request.maps.into_iter().collect())
        };
        self.engine
            .set_indexed_maps(maps)
            .await
            .map_err(Status::from)?;
        Ok(Response::new(to_pb(&self.engine.indexed_maps())))
    }

    async fn get_indexed_maps(
        &self,
        _request: Request<GetIndexedMapsRequest>,
    ) -> Result<Response<PbIndexedMaps>, Status> {
        Ok(Response::new(to_pb(&self.engine.indexed_maps())))
    }
}

fn to_pb(maps: &IndexedMaps) -> PbIndexedMaps {
    match maps {
        IndexedMaps::All => PbIndexedMaps {
            all: true,
            maps: vec![],
        },
        IndexedMaps::Only(names) => PbIndexedMaps {
            all: false,
            maps: names.iter().cloned().collect(),
        },
    }
}

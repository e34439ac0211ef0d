//! The `topgun.storage.v1.StorageService` gRPC implementation over any [`DataStore`].

use crate::datastores::DataStore;
use crate::error::StorageError;
use crate::metrics::StorageMetrics;
use crate::model::{check_key, check_map_name, MapCursor, Mutation, RecordKind};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use topgun_proto::grpc::storage::storage_service_server::StorageService;
use topgun_proto::grpc::storage::{
    DeleteExpiredRequest, DeleteExpiredResponse, ListMapsRequest, ListMapsResponse,
    LoadKeysRequest, LoadKeysResponse, LoadMapRequest, LoadMapResponse, StoredRecord,
    WriteBatchRequest, WriteBatchResponse,
};
use topgun_proto::partition::PARTITION_COUNT;

/// Page size of `LoadMap` when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;
/// Largest page `LoadMap` serves, whatever the request asks: bounds memory per stream.
pub const MAX_PAGE_SIZE: u32 = 10_000;
/// Pages buffered per `LoadMap` stream; the reader blocks on a slow client instead of
/// loading the whole map into memory.
const STREAM_BUFFER_PAGES: usize = 2;
/// Most mutations one `WriteBatch` may carry: a batch is one transaction, and an
/// unbounded one would hold locks and memory for as long as the client likes.
pub const MAX_BATCH_MUTATIONS: usize = 100_000;

/// gRPC front of a [`DataStore`]: validates each request once, then delegates, and
/// records every call in its [`StorageMetrics`].
#[derive(Debug, Clone)]
pub struct StorageGrpc {
    store: Arc<dyn DataStore>,
    metrics: StorageMetrics,
}

impl StorageGrpc {
    /// Serves `store`, which must already be initialized. Metrics go to a registry of
    /// their own until [`StorageGrpc::with_metrics`] supplies the served one.
    pub fn new(store: Arc<dyn DataStore>) -> Self {
        StorageGrpc {
            store,
            metrics: StorageMetrics::new(),
        }
    }

    /// Records calls in `metrics`.
    pub fn with_metrics(mut self, metrics: StorageMetrics) -> Self {
        metrics.prepare_backend(self.store.backend_name());
        self.metrics = metrics;
        self
    }

    /// Counts a failed call and turns it into its gRPC status.
    fn failed(&self, call: &str, err: StorageError) -> Status {
        self.metrics.record_error(call, &err);
        Status::from(err)
    }

    async fn write(&self, request: WriteBatchRequest) -> Result<u64, StorageError> {
        let mutations = request.mutations;
        if mutations.len() > MAX_BATCH_MUTATIONS {
            return Err(StorageError::invalid(
                "mutations",
                format!(
                    "{} exceed the limit of {MAX_BATCH_MUTATIONS} per batch",
                    mutations.len()
                ),
            ));
        }
        // Validate the whole batch before touching the database: one bad mutation
        // rejects the batch and changes nothing.
        let mutations = mutations
            .into_iter()
            .map(Mutation::try_from)
            .collect::<Result<Vec<_>, StorageError>>()?;
        let count = mutations.len();
        let backend = self.store.backend_name();
        let started = Instant::now();
        let written = self.store.write_batch(mutations).await;
        match &written {
            Ok(written) => {
                self.metrics
                    .record_write(backend, count, *written, started.elapsed());
                tracing::debug!(mutations = count, written, "batch committed");
            }
            Err(err) => {
                self.metrics
                    .observe_write_latency(backend, started.elapsed());
                log_failure(err);
            }
        }
        written
    }

    async fn load_keys_of(&self, req: LoadKeysRequest) -> Result<Vec<StoredRecord>, StorageError> {
        check_map_name(&req.map_name)?;
        let kind = RecordKind::from_proto(req.kind)?;
        for key in &req.keys {
            check_key(key)?;
        }
        let records = self
            .store
            .load_keys(&req.map_name, kind, &req.keys)
            .await
            .inspect_err(log_failure)?;
        Ok(records.into_iter().map(StoredRecord::from).collect())
    }
}

#[tonic::async_trait]
impl StorageService for StorageGrpc {
    async fn write_batch(
        &self,
        request: Request<WriteBatchRequest>,
    ) -> Result<Response<WriteBatchResponse>, Status> {
        match self.write(request.into_inner()).await {
            Ok(written) => Ok(Response::new(WriteBatchResponse { written })),
            Err(err) => Err(self.failed("write_batch", err)),
        }
    }

    async fn load_keys(
        &self,
        request: Request<LoadKeysRequest>,
    ) -> Result<Response<LoadKeysResponse>, Status> {
        self.metrics.record_load("load_keys");
        match self.load_keys_of(request.into_inner()).await {
            Ok(records) => Ok(Response::new(LoadKeysResponse { records })),
            Err(err) => Err(self.failed("load_keys", err)),
        }
    }

    type LoadMapStream = ReceiverStream<Result<LoadMapResponse, Status>>;

    async fn load_map(
        &self,
        request: Request<LoadMapRequest>,
    ) -> Result<Response<Self::LoadMapStream>, Status> {
        self.metrics.record_load("load_map");
        let req = request.into_inner();
        let map_name = if req.map_name.is_empty() {
            None
        } else {
            check_map_name(&req.map_name).map_err(|e| self.failed("load_map", e))?;
            Some(req.map_name)
        };
        let page_size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let partitions = req.partitions;
        if let Some(p) = partitions.iter().find(|p| **p >= PARTITION_COUNT) {
            let err =
                StorageError::invalid("partitions", format!("{p} is not below {PARTITION_COUNT}"));
            return Err(self.failed("load_map", err));
        }
        let store = Arc::clone(&self.store);
        let metrics = self.metrics.clone();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_PAGES);
        tokio::spawn(async move {
            let mut cursor: Option<MapCursor> = None;
            loop {
                let page = store
                    .load_map(map_name.as_deref(), &partitions, cursor.as_ref(), page_size)
                    .await;
                let page = match page {
                    Ok(page) => page,
                    Err(err) => {
                        log_failure(&err);
                        metrics.record_error("load_map", &err);
                        // The client may already be gone; nothing else to do then.
                        let _ = tx.send(Err(Status::from(err))).await;
                        return;
                    }
                };
                let last_page = page.len() < page_size as usize;
                cursor = page.last().map(MapCursor::after);
                // An empty map yields an empty stream rather than one empty page.
                if !page.is_empty() {
                    let records = page.into_iter().map(StoredRecord::from).collect();
                    if tx.send(Ok(LoadMapResponse { records })).await.is_err() {
                        // The client went away: stop reading the database for it.
                        return;
                    }
                }
                if last_page {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_maps(
        &self,
        _request: Request<ListMapsRequest>,
    ) -> Result<Response<ListMapsResponse>, Status> {
        self.metrics.record_load("list_maps");
        let maps = self
            .store
            .list_maps()
            .await
            .inspect_err(log_failure)
            .map_err(|e| self.failed("list_maps", e))?;
        Ok(Response::new(ListMapsResponse {
            maps: maps.into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete_expired(
        &self,
        request: Request<DeleteExpiredRequest>,
    ) -> Result<Response<DeleteExpiredResponse>, Status> {
        let now_ms = request.into_inner().now_ms;
        let deleted = self
            .store
            .delete_expired(now_ms)
            .await
            .inspect_err(log_failure)
            .map_err(|e| self.failed("delete_expired", e))?;
        if deleted > 0 {
            tracing::info!(deleted, now_ms, "expired rows deleted");
        }
        Ok(Response::new(DeleteExpiredResponse { deleted }))
    }
}

/// Logs store failures once, at the level their class deserves: an outage is a warning
/// (callers retry), anything else is an error worth a look.
fn log_failure(err: &StorageError) {
    if err.is_retryable() {
        tracing::warn!(error = %err, "storage unavailable");
    } else {
        tracing::error!(error = %err, "storage call failed");
    }
}

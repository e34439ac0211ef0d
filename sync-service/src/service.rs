//! The gRPC face of a shard: admission (load shedding, deadlines, readiness),
//! validation into domain requests, and the call into [`Shard`].

use crate::admission::{within, Admission};
use crate::error::SyncError;
use crate::feed::SubscribeFrom;
use crate::metrics::SyncMetrics;
use crate::requests::{
    ApplyBatch, ChangedSince, GetRecords, MerkleNodeQuery, Publish, RunQuery, ScanMap,
    SetPartitions,
};
use crate::shard::Shard;
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tonic::{Request, Response, Status};
use topgun_proto::grpc::sync as pb;
use topgun_proto::grpc::sync::sync_service_server::SyncService;
use topgun_proto::local_feed::{ChangeBatchStream, LocalChangeFeed};
use tracing::Instrument;

/// A boxed server stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The `topgun.sync.v1.SyncService` implementation.
#[derive(Debug, Clone)]
pub struct SyncGrpc {
    shard: Arc<Shard>,
    admission: Admission,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<SyncMetrics>,
}

impl SyncGrpc {
    /// Serves `shard`; streams end when `shutdown` turns true. Metrics go to a registry
    /// of their own until [`SyncGrpc::with_metrics`] supplies the served one.
    pub fn new(shard: Arc<Shard>, admission: Admission, shutdown: watch::Receiver<bool>) -> Self {
        SyncGrpc {
            shard,
            admission,
            shutdown,
            metrics: Arc::default(),
        }
    }

    /// Records ApplyBatch outcomes in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<SyncMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Admits a unary call: a free slot, a loaded shard, and the call's time budget.
    fn admit<T>(&self, request: &Request<T>) -> Result<(OwnedSemaphorePermit, Duration), Status> {
        let permit = self.admission.admit()?;
        self.ensure_ready()?;
        Ok((permit, self.admission.budget(request.metadata())))
    }

    /// Opens a change-feed subscription: for SubscribeChanges and for followers in this
    /// process ([`LocalChangeFeed`]), which get the same checks and the same stream.
    fn open_feed(
        &self,
        req: pb::SubscribeChangesRequest,
    ) -> Result<BoxStream<pb::ChangeBatch>, Status> {
        // Streams live for hours: they are not counted against the in-flight limit.
        self.ensure_ready()?;
        for name in &req.map_names {
            crate::requests::check_map_name(name)?;
        }
        let from = SubscribeFrom {
            map_names: req.map_names,
            from_seq: req.from_seq,
            epoch: req.epoch,
        };
        tracing::debug!(
            from_seq = from.from_seq,
            maps = from.map_names.len(),
            "change feed subscription"
        );
        let stream = self.shard.feed().subscribe(from, self.shutdown.clone())?;
        Ok(Box::pin(stream))
    }

    fn ensure_ready(&self) -> Result<(), SyncError> {
        if *self.shutdown.borrow() {
            return Err(SyncError::ShuttingDown);
        }
        if !self.shard.is_ready() {
            return Err(SyncError::Loading);
        }
        Ok(())
    }

    /// Runs CPU-bound read work off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shard) -> T + Send + 'static,
    ) -> Result<T, SyncError> {
        let shard = Arc::clone(&self.shard);
        tokio::task::spawn_blocking(move || work(&shard))
            .await
            .map_err(|e| SyncError::Internal(format!("worker task failed: {e}")))
    }
}

#[tonic::async_trait]
impl SyncService for SyncGrpc {
    async fn apply_batch(
        &self,
        request: Request<pb::ApplyBatchRequest>,
    ) -> Result<Response<pb::ApplyBatchResponse>, Status> {
        let (_permit, budget) = self.admit(&request)?;
        let batch = ApplyBatch::try_from(request.into_inner())?;
        let span = tracing::debug_span!("apply_batch", ops = batch.ops.len());
        // The batch is consumed by the shard; keep what the metrics need.
        let kinds: Vec<&'static str> = batch.ops.iter().map(|op| op.kind.label()).collect();
        let started = Instant::now();
        let outcome = within(budget, self.shard.apply_batch(batch))
            .instrument(span)
            .await;
        self.metrics
            .record_batch(&kinds, outcome.as_deref().ok(), started.elapsed());
        Ok(Response::new(pb::ApplyBatchResponse { results: outcome? }))
    }

    async fn get_records(
        &self,
        request: Request<pb::GetRecordsRequest>,
    ) -> Result<Response<pb::GetRecordsResponse>, Status> {
        let (_permit, _) = self.admit(&request)?;
        let req = GetRecords::try_from(request.into_inner())?;
        let records = self.shard.get_records(&req)?;
        Ok(Response::new(pb::GetRecordsResponse { records }))
    }

    async fn scan_map(
        &self,
        request: Request<pb::ScanMapRequest>,
    ) -> Result<Response<pb::ScanMapResponse>, Status> {
        let (_permit, budget) = self.admit(&request)?;
        let req = ScanMap::try_from(request.into_inner())?;
        let page = within(budget, self.blocking(move |shard| shard.scan(&req))).await?;
        Ok(Response::new(page))
    }

    async fn run_query(
        &self,
        request: Request<pb::RunQueryRequest>,
    ) -> Result<Response<pb::RunQueryResponse>, Status> {
        let (_permit, budget) = self.admit(&request)?;
        let req = RunQuery::try_from(request.into_inner())?;
        let span = tracing::debug_span!("run_query", map = %req.map_name);
        let result = within(budget, self.blocking(move |shard| shard.run_query(&req)))
            .instrument(span)
            .await?;
        Ok(Response::new(result))
    }

    async fn changed_since(
        &self,
        request: Request<pb::ChangedSinceRequest>,
    ) -> Result<Response<pb::ChangedSinceResponse>, Status> {
        let (_permit, budget) = self.admit(&request)?;
        let req = ChangedSince::try_from(request.into_inner())?;
        let answer = within(
            budget,
            self.blocking(move |shard| shard.changed_since(&req)),
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn merkle_node(
        &self,
        request: Request<pb::MerkleNodeRequest>,
    ) -> Result<Response<pb::MerkleNodeResponse>, Status> {
        let (_permit, _) = self.admit(&request)?;
        let req = MerkleNodeQuery::try_from(request.into_inner())?;
        Ok(Response::new(self.shard.merkle_node(&req)))
    }

    type SubscribeChangesStream = BoxStream<pb::ChangeBatch>;

    async fn subscribe_changes(
        &self,
        request: Request<pb::SubscribeChangesRequest>,
    ) -> Result<Response<Self::SubscribeChangesStream>, Status> {
        self.open_feed(request.into_inner()).map(Response::new)
    }

    async fn publish_topic(
        &self,
        request: Request<pb::PublishTopicRequest>,
    ) -> Result<Response<pb::PublishTopicResponse>, Status> {
        // Topics do not depend on the shard's data, so they flow while it loads.
        let _permit = self.admission.admit()?;
        let message = Publish::try_from(request.into_inner())?;
        self.shard.topics().publish(message);
        Ok(Response::new(pb::PublishTopicResponse {}))
    }

    type SubscribeTopicsStream = BoxStream<pb::TopicMessage>;

    async fn subscribe_topics(
        &self,
        _request: Request<pb::SubscribeTopicsRequest>,
    ) -> Result<Response<Self::SubscribeTopicsStream>, Status> {
        if *self.shutdown.borrow() {
            return Err(SyncError::ShuttingDown.into());
        }
        Ok(Response::new(Box::pin(
            self.shard.topics().subscribe(self.shutdown.clone()),
        )))
    }

    async fn list_maps(
        &self,
        request: Request<pb::ListMapsRequest>,
    ) -> Result<Response<pb::ListMapsResponse>, Status> {
        let (_permit, _) = self.admit(&request)?;
        Ok(Response::new(self.shard.list_maps()))
    }

    async fn shard_info(
        &self,
        request: Request<pb::ShardInfoRequest>,
    ) -> Result<Response<pb::ShardInfoResponse>, Status> {
        // Answered while loading too: it is how a caller learns identity and epoch.
        let _permit = self.admission.admit()?;
        drop(request);
        Ok(Response::new(self.shard.info()))
    }

    async fn set_partitions(
        &self,
        request: Request<pb::SetPartitionsRequest>,
    ) -> Result<Response<pb::SetPartitionsResponse>, Status> {
        // Refused while the start-up load runs (UNAVAILABLE): the caller retries.
        let (_permit, budget) = self.admit(&request)?;
        let req = SetPartitions::try_from(request.into_inner())?;
        let span = tracing::info_span!("set_partitions", version = req.version);
        let reload_kept = req.reload_kept;
        let outcome = within(
            budget,
            self.shard.set_partitions(req.partitions, req.version),
        )
        .instrument(span)
        .await?;
        if reload_kept && outcome.applied {
            self.shard.reload_owned_after_settle();
        }
        Ok(Response::new(outcome.into()))
    }
}

impl LocalChangeFeed for SyncGrpc {
    fn subscribe(&self, request: pb::SubscribeChangesRequest) -> Result<ChangeBatchStream, Status> {
        self.open_feed(request)
    }
}

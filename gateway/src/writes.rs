//! The write pipeline shared by `/ws` and `/sync`: validate every op (classification,
//! map name, write validator, size, RBAC) before applying any, then route the ops to
//! their owning shards — one RPC per shard, concurrently — and collect per-op results.

use crate::auth::Principal;
use crate::error::GatewayError;
use crate::state::Gateway;
use std::sync::Arc;
use std::time::Instant;
use topgun_proto::grpc::common as pbc;
use topgun_proto::grpc::sync::{self as pbs, op::Kind};
use topgun_proto::wire::{self, ClientOp, LwwRecord, OpKind, OpResult, OrMapEntry, WriteConcern};

/// Who is writing.
#[derive(Debug, Clone, Default)]
pub struct Writer {
    /// Gateway-local connection id (`None` for HTTP).
    pub conn_id: Option<u64>,
    /// The authenticated principal.
    pub principal: Option<Principal>,
    /// Whether the caller authenticated at all (no-auth mode counts as authenticated).
    pub authenticated: bool,
    /// WebSocket writes go through the per-connection write validator; HTTP writes do not.
    pub via_connection: bool,
}

/// Rejection of a batch: the index of the op that failed and why.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Index of the first failing op.
    pub index: usize,
    /// Why.
    pub error: GatewayError,
}

/// A validated op ready for its shard.
#[derive(Debug, Clone)]
pub struct ValidOp {
    op: pbs::Op,
    requested: WriteConcern,
}

/// Map names: any non-empty UTF-8 string up to 1024 bytes without control characters.
pub fn validate_map_name(name: &str) -> Result<(), GatewayError> {
    if name.is_empty() {
        return Err(GatewayError::BadRequest(
            "invalid map name: must not be empty".into(),
        ));
    }
    if name.len() > 1024 || name.chars().any(char::is_control) {
        return Err(GatewayError::BadRequest(format!(
            "invalid map name {name:?}: at most 1024 bytes and no control characters"
        )));
    }
    Ok(())
}

/// Validates every op; the first failure rejects the whole batch (nothing applied).
pub fn validate_ops(
    gw: &Gateway,
    ops: &[ClientOp],
    batch_concern: Option<WriteConcern>,
    writer: &Writer,
) -> Result<Vec<ValidOp>, Rejection> {
    let security = gw.server.read().security.clone();
    ops.iter()
        .enumerate()
        .map(|(index, op)| {
            validate_op(gw, op, batch_concern, writer, &security)
                .map_err(|error| Rejection { index, error })
        })
        .collect()
}

fn validate_op(
    gw: &Gateway,
    op: &ClientOp,
    batch_concern: Option<WriteConcern>,
    writer: &Writer,
    security: &crate::network::config::SecurityConfig,
) -> Result<ValidOp, GatewayError> {
    validate_map_name(&op.map_name)?;
    let kind = op.kind().ok_or_else(|| {
        GatewayError::BadRequest(format!(
            "invalid operation for key {:?}: no record, orRecord or orTag",
            op.key
        ))
    })?;
    if writer.via_connection {
        if security.require_auth && !writer.authenticated {
            return Err(GatewayError::Unauthorized);
        }
        if !security.default_permissions.write {
            return Err(GatewayError::Forbidden(format!(
                "write access denied for map: {}",
                op.map_name
            )));
        }
        if security.max_value_bytes > 0 {
            let size = match kind {
                OpKind::LwwPut(r) if !r.is_tombstone() => wire::encode_body(r).len() as u64,
                OpKind::OrAdd(r) => wire::encode_body(r).len() as u64,
                _ => 0,
            };
            if size > security.max_value_bytes {
                return Err(GatewayError::TooLarge {
                    size,
                    max: security.max_value_bytes,
                });
            }
        }
    }
    let data = match kind {
        OpKind::LwwPut(r) => &r.value,
        _ => &rmpv::Value::Nil,
    };
    gw.check_write(writer.principal.as_ref(), &op.map_name, data)?;
    let kind = match kind {
        OpKind::LwwPut(r) => {
            gw.observe(&r.timestamp);
            Kind::LwwPut(r.into())
        }
        OpKind::LwwRemove => Kind::LwwRemove(pbs::LwwRemove {}),
        OpKind::OrAdd(r) => {
            gw.observe(&r.timestamp);
            Kind::OrAdd(r.into())
        }
        OpKind::OrRemove(tag) => Kind::OrRemoveTag(tag.to_string()),
    };
    Ok(ValidOp {
        op: pbs::Op {
            op_id: op.id.clone().unwrap_or_default(),
            map_name: op.map_name.clone(),
            key: op.key.clone(),
            kind: Some(kind),
        },
        requested: op
            .write_concern
            .or(batch_concern)
            .unwrap_or(WriteConcern::Memory),
    })
}

/// An LWW write issued by the gateway itself (system maps), bypassing client checks.
pub(crate) fn system_op(map_name: &str, key: &str, record: LwwRecord) -> ValidOp {
    ValidOp {
        op: pbs::Op {
            op_id: String::new(),
            map_name: map_name.to_string(),
            key: key.to_string(),
            kind: Some(Kind::LwwPut((&record).into())),
        },
        requested: WriteConcern::Persisted,
    }
}

/// Validates an ORMAP_PUSH_DIFF / OR key merge (write permission on the map).
pub fn validate_or_merge(
    gw: &Gateway,
    map_name: &str,
    entries: &[OrMapEntry],
    writer: &Writer,
) -> Result<Vec<ValidOp>, GatewayError> {
    validate_map_name(map_name)?;
    gw.check_write(writer.principal.as_ref(), map_name, &rmpv::Value::Nil)?;
    Ok(entries
        .iter()
        .map(|entry| {
            for r in &entry.records {
                gw.observe(&r.timestamp);
            }
            ValidOp {
                op: pbs::Op {
                    op_id: String::new(),
                    map_name: map_name.to_string(),
                    key: entry.key.clone(),
                    kind: Some(Kind::OrMerge(pbs::OrMergeKey {
                        records: entry.records.iter().map(Into::into).collect(),
                        tombstones: entry.tombstones.clone(),
                    })),
                },
                requested: WriteConcern::Applied,
            }
        })
        .collect())
}

/// Outcome of an applied batch, in op order.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Per-op results.
    pub results: Vec<OpResult>,
    /// Lowest level reached across the batch.
    pub achieved: WriteConcern,
    /// Whether `results` must be sent (a level above APPLIED was requested or an op failed).
    pub results_needed: bool,
}

/// Applies validated ops: one ApplyBatch per shard, concurrently. Any shard failure
/// fails the whole call with a (usually retryable) error and no acknowledgement; the
/// merges that did happen are idempotent, so the client's resend is safe.
pub async fn apply(
    gw: &Arc<Gateway>,
    ops: Vec<ValidOp>,
    writer: &Writer,
) -> Result<Applied, GatewayError> {
    let started = Instant::now();
    let result = apply_inner(gw, ops, writer).await;
    gw.record_operation("crdt", started, result.as_ref().map(|_| ()));
    result
}

async fn apply_inner(
    gw: &Arc<Gateway>,
    ops: Vec<ValidOp>,
    writer: &Writer,
) -> Result<Applied, GatewayError> {
    let _permit = gw
        .permits
        .try_acquire()
        .map_err(|_| GatewayError::Overloaded)?;
    let timeout_ms = gw.operation_timeout_ms();
    let origin = pbc::Origin {
        gateway_id: gw.gateway_id.clone(),
        connection_id: writer.conn_id.unwrap_or(0),
    };

    // One snapshot routes the whole batch, even if membership changes meanwhile.
    let topology = gw.sync.topology();
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); topology.shards.len()];
    for (i, op) in ops.iter().enumerate() {
        groups[topology.index_for_key(&op.op.key)].push(i);
    }
    let calls = groups
        .iter()
        .enumerate()
        .filter(|(_, idx)| !idx.is_empty())
        .map(|(shard, idx)| {
            let request = pbs::ApplyBatchRequest {
                ops: idx.iter().map(|&i| ops[i].op.clone()).collect(),
                write_concern: pbc::WriteConcern::from(
                    idx.iter()
                        .map(|&i| ops[i].requested)
                        .max()
                        .unwrap_or(WriteConcern::Memory),
                ) as i32,
                origin: Some(origin.clone()),
            };
            let handle = topology.shards[shard].clone();
            let req = gw.sync.request(request);
            let metrics = gw.metrics.clone();
            async move {
                let t = Instant::now();
                let result = handle.client().apply_batch(req).await;
                metrics
                    .grpc_client_duration
                    .with_label_values(&["sync", "ApplyBatch"])
                    .observe(t.elapsed().as_secs_f64());
                // Only a failed connection says the shard is unreachable; an
                // application error means it answered.
                handle.mark(
                    result
                        .as_ref()
                        .err()
                        .is_none_or(|s| s.code() != tonic::Code::Unavailable),
                );
                (idx, result)
            }
        });
    let responses = futures::future::join_all(calls).await;

    let mut results: Vec<Option<pbs::OpResult>> = vec![None; ops.len()];
    for (idx, response) in responses {
        match response {
            Ok(resp) => {
                for (slot, r) in idx.iter().zip(resp.into_inner().results) {
                    results[*slot] = Some(r);
                }
            }
            Err(status) => {
                if status.code() == tonic::Code::FailedPrecondition {
                    // Partition ownership moved: learn the new table for the client's retry.
                    gw.sync.refresh().await;
                }
                tracing::debug!(code = ?status.code(), message = status.message(), "shard rejected batch");
                return Err(GatewayError::from_status(&status, timeout_ms));
            }
        }
    }

    let mut achieved_all = WriteConcern::Persisted;
    let mut results_needed = false;
    let results = ops
        .iter()
        .zip(results)
        .map(|(op, r)| {
            let r = r.unwrap_or_default();
            let achieved = WriteConcern::from(
                pbc::WriteConcern::try_from(r.achieved_level)
                    .unwrap_or(pbc::WriteConcern::FireAndForget),
            );
            let reached = r.success && achieved >= op.requested;
            let error = if !r.success {
                Some(if r.error.is_empty() {
                    "operation failed".to_string()
                } else {
                    r.error
                })
            } else if !reached {
                Some(format!(
                    "Timeout: achieved {}, requested {}",
                    level_name(achieved),
                    level_name(op.requested)
                ))
            } else {
                None
            };
            results_needed |= error.is_some() || op.requested > WriteConcern::Applied;
            achieved_all = achieved_all.min(achieved);
            OpResult {
                op_id: op.op.op_id.clone(),
                success: error.is_none(),
                achieved_level: achieved,
                error,
            }
        })
        .collect();
    Ok(Applied {
        results,
        achieved: achieved_all,
        results_needed,
    })
}

/// Wire spelling of a level.
pub fn level_name(level: WriteConcern) -> &'static str {
    match level {
        WriteConcern::FireAndForget => "FIRE_AND_FORGET",
        WriteConcern::Memory => "MEMORY",
        WriteConcern::Applied => "APPLIED",
        WriteConcern::Replicated => "REPLICATED",
        WriteConcern::Persisted => "PERSISTED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_names_must_be_non_empty_and_printable() {
        assert!(validate_map_name("todos").is_ok());
        assert!(validate_map_name("conflict-test.v2").is_ok());
        assert!(validate_map_name("").is_err());
        assert!(validate_map_name("bad\u{0}name").is_err());
        assert!(validate_map_name(&"x".repeat(2000)).is_err());
    }
}

//! Permission policies shared by every gateway: they are stored as records of the LWW map
//! `$sys/policies` in the sync shards (so they are durable), loaded at start-up, and kept
//! current through the change feed, so a policy created on one gateway applies on every
//! gateway's open connections at once.

use crate::error::GatewayError;
use crate::rbac::Policy;
use crate::scatter;
use crate::state::Gateway;
use crate::writes::{self, Writer};
use std::sync::Arc;
use topgun_proto::wire::LwwRecord;

/// The system map holding one record per policy (key = policy id, value = policy JSON).
pub const POLICY_MAP: &str = "$sys/policies";

/// Maps under this prefix are reserved for the suite: only admins may read or write them.
pub const SYSTEM_PREFIX: &str = "$sys/";

fn record_for(gw: &Gateway, policy: Option<&Policy>) -> Result<LwwRecord, GatewayError> {
    let value = match policy {
        Some(p) => rmpv::Value::from(
            serde_json::to_string(p).map_err(|e| GatewayError::Internal(e.to_string()))?,
        ),
        None => rmpv::Value::Nil,
    };
    Ok(LwwRecord {
        value,
        timestamp: gw.now(),
        ttl_ms: None,
    })
}

async fn write(gw: &Arc<Gateway>, key: &str, record: LwwRecord) -> Result<(), GatewayError> {
    let op = writes::system_op(POLICY_MAP, key, record);
    let applied = writes::apply(gw, vec![op], &Writer::default()).await?;
    match applied.results.into_iter().next() {
        Some(r) if r.success => Ok(()),
        Some(r) => Err(GatewayError::Unavailable(
            r.error.unwrap_or_else(|| "policy not stored".into()),
        )),
        None => Err(GatewayError::Internal(
            "no result for the policy write".into(),
        )),
    }
}

/// Stores (creates or replaces) a policy durably, then applies it locally.
pub async fn store(gw: &Arc<Gateway>, policy: &Policy) -> Result<(), GatewayError> {
    write(gw, &policy.id, record_for(gw, Some(policy))?).await?;
    gw.policies.upsert(policy.clone());
    Ok(())
}

/// Deletes a policy durably (tombstone), then locally.
pub async fn delete(gw: &Arc<Gateway>, id: &str) -> Result<(), GatewayError> {
    write(gw, id, record_for(gw, None)?).await?;
    gw.policies.delete(id);
    Ok(())
}

/// Replaces the local policy set with the stored one.
pub async fn load(gw: &Arc<Gateway>) -> Result<usize, GatewayError> {
    let states =
        scatter::scan_since(gw, POLICY_MAP, &topgun_proto::hlc::Timestamp::default()).await?;
    let policies: Vec<Policy> = states
        .into_iter()
        .filter_map(|st| LwwRecord::try_from(st.lww?).ok())
        .filter_map(|r| serde_json::from_str(r.value.as_str()?).ok())
        .collect();
    let count = policies.len();
    gw.policies.replace_all(policies);
    Ok(count)
}

/// Applies a change of `$sys/policies` seen on the change feed.
pub fn on_change(gw: &Gateway, key: &str, record: &LwwRecord) {
    match record
        .value
        .as_str()
        .and_then(|json| serde_json::from_str::<Policy>(json).ok())
    {
        Some(policy) => {
            gw.policies.upsert(policy);
        }
        None => {
            gw.policies.delete(key);
        }
    }
}

//! Turns an agreed membership view into partition ownership and applies it: the node's
//! own sync shard first (it loads what it gains from storage), then the search
//! replica's feed list, then the gateway's routing table and the clients' map.

use super::membership::Agreed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use topgun_gateway::cluster_view::{self, ClusterNode, ClusterView};
use topgun_gateway::state::Gateway;
use topgun_proto::grpc::cluster::Member;
use topgun_proto::grpc::sync::SetPartitionsRequest;
use topgun_proto::partition::{shard_of_partition, PARTITION_COUNT};

/// Owner of every partition as an index into `live` (sorted by node id), so every node
/// holding the same live set computes the same table.
pub fn owners(live: &[Member]) -> Vec<usize> {
    let count = live.len().max(1) as u32;
    (0..PARTITION_COUNT)
        .map(|p| shard_of_partition(p, count) as usize)
        .collect()
}

/// The partitions `node_id` owns under `owners`.
pub fn partitions_of(live: &[Member], owners: &[usize], node_id: &str) -> Vec<u32> {
    let Some(me) = live.iter().position(|m| m.node_id == node_id) else {
        return Vec::new();
    };
    (0..PARTITION_COUNT)
        .filter(|&p| owners[p as usize] == me)
        .collect()
}

/// gRPC address of a member's sync shard.
pub fn sync_addr(member: &Member, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", member.cluster_addr)
}

/// The view the gateway adopts for `agreed`.
pub fn cluster_view(agreed: &Agreed, tls: bool) -> ClusterView {
    let http_scheme = |m: &Member| {
        if m.client_scheme == "wss" {
            "https"
        } else {
            "http"
        }
    };
    ClusterView {
        version: agreed.version,
        nodes: agreed
            .live
            .iter()
            .map(|m| ClusterNode {
                node_id: m.node_id.clone(),
                websocket: format!("{}://{}", m.client_scheme, m.client_addr),
                http: format!("{}://{}", http_scheme(m), m.client_addr),
                sync_addr: sync_addr(m, tls),
            })
            .collect(),
        owners: owners(&agreed.live),
    }
}

/// Where a new view is applied.
#[derive(Debug)]
pub struct Appliers {
    /// This node's id.
    pub node_id: String,
    /// Whether internal gRPC uses TLS.
    pub tls: bool,
    /// Client of this node's own sync shard.
    pub sync: topgun_gateway::services::sync_cluster::SyncClient,
    /// The gateway whose routing and clients follow the view.
    pub gateway: Arc<Gateway>,
    /// Feed list of this node's search replica.
    pub search: watch::Sender<Vec<String>>,
}

/// A node alone in its view waits this long for peers before taking every partition:
/// a restarted node learns the cluster from the first heartbeats, and partitions it
/// took while alone and then kept would not be reloaded with what the others wrote.
pub const SOLO_GRACE: Duration = Duration::from_secs(3);

/// Applies every new agreed view until `stop` flips. A view is applied in order: the
/// own shard takes its partitions (retried until it succeeds or a newer view arrives),
/// the search replica follows every live shard, the gateway routes by the new table and
/// pushes PARTITION_MAP to its clients.
pub async fn apply_views(
    appliers: Appliers,
    mut views: watch::Receiver<Agreed>,
    mut stop: watch::Receiver<bool>,
) {
    let started = tokio::time::Instant::now();
    let mut applied = 0u64;
    let mut applied_members: Vec<String> = Vec::new();
    loop {
        let agreed = views.borrow_and_update().clone();
        let solo_wait = (agreed.live.len() == 1)
            .then(|| SOLO_GRACE.saturating_sub(started.elapsed()))
            .filter(|left| !left.is_zero());
        if let Some(left) = solo_wait {
            tokio::select! {
                _ = tokio::time::sleep(left) => {}
                changed = views.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            // Re-read: the view may have changed, or the grace is over.
            views.mark_changed();
            continue;
        }
        // A node this one did not count before may have owned partitions this one
        // keeps (a healed split, or a peer that started alone): reload them too.
        let joined = !applied_members.is_empty()
            && agreed
                .live
                .iter()
                .any(|m| !applied_members.contains(&m.node_id));
        if agreed.version > applied && apply(&appliers, &agreed, joined, &mut views).await {
            applied = agreed.version;
            applied_members = agreed.live.iter().map(|m| m.node_id.clone()).collect();
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Returns false when a newer view arrived before the shard accepted this one.
async fn apply(
    appliers: &Appliers,
    agreed: &Agreed,
    reload_kept: bool,
    views: &mut watch::Receiver<Agreed>,
) -> bool {
    let view = cluster_view(agreed, appliers.tls);
    let mine = partitions_of(&agreed.live, &view.owners, &appliers.node_id);
    loop {
        let mut request = tonic::Request::new(SetPartitionsRequest {
            partitions: mine.clone(),
            version: agreed.version,
            reload_kept,
        });
        request.set_timeout(Duration::from_secs(30));
        match appliers.sync.clone().set_partitions(request).await {
            Ok(response) => {
                let r = response.into_inner();
                tracing::info!(
                    version = agreed.version,
                    owned = mine.len(),
                    gained = r.gained,
                    dropped = r.dropped,
                    "partition ownership applied"
                );
                break;
            }
            Err(status) => {
                tracing::warn!(version = agreed.version, error = %status, "taking partition ownership failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                if views.has_changed().unwrap_or(true) {
                    return false;
                }
            }
        }
    }
    appliers
        .search
        .send_replace(view.nodes.iter().map(|n| n.sync_addr.clone()).collect());
    if let Err(e) = cluster_view::apply(&appliers.gateway, view) {
        tracing::error!(error = %e, "gateway rejected the cluster view");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cluster::test_member as member;

    #[test]
    fn every_partition_has_exactly_one_owner_and_shares_are_even() {
        let live = vec![member("a"), member("b"), member("c")];
        let owners = owners(&live);
        let shares: Vec<Vec<u32>> = live
            .iter()
            .map(|m| partitions_of(&live, &owners, &m.node_id))
            .collect();
        let total: usize = shares.iter().map(Vec::len).sum();
        assert_eq!(total, PARTITION_COUNT as usize);
        for share in &shares {
            assert!((90..=91).contains(&share.len()), "{}", share.len());
        }
        assert!(partitions_of(&live, &owners, "stranger").is_empty());
    }

    #[test]
    fn the_view_advertises_websocket_urls_without_a_path() {
        let agreed = Agreed {
            version: 4,
            live: vec![member("a"), member("b")],
        };
        let view = cluster_view(&agreed, false);
        assert_eq!(view.version, 4);
        assert_eq!(view.nodes[0].websocket, "ws://a:8080");
        assert_eq!(view.nodes[1].http, "http://b:8080");
        assert_eq!(view.nodes[1].sync_addr, "http://b:9000");
        assert_eq!(view.owners.len(), PARTITION_COUNT as usize);
    }
}

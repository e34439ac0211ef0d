//! The partition map clients see (core.md §7.3): either this gateway alone owning all
//! 271 partitions, or — in peer cluster mode — every live node with the owner of each
//! partition, pushed to every authenticated connection whenever its version changes.

use crate::state::Gateway;
use std::sync::Arc;
use topgun_proto::hlc::wall_clock_ms;
use topgun_proto::partition::PARTITION_COUNT;
use topgun_proto::wire::{Message, NodeEndpoints, NodeInfo, PartitionInfo, PartitionMapPayload};

/// One live node of a peer cluster as clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// Its node id.
    pub node_id: String,
    /// WebSocket URL clients open (`ws://host:port`, no path; `/` upgrades too).
    pub websocket: String,
    /// Base URL of its HTTP endpoints.
    pub http: String,
    /// gRPC address of its sync shard on the cluster port.
    pub sync_addr: String,
}

/// The cluster as membership last agreed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Version of the partition table; increases on every membership change.
    pub version: u64,
    /// Live nodes.
    pub nodes: Vec<ClusterNode>,
    /// partition -> index into `nodes`, for all 271 partitions.
    pub owners: Vec<usize>,
}

impl ClusterView {
    /// The PARTITION_MAP message for this view.
    pub fn message(&self) -> Message {
        Message::PartitionMap {
            payload: PartitionMapPayload {
                version: self.version,
                partition_count: PARTITION_COUNT,
                nodes: self
                    .nodes
                    .iter()
                    .map(|n| NodeInfo {
                        node_id: n.node_id.clone(),
                        endpoints: NodeEndpoints {
                            websocket: n.websocket.clone(),
                            http: Some(n.http.clone()),
                        },
                        status: "ACTIVE".into(),
                    })
                    .collect(),
                partitions: self
                    .owners
                    .iter()
                    .enumerate()
                    .map(|(p, &owner)| PartitionInfo {
                        partition_id: p as u32,
                        owner_node_id: self.nodes[owner].node_id.clone(),
                        backup_node_ids: vec![],
                    })
                    .collect(),
                generated_at: wall_clock_ms(),
            },
        }
    }
}

/// The single-node map: this gateway owns every partition, reached at `host` (the
/// Host header the client used).
pub fn single_node(gw: &Gateway, host: &str) -> Message {
    let tls = gw.network.tls.is_some();
    let (ws, http) = if tls {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    ClusterView {
        version: 1,
        nodes: vec![ClusterNode {
            node_id: gw.node_id(),
            websocket: format!("{ws}://{host}/ws"),
            http: format!("{http}://{host}"),
            sync_addr: String::new(),
        }],
        owners: vec![0; PARTITION_COUNT as usize],
    }
    .message()
}

/// Adopts a new cluster view: routes ops by its table from now on and pushes the map to
/// every authenticated client. Views not newer than the current one are ignored.
pub fn apply(gw: &Arc<Gateway>, view: ClusterView) -> Result<(), String> {
    {
        let current = gw.cluster.read();
        if current.as_ref().is_some_and(|c| c.version >= view.version) {
            return Ok(());
        }
    }
    // The topology checks the view's shape (nodes, an owner in range per partition).
    let addrs: Vec<String> = view.nodes.iter().map(|n| n.sync_addr.clone()).collect();
    gw.sync.set_topology(view.version, &addrs, &view.owners)?;
    let frame = bytes::Bytes::from(topgun_proto::wire::encode(&view.message()));
    *gw.cluster.write() = Some(Arc::new(view));
    for conn in gw.connections.all() {
        if conn.is_authenticated() {
            gw.metrics
                .messages_out
                .with_label_values(&["PARTITION_MAP"])
                .inc();
            conn.push_encoded(frame.clone());
        }
    }
    Ok(())
}

/// The map a PARTITION_MAP_REQUEST gets: the cluster view when clustered, else this node.
pub fn current(gw: &Gateway, host: &str) -> Message {
    match gw.cluster.read().as_ref() {
        Some(view) => view.message(),
        None => single_node(gw, host),
    }
}

/// The version a client holding no map compares against.
pub fn version(gw: &Gateway) -> u64 {
    gw.cluster.read().as_ref().map_or(1, |v| v.version)
}

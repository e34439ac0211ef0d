//! Peer cluster mode of the single-process binaries (http-admin-ops.md §8): every node
//! runs the whole suite, serves its sync shard and the membership service on the
//! cluster port, and owns a share of the 271 partitions decided by the live members.
//! Gateways forward each op over gRPC to the owning node's shard.

pub mod membership;
pub mod ownership;

/// Cluster flags of `test-server` and `topgun`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterOptions {
    /// Host peers and clients use to reach this node (advertised, not bound).
    #[arg(
        long = "host",
        env = "TOPGUN_ADVERTISED_HOST",
        default_value = "127.0.0.1"
    )]
    pub host: String,
    /// Cluster port (sync shard and membership, on all interfaces); setting it turns
    /// on peer cluster mode (0 = ephemeral).
    #[arg(long, env = "TOPGUN_CLUSTER_PORT")]
    pub cluster_port: Option<u16>,
    /// Cluster addresses `host:port,...` of nodes to join; blanks are dropped.
    #[arg(long, env = "TOPGUN_SEED_NODES", default_value = "")]
    pub seed_nodes: String,
}

impl ClusterOptions {
    /// Whether the node runs in peer cluster mode.
    pub fn enabled(&self) -> bool {
        self.cluster_port.is_some() || !self.seeds().is_empty()
    }

    /// The seed addresses, trimmed, blanks dropped.
    pub fn seeds(&self) -> Vec<String> {
        self.seed_nodes
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.host.trim().is_empty() {
            return Err("--host must not be empty".into());
        }
        for seed in self.seeds() {
            let valid = seed
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !valid {
                return Err(format!("--seed-nodes: {seed:?} is not host:port"));
            }
        }
        Ok(())
    }
}

/// A member named `id` with ports 9000 (cluster) and 8080 (clients), for tests.
#[cfg(test)]
pub(crate) fn test_member(id: &str) -> topgun_proto::grpc::cluster::Member {
    topgun_proto::grpc::cluster::Member {
        node_id: id.into(),
        cluster_addr: format!("{id}:9000"),
        client_addr: format!("{id}:8080"),
        client_scheme: "ws".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_drop_blanks_and_cluster_mode_follows_the_flags() {
        let mut o = ClusterOptions {
            host: "127.0.0.1".into(),
            cluster_port: None,
            seed_nodes: " a:1, ,b:2 ,".into(),
        };
        assert_eq!(o.seeds(), vec!["a:1", "b:2"]);
        assert!(o.enabled());
        assert!(o.validate().is_ok());
        o.seed_nodes = String::new();
        assert!(!o.enabled());
        o.cluster_port = Some(0);
        assert!(o.enabled());
        o.seed_nodes = "nohost".into();
        assert!(o.validate().is_err());
        o.seed_nodes = "h:0".into();
        assert!(o.validate().is_err());
    }
}

//! Who is in the peer cluster: heartbeats to the seeds and every learned peer, liveness
//! by silence, and a versioned view of the live nodes that all survivors converge on.
//!
//! Agreement rule: a node bumps its version to one above every version it has seen
//! whenever its live set changes, and adopts a peer's higher version when both hold the
//! same live set. Once membership is stable every node therefore holds the same set
//! with the same (highest) version, and a later change always gets a higher one.

use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use topgun_proto::grpc::cluster::membership_client::MembershipClient;
use topgun_proto::grpc::cluster::membership_server::Membership as MembershipRpc;
use topgun_proto::grpc::cluster::{HeartbeatRequest, HeartbeatResponse, Member, View};
use topgun_proto::internal_auth::TokenAttach;

/// How often every peer is contacted.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// A peer silent for this long is considered dead.
pub const FAILURE_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of one heartbeat call.
const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(1);

/// The live nodes (sorted by node id) and the version of that view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// Increases on every change of `live`.
    pub version: u64,
    /// Live members, this node included, sorted by node id.
    pub live: Vec<Member>,
}

#[derive(Debug)]
struct Peer {
    member: Member,
    last_seen: Instant,
}

/// The membership state machine, free of I/O so its rules are testable.
#[derive(Debug)]
pub struct MembershipState {
    me: Member,
    seeds: Vec<String>,
    peers: HashMap<String, Peer>,
    learned: BTreeSet<String>,
    live: Vec<Member>,
    version: u64,
    max_seen: u64,
}

fn ids(members: &[Member]) -> Vec<&str> {
    members.iter().map(|m| m.node_id.as_str()).collect()
}

impl MembershipState {
    /// A node that knows only itself and its seed addresses.
    pub fn new(me: Member, seeds: Vec<String>) -> Self {
        MembershipState {
            live: vec![me.clone()],
            me,
            seeds,
            peers: HashMap::new(),
            learned: BTreeSet::new(),
            version: 1,
            max_seen: 1,
        }
    }

    /// Cluster addresses to heartbeat: seeds, learned and known peers, never itself.
    pub fn targets(&self) -> Vec<String> {
        let mut targets: BTreeSet<String> = self.seeds.iter().cloned().collect();
        targets.extend(self.learned.iter().cloned());
        targets.extend(self.peers.values().map(|p| p.member.cluster_addr.clone()));
        targets.remove(&self.me.cluster_addr);
        targets.into_iter().collect()
    }

    /// Folds in a peer's view (from its heartbeat or its answer to ours): the sender is
    /// alive now, the members it lists become heartbeat targets, and its version is
    /// adopted when it describes the same live set with a higher version. Returns
    /// whether the agreed view changed.
    pub fn observe(&mut self, view: &View, now: Instant) -> bool {
        let Some(sender) = view.sender.as_ref() else {
            return false;
        };
        if sender.node_id == self.me.node_id || sender.node_id.is_empty() {
            return false;
        }
        // A node restarted under a new id on the same address replaces the old entry.
        self.peers
            .retain(|id, p| id == &sender.node_id || p.member.cluster_addr != sender.cluster_addr);
        self.peers.insert(
            sender.node_id.clone(),
            Peer {
                member: sender.clone(),
                last_seen: now,
            },
        );
        for member in &view.live {
            if member.node_id != self.me.node_id && !member.cluster_addr.is_empty() {
                self.learned.insert(member.cluster_addr.clone());
            }
        }
        self.max_seen = self.max_seen.max(view.version);
        if view.version > self.version && ids(&view.live) == ids(&self.live) {
            self.version = view.version;
            return true;
        }
        false
    }

    /// Recomputes the live set from the peers' last contact; a changed set gets a
    /// version above every version seen. Returns whether the agreed view changed.
    pub fn evaluate(&mut self, now: Instant) -> bool {
        let mut live: Vec<Member> = self
            .peers
            .values()
            .filter(|p| now.saturating_duration_since(p.last_seen) <= FAILURE_TIMEOUT)
            .map(|p| p.member.clone())
            .collect();
        live.push(self.me.clone());
        live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        if live == self.live {
            return false;
        }
        self.version = self.version.max(self.max_seen) + 1;
        self.max_seen = self.version;
        self.live = live;
        true
    }

    /// Sets the client address once the gateway is bound (known only then with port 0).
    pub fn set_client_addr(&mut self, addr: String, scheme: &str) {
        self.me.client_addr = addr;
        self.me.client_scheme = scheme.to_string();
        let me = self.me.clone();
        if let Some(entry) = self.live.iter_mut().find(|m| m.node_id == me.node_id) {
            *entry = me;
        }
    }

    /// What this node tells its peers.
    pub fn view(&self) -> View {
        View {
            sender: Some(self.me.clone()),
            live: self.live.clone(),
            version: self.version,
        }
    }

    /// The current agreed view.
    pub fn agreed(&self) -> Agreed {
        Agreed {
            version: self.version,
            live: self.live.clone(),
        }
    }
}

/// Membership of this node: the state, the heartbeat loop and the gRPC service.
#[derive(Debug, Clone)]
pub struct Membership {
    state: Arc<Mutex<MembershipState>>,
    agreed: watch::Sender<Agreed>,
    token: TokenAttach,
    /// Heartbeats are answered only once the node knows its client address.
    serving: Arc<std::sync::atomic::AtomicBool>,
}

type Client = MembershipClient<InterceptedService<Channel, TokenAttach>>;

impl Membership {
    /// Membership of `me`, starting from the seed addresses (`host:port`).
    pub fn new(me: Member, seeds: Vec<String>, token: TokenAttach) -> Self {
        let state = MembershipState::new(me, seeds);
        let agreed = watch::channel(state.agreed()).0;
        Membership {
            state: Arc::new(Mutex::new(state)),
            agreed,
            token,
            serving: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Completes this node's identity with its client address and starts answering
    /// heartbeats.
    pub fn start_serving(&self, client_addr: String, scheme: &str) {
        self.state.lock().set_client_addr(client_addr, scheme);
        self.serving
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.publish();
    }

    /// The agreed view, notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<Agreed> {
        self.agreed.subscribe()
    }

    fn publish(&self) {
        let agreed = self.state.lock().agreed();
        self.agreed.send_if_modified(|current| {
            let changed = *current != agreed;
            *current = agreed;
            changed
        });
    }

    fn client(&self, clients: &mut HashMap<String, Client>, addr: &str) -> Option<Client> {
        if let Some(client) = clients.get(addr) {
            return Some(client.clone());
        }
        let scheme =
            if topgun_proto::internal_tls::InternalTls::from_env().is_ok_and(|t| t.serves_tls()) {
                "https"
            } else {
                "http"
            };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .ok()?
            .connect_timeout(HEARTBEAT_DEADLINE / 2)
            .tcp_nodelay(true);
        let endpoint = match topgun_proto::internal_tls::client_endpoint(endpoint) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot reach peer");
                return None;
            }
        };
        let client =
            MembershipClient::with_interceptor(endpoint.connect_lazy(), self.token.clone());
        clients.insert(addr.to_string(), client.clone());
        Some(client)
    }

    /// Heartbeats every target each interval until `stop` flips.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut clients: HashMap<String, Client> = HashMap::new();
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let (targets, view) = {
                let state = self.state.lock();
                (state.targets(), state.view())
            };
            let calls = targets.iter().filter_map(|addr| {
                let mut client = self.client(&mut clients, addr)?;
                let mut request = Request::new(HeartbeatRequest {
                    view: Some(view.clone()),
                });
                request.set_timeout(HEARTBEAT_DEADLINE);
                Some(async move {
                    tokio::time::timeout(HEARTBEAT_DEADLINE, client.heartbeat(request)).await
                })
            });
            let answers = futures::future::join_all(calls).await;
            let now = Instant::now();
            {
                let mut state = self.state.lock();
                for answer in answers {
                    if let Ok(Ok(response)) = answer {
                        if let Some(view) = response.into_inner().view {
                            state.observe(&view, now);
                        }
                    }
                }
                if state.evaluate(now) {
                    let agreed = state.agreed();
                    tracing::info!(
                        version = agreed.version,
                        live = ?ids(&agreed.live),
                        "cluster membership changed"
                    );
                }
            }
            self.publish();
        }
    }
}

#[tonic::async_trait]
impl MembershipRpc for Membership {
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        if !self.serving.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Status::unavailable("node is starting"));
        }
        let view = request
            .into_inner()
            .view
            .ok_or_else(|| Status::invalid_argument("heartbeat without a view"))?;
        let answer = {
            let mut state = self.state.lock();
            state.observe(&view, Instant::now());
            state.view()
        };
        self.publish();
        Ok(Response::new(HeartbeatResponse { view: Some(answer) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cluster::test_member as member;

    /// Delivers `from`'s view to `to`, as a heartbeat would.
    fn exchange(from: &MembershipState, to: &mut MembershipState, now: Instant) {
        to.observe(&from.view(), now);
    }

    fn round(nodes: &mut [MembershipState], alive: &[bool], now: Instant) {
        for i in 0..nodes.len() {
            for j in 0..nodes.len() {
                if i != j && alive[i] && alive[j] {
                    let view = nodes[i].view();
                    nodes[j].observe(&view, now);
                    let answer = nodes[j].view();
                    nodes[i].observe(&answer, now);
                }
            }
        }
        for (node, up) in nodes.iter_mut().zip(alive) {
            if *up {
                node.evaluate(now);
            }
        }
    }

    fn cluster(n: usize) -> Vec<MembershipState> {
        (0..n)
            .map(|i| {
                let seeds = if i == 0 {
                    vec![]
                } else {
                    vec!["n0:9000".to_string()]
                };
                MembershipState::new(member(&format!("n{i}")), seeds)
            })
            .collect()
    }

    fn converged(nodes: &[MembershipState], alive: &[bool]) -> Option<Agreed> {
        let mut views = nodes
            .iter()
            .zip(alive)
            .filter(|(_, up)| **up)
            .map(|(n, _)| n.agreed());
        let first = views.next()?;
        views.all(|v| v == first).then_some(first)
    }

    #[test]
    fn a_node_learns_peers_of_its_seed_and_targets_them() {
        let mut seed = MembershipState::new(member("a"), vec![]);
        let mut joiner = MembershipState::new(member("c"), vec!["a:9000".into()]);
        let now = Instant::now();
        seed.observe(&MembershipState::new(member("b"), vec![]).view(), now);
        seed.evaluate(now);
        exchange(&seed, &mut joiner, now);
        assert_eq!(
            joiner.targets(),
            vec!["a:9000".to_string(), "b:9000".to_string()]
        );
        assert!(
            !seed.targets().contains(&"a:9000".to_string()),
            "never itself"
        );
    }

    #[test]
    fn survivors_agree_on_a_higher_version_after_a_death_and_again_after_a_return() {
        let mut nodes = cluster(3);
        let start = Instant::now();
        let mut now = start;
        let all = [true, true, true];
        for _ in 0..4 {
            round(&mut nodes, &all, now);
            now += HEARTBEAT_INTERVAL;
        }
        let joined = converged(&nodes, &all).expect("three nodes agree");
        assert_eq!(ids(&joined.live), vec!["n0", "n1", "n2"]);

        // n2 dies: nothing changes until the failure timeout, then both survivors move.
        let survivors = [true, true, false];
        for _ in 0..3 {
            round(&mut nodes, &survivors, now);
            now += HEARTBEAT_INTERVAL;
        }
        assert_eq!(converged(&nodes, &survivors).expect("still agreed"), joined);
        for _ in 0..8 {
            round(&mut nodes, &survivors, now);
            now += HEARTBEAT_INTERVAL;
        }
        let shrunk = converged(&nodes, &survivors).expect("survivors agree");
        assert_eq!(ids(&shrunk.live), vec!["n0", "n1"]);
        assert!(shrunk.version > joined.version);

        // n2 restarts empty (version 1) and rejoins through its seed.
        nodes[2] = MembershipState::new(member("n2"), vec!["n0:9000".into()]);
        for _ in 0..4 {
            round(&mut nodes, &all, now);
            now += HEARTBEAT_INTERVAL;
        }
        let rejoined = converged(&nodes, &all).expect("all three agree again");
        assert_eq!(ids(&rejoined.live), vec!["n0", "n1", "n2"]);
        assert!(rejoined.version > shrunk.version);
    }

    #[test]
    fn a_same_set_with_a_higher_version_is_adopted_and_a_different_set_is_not() {
        let now = Instant::now();
        let mut a = MembershipState::new(member("a"), vec![]);
        let mut b = MembershipState::new(member("b"), vec![]);
        exchange(&b, &mut a, now);
        exchange(&a, &mut b, now);
        a.evaluate(now);
        b.evaluate(now);
        // Force b ahead on the same set.
        b.version = 9;
        assert!(a.observe(&b.view(), now));
        assert_eq!(a.agreed().version, 9);

        let mut other = b.view();
        other.live.pop();
        other.version = 20;
        assert!(!a.observe(&other, now), "different set: not adopted");
        assert_eq!(a.agreed().version, 9);
        // ...but the next change of a's own set goes above it.
        a.evaluate(now + FAILURE_TIMEOUT * 2);
        assert_eq!(a.agreed().version, 21);
    }

    #[test]
    fn a_restart_under_a_new_id_on_the_same_address_replaces_the_old_peer() {
        let now = Instant::now();
        let mut a = MembershipState::new(member("a"), vec![]);
        a.observe(&MembershipState::new(member("b"), vec![]).view(), now);
        let mut renamed = member("b2");
        renamed.cluster_addr = "b:9000".into();
        a.observe(&MembershipState::new(renamed, vec![]).view(), now);
        a.evaluate(now);
        assert_eq!(ids(&a.agreed().live), vec!["a", "b2"]);
    }
}

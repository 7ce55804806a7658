//! Service chains in a node's tables (reference §11; [`weft_model::chain`]).
//!
//! Runs after [`crate::compile_node_state_with_services`]. For a chain between left
//! network L and right network R through service pods h1 … hn:
//!
//! - L's table routes every endpoint of R to h1's left interface (on this node: to its
//!   veth, via its address; elsewhere: into the tunnel with L's VNI to h1's node, whose
//!   L table does the same locally); R's table routes every endpoint of L to hn's right
//!   interface.
//! - Between hi and hi+1 the chain has a routing instance of its own (its VNI from the
//!   record, its table): hi's right interface and hi+1's left interface enter it instead
//!   of their networks' tables, and it routes R's endpoints to hi+1's left interface and
//!   L's endpoints to hi's right interface. Its own VNI is what keeps a packet that
//!   crosses nodes between two hops in the chain.
//! - L's and R's tables get a [`ChainGuard`]: new connections of their pods into the
//!   chain must match its ports.
//!
//! The service pods' own interfaces are not chained endpoints (their addresses stay
//! reachable in their own networks only). A hop is missing when its pod has no
//! scheduled interface in L or R by the names given; then [`ChainFailure::Drop`] takes
//! R's endpoints out of L's table and L's out of R's (no route: refused at once), and
//! [`ChainFailure::Bypass`] chains through the hops that remain, or, with none left,
//! routes L and R to each other directly (each endpoint into its own network's tunnel,
//! like connected networks).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use weft_model::node::{NextHop, NodeNetwork, NodeRoute, NodeState, VtepPeer, vn_table, vtep_mac};
use weft_model::{
    ChainFailure, ChainGuard, ChainHop, InterfaceAttachment, ServiceChainRecord, VirtualNetworkRecord, Vni,
};

use crate::node_internal_ip;

/// A hop whose two interfaces are present: their attachments.
struct LiveHop<'a> {
    left: &'a InterfaceAttachment,
    right: &'a InterfaceAttachment,
}

/// What the chain pass needs from the whole cluster.
struct Cluster<'a> {
    interfaces: BTreeMap<String, &'a InterfaceAttachment>,
    underlay: BTreeMap<&'a str, IpAddr>,
}

fn key_of(i: &InterfaceAttachment) -> String {
    format!("{}/{}/{}", i.namespace, i.pod, i.interface)
}

/// Adds the routes, routing instances and guards of `chains` to `state` (see the module
/// doc). `networks`, `interfaces` and `nodes` are the same inputs the state was compiled
/// from. Pure and deterministic (chains in name order); problems become warnings.
pub fn add_service_chains(
    state: &mut NodeState,
    chains: &[ServiceChainRecord],
    networks: &[VirtualNetworkRecord],
    interfaces: &[InterfaceAttachment],
    nodes: &[Node],
) {
    if chains.is_empty() {
        return;
    }
    let mut cluster = Cluster {
        interfaces: BTreeMap::new(),
        underlay: BTreeMap::new(),
    };
    for i in interfaces {
        cluster.interfaces.entry(key_of(i)).or_insert(i);
    }
    for n in nodes {
        if let (Some(name), Some(ip)) = (n.metadata.name.as_deref(), node_internal_ip(n)) {
            cluster.underlay.entry(name).or_insert(ip);
        }
    }
    let by_name: BTreeMap<&str, &VirtualNetworkRecord> =
        networks.iter().map(|n| (n.fq_name.as_str(), n)).collect();
    let mut sorted: Vec<&ServiceChainRecord> = chains.iter().collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut warnings: BTreeSet<String> = state.warnings.iter().cloned().collect();
    let mut peers: BTreeMap<String, IpAddr> = state
        .peers
        .iter()
        .map(|p| (p.node.clone(), p.underlay_ip))
        .collect();
    for chain in sorted {
        let (Some(left), Some(right)) = (
            by_name.get(chain.left_network.as_str()),
            by_name.get(chain.right_network.as_str()),
        ) else {
            warnings.insert(format!(
                "service chain {}/{}: network {} or {} is not stored; not programmed",
                chain.namespace, chain.name, chain.left_network, chain.right_network
            ));
            continue;
        };
        let mut pass = ChainPass {
            state: &mut *state,
            cluster: &cluster,
            chain,
            warnings: &mut warnings,
            peers: &mut peers,
        };
        pass.run(left, right);
    }
    state.peers = peers
        .into_iter()
        .map(|(node, underlay_ip)| VtepPeer {
            vtep_mac: vtep_mac(&node),
            node,
            underlay_ip,
        })
        .collect();
    for network in &mut state.networks {
        network.chain_guards.sort_by(|a, b| a.chain.cmp(&b.chain));
    }
    state
        .networks
        .sort_by(|a, b| (a.vni, &a.fq_name).cmp(&(b.vni, &b.fq_name)));
    state.warnings = warnings.into_iter().collect();
}

/// One chain applied to one node's state.
struct ChainPass<'s, 'c> {
    state: &'s mut NodeState,
    cluster: &'c Cluster<'c>,
    chain: &'c ServiceChainRecord,
    warnings: &'s mut BTreeSet<String>,
    peers: &'s mut BTreeMap<String, IpAddr>,
}

impl<'c> ChainPass<'_, 'c> {
    fn run(&mut self, left: &VirtualNetworkRecord, right: &VirtualNetworkRecord) {
        let chain = self.chain;
        let hop_keys: BTreeSet<String> = chain
            .hops
            .iter()
            .flat_map(|h| {
                [
                    chain.interface_key(&h.pod, &h.left_interface),
                    chain.interface_key(&h.pod, &h.right_interface),
                ]
            })
            .collect();
        let endpoints = |network: &str| -> Vec<&'c InterfaceAttachment> {
            self.cluster
                .interfaces
                .iter()
                .filter(|(k, i)| i.network == network && i.node.is_some() && !hop_keys.contains(*k))
                .map(|(_, i)| *i)
                .collect()
        };
        let left_endpoints = endpoints(&left.fq_name);
        let right_endpoints = endpoints(&right.fq_name);
        let live: Vec<Option<LiveHop<'c>>> =
            chain.hops.iter().map(|h| self.live_hop(h, left, right)).collect();
        let hops: Option<Vec<LiveHop<'c>>> = if live.iter().all(Option::is_some) {
            Some(live.into_iter().flatten().collect())
        } else {
            match chain.on_failure {
                ChainFailure::Drop => None,
                ChainFailure::Bypass => Some(live.into_iter().flatten().collect()),
            }
        };
        let prefixes =
            |eps: &[&InterfaceAttachment]| -> Vec<IpNet> { eps.iter().map(|i| IpNet::from(i.ip)).collect() };
        let Some(hops) = hops else {
            // Fail closed: neither side keeps a route to the other's endpoints.
            self.remove_routes(&left.fq_name, &prefixes(&right_endpoints));
            self.remove_routes(&right.fq_name, &prefixes(&left_endpoints));
            return;
        };
        let chain_name = format!("{}/{}", chain.namespace, chain.name);
        if chain.hop_vnis.len() + 1 < hops.len() {
            // A record without a VNI per gap (corrupt, or from another version) cannot
            // keep packets in the chain between hops: fail closed rather than skip hops.
            self.warnings.insert(format!(
                "service chain {chain_name}: {} hops need {} routing-instance VNIs, the record has {}; traffic between the networks is dropped",
                hops.len(),
                hops.len() - 1,
                chain.hop_vnis.len()
            ));
            self.remove_routes(&left.fq_name, &prefixes(&right_endpoints));
            self.remove_routes(&right.fq_name, &prefixes(&left_endpoints));
            return;
        }
        for (table_network, other, dests) in [(left, right, &right_endpoints), (right, left, &left_endpoints)]
        {
            let Some(index) = self.table_index(&table_network.fq_name) else {
                continue;
            };
            // Where this side's traffic enters the chain: the first hop it meets, or
            // (every hop bypassed) each endpoint directly in its own network.
            let entry = if table_network.fq_name == left.fq_name {
                hops.first().map(|h| h.left)
            } else {
                hops.last().map(|h| h.right)
            };
            for dest in dests.iter() {
                let next_hop = match entry {
                    Some(hop_iface) => self.next_hop(hop_iface, table_network.vni),
                    None => self.next_hop(dest, other.vni),
                };
                if let Some(next_hop) = next_hop {
                    self.put_route(index, IpNet::from(dest.ip), next_hop, &other.fq_name);
                }
            }
            self.state.networks[index].chain_guards.push(ChainGuard {
                chain: chain_name.clone(),
                destinations: prefixes(dests),
                ports: chain.ports.clone(),
            });
        }
        // The routing instances between consecutive hops.
        for (gap, pair) in hops.windows(2).enumerate() {
            let (before, after) = (&pair[0], &pair[1]);
            let Some(vni) = chain.hop_vnis.get(gap).copied() else {
                continue; // checked above: there is one per gap
            };
            let here = |i: &InterfaceAttachment| i.node.as_deref() == Some(self.state.node.as_str());
            if !here(before.right) && !here(after.left) {
                continue;
            }
            let index = self.instance_index(chain.instance_name(gap), vni);
            for (dests, toward, network) in [
                (&right_endpoints, after.left, &right.fq_name),
                (&left_endpoints, before.right, &left.fq_name),
            ] {
                for dest in dests.iter() {
                    if let Some(next_hop) = self.next_hop(toward, vni) {
                        self.put_route(index, IpNet::from(dest.ip), next_hop, network);
                    }
                }
            }
            for iface in [before.right, after.left] {
                let key = key_of(iface);
                if let Some(local) = self.state.interfaces.iter_mut().find(|l| l.key() == key) {
                    local.table = vn_table(vni);
                    local.vni = vni;
                }
            }
        }
    }

    /// The hop's two interfaces, if both are scheduled in the right networks.
    fn live_hop(
        &self,
        hop: &ChainHop,
        left: &VirtualNetworkRecord,
        right: &VirtualNetworkRecord,
    ) -> Option<LiveHop<'c>> {
        let find = |ifname: &str, network: &str| {
            self.cluster
                .interfaces
                .get(&self.chain.interface_key(&hop.pod, ifname))
                .copied()
                .filter(|i| i.network == network && i.node.is_some())
        };
        Some(LiveHop {
            left: find(&hop.left_interface, &left.fq_name)?,
            right: find(&hop.right_interface, &right.fq_name)?,
        })
    }

    /// Next hop towards interface `i`: its veth here, else the tunnel with `vni` to its
    /// node (recording the peer).
    fn next_hop(&mut self, i: &InterfaceAttachment, vni: Vni) -> Option<NextHop> {
        let node = i.node.as_deref()?;
        if node == self.state.node {
            return Some(NextHop::Local { interface: key_of(i) });
        }
        match self.cluster.underlay.get(node) {
            Some(ip) => {
                self.peers.insert(node.to_string(), *ip);
                Some(NextHop::Remote {
                    node: node.to_string(),
                    vni,
                })
            }
            None => {
                self.warnings.insert(format!(
                    "service chain {}/{}: Node {node} has no InternalIP address; no route through it",
                    self.chain.namespace, self.chain.name
                ));
                None
            }
        }
    }

    fn table_index(&self, fq: &str) -> Option<usize> {
        self.state.networks.iter().position(|n| n.fq_name == fq)
    }

    /// The state's routing instance `fq` (created empty when absent).
    fn instance_index(&mut self, fq: String, vni: Vni) -> usize {
        if let Some(i) = self.table_index(&fq) {
            return i;
        }
        self.state.networks.push(NodeNetwork {
            fq_name: fq,
            vni,
            table: vn_table(vni),
            gateway: None,
            routes: Vec::new(),
            outside: None,
            ip_fabric_forwarding: false,
            chain_guards: Vec::new(),
        });
        self.state.networks.len() - 1
    }

    /// Puts a chain route into table `index`, replacing a direct route to the same
    /// prefix (the chain is the explicit way between the two networks).
    fn put_route(&mut self, index: usize, prefix: IpNet, next_hop: NextHop, network: &str) {
        let routes = &mut self.state.networks[index].routes;
        let route = NodeRoute {
            prefix,
            next_hop,
            network: network.to_string(),
            reply_only: false,
            service_only: false,
        };
        match routes.binary_search_by(|r| r.prefix.cmp(&prefix)) {
            Ok(pos) => routes[pos] = route,
            Err(pos) => routes.insert(pos, route),
        }
    }

    /// Removes routes to `prefixes` from the table of network `fq`, if this node has it.
    fn remove_routes(&mut self, fq: &str, prefixes: &[IpNet]) {
        if let Some(index) = self.table_index(fq) {
            let gone: BTreeSet<&IpNet> = prefixes.iter().collect();
            self.state.networks[index]
                .routes
                .retain(|r| !gone.contains(&r.prefix));
        }
    }
}

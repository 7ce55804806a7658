//! The route compiler: from the controller's derived objects (virtual networks and
//! interface attachments) and the Kubernetes Node inputs to one node's desired
//! forwarding state ([`NodeState`]).
//!
//! ```text
//! translator (derived networks + interfaces, Node inputs)
//!        │  compile_node_state (this crate: pure, sans-IO, deterministic)
//!        v
//! NodeState ──controller watch stream (NDJSON)──> agent ──> kernel (netlink)
//!        │
//!        └── render_routes ──> `weft routes`, the demo
//! ```
//!
//! The model (product.md, "Data plane on Linux"): each virtual network present on a
//! node is a policy-routing table ([`vn_table`]). A table holds a /32 (/128) route for
//! every endpoint of its network, local ones to the pod's veth and remote ones through
//! the VXLAN device with the *destination* network's VNI, plus the endpoints of every
//! network listed in its `connected_networks` (TF's default network policies leak
//! routes, e.g. between a pod network and a service network). Received VXLAN traffic is
//! steered into the table of its VNI, so a node needs the table of every network it
//! hosts a pod of; that is exactly the set of tables computed here.
//!
//! Everything is sorted (networks by VNI, routes by prefix, interfaces by key, peers by
//! name) and the inputs are put in canonical order first, so equal inputs give a
//! byte-identical state whatever order they came in: the controller compares states to
//! decide what to stream, and agents diff them against the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use weft_model::node::{
    LocalInterface, NextHop, NodeNetwork, NodeRoute, NodeState, VtepPeer, vn_table, vtep_mac,
};
use weft_model::{InterfaceAttachment, VirtualNetworkRecord};

/// FQ name of TF's pseudo network standing for the underlay (IP fabric). Networks list
/// it in `connected_networks`, but it has no endpoints of its own to route to here.
pub const IP_FABRIC_NETWORK: &str = "default-domain:default-project:ip-fabric";

/// The underlay address of a Kubernetes Node: the first IPv4 `InternalIP` in
/// `status.addresses`, else the first IPv6 one; `None` when it has none (yet) or none
/// parses.
pub fn node_internal_ip(node: &Node) -> Option<IpAddr> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    let internal: Vec<IpAddr> = addresses
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.trim().parse::<IpAddr>().ok())
        .collect();
    internal
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| internal.first())
        .copied()
}

/// The host route (/32 or /128) of one address.
fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

fn interface_key(i: &InterfaceAttachment) -> String {
    format!("{}/{}/{}", i.namespace, i.pod, i.interface)
}

/// Computes everything `node` must program, from the stored networks and interfaces and
/// the Kubernetes Nodes (for underlay addresses). `revision` is the store revision the
/// inputs were read at; it is copied into the state unchanged.
///
/// Problems that make the state incomplete (no InternalIP on a node, an interface on no
/// node or on a network that is not stored, two endpoints with the same address in one
/// table) are reported in [`NodeState::warnings`]; the rest of the state is still
/// computed.
pub fn compile_node_state(
    node: &str,
    revision: u64,
    networks: &[VirtualNetworkRecord],
    interfaces: &[InterfaceAttachment],
    nodes: &[Node],
) -> NodeState {
    let mut warnings = BTreeSet::new();

    // Canonical input order: networks by FQ name (first record of a name wins),
    // interfaces by key (likewise), nodes by name.
    let mut by_name: BTreeMap<&str, &VirtualNetworkRecord> = BTreeMap::new();
    let mut sorted_networks: Vec<&VirtualNetworkRecord> = networks.iter().collect();
    sorted_networks.sort_by(|a, b| (&a.fq_name, a.vni).cmp(&(&b.fq_name, b.vni)));
    for n in sorted_networks {
        by_name.entry(n.fq_name.as_str()).or_insert(n);
    }
    let mut by_key: BTreeMap<String, &InterfaceAttachment> = BTreeMap::new();
    let mut sorted_interfaces: Vec<&InterfaceAttachment> = interfaces.iter().collect();
    sorted_interfaces.sort_by(|a, b| {
        (interface_key(a), &a.network, a.ip, &a.node).cmp(&(interface_key(b), &b.network, b.ip, &b.node))
    });
    for i in sorted_interfaces {
        by_key.entry(interface_key(i)).or_insert(i);
    }
    let mut underlay: BTreeMap<&str, Option<IpAddr>> = BTreeMap::new();
    for n in nodes {
        if let Some(name) = n.metadata.name.as_deref() {
            let ip = node_internal_ip(n);
            let slot = underlay.entry(name).or_insert(None);
            if slot.is_none() {
                *slot = ip;
            }
        }
    }
    let own_ip = underlay.get(node).copied().flatten();
    if own_ip.is_none() {
        warnings.insert(if underlay.contains_key(node) {
            format!("Node {node} has no InternalIP address yet; remote nodes cannot reach its pods")
        } else {
            format!("Node {node} is not known to the controller (no Node object); remote nodes cannot reach its pods")
        });
    }

    // Endpoints per network, in key order.
    let mut members: BTreeMap<&str, Vec<&InterfaceAttachment>> = BTreeMap::new();
    let mut local = Vec::new();
    for (key, i) in &by_key {
        let Some(network) = by_name.get(i.network.as_str()) else {
            if i.node.as_deref() == Some(node) {
                warnings.insert(format!(
                    "interface {key} is on network {}, which is not stored; it is not programmed",
                    i.network
                ));
            }
            continue;
        };
        members.entry(network.fq_name.as_str()).or_default().push(i);
        if i.node.as_deref() == Some(node) {
            local.push(LocalInterface {
                namespace: i.namespace.clone(),
                pod: i.pod.clone(),
                pod_uid: i.pod_uid.clone(),
                interface: i.interface.clone(),
                network: network.fq_name.clone(),
                table: vn_table(network.vni),
                vni: network.vni,
                ip: i.ip,
                prefix_len: i.prefix_len,
                gateway: i.gateway,
                mac: i.mac,
                primary: i.primary,
            });
        }
    }
    let present: BTreeSet<&str> = local.iter().map(|l| l.network.as_str()).collect();

    let mut peers: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut tables = Vec::new();
    for fq in &present {
        let Some(network) = by_name.get(fq) else {
            continue;
        };
        // Own network first, then the connected ones in name order: on an address
        // conflict inside one table the own network's endpoint wins.
        let mut sources: Vec<&VirtualNetworkRecord> = vec![network];
        let connected: BTreeSet<&str> = network
            .connected_networks
            .iter()
            .map(String::as_str)
            .filter(|c| *c != IP_FABRIC_NETWORK && *c != network.fq_name)
            .collect();
        sources.extend(connected.iter().filter_map(|c| by_name.get(c).copied()));
        let mut routes: BTreeMap<IpNet, NodeRoute> = BTreeMap::new();
        for source in sources {
            for i in members.get(source.fq_name.as_str()).into_iter().flatten() {
                let key = interface_key(i);
                let next_hop = match i.node.as_deref() {
                    None => {
                        warnings.insert(format!(
                            "interface {key} (network {}) is on no node yet; no route to {}",
                            source.fq_name, i.ip
                        ));
                        continue;
                    }
                    Some(n) if n == node => NextHop::Local {
                        interface: key.clone(),
                    },
                    Some(n) => match underlay.get(n).copied().flatten() {
                        Some(_) => NextHop::Remote {
                            node: n.to_string(),
                            vni: source.vni,
                        },
                        None => {
                            warnings.insert(format!(
                                "Node {n} has no InternalIP address (or no Node object); no routes towards its pods"
                            ));
                            continue;
                        }
                    },
                };
                let prefix = host_prefix(i.ip);
                match routes.get(&prefix) {
                    Some(existing) => {
                        warnings.insert(format!(
                            "table {} ({}): {prefix} is both {} in {} and {} in {}; keeping the first",
                            vn_table(network.vni),
                            network.fq_name,
                            describe_hop(&existing.next_hop),
                            existing.network,
                            key,
                            source.fq_name
                        ));
                    }
                    None => {
                        if let NextHop::Remote { node: n, .. } = &next_hop
                            && let Some(ip) = underlay.get(n.as_str()).copied().flatten()
                        {
                            peers.insert(n.clone(), ip);
                        }
                        routes.insert(
                            prefix,
                            NodeRoute {
                                prefix,
                                next_hop,
                                network: source.fq_name.clone(),
                            },
                        );
                    }
                }
            }
        }
        tables.push(NodeNetwork {
            fq_name: network.fq_name.clone(),
            vni: network.vni,
            table: vn_table(network.vni),
            gateway: network.gateway,
            routes: routes.into_values().collect(),
        });
    }
    tables.sort_by(|a, b| (a.vni, &a.fq_name).cmp(&(b.vni, &b.fq_name)));
    for pair in tables.windows(2) {
        if pair[0].table == pair[1].table {
            warnings.insert(format!(
                "networks {} and {} share VNI {} (table {}); their routes would mix",
                pair[0].fq_name, pair[1].fq_name, pair[0].vni, pair[0].table
            ));
        }
    }
    local.sort_by_key(LocalInterface::key);

    NodeState {
        node: node.to_string(),
        revision,
        underlay_ip: own_ip,
        vtep_mac: vtep_mac(node),
        peers: peers
            .into_iter()
            .map(|(node, underlay_ip)| VtepPeer {
                vtep_mac: vtep_mac(&node),
                node,
                underlay_ip,
            })
            .collect(),
        networks: tables,
        interfaces: local,
        warnings: warnings.into_iter().collect(),
    }
}

fn describe_hop(hop: &NextHop) -> String {
    match hop {
        NextHop::Local { interface } => interface.clone(),
        NextHop::Remote { node, .. } => format!("on {node}"),
    }
}

/// Short name of a network: the last part of its FQ name.
fn short_name(fq: &str) -> &str {
    fq.rsplit(':').next().unwrap_or(fq)
}

/// Renders a node state as text in the manner of `ip route show table …`, one block per
/// table, for `weft routes` and the demo (people read it; agents use the JSON).
///
/// ```text
/// node node-1 (underlay 192.0.2.11, vtep 02:…), revision 7
/// table 10001 (k8s-default-pod-network, VNI 1, gateway 10.47.255.254):
///   10.47.255.250/32 encap vxlan id 1 dst 192.0.2.12 (node-2)
///   10.47.255.252/32 dev <local default/web/eth0>
/// ```
pub fn render_routes(state: &NodeState) -> String {
    let mut out = String::new();
    let underlay = state
        .underlay_ip
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let _ = writeln!(
        out,
        "node {} (underlay {underlay}, vtep {}), revision {}",
        state.node, state.vtep_mac, state.revision
    );
    if state.networks.is_empty() {
        let _ = writeln!(out, "no virtual networks on this node (no pods placed here)");
    }
    let peer_ip: BTreeMap<&str, IpAddr> = state
        .peers
        .iter()
        .map(|p| (p.node.as_str(), p.underlay_ip))
        .collect();
    for n in &state.networks {
        let gateway = n.gateway.map(|g| format!(", gateway {g}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "table {} ({}, VNI {}{gateway}):",
            n.table,
            short_name(&n.fq_name),
            n.vni
        );
        if n.routes.is_empty() {
            let _ = writeln!(out, "  (no routes)");
        }
        for r in &n.routes {
            let hop = match &r.next_hop {
                NextHop::Local { interface } => format!("dev <local {interface}>"),
                NextHop::Remote { node, vni } => {
                    let dst = peer_ip
                        .get(node.as_str())
                        .map(|ip| ip.to_string())
                        .unwrap_or_else(|| "?".to_string());
                    format!("encap vxlan id {vni} dst {dst} ({node})")
                }
            };
            let leaked = if r.network != n.fq_name {
                format!(" [leaked from {}]", short_name(&r.network))
            } else {
                String::new()
            };
            let _ = writeln!(out, "  {} {hop}{leaked}", r.prefix);
        }
    }
    for w in &state.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests;

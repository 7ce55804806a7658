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
    LocalInterface, NextHop, NodeNetwork, NodeRoute, NodeState, SERVICE_TABLE, VtepPeer, vn_table, vtep_mac,
};
use weft_model::{FloatingIpRecord, ImportedRoute, InterfaceAttachment, ServiceRecord, VirtualNetworkRecord};

pub mod chains;
pub mod policy;
pub mod services;

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
/// the Kubernetes Nodes (for underlay addresses), without services: see
/// [`compile_node_state_with_services`].
pub fn compile_node_state(
    node: &str,
    revision: u64,
    networks: &[VirtualNetworkRecord],
    interfaces: &[InterfaceAttachment],
    nodes: &[Node],
) -> NodeState {
    compile_node_state_with_services(node, revision, networks, interfaces, &[], nodes)
}

/// Computes everything `node` must program, from the stored networks, interfaces and
/// services and the Kubernetes Nodes (for underlay addresses). `revision` is the store
/// revision the inputs were read at; it is copied into the state unchanged.
///
/// Problems that make the state incomplete (no InternalIP on a node, an interface on no
/// node or on a network that is not stored, two endpoints with the same address in one
/// table, a service backend that is no known pod) are reported in
/// [`NodeState::warnings`]; the rest of the state is still computed.
///
/// Services (see [`weft_model::node`] and [`services`]): a service is listed when pods
/// of this node may use its VIP, or when it has NodePorts or external IPs (every node
/// answers those).
pub fn compile_node_state_with_services(
    node: &str,
    revision: u64,
    networks: &[VirtualNetworkRecord],
    interfaces: &[InterfaceAttachment],
    service_records: &[ServiceRecord],
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
                floating_ips: Vec::new(),
            });
        }
    }
    let present: BTreeSet<&str> = local.iter().map(|l| l.network.as_str()).collect();

    let mut ctx = Compile {
        node,
        underlay: &underlay,
        peers: BTreeMap::new(),
        warnings: &mut warnings,
    };
    let mut table_routes: BTreeMap<&str, BTreeMap<IpNet, NodeRoute>> = BTreeMap::new();
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
                ctx.add_endpoint(network, &mut routes, source, i, None);
            }
        }
        table_routes.insert(network.fq_name.as_str(), routes);
    }

    let (node_services, service_routes) = services::compile(
        &mut ctx,
        &services::Inputs {
            by_name: &by_name,
            by_key: &by_key,
            members: &members,
            present: &present,
        },
        service_records,
        &mut table_routes,
    );

    let mut tables = Vec::new();
    for (fq, routes) in table_routes {
        let Some(network) = by_name.get(fq) else {
            continue;
        };
        tables.push(NodeNetwork {
            fq_name: network.fq_name.clone(),
            vni: network.vni,
            table: vn_table(network.vni),
            gateway: network.gateway,
            routes: routes.into_values().collect(),
            outside: None,
            ip_fabric_forwarding: network.ip_fabric_forwarding,
            chain_guards: Vec::new(),
        });
    }
    tables.sort_by(|a, b| (a.vni, &a.fq_name).cmp(&(b.vni, &b.fq_name)));
    for pair in tables.windows(2) {
        if pair[0].table == pair[1].table {
            ctx.warnings.insert(format!(
                "networks {} and {} share VNI {} (table {}); their routes would mix",
                pair[0].fq_name, pair[1].fq_name, pair[0].vni, pair[0].table
            ));
        }
    }
    local.sort_by_key(LocalInterface::key);
    let peers = std::mem::take(&mut ctx.peers);

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
        services: node_services,
        service_routes,
        warnings: warnings.into_iter().collect(),
        policies: Vec::new(),
    }
}

/// Adds routes learned over BGP ([`ImportedRoute`], computed by the controller's BGP
/// module from VPNv4 routes whose route targets a network imports) to the tables of
/// `state`: each lands in its importing network's table if this node has that table,
/// with a [`NextHop::External`] next hop (encapsulate with the label's VNI straight to
/// the remote node). The cluster's own endpoints win: an imported prefix that a table
/// already routes is skipped with a warning. Pure and deterministic (the imported routes
/// are taken in sorted order; tables stay sorted by prefix).
pub fn add_imported_routes(state: &mut NodeState, imported: &[ImportedRoute]) {
    let mut sorted: Vec<&ImportedRoute> = imported.iter().collect();
    sorted.sort();
    let mut warnings: BTreeSet<String> = state.warnings.iter().cloned().collect();
    for network in &mut state.networks {
        let mut mine = sorted.iter().filter(|r| r.network == network.fq_name).peekable();
        if mine.peek().is_none() {
            continue;
        }
        // Where each prefix of the table is first routed (a lookup per imported route
        // instead of a scan of the table).
        let mut routed: BTreeMap<_, usize> = BTreeMap::new();
        for (i, x) in network.routes.iter().enumerate() {
            routed.entry(x.prefix).or_insert(i);
        }
        let mut added = false;
        for r in mine {
            if let Some(&i) = routed.get(&r.prefix) {
                let existing = &network.routes[i];
                if !matches!(existing.next_hop, NextHop::External { .. }) {
                    warnings.insert(format!(
                        "table {} ({}): imported {} from BGP peer {} (RD {}) overlaps a route of this cluster ({}); keeping the cluster's",
                        network.table,
                        network.fq_name,
                        r.prefix,
                        r.peer,
                        r.rd,
                        describe_hop(&existing.next_hop)
                    ));
                }
                continue;
            }
            routed.insert(r.prefix, network.routes.len());
            network.routes.push(NodeRoute {
                prefix: r.prefix,
                next_hop: NextHop::External {
                    address: r.address,
                    vni: r.vni,
                    vtep_mac: r.vtep_mac,
                },
                network: network.fq_name.clone(),
                reply_only: false,
                service_only: false,
            });
            added = true;
        }
        if added {
            network.routes.sort_by_key(|a| a.prefix);
        }
    }
    state.warnings = warnings.into_iter().collect();
}

/// Binds pod floating IPs ([`FloatingIpRecord`], from `FloatingIp` objects) to the
/// local interfaces of `state`: each record bound to a pod interface on this node adds
/// its address to that [`LocalInterface::floating_ips`] (sorted, no duplicates), which
/// the agent turns into 1:1 NAT in both directions. Records that are unbound (no pod,
/// not scheduled, no address) or bound on another node are skipped; a record bound
/// here to an interface the state does not have (or has with another address: the
/// inputs are out of step) is skipped with a warning. Pure and deterministic; call it
/// on the result of [`compile_node_state_with_services`].
pub fn add_floating_ips(state: &mut NodeState, floating_ips: &[FloatingIpRecord]) {
    let mut sorted: Vec<&FloatingIpRecord> = floating_ips.iter().collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut warnings: BTreeSet<String> = state.warnings.iter().cloned().collect();
    let mut touched = false;
    for f in sorted {
        let Some((ip, fixed_ip, node)) = f.binding() else {
            continue;
        };
        if node != state.node {
            continue;
        }
        let key = f.interface_key();
        match state.interfaces.iter_mut().find(|l| l.key() == key) {
            Some(local) if local.ip == fixed_ip => {
                local.floating_ips.push(ip);
                touched = true;
            }
            Some(local) => {
                warnings.insert(format!(
                    "floating IP {ip} (FloatingIp {}/{}) is bound to {key} at {fixed_ip}, but the interface has {}; not programmed",
                    f.namespace, f.name, local.ip
                ));
            }
            None => {
                warnings.insert(format!(
                    "floating IP {ip} (FloatingIp {}/{}) is bound to {key} on this node, which has no such interface; not programmed",
                    f.namespace, f.name
                ));
            }
        }
    }
    if touched {
        for local in &mut state.interfaces {
            local.floating_ips.sort();
            local.floating_ips.dedup();
        }
    }
    state.warnings = warnings.into_iter().collect();
}

/// What route computation shares: this node, the underlay addresses, the peers used so
/// far, the warnings.
pub(crate) struct Compile<'a> {
    pub(crate) node: &'a str,
    pub(crate) underlay: &'a BTreeMap<&'a str, Option<IpAddr>>,
    pub(crate) peers: BTreeMap<String, IpAddr>,
    pub(crate) warnings: &'a mut BTreeSet<String>,
}

impl Compile<'_> {
    /// The next hop towards interface `i` of network `source`, or `None` (warned) when
    /// it cannot be routed. Does not record the peer (see [`Compile::insert`]).
    pub(crate) fn next_hop(
        &mut self,
        source: &VirtualNetworkRecord,
        i: &InterfaceAttachment,
    ) -> Option<NextHop> {
        let key = interface_key(i);
        match i.node.as_deref() {
            None => {
                self.warnings.insert(format!(
                    "interface {key} (network {}) is on no node yet; no route to {}",
                    source.fq_name, i.ip
                ));
                None
            }
            Some(n) if n == self.node => Some(NextHop::Local { interface: key }),
            Some(n) => self.remote(n, source.vni),
        }
    }

    /// A next hop into the tunnel to node `n` with `vni`; `None` (warned) when `n` has
    /// no underlay address.
    pub(crate) fn remote(&mut self, n: &str, vni: weft_model::Vni) -> Option<NextHop> {
        match self.underlay.get(n).copied().flatten() {
            Some(_) => Some(NextHop::Remote {
                node: n.to_string(),
                vni,
            }),
            None => {
                self.warnings.insert(format!(
                    "Node {n} has no InternalIP address (or no Node object); no routes towards its pods"
                ));
                None
            }
        }
    }

    /// Inserts `route` into `routes`, recording the peer its next hop uses.
    pub(crate) fn insert(&mut self, routes: &mut BTreeMap<IpNet, NodeRoute>, route: NodeRoute) {
        if let NextHop::Remote { node: n, .. } = &route.next_hop
            && let Some(ip) = self.underlay.get(n.as_str()).copied().flatten()
        {
            self.peers.insert(n.clone(), ip);
        }
        routes.insert(route.prefix, route);
    }

    /// Adds the /32 of interface `i` (of network `source`) to `routes`, the table of
    /// `table_network`. When the prefix is taken it warns and keeps the first route,
    /// except for an `extra` route (leaked for a service) whose endpoint is already
    /// there through its own network: that is no conflict.
    pub(crate) fn add_endpoint(
        &mut self,
        table_network: &VirtualNetworkRecord,
        routes: &mut BTreeMap<IpNet, NodeRoute>,
        source: &VirtualNetworkRecord,
        i: &InterfaceAttachment,
        extra: Option<Extra>,
    ) {
        let prefix = host_prefix(i.ip);
        if extra.is_some()
            && let Some(existing) = routes.get(&prefix)
            && existing.network == source.fq_name
        {
            return;
        }
        let Some(next_hop) = self.next_hop(source, i) else {
            return;
        };
        if let Some(existing) = routes.get(&prefix) {
            self.warnings.insert(format!(
                "table {} ({}): {prefix} is both {} in {} and {} in {}; keeping the first",
                vn_table(table_network.vni),
                table_network.fq_name,
                describe_hop(&existing.next_hop),
                existing.network,
                interface_key(i),
                source.fq_name
            ));
            return;
        }
        self.insert(
            routes,
            NodeRoute {
                prefix,
                next_hop,
                network: source.fq_name.clone(),
                reply_only: extra == Some(Extra::ReplyOnly),
                service_only: extra == Some(Extra::Backend),
            },
        );
    }
}

/// Why a route is added to a table beyond the table's own and connected networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extra {
    /// A service backend, for a client table.
    Backend,
    /// A service client, for a backend's table, replies only.
    ReplyOnly,
}

fn describe_hop(hop: &NextHop) -> String {
    match hop {
        NextHop::Local { interface } => interface.clone(),
        NextHop::Remote { node, .. } => format!("on {node}"),
        NextHop::External { address, .. } => format!("via BGP at {address}"),
    }
}

fn describe_route_hop(hop: &NextHop, peer_ip: &BTreeMap<&str, IpAddr>) -> String {
    match hop {
        NextHop::Local { interface } => format!("dev <local {interface}>"),
        NextHop::Remote { node, vni } => {
            let dst = peer_ip
                .get(node.as_str())
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "?".to_string());
            format!("encap vxlan id {vni} dst {dst} ({node})")
        }
        NextHop::External { address, vni, .. } => {
            format!("encap vxlan id {vni} dst {address} (external, BGP)")
        }
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
        let instance_of_chain = n.fq_name.contains(weft_model::chain::CHAIN_INSTANCE_MARK);
        for r in &n.routes {
            let chain = n
                .chain_guards
                .iter()
                .find(|g| g.destinations.iter().any(|d| d.contains(&r.prefix.addr())))
                .map(|g| g.chain.clone());
            let leaked = if r.reply_only {
                format!(" [replies only, {}]", short_name(&r.network))
            } else if let Some(chain) = chain {
                format!(" [{}, through service chain {chain}]", short_name(&r.network))
            } else if instance_of_chain {
                format!(" [{}, between service-chain hops]", short_name(&r.network))
            } else if r.network != n.fq_name {
                format!(" [leaked from {}]", short_name(&r.network))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {} {}{leaked}",
                r.prefix,
                describe_route_hop(&r.next_hop, &peer_ip)
            );
        }
    }
    if !state.service_routes.is_empty() {
        let _ = writeln!(
            out,
            "table {SERVICE_TABLE} (service backends for NodePort / external-IP traffic):"
        );
        for r in &state.service_routes {
            let _ = writeln!(
                out,
                "  {} {}",
                r.prefix,
                describe_route_hop(&r.next_hop, &peer_ip)
            );
        }
    }
    for s in &state.services {
        let vip = s
            .vip
            .map(|v| v.to_string())
            .unwrap_or_else(|| "no VIP".to_string());
        let tables: Vec<String> = s.client_tables.iter().map(u32::to_string).collect();
        let _ = writeln!(
            out,
            "service {} {} {vip} (clients: tables {}{}{})",
            s.key(),
            s.service_type,
            if tables.is_empty() {
                "none".to_string()
            } else {
                tables.join(",")
            },
            if s.external_ips.is_empty() {
                String::new()
            } else {
                format!(
                    ", external {}",
                    s.external_ips
                        .iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            },
            if s.affinity == weft_model::node::SessionAffinity::ClientIp {
                ", affinity ClientIP"
            } else {
                ""
            },
        );
        for p in &s.ports {
            let backends: Vec<String> = p
                .backends
                .iter()
                .map(|b| format!("{}:{}", b.ip, b.port))
                .collect();
            let node_port = p.node_port.map(|n| format!(" nodePort {n}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}/{}{node_port} -> {}",
                p.port,
                p.protocol.as_str(),
                if backends.is_empty() {
                    "no ready backend (rejected)".to_string()
                } else {
                    backends.join(" ")
                }
            );
        }
    }
    for w in &state.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod imported_tests;

#[cfg(test)]
mod fip_tests;

#[cfg(test)]
mod chain_tests;

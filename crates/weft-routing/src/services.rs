//! Services in a node's state: TF's native ECMP load balancer (reference §7.1–7.3)
//! compiled for one node.
//!
//! For every stored [`ServiceRecord`] the compiler decides:
//!
//! * **who may use the VIP**: the networks connected to the service network (TF's
//!   default policies, §3.4: a pod network and its service network; isolated pod
//!   networks and the cluster's default service network). Their tables on this node are
//!   the service's [`NodeService::client_tables`], and each ready backend's /32 is put
//!   into them (a backend in another network than the client's is otherwise not
//!   routable from there: the DNAT happens on the client's node);
//! * **how replies come back**: a backend on this node whose network is not connected to
//!   a client network gets that network's endpoints in its table, marked
//!   [`NodeRoute::reply_only`] (the agent refuses new connections towards them, so the
//!   leak does not open the isolated network to the backend's pods);
//! * **NodePort and external IPs**: every node answers them, so the service is listed on
//!   every node; the backends go into [`NodeState::service_routes`] (table
//!   [`weft_model::node::SERVICE_TABLE`]), and a backend's table gets a reply-only route
//!   to every other node's [`node_service_address`] (the source a remote node gives the
//!   traffic it forwards to a backend here).
//!
//! Backend ports: a service port's target port on a backend is the backend's resolved
//! port for that service port name ([`BackendRecord::target_ports`], filled by the
//! translator from the EndpointSlice or the pod's containerPorts), else the numeric
//! targetPort. A named targetPort the pod does not declare leaves that backend out of
//! that port.
//!
//! [`NodeState::service_routes`]: weft_model::node::NodeState::service_routes
//! [`BackendRecord::target_ports`]: weft_model::derived::BackendRecord::target_ports

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use weft_model::derived::BackendRecord;
use weft_model::node::{
    L4Protocol, NodeBackend, NodeRoute, NodeService, NodeServicePort, SessionAffinity, node_service_address,
    vn_table,
};
use weft_model::{InterfaceAttachment, ServiceRecord, VirtualNetworkRecord};

use crate::{Compile, Extra, IP_FABRIC_NETWORK, host_prefix};

/// The compiler's indexes the service pass reads.
pub(crate) struct Inputs<'a, 'b> {
    /// Networks by FQ name.
    pub(crate) by_name: &'b BTreeMap<&'a str, &'a VirtualNetworkRecord>,
    /// Interfaces by `namespace/pod/interface`.
    pub(crate) by_key: &'b BTreeMap<String, &'a InterfaceAttachment>,
    /// Endpoints per network.
    pub(crate) members: &'b BTreeMap<&'a str, Vec<&'a InterfaceAttachment>>,
    /// Networks with a table on this node.
    pub(crate) present: &'b BTreeSet<&'a str>,
}

/// The networks whose pods may use a VIP of `service_network`: those connected to it
/// in either direction (TF's policies are symmetric), except the network itself and the
/// IP fabric.
pub fn client_networks<'a>(
    by_name: &BTreeMap<&'a str, &'a VirtualNetworkRecord>,
    service_network: &str,
) -> BTreeSet<&'a str> {
    let own = by_name.get(service_network);
    by_name
        .values()
        .filter(|n| n.fq_name != service_network && n.fq_name != IP_FABRIC_NETWORK)
        .filter(|n| {
            n.connected_networks.iter().any(|c| c == service_network)
                || own.is_some_and(|s| s.connected_networks.contains(&n.fq_name))
        })
        .map(|n| n.fq_name.as_str())
        .collect()
}

/// The interface a backend stands for: the pod's interface with the backend's address,
/// else the only interface with that address.
fn backend_interface<'a>(
    by_key: &BTreeMap<String, &'a InterfaceAttachment>,
    by_ip: &BTreeMap<IpAddr, Vec<&'a InterfaceAttachment>>,
    ip: IpAddr,
    pod: Option<&str>,
) -> Option<&'a InterfaceAttachment> {
    if let Some(pod) = pod {
        let prefix = format!("{pod}/");
        let found = by_key
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, i)| *i)
            .find(|i| i.ip == ip);
        if found.is_some() {
            return found;
        }
    }
    match by_ip.get(&ip).map(Vec::as_slice) {
        Some([only]) => Some(*only),
        _ => None,
    }
}

/// The target port of service port `name` (numeric targetPort `numeric`) on `backend`.
fn backend_port(backend: &BackendRecord, name: &str, numeric: Option<u16>) -> Option<u16> {
    backend
        .target_ports
        .get(name)
        .copied()
        .or(numeric)
        .filter(|p| *p != 0)
}

/// Computes the node's services and the routes they need: backends into client
/// tables, reply-only routes into local backends' tables (both in `table_routes`), and
/// the routes of [`weft_model::node::SERVICE_TABLE`] (returned).
pub(crate) fn compile<'a>(
    ctx: &mut Compile<'_>,
    inputs: &Inputs<'a, '_>,
    records: &[ServiceRecord],
    table_routes: &mut BTreeMap<&'a str, BTreeMap<IpNet, NodeRoute>>,
) -> (Vec<NodeService>, Vec<NodeRoute>) {
    let mut by_ip: BTreeMap<IpAddr, Vec<&InterfaceAttachment>> = BTreeMap::new();
    for i in inputs.by_key.values() {
        by_ip.entry(i.ip).or_default().push(i);
    }
    let mut sorted: Vec<&ServiceRecord> = records.iter().collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    sorted.dedup_by(|a, b| a.namespace == b.namespace && a.name == b.name);

    let mut out = Vec::new();
    let mut service_routes: BTreeMap<IpNet, NodeRoute> = BTreeMap::new();
    for s in sorted {
        let key = format!("{}/{}", s.namespace, s.name);
        let mut external_ips = Vec::new();
        for text in &s.external_ips {
            match text.trim().parse::<IpAddr>() {
                Ok(ip) => external_ips.push(ip),
                Err(_) => {
                    ctx.warnings.insert(format!(
                        "service {key}: external IP {text:?} is not an address; ignored"
                    ));
                }
            }
        }
        // Floating IPs of a LoadBalancer are handled like external IPs: every node
        // DNATs them to the backends, whoever sends.
        external_ips.extend(s.floating_ips.iter().copied());
        external_ips.sort();
        external_ips.dedup();
        let clients = client_networks(inputs.by_name, &s.network);
        let client_tables: Vec<&'a str> = clients
            .iter()
            .copied()
            .filter(|c| inputs.present.contains(c))
            .collect();

        // Ports and their ready backends.
        let mut ports = Vec::new();
        let mut backend_ips: BTreeMap<IpAddr, Option<&str>> = BTreeMap::new();
        for p in &s.ports {
            let Some(protocol) = L4Protocol::from_kubernetes(&p.protocol) else {
                ctx.warnings.insert(format!(
                    "service {key}: port {} has protocol {:?}, which weft does not balance; skipped",
                    p.port, p.protocol
                ));
                continue;
            };
            let numeric = p.target_port.parse::<u16>().ok();
            let mut backends = Vec::new();
            for b in s.backends.iter().filter(|b| b.ready) {
                let Some(port) = backend_port(b, &p.name, numeric) else {
                    ctx.warnings.insert(format!(
                        "service {key}: backend {} declares no port {:?} (targetPort of port {}); it does not serve that port",
                        b.ip, p.target_port, p.port
                    ));
                    continue;
                };
                let iface = backend_interface(inputs.by_key, &by_ip, b.ip, b.pod.as_deref());
                backend_ips.insert(b.ip, b.pod.as_deref());
                backends.push(NodeBackend {
                    ip: b.ip,
                    port,
                    node: iface.and_then(|i| i.node.clone()).or_else(|| b.node.clone()),
                    pod: b.pod.clone(),
                });
            }
            backends.sort();
            backends.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
            ports.push(NodeServicePort {
                name: p.name.clone(),
                protocol,
                port: p.port,
                node_port: p.node_port,
                backends,
            });
        }
        let from_outside = ports.iter().any(|p| p.node_port.is_some()) || !external_ips.is_empty();
        let for_pods = s.vip.is_some();

        // Routes towards and back from the backends.
        for (ip, pod) in &backend_ips {
            let Some(iface) = backend_interface(inputs.by_key, &by_ip, *ip, *pod) else {
                ctx.warnings.insert(format!(
                    "service {key}: backend {ip} is no pod interface weft knows; clients reach it only where it is routed anyway"
                ));
                continue;
            };
            let Some(backend_net) = inputs.by_name.get(iface.network.as_str()).copied() else {
                continue;
            };
            if for_pods {
                for c in &client_tables {
                    let (Some(client_net), Some(routes)) =
                        (inputs.by_name.get(c).copied(), table_routes.get_mut(c))
                    else {
                        continue;
                    };
                    ctx.add_endpoint(client_net, routes, backend_net, iface, Some(Extra::Backend));
                }
            }
            if iface.node.as_deref() != Some(ctx.node) {
                if from_outside {
                    add_service_route(ctx, &mut service_routes, backend_net, iface);
                }
                continue;
            }
            // A backend here: replies to clients of networks it is not connected to.
            let Some(routes) = table_routes.get_mut(backend_net.fq_name.as_str()) else {
                continue;
            };
            if for_pods {
                for c in &clients {
                    let Some(client_net) = inputs.by_name.get(c).copied() else {
                        continue;
                    };
                    if client_net.fq_name == backend_net.fq_name {
                        continue;
                    }
                    for a in inputs.members.get(c).into_iter().flatten() {
                        ctx.add_endpoint(backend_net, routes, client_net, a, Some(Extra::ReplyOnly));
                    }
                }
            }
            if from_outside {
                let others: Vec<(String, IpAddr)> = ctx
                    .underlay
                    .iter()
                    .filter(|(n, _)| **n != ctx.node)
                    .filter_map(|(n, ip)| ip.map(|ip| (n.to_string(), ip)))
                    .collect();
                for (n, underlay) in others {
                    let Some(addr) = node_service_address(underlay) else {
                        continue;
                    };
                    let prefix = host_prefix(IpAddr::V4(addr));
                    if routes.contains_key(&prefix) {
                        continue;
                    }
                    if let Some(next_hop) = ctx.remote(&n, backend_net.vni) {
                        ctx.insert(
                            routes,
                            NodeRoute {
                                prefix,
                                next_hop,
                                network: IP_FABRIC_NETWORK.to_string(),
                                reply_only: true,
                                service_only: false,
                            },
                        );
                    }
                }
                add_service_route(ctx, &mut service_routes, backend_net, iface);
            }
        }

        let used_here = for_pods && !client_tables.is_empty();
        if !used_here && !from_outside {
            continue;
        }
        let mut tables: Vec<u32> = if for_pods {
            client_tables
                .iter()
                .filter_map(|c| inputs.by_name.get(c))
                .map(|n| vn_table(n.vni))
                .collect()
        } else {
            Vec::new()
        };
        tables.sort_unstable();
        tables.dedup();
        out.push(NodeService {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            service_type: s.service_type.clone(),
            vip: s.vip,
            network: s.network.clone(),
            client_tables: tables,
            affinity: if s.session_affinity == "ClientIP" {
                SessionAffinity::ClientIp
            } else {
                SessionAffinity::None
            },
            external_ips,
            ports,
        });
    }
    (out, service_routes.into_values().collect())
}

/// Adds backend `iface` (of `network`) to the service table's routes, unless there.
fn add_service_route(
    ctx: &mut Compile<'_>,
    routes: &mut BTreeMap<IpNet, NodeRoute>,
    network: &VirtualNetworkRecord,
    iface: &InterfaceAttachment,
) {
    let prefix = host_prefix(iface.ip);
    if routes.contains_key(&prefix) {
        return;
    }
    if let Some(next_hop) = ctx.next_hop(network, iface) {
        ctx.insert(
            routes,
            NodeRoute {
                prefix,
                next_hop,
                network: network.fq_name.clone(),
                reply_only: false,
                service_only: false,
            },
        );
    }
}

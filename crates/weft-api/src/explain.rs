//! `weft explain`: why a packet from one pod to a pod or address is delivered or not.
//!
//! It walks the same data the data plane is built from, in the order a packet meets it:
//! the source pod's interface and its network's routing table on the source node, the
//! service translation (if the destination is a VIP that this network may use), the
//! route (local veth, VXLAN to another node, or the table's `unreachable default`),
//! the NAT on the way out of the cluster (a pod's floating IP, or fabric SNAT to the
//! node's address), then policy on both sides (weft-policy's decision, upstream semantics): the
//! AdminNetworkPolicy tiers (which ANP and rule matched: Allow, Deny or Pass), then
//! NetworkPolicy, or the BaselineAdminNetworkPolicy where no NetworkPolicy isolates the
//! pod.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};
use weft_model::node::{L4Protocol, NextHop, NodeState};
use weft_model::{
    AdminNetworkPolicy, BaselineAdminNetworkPolicy, DerivedKind, DerivedObject, InputKind,
    InterfaceAttachment,
};
use weft_policy::{Endpoint, Flow, NamedPort, PodInfo, PolicySet, Protocol};

use crate::controller::Controller;

/// What to explain: `from` is `namespace/pod`; `to` is `namespace/pod` or an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainRequest {
    /// Source pod, `namespace/pod`.
    pub from: String,
    /// Destination pod (`namespace/pod`) or IP address (a pod, a service VIP, anything).
    pub to: String,
    /// Destination port.
    pub port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

/// One step of the walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainStep {
    /// `source`, `destination`, `service`, `route`, `policy`.
    pub stage: String,
    /// What happens there, in words.
    pub detail: String,
}

/// The answer: each step and the final verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Steps in packet order.
    pub steps: Vec<ExplainStep>,
    /// `allowed`, `denied`, or `depends` (some service backends allowed, some not).
    pub verdict: String,
    /// The deciding reason.
    pub reason: String,
}

/// A request that cannot be explained (unknown pod, bad address …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExplainError(pub String);

fn step(steps: &mut Vec<ExplainStep>, stage: &str, detail: String) {
    steps.push(ExplainStep {
        stage: stage.to_string(),
        detail,
    });
}

async fn primary_interface(c: &Controller, who: &str) -> Result<InterfaceAttachment, ExplainError> {
    let (ns, pod) = who
        .split_once('/')
        .ok_or_else(|| ExplainError(format!("expected namespace/pod, found {who:?}")))?;
    let found = c
        .derived(DerivedKind::Interface, Some(ns))
        .await
        .into_iter()
        .find_map(|d| match d {
            DerivedObject::Interface(i) if i.pod == pod && i.primary => Some(i),
            _ => None,
        });
    match found {
        Some(i) => Ok(i),
        None => {
            let pending = c
                .derived(DerivedKind::Status, None)
                .await
                .into_iter()
                .find_map(|d| match d {
                    DerivedObject::Status(s) if s.object == format!("Pod {ns}/{pod}") => s.reason,
                    _ => None,
                });
            Err(ExplainError(match pending {
                Some(reason) => format!("Pod {ns}/{pod} has no interface yet: {reason}"),
                None => format!("Pod {ns}/{pod} is not known to the controller"),
            }))
        }
    }
}

/// Longest-prefix match in one table of a node's state.
fn lookup(state: &NodeState, table: u32, dst: IpAddr) -> Option<&weft_model::node::NodeRoute> {
    let network = state.networks.iter().find(|n| n.table == table)?;
    network
        .routes
        .iter()
        .filter(|r| r.prefix.contains(&dst))
        .max_by_key(|r| r.prefix.prefix_len())
}

fn describe_route(state: &NodeState, table: u32, dst: IpAddr, via_service: bool) -> (bool, String) {
    match lookup(state, table, dst) {
        Some(route) if route.service_only && !via_service => (
            false,
            format!(
                "table {table} on {} routes {} only for service traffic ({} is a service backend in a network not connected to this one): the agent's nftables forward chain rejects connections that were not translated from the service VIP",
                state.node, route.prefix, route.network
            ),
        ),
        Some(route) if route.reply_only => (
            false,
            format!(
                "table {table} on {} routes {} only for replies of service traffic ({} is a client of a service in this network, the networks are not connected): the agent's nftables forward chain rejects new connections to it",
                state.node, route.prefix, route.network
            ),
        ),
        Some(route) => match &route.next_hop {
            NextHop::Local { interface } => (
                true,
                format!(
                    "table {table} on {}: {} → local pod interface {interface}",
                    state.node, route.prefix
                ),
            ),
            NextHop::Remote { node, vni } => {
                let underlay = state
                    .peers
                    .iter()
                    .find(|p| &p.node == node)
                    .map(|p| p.underlay_ip.to_string())
                    .unwrap_or_else(|| "?".into());
                (
                    true,
                    format!(
                        "table {table} on {}: {} → VXLAN VNI {vni} to {node} ({underlay}); there `ip rule iif weft-vxlan tun_id {vni}` steers it into that network's table and on to the pod",
                        state.node, route.prefix
                    ),
                )
            }
            NextHop::External { address, vni, .. } => (
                true,
                format!(
                    "table {table} on {}: {} → VXLAN VNI {vni} to {address}, a route imported over BGP (another cluster's node); what happens there is that cluster's business",
                    state.node, route.prefix
                ),
            ),
        },
        None => (
            false,
            format!(
                "table {table} on {} has no route to {dst}: `unreachable default` answers ICMP no-route-to-host (the networks are not connected)",
                state.node
            ),
        ),
    }
}

async fn policy_set(c: &Controller) -> PolicySet {
    let mut set = PolicySet::default();
    for v in c.inputs(InputKind::Namespace, None).await {
        if let Ok(ns) = serde_json::from_value::<Namespace>(v) {
            let name = ns.metadata.name.clone().unwrap_or_default();
            set.namespaces
                .insert(name, ns.metadata.labels.clone().unwrap_or_default());
        }
    }
    let mut ips: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
    for d in c.derived(DerivedKind::Interface, None).await {
        if let DerivedObject::Interface(i) = d {
            ips.entry((i.namespace.clone(), i.pod.clone()))
                .or_default()
                .push(i.ip);
        }
    }
    for v in c.inputs(InputKind::Pod, None).await {
        let Ok(pod) = serde_json::from_value::<Pod>(v) else {
            continue;
        };
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut ports = Vec::new();
        for c in pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
        {
            for p in c.ports.as_deref().unwrap_or_default() {
                if let (Some(pname), Ok(port)) = (&p.name, u16::try_from(p.container_port)) {
                    let protocol = p
                        .protocol
                        .as_deref()
                        .and_then(Protocol::parse)
                        .unwrap_or(Protocol::Tcp);
                    ports.push(NamedPort {
                        name: pname.clone(),
                        port,
                        protocol,
                    });
                }
            }
        }
        set.pods.push(PodInfo {
            ips: ips.get(&(ns.clone(), name.clone())).cloned().unwrap_or_default(),
            namespace: ns,
            name,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ports,
        });
    }
    for v in c.inputs(InputKind::NetworkPolicy, None).await {
        if let Ok(p) = serde_json::from_value::<NetworkPolicy>(v) {
            set.policies.push(p);
        }
    }
    for v in c.inputs(InputKind::AdminNetworkPolicy, None).await {
        if let Ok(p) = serde_json::from_value::<AdminNetworkPolicy>(v) {
            set.admin.push(p);
        }
    }
    for v in c.inputs(InputKind::BaselineAdminNetworkPolicy, None).await {
        if let Ok(p) = serde_json::from_value::<BaselineAdminNetworkPolicy>(v)
            && p.metadata.name.as_deref() == Some(weft_model::admin_policy::BANP_NAME)
        {
            set.baseline = Some(p);
        }
    }
    set
}

fn endpoint_for(set: &PolicySet, ip: IpAddr) -> Endpoint {
    match set.pods.iter().position(|p| p.ips.contains(&ip)) {
        Some(i) => Endpoint::Pod(i),
        None => Endpoint::External(ip),
    }
}

/// Policy step for one (source pod, destination address, port) pair; true if allowed.
fn explain_policy(
    set: &PolicySet,
    steps: &mut Vec<ExplainStep>,
    src: &str,
    dst_ip: IpAddr,
    port: u16,
    protocol: Protocol,
) -> bool {
    let Some((ns, pod)) = src.split_once('/') else {
        return true;
    };
    let Some(src_index) = set.pod_index(ns, pod) else {
        return true;
    };
    let dst = endpoint_for(set, dst_ip);
    let dst_name = match &dst {
        Endpoint::Pod(i) => set
            .pods
            .get(*i)
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .unwrap_or_default(),
        Endpoint::External(ip) => ip.to_string(),
    };
    let decision = set.evaluate(&Flow {
        src: Endpoint::Pod(src_index),
        dst,
        port,
        protocol,
    });
    // One step per stage: AdminNetworkPolicy (Allow / Deny / Pass), then
    // NetworkPolicy or the BaselineAdminNetworkPolicy, for each side.
    for line in decision.egress.explain_steps("Egress", src) {
        step(steps, "policy", line);
    }
    for line in decision.ingress.explain_steps("Ingress", &dst_name) {
        step(steps, "policy", line);
    }
    decision.allowed()
}

/// The service-chain step: when a chain joins the source's network to `dst_ip`'s side,
/// the hops the traffic crosses in order and whether the chain carries this port; when
/// a chain that would join them is dropping (a hop missing), why there is no route.
/// `Some` is a final verdict (refused by the chain's ports).
#[allow(clippy::too_many_arguments)]
async fn explain_chain(
    c: &Controller,
    state: &NodeState,
    table: u32,
    src_network: &str,
    dst_ip: IpAddr,
    routed: bool,
    protocol: L4Protocol,
    port: u16,
    steps: &mut Vec<ExplainStep>,
) -> Option<Explanation> {
    let chains: Vec<weft_model::ServiceChainRecord> = c
        .derived(DerivedKind::ServiceChain, None)
        .await
        .into_iter()
        .filter_map(|d| match d {
            DerivedObject::ServiceChain(r) => Some(r),
            _ => None,
        })
        .filter(|r| r.left_network == src_network || r.right_network == src_network)
        .collect();
    let guard = state.networks.iter().find(|n| n.table == table).and_then(|n| {
        n.chain_guards
            .iter()
            .find(|g| g.destinations.iter().any(|p| p.contains(&dst_ip)))
    });
    let Some(guard) = guard else {
        if !routed {
            for r in chains.iter().filter(|r| !r.missing.is_empty()) {
                step(
                    steps,
                    "chain",
                    format!(
                        "service chain {}/{} would join {} and {}, but it drops traffic while a service pod is missing ({}; onFailure Drop)",
                        r.namespace,
                        r.name,
                        r.left_network,
                        r.right_network,
                        r.missing.join("; ")
                    ),
                );
            }
        }
        return None;
    };
    let record = chains
        .iter()
        .find(|r| format!("{}/{}", r.namespace, r.name) == guard.chain)?;
    let left_to_right = record.left_network == src_network;
    let mut hops: Vec<String> = record
        .hops
        .iter()
        .map(|h| {
            if left_to_right {
                format!("{} ({} → {})", h.pod, h.left_interface, h.right_interface)
            } else {
                format!("{} ({} → {})", h.pod, h.right_interface, h.left_interface)
            }
        })
        .collect();
    if !left_to_right {
        hops.reverse();
    }
    let state_text = if record.missing.is_empty() {
        String::new()
    } else {
        format!("; bypassing what is missing: {}", record.missing.join("; "))
    };
    step(
        steps,
        "chain",
        format!(
            "service chain {}: {dst_ip} is on its other side, so the packet crosses {} in this order, each forwarding between its interfaces (right to left the order is reversed){state_text}",
            guard.chain,
            if hops.is_empty() {
                "no service pod (none is left: connected directly)".to_string()
            } else {
                hops.join(" → ")
            }
        ),
    );
    let carried = guard.ports.is_empty()
        || guard
            .ports
            .iter()
            .any(|p| p.protocol == protocol && p.first <= port && port <= p.last);
    if carried {
        return None;
    }
    let list: Vec<String> = guard
        .ports
        .iter()
        .map(|p| format!("{}/{}-{}", p.protocol.as_str(), p.first, p.last))
        .collect();
    step(
        steps,
        "chain",
        format!(
            "the chain carries only {}: the agent's nftables forward chain refuses {}/{port} (TCP reset / ICMP admin-prohibited)",
            list.join(", "),
            protocol.as_str()
        ),
    );
    Some(Explanation {
        steps: std::mem::take(steps),
        verdict: "denied".into(),
        reason: format!(
            "service chain {} does not carry {}/{port}",
            guard.chain,
            protocol.as_str()
        ),
    })
}

/// Explains one flow.
pub async fn explain(c: &Controller, req: &ExplainRequest) -> Result<Explanation, ExplainError> {
    let protocol = Protocol::parse(&req.protocol).ok_or_else(|| {
        ExplainError(format!(
            "protocol: expected tcp, udp or sctp, found {:?}",
            req.protocol
        ))
    })?;
    let mut steps = Vec::new();
    let src = primary_interface(c, &req.from).await?;
    let Some(src_node) = src.node.clone() else {
        return Err(ExplainError(format!(
            "Pod {} is not scheduled to a node",
            req.from
        )));
    };
    let state = c.node_state(&src_node).await;
    let table = state
        .interfaces
        .iter()
        .find(|i| i.namespace == src.namespace && i.pod == src.pod && i.interface == src.interface)
        .map(|i| i.table)
        .ok_or_else(|| {
            ExplainError(format!(
                "node {src_node} has no state for {}/{}",
                req.from, src.interface
            ))
        })?;
    step(
        &mut steps,
        "source",
        format!(
            "{} ({}) on {src_node}, network {}: `ip rule iif <its veth> lookup {table}`",
            req.from, src.ip, src.network
        ),
    );
    let dst_ip: IpAddr = if req.to.contains('/') {
        let dst = primary_interface(c, &req.to).await?;
        step(
            &mut steps,
            "destination",
            format!(
                "{} is {} on {} (network {})",
                req.to,
                dst.ip,
                dst.node.clone().unwrap_or_else(|| "-".into()),
                dst.network
            ),
        );
        dst.ip
    } else {
        req.to.parse().map_err(|_| {
            ExplainError(format!(
                "destination: expected namespace/pod or an IP address, found {:?}",
                req.to
            ))
        })?
    };
    let policies = policy_set(c).await;
    // Service translation.
    let wanted = match protocol {
        Protocol::Tcp => L4Protocol::Tcp,
        Protocol::Udp => L4Protocol::Udp,
        Protocol::Sctp => L4Protocol::Sctp,
    };
    let service = state.services.iter().find_map(|s| {
        let hit = s.vip == Some(dst_ip) || s.external_ips.contains(&dst_ip);
        let port = s
            .ports
            .iter()
            .find(|p| p.port == req.port && p.protocol == wanted);
        if hit { port.map(|p| (s, p)) } else { None }
    });
    if let Some((svc, port)) = service {
        if !svc.client_tables.contains(&table) {
            step(
                &mut steps,
                "service",
                format!(
                    "{dst_ip}:{} is service {}/{}, but its network {} is not connected to {}: no translation for this source",
                    req.port, svc.namespace, svc.name, svc.network, src.network
                ),
            );
        } else if port.backends.is_empty() {
            step(
                &mut steps,
                "service",
                format!(
                    "{dst_ip}:{} is service {}/{} with no ready endpoints: the agent rejects (TCP reset / ICMP port unreachable)",
                    req.port, svc.namespace, svc.name
                ),
            );
            return Ok(Explanation {
                steps,
                verdict: "denied".into(),
                reason: format!("service {}/{} has no ready endpoints", svc.namespace, svc.name),
            });
        } else {
            let list: Vec<String> = port
                .backends
                .iter()
                .map(|b| {
                    format!(
                        "{}:{} ({})",
                        b.ip,
                        b.port,
                        b.pod
                            .clone()
                            .unwrap_or_else(|| b.node.clone().unwrap_or_default())
                    )
                })
                .collect();
            step(
                &mut steps,
                "service",
                format!(
                    "{dst_ip}:{} is service {}/{}: DNAT in nftables table inet weft to one of {} ({})",
                    req.port,
                    svc.namespace,
                    svc.name,
                    list.join(", "),
                    if matches!(svc.affinity, weft_model::node::SessionAffinity::ClientIp) {
                        "jhash of the client address: ClientIP affinity"
                    } else {
                        "numgen random"
                    }
                ),
            );
            let mut allowed = 0;
            for b in &port.backends {
                let (routed, text) = describe_route(&state, table, b.ip, true);
                step(&mut steps, "route", format!("backend {}: {text}", b.ip));
                if routed && explain_policy(&policies, &mut steps, &req.from, b.ip, b.port, protocol) {
                    allowed += 1;
                }
            }
            let total = port.backends.len();
            let (verdict, reason) = match allowed {
                0 => ("denied", "no backend is reachable and allowed".to_string()),
                n if n == total => (
                    "allowed",
                    format!("all {total} backends are reachable and allowed"),
                ),
                n => (
                    "depends",
                    format!(
                        "{n} of {total} backends are reachable and allowed; the outcome depends on the backend chosen"
                    ),
                ),
            };
            return Ok(Explanation {
                steps,
                verdict: verdict.into(),
                reason,
            });
        }
    }
    let (routed, text) = describe_route(&state, table, dst_ip, false);
    // Outside the cluster: a table that lets traffic out has no route there, so the
    // lookup goes on to the node's main table (the underlay), with NAT on the way out.
    let fabric_forwarding = state
        .networks
        .iter()
        .any(|n| n.table == table && n.ip_fabric_forwarding);
    let outside = state
        .networks
        .iter()
        .find(|n| n.table == table)
        .and_then(|n| n.outside.as_ref())
        .filter(|o| !routed && !o.cluster_subnets.iter().any(|net| net.contains(&dst_ip)));
    if let Some(outside) = outside {
        let fips = state
            .interfaces
            .iter()
            .find(|i| i.namespace == src.namespace && i.pod == src.pod && i.interface == src.interface)
            .map(|i| i.floating_ips.clone())
            .unwrap_or_default();
        let node_ip = state
            .underlay_ip
            .map_or_else(|| "the node".to_string(), |ip| ip.to_string());
        let nat = match (fips.first(), outside.fabric_snat || fabric_forwarding) {
            (None, true) if fabric_forwarding => format!(
                "{dst_ip} is outside the cluster: network {} uses ip-fabric forwarding, so the node's main table sends it to the underlay with the pod's own address (no NAT)",
                src.network
            ),
            (Some(fip), _) => format!(
                "{dst_ip} is outside the cluster: no route in table {table}, so the node's main table sends it to the underlay; nftables SNATs it to the pod's floating IP {fip} (1:1 NAT; replies are un-NATed and routed back by the pod's table)"
            ),
            (None, true) => format!(
                "{dst_ip} is outside the cluster: no route in table {table}, so the node's main table sends it to the underlay; fabric SNAT translates it to {node_ip} with a port from TF's pool (TCP {}-{}, UDP {}-{})",
                weft_model::node::SNAT_TCP_PORTS.0,
                weft_model::node::SNAT_TCP_PORTS.1,
                weft_model::node::SNAT_UDP_PORTS.0,
                weft_model::node::SNAT_UDP_PORTS.1
            ),
            (None, false) => {
                step(
                    &mut steps,
                    "nat",
                    format!(
                        "{dst_ip} is outside the cluster; in network {} only pods with a floating IP may leave (no fabric SNAT): refused (ICMP admin prohibited)",
                        src.network
                    ),
                );
                return Ok(Explanation {
                    steps,
                    verdict: "denied".into(),
                    reason: "no floating IP and no fabric SNAT for this pod".into(),
                });
            }
        };
        step(&mut steps, "nat", nat);
        return Ok(
            if explain_policy(&policies, &mut steps, &req.from, dst_ip, req.port, protocol) {
                Explanation {
                    steps,
                    verdict: "allowed".into(),
                    reason: "leaves the cluster through the underlay with NAT, and policy allows it".into(),
                }
            } else {
                Explanation {
                    steps,
                    verdict: "denied".into(),
                    reason: "policy denies it (see the policy steps)".into(),
                }
            },
        );
    }
    step(&mut steps, "route", text);
    if let Some(denied) = explain_chain(
        c,
        &state,
        table,
        &src.network,
        dst_ip,
        routed,
        wanted,
        req.port,
        &mut steps,
    )
    .await
    {
        return Ok(denied);
    }
    if !routed {
        return Ok(Explanation {
            steps,
            verdict: "denied".into(),
            reason: "no route between the networks".into(),
        });
    }
    if explain_policy(&policies, &mut steps, &req.from, dst_ip, req.port, protocol) {
        Ok(Explanation {
            steps,
            verdict: "allowed".into(),
            reason:
                "routed, and policy (AdminNetworkPolicy, NetworkPolicy, baseline) allows it on both sides"
                    .into(),
        })
    } else {
        Ok(Explanation {
            steps,
            verdict: "denied".into(),
            reason: "policy denies it (see the policy steps)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::types::ApplyRequest;

    async fn apply(c: &Controller, objects: Vec<Value>) {
        let report = c
            .apply(ApplyRequest::from_objects("test", objects), false)
            .await
            .expect("apply");
        assert_eq!(report.errors(), 0, "{report:#?}");
    }

    fn anp(action: &str) -> Value {
        json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
            "metadata": {"name": "guard"},
            "spec": {"priority": 5, "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "b"}}},
                     "ingress": [{"name": "from-a", "action": action,
                                  "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "a"}}}]}]}})
    }

    /// `weft explain` shows the NAT step of a packet leaving the cluster: fabric SNAT
    /// to the node's address for the shared pod network of an annotated `default`, a
    /// refusal for an isolated namespace without it.
    #[tokio::test]
    async fn explain_shows_fabric_snat_on_the_way_out() {
        let store: Arc<dyn weft_store::ConfigStore> = Arc::new(weft_store::MemoryStore::new());
        let c = Controller::open(store, "memory").await.expect("open");
        apply(
            &c,
            vec![
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                       "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]}}),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default",
                       "annotations": {"opencontrail.org/ip_fabric_snat": "true"}}}),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "iso",
                       "annotations": {"opencontrail.org/isolation": "true"}}}),
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                       "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}),
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "iso"},
                       "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}),
            ],
        )
        .await;
        let req = |from: &str| ExplainRequest {
            from: from.into(),
            to: "203.0.113.10".into(),
            port: 80,
            protocol: "tcp".into(),
        };
        let e = explain(&c, &req("default/p")).await.expect("explains");
        let nat = e.steps.iter().find(|s| s.stage == "nat").expect("a nat step");
        assert!(
            nat.detail.contains("fabric SNAT") && nat.detail.contains("192.0.2.11"),
            "{e:#?}"
        );
        assert_eq!(e.verdict, "allowed", "{e:#?}");
        let e = explain(&c, &req("iso/p")).await.expect("explains");
        assert_eq!(e.verdict, "denied", "{e:#?}");
        assert!(e.steps.iter().all(|s| s.stage != "nat"), "{e:#?}");
    }

    /// `weft explain` names a service chain's hops in order (reversed from the right),
    /// refuses a port the chain does not carry, and says why there is no route while a
    /// hop is missing and the chain drops.
    #[tokio::test]
    async fn explain_shows_the_service_chain() {
        let store: Arc<dyn weft_store::ConfigStore> = Arc::new(weft_store::MemoryStore::new());
        let c = Controller::open(store, "memory").await.expect("open");
        let vn = |name: &str, subnet: &str| {
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork",
                   "metadata": {"name": name, "namespace": "default"}, "spec": {"subnets": [subnet]}})
        };
        let client = |name: &str, vn: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                   "annotations": {"opencontrail.org/network":
                       format!("{{'domain': 'default-domain', 'project': 'k8s-default', 'name': '{vn}'}}")}},
                   "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}})
        };
        let hop = |name: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                   "annotations": {"k8s.v1.cni.cncf.io/networks": "vn-left,vn-right"}},
                   "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}})
        };
        let chain = json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ServiceChain",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"leftNetwork": "vn-left", "rightNetwork": "vn-right",
                     "services": [{"pod": "fw1"}, {"pod": "fw2"}],
                     "ports": [{"protocol": "TCP", "port": 80}]}});
        apply(
            &c,
            vec![
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                       "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]}}),
                vn("vn-left", "10.10.10.0/24"),
                vn("vn-right", "20.20.20.0/24"),
                client("left", "vn-left"),
                client("right", "vn-right"),
                hop("fw1"),
                hop("fw2"),
                chain,
            ],
        )
        .await;
        let req = |from: &str, to: &str, port: u16| ExplainRequest {
            from: from.into(),
            to: to.into(),
            port,
            protocol: "tcp".into(),
        };
        let e = explain(&c, &req("default/left", "default/right", 80))
            .await
            .expect("explains");
        assert_eq!(e.verdict, "allowed", "{e:#?}");
        let step = e.steps.iter().find(|s| s.stage == "chain").expect("a chain step");
        assert!(
            step.detail.contains("default/web")
                && step.detail.contains("fw1 (net1 → net2) → fw2 (net1 → net2)"),
            "{e:#?}"
        );
        let e = explain(&c, &req("default/right", "default/left", 80))
            .await
            .expect("explains");
        let step = e.steps.iter().find(|s| s.stage == "chain").expect("a chain step");
        assert!(
            step.detail.contains("fw2 (net2 → net1) → fw1 (net2 → net1)"),
            "{e:#?}"
        );
        let e = explain(&c, &req("default/left", "default/right", 8082))
            .await
            .expect("explains");
        assert_eq!(e.verdict, "denied", "{e:#?}");
        assert!(e.reason.contains("does not carry tcp/8082"), "{e:#?}");
        // fw2 goes: the chain drops (no route), and explain says why.
        c.apply(
            ApplyRequest::from_objects(
                "test",
                vec![json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fw2", "namespace": "default"}})],
            ),
            true,
        )
        .await
        .expect("delete");
        let e = explain(&c, &req("default/left", "default/right", 80))
            .await
            .expect("explains");
        assert_eq!(e.verdict, "denied", "{e:#?}");
        assert!(
            e.steps.iter().any(|s| s.stage == "chain"
                && s.detail.contains("fw2")
                && s.detail.contains("onFailure Drop")),
            "{e:#?}"
        );
    }

    /// `weft explain` walks ANP → NetworkPolicy: a Deny beats the NetworkPolicy allow,
    /// a Pass defers to it, and the node state carries the compiled admin rules.
    #[tokio::test]
    async fn explain_shows_the_admin_stage() {
        let store: Arc<dyn weft_store::ConfigStore> = Arc::new(weft_store::MemoryStore::new());
        let c = Controller::open(store, "memory").await.expect("open");
        let mut objects = vec![
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]}}),
        ];
        for ns in ["a", "b"] {
            objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
            objects.push(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": ns},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}),
            );
        }
        objects.push(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "all", "namespace": "b"}, "spec": {"podSelector": {}, "ingress": [{}]}}),
        );
        objects.push(anp("Deny"));
        apply(&c, objects).await;
        let req = ExplainRequest {
            from: "a/p".into(),
            to: "b/p".into(),
            port: 80,
            protocol: "tcp".into(),
        };
        let e = explain(&c, &req).await.expect("explains");
        let text: Vec<&str> = e.steps.iter().map(|s| s.detail.as_str()).collect();
        assert_eq!(e.verdict, "denied", "{text:#?}");
        assert!(
            text.iter().any(|t| t.contains("AdminNetworkPolicy guard")
                && t.contains("from-a")
                && t.contains("Deny")),
            "{text:#?}"
        );
        let state = c.node_state("n1").await;
        let b = state
            .policies
            .iter()
            .find(|p| p.interface.starts_with("b/p/"))
            .expect("b/p restricted");
        assert_eq!(b.admin_ingress.len(), 1, "{b:?}");

        apply(&c, vec![anp("Pass")]).await;
        let e = explain(&c, &req).await.expect("explains");
        let text: Vec<&str> = e.steps.iter().map(|s| s.detail.as_str()).collect();
        assert_eq!(e.verdict, "allowed", "{text:#?}");
        assert!(text.iter().any(|t| t.contains("Pass")), "{text:#?}");
        assert!(
            text.iter()
                .any(|t| t.contains("rule ingress[0] of b/all allows it")),
            "{text:#?}"
        );
        // The node state follows the change (new revision, new compiled rules).
        let state = c.node_state("n1").await;
        let b = state
            .policies
            .iter()
            .find(|p| p.interface.starts_with("b/p/"))
            .expect("b/p restricted");
        assert_eq!(
            b.admin_ingress.iter().map(|r| r.action).collect::<Vec<_>>(),
            vec![weft_model::node::AdminVerdict::Pass]
        );
    }

    /// The example manifests decode and validate.
    #[test]
    fn policy_examples_are_valid() {
        let text = include_str!("../../../examples/policy/admin-network-policy.yaml");
        let docs = crate::manifest::parse_manifest_text(text, "admin-network-policy.yaml");
        assert_eq!(docs.len(), 3);
        for d in docs {
            let d = d.expect("parses");
            weft_model::InputObject::from_value(d.object).expect("valid");
        }
    }
}

//! NetworkPolicy compiler: from the pods, namespaces and NetworkPolicies to the rules of
//! every local pod interface of one node ([`EndpointPolicy`]), as data the agent turns
//! into nftables sets.
//!
//! The semantics are [`weft_policy`]'s ([`PolicySet::evaluate`]); this module only
//! resolves them into addresses and ports, per endpoint and direction:
//! - a pod selector peer becomes the host prefixes of the selected pods' addresses;
//! - an ipBlock becomes its cidr with the excepts cut out (the complementary prefixes);
//! - a numeric port (with endPort) becomes a range; a named port resolves against the
//!   destination pod's container ports: for ingress against the local pod, for egress
//!   against every pod the rule's peers select (one rule per such pod and port, peers
//!   narrowed to that pod's addresses), so an external address never matches a named
//!   port, exactly as in [`PolicySet::evaluate`].
//!
//! Each node checks the egress side of its own pods and the ingress side of its own
//! pods, so every connection is checked once per side. The property test in `tests`
//! checks that the compiled rules decide every flow of random small worlds as
//! [`PolicySet::evaluate`] does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_model::InterfaceAttachment;
use weft_model::node::{EndpointPolicy, L4Protocol, PolicyPort, PolicyRule};
use weft_policy::{Endpoint, NamedPort, PodInfo, PolicySet, Protocol, policy_types};

/// Builds the [`PolicySet`] of the cluster: every pod that is not host-networked, with
/// the addresses of its weft interfaces and its named container ports; the namespaces'
/// labels; the policies.
pub fn policy_set(
    pods: &[Pod],
    namespaces: &[Namespace],
    policies: &[NetworkPolicy],
    interfaces: &[InterfaceAttachment],
) -> PolicySet {
    let mut ips: BTreeMap<(&str, &str), BTreeSet<IpAddr>> = BTreeMap::new();
    for i in interfaces {
        ips.entry((i.namespace.as_str(), i.pod.as_str()))
            .or_default()
            .insert(i.ip);
    }
    let mut set = PolicySet::default();
    let mut sorted: Vec<&Pod> = pods
        .iter()
        .filter(|p| !p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false))
        .collect();
    sorted.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    for pod in sorted {
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let Some(name) = pod.metadata.name.clone() else {
            continue;
        };
        let ports = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let name = p.name.clone()?;
                let port = u16::try_from(p.container_port).ok()?;
                let protocol = p
                    .protocol
                    .as_deref()
                    .map_or(Some(Protocol::Tcp), Protocol::parse)?;
                Some(NamedPort { name, port, protocol })
            })
            .collect();
        let pod_ips = ips
            .get(&(namespace.as_str(), name.as_str()))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        set.pods.push(PodInfo {
            namespace,
            name,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ips: pod_ips,
            ports,
        });
    }
    for ns in namespaces {
        if let Some(name) = &ns.metadata.name {
            set.namespaces
                .insert(name.clone(), ns.metadata.labels.clone().unwrap_or_default());
        }
    }
    let mut sorted_policies = policies.to_vec();
    sorted_policies.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    set.policies = sorted_policies;
    set
}

/// The policies of `node`'s local pod interfaces (those of `interfaces` placed on
/// `node`) that some policy isolates, sorted by interface key.
pub fn compile_node_policies(
    node: &str,
    set: &PolicySet,
    interfaces: &[InterfaceAttachment],
) -> Vec<EndpointPolicy> {
    let mut out: BTreeMap<String, EndpointPolicy> = BTreeMap::new();
    for i in interfaces.iter().filter(|i| i.node.as_deref() == Some(node)) {
        let Some(index) = set.pod_index(&i.namespace, &i.pod) else {
            continue;
        };
        let ingress = compile_side(set, index, true);
        let egress = compile_side(set, index, false);
        if ingress.is_none() && egress.is_none() {
            continue;
        }
        let key = format!("{}/{}/{}", i.namespace, i.pod, i.interface);
        out.entry(key.clone()).or_insert(EndpointPolicy {
            interface: key,
            ip: i.ip,
            ingress,
            egress,
        });
    }
    out.into_values().collect()
}

fn l4(p: Protocol) -> L4Protocol {
    match p {
        Protocol::Tcp => L4Protocol::Tcp,
        Protocol::Udp => L4Protocol::Udp,
        Protocol::Sctp => L4Protocol::Sctp,
    }
}

/// `cidr` without the addresses of `excepts`, as non-overlapping prefixes.
pub fn subtract(cidr: IpNet, excepts: &[IpNet]) -> Vec<IpNet> {
    let cidr = cidr.trunc();
    let overlapping: Vec<IpNet> = excepts
        .iter()
        .map(IpNet::trunc)
        .filter(|e| e.contains(&cidr) || cidr.contains(e))
        .collect();
    if overlapping.is_empty() {
        return vec![cidr];
    }
    if overlapping.iter().any(|e| e.contains(&cidr)) {
        return Vec::new();
    }
    // Some except is strictly inside: split in halves.
    match cidr.subnets(cidr.prefix_len() + 1) {
        Ok(halves) => halves.flat_map(|h| subtract(h, &overlapping)).collect(),
        Err(_) => Vec::new(),
    }
}

fn host_prefixes(pod: &PodInfo) -> Vec<IpNet> {
    pod.ips.iter().map(|ip| IpNet::from(*ip)).collect()
}

/// Peers of a rule: `None` for any address, else the prefixes.
fn rule_peers(set: &PolicySet, ns: &str, peers: Option<&[NetworkPolicyPeer]>) -> Option<Vec<IpNet>> {
    let list = match peers {
        None | Some([]) => return None,
        Some(list) => list,
    };
    let mut out = Vec::new();
    for peer in list {
        if let Some(block) = &peer.ip_block {
            let Ok(cidr) = block.cidr.parse::<IpNet>() else {
                continue;
            };
            let excepts: Vec<IpNet> = block
                .except
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter_map(|e| e.parse().ok())
                .collect();
            out.extend(subtract(cidr, &excepts));
            continue;
        }
        for (i, pod) in set.pods.iter().enumerate() {
            if set.peer_matches(ns, peer, &Endpoint::Pod(i)) {
                out.extend(host_prefixes(pod));
            }
        }
    }
    Some(IpNet::aggregate(&out))
}

/// The numeric range of a port entry, clamped to 0–65535 (`None`: empty).
fn numeric_range(start: i32, end_port: Option<i32>) -> Option<(u16, u16)> {
    let end = end_port.unwrap_or(start);
    let first = u16::try_from(start.max(0)).ok()?;
    let last = u16::try_from(end.min(65535)).ok()?;
    (first <= last).then_some((first, last))
}

/// The rules of one side of pod `index` (`None`: not isolated for that direction).
pub fn compile_side(set: &PolicySet, index: usize, ingress: bool) -> Option<Vec<PolicyRule>> {
    let pod = set.pods.get(index)?;
    let mut selected = false;
    let mut rules: BTreeSet<PolicyRule> = BTreeSet::new();
    for policy in &set.policies {
        let (has_ingress, has_egress) = policy_types(policy);
        if (ingress && !has_ingress) || (!ingress && !has_egress) || !set.selects(policy, pod) {
            continue;
        }
        selected = true;
        let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
        let spec = policy.spec.clone().unwrap_or_default();
        type RawRule = (Option<Vec<NetworkPolicyPeer>>, Option<Vec<NetworkPolicyPort>>);
        let raw: Vec<RawRule> = if ingress {
            spec.ingress
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.from, r.ports))
                .collect()
        } else {
            spec.egress
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.to, r.ports))
                .collect()
        };
        for (peers, ports) in raw {
            let peer_prefixes = rule_peers(set, ns, peers.as_deref());
            if peer_prefixes.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            let ports = ports.unwrap_or_default();
            if ports.is_empty() {
                rules.insert(PolicyRule {
                    peers: peer_prefixes,
                    ports: None,
                });
                continue;
            }
            let mut numeric = BTreeSet::new();
            for p in &ports {
                let proto = p
                    .protocol
                    .as_deref()
                    .and_then(Protocol::parse)
                    .unwrap_or(Protocol::Tcp);
                match &p.port {
                    None => {
                        numeric.insert(PolicyPort {
                            protocol: l4(proto),
                            first: 0,
                            last: 65535,
                        });
                    }
                    Some(IntOrString::Int(start)) => {
                        if let Some((first, last)) = numeric_range(*start, p.end_port) {
                            numeric.insert(PolicyPort {
                                protocol: l4(proto),
                                first,
                                last,
                            });
                        }
                    }
                    Some(IntOrString::String(name)) if ingress => {
                        for np in pod
                            .ports
                            .iter()
                            .filter(|np| &np.name == name && np.protocol == proto)
                        {
                            numeric.insert(PolicyPort {
                                protocol: l4(proto),
                                first: np.port,
                                last: np.port,
                            });
                        }
                    }
                    Some(IntOrString::String(name)) => {
                        // Egress: per destination pod the peers allow.
                        for (i, dst) in set.pods.iter().enumerate() {
                            let peer_ok = match peers.as_deref() {
                                None | Some([]) => true,
                                Some(list) => list
                                    .iter()
                                    .any(|peer| set.peer_matches(ns, peer, &Endpoint::Pod(i))),
                            };
                            if !peer_ok || dst.ips.is_empty() {
                                continue;
                            }
                            let dst_ports: BTreeSet<PolicyPort> = dst
                                .ports
                                .iter()
                                .filter(|np| &np.name == name && np.protocol == proto)
                                .map(|np| PolicyPort {
                                    protocol: l4(proto),
                                    first: np.port,
                                    last: np.port,
                                })
                                .collect();
                            if !dst_ports.is_empty() {
                                rules.insert(PolicyRule {
                                    peers: Some(IpNet::aggregate(&host_prefixes(dst))),
                                    ports: Some(dst_ports.into_iter().collect()),
                                });
                            }
                        }
                    }
                }
            }
            if !numeric.is_empty() {
                rules.insert(PolicyRule {
                    peers: peer_prefixes,
                    ports: Some(numeric.into_iter().collect()),
                });
            }
        }
    }
    selected.then(|| rules.into_iter().collect())
}

#[cfg(test)]
mod tests;

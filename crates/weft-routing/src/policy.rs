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
//! AdminNetworkPolicy and BaselineAdminNetworkPolicy (TF's sequence-numbered policy
//! sets in their Kubernetes form, see [`weft_policy::admin`]) compile into ordered
//! verdict rules ([`AdminRule`](weft_model::node::AdminRule): accept, drop, pass) per
//! endpoint and direction: the ANPs' rules in evaluation order (priority, then name,
//! then rule order), checked
//! before the NetworkPolicy rules; the BANP's rules only where no NetworkPolicy
//! isolates the pod. Peers and ports resolve as for NetworkPolicy (`networks` peers
//! are their CIDRs; named ports as above).
//!
//! Each node checks the egress side of its own pods and the ingress side of its own
//! pods, so every connection is checked once per side. The property test in `tests`
//! checks that the compiled rules decide every flow of random small worlds as
//! [`PolicySet::evaluate`] does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use weft_model::InterfaceAttachment;
use weft_model::admin_policy::{AdminNetworkPolicy, AdminPort, BaselineAdminNetworkPolicy};
use weft_model::node::{EndpointPolicy, L4Protocol, PolicyRule};
use weft_policy::{NamedPort, PodInfo, PolicySet, Protocol};

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

/// [`policy_set`] plus the cluster's AdminNetworkPolicies and its
/// BaselineAdminNetworkPolicy (the one named `default`; others are ignored).
pub fn policy_set_with_admin(
    pods: &[Pod],
    namespaces: &[Namespace],
    policies: &[NetworkPolicy],
    admin: &[AdminNetworkPolicy],
    baseline: &[BaselineAdminNetworkPolicy],
    interfaces: &[InterfaceAttachment],
) -> PolicySet {
    let mut set = policy_set(pods, namespaces, policies, interfaces);
    set.admin = admin.to_vec();
    set.baseline = baseline
        .iter()
        .find(|b| b.metadata.name.as_deref() == Some(weft_model::admin_policy::BANP_NAME))
        .cloned();
    set
}

/// The policies of `node`'s local pod interfaces (those of `interfaces` placed on
/// `node`) that some policy isolates, sorted by interface key.
pub fn compile_node_policies(
    node: &str,
    set: &PolicySet,
    interfaces: &[InterfaceAttachment],
) -> Vec<EndpointPolicy> {
    let mut compiler = PolicyCompiler::new(set);
    let by_name: BTreeMap<(&str, &str), usize> = set
        .pods
        .iter()
        .enumerate()
        .map(|(n, p)| ((p.namespace.as_str(), p.name.as_str()), n))
        .collect();
    let mut out: BTreeMap<String, EndpointPolicy> = BTreeMap::new();
    for i in interfaces.iter().filter(|i| i.node.as_deref() == Some(node)) {
        let Some(&index) = by_name.get(&(i.namespace.as_str(), i.pod.as_str())) else {
            continue;
        };
        let key = format!("{}/{}/{}", i.namespace, i.pod, i.interface);
        let policy = compiler.endpoint(index, key.clone(), i.ip);
        if policy.is_open() {
            continue;
        }
        out.entry(key).or_insert(policy);
    }
    out.into_values().collect()
}

/// Everything that applies to pod `index`, as the policy of its interface `key` with
/// address `ip` (one pod; for many, use one [`PolicyCompiler`]).
pub fn compile_endpoint(set: &PolicySet, index: usize, key: String, ip: IpAddr) -> EndpointPolicy {
    PolicyCompiler::new(set).endpoint(index, key, ip)
}

/// The NetworkPolicy rules of one side of pod `index` (`None`: not isolated for that
/// direction).
pub fn compile_side(set: &PolicySet, index: usize, ingress: bool) -> Option<Vec<PolicyRule>> {
    PolicyCompiler::new(set).side(index, ingress)
}

enum AdminPortKind<'a> {
    Range(Protocol, u16, u16),
    Named(&'a str),
    Nothing,
}

fn admin_port(p: &AdminPort) -> AdminPortKind<'_> {
    let range =
        |proto: &str, start: i32, end: i32| match (Protocol::parse(proto), numeric_range(start, Some(end))) {
            (Some(proto), Some((first, last))) => AdminPortKind::Range(proto, first, last),
            _ => AdminPortKind::Nothing,
        };
    if let Some(n) = &p.port_number {
        return range(&n.protocol, n.port, n.port);
    }
    if let Some(r) = &p.port_range {
        return range(&r.protocol, r.start, r.end);
    }
    match &p.named_port {
        Some(name) => AdminPortKind::Named(name),
        None => AdminPortKind::Nothing,
    }
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

/// The numeric range of a port entry, clamped to 0–65535 (`None`: empty).
fn numeric_range(start: i32, end_port: Option<i32>) -> Option<(u16, u16)> {
    let end = end_port.unwrap_or(start);
    let first = u16::try_from(start.max(0)).ok()?;
    let last = u16::try_from(end.min(65535)).ok()?;
    (first <= last).then_some((first, last))
}

mod compiler;
pub use compiler::PolicyCompiler;
pub mod synthetic;

#[cfg(test)]
mod tests;

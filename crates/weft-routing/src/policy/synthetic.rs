//! A synthetic policy world for benchmarks (`weft bench policy`, the criterion bench
//! `policy_compile`): pods spread over namespaces, NetworkPolicies of the common
//! shapes, AdminNetworkPolicy tiers and a baseline. Deterministic: the same shape
//! gives the same world.
//!
//! Shape: pod `i` lives in namespace `ns-(i % namespaces)`, with labels
//! `app=app-(i % 10)` and `tier=(front|back)`, a named port `http` (8080) and address
//! `10.(i / 65536).(i / 256 % 256).(i % 256)` offset into 10.128.0.0/9. Namespace `k`
//! has `team=team-(k % 20)`. NetworkPolicy `j` lives in namespace `ns-(j %
//! namespaces)` and is one of: same-namespace app allow on 80; team namespaceSelector
//! allow on the named port; pod AND namespace selector with a port range; egress to an
//! ipBlock with except plus DNS to every namespace. Each ANP (priority `10 * k`)
//! selects the namespaces of one team and has a Deny, a Pass and an Allow rule; the
//! baseline denies ingress from other teams.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use weft_model::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};
use weft_policy::{NamedPort, PodInfo, PolicySet, Protocol};

/// Sizes of a synthetic world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Pods.
    pub pods: usize,
    /// Namespaces.
    pub namespaces: usize,
    /// NetworkPolicies.
    pub policies: usize,
    /// AdminNetworkPolicies (plus one baseline when non-zero).
    pub admin: usize,
}

impl Shape {
    /// The issue's benchmark shape: 10,000 pods, 1,000 NetworkPolicies (in 1,000
    /// namespaces), 20 AdminNetworkPolicies and a baseline.
    pub const ISSUE: Shape = Shape {
        pods: 10_000,
        namespaces: 1_000,
        policies: 1_000,
        admin: 20,
    };
}

fn pod_ip(i: usize) -> IpAddr {
    let n = u32::try_from(i).unwrap_or(u32::MAX) & 0x007f_ffff;
    IpAddr::V4(Ipv4Addr::from(0x0a80_0000 | n))
}

fn network_policy(j: usize, namespaces: usize) -> Value {
    let ns = format!("ns-{}", j % namespaces.max(1));
    let app = format!("app-{}", j % 10);
    let team = format!("team-{}", j % 20);
    let spec = match j % 4 {
        0 => json!({"podSelector": {"matchLabels": {"app": app}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "front"}}}], "ports": [{"port": 80}]}]}),
        1 => json!({"podSelector": {"matchLabels": {"app": app}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": team}}}], "ports": [{"port": "http"}]}]}),
        2 => {
            json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": team}}, "podSelector": {"matchLabels": {"app": app}}}],
                         "ports": [{"port": 8000, "endPort": 8100}]}]})
        }
        _ => json!({"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.128.0.0/16"]}}]},
                       {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]}]}),
    };
    json!({"metadata": {"name": format!("np-{j}"), "namespace": ns}, "spec": spec})
}

fn admin_policy(k: usize) -> Value {
    let team = format!("team-{}", k % 20);
    let other = format!("team-{}", (k + 1) % 20);
    json!({"metadata": {"name": format!("anp-{k}")}, "spec": {
        "priority": (k * 10) % 1001,
        "subject": {"namespaces": {"matchLabels": {"team": team}}},
        "ingress": [
            {"name": "deny-other-team-ssh", "action": "Deny", "from": [{"namespaces": {"matchLabels": {"team": other}}}],
             "ports": [{"portNumber": {"protocol": "TCP", "port": 22}}]},
            {"name": "pass-own-team", "action": "Pass", "from": [{"namespaces": {"matchLabels": {"team": team}}}]},
            {"name": "allow-monitoring", "action": "Allow", "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "app-0"}}}}],
             "ports": [{"namedPort": "http"}]}],
        "egress": [
            {"name": "deny-metadata", "action": "Deny", "to": [{"networks": ["169.254.169.254/32"]}]}]
    }})
}

/// Builds the world.
pub fn world(shape: Shape) -> PolicySet {
    let mut set = PolicySet::default();
    let namespaces = shape.namespaces.max(1);
    for k in 0..namespaces {
        set.namespaces.insert(
            format!("ns-{k}"),
            BTreeMap::from([("team".to_string(), format!("team-{}", k % 20))]),
        );
    }
    for i in 0..shape.pods {
        set.pods.push(PodInfo {
            namespace: format!("ns-{}", i % namespaces),
            name: format!("pod-{i}"),
            labels: BTreeMap::from([
                ("app".to_string(), format!("app-{}", i % 10)),
                (
                    "tier".to_string(),
                    if i % 3 == 0 { "front" } else { "back" }.to_string(),
                ),
            ]),
            ips: vec![pod_ip(i)],
            ports: vec![NamedPort {
                name: "http".into(),
                port: 8080,
                protocol: Protocol::Tcp,
            }],
        });
    }
    set.policies = (0..shape.policies)
        .filter_map(|j| serde_json::from_value::<NetworkPolicy>(network_policy(j, namespaces)).ok())
        .collect();
    set.admin = (0..shape.admin)
        .filter_map(|k| serde_json::from_value::<AdminNetworkPolicy>(admin_policy(k)).ok())
        .collect();
    if shape.admin > 0 {
        set.baseline = serde_json::from_value::<BaselineAdminNetworkPolicy>(json!({
            "metadata": {"name": "default"},
            "spec": {"subject": {"namespaces": {}},
                     "ingress": [{"name": "deny-team-0", "action": "Deny", "from": [{"namespaces": {"matchLabels": {"team": "team-0"}}}]}]}
        }))
        .ok();
    }
    set
}

/// Compiles every pod's policy (what all nodes together compute), returning how many
/// endpoints something restricts and the total number of compiled rules.
pub fn compile_all(set: &PolicySet) -> (usize, usize) {
    let mut compiler = super::PolicyCompiler::new(set);
    let mut endpoints = 0;
    let mut rules = 0;
    for (i, pod) in set.pods.iter().enumerate() {
        let Some(ip) = pod.ips.first() else { continue };
        let p = compiler.endpoint(i, format!("{}/{}/eth0", pod.namespace, pod.name), *ip);
        if !p.is_open() {
            endpoints += 1;
            rules += p.ingress.as_ref().map_or(0, Vec::len)
                + p.egress.as_ref().map_or(0, Vec::len)
                + p.admin_ingress.len()
                + p.admin_egress.len()
                + p.baseline_ingress.len()
                + p.baseline_egress.len();
        }
    }
    (endpoints, rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_world_is_valid_and_restricts_pods() {
        let set = world(Shape {
            pods: 200,
            namespaces: 20,
            policies: 40,
            admin: 4,
        });
        assert_eq!(set.policies.len(), 40);
        assert_eq!(set.admin.len(), 4);
        for a in &set.admin {
            a.validate("anp").expect("valid");
        }
        set.baseline
            .as_ref()
            .expect("baseline")
            .validate("default")
            .expect("valid");
        let (endpoints, rules) = compile_all(&set);
        assert!(endpoints > 100 && rules > endpoints, "{endpoints} {rules}");
    }
}

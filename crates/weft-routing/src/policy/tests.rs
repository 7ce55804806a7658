//! The compiled rules must decide every flow as `PolicySet::evaluate` does.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use serde_json::{Value, json};
use weft_model::node::direction_allows;
use weft_policy::{Endpoint, Flow};

use super::*;

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

/// A world: pods given as (namespace index, app label index, http port), policies as JSON.
fn world(pods: &[(u8, u8, u16)], policies: Vec<Value>) -> PolicySet {
    let mut set = PolicySet::default();
    for ns in ["x", "y"] {
        set.namespaces
            .insert(ns.into(), BTreeMap::from([("ns".to_string(), ns.to_string())]));
    }
    for (i, (ns, app, http)) in pods.iter().enumerate() {
        set.pods.push(PodInfo {
            namespace: ["x", "y"][usize::from(*ns % 2)].into(),
            name: format!("p{i}"),
            labels: BTreeMap::from([(
                "app".to_string(),
                ["a", "b", "c"][usize::from(*app % 3)].to_string(),
            )]),
            ips: vec![ip(u8::try_from(i).expect("small") + 1)],
            ports: vec![
                NamedPort {
                    name: "http".into(),
                    port: *http,
                    protocol: Protocol::Tcp,
                },
                NamedPort {
                    name: "dns".into(),
                    port: 53,
                    protocol: Protocol::Udp,
                },
            ],
        });
    }
    set.policies = policies
        .into_iter()
        .map(|p| serde_json::from_value(p).expect("valid policy"))
        .collect();
    set
}

fn peer(kind: u8) -> Value {
    match kind % 7 {
        0 => json!({"podSelector": {"matchLabels": {"app": "a"}}}),
        1 => json!({"namespaceSelector": {"matchLabels": {"ns": "y"}}}),
        2 => {
            json!({"podSelector": {"matchLabels": {"app": "b"}}, "namespaceSelector": {"matchLabels": {"ns": "x"}}})
        }
        3 => json!({"ipBlock": {"cidr": "10.0.0.0/29", "except": ["10.0.0.2/32", "10.0.0.4/31"]}}),
        4 => json!({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/30"]}}),
        5 => json!({"namespaceSelector": {}}),
        _ => {
            json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]}})
        }
    }
}

fn port(kind: u8) -> Value {
    match kind % 6 {
        0 => json!({"port": 80}),
        1 => json!({"port": 80, "endPort": 81}),
        2 => json!({"port": "http"}),
        3 => json!({"protocol": "UDP", "port": 53}),
        4 => json!({"protocol": "UDP"}),
        _ => json!({"protocol": "UDP", "port": "dns"}),
    }
}

/// A rule: peers (empty: none given) and ports (empty: none given).
type RawRule = (Vec<u8>, Vec<u8>);

fn policy(i: usize, ns: u8, selector: u8, types: u8, ingress: &[RawRule], egress: &[RawRule]) -> Value {
    let rules = |rs: &[RawRule], key: &str| -> Vec<Value> {
        rs.iter()
            .map(|(peers, ports)| {
                let mut r = serde_json::Map::new();
                if !peers.is_empty() {
                    r.insert(key.into(), Value::Array(peers.iter().map(|p| peer(*p)).collect()));
                }
                if !ports.is_empty() {
                    r.insert(
                        "ports".into(),
                        Value::Array(ports.iter().map(|p| port(*p)).collect()),
                    );
                }
                Value::Object(r)
            })
            .collect()
    };
    let selector = match selector % 3 {
        0 => json!({}),
        1 => json!({"matchLabels": {"app": "a"}}),
        _ => json!({"matchLabels": {"app": "b"}}),
    };
    let mut spec = json!({"podSelector": selector});
    match types % 4 {
        0 => {
            spec["ingress"] = Value::Array(rules(ingress, "from"));
        }
        1 => {
            spec["policyTypes"] = json!(["Egress"]);
            spec["egress"] = Value::Array(rules(egress, "to"));
        }
        2 => {
            spec["policyTypes"] = json!(["Ingress", "Egress"]);
            spec["ingress"] = Value::Array(rules(ingress, "from"));
            spec["egress"] = Value::Array(rules(egress, "to"));
        }
        _ => {
            spec["egress"] = Value::Array(rules(egress, "to"));
        }
    }
    let namespace = ["x", "y"][usize::from(ns % 2)];
    json!({"metadata": {"name": format!("np{i}"), "namespace": namespace}, "spec": spec})
}

/// The compiled decision of a flow between pods or external addresses.
fn compiled(set: &PolicySet, flow: &Flow) -> bool {
    let addr = |e: &Endpoint| match e {
        Endpoint::Pod(i) => set.pods[*i].ips[0],
        Endpoint::External(a) => *a,
    };
    let proto = l4(flow.protocol);
    let egress_ok = match flow.src {
        Endpoint::Pod(i) => {
            let np_only = direction_allows(
                compile_side(set, i, false).as_deref(),
                addr(&flow.dst),
                proto,
                flow.port,
            );
            let full = compile_endpoint(set, i, String::new(), addr(&flow.src)).allows(
                false,
                addr(&flow.dst),
                proto,
                flow.port,
            );
            if set.admin.is_empty() && set.baseline.is_none() {
                assert_eq!(
                    np_only, full,
                    "without admin policies the stages reduce to NetworkPolicy"
                );
            }
            full
        }
        Endpoint::External(_) => true,
    };
    let ingress_ok = match flow.dst {
        Endpoint::Pod(i) => compile_endpoint(set, i, String::new(), addr(&flow.dst)).allows(
            true,
            addr(&flow.src),
            proto,
            flow.port,
        ),
        Endpoint::External(_) => true,
    };
    egress_ok && ingress_ok
}

fn selector(kind: u8) -> Value {
    match kind % 4 {
        0 => json!({}),
        1 => json!({"matchLabels": {"ns": "x"}}),
        2 => json!({"matchLabels": {"ns": "y"}}),
        _ => json!({"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]}),
    }
}

fn admin_peer(kind: u8) -> Value {
    match kind % 5 {
        0 => json!({"namespaces": selector(kind / 5)}),
        1 => {
            json!({"pods": {"namespaceSelector": selector(kind / 5), "podSelector": {"matchLabels": {"app": "a"}}}})
        }
        2 => json!({"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "b"}}}}),
        3 => json!({"namespaces": {}}),
        _ => json!({"networks": ["10.0.0.0/30", "192.168.0.0/16"]}),
    }
}

fn admin_port(kind: u8) -> Value {
    match kind % 5 {
        0 => json!({"portNumber": {"protocol": "TCP", "port": 80}}),
        1 => json!({"portRange": {"start": 80, "end": 81}}),
        2 => json!({"namedPort": "http"}),
        3 => json!({"portNumber": {"protocol": "UDP", "port": 53}}),
        _ => json!({"namedPort": "dns"}),
    }
}

/// (action, peers, ports) of an admin rule.
type RawAdminRule = (u8, Vec<u8>, Vec<u8>);

fn admin_rules(rules: &[RawAdminRule], ingress: bool, baseline: bool) -> Value {
    let key = if ingress { "from" } else { "to" };
    Value::Array(
        rules
            .iter()
            .map(|(action, peers, ports)| {
                let actions: &[&str] = if baseline {
                    &["Allow", "Deny"]
                } else {
                    &["Allow", "Deny", "Pass"]
                };
                let mut peers: Vec<Value> = peers.iter().map(|p| admin_peer(*p)).collect();
                if ingress {
                    peers.retain(|p| p.get("networks").is_none());
                }
                if peers.is_empty() {
                    peers.push(json!({"namespaces": {}}));
                }
                let mut r = json!({"action": actions[usize::from(*action) % actions.len()], key: peers});
                if !ports.is_empty() {
                    r["ports"] = Value::Array(ports.iter().map(|p| admin_port(*p)).collect());
                }
                r
            })
            .collect(),
    )
}

fn admin_rule_strategy() -> impl Strategy<Value = RawAdminRule> {
    (
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..3),
        prop::collection::vec(any::<u8>(), 0..3),
    )
}

/// (priority, subject, ingress, egress) of an ANP; the BANP ignores the priority.
type RawAdmin = (u8, u8, Vec<RawAdminRule>, Vec<RawAdminRule>);

fn admin_strategy() -> impl Strategy<Value = RawAdmin> {
    (
        0u8..4,
        any::<u8>(),
        prop::collection::vec(admin_rule_strategy(), 0..3),
        prop::collection::vec(admin_rule_strategy(), 0..3),
    )
}

fn subject(kind: u8) -> Value {
    match kind % 3 {
        0 => json!({"namespaces": selector(kind / 3)}),
        1 => {
            json!({"pods": {"namespaceSelector": selector(kind / 3), "podSelector": {"matchLabels": {"app": "a"}}}})
        }
        _ => json!({"pods": {"namespaceSelector": {}, "podSelector": {}}}),
    }
}

fn add_admin(set: &mut PolicySet, anps: &[RawAdmin], banp: Option<&RawAdmin>) {
    for (i, (priority, subj, ing, eg)) in anps.iter().enumerate() {
        let p: weft_model::AdminNetworkPolicy = serde_json::from_value(json!({"metadata": {"name": format!("anp{i}")},
            "spec": {"priority": priority, "subject": subject(*subj), "ingress": admin_rules(ing, true, false),
                     "egress": admin_rules(eg, false, false)}}))
        .expect("valid ANP");
        p.validate("anp").expect("valid ANP");
        set.admin.push(p);
    }
    if let Some((_, subj, ing, eg)) = banp {
        let b: weft_model::BaselineAdminNetworkPolicy =
            serde_json::from_value(json!({"metadata": {"name": "default"},
            "spec": {"subject": subject(*subj), "ingress": admin_rules(ing, true, true),
                     "egress": admin_rules(eg, false, true)}}))
            .expect("valid BANP");
        b.validate("default").expect("valid BANP");
        set.baseline = Some(b);
    }
}

fn check_every_flow(set: &PolicySet) -> Result<(), TestCaseError> {
    let mut ends: Vec<Endpoint> = (0..set.pods.len()).map(Endpoint::Pod).collect();
    ends.push(Endpoint::External(ip(2)));
    ends.push(Endpoint::External(ip(200)));
    ends.push(Endpoint::External(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1))));
    for src in &ends {
        for dst in &ends {
            if matches!((src, dst), (Endpoint::External(_), Endpoint::External(_))) {
                continue;
            }
            for (port, protocol) in [
                (80, Protocol::Tcp),
                (81, Protocol::Tcp),
                (82, Protocol::Tcp),
                (53, Protocol::Udp),
                (80, Protocol::Udp),
            ] {
                let flow = Flow {
                    src: src.clone(),
                    dst: dst.clone(),
                    port,
                    protocol,
                };
                if let (Endpoint::External(a), _) | (_, Endpoint::External(a)) = (src, dst)
                    && set.pods.iter().any(|p| p.ips.contains(a))
                {
                    continue;
                }
                prop_assert_eq!(
                    compiled(set, &flow),
                    set.evaluate(&flow).allowed(),
                    "flow {:?} in {:?} / {:?} / {:?}",
                    flow,
                    set.policies,
                    set.admin,
                    set.baseline
                );
            }
        }
    }
    Ok(())
}

fn rule_strategy() -> impl Strategy<Value = RawRule> {
    (
        prop::collection::vec(any::<u8>(), 0..3),
        prop::collection::vec(any::<u8>(), 0..3),
    )
}

type PolicyParams = (u8, u8, u8, Vec<RawRule>, Vec<RawRule>);

fn policy_strategy() -> impl Strategy<Value = PolicyParams> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        prop::collection::vec(rule_strategy(), 0..3),
        prop::collection::vec(rule_strategy(), 0..3),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn compiled_rules_agree_with_evaluate(
        pods in prop::collection::vec((any::<u8>(), any::<u8>(), prop_oneof![Just(80u16), Just(81u16)]), 1..6),
        policies in prop::collection::vec(policy_strategy(), 0..4),
    ) {
        let json: Vec<Value> = policies
            .iter()
            .enumerate()
            .map(|(i, (ns, sel, types, ing, eg))| policy(i, *ns, *sel, *types, ing, eg))
            .collect();
        let set = world(&pods, json);
        let mut ends: Vec<Endpoint> = (0..set.pods.len()).map(Endpoint::Pod).collect();
        ends.push(Endpoint::External(ip(2)));
        ends.push(Endpoint::External(ip(200)));
        ends.push(Endpoint::External(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1))));
        for src in &ends {
            for dst in &ends {
                if matches!((src, dst), (Endpoint::External(_), Endpoint::External(_))) {
                    continue;
                }
                for (port, protocol) in [(80, Protocol::Tcp), (81, Protocol::Tcp), (82, Protocol::Tcp), (53, Protocol::Udp), (80, Protocol::Udp)] {
                    let flow = Flow { src: src.clone(), dst: dst.clone(), port, protocol };
                    // An external address equal to a pod's is not a case (ip(2) is one
                    // only when there are two pods): skip those.
                    if let (Endpoint::External(a), _) | (_, Endpoint::External(a)) = (src, dst)
                        && set.pods.iter().any(|p| p.ips.contains(a))
                    {
                        continue;
                    }
                    prop_assert_eq!(
                        compiled(&set, &flow),
                        set.evaluate(&flow).allowed(),
                        "flow {:?} in {:?}", flow, set.policies
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// The same with AdminNetworkPolicies (tiers, Allow / Deny / Pass) and a
    /// BaselineAdminNetworkPolicy on top of the NetworkPolicies.
    #[test]
    fn compiled_admin_rules_agree_with_evaluate(
        pods in prop::collection::vec((any::<u8>(), any::<u8>(), prop_oneof![Just(80u16), Just(81u16)]), 1..6),
        policies in prop::collection::vec(policy_strategy(), 0..3),
        anps in prop::collection::vec(admin_strategy(), 0..4),
        banp in prop::option::of(admin_strategy()),
    ) {
        let json: Vec<Value> = policies
            .iter()
            .enumerate()
            .map(|(i, (ns, sel, types, ing, eg))| policy(i, *ns, *sel, *types, ing, eg))
            .collect();
        let mut set = world(&pods, json);
        add_admin(&mut set, &anps, banp.as_ref());
        check_every_flow(&set)?;
    }
}

#[test]
fn subtract_cuts_excepts_out() {
    let cidr: IpNet = "10.0.0.0/24".parse().expect("cidr");
    let parts = subtract(
        cidr,
        &[
            "10.0.0.0/26".parse().expect("e"),
            "10.0.0.128/32".parse().expect("e"),
        ],
    );
    assert!(
        parts
            .iter()
            .all(|p| !p.contains(&"10.0.0.1".parse::<IpAddr>().expect("a")))
    );
    assert!(
        parts
            .iter()
            .all(|p| !p.contains(&"10.0.0.128".parse::<IpAddr>().expect("a")))
    );
    assert!(
        parts
            .iter()
            .any(|p| p.contains(&"10.0.0.129".parse::<IpAddr>().expect("a")))
    );
    assert!(
        parts
            .iter()
            .any(|p| p.contains(&"10.0.0.64".parse::<IpAddr>().expect("a")))
    );
    assert!(subtract(cidr, &["10.0.0.0/16".parse().expect("e")]).is_empty());
    assert_eq!(subtract(cidr, &[]), vec![cidr]);
}

#[test]
fn named_egress_port_resolves_per_destination() {
    let set = world(
        &[(0, 0, 80), (0, 1, 81)],
        vec![json!({"metadata": {"name": "e", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"],
                     "egress": [{"ports": [{"port": "http"}]}]}})],
    );
    let rules = compile_side(&set, 0, false).expect("isolated");
    assert!(direction_allows(Some(&rules), ip(2), L4Protocol::Tcp, 81));
    assert!(!direction_allows(Some(&rules), ip(2), L4Protocol::Tcp, 80));
    assert!(direction_allows(Some(&rules), ip(1), L4Protocol::Tcp, 80));
    assert!(!direction_allows(Some(&rules), ip(99), L4Protocol::Tcp, 80));
    assert_eq!(compile_side(&set, 1, false), None);
    assert_eq!(compile_side(&set, 0, true), None);
}

//! Table-driven cases in the style of the upstream Kubernetes NetworkPolicy e2e suite:
//! namespaces x, y, z with pods a, b, c, each serving 80 and 81 over TCP and UDP; each
//! case is a set of policies and the expected reachability matrix on one port.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

use super::*;

fn world(policies: Vec<serde_json::Value>) -> PolicySet {
    let mut set = PolicySet::default();
    let mut n = 1u8;
    for ns in ["x", "y", "z"] {
        set.namespaces.insert(
            ns.to_string(),
            BTreeMap::from([("ns".to_string(), ns.to_string())]),
        );
        for pod in ["a", "b", "c"] {
            set.pods.push(PodInfo {
                namespace: ns.into(),
                name: pod.into(),
                labels: BTreeMap::from([("pod".to_string(), pod.to_string())]),
                ips: vec![IpAddr::from([10, 0, 0, n])],
                ports: vec![
                    NamedPort {
                        name: "serve-80-tcp".into(),
                        port: 80,
                        protocol: Protocol::Tcp,
                    },
                    NamedPort {
                        name: "serve-81-tcp".into(),
                        port: 81,
                        protocol: Protocol::Tcp,
                    },
                    NamedPort {
                        name: "serve-80-udp".into(),
                        port: 80,
                        protocol: Protocol::Udp,
                    },
                    NamedPort {
                        name: "serve-81-udp".into(),
                        port: 81,
                        protocol: Protocol::Udp,
                    },
                ],
            });
            n += 1;
        }
    }
    set.policies = policies
        .into_iter()
        .map(|p| serde_json::from_value::<NetworkPolicy>(p).expect("valid policy"))
        .collect();
    set
}

/// Matrix as 9 rows of 9 chars ('.' allowed, 'X' denied), rows = sources x/a … z/c.
fn matrix(set: &PolicySet, port: u16, protocol: Protocol) -> Vec<String> {
    (0..set.pods.len())
        .map(|s| {
            (0..set.pods.len())
                .map(|d| {
                    let flow = Flow {
                        src: Endpoint::Pod(s),
                        dst: Endpoint::Pod(d),
                        port,
                        protocol,
                    };
                    if set.evaluate(&flow).allowed() { '.' } else { 'X' }
                })
                .collect()
        })
        .collect()
}

fn np(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

const ALL: [&str; 9] = ["........."; 9];

fn expect(set: &PolicySet, port: u16, protocol: Protocol, rows: [&str; 9]) {
    let got = matrix(set, port, protocol);
    let want: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    assert_eq!(got, want, "\n got: {got:#?}\nwant: {want:#?}");
}

#[test]
fn no_policies_allow_everything() {
    expect(&world(vec![]), 80, Protocol::Tcp, ALL);
}

#[test]
fn deny_all_ingress_in_x() {
    let set = world(vec![np("x", "deny", json!({"podSelector": {}}))]);
    // Columns 0..3 (x/a, x/b, x/c) closed to everyone, including x itself.
    expect(&set, 80, Protocol::Tcp, ["XXX......"; 9]);
}

#[test]
fn allow_from_same_namespace_only() {
    let set = world(vec![np(
        "x",
        "same-ns",
        json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    )]);
    let rows = ["........."; 3]
        .into_iter()
        .chain(["XXX......"; 6])
        .collect::<Vec<_>>();
    expect(&set, 80, Protocol::Tcp, rows.try_into().expect("9 rows"));
}

#[test]
fn pod_and_namespace_selector_in_one_peer_is_and() {
    // Only pods labelled pod=b in namespaces labelled ns=y may reach x/a.
    let set = world(vec![np(
        "x",
        "and",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )]);
    let m = matrix(&set, 80, Protocol::Tcp);
    let allowed_sources: Vec<usize> = (0..9).filter(|s| m[*s].starts_with('.')).collect();
    assert_eq!(allowed_sources, vec![4], "only y/b reaches x/a: {m:?}");
}

#[test]
fn separate_peers_are_or() {
    let set = world(vec![np(
        "x",
        "or",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
    )]);
    let m = matrix(&set, 80, Protocol::Tcp);
    let allowed_sources: Vec<usize> = (0..9).filter(|s| m[*s].starts_with('.')).collect();
    // x/b (same namespace, pod=b) and all of y.
    assert_eq!(allowed_sources, vec![1, 3, 4, 5], "{m:?}");
}

#[test]
fn match_expressions_operators() {
    let set = world(vec![np(
        "x",
        "expr",
        json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": ["a"]}]},
        "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["z"]}]}}]}]}),
    )]);
    let m = matrix(&set, 80, Protocol::Tcp);
    // x/a is not selected: open. x/b and x/c only from z.
    for (s, row) in m.iter().enumerate() {
        assert_eq!(&row[0..1], ".", "x/a stays open");
        let want = if s >= 6 { "." } else { "X" };
        assert_eq!(&row[1..2], want, "row {s}: {row}");
        assert_eq!(&row[2..3], want, "row {s}: {row}");
    }
    let exists = world(vec![np(
        "x",
        "exists",
        json!({"podSelector": {"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]},
        "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}}]}]}),
    )]);
    let m = matrix(&exists, 80, Protocol::Tcp);
    assert!(m[0].starts_with("...") && m[3].starts_with("XXX"), "{m:?}");
}

#[test]
fn ports_by_number_name_and_range() {
    let by_number = world(vec![np(
        "x",
        "p81",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}),
    )]);
    assert!(matrix(&by_number, 81, Protocol::Tcp)[4].starts_with("..."));
    assert!(matrix(&by_number, 80, Protocol::Tcp)[4].starts_with("XXX"));
    assert!(
        matrix(&by_number, 81, Protocol::Udp)[4].starts_with("XXX"),
        "protocol defaults to TCP"
    );
    let by_name = world(vec![np(
        "x",
        "named",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-udp", "protocol": "UDP"}]}]}),
    )]);
    assert!(matrix(&by_name, 80, Protocol::Udp)[4].starts_with("..."));
    assert!(matrix(&by_name, 80, Protocol::Tcp)[4].starts_with("XXX"));
    let range = world(vec![np(
        "x",
        "range",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 79, "endPort": 80}]}]}),
    )]);
    assert!(matrix(&range, 80, Protocol::Tcp)[4].starts_with("..."));
    assert!(matrix(&range, 81, Protocol::Tcp)[4].starts_with("XXX"));
}

#[test]
fn egress_policies_and_default_policy_types() {
    // Egress rules present and no policyTypes: both directions are isolated.
    let set = world(vec![np(
        "x",
        "egress-to-y",
        json!({"podSelector": {"matchLabels": {"pod": "a"}},
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    )]);
    let m = matrix(&set, 80, Protocol::Tcp);
    assert_eq!(m[0], "XXX...XXX", "x/a may only talk to y");
    assert!(
        m.iter().skip(1).all(|r| r.starts_with('X')),
        "ingress of x/a is isolated too (no ingress rules): {m:?}"
    );
    // Explicit Egress-only leaves ingress open.
    let egress_only = world(vec![np(
        "x",
        "e",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}),
    )]);
    let m = matrix(&egress_only, 80, Protocol::Tcp);
    assert_eq!(m[0], "XXXXXXXXX");
    assert!(m.iter().skip(1).all(|r| r.starts_with('.')));
}

#[test]
fn ip_block_with_except() {
    // 10.0.0.4-10.0.0.6 are y/a, y/b, y/c; except y/b.
    let set = world(vec![np(
        "x",
        "cidr",
        json!({"podSelector": {},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.4/30", "except": ["10.0.0.5/32"]}}]}]}),
    )]);
    let m = matrix(&set, 80, Protocol::Tcp);
    let allowed_sources: Vec<usize> = (0..9).filter(|s| m[*s].starts_with('.')).collect();
    assert_eq!(allowed_sources, vec![3, 5, 6], "{m:?}");
    let ext = Flow {
        src: Endpoint::External("10.0.0.6".parse().expect("ip")),
        dst: Endpoint::Pod(0),
        port: 80,
        protocol: Protocol::Tcp,
    };
    assert!(set.evaluate(&ext).allowed());
    let ext = Flow {
        src: Endpoint::External("192.0.2.1".parse().expect("ip")),
        dst: Endpoint::Pod(0),
        port: 80,
        protocol: Protocol::Tcp,
    };
    assert!(!set.evaluate(&ext).allowed());
}

#[test]
fn union_of_policies_and_explanations() {
    let set = world(vec![
        np("x", "deny", json!({"podSelector": {}})),
        np(
            "x",
            "allow-z",
            json!({"podSelector": {"matchLabels": {"pod": "c"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
        ),
    ]);
    let flow = Flow {
        src: Endpoint::Pod(6),
        dst: Endpoint::Pod(2),
        port: 80,
        protocol: Protocol::Tcp,
    };
    let d = set.evaluate(&flow);
    assert!(d.allowed());
    assert_eq!(d.ingress.selecting, vec!["x/deny", "x/allow-z"]);
    assert_eq!(
        d.ingress.allowed_by,
        Some(RuleRef {
            policy: "x/allow-z".into(),
            rule: 0
        })
    );
    let text = d.ingress.explain("Ingress", "x/c");
    assert!(
        text.contains("x/allow-z") && text.contains("rule ingress[0]"),
        "{text}"
    );
    let blocked = set.evaluate(&Flow {
        src: Endpoint::Pod(3),
        dst: Endpoint::Pod(2),
        port: 80,
        protocol: Protocol::Tcp,
    });
    assert!(!blocked.allowed());
    assert!(blocked.ingress.explain("Ingress", "x/c").contains("denied"));
}

#[test]
fn empty_from_and_to_mean_everyone() {
    let set = world(vec![np(
        "x",
        "all",
        json!({"podSelector": {}, "ingress": [{"from": []}], "egress": [{}], "policyTypes": ["Ingress", "Egress"]}),
    )]);
    expect(&set, 80, Protocol::Tcp, ALL);
}

#[cfg(test)]
mod admin;

//! End-to-end tests of Kubernetes NetworkPolicy in the kernel (issue 4), table-driven
//! in the style of the upstream e2e suite: namespaces x, y, z (labelled `ns: <name>`)
//! with pods a, b, c serving TCP and UDP 80 and 81 (named `serve-<port>-<proto>`),
//! spread over two nodes. Each case applies its policies, waits until every agent
//! reports the controller's state applied in its kernel (`weft lab wait`), then probes
//! the matrix once and compares it with what `weft_policy::PolicySet::evaluate`
//! decides (and with a hand-written expectation where the case has one); then it
//! deletes the policies, waits again and checks full connectivity (live updates,
//! nothing restarted). One lab for all cases. A pod's probe to itself stays inside its
//! namespace (never forwarded), so the diagonal is not compared.
//!
//! Why no probing "until it matches": probes sent before a node has its table are not
//! tracked by conntrack there (a node without a table tracks nothing), so a reply that
//! arrives after the table appeared is not `established` and an isolated pod rejects
//! it; and a probe loop bounded by time hid that behind slow passes (a denied probe to
//! another node waits for its timeout). Waiting for the applied revision removes both.
//!
//! Like `services.rs`: root needed (skipped otherwise), the workspace's `weft` and
//! `weft-cni` binaries, lab `p<pid % 10000><letter>` taken down by a guard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, require_root};

/// Prefix of this file's lab names.
const LAB_PREFIX: char = 'p';

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use weft_lab::echo::{ProbeKind, Proto, probe_from_netns};
use weft_policy::{Endpoint, Flow, NamedPort, PodInfo, PolicySet, Protocol};

/// Bound on one probe step.
const STEP: Duration = Duration::from_secs(2);

fn names() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|ns| PODS.iter().map(move |p| format!("{ns}/{p}")))
        .collect()
}

fn world_manifests() -> String {
    let mut m = String::new();
    for ns in NAMESPACES {
        m += &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n---\n"
        );
    }
    let mut node = 1;
    for ns in NAMESPACES {
        for pod in PODS {
            m += &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\nspec:\n  nodeName: node-{node}\n  containers: [{{name: c, image: weft/echo, ports: [{{name: serve-80-tcp, containerPort: 80}}, {{name: serve-81-tcp, containerPort: 81}}, {{name: serve-80-udp, containerPort: 80, protocol: UDP}}, {{name: serve-81-udp, containerPort: 81, protocol: UDP}}]}}]\n---\n"
            );
            node = 3 - node;
        }
    }
    m
}

/// The policy model of the lab's world with `policies`.
fn model(ips: &BTreeMap<String, IpAddr>, policies: &[Value]) -> PolicySet {
    let mut set = PolicySet::default();
    for ns in NAMESPACES {
        set.namespaces
            .insert(ns.into(), BTreeMap::from([("ns".to_string(), ns.to_string())]));
    }
    for key in names() {
        let (ns, pod) = key.split_once('/').unwrap();
        let mut ports = Vec::new();
        for (port, protocol) in [
            (80, Protocol::Tcp),
            (81, Protocol::Tcp),
            (80, Protocol::Udp),
            (81, Protocol::Udp),
        ] {
            ports.push(NamedPort {
                name: format!("serve-{port}-{}", protocol.as_str().to_ascii_lowercase()),
                port,
                protocol,
            });
        }
        set.pods.push(PodInfo {
            namespace: ns.into(),
            name: pod.into(),
            labels: BTreeMap::from([("pod".to_string(), pod.to_string())]),
            ips: vec![ips[&key]],
            ports,
        });
    }
    set.policies = policies
        .iter()
        .map(|p| serde_json::from_value::<NetworkPolicy>(p.clone()).unwrap())
        .collect();
    set
}

/// Rows = sources, columns = destinations, in [`names`] order: '.' allowed, 'X' denied,
/// '-' the diagonal (not compared).
type Matrix = Vec<String>;

fn expected(set: &PolicySet, port: u16, protocol: Protocol) -> Matrix {
    let n = set.pods.len();
    (0..n)
        .map(|s| {
            (0..n)
                .map(|d| {
                    if s == d {
                        '-'
                    } else if set
                        .evaluate(&Flow {
                            src: Endpoint::Pod(s),
                            dst: Endpoint::Pod(d),
                            port,
                            protocol,
                        })
                        .allowed()
                    {
                        '.'
                    } else {
                        'X'
                    }
                })
                .collect()
        })
        .collect()
}

/// Probes every pair once, in parallel (the pairs are independent flows, and a denied
/// probe to another node runs into its timeout).
fn observed(
    netns: &BTreeMap<String, String>,
    ips: &BTreeMap<String, IpAddr>,
    port: u16,
    proto: Proto,
) -> Matrix {
    let all = names();
    std::thread::scope(|scope| {
        let rows: Vec<Vec<_>> = all
            .iter()
            .map(|s| {
                all.iter()
                    .map(|d| {
                        (s != d).then(|| {
                            let (ns, target) = (&netns[s], SocketAddr::new(ips[d], port));
                            scope.spawn(move || {
                                probe_from_netns(ns, target, proto, STEP).kind == ProbeKind::Connected
                            })
                        })
                    })
                    .collect()
            })
            .collect();
        rows.into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|h| match h.map(|h| h.join().unwrap()) {
                        None => '-',
                        Some(true) => '.',
                        Some(false) => 'X',
                    })
                    .collect()
            })
            .collect()
    })
}

/// What the nodes' kernels hold, for a failure message: `applied.json`, the `inet weft`
/// table and the conntrack entries of each node.
fn diagnostics(lab: &Lab) -> String {
    let status = lab.status();
    let mut out = String::new();
    for node in status["nodes"].as_array().into_iter().flatten() {
        let name = node["name"].as_str().unwrap_or("?");
        let netns = node["netns"].as_str().unwrap_or("?");
        let dir = format!("{}/applied.json", node["agentStateDir"].as_str().unwrap_or("?"));
        out += &format!(
            "== {name} ({netns})\napplied: {}\n",
            std::fs::read_to_string(&dir).unwrap_or_else(|e| format!("{dir}: {e}"))
        );
        for args in [
            vec!["netns", "exec", netns, "nft", "list", "table", "inet", "weft"],
            vec!["netns", "exec", netns, "cat", "/proc/net/nf_conntrack"],
        ] {
            let mut cmd = std::process::Command::new("ip");
            cmd.args(&args);
            let (_, o, e) = support::run(cmd);
            out += &format!("$ ip {}\n{o}{e}\n", args.join(" "));
        }
    }
    out
}

/// Probes the matrix once: the caller has waited for the agents to enforce the
/// change ([`Lab::apply`] runs `weft lab wait`), so the first look must be right. On a
/// mismatch the failure shows what the kernels hold and whether a second look agrees.
fn check(
    lab: &Lab,
    what: &str,
    netns: &BTreeMap<String, String>,
    ips: &BTreeMap<String, IpAddr>,
    port: u16,
    proto: Proto,
    want: &Matrix,
) {
    let got = observed(netns, ips, port, proto);
    if &got == want {
        return;
    }
    let diag = diagnostics(lab);
    std::thread::sleep(Duration::from_secs(2));
    let again = observed(netns, ips, port, proto);
    panic!(
        "{what} on {port}/{proto:?}, right after the agents reported the change applied\nobserved:\n{}\nexpected:\n{}\nobserved 2 s later:\n{}\n{diag}",
        got.join("\n"),
        want.join("\n"),
        again.join("\n"),
    );
}

fn np(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// A hand-written matrix: `allowed(src, dst)` over [`names`], diagonal '-'.
fn by_hand(allowed: impl Fn(&str, &str) -> bool) -> Matrix {
    let all = names();
    all.iter()
        .map(|s| {
            all.iter()
                .map(|d| {
                    if s == d {
                        '-'
                    } else if allowed(s, d) {
                        '.'
                    } else {
                        'X'
                    }
                })
                .collect()
        })
        .collect()
}

struct Case {
    name: &'static str,
    policies: Vec<Value>,
    /// (port, protocol) probed.
    probes: Vec<(u16, Protocol)>,
    /// Hand-written expectation on 80/TCP, if any.
    by_hand: Option<Matrix>,
}

#[test]
fn network_policy_matrix_matches_the_model() {
    require_root!();
    let lab = Lab::up_text('a', &world_manifests());
    let status = lab.status();
    let mut netns = BTreeMap::new();
    let mut ips = BTreeMap::new();
    for key in names() {
        let p = &status["pods"][&key];
        netns.insert(key.clone(), p["netns"].as_str().unwrap().to_string());
        ips.insert(key.clone(), p["ip"].as_str().unwrap().parse::<IpAddr>().unwrap());
    }
    let ns_of = |k: &str| k.split_once('/').unwrap().0.to_string();
    let xa_ip = ips["x/a"];
    let tcp80 = vec![(80, Protocol::Tcp)];
    let cases = vec![
        Case {
            name: "deny-all ingress in x",
            policies: vec![np("x", "deny", json!({"podSelector": {}}))],
            probes: vec![(80, Protocol::Tcp), (81, Protocol::Udp)],
            by_hand: Some(by_hand(|_, d| ns_of(d) != "x")),
        },
        Case {
            name: "allow same namespace in x",
            policies: vec![np(
                "x",
                "same",
                json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
            )],
            probes: tcp80.clone(),
            by_hand: Some(by_hand(|s, d| ns_of(d) != "x" || ns_of(s) == "x")),
        },
        Case {
            name: "podSelector AND namespaceSelector to x/a",
            policies: vec![np(
                "x",
                "and",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            )],
            probes: tcp80.clone(),
            by_hand: Some(by_hand(|s, d| d != "x/a" || s == "y/b")),
        },
        Case {
            name: "podSelector OR namespaceSelector to x/a",
            policies: vec![np(
                "x",
                "or",
                json!({"podSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}, {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
            )],
            probes: tcp80.clone(),
            by_hand: Some(by_hand(|s, d| d != "x/a" || ns_of(s) == "y" || s == "x/b")),
        },
        Case {
            name: "named port serve-81-tcp into x",
            policies: vec![np(
                "x",
                "named",
                json!({"podSelector": {},
                "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]}),
            )],
            probes: vec![(80, Protocol::Tcp), (81, Protocol::Tcp), (81, Protocol::Udp)],
            by_hand: Some(by_hand(|_, d| ns_of(d) != "x")),
        },
        Case {
            name: "egress deny-all from x/a (no DNS)",
            policies: vec![np(
                "x",
                "egress",
                json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}),
            )],
            probes: vec![(80, Protocol::Tcp), (80, Protocol::Udp)],
            by_hand: Some(by_hand(|s, _| s != "x/a")),
        },
        Case {
            name: "ipBlock with except into y",
            policies: vec![np(
                "y",
                "block",
                json!({"podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [format!("{xa_ip}/32")]}}]}]}),
            )],
            probes: tcp80.clone(),
            by_hand: Some(by_hand(|s, d| ns_of(d) != "y" || s != "x/a")),
        },
        Case {
            name: "egress to z on 80 only, ingress x/b from z",
            policies: vec![
                np(
                    "x",
                    "to-z",
                    json!({"podSelector": {}, "policyTypes": ["Egress"],
                    "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}], "ports": [{"port": 80, "endPort": 80}]}]}),
                ),
                np(
                    "x",
                    "b-from-z",
                    json!({"podSelector": {"matchLabels": {"pod": "b"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}),
                ),
            ],
            probes: vec![(80, Protocol::Tcp), (81, Protocol::Tcp)],
            by_hand: None,
        },
    ];
    let open = by_hand(|_, _| true);
    for case in &cases {
        let text: String = case
            .policies
            .iter()
            .map(|p| serde_json::to_string(p).unwrap() + "\n---\n")
            .collect();
        lab.apply("case.yaml", &text);
        let set = model(&ips, &case.policies);
        if let Some(hand) = &case.by_hand {
            assert_eq!(
                &expected(&set, 80, Protocol::Tcp),
                hand,
                "{}: the model disagrees with the hand-written matrix",
                case.name
            );
        }
        for (port, protocol) in &case.probes {
            let proto = match protocol {
                Protocol::Udp => Proto::Udp,
                _ => Proto::Tcp,
            };
            check(
                &lab,
                case.name,
                &netns,
                &ips,
                *port,
                proto,
                &expected(&set, *port, *protocol),
            );
        }
        lab.delete("case.yaml", &text);
        check(
            &lab,
            &format!("{} deleted", case.name),
            &netns,
            &ips,
            80,
            Proto::Tcp,
            &open,
        );
    }
}

//! Property test against the kernel: for random NetworkPolicy sets, `weft explain`'s
//! verdict (the controller's model) equals what a probe through the lab's kernels
//! observes, for every ordered pair of pods and a TCP and a UDP port.
//!
//! The world is the policy suite's (namespaces x, y, z with pods a, b, c serving TCP
//! and UDP 80 and 81, over two nodes), with more labels to select on: pods carry
//! `pod`, `app` and `tier`, namespaces `ns` and `env`. Each set (1–3 policies) is drawn
//! from a seeded generator: pod selectors with matchLabels and matchExpressions (In,
//! NotIn, Exists, DoesNotExist), namespaceSelector, both in one peer, ipBlock with
//! except, ports by number, name and range, TCP/UDP, ingress and egress, with and
//! without policyTypes. After applying a set the test waits until every agent enforces
//! it (`weft lab wait`), then compares once: no retries, no sleeps.
//!
//! `WEFT_SEED=N` picks the first seed (default: fixed), `WEFT_LONG=1` runs 60 sets
//! instead of 8. A failure prints the seed and the policies, so it can be replayed.
//! Root needed (skipped otherwise), the workspace's `weft` and `weft-cni` binaries, lab
//! `r<pid % 10000><letter>` taken down by a guard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, require_root};

/// Prefix of this file's lab names.
const LAB_PREFIX: char = 'r';

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};
use weft_api::client::ApiClient;
use weft_api::explain::ExplainRequest;
use weft_lab::echo::{ProbeKind, Proto, probe_from_netns};

const NAMESPACES: [(&str, &str); 3] = [("x", "prod"), ("y", "dev"), ("z", "prod")];
/// (pod, app, tier)
const PODS: [(&str, &str, &str); 3] = [("a", "web", "front"), ("b", "web", "back"), ("c", "db", "back")];
/// Ports probed: one TCP, one UDP.
const PROBES: [(u16, Proto, &str); 2] = [(80, Proto::Tcp, "tcp"), (81, Proto::Udp, "udp")];
/// Bound on one probe (a denied probe to another node times out: see the report).
const STEP: Duration = Duration::from_millis(1500);

/// splitmix64: a tiny seeded generator (the test needs no statistical quality, only
/// the same sequence for the same seed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

fn names() -> Vec<String> {
    NAMESPACES
        .iter()
        .flat_map(|(ns, _)| PODS.iter().map(move |(p, _, _)| format!("{ns}/{p}")))
        .collect()
}

fn world_manifests() -> String {
    let mut m = String::new();
    for (ns, env) in NAMESPACES {
        m += &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}, env: {env}}}}}\n---\n"
        );
    }
    let mut node = 1;
    for (ns, _) in NAMESPACES {
        for (pod, app, tier) in PODS {
            m += &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}, app: {app}, tier: {tier}}}}}\nspec:\n  nodeName: node-{node}\n  containers: [{{name: c, image: weft/echo, ports: [{{name: serve-80-tcp, containerPort: 80}}, {{name: serve-81-tcp, containerPort: 81}}, {{name: serve-80-udp, containerPort: 80, protocol: UDP}}, {{name: serve-81-udp, containerPort: 81, protocol: UDP}}]}}]\n---\n"
            );
            node = 3 - node;
        }
    }
    m
}

/// A random label selector over pod (`namespace` false) or namespace labels.
fn selector(rng: &mut Rng, namespace: bool) -> Value {
    let (keys, values): (&[&str], &[&str]) = if namespace {
        (&["ns", "env"], &["x", "y", "z", "prod", "dev"])
    } else {
        (
            &["pod", "app", "tier"],
            &["a", "b", "c", "web", "db", "front", "back"],
        )
    };
    match rng.below(4) {
        0 => json!({}),
        1 => json!({"matchLabels": {rng.pick(keys): rng.pick(values)}}),
        _ => {
            let op = rng.pick(&["In", "NotIn", "Exists", "DoesNotExist"]);
            let mut e = json!({"key": rng.pick(keys), "operator": op});
            if op == "In" || op == "NotIn" {
                let n = 1 + rng.below(2);
                e["values"] = json!((0..n).map(|_| rng.pick(values)).collect::<Vec<_>>());
            }
            let mut s = json!({"matchExpressions": [e]});
            if rng.chance(30) {
                s["matchLabels"] = json!({rng.pick(keys): rng.pick(values)});
            }
            s
        }
    }
}

fn peer(rng: &mut Rng, ips: &BTreeMap<String, IpAddr>) -> Value {
    match rng.below(5) {
        0 => json!({"podSelector": selector(rng, false)}),
        1 => json!({"namespaceSelector": selector(rng, true)}),
        2 => json!({"podSelector": selector(rng, false), "namespaceSelector": selector(rng, true)}),
        3 => {
            let ip = ips[&rng.pick(&names())];
            json!({"ipBlock": {"cidr": format!("{ip}/32")}})
        }
        _ => {
            // The /24 around a pod (all lab pods are in it), minus one or two pods.
            let IpAddr::V4(v4) = ips[&rng.pick(&names())] else {
                unreachable!("lab pods are IPv4")
            };
            let o = v4.octets();
            let n = 1 + rng.below(2);
            let except: Vec<String> = (0..n)
                .map(|_| format!("{}/32", ips[&rng.pick(&names())]))
                .collect();
            json!({"ipBlock": {"cidr": format!("{}.{}.{}.0/24", o[0], o[1], o[2]), "except": except}})
        }
    }
}

fn ports(rng: &mut Rng) -> Option<Value> {
    match rng.below(6) {
        0 | 1 => None,
        2 => Some(json!([{"port": rng.pick(&[80, 81])}])),
        3 => Some(json!([{"port": rng.pick(&[80, 81]), "protocol": "UDP"}])),
        4 => Some(json!([{"port": rng.pick(&["serve-80-tcp", "serve-81-udp", "serve-81-tcp"])}])),
        _ => Some(json!([{"port": 80, "endPort": 81, "protocol": rng.pick(&["TCP", "UDP"])}])),
    }
}

fn rules(rng: &mut Rng, ips: &BTreeMap<String, IpAddr>, side: &str) -> Value {
    let n = rng.below(3);
    Value::Array(
        (0..n)
            .map(|_| {
                let mut r = json!({});
                if rng.chance(75) {
                    let peers = 1 + rng.below(2);
                    r[side] = Value::Array((0..peers).map(|_| peer(rng, ips)).collect());
                }
                if let Some(p) = ports(rng) {
                    r["ports"] = p;
                }
                r
            })
            .collect(),
    )
}

/// One random policy set (1–3 NetworkPolicies).
fn policy_set(rng: &mut Rng, ips: &BTreeMap<String, IpAddr>) -> Vec<Value> {
    let n = 1 + rng.below(3);
    (0..n)
        .map(|i| {
            let ns = rng.pick(&NAMESPACES).0;
            let mut spec = json!({"podSelector": selector(rng, false)});
            let (ingress, egress) = match rng.below(4) {
                0 => (true, false),
                1 => (false, true),
                _ => (true, true),
            };
            if ingress {
                spec["ingress"] = rules(rng, ips, "from");
            }
            if egress {
                spec["egress"] = rules(rng, ips, "to");
            }
            // Explicit policyTypes, or the defaults (Ingress, plus Egress when egress
            // rules are given).
            if egress && !ingress || rng.chance(50) {
                let mut types = Vec::new();
                if ingress {
                    types.push("Ingress");
                }
                if egress {
                    types.push("Egress");
                }
                spec["policyTypes"] = json!(types);
            }
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                   "metadata": {"name": format!("p{i}"), "namespace": ns}, "spec": spec})
        })
        .collect()
}

/// Probes every ordered pair (in parallel: pairs are independent flows) on one port;
/// (src, dst) → connected.
fn probe_all(
    netns: &BTreeMap<String, String>,
    ips: &BTreeMap<String, IpAddr>,
    port: u16,
    proto: Proto,
) -> BTreeMap<(String, String), bool> {
    let all = names();
    let pairs: Vec<(String, String)> = all
        .iter()
        .flat_map(|s| {
            all.iter()
                .filter(move |d| *d != s)
                .map(move |d| (s.clone(), d.clone()))
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = pairs
            .iter()
            .map(|(s, d)| {
                let (ns, target) = (&netns[s], SocketAddr::new(ips[d], port));
                scope.spawn(move || probe_from_netns(ns, target, proto, STEP).kind == ProbeKind::Connected)
            })
            .collect();
        pairs
            .iter()
            .cloned()
            .zip(handles.into_iter().map(|h| h.join().unwrap()))
            .collect()
    })
}

#[test]
fn explain_agrees_with_the_kernel_on_random_policies() {
    require_root!();
    let lab = Lab::up_text('a', &world_manifests());
    let status = lab.status();
    let url = status["controller"]["url"].as_str().unwrap().to_string();
    let mut netns = BTreeMap::new();
    let mut ips = BTreeMap::new();
    for key in names() {
        let p = &status["pods"][&key];
        netns.insert(key.clone(), p["netns"].as_str().unwrap().to_string());
        ips.insert(key.clone(), p["ip"].as_str().unwrap().parse::<IpAddr>().unwrap());
    }
    let first: u64 = std::env::var("WEFT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0004);
    let count = if std::env::var_os("WEFT_LONG").is_some() {
        60
    } else {
        8
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = ApiClient::new(&url);
    let mut previous = String::new();
    // (allowed, denied) flows over the run: a generator that never denies (or never
    // allows) would make the comparison vacuous.
    let mut totals = (0usize, 0usize);
    for seed in first..first + count {
        let mut rng = Rng(seed);
        let policies = policy_set(&mut rng, &ips);
        let text: String = policies
            .iter()
            .map(|p| serde_json::to_string(p).unwrap() + "\n---\n")
            .collect();
        if !previous.is_empty() {
            lab.delete("set.yaml", &previous);
        }
        lab.apply("set.yaml", &text);
        previous = text.clone();
        let mut disagreements = Vec::new();
        let mut flows = 0;
        for (port, proto, name) in PROBES {
            let observed = probe_all(&netns, &ips, port, proto);
            flows += observed.len();
            for ((from, to), connected) in &observed {
                let req = ExplainRequest {
                    from: from.clone(),
                    to: to.clone(),
                    port,
                    protocol: name.into(),
                };
                let explanation = runtime
                    .block_on(client.explain(&req))
                    .unwrap_or_else(|e| panic!("seed {seed}: explain {from} -> {to}: {e}"));
                let allowed = explanation.verdict == "allowed";
                if allowed {
                    totals.0 += 1;
                } else {
                    totals.1 += 1;
                }
                if allowed != *connected {
                    disagreements.push(format!(
                        "{from} -> {to}:{port}/{name}: explain says {} ({}), the probe {}",
                        explanation.verdict,
                        explanation.reason,
                        if *connected {
                            "connected"
                        } else {
                            "did not connect"
                        }
                    ));
                }
            }
        }
        assert!(
            disagreements.is_empty(),
            "seed {seed} (replay: WEFT_SEED={seed}): explain and the kernel disagree:\n{}\npolicies:\n{text}",
            disagreements.join("\n")
        );
        eprintln!(
            "seed {seed}: {} policies, explain == kernel on {flows} flows",
            policies.len()
        );
    }
    eprintln!(
        "{} flows allowed, {} denied, all as explained",
        totals.0, totals.1
    );
    assert!(
        totals.0 > 0 && totals.1 > 0,
        "the generated sets never allowed or never denied ({totals:?}); the generator is broken"
    );
}

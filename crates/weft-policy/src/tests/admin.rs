//! AdminNetworkPolicy / BaselineAdminNetworkPolicy cases on the x,y,z × a,b,c world,
//! in the style of the upstream policy-api conformance tests, and properties of the
//! stage order.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use proptest::prelude::*;
use weft_model::admin_policy::{AdminNetworkPolicy, BaselineAdminNetworkPolicy};

use super::*;

fn anp(name: &str, priority: i32, spec: serde_json::Value) -> AdminNetworkPolicy {
    let mut spec = spec;
    spec["priority"] = json!(priority);
    let p: AdminNetworkPolicy =
        serde_json::from_value(json!({"apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "AdminNetworkPolicy", "metadata": {"name": name}, "spec": spec}))
        .expect("valid ANP");
    p.validate(name).expect("valid ANP");
    p
}

fn banp(spec: serde_json::Value) -> BaselineAdminNetworkPolicy {
    let p: BaselineAdminNetworkPolicy =
        serde_json::from_value(json!({"apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "BaselineAdminNetworkPolicy", "metadata": {"name": "default"}, "spec": spec}))
        .expect("valid BANP");
    p.validate("default").expect("valid BANP");
    p
}

fn ns(name: &str) -> serde_json::Value {
    json!({"matchLabels": {"ns": name}})
}

#[test]
fn deny_beats_a_network_policy_allow() {
    let mut set = world(vec![np(
        "x",
        "allow-all",
        json!({"podSelector": {}, "ingress": [{}]}),
    )]);
    set.admin = vec![anp(
        "deny-y",
        10,
        json!({"subject": {"namespaces": ns("x")}, "ingress": [{"name": "no-y", "action": "Deny", "from": [{"namespaces": ns("y")}]}]}),
    )];
    // Rows y/* cannot reach columns x/*.
    let mut rows = ["........."; 9];
    for r in rows.iter_mut().skip(3).take(3) {
        *r = "XXX......";
    }
    expect(&set, 80, Protocol::Tcp, rows);
    let d = set.evaluate(&Flow {
        src: Endpoint::Pod(3),
        dst: Endpoint::Pod(0),
        port: 80,
        protocol: Protocol::Tcp,
    });
    assert_eq!(d.ingress.stage, Stage::AdminNetworkPolicy);
    let text = d.ingress.explain("Ingress", "x/a");
    assert!(
        text.contains("deny-y") && text.contains("no-y") && text.contains("Deny"),
        "{text}"
    );
}

#[test]
fn allow_beats_a_network_policy_deny_and_pass_defers_to_it() {
    let mut set = world(vec![np("x", "deny", json!({"podSelector": {}}))]);
    set.admin = vec![
        anp(
            "pass-z",
            5,
            json!({"subject": {"namespaces": ns("x")},
            "ingress": [{"action": "Pass", "from": [{"namespaces": ns("z")}]}]}),
        ),
        anp(
            "allow-all",
            20,
            json!({"subject": {"namespaces": ns("x")},
            "ingress": [{"action": "Allow", "from": [{"namespaces": {}}]}]}),
        ),
    ];
    // z passes (priority 5 first) to the NetworkPolicy, which denies; the rest are allowed.
    let mut rows = ["........."; 9];
    for r in rows.iter_mut().skip(6) {
        *r = "XXX......";
    }
    expect(&set, 80, Protocol::Tcp, rows);
    let d = set.evaluate(&Flow {
        src: Endpoint::Pod(6),
        dst: Endpoint::Pod(0),
        port: 80,
        protocol: Protocol::Tcp,
    });
    assert_eq!(d.ingress.stage, Stage::NetworkPolicy);
    assert_eq!(
        d.ingress.admin.as_ref().map(|r| r.action),
        Some(AdminAction::Pass)
    );
    assert!(d.ingress.explain("Ingress", "x/a").contains("Pass"));
}

#[test]
fn lower_priority_value_wins_whatever_the_list_order() {
    let mut set = world(vec![]);
    set.admin = vec![
        anp(
            "allow",
            2,
            json!({"subject": {"namespaces": {}}, "egress": [{"action": "Allow", "to": [{"namespaces": {}}]}]}),
        ),
        anp(
            "deny",
            1,
            json!({"subject": {"namespaces": {}}, "egress": [{"action": "Deny", "to": [{"namespaces": {}}]}]}),
        ),
    ];
    expect(&set, 80, Protocol::Tcp, ["XXXXXXXXX"; 9]);
    set.admin[1].spec.priority = 3;
    expect(&set, 80, Protocol::Tcp, ALL);
}

#[test]
fn ports_number_range_and_name() {
    let mut set = world(vec![]);
    set.admin = vec![anp(
        "ports",
        1,
        json!({"subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "a"}}}},
        "ingress": [{"action": "Deny", "from": [{"pods": {"namespaceSelector": ns("y"), "podSelector": {}}}],
                     "ports": [{"portNumber": {"protocol": "UDP", "port": 80}}, {"portRange": {"start": 81, "end": 90}}]},
                    {"action": "Deny", "from": [{"namespaces": ns("z")}], "ports": [{"namedPort": "serve-80-tcp"}]}]}),
    )];
    let col_a = |m: &[String]| -> Vec<usize> { (0..9).filter(|s| m[*s].as_bytes()[0] == b'X').collect() };
    assert_eq!(col_a(&matrix(&set, 80, Protocol::Udp)), vec![3, 4, 5]);
    assert_eq!(col_a(&matrix(&set, 81, Protocol::Tcp)), vec![3, 4, 5]);
    assert_eq!(col_a(&matrix(&set, 80, Protocol::Tcp)), vec![6, 7, 8]);
    assert_eq!(col_a(&matrix(&set, 81, Protocol::Udp)), Vec::<usize>::new());
}

#[test]
fn baseline_applies_only_where_no_network_policy_isolates() {
    let mut set = world(vec![np(
        "y",
        "allow-all",
        json!({"podSelector": {}, "ingress": [{}]}),
    )]);
    set.baseline = Some(banp(json!({"subject": {"namespaces": {}},
        "ingress": [{"name": "same-ns", "action": "Allow", "from": [{"namespaces": ns("x")}]},
                    {"name": "rest", "action": "Deny", "from": [{"namespaces": {}}]}]})));
    // x and z are not isolated: the baseline admits only x; y's NetworkPolicy admits all.
    let x_row = ".........";
    let other = "XXX...XXX";
    expect(
        &set,
        80,
        Protocol::Tcp,
        [x_row, x_row, x_row, other, other, other, other, other, other],
    );
    let d = set.evaluate(&Flow {
        src: Endpoint::Pod(6),
        dst: Endpoint::Pod(0),
        port: 80,
        protocol: Protocol::Tcp,
    });
    assert_eq!(d.ingress.stage, Stage::BaselineAdminNetworkPolicy);
    assert!(d.ingress.explain("Ingress", "x/a").contains("rest"));
}

#[test]
fn egress_networks_peer_matches_external_addresses() {
    let mut set = world(vec![]);
    set.admin = vec![anp(
        "no-out",
        1,
        json!({"subject": {"namespaces": ns("x")},
        "egress": [{"action": "Deny", "to": [{"networks": ["192.0.2.0/24"]}]}]}),
    )];
    let out = |ip: [u8; 4]| {
        set.evaluate(&Flow {
            src: Endpoint::Pod(0),
            dst: Endpoint::External(IpAddr::from(ip)),
            port: 443,
            protocol: Protocol::Tcp,
        })
        .allowed()
    };
    assert!(!out([192, 0, 2, 7]));
    assert!(out([198, 51, 100, 7]));
}

fn arb_selector() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(json!({})),
        prop::sample::select(vec!["x", "y", "z"]).prop_map(|n| json!({"matchLabels": {"ns": n}})),
    ]
}

proptest! {
    /// An Allow ANP only opens flows; adding, at the lowest priority value, an ANP that
    /// passes everything leaves NetworkPolicy alone to decide (the other ANPs are
    /// skipped); one that denies egress from its subject to its peers denies exactly
    /// those flows and changes no other verdict.
    #[test]
    fn pass_everything_is_neutral_and_deny_everything_is_absolute(
        subject in arb_selector(), peer in arb_selector(), port in 79u16..83,
    ) {
        let mut set = world(vec![np("x", "deny", json!({"podSelector": {}}))]);
        set.admin = vec![anp("a", 100, json!({"subject": {"namespaces": subject.clone()},
            "ingress": [{"action": "Allow", "from": [{"namespaces": peer.clone()}]}]}))];
        let before = matrix(&set, port, Protocol::Tcp);
        set.admin.push(anp("pass", 0, json!({"subject": {"namespaces": {}},
            "ingress": [{"action": "Pass", "from": [{"namespaces": {}}]}],
            "egress": [{"action": "Pass", "to": [{"namespaces": {}}]}]})));
        let after = matrix(&set, port, Protocol::Tcp);
        // Pass skips the Allow ANP too: the result is NetworkPolicy alone.
        let np_only = matrix(&world(vec![np("x", "deny", json!({"podSelector": {}}))]), port, Protocol::Tcp);
        prop_assert_eq!(&after, &np_only);
        // Wherever NetworkPolicy alone allows, the Allow ANP allows too.
        prop_assert!(before.iter().zip(&np_only).all(|(b, n)| b.bytes().zip(n.bytes()).all(|(b, n)| n != b'.' || b == b'.')));
        set.admin.push(anp("deny", 0, json!({"subject": {"namespaces": subject.clone()},
            "egress": [{"action": "Deny", "to": [{"namespaces": peer.clone()}]}]})));
        let denied = matrix(&set, port, Protocol::Tcp);
        // "deny" sorts before "pass" at the same priority: egress from its subject to its
        // peers is denied, every other cell is as before.
        let selector = |v: &serde_json::Value| -> LabelSelector { serde_json::from_value(v.clone()).expect("selector") };
        let (subject, peer) = (selector(&subject), selector(&peer));
        let in_ns = |sel: &LabelSelector, pod: usize| selector_matches(sel, &set.namespace_labels(&set.pods[pod].namespace));
        for (s, (d_row, a_row)) in denied.iter().zip(&after).enumerate() {
            for (d, (got, was)) in d_row.bytes().zip(a_row.bytes()).enumerate() {
                let want = if in_ns(&subject, s) && in_ns(&peer, d) { b'X' } else { was };
                prop_assert_eq!(got, want, "{} -> {}", s, d);
            }
        }
    }
}

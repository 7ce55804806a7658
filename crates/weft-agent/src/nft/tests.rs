//! Pure tests of the nftables renderer: structure, fingerprints, and a golden snapshot
//! of the whole document (`WEFT_UPDATE_SNAPSHOTS=1` rewrites it after a deliberate
//! change; review the diff).

use std::net::IpAddr;

use weft_model::ids::{MacAddr, Vni};
use weft_model::node::{
    L4Protocol, LocalInterface, NextHop, NodeBackend, NodeNetwork, NodeRoute, NodeService, NodeServicePort,
    NodeState, SessionAffinity, VtepPeer, vn_table, vtep_mac,
};

use super::*;
use crate::attachment::{Attachment, Attachments};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn iface(ns: &str, pod: &str, vni: u32, addr: &str) -> LocalInterface {
    LocalInterface {
        namespace: ns.into(),
        pod: pod.into(),
        pod_uid: String::new(),
        interface: "eth0".into(),
        network: format!("net{vni}"),
        table: vn_table(Vni(vni)),
        vni: Vni(vni),
        ip: ip(addr),
        prefix_len: 12,
        gateway: Some(ip("10.47.255.254")),
        mac: MacAddr::derived_from(pod),
        primary: true,
        floating_ips: Vec::new(),
    }
}

fn route(prefix: &str, next_hop: NextHop, network: &str, reply_only: bool) -> NodeRoute {
    NodeRoute {
        prefix: prefix.parse().unwrap(),
        next_hop,
        network: network.into(),
        reply_only,
        service_only: false,
    }
}

fn backend(addr: &str, port: u16, node: &str) -> NodeBackend {
    NodeBackend {
        ip: ip(addr),
        port,
        node: Some(node.into()),
        pod: None,
    }
}

fn port(
    protocol: L4Protocol,
    port: u16,
    node_port: Option<u16>,
    backends: Vec<NodeBackend>,
) -> NodeServicePort {
    NodeServicePort {
        name: String::new(),
        protocol,
        port,
        node_port,
        backends,
    }
}

fn svc(name: &str, vip: &str, affinity: SessionAffinity, ports: Vec<NodeServicePort>) -> NodeService {
    NodeService {
        namespace: "dev".into(),
        name: name.into(),
        service_type: "ClusterIP".into(),
        vip: Some(ip(vip)),
        network: "svc".into(),
        client_tables: vec![vn_table(Vni(1)), vn_table(Vni(3))],
        affinity,
        external_ips: vec![],
        ports,
    }
}

/// Node n1 with pod a (net1) and isolated pod c (net3); four services covering every
/// shape.
fn state() -> NodeState {
    let mut np = svc(
        "np",
        "10.96.0.13",
        SessionAffinity::None,
        vec![
            port(
                L4Protocol::Tcp,
                80,
                Some(30080),
                vec![backend("10.47.255.250", 80, "n2")],
            ),
            port(L4Protocol::Tcp, 81, Some(30081), vec![]),
        ],
    );
    np.service_type = "NodePort".into();
    np.external_ips = vec![ip("203.0.113.7")];
    np.client_tables = vec![vn_table(Vni(1))];
    NodeState {
        node: "n1".into(),
        revision: 9,
        underlay_ip: Some(ip("192.0.2.11")),
        vtep_mac: vtep_mac("n1"),
        peers: vec![VtepPeer {
            node: "n2".into(),
            underlay_ip: ip("192.0.2.12"),
            vtep_mac: vtep_mac("n2"),
        }],
        networks: vec![
            NodeNetwork {
                fq_name: "net1".into(),
                vni: Vni(1),
                table: vn_table(Vni(1)),
                gateway: Some(ip("10.47.255.254")),
                routes: vec![
                    route(
                        "10.47.255.248/32",
                        NextHop::Remote {
                            node: "n2".into(),
                            vni: Vni(3),
                        },
                        "net3",
                        true,
                    ),
                    route(
                        "10.47.255.249/32",
                        NextHop::Local {
                            interface: "iso/c/eth0".into(),
                        },
                        "net3",
                        true,
                    ),
                    route(
                        "10.47.255.252/32",
                        NextHop::Local {
                            interface: "default/a/eth0".into(),
                        },
                        "net1",
                        false,
                    ),
                ],
                outside: None,
                ip_fabric_forwarding: false,
                chain_guards: Vec::new(),
            },
            NodeNetwork {
                fq_name: "net3".into(),
                vni: Vni(3),
                table: vn_table(Vni(3)),
                gateway: Some(ip("10.47.255.254")),
                routes: vec![route(
                    "10.47.255.249/32",
                    NextHop::Local {
                        interface: "iso/c/eth0".into(),
                    },
                    "net3",
                    false,
                )],
                outside: None,
                ip_fabric_forwarding: false,
                chain_guards: Vec::new(),
            },
        ],
        interfaces: vec![
            iface("default", "a", 1, "10.47.255.252"),
            iface("iso", "c", 3, "10.47.255.249"),
        ],
        services: vec![
            svc(
                "web",
                "10.96.0.10",
                SessionAffinity::None,
                vec![port(
                    L4Protocol::Tcp,
                    80,
                    None,
                    vec![
                        backend("10.47.255.250", 8080, "n2"),
                        backend("10.47.255.252", 8080, "n1"),
                    ],
                )],
            ),
            svc(
                "aff",
                "10.96.0.11",
                SessionAffinity::ClientIp,
                vec![
                    port(
                        L4Protocol::Tcp,
                        80,
                        None,
                        vec![
                            backend("10.47.255.250", 80, "n2"),
                            backend("10.47.255.252", 9090, "n1"),
                        ],
                    ),
                    port(
                        L4Protocol::Udp,
                        53,
                        None,
                        vec![backend("10.47.255.250", 5353, "n2")],
                    ),
                ],
            ),
            svc(
                "empty",
                "10.96.0.12",
                SessionAffinity::None,
                vec![
                    port(L4Protocol::Tcp, 80, None, vec![]),
                    port(L4Protocol::Udp, 81, None, vec![]),
                ],
            ),
            np,
        ],
        service_routes: vec![],
        warnings: vec![],
        policies: vec![],
    }
}

fn attached() -> Attachments {
    [("default/a/eth0", "wefta"), ("iso/c/eth0", "weftc")]
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Attachment {
                    container_id: "cid".into(),
                    if_name: "eth0".into(),
                    host_if_name: v.into(),
                },
            )
        })
        .collect()
}

fn rendered() -> NftTable {
    let (table, warnings) = render(&state(), &attached());
    assert!(warnings.is_empty(), "{warnings:?}");
    table.expect("services need a table")
}

/// The rules of `chain`, with each lookup of a named set (see `incremental`) shown as
/// the anonymous set of its elements, as the renderer emitted it.
fn rules_of(t: &NftTable, chain: &str) -> Vec<Rule<'static>> {
    let sets: std::collections::BTreeMap<String, Vec<Expression<'static>>> = t
        .objects
        .iter()
        .filter_map(|o| match o {
            NfListObject::Set(s) => Some((
                format!("@{}", s.name),
                s.elem.as_ref().map(|e| e.to_vec()).unwrap_or_default(),
            )),
            _ => None,
        })
        .collect();
    t.objects
        .iter()
        .filter_map(|o| match o {
            NfListObject::Rule(r) if r.chain == chain => Some(r.clone()),
            _ => None,
        })
        .map(|mut r| {
            let mut expr = r.expr.into_owned();
            for statement in &mut expr {
                if let Statement::Match(m) = statement
                    && let Expression::String(name) = &m.right
                    && let Some(elements) = sets.get(name.as_ref())
                {
                    m.right = set(elements.iter().cloned().map(SetItem::Element).collect());
                }
            }
            r.expr = std::borrow::Cow::Owned(expr);
            r
        })
        .collect()
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn no_services_no_table() {
    let mut s = state();
    s.services.clear();
    for n in &mut s.networks {
        n.routes.retain(|r| !r.reply_only);
    }
    let (table, warnings) = render(&s, &attached());
    assert!(table.is_none());
    assert!(warnings.is_empty());
    assert!(!has_outside_services(&s));
    assert!(has_outside_services(&state()));
}

#[test]
fn document_replaces_the_table_atomically_and_carries_the_fingerprint() {
    let t = rendered();
    let doc = json(&t.document());
    assert!(
        doc.starts_with(
            r#"{"nftables":[{"add":{"table":{"family":"inet","name":"weft"}}},{"delete":{"table":{"family":"inet","name":"weft"}}},{"add":{"table":{"family":"inet","name":"weft"}}}"#
        ),
        "{doc}"
    );
    // Only weft's table is named anywhere.
    assert!(!doc.contains(r#""table":"filter""#) && !doc.contains(r#""name":"nat""#));
    let notrack = rules_of(&t, "raw-prerouting");
    assert_eq!(notrack.len(), 1);
    assert_eq!(notrack[0].comment, None);
    let fingerprint = rules_of(&t, FINGERPRINT_CHAIN);
    assert_eq!(fingerprint.len(), 1);
    assert_eq!(
        fingerprint[0].comment.as_deref(),
        Some(format!("{FINGERPRINT_PREFIX}{}", t.fingerprint).as_str())
    );
    assert_eq!(json(&notrack[0].expr), json(&rules_of(&t, "raw-output")[0].expr));
    assert!(t.to_json().contains(r#"{"notrack":null}"#), "{}", t.to_json());
    assert!(!t.to_json().contains(r#""notrack","#));
    // Same input, same fingerprint; a backend change, another one.
    assert_eq!(rendered().fingerprint, t.fingerprint);
    let mut s = state();
    s.services[0].ports[0].backends.pop();
    let (other, _) = render(&s, &attached());
    assert_ne!(other.unwrap().fingerprint, t.fingerprint);
    // The removal document only names the table.
    assert_eq!(
        json(&removal_document()),
        r#"{"nftables":[{"add":{"table":{"family":"inet","name":"weft"}}},{"delete":{"table":{"family":"inet","name":"weft"}}}]}"#
    );
    // The live listing's comment is found again.
    let listing = format!(
        r#"{{"nftables":[{{"metainfo":{{"version":"1.0.6"}}}},{{"table":{{"family":"inet","name":"weft","handle":3}}}},{{"rule":{{"family":"inet","table":"weft","chain":"raw-prerouting","handle":9,"comment":"{FINGERPRINT_PREFIX}{}","expr":[]}}}}]}}"#,
        t.fingerprint
    );
    assert_eq!(fingerprint_in(&listing), Some(t.fingerprint.clone()));
    assert_eq!(fingerprint_in(r#"{"nftables":[]}"#), None);
    assert_eq!(fingerprint_in("not json"), None);
}

#[test]
fn vip_chains_balance_only_for_client_pods() {
    let t = rendered();
    let web = rules_of(&t, "vip.dev.web.tcp.80");
    assert_eq!(
        web.len(),
        2,
        "client pods, then another cluster through the tunnel"
    );
    // Through the tunnel: only the backend on this node (n1).
    let tunnel = json(&web[1].expr);
    assert!(tunnel.contains(r#""right":"weft-vxlan""#), "{tunnel}");
    assert!(
        tunnel.contains(r#"{"dnat":{"addr":"10.47.255.252","family":"ip","port":8080}}"#),
        "{tunnel}"
    );
    assert!(!tunnel.contains("10.47.255.250"), "{tunnel}");
    let text = json(&web[0].expr);
    assert!(text.contains(r#"{"set":["wefta","weftc"]}"#), "{text}");
    assert!(text.contains(r#""numgen":{"mode":"random","mod":2}"#), "{text}");
    assert!(
        text.contains(r#"[0,{"concat":["10.47.255.250",8080]}]"#),
        "{text}"
    );
    assert!(
        text.contains(r#"[1,{"concat":["10.47.255.252",8080]}]"#),
        "{text}"
    );
    // ClientIP affinity hashes the source with a fixed seed.
    let aff = json(&rules_of(&t, "vip.dev.aff.tcp.80")[0].expr);
    assert!(
        aff.contains(r#""jhash":{"mod":2,"expr":{"payload":{"protocol":"ip","field":"saddr"}},"seed":"#),
        "{aff}"
    );
    // One backend: a plain dnat to address and port.
    let udp = json(&rules_of(&t, "vip.dev.aff.udp.53")[0].expr);
    assert!(
        udp.contains(r#"{"dnat":{"addr":"10.47.255.250","family":"ip","port":5353}}"#),
        "{udp}"
    );
    // The NodePort service is for net1's pods only.
    let np = json(&rules_of(&t, "vip.dev.np.tcp.80")[0].expr);
    assert!(np.contains(r#"{"set":["wefta"]}"#), "{np}");
    // Without an attached client on this node only the tunnel rule is left, and a
    // service without a local backend has no VIP chain at all.
    let mut atts = attached();
    atts.clear();
    let (t2, _) = render(&state(), &atts);
    let t2 = t2.unwrap();
    let web = rules_of(&t2, "vip.dev.web.tcp.80");
    assert_eq!(web.len(), 1);
    assert!(json(&web[0].expr).contains("weft-vxlan"));
    assert!(rules_of(&t2, "vip.dev.np.tcp.80").is_empty());
}

#[test]
fn dispatch_rejects_and_outside_traffic() {
    let t = rendered();
    let nat = rules_of(&t, "nat-prerouting");
    assert_eq!(nat.len(), 2, "VIP/external map and NodePort map");
    let by_address = json(&nat[0].expr);
    for entry in [
        r#"[{"concat":["10.96.0.10","tcp",80]},{"goto":{"target":"vip.dev.web.tcp.80"}}]"#,
        r#"[{"concat":["203.0.113.7","tcp",80]},{"goto":{"target":"out.dev.np.tcp.80"}}]"#,
    ] {
        assert!(by_address.contains(entry), "{entry} in {by_address}");
    }
    // Ports without backends are not dispatched.
    assert!(!by_address.contains("10.96.0.12"), "{by_address}");
    let node_ports = json(&nat[1].expr);
    assert!(
        node_ports.contains(r#"{"fib":{"result":"type","flags":["daddr"]}}"#),
        "{node_ports}"
    );
    assert!(
        node_ports.contains(r#"[{"concat":["tcp",30080]},{"goto":{"target":"out.dev.np.tcp.80"}}]"#),
        "{node_ports}"
    );
    // The outside chain translates the service's own client pods as for the VIP (no
    // mark: their table routes it), then marks the connection and balances.
    let out_rules = rules_of(&t, "out.dev.np.tcp.80");
    assert_eq!(out_rules.len(), 2);
    let clients = json(&out_rules[0].expr);
    assert!(
        clients.starts_with(r#"[{"match":{"left":{"meta":{"key":"iifname"}},"right":{"set":["wefta"]}"#)
            && clients.contains(r#"{"dnat":{"addr":"10.47.255.250""#)
            && !clients.contains("mangle"),
        "{clients}"
    );
    let out = json(&out_rules[1].expr);
    assert!(
        out.starts_with(
            r#"[{"mangle":{"key":{"ct":{"key":"mark"}},"value":{"|":[{"ct":{"key":"mark"}},16777216]}}}"#
        ),
        "{out}"
    );
    // Rejects: TCP reset first, then ICMP port unreachable, for VIPs and NodePorts.
    let filter: Vec<String> = rules_of(&t, "filter-prerouting")
        .iter()
        .map(|r| json(&r.expr))
        .collect();
    assert_eq!(filter.len(), 7, "{filter:#?}");
    // Another cluster's VIP connections (local backends of web and aff): marked so the
    // DNATed packets, which lost their VNI, are routed by the backend's table.
    assert!(
        filter[4].contains(&format!(r#""value":{MARK_TO_POD}"#)),
        "{}",
        filter[4]
    );
    let filter = [&filter[..4], &filter[5..]].concat();
    assert!(filter[0].contains(r#"{"reject":{"type":"tcp reset"}}"#) && filter[0].contains("10.96.0.12"));
    assert!(!filter[0].contains(r#""udp",81"#));
    assert!(filter[1].contains(r#"{"reject":{"type":"icmpx","expr":"port-unreachable"}}"#));
    assert!(
        filter[1].contains(r#"{"concat":["10.96.0.12","udp",81]}"#),
        "{}",
        filter[1]
    );
    assert!(filter[2].contains(r#"{"concat":["tcp",30081]}"#) && filter[2].contains("tcp reset"));
    assert!(
        filter[4].contains(r#"{"ct":{"key":"direction"}},"right":"original""#),
        "{}",
        filter[4]
    );
    assert!(filter[4].contains(&format!(r#""value":{MARK_TO_BACKEND}"#)));
    assert!(filter[5].contains(&format!(r#""value":{MARK_REPLY}"#)));
    // SNAT to the node's service address on the way into the tunnel.
    let snat = json(&rules_of(&t, "nat-postrouting")[0].expr);
    assert!(
        snat.contains(r#"{"snat":{"addr":"169.254.2.11","family":"ip"}}"#),
        "{snat}"
    );
    assert!(snat.contains(r#""right":"weft-vxlan""#), "{snat}");
    // Marks are cleared before the tunnel copies them onto the outer packet.
    let clear = json(&rules_of(&t, "filter-postrouting")[0].expr);
    assert!(
        clear.contains(&format!(r#"{{"set":[{MARK_TO_BACKEND},{MARK_REPLY}]}}"#)),
        "{clear}"
    );
    assert!(
        clear.ends_with(r#"{"mangle":{"key":{"meta":{"key":"mark"}},"value":0}}]"#),
        "{clear}"
    );
    // Hairpin: a pod that is its own backend gets its gateway as the source.
    let hairpin = json(&rules_of(&t, "nat-postrouting")[1].expr);
    assert!(hairpin.contains(r#""right":"dnat","op":"in""#), "{hairpin}");
    assert!(
        hairpin.contains(r#"[{"concat":["wefta","10.47.255.252"]},"10.47.255.254"]"#),
        "{hairpin}"
    );
}

#[test]
fn reply_only_routes_refuse_new_connections() {
    let t = rendered();
    let fwd = json(&rules_of(&t, "filter-forward")[0].expr);
    assert!(
        fwd.contains(r#"{"match":{"left":{"ct":{"key":"state"}},"right":"new","op":"in"}}"#),
        "{fwd}"
    );
    assert!(
        fwd.contains(r#"["wefta",{"jump":{"target":"reply-only-10001"}}]"#),
        "{fwd}"
    );
    assert!(!fwd.contains("weftc"), "net3 has no reply-only route: {fwd}");
    let chain = json(&rules_of(&t, "reply-only-10001")[0].expr);
    assert!(
        chain.contains(r#"{"set":["10.47.255.248","10.47.255.249"]}"#),
        "{chain}"
    );
    assert!(
        chain.contains(r#"{"reject":{"type":"icmpx","expr":"admin-prohibited"}}"#),
        "{chain}"
    );
}

#[test]
fn ipv6_and_conflicts_are_warned_not_rendered() {
    let mut s = state();
    s.services[0].vip = Some(ip("fd00::10"));
    // A second service claiming np's external IP and port.
    let mut dup = s.services[3].clone();
    dup.name = "np2".into();
    dup.ports.truncate(1);
    dup.ports[0].node_port = None;
    s.services.push(dup);
    let (t, warnings) = render(&s, &attached());
    let t = t.unwrap();
    assert!(warnings.iter().any(|w| w.contains("IPv6 VIP")), "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("already taken")),
        "{warnings:?}"
    );
    let by_address = json(&rules_of(&t, "nat-prerouting")[0].expr);
    assert!(!by_address.contains("fd00"));
    assert!(by_address.contains("out.dev.np.tcp.80") && !by_address.contains("out.dev.np2.tcp.80"));
}

#[test]
fn snapshot_of_the_whole_document() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/nft/snapshot.json");
    let text = rendered().to_json_pretty() + "\n";
    if std::env::var_os("WEFT_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with WEFT_UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert!(
        want == text,
        "rendered table differs from {}; if intended, rerun with WEFT_UPDATE_SNAPSHOTS=1 and review the diff\n{text}",
        path.display()
    );
}

fn policy_rule(peers: Option<&[&str]>, ports: Option<&[(L4Protocol, u16, u16)]>) -> PolicyRule {
    PolicyRule {
        peers: peers.map(|ps| ps.iter().map(|p| p.parse().unwrap()).collect()),
        ports: ports.map(|ps| {
            ps.iter()
                .map(|(protocol, first, last)| weft_model::node::PolicyPort {
                    protocol: *protocol,
                    first: *first,
                    last: *last,
                })
                .collect()
        }),
    }
}

#[test]
fn policies_render_forward_dispatch_and_endpoint_chains() {
    let mut s = state();
    s.services.clear();
    for n in &mut s.networks {
        n.routes.retain(|r| !r.reply_only);
    }
    s.policies = vec![
        weft_model::node::EndpointPolicy {
            interface: "default/a/eth0".into(),
            ip: ip("10.1.0.2"),
            ingress: Some(vec![policy_rule(
                Some(&["10.1.0.3/32", "10.2.0.0/16"]),
                Some(&[(L4Protocol::Tcp, 80, 80)]),
            )]),
            egress: Some(vec![]),
            ..weft_model::node::EndpointPolicy::open(String::new(), ip("0.0.0.0"))
        },
        weft_model::node::EndpointPolicy {
            interface: "iso/c/eth0".into(),
            ip: ip("10.9.0.2"),
            ingress: None,
            egress: Some(vec![policy_rule(None, None)]),
            ..weft_model::node::EndpointPolicy::open(String::new(), ip("0.0.0.0"))
        },
    ];
    let (table, warnings) = render(&s, &attached());
    assert!(warnings.is_empty(), "{warnings:?}");
    let table = table.expect("policies need a table");
    let forward = json(&rules_of(&table, "filter-forward"));
    assert!(forward.contains("established"), "{forward}");
    assert!(forward.contains(r#""wefta""#) && forward.contains("pol-out-0") && forward.contains("pol-in-0"));
    assert!(forward.contains("pol-out-1") && !forward.contains("pol-in-1"));
    // Ingress: one concatenated lookup, then the rejects.
    let ingress = json(&rules_of(&table, "pol-in-0"));
    assert!(
        ingress.contains("saddr") && ingress.contains(r#""len":16"#),
        "{ingress}"
    );
    assert_eq!(rules_of(&table, "pol-in-0").len(), 3);
    // Egress deny-all: only the rejects.
    assert_eq!(rules_of(&table, "pol-out-0").len(), 2);
    // Allow-all egress: one return.
    assert_eq!(
        json(&rules_of(&table, "pol-out-1")),
        json(&vec![Rule {
            family: nftables::types::NfFamily::INet,
            table: TABLE.into(),
            chain: "pol-out-1".into(),
            expr: std::borrow::Cow::Owned(vec![Statement::Return(None)]),
            ..Default::default()
        }])
    );
}

#[test]
fn policy_sets_are_disjoint_and_decide_like_the_rules() {
    let rules = vec![
        policy_rule(Some(&["10.0.0.0/24"]), Some(&[(L4Protocol::Tcp, 80, 90)])),
        policy_rule(
            Some(&["10.0.0.5/32", "10.1.0.0/16"]),
            Some(&[(L4Protocol::Tcp, 85, 100)]),
        ),
        policy_rule(
            Some(&["10.0.0.7/32"]),
            Some(&[(L4Protocol::Udp, 53, 53), (L4Protocol::Tcp, 1, 65535)]),
        ),
        policy_rule(Some(&["192.168.0.0/24"]), None),
        policy_rule(Some(&["fd00::/8"]), None),
    ];
    let sets = policy_sets(&rules);
    assert!(!sets.all);
    for (i, a) in sets.ports.iter().enumerate() {
        for b in &sets.ports[i + 1..] {
            let overlap =
                a.1 == b.1 && a.2 <= b.3 && b.2 <= a.3 && (a.0.contains(&b.0) || b.0.contains(&a.0));
            assert!(!overlap, "{a:?} overlaps {b:?}");
        }
    }
    for addr in [
        "10.0.0.1",
        "10.0.0.5",
        "10.0.0.7",
        "10.1.2.3",
        "10.2.0.1",
        "192.168.0.9",
    ] {
        let a: std::net::Ipv4Addr = addr.parse().unwrap();
        for proto in [L4Protocol::Tcp, L4Protocol::Udp] {
            for port in [1, 53, 79, 80, 84, 85, 90, 91, 100, 101, 65535] {
                assert_eq!(
                    sets.allows(a, proto, port),
                    weft_model::node::direction_allows(Some(&rules), IpAddr::V4(a), proto, port),
                    "{addr} {proto:?} {port}"
                );
            }
        }
    }
    assert!(policy_sets(&[policy_rule(None, None)]).all);
}

fn admin_rule(action: AdminVerdict, peers: &[&str], ports: Option<&[(L4Protocol, u16, u16)]>) -> AdminRule {
    AdminRule {
        action,
        rule: policy_rule(Some(peers), ports),
    }
}

#[test]
fn admin_tiers_render_in_order_with_pass_and_baseline() {
    let mut s = state();
    s.services.clear();
    for n in &mut s.networks {
        n.routes.retain(|r| !r.reply_only);
    }
    let mut a = weft_model::node::EndpointPolicy::open("default/a/eth0".into(), ip("10.1.0.2"));
    // Two Deny rules (one tier), a Pass, an Allow; NetworkPolicy allows 10.1.0.3 on 80.
    a.admin_ingress = vec![
        admin_rule(AdminVerdict::Drop, &["10.2.0.0/16"], None),
        admin_rule(
            AdminVerdict::Drop,
            &["10.3.0.5/32"],
            Some(&[(L4Protocol::Tcp, 22, 22)]),
        ),
        admin_rule(AdminVerdict::Pass, &["10.1.0.0/24"], None),
        admin_rule(AdminVerdict::Accept, &["0.0.0.0/0"], None),
    ];
    a.ingress = Some(vec![policy_rule(
        Some(&["10.1.0.3/32"]),
        Some(&[(L4Protocol::Tcp, 80, 80)]),
    )]);
    // Egress: no NetworkPolicy, a baseline that denies 10.9.0.0/16.
    a.baseline_egress = vec![admin_rule(AdminVerdict::Drop, &["10.9.0.0/16"], None)];
    s.policies = vec![a];
    let (table, warnings) = render(&s, &attached());
    assert!(warnings.is_empty(), "{warnings:?}");
    let table = table.expect("policies need a table");
    let chain_in = json(&rules_of(&table, "pol-in-0"));
    // Deny tier (two lookups), pass tier (one), accept tier (one), then on to the
    // NetworkPolicy stage.
    assert_eq!(rules_of(&table, "pol-in-0").len(), 5, "{chain_in}");
    let gotos: Vec<usize> = ["pol-reject", "pol-in-0-np"]
        .iter()
        .map(|c| chain_in.matches(&format!(r#""target":"{c}""#)).count())
        .collect();
    assert_eq!(gotos, vec![2, 2], "{chain_in}");
    assert_eq!(chain_in.matches(r#"{"return":null}"#).count(), 1, "{chain_in}");
    // The NetworkPolicy stage: one lookup, two rejects.
    assert_eq!(rules_of(&table, "pol-in-0-np").len(), 3);
    // Egress: the baseline stage directly (no ANP rules): a drop tier, then return.
    let out = json(&rules_of(&table, "pol-out-0"));
    assert_eq!(rules_of(&table, "pol-out-0").len(), 2, "{out}");
    assert!(out.contains("pol-reject") && out.contains("daddr"), "{out}");
    assert_eq!(rules_of(&table, "pol-reject").len(), 2);
    let forward = json(&rules_of(&table, "filter-forward"));
    assert!(
        forward.contains("pol-out-0") && forward.contains("pol-in-0"),
        "{forward}"
    );
}

/// `state()` with net1 letting traffic out (`fabric_snat` as given) and default/a
/// holding `fips`.
fn outside_state(fabric_snat: bool, fips: &[&str]) -> NodeState {
    let mut s = state();
    s.networks[0].outside = Some(weft_model::node::Outside {
        cluster_subnets: vec!["10.32.0.0/12".parse().unwrap()],
        fabric_snat,
    });
    let a = s.interfaces.iter_mut().find(|i| i.pod == "a").unwrap();
    a.floating_ips = fips.iter().map(|f| ip(f)).collect();
    s
}

#[test]
fn a_floating_ip_is_a_one_to_one_nat_in_both_directions() {
    let (t, warnings) = render(&outside_state(false, &["198.51.100.5"]), &attached());
    assert!(warnings.is_empty(), "{warnings:?}");
    let t = t.unwrap();
    let pre = rules_of(&t, "nat-prerouting")
        .iter()
        .map(|r| json(&r.expr))
        .collect::<Vec<_>>()
        .join("\n");
    let dnat = pre
        .lines()
        .find(|r| r.contains("dnat") && r.contains("198.51.100.5"))
        .unwrap_or_else(|| panic!("{pre}"));
    assert!(
        dnat.contains("10.47.255.252") && dnat.contains(r#""right":"weft*""#),
        "{dnat}"
    );
    let post = rules_of(&t, "nat-postrouting")
        .iter()
        .map(|r| json(&r.expr))
        .collect::<Vec<_>>()
        .join("\n");
    let snat = post
        .lines()
        .find(|r| r.contains("snat") && r.contains("198.51.100.5"))
        .unwrap_or_else(|| panic!("{post}"));
    assert!(snat.contains("10.47.255.252"), "{snat}");
    assert!(
        !post.contains("56000"),
        "no fabric SNAT without the annotation: {post}"
    );
    let filter = rules_of(&t, "filter-prerouting")
        .iter()
        .map(|r| json(&r.expr))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(filter.contains(&format!(r#""value":{MARK_TO_POD}"#)), "{filter}");
}

#[test]
fn fabric_snat_uses_the_node_address_and_tf_port_pools_and_fips_win() {
    let (t, _) = render(&outside_state(true, &[]), &attached());
    let t = t.unwrap();
    let post = rules_of(&t, "nat-postrouting")
        .iter()
        .map(|r| json(&r.expr))
        .collect::<Vec<_>>();
    let tcp = post
        .iter()
        .find(|r| r.contains("\"tcp\"") && r.contains("snat"))
        .expect("tcp snat");
    assert!(
        tcp.contains(r#""addr":"192.0.2.11""#) && tcp.contains(r#"{"range":[56000,57023]}"#),
        "{tcp}"
    );
    assert!(
        tcp.contains("10.47.255.252") && tcp.contains(r#""right":"weft*","op":"!=""#),
        "{tcp}"
    );
    assert!(
        post.iter()
            .any(|r| r.contains(r#"{"range":[57024,58047]}"#) && r.contains("\"udp\""))
    );
    // With a floating IP the pod leaves as its FIP, not as the node.
    let (t, _) = render(&outside_state(true, &["198.51.100.5"]), &attached());
    let post = rules_of(&t.unwrap(), "nat-postrouting")
        .iter()
        .map(|r| json(&r.expr))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!post.contains("56000"), "{post}");
}

#[test]
fn pods_without_a_way_out_are_refused_where_only_fip_pods_may_leave() {
    let mut s = outside_state(false, &[]);
    // iso/c's table lets traffic out, but c has no FIP and the network no fabric SNAT.
    s.networks[1].outside = s.networks[0].outside.clone();
    let (t, _) = render(&s, &attached());
    let fwd = rules_of(&t.unwrap(), "filter-forward")
        .iter()
        .map(|r| json(&r.expr))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        fwd.contains("10.47.255.249") && fwd.contains("admin-prohibited"),
        "{fwd}"
    );
}

#[test]
fn ip_fabric_forwarding_pods_leave_un_natted_and_are_not_confined() {
    let mut s = outside_state(false, &[]);
    s.networks[0].ip_fabric_forwarding = true;
    let (t, _) = render(&s, &attached());
    let t = t.unwrap();
    let fwd = rules_of(&t, "filter-forward")
        .iter()
        .map(|r| json(&r.expr))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !(fwd.contains("10.47.255.252") && fwd.contains("admin-prohibited")),
        "{fwd}"
    );
    let post = rules_of(&t, "nat-postrouting")
        .iter()
        .map(|r| json(&r.expr))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !post.contains("56000") && !post.contains("192.0.2.11"),
        "no SNAT to the node for the fabric pod: {post}"
    );
    // Without the flag the same pod is confined.
    s.networks[0].ip_fabric_forwarding = false;
    let (t, _) = render(&s, &attached());
    let fwd = rules_of(&t.unwrap(), "filter-forward")
        .iter()
        .map(|r| json(&r.expr))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        fwd.contains("10.47.255.252") && fwd.contains("admin-prohibited"),
        "{fwd}"
    );
}

/// `state()` without services or reply-only routes (nothing else needs a table), with
/// chain guards on net1 (table 10001, veth wefta).
fn guarded_state(guards: Vec<weft_model::ChainGuard>) -> NodeState {
    let mut s = state();
    s.services.clear();
    for n in &mut s.networks {
        n.routes.retain(|r| !r.reply_only);
    }
    s.networks[0].chain_guards = guards;
    s
}

fn guard(destinations: &[&str], ports: Vec<weft_model::node::PolicyPort>) -> weft_model::ChainGuard {
    weft_model::ChainGuard {
        chain: "default/fw".into(),
        destinations: destinations.iter().map(|d| d.parse().unwrap()).collect(),
        ports,
    }
}

fn pport(protocol: L4Protocol, first: u16, last: u16) -> weft_model::node::PolicyPort {
    weft_model::node::PolicyPort {
        protocol,
        first,
        last,
    }
}

fn chain_names(t: &NftTable) -> Vec<String> {
    t.objects
        .iter()
        .filter_map(|o| match o {
            NfListObject::Chain(c) => Some(c.name.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn chain_guard_with_ports_returns_on_its_ports_and_rejects_the_rest() {
    let s = guarded_state(vec![guard(
        &["10.20.0.2/32", "10.30.0.0/24"],
        vec![
            pport(L4Protocol::Tcp, 443, 443),
            pport(L4Protocol::Udp, 5000, 5010),
        ],
    )]);
    let (table, warnings) = render(&s, &attached());
    assert!(warnings.is_empty(), "{warnings:?}");
    let table = table.expect("a chain guard with ports needs a table");
    assert!(
        chain_names(&table).contains(&"chain-guard-10001-0".to_string()),
        "{:?}",
        chain_names(&table)
    );
    let rules = rules_of(&table, "chain-guard-10001-0");
    assert_eq!(rules.len(), 4, "{}", json(&rules));
    let tcp = json(&rules[0].expr);
    assert!(
        tcp.contains(r#""right":"tcp""#)
            && tcp.contains(r#""right":443"#)
            && tcp.contains(r#"{"return":null}"#),
        "{tcp}"
    );
    assert!(tcp.contains(r#""field":"dport""#), "{tcp}");
    let udp = json(&rules[1].expr);
    assert!(
        udp.contains(r#""right":"udp""#)
            && udp.contains(r#"{"range":[5000,5010]}"#)
            && udp.contains(r#"{"return":null}"#),
        "{udp}"
    );
    let reset = json(&rules[2].expr);
    assert!(
        reset.contains(r#""right":"tcp""#) && reset.contains("tcp reset"),
        "{reset}"
    );
    let other = json(&rules[3].expr);
    assert!(
        other.contains(r#"{"reject":{"type":"icmpx","expr":"admin-prohibited"}}"#),
        "{other}"
    );
    assert!(!other.contains("return"));
    // filter-forward: new connections from net1's veths to the far side jump to it.
    let forward = rules_of(&table, "filter-forward");
    let jumps: Vec<String> = forward
        .iter()
        .map(|r| json(&r.expr))
        .filter(|e| e.contains("chain-guard-10001-0"))
        .collect();
    assert_eq!(jumps.len(), 1, "{}", json(&forward));
    let jump = &jumps[0];
    assert!(
        jump.contains(r#"{"match":{"left":{"ct":{"key":"state"}},"right":"new","op":"in"}}"#),
        "{jump}"
    );
    assert!(
        jump.contains(r#""iifname""#) && jump.contains(r#"{"set":["wefta"]}"#),
        "{jump}"
    );
    assert!(!jump.contains("weftc"), "net3's pod is not guarded: {jump}");
    assert!(jump.contains(r#""field":"daddr""#), "{jump}");
    assert!(jump.contains(r#""10.20.0.2""#), "{jump}");
    assert!(
        jump.contains(r#"{"prefix":{"addr":"10.30.0.0","len":24}}"#),
        "{jump}"
    );
    assert!(
        jump.contains(r#"{"jump":{"target":"chain-guard-10001-0"}}"#),
        "{jump}"
    );
    // The document is accepted by the set namer (elements in named sets).
    assert!(
        table
            .objects
            .iter()
            .any(|o| matches!(o, NfListObject::Set(s) if s.name.starts_with("filter-forward."))),
        "the guard's sets are named"
    );
}

#[test]
fn chain_guard_without_ports_renders_nothing() {
    // All traffic: no guard chain, and nothing else needs a table.
    let s = guarded_state(vec![guard(&["10.20.0.2/32"], vec![])]);
    let (table, warnings) = render(&s, &attached());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(table.is_none(), "{:?}", table.map(|t| chain_names(&t)));
    // Next to a guard with ports, it keeps its index but gets no chain.
    let s = guarded_state(vec![
        guard(&["10.20.0.2/32"], vec![]),
        guard(&["10.20.0.3/32"], vec![pport(L4Protocol::Sctp, 9, 9)]),
    ]);
    let table = render(&s, &attached()).0.expect("table");
    let names = chain_names(&table);
    assert!(!names.contains(&"chain-guard-10001-0".to_string()), "{names:?}");
    assert!(names.contains(&"chain-guard-10001-1".to_string()), "{names:?}");
    let forward = json(&rules_of(&table, "filter-forward"));
    assert!(
        forward.contains(r#""10.20.0.3""#) && !forward.contains(r#""10.20.0.2""#),
        "{forward}"
    );
    assert!(json(&rules_of(&table, "chain-guard-10001-1")[0].expr).contains(r#""right":"sctp""#));
}

#[test]
fn chain_guard_alone_makes_a_table() {
    // Before guards, such a state rendered no table at all.
    let s = guarded_state(vec![guard(
        &["10.20.0.2/32"],
        vec![pport(L4Protocol::Tcp, 22, 22)],
    )]);
    assert!(s.services.is_empty() && s.policies.is_empty());
    let (table, _) = render(&s, &attached());
    let table = table.expect("a guard alone needs the table");
    assert!(chain_names(&table).contains(&"chain-guard-10001-0".to_string()));
    // The same state without the guard: no table.
    assert!(render(&guarded_state(vec![]), &attached()).0.is_none());
}

#[test]
fn chain_guard_of_a_table_without_local_veths_is_skipped() {
    let mut s = guarded_state(vec![]);
    // net3's pod is not attached: nothing enters from its table here.
    s.networks[1].chain_guards = vec![guard(&["10.20.0.2/32"], vec![pport(L4Protocol::Tcp, 22, 22)])];
    let only_a: Attachments = attached()
        .into_iter()
        .filter(|(k, _)| k == "default/a/eth0")
        .collect();
    let (table, warnings) = render(&s, &only_a);
    assert!(warnings.is_empty(), "{warnings:?}");
    if let Some(table) = table {
        assert!(
            !chain_names(&table).iter().any(|c| c.starts_with("chain-guard-")),
            "{:?}",
            chain_names(&table)
        );
        assert!(!json(&rules_of(&table, "filter-forward")).contains("chain-guard"));
    }
    // Attached, it is guarded.
    let table = render(&s, &attached()).0.expect("table");
    let forward = json(&rules_of(&table, "filter-forward"));
    assert!(
        forward.contains("chain-guard-10003-0") && forward.contains(r#""weftc""#),
        "{forward}"
    );
}

#[test]
fn chain_guard_changes_change_the_fingerprint() {
    let a = render(
        &guarded_state(vec![guard(
            &["10.20.0.2/32"],
            vec![pport(L4Protocol::Tcp, 22, 22)],
        )]),
        &attached(),
    )
    .0
    .unwrap();
    let b = render(
        &guarded_state(vec![guard(
            &["10.20.0.2/32"],
            vec![pport(L4Protocol::Tcp, 23, 23)],
        )]),
        &attached(),
    )
    .0
    .unwrap();
    assert_ne!(a.fingerprint, b.fingerprint);
}

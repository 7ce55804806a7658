use std::net::IpAddr;

use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use weft_model::{MacAddr, NetworkKind, Vni};

use super::*;

const DEFAULT_POD: &str = "default-domain:k8s-default:k8s-default-pod-network";
const DEFAULT_SVC: &str = "default-domain:k8s-default:k8s-default-service-network";
const ISO_POD: &str = "default-domain:k8s-iso:k8s-iso-pod-network";
const ISO_SVC: &str = "default-domain:k8s-iso:k8s-iso-service-network";

fn network(fq: &str, vni: u32, connected: &[&str]) -> VirtualNetworkRecord {
    let name = short_name(fq).to_string();
    VirtualNetworkRecord {
        fq_name: fq.to_string(),
        name: name.clone(),
        project: "p".into(),
        namespace: "default".into(),
        kind: NetworkKind::Pod,
        ipam: "k8s-pod-ipam".into(),
        subnets: vec!["10.32.0.0/12".parse().unwrap()],
        gateway: Some("10.47.255.254".parse().unwrap()),
        vni: Vni(vni),
        routing_instance: format!("{fq}:{name}"),
        import_targets: vec![],
        export_targets: vec![],
        connected_networks: connected.iter().map(|s| s.to_string()).collect(),
        ip_fabric_forwarding: false,
        origin: "cluster".into(),
    }
}

fn iface(ns: &str, pod: &str, node: Option<&str>, network: &str, ip: &str) -> InterfaceAttachment {
    InterfaceAttachment {
        namespace: ns.into(),
        pod: pod.into(),
        pod_uid: String::new(),
        node: node.map(str::to_string),
        interface: "eth0".into(),
        network: network.into(),
        ip: ip.parse().unwrap(),
        prefix_len: 12,
        gateway: Some("10.47.255.254".parse().unwrap()),
        mac: MacAddr::derived_from(&format!("{ns}/{pod}/eth0")),
        primary: true,
    }
}

/// A Kubernetes Node with the given (type, address) pairs (shared by the crate's tests).
pub(crate) fn k8s_node(name: &str, addresses: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        status: Some(NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// TF's networks for a cluster with one isolated namespace `iso`.
fn isolation_networks() -> Vec<VirtualNetworkRecord> {
    vec![
        network(DEFAULT_POD, 1, &[DEFAULT_SVC, IP_FABRIC_NETWORK]),
        network(DEFAULT_SVC, 2, &[DEFAULT_POD, ISO_POD, IP_FABRIC_NETWORK]),
        network(ISO_POD, 3, &[ISO_SVC, DEFAULT_SVC, IP_FABRIC_NETWORK]),
        network(ISO_SVC, 4, &[ISO_POD, IP_FABRIC_NETWORK]),
    ]
}

fn two_nodes() -> Vec<Node> {
    vec![
        k8s_node("node-1", &[("Hostname", "node-1"), ("InternalIP", "192.0.2.11")]),
        k8s_node(
            "node-2",
            &[("InternalIP", "2001:db8::12"), ("InternalIP", "192.0.2.12")],
        ),
    ]
}

fn prefixes(n: &NodeNetwork) -> Vec<String> {
    n.routes.iter().map(|r| r.prefix.to_string()).collect()
}

fn table<'a>(s: &'a NodeState, fq: &str) -> &'a NodeNetwork {
    s.networks
        .iter()
        .find(|n| n.fq_name == fq)
        .unwrap_or_else(|| panic!("no table for {fq} in {s:#?}"))
}

#[test]
fn isolation_scenario_keeps_isolated_pods_in_their_own_table() {
    let interfaces = vec![
        // `default` and the non-isolated `dev` share the default pod network.
        iface("default", "a", Some("node-1"), DEFAULT_POD, "10.47.255.252"),
        iface("dev", "b", Some("node-2"), DEFAULT_POD, "10.47.255.250"),
        // The isolated namespace has its own.
        iface("iso", "c", Some("node-1"), ISO_POD, "10.47.255.249"),
        iface("iso", "d", Some("node-2"), ISO_POD, "10.47.255.248"),
    ];
    let s = compile_node_state("node-1", 7, &isolation_networks(), &interfaces, &two_nodes());
    assert_eq!(s.node, "node-1");
    assert_eq!(s.revision, 7);
    assert_eq!(s.underlay_ip, Some("192.0.2.11".parse().unwrap()));
    assert_eq!(s.vtep_mac, vtep_mac("node-1"));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    // Only the networks with a local pod: default pod (VNI 1) and iso pod (VNI 3).
    let names: Vec<&str> = s.networks.iter().map(|n| n.fq_name.as_str()).collect();
    assert_eq!(names, vec![DEFAULT_POD, ISO_POD]);

    let default = table(&s, DEFAULT_POD);
    assert_eq!(default.table, 10_001);
    assert_eq!(default.gateway, Some("10.47.255.254".parse().unwrap()));
    assert_eq!(prefixes(default), vec!["10.47.255.250/32", "10.47.255.252/32"]);
    assert_eq!(
        default.routes[0].next_hop,
        NextHop::Remote {
            node: "node-2".into(),
            vni: Vni(1)
        }
    );
    assert_eq!(
        default.routes[1].next_hop,
        NextHop::Local {
            interface: "default/a/eth0".into()
        }
    );

    // The isolated table holds only the isolated namespace's pods (its service network
    // and the default service network have no interfaces: VIPs are not endpoints yet).
    let iso = table(&s, ISO_POD);
    assert_eq!(iso.table, 10_003);
    assert_eq!(prefixes(iso), vec!["10.47.255.248/32", "10.47.255.249/32"]);
    assert!(iso.routes.iter().all(|r| r.network == ISO_POD));
    assert_eq!(
        iso.routes[0].next_hop,
        NextHop::Remote {
            node: "node-2".into(),
            vni: Vni(3)
        }
    );

    // node-2 is the only peer, reached on its IPv4 InternalIP although IPv6 came first.
    assert_eq!(
        s.peers,
        vec![VtepPeer {
            node: "node-2".into(),
            underlay_ip: "192.0.2.12".parse().unwrap(),
            vtep_mac: vtep_mac("node-2"),
        }]
    );
    let keys: Vec<String> = s.interfaces.iter().map(LocalInterface::key).collect();
    assert_eq!(keys, vec!["default/a/eth0", "iso/c/eth0"]);
    assert_eq!(s.interfaces[1].table, 10_003);
    assert_eq!(s.interfaces[1].vni, Vni(3));
}

#[test]
fn two_nodes_see_each_other_symmetrically() {
    let interfaces = vec![
        iface("default", "a", Some("node-1"), DEFAULT_POD, "10.47.255.252"),
        iface("default", "b", Some("node-2"), DEFAULT_POD, "10.47.255.250"),
    ];
    let nodes = two_nodes();
    let one = compile_node_state("node-1", 1, &isolation_networks(), &interfaces, &nodes);
    let two = compile_node_state("node-2", 1, &isolation_networks(), &interfaces, &nodes);
    assert_eq!(two.underlay_ip, Some("192.0.2.12".parse().unwrap()));
    assert_eq!(two.peers.len(), 1);
    assert_eq!(two.peers[0].node, "node-1");
    assert_eq!(two.peers[0].underlay_ip, "192.0.2.11".parse::<IpAddr>().unwrap());
    let t2 = table(&two, DEFAULT_POD);
    assert_eq!(
        t2.routes[1].next_hop,
        NextHop::Remote {
            node: "node-1".into(),
            vni: Vni(1)
        }
    );
    assert_eq!(
        t2.routes[0].next_hop,
        NextHop::Local {
            interface: "default/b/eth0".into()
        }
    );
    assert_eq!(prefixes(t2), prefixes(table(&one, DEFAULT_POD)));

    // A node hosting nothing has no tables and no peers.
    let three = compile_node_state("node-3", 1, &isolation_networks(), &interfaces, &nodes);
    assert!(three.networks.is_empty());
    assert!(three.peers.is_empty());
    assert!(three.interfaces.is_empty());
}

#[test]
fn connected_networks_leak_routes_with_their_own_vni() {
    let red = "default-domain:k8s-x:red";
    let blue = "default-domain:k8s-x:blue";
    let green = "default-domain:k8s-x:green";
    let networks = vec![
        network(
            red,
            10,
            &[blue, "default-domain:k8s-x:not-stored", IP_FABRIC_NETWORK],
        ),
        network(blue, 11, &[]),
        network(green, 12, &[]),
    ];
    let interfaces = vec![
        iface("x", "r1", Some("node-1"), red, "10.1.0.1"),
        iface("x", "b1", Some("node-2"), blue, "10.2.0.1"),
        iface("x", "b2", Some("node-1"), blue, "10.2.0.2"),
        iface("x", "g1", Some("node-2"), green, "10.3.0.1"),
    ];
    let s = compile_node_state("node-1", 3, &networks, &interfaces, &two_nodes());
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let r = table(&s, red);
    assert_eq!(prefixes(r), vec!["10.1.0.1/32", "10.2.0.1/32", "10.2.0.2/32"]);
    assert_eq!(r.routes[0].network, red);
    assert_eq!(r.routes[1].network, blue);
    assert_eq!(
        r.routes[1].next_hop,
        NextHop::Remote {
            node: "node-2".into(),
            vni: Vni(11)
        },
        "a leaked remote route carries the destination network's VNI"
    );
    assert_eq!(
        r.routes[2].next_hop,
        NextHop::Local {
            interface: "x/b2/eth0".into()
        }
    );
    // Leaking is one way: blue does not list red.
    let b = table(&s, blue);
    assert_eq!(prefixes(b), vec!["10.2.0.1/32", "10.2.0.2/32"]);
    // green has no local pod: no table, and its pod is not leaked anywhere.
    assert!(s.networks.iter().all(|n| n.fq_name != green));
    assert!(
        s.networks
            .iter()
            .flat_map(|n| &n.routes)
            .all(|r| r.prefix.to_string() != "10.3.0.1/32")
    );
    let rendered = render_routes(&s);
    assert!(
        rendered.contains("10.2.0.1/32 encap vxlan id 11 dst 192.0.2.12 (node-2) [leaked from blue]"),
        "{rendered}"
    );
    assert!(
        rendered.contains("table 10010 (red, VNI 10, gateway 10.47.255.254):"),
        "{rendered}"
    );
    assert!(
        rendered.contains("10.1.0.1/32 dev <local x/r1/eth0>"),
        "{rendered}"
    );
}

#[test]
fn missing_internal_ip_is_a_warning_and_no_route() {
    let interfaces = vec![
        iface("default", "a", Some("node-1"), DEFAULT_POD, "10.47.255.252"),
        iface("default", "b", Some("node-2"), DEFAULT_POD, "10.47.255.250"),
        iface("default", "c", Some("node-3"), DEFAULT_POD, "10.47.255.249"),
        iface("default", "pending", None, DEFAULT_POD, "10.47.255.248"),
    ];
    let nodes = vec![
        k8s_node("node-1", &[("Hostname", "node-1")]),
        k8s_node("node-2", &[("InternalIP", "192.0.2.12")]),
        // node-3 has no Node object at all.
    ];
    let s = compile_node_state("node-1", 1, &isolation_networks(), &interfaces, &nodes);
    assert_eq!(s.underlay_ip, None);
    let t = table(&s, DEFAULT_POD);
    assert_eq!(prefixes(t), vec!["10.47.255.250/32", "10.47.255.252/32"]);
    assert_eq!(s.peers.len(), 1);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("node-1") && w.contains("InternalIP")),
        "{:?}",
        s.warnings
    );
    assert!(
        s.warnings.iter().any(|w| w.contains("node-3")),
        "{:?}",
        s.warnings
    );
    assert!(
        s.warnings.iter().any(|w| w.contains("default/pending/eth0")),
        "{:?}",
        s.warnings
    );
    // The node without an address is still told about its own pods.
    assert_eq!(s.interfaces.len(), 1);

    // From node-2's side: no route towards node-1, and a warning naming it.
    let s2 = compile_node_state("node-2", 1, &isolation_networks(), &interfaces, &nodes);
    assert_eq!(prefixes(table(&s2, DEFAULT_POD)), vec!["10.47.255.250/32"]);
    assert!(s2.peers.is_empty());
    assert!(
        s2.warnings.iter().any(|w| w.contains("node-1")),
        "{:?}",
        s2.warnings
    );
}

#[test]
fn ipv6_only_node_uses_its_ipv6_internal_ip() {
    let n = k8s_node(
        "v6",
        &[("ExternalIP", "198.51.100.1"), ("InternalIP", "2001:db8::1")],
    );
    assert_eq!(node_internal_ip(&n), Some("2001:db8::1".parse().unwrap()));
    let garbage = k8s_node("bad", &[("InternalIP", "not-an-ip")]);
    assert_eq!(node_internal_ip(&garbage), None);
}

#[test]
fn equal_inputs_in_any_order_give_identical_state() {
    let networks = isolation_networks();
    let interfaces = vec![
        iface("default", "a", Some("node-1"), DEFAULT_POD, "10.47.255.252"),
        iface("dev", "b", Some("node-2"), DEFAULT_POD, "10.47.255.250"),
        iface("iso", "c", Some("node-1"), ISO_POD, "10.47.255.249"),
        iface("iso", "d", Some("node-2"), ISO_POD, "10.47.255.248"),
        iface("dev", "e", Some("node-1"), DEFAULT_POD, "10.47.255.247"),
    ];
    let nodes = two_nodes();
    let a = compile_node_state("node-1", 9, &networks, &interfaces, &nodes);
    let mut rn = networks.clone();
    rn.reverse();
    let mut ri = interfaces.clone();
    ri.reverse();
    let mut rnodes = nodes.clone();
    rnodes.reverse();
    let b = compile_node_state("node-1", 9, &rn, &ri, &rnodes);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert_eq!(render_routes(&a), render_routes(&b));
}

#[test]
fn address_conflict_in_one_table_keeps_own_network_and_warns() {
    let red = "default-domain:k8s-x:red";
    let blue = "default-domain:k8s-x:blue";
    let networks = vec![network(red, 10, &[blue]), network(blue, 11, &[])];
    let interfaces = vec![
        iface("x", "r1", Some("node-1"), red, "10.9.0.1"),
        iface("x", "b1", Some("node-2"), blue, "10.9.0.1"),
    ];
    let s = compile_node_state("node-1", 1, &networks, &interfaces, &two_nodes());
    let r = table(&s, red);
    assert_eq!(r.routes.len(), 1);
    assert_eq!(r.routes[0].network, red);
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
}

fn arb_state_inputs()
-> impl Strategy<Value = (Vec<VirtualNetworkRecord>, Vec<InterfaceAttachment>, Vec<Node>)> {
    let node_names = ["n0", "n1", "n2", "n3"];
    let nets = proptest::collection::vec((1u32..6, proptest::collection::vec(0usize..6, 0..4)), 1..6);
    let ifs = proptest::collection::vec(
        (
            0usize..8,
            0usize..6,
            proptest::option::of(0usize..4),
            0u8..16,
            0usize..3,
        ),
        0..24,
    );
    let has_ip = proptest::collection::vec(any::<bool>(), 4);
    (nets, ifs, has_ip).prop_map(move |(nets, ifs, has_ip)| {
        let fq = |i: usize| format!("default-domain:p:net{i}");
        let networks = nets
            .iter()
            .enumerate()
            .map(|(i, (vni, connected))| {
                let connected: Vec<String> = connected.iter().map(|c| fq(*c)).collect();
                let refs: Vec<&str> = connected.iter().map(String::as_str).collect();
                network(&fq(i), *vni + i as u32 * 10, &refs)
            })
            .collect();
        let interfaces = ifs
            .iter()
            .map(|(pod, net, node, host, ifn)| {
                let mut i = iface(
                    "ns",
                    &format!("pod{pod}"),
                    node.map(|n| node_names[n]),
                    &fq(*net),
                    &format!("10.0.{net}.{host}"),
                );
                i.interface = format!("net{ifn}");
                i
            })
            .collect();
        let nodes = node_names
            .iter()
            .zip(&has_ip)
            .enumerate()
            .map(|(i, (n, ip))| {
                if *ip {
                    k8s_node(n, &[("InternalIP", &format!("192.0.2.{}", i + 1))])
                } else {
                    k8s_node(n, &[])
                }
            })
            .collect();
        (networks, interfaces, nodes)
    })
}

proptest! {
    #[test]
    fn next_hops_always_name_known_interfaces_and_peers(
        (networks, interfaces, nodes) in arb_state_inputs(),
        node in 0usize..4,
    ) {
        let name = ["n0", "n1", "n2", "n3"][node];
        let s = compile_node_state(name, 1, &networks, &interfaces, &nodes);
        let keys: BTreeSet<String> = s.interfaces.iter().map(LocalInterface::key).collect();
        let peers: BTreeSet<&str> = s.peers.iter().map(|p| p.node.as_str()).collect();
        prop_assert!(!peers.contains(name));
        for n in &s.networks {
            prop_assert_eq!(n.table, vn_table(n.vni));
            for w in n.routes.windows(2) {
                prop_assert!(w[0].prefix < w[1].prefix);
            }
            for r in &n.routes {
                match &r.next_hop {
                    NextHop::Local { interface } => prop_assert!(keys.contains(interface), "{}", interface),
                    NextHop::Remote { node, .. } => prop_assert!(peers.contains(node.as_str()), "{}", node),
                    NextHop::External { .. } => prop_assert!(false, "the compiler itself never imports"),
                }
            }
        }
        // Every peer is used by some route.
        for p in &peers {
            let used = s.networks.iter().flat_map(|n| &n.routes).any(
                |r| matches!(&r.next_hop, NextHop::Remote { node, .. } if node == p)
            );
            prop_assert!(used, "unused peer {}", p);
        }
        // Sorted and deterministic.
        for w in s.networks.windows(2) {
            prop_assert!((w[0].vni, &w[0].fq_name) <= (w[1].vni, &w[1].fq_name));
        }
        let mut rev = interfaces.clone();
        rev.reverse();
        prop_assert_eq!(&s, &compile_node_state(name, 1, &networks, &rev, &nodes));
    }
}

// ===== services =====

fn backend(
    pod: &str,
    ip: &str,
    node: &str,
    ready: bool,
    ports: &[(&str, u16)],
) -> weft_model::derived::BackendRecord {
    weft_model::derived::BackendRecord {
        pod: Some(pod.to_string()),
        ip: ip.parse().unwrap(),
        node: Some(node.to_string()),
        ready,
        target_ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
    }
}

fn service(
    ns: &str,
    name: &str,
    network: &str,
    vip: &str,
    backends: Vec<weft_model::derived::BackendRecord>,
) -> ServiceRecord {
    ServiceRecord {
        namespace: ns.into(),
        name: name.into(),
        service_type: "ClusterIP".into(),
        vip: Some(vip.parse().unwrap()),
        network: network.into(),
        ports: vec![weft_model::ServicePortRecord {
            name: String::new(),
            protocol: "TCP".into(),
            port: 80,
            target_port: "8080".into(),
            node_port: None,
        }],
        session_affinity: "None".into(),
        external_ips: vec![],
        backends,
        backends_from: "selector".into(),
        note: None,
        floating_ips: vec![],
        fip_pool: None,
        fip_network: None,
    }
}

/// default/a (node-1), dev/b (node-2) in the default pod network; iso/c (node-1),
/// iso/d (node-2) isolated.
fn service_interfaces() -> Vec<InterfaceAttachment> {
    vec![
        iface("default", "a", Some("node-1"), DEFAULT_POD, "10.47.255.252"),
        iface("dev", "b", Some("node-2"), DEFAULT_POD, "10.47.255.250"),
        iface("iso", "c", Some("node-1"), ISO_POD, "10.47.255.249"),
        iface("iso", "d", Some("node-2"), ISO_POD, "10.47.255.248"),
    ]
}

fn route<'a>(n: &'a NodeNetwork, prefix: &str) -> Option<&'a NodeRoute> {
    n.routes.iter().find(|r| r.prefix.to_string() == prefix)
}

#[test]
fn client_networks_follow_the_default_policies() {
    let nets = isolation_networks();
    let by_name: BTreeMap<&str, &VirtualNetworkRecord> =
        nets.iter().map(|n| (n.fq_name.as_str(), n)).collect();
    let default: Vec<&str> = services::client_networks(&by_name, DEFAULT_SVC)
        .into_iter()
        .collect();
    assert_eq!(default, vec![DEFAULT_POD, ISO_POD]);
    let iso: Vec<&str> = services::client_networks(&by_name, ISO_SVC).into_iter().collect();
    assert_eq!(iso, vec![ISO_POD]);
}

#[test]
fn default_service_reaches_backends_and_isolated_clients_get_reply_routes() {
    // A default service whose backend is dev/b on node-2.
    let svc = service(
        "dev",
        "web",
        DEFAULT_SVC,
        "10.96.0.10",
        vec![
            backend("dev/b", "10.47.255.250", "node-2", true, &[]),
            // Not ready: not a backend.
            backend("default/a", "10.47.255.252", "node-1", false, &[]),
        ],
    );
    let nodes = two_nodes();
    let nets = isolation_networks();
    let one = compile_node_state_with_services(
        "node-1",
        1,
        &nets,
        &service_interfaces(),
        std::slice::from_ref(&svc),
        &nodes,
    );
    assert!(one.warnings.is_empty(), "{:?}", one.warnings);
    assert_eq!(one.services.len(), 1);
    let s = &one.services[0];
    assert_eq!(s.key(), "dev/web");
    assert_eq!(s.client_tables, vec![10_001, 10_003]);
    assert_eq!(s.ports[0].protocol, weft_model::node::L4Protocol::Tcp);
    assert_eq!(s.ports[0].backends.len(), 1);
    assert_eq!(s.ports[0].backends[0].port, 8080);
    assert_eq!(s.ports[0].backends[0].node.as_deref(), Some("node-2"));
    // The isolated table on node-1 can route to the backend (VNI of its network).
    let iso = table(&one, ISO_POD);
    let r = route(iso, "10.47.255.250/32").expect("backend leaked into the isolated table");
    assert_eq!(
        r.next_hop,
        NextHop::Remote {
            node: "node-2".into(),
            vni: Vni(1)
        }
    );
    assert_eq!(r.network, DEFAULT_POD);
    assert!(!r.reply_only);
    assert!(
        r.service_only,
        "the backend is reachable from the isolated network only through the VIP"
    );
    // No other default pod leaks into it.
    assert!(route(iso, "10.47.255.252/32").is_none());
    // No backend on node-1: no reply-only routes there.
    assert!(one.networks.iter().flat_map(|n| &n.routes).all(|r| !r.reply_only));
    assert!(one.service_routes.is_empty());

    // node-2 hosts the backend: its default table gets the isolated pods, replies only.
    let two = compile_node_state_with_services("node-2", 1, &nets, &service_interfaces(), &[svc], &nodes);
    assert!(two.warnings.is_empty(), "{:?}", two.warnings);
    let default = table(&two, DEFAULT_POD);
    for (prefix, hop) in [
        (
            "10.47.255.249/32",
            NextHop::Remote {
                node: "node-1".into(),
                vni: Vni(3),
            },
        ),
        (
            "10.47.255.248/32",
            NextHop::Local {
                interface: "iso/d/eth0".into(),
            },
        ),
    ] {
        let r = route(default, prefix).unwrap_or_else(|| panic!("{prefix} missing: {default:#?}"));
        assert!(r.reply_only, "{r:?}");
        assert_eq!(r.next_hop, hop);
        assert_eq!(r.network, ISO_POD);
    }
    // The default pod a (same network) is an ordinary route.
    assert!(!route(default, "10.47.255.252/32").unwrap().reply_only);
    // The isolated table does not get default pods (only the backend itself).
    let iso = table(&two, ISO_POD);
    assert!(route(iso, "10.47.255.252/32").is_none());
    assert!(route(iso, "10.47.255.250/32").is_some());
    let text = render_routes(&two);
    assert!(text.contains("[replies only, k8s-iso-pod-network]"), "{text}");
    assert!(text.contains("service dev/web ClusterIP 10.96.0.10"), "{text}");
}

#[test]
fn isolated_service_is_for_the_isolated_namespace_only() {
    let svc = service(
        "iso",
        "db",
        ISO_SVC,
        "10.96.0.20",
        vec![
            backend("iso/c", "10.47.255.249", "node-1", true, &[]),
            backend("iso/d", "10.47.255.248", "node-2", true, &[]),
        ],
    );
    let s = compile_node_state_with_services(
        "node-1",
        1,
        &isolation_networks(),
        &service_interfaces(),
        &[svc],
        &two_nodes(),
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(s.services[0].client_tables, vec![10_003]);
    assert_eq!(s.services[0].ports[0].backends.len(), 2);
    // The default table learns nothing about the isolated backends.
    let default = table(&s, DEFAULT_POD);
    assert!(route(default, "10.47.255.249/32").is_none());
    assert!(route(default, "10.47.255.248/32").is_none());
    // A service nobody on a node may use is not listed there.
    let only_default = vec![iface(
        "default",
        "a",
        Some("node-1"),
        DEFAULT_POD,
        "10.47.255.252",
    )];
    let svc = service("iso", "db", ISO_SVC, "10.96.0.20", vec![]);
    let s = compile_node_state_with_services(
        "node-1",
        1,
        &isolation_networks(),
        &only_default,
        &[svc],
        &two_nodes(),
    );
    assert!(s.services.is_empty(), "{:?}", s.services);
}

#[test]
fn named_target_ports_resolve_per_backend() {
    let mut svc = service(
        "dev",
        "multi",
        DEFAULT_SVC,
        "10.96.0.30",
        vec![
            backend(
                "dev/b",
                "10.47.255.250",
                "node-2",
                true,
                &[("http", 8080), ("dns", 5353)],
            ),
            // Declares only `http`.
            backend("default/a", "10.47.255.252", "node-1", true, &[("http", 9090)]),
        ],
    );
    svc.ports = vec![
        weft_model::ServicePortRecord {
            name: "http".into(),
            protocol: "TCP".into(),
            port: 80,
            target_port: "web".into(),
            node_port: None,
        },
        weft_model::ServicePortRecord {
            name: "dns".into(),
            protocol: "UDP".into(),
            port: 53,
            target_port: "dns".into(),
            node_port: None,
        },
    ];
    svc.session_affinity = "ClientIP".into();
    let s = compile_node_state_with_services(
        "node-1",
        1,
        &isolation_networks(),
        &service_interfaces(),
        &[svc],
        &two_nodes(),
    );
    let ports = &s.services[0].ports;
    assert_eq!(
        s.services[0].affinity,
        weft_model::node::SessionAffinity::ClientIp
    );
    let http: Vec<(String, u16)> = ports[0]
        .backends
        .iter()
        .map(|b| (b.ip.to_string(), b.port))
        .collect();
    assert_eq!(
        http,
        vec![
            ("10.47.255.250".to_string(), 8080),
            ("10.47.255.252".to_string(), 9090)
        ]
    );
    assert_eq!(ports[1].protocol, weft_model::node::L4Protocol::Udp);
    let dns: Vec<(String, u16)> = ports[1]
        .backends
        .iter()
        .map(|b| (b.ip.to_string(), b.port))
        .collect();
    assert_eq!(dns, vec![("10.47.255.250".to_string(), 5353)]);
    assert!(
        s.warnings.iter().any(|w| w.contains("declares no port")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn floating_ips_are_external_ips_on_every_node() {
    let mut svc = service(
        "dev",
        "lb",
        DEFAULT_SVC,
        "10.96.0.41",
        vec![backend("dev/b", "10.47.255.250", "node-2", true, &[])],
    );
    svc.service_type = "LoadBalancer".into();
    svc.ports[0].node_port = Some(30081);
    // The same address as a spec external IP and as the floating IP: listed once.
    svc.external_ips = vec!["203.0.113.9".into(), "203.0.113.252".into()];
    svc.floating_ips = vec!["203.0.113.252".parse().unwrap()];
    svc.fip_pool = Some("public/pool".into());
    svc.fip_network = Some("default-domain:k8s-public:ext".into());
    let nodes = vec![
        k8s_node("node-1", &[("InternalIP", "192.0.2.11")]),
        k8s_node("node-2", &[("InternalIP", "192.0.2.12")]),
        k8s_node("node-3", &[("InternalIP", "192.0.2.13")]),
    ];
    for node in ["node-1", "node-2", "node-3"] {
        let state = compile_node_state_with_services(
            node,
            1,
            &isolation_networks(),
            &service_interfaces(),
            std::slice::from_ref(&svc),
            &nodes,
        );
        assert_eq!(state.services.len(), 1, "{node}");
        assert_eq!(
            state.services[0].external_ips,
            vec![
                "203.0.113.9".parse::<IpAddr>().unwrap(),
                "203.0.113.252".parse().unwrap()
            ],
            "{node}"
        );
    }
    // A floating IP alone (no spec external IP) is reachable from outside as well.
    svc.external_ips.clear();
    let state = compile_node_state_with_services(
        "node-3",
        1,
        &isolation_networks(),
        &service_interfaces(),
        &[svc],
        &nodes,
    );
    assert_eq!(
        state.services[0].external_ips,
        vec!["203.0.113.252".parse::<IpAddr>().unwrap()]
    );
}

#[test]
fn node_ports_are_on_every_node_with_service_routes_and_snat_return_routes() {
    let mut svc = service(
        "dev",
        "np",
        DEFAULT_SVC,
        "10.96.0.40",
        vec![backend("dev/b", "10.47.255.250", "node-2", true, &[])],
    );
    svc.service_type = "NodePort".into();
    svc.ports[0].node_port = Some(30080);
    svc.external_ips = vec!["203.0.113.7".into(), "not-an-ip".into()];
    let nodes = vec![
        k8s_node("node-1", &[("InternalIP", "192.0.2.11")]),
        k8s_node("node-2", &[("InternalIP", "192.0.2.12")]),
        k8s_node("node-3", &[("InternalIP", "192.0.2.13")]),
    ];
    // node-3 has no pods at all, and still answers the NodePort.
    let three = compile_node_state_with_services(
        "node-3",
        1,
        &isolation_networks(),
        &service_interfaces(),
        &[svc.clone()],
        &nodes,
    );
    assert_eq!(three.services.len(), 1);
    assert!(three.services[0].client_tables.is_empty());
    assert_eq!(
        three.services[0].external_ips,
        vec!["203.0.113.7".parse::<IpAddr>().unwrap()]
    );
    assert!(
        three.warnings.iter().any(|w| w.contains("not-an-ip")),
        "{:?}",
        three.warnings
    );
    assert_eq!(three.service_routes.len(), 1);
    assert_eq!(
        three.service_routes[0].next_hop,
        NextHop::Remote {
            node: "node-2".into(),
            vni: Vni(1)
        }
    );
    assert!(three.peers.iter().any(|p| p.node == "node-2"));
    // The backend's node routes replies to the other nodes' service addresses.
    let two = compile_node_state_with_services(
        "node-2",
        1,
        &isolation_networks(),
        &service_interfaces(),
        &[svc],
        &nodes,
    );
    let default = table(&two, DEFAULT_POD);
    for (addr, node) in [("169.254.2.11/32", "node-1"), ("169.254.2.13/32", "node-3")] {
        let r = route(default, addr).unwrap_or_else(|| panic!("{addr}: {default:#?}"));
        assert!(r.reply_only);
        assert_eq!(
            r.next_hop,
            NextHop::Remote {
                node: node.into(),
                vni: Vni(1)
            }
        );
    }
    assert!(two.peers.iter().any(|p| p.node == "node-3"));
    assert_eq!(
        two.service_routes[0].next_hop,
        NextHop::Local {
            interface: "dev/b/eth0".into()
        }
    );
}

#[test]
fn services_do_not_change_the_state_without_services() {
    let a = compile_node_state(
        "node-1",
        1,
        &isolation_networks(),
        &service_interfaces(),
        &two_nodes(),
    );
    let b = compile_node_state_with_services(
        "node-1",
        1,
        &isolation_networks(),
        &service_interfaces(),
        &[],
        &two_nodes(),
    );
    assert_eq!(a, b);
    assert!(a.services.is_empty() && a.service_routes.is_empty());
}

#[test]
fn ip_fabric_forwarding_is_carried_into_the_node_table() {
    let mut networks = isolation_networks();
    networks[2].ip_fabric_forwarding = true;
    let interfaces = vec![
        iface("iso", "a", Some("node-1"), ISO_POD, "10.64.0.2"),
        iface("default", "b", Some("node-1"), DEFAULT_POD, "10.47.255.252"),
    ];
    let s = compile_node_state("node-1", 1, &networks, &interfaces, &two_nodes());
    assert!(table(&s, ISO_POD).ip_fabric_forwarding);
    assert!(!table(&s, DEFAULT_POD).ip_fabric_forwarding);
}

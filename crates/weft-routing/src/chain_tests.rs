//! Service chains in a node's tables ([`chains::add_service_chains`]).

use weft_model::node::{L4Protocol, PolicyPort};
use weft_model::{ChainFailure, ChainGuard, ChainHop, MacAddr, NetworkKind, ServiceChainRecord, Vni};

use super::*;

const LEFT: &str = "default-domain:k8s-default:left";
const RIGHT: &str = "default-domain:k8s-default:right";
const L_VNI: u32 = 10;
const R_VNI: u32 = 20;
const GAP_VNI: u32 = 100;

fn network(fq: &str, vni: u32, connected: &[&str]) -> VirtualNetworkRecord {
    let name = fq.rsplit(':').next().unwrap().to_string();
    VirtualNetworkRecord {
        fq_name: fq.to_string(),
        name: name.clone(),
        project: "k8s-default".into(),
        namespace: "default".into(),
        kind: NetworkKind::Pod,
        ipam: format!("{fq}-ipam"),
        subnets: vec![],
        gateway: None,
        vni: Vni(vni),
        routing_instance: format!("{fq}:{name}"),
        import_targets: vec![],
        export_targets: vec![],
        connected_networks: connected.iter().map(|s| s.to_string()).collect(),
        ip_fabric_forwarding: false,
        origin: "custom".into(),
    }
}

fn networks() -> Vec<VirtualNetworkRecord> {
    vec![network(LEFT, L_VNI, &[]), network(RIGHT, R_VNI, &[])]
}

/// L and R leak routes to each other (as connected networks do): the direct routes a
/// chain replaces, or a Drop chain takes away.
fn connected_networks() -> Vec<VirtualNetworkRecord> {
    vec![network(LEFT, L_VNI, &[RIGHT]), network(RIGHT, R_VNI, &[LEFT])]
}

fn att(pod: &str, ifname: &str, node: Option<&str>, network: &str, ip: &str) -> InterfaceAttachment {
    InterfaceAttachment {
        namespace: "default".into(),
        pod: pod.into(),
        pod_uid: String::new(),
        node: node.map(str::to_string),
        interface: ifname.into(),
        network: network.into(),
        ip: ip.parse().unwrap(),
        prefix_len: 24,
        gateway: None,
        mac: MacAddr::derived_from(&format!("default/{pod}/{ifname}")),
        primary: ifname == "eth0",
    }
}

fn k8s_node(name: &str, ip: &str) -> Node {
    crate::tests::k8s_node(name, &[("InternalIP", ip)])
}

fn nodes() -> Vec<Node> {
    vec![
        k8s_node("node-1", "192.0.2.11"),
        k8s_node("node-2", "192.0.2.12"),
        k8s_node("node-3", "192.0.2.13"),
    ]
}

/// Endpoints: `a` (L) and `b` (R) on node-1, `x` (L) and `y` (R) on node-2, `z` (L)
/// on node-3.
fn endpoints() -> Vec<InterfaceAttachment> {
    vec![
        att("a", "eth0", Some("node-1"), LEFT, "10.10.0.2"),
        att("x", "eth0", Some("node-2"), LEFT, "10.10.0.3"),
        att("z", "eth0", Some("node-3"), LEFT, "10.10.0.4"),
        att("b", "eth0", Some("node-1"), RIGHT, "10.20.0.2"),
        att("y", "eth0", Some("node-2"), RIGHT, "10.20.0.3"),
    ]
}

/// Service pod `pod` on `node` with net1 in L (10.10.0.`n`) and net2 in R (10.20.0.`n`).
fn hop_pod(pod: &str, node: &str, n: u8) -> [InterfaceAttachment; 2] {
    [
        att(pod, "net1", Some(node), LEFT, &format!("10.10.0.{n}")),
        att(pod, "net2", Some(node), RIGHT, &format!("10.20.0.{n}")),
    ]
}

fn chain(name: &str, pods: &[&str], on_failure: ChainFailure, ports: Vec<PolicyPort>) -> ServiceChainRecord {
    ServiceChainRecord {
        namespace: "default".into(),
        name: name.into(),
        left_network: LEFT.into(),
        right_network: RIGHT.into(),
        hops: pods
            .iter()
            .map(|p| ChainHop {
                pod: p.to_string(),
                left_interface: "net1".into(),
                right_interface: "net2".into(),
            })
            .collect(),
        hop_vnis: (0..pods.len().saturating_sub(1))
            .map(|i| Vni(GAP_VNI + i as u32))
            .collect(),
        ports,
        on_failure,
        missing: vec![],
    }
}

fn tcp(first: u16, last: u16) -> PolicyPort {
    PolicyPort {
        protocol: L4Protocol::Tcp,
        first,
        last,
    }
}

fn state_of(
    node: &str,
    nets: &[VirtualNetworkRecord],
    interfaces: &[InterfaceAttachment],
    chains: &[ServiceChainRecord],
) -> NodeState {
    let mut s = compile_node_state(node, 1, nets, interfaces, &nodes());
    chains::add_service_chains(&mut s, chains, nets, interfaces, &nodes());
    s
}

fn table<'a>(s: &'a NodeState, fq: &str) -> &'a NodeNetwork {
    s.networks
        .iter()
        .find(|n| n.fq_name == fq)
        .unwrap_or_else(|| panic!("no table for {fq} in {s:#?}"))
}

/// A table's routes as `prefix -> next hop`, in order.
fn routes(n: &NodeNetwork) -> Vec<(String, NextHop)> {
    n.routes
        .iter()
        .map(|r| (r.prefix.to_string(), r.next_hop.clone()))
        .collect()
}

fn local(key: &str) -> NextHop {
    NextHop::Local {
        interface: format!("default/{key}"),
    }
}

fn remote(node: &str, vni: u32) -> NextHop {
    NextHop::Remote {
        node: node.into(),
        vni: Vni(vni),
    }
}

fn r(prefix: &str, hop: NextHop) -> (String, NextHop) {
    (format!("{prefix}/32"), hop)
}

fn local_iface<'a>(s: &'a NodeState, key: &str) -> &'a LocalInterface {
    let key = format!("default/{key}");
    s.interfaces
        .iter()
        .find(|i| i.key() == key)
        .unwrap_or_else(|| panic!("no local interface {key}"))
}

fn peer_names(s: &NodeState) -> Vec<&str> {
    s.peers.iter().map(|p| p.node.as_str()).collect()
}

#[test]
fn one_hop_on_one_node_steers_both_tables_through_the_hop() {
    let mut interfaces = endpoints();
    interfaces.extend(hop_pod("fw1", "node-1", 10));
    let ch = chain("fw", &["fw1"], ChainFailure::Drop, vec![tcp(443, 443)]);
    let s = state_of("node-1", &networks(), &interfaces, std::slice::from_ref(&ch));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    // L: its own endpoints as before, R's endpoints (not the hop's R side) to fw1.net1.
    assert_eq!(
        routes(table(&s, LEFT)),
        vec![
            r("10.10.0.2", local("a/eth0")),
            r("10.10.0.3", remote("node-2", L_VNI)),
            r("10.10.0.4", remote("node-3", L_VNI)),
            r("10.10.0.10", local("fw1/net1")),
            r("10.20.0.2", local("fw1/net1")),
            r("10.20.0.3", local("fw1/net1")),
        ]
    );
    // R: L's endpoints to fw1.net2.
    assert_eq!(
        routes(table(&s, RIGHT)),
        vec![
            r("10.10.0.2", local("fw1/net2")),
            r("10.10.0.3", local("fw1/net2")),
            r("10.10.0.4", local("fw1/net2")),
            r("10.20.0.2", local("b/eth0")),
            r("10.20.0.3", remote("node-2", R_VNI)),
            r("10.20.0.10", local("fw1/net2")),
        ]
    );
    // The chain routes name the network of their destination.
    let l = table(&s, LEFT);
    let to_b = l
        .routes
        .iter()
        .find(|r| r.prefix.to_string() == "10.20.0.2/32")
        .unwrap();
    assert_eq!(to_b.network, RIGHT);
    assert!(!to_b.reply_only && !to_b.service_only);
    // No routing instance for one hop; the hop's interfaces stay in their networks.
    assert_eq!(
        s.networks.iter().map(|n| n.fq_name.as_str()).collect::<Vec<_>>(),
        vec![LEFT, RIGHT]
    );
    assert_eq!(local_iface(&s, "fw1/net1").table, vn_table(Vni(L_VNI)));
    assert_eq!(local_iface(&s, "fw1/net2").table, vn_table(Vni(R_VNI)));
    // Guards: each side's table, the other side's endpoints (not the hop), the ports.
    assert_eq!(
        table(&s, LEFT).chain_guards,
        vec![ChainGuard {
            chain: "default/fw".into(),
            destinations: vec!["10.20.0.2/32".parse().unwrap(), "10.20.0.3/32".parse().unwrap()],
            ports: vec![tcp(443, 443)],
        }]
    );
    assert_eq!(
        table(&s, RIGHT).chain_guards,
        vec![ChainGuard {
            chain: "default/fw".into(),
            destinations: vec![
                "10.10.0.2/32".parse().unwrap(),
                "10.10.0.3/32".parse().unwrap(),
                "10.10.0.4/32".parse().unwrap()
            ],
            ports: vec![tcp(443, 443)],
        }]
    );
}

#[test]
fn one_hop_seen_from_other_nodes_goes_to_the_hop_node_in_each_side_vni() {
    let mut interfaces = endpoints();
    interfaces.extend(hop_pod("fw1", "node-1", 10));
    let ch = chain("fw", &["fw1"], ChainFailure::Drop, vec![]);
    let s = state_of("node-2", &networks(), &interfaces, std::slice::from_ref(&ch));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(
        routes(table(&s, LEFT)),
        vec![
            r("10.10.0.2", remote("node-1", L_VNI)),
            r("10.10.0.3", local("x/eth0")),
            r("10.10.0.4", remote("node-3", L_VNI)),
            r("10.10.0.10", remote("node-1", L_VNI)),
            r("10.20.0.2", remote("node-1", L_VNI)),
            r("10.20.0.3", remote("node-1", L_VNI)),
        ]
    );
    assert_eq!(
        routes(table(&s, RIGHT)),
        vec![
            r("10.10.0.2", remote("node-1", R_VNI)),
            r("10.10.0.3", remote("node-1", R_VNI)),
            r("10.10.0.4", remote("node-1", R_VNI)),
            r("10.20.0.2", remote("node-1", R_VNI)),
            r("10.20.0.3", local("y/eth0")),
            r("10.20.0.10", remote("node-1", R_VNI)),
        ]
    );
    // Empty ports: the guard is there, carrying everything.
    assert_eq!(table(&s, LEFT).chain_guards.len(), 1);
    assert!(table(&s, LEFT).chain_guards[0].ports.is_empty());
    // node-3 has only L: its L table reaches R through node-1; no R table appears.
    let s3 = state_of("node-3", &networks(), &interfaces, &[ch]);
    assert!(s3.networks.iter().all(|n| n.fq_name != RIGHT));
    let l3 = routes(table(&s3, LEFT));
    assert!(l3.contains(&r("10.20.0.2", remote("node-1", L_VNI))), "{l3:?}");
    assert!(l3.contains(&r("10.20.0.3", remote("node-1", L_VNI))), "{l3:?}");
    assert!(peer_names(&s3).contains(&"node-1"));
}

#[test]
fn two_hops_on_two_nodes_get_a_routing_instance_with_the_gap_vni() {
    let mut interfaces = endpoints();
    interfaces.extend(hop_pod("fw1", "node-1", 10));
    interfaces.extend(hop_pod("fw2", "node-2", 11));
    let ch = chain("fw", &["fw1", "fw2"], ChainFailure::Drop, vec![tcp(80, 90)]);
    let instance = ch.instance_name(0);
    let gap_table = vn_table(Vni(GAP_VNI));

    // node-1 (fw1): L enters fw1.net1; fw1.net2 faces the gap.
    let s1 = state_of("node-1", &networks(), &interfaces, std::slice::from_ref(&ch));
    assert!(s1.warnings.is_empty(), "{:?}", s1.warnings);
    let gap1 = table(&s1, &instance);
    assert_eq!(gap1.vni, Vni(GAP_VNI));
    assert_eq!(gap1.table, gap_table);
    assert!(gap1.chain_guards.is_empty());
    assert_eq!(
        routes(gap1),
        vec![
            r("10.10.0.2", local("fw1/net2")),
            r("10.10.0.3", local("fw1/net2")),
            r("10.10.0.4", local("fw1/net2")),
            r("10.20.0.2", remote("node-2", GAP_VNI)),
            r("10.20.0.3", remote("node-2", GAP_VNI)),
        ]
    );
    let l1 = routes(table(&s1, LEFT));
    assert!(l1.contains(&r("10.20.0.2", local("fw1/net1"))), "{l1:?}");
    assert!(l1.contains(&r("10.20.0.3", local("fw1/net1"))), "{l1:?}");
    let r1 = routes(table(&s1, RIGHT));
    assert!(r1.contains(&r("10.10.0.2", remote("node-2", R_VNI))), "{r1:?}");
    assert!(r1.contains(&r("10.10.0.4", remote("node-2", R_VNI))), "{r1:?}");
    let fw1_right = local_iface(&s1, "fw1/net2");
    assert_eq!((fw1_right.table, fw1_right.vni), (gap_table, Vni(GAP_VNI)));
    assert_eq!(local_iface(&s1, "fw1/net1").table, vn_table(Vni(L_VNI)));
    assert_eq!(local_iface(&s1, "a/eth0").table, vn_table(Vni(L_VNI)));
    assert_eq!(local_iface(&s1, "b/eth0").table, vn_table(Vni(R_VNI)));
    // Tables stay sorted by VNI.
    let vnis: Vec<u32> = s1.networks.iter().map(|n| n.vni.0).collect();
    assert_eq!(vnis, vec![L_VNI, R_VNI, GAP_VNI]);
    assert!(peer_names(&s1).contains(&"node-2"));

    // node-2 (fw2): fw2.net1 faces the gap; R enters fw2.net2.
    let s2 = state_of("node-2", &networks(), &interfaces, std::slice::from_ref(&ch));
    assert!(s2.warnings.is_empty(), "{:?}", s2.warnings);
    let gap2 = table(&s2, &instance);
    assert_eq!((gap2.vni, gap2.table), (Vni(GAP_VNI), gap_table));
    assert_eq!(
        routes(gap2),
        vec![
            r("10.10.0.2", remote("node-1", GAP_VNI)),
            r("10.10.0.3", remote("node-1", GAP_VNI)),
            r("10.10.0.4", remote("node-1", GAP_VNI)),
            r("10.20.0.2", local("fw2/net1")),
            r("10.20.0.3", local("fw2/net1")),
        ]
    );
    let l2 = routes(table(&s2, LEFT));
    assert!(l2.contains(&r("10.20.0.2", remote("node-1", L_VNI))), "{l2:?}");
    assert!(l2.contains(&r("10.20.0.3", remote("node-1", L_VNI))), "{l2:?}");
    let r2 = routes(table(&s2, RIGHT));
    assert!(r2.contains(&r("10.10.0.2", local("fw2/net2"))), "{r2:?}");
    assert!(r2.contains(&r("10.10.0.3", local("fw2/net2"))), "{r2:?}");
    let fw2_left = local_iface(&s2, "fw2/net1");
    assert_eq!((fw2_left.table, fw2_left.vni), (gap_table, Vni(GAP_VNI)));
    assert_eq!(local_iface(&s2, "fw2/net2").table, vn_table(Vni(R_VNI)));
    // No hop endpoint is chained: neither table routes to the other hop's addresses.
    assert!(
        !l2.iter()
            .any(|(p, _)| p == "10.20.0.10/32" || p == "10.20.0.11/32")
    );
    assert!(
        !r2.iter()
            .any(|(p, _)| p == "10.10.0.10/32" || p == "10.10.0.11/32")
    );
    let guard = &table(&s2, RIGHT).chain_guards[0];
    assert_eq!(guard.ports, vec![tcp(80, 90)]);
    assert_eq!(guard.destinations.len(), 3);

    // node-3 hosts no hop: no routing instance, L goes to fw1's node.
    let s3 = state_of("node-3", &networks(), &interfaces, &[ch]);
    assert!(
        s3.networks.iter().all(|n| n.vni != Vni(GAP_VNI)),
        "{:?}",
        s3.networks
    );
    let l3 = routes(table(&s3, LEFT));
    assert!(l3.contains(&r("10.20.0.2", remote("node-1", L_VNI))), "{l3:?}");
}

#[test]
fn three_hops_on_one_node_chain_through_two_instances() {
    let mut interfaces = endpoints();
    interfaces.extend(hop_pod("fw1", "node-1", 10));
    interfaces.extend(hop_pod("fw2", "node-1", 11));
    interfaces.extend(hop_pod("fw3", "node-1", 12));
    let ch = chain("fw", &["fw1", "fw2", "fw3"], ChainFailure::Drop, vec![]);
    let s = state_of("node-1", &networks(), &interfaces, std::slice::from_ref(&ch));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let g0 = table(&s, &ch.instance_name(0));
    let g1 = table(&s, &ch.instance_name(1));
    assert_eq!(g0.vni, Vni(GAP_VNI));
    assert_eq!(g1.vni, Vni(GAP_VNI + 1));
    assert!(routes(g0).contains(&r("10.20.0.2", local("fw2/net1"))));
    assert!(routes(g0).contains(&r("10.10.0.2", local("fw1/net2"))));
    assert!(routes(g1).contains(&r("10.20.0.2", local("fw3/net1"))));
    assert!(routes(g1).contains(&r("10.10.0.2", local("fw2/net2"))));
    assert_eq!(local_iface(&s, "fw1/net2").table, g0.table);
    assert_eq!(local_iface(&s, "fw2/net1").table, g0.table);
    assert_eq!(local_iface(&s, "fw2/net2").table, g1.table);
    assert_eq!(local_iface(&s, "fw3/net1").table, g1.table);
    assert!(routes(table(&s, LEFT)).contains(&r("10.20.0.3", local("fw1/net1"))));
    assert!(routes(table(&s, RIGHT)).contains(&r("10.10.0.3", local("fw3/net2"))));
}

#[test]
fn drop_with_a_missing_hop_removes_the_cross_routes() {
    let mut interfaces = endpoints();
    interfaces.extend(hop_pod("fw1", "node-1", 10));
    // fw2 is gone (no interfaces at all).
    let ch = chain("fw", &["fw1", "fw2"], ChainFailure::Drop, vec![tcp(443, 443)]);
    let nets = connected_networks();
    // Without the chain, the connected networks route to each other directly.
    let plain = compile_node_state("node-1", 1, &nets, &interfaces, &nodes());
    assert!(routes(table(&plain, LEFT)).contains(&r("10.20.0.3", remote("node-2", R_VNI))));
    let s = state_of("node-1", &nets, &interfaces, std::slice::from_ref(&ch));
    let l = routes(table(&s, LEFT));
    for p in ["10.20.0.2/32", "10.20.0.3/32"] {
        assert!(!l.iter().any(|(q, _)| q == p), "{p} still routed in L: {l:?}");
    }
    assert!(
        l.contains(&r("10.10.0.2", local("a/eth0"))),
        "own endpoints stay: {l:?}"
    );
    assert!(l.contains(&r("10.10.0.3", remote("node-2", L_VNI))), "{l:?}");
    let rt = routes(table(&s, RIGHT));
    for p in ["10.10.0.2/32", "10.10.0.3/32", "10.10.0.4/32"] {
        assert!(!rt.iter().any(|(q, _)| q == p), "{p} still routed in R: {rt:?}");
    }
    assert!(rt.contains(&r("10.20.0.2", local("b/eth0"))), "{rt:?}");
    // No instance, no guard, the live hop's interfaces in their own networks.
    assert_eq!(s.networks.len(), 2, "{:?}", s.networks);
    assert!(s.networks.iter().all(|n| n.chain_guards.is_empty()));
    assert_eq!(local_iface(&s, "fw1/net2").table, vn_table(Vni(R_VNI)));
    // A hop whose pod is present but lacks an interface, or is unscheduled, is missing too.
    let mut half = endpoints();
    half.extend(hop_pod("fw1", "node-1", 10));
    half.push(att("fw2", "net1", Some("node-2"), LEFT, "10.10.0.11"));
    half.push(att("fw2", "net2", None, RIGHT, "10.20.0.11"));
    let s = state_of("node-1", &nets, &half, std::slice::from_ref(&ch));
    assert!(!routes(table(&s, LEFT)).iter().any(|(q, _)| q == "10.20.0.2/32"));
    // An interface on the wrong network is no hop either.
    let mut wrong = endpoints();
    wrong.extend(hop_pod("fw1", "node-1", 10));
    wrong.push(att("fw2", "net1", Some("node-2"), LEFT, "10.10.0.11"));
    wrong.push(att("fw2", "net2", Some("node-2"), LEFT, "10.10.0.12"));
    let s = state_of("node-1", &nets, &wrong, &[ch]);
    assert!(!routes(table(&s, LEFT)).iter().any(|(q, _)| q == "10.20.0.2/32"));
}

#[test]
fn rendered_routes_say_which_go_through_the_chain() {
    let mut interfaces = endpoints();
    interfaces.extend(hop_pod("fw1", "node-1", 10));
    interfaces.extend(hop_pod("fw2", "node-2", 11));
    let ch = chain("fw", &["fw1", "fw2"], ChainFailure::Drop, vec![]);
    let s = state_of("node-1", &networks(), &interfaces, &[ch]);
    let text = crate::render_routes(&s);
    assert!(
        text.lines()
            .any(|l| l.contains("10.20.0.2/32") && l.contains("through service chain default/fw")),
        "{text}"
    );
    assert!(text.contains("between service-chain hops"), "{text}");
}

#[test]
fn a_record_without_a_vni_per_gap_fails_closed() {
    let mut interfaces = endpoints();
    interfaces.extend(hop_pod("fw1", "node-1", 10));
    interfaces.extend(hop_pod("fw2", "node-2", 11));
    let mut ch = chain("fw", &["fw1", "fw2"], ChainFailure::Bypass, vec![]);
    ch.hop_vnis.clear();
    let s = state_of("node-1", &connected_networks(), &interfaces, &[ch]);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("need 1 routing-instance VNIs")),
        "{:?}",
        s.warnings
    );
    // As with Drop: no endpoint of the other side (the hops' own addresses stay).
    let l = routes(table(&s, LEFT));
    for p in ["10.20.0.2/32", "10.20.0.3/32"] {
        assert!(!l.iter().any(|(q, _)| q == p), "{p} still routed in L: {l:?}");
    }
    let rt = routes(table(&s, RIGHT));
    for p in ["10.10.0.2/32", "10.10.0.3/32", "10.10.0.4/32"] {
        assert!(!rt.iter().any(|(q, _)| q == p), "{p} still routed in R: {rt:?}");
    }
}

#[test]
fn bypass_with_one_of_two_hops_missing_chains_through_the_other() {
    let mut interfaces = endpoints();
    interfaces.extend(hop_pod("fw2", "node-2", 11));
    // fw1 is gone; fw2 remains on node-2.
    let ch = chain("fw", &["fw1", "fw2"], ChainFailure::Bypass, vec![]);
    let s1 = state_of(
        "node-1",
        &connected_networks(),
        &interfaces,
        std::slice::from_ref(&ch),
    );
    assert_eq!(
        routes(table(&s1, LEFT))
            .into_iter()
            .filter(|(p, _)| p.starts_with("10.20."))
            .collect::<Vec<_>>(),
        vec![
            r("10.20.0.2", remote("node-2", L_VNI)),
            r("10.20.0.3", remote("node-2", L_VNI)),
            // fw2's own R address is no chained endpoint: still the direct route.
            r("10.20.0.11", remote("node-2", R_VNI)),
        ],
        "L's traffic enters the remaining hop"
    );
    assert!(
        routes(table(&s1, RIGHT)).contains(&r("10.10.0.2", remote("node-2", R_VNI))),
        "{:?}",
        routes(table(&s1, RIGHT))
    );
    let s2 = state_of(
        "node-2",
        &connected_networks(),
        &interfaces,
        std::slice::from_ref(&ch),
    );
    assert!(routes(table(&s2, LEFT)).contains(&r("10.20.0.2", local("fw2/net1"))));
    assert!(routes(table(&s2, RIGHT)).contains(&r("10.10.0.2", local("fw2/net2"))));
    // One live hop: no instance; fw2 keeps its networks' tables.
    assert!(s2.networks.iter().all(|n| n.vni != Vni(GAP_VNI)));
    assert_eq!(local_iface(&s2, "fw2/net1").table, vn_table(Vni(L_VNI)));
    assert_eq!(local_iface(&s2, "fw2/net2").table, vn_table(Vni(R_VNI)));
    assert_eq!(table(&s2, LEFT).chain_guards.len(), 1);
}

#[test]
fn bypass_with_no_hop_left_routes_directly() {
    let interfaces = endpoints();
    let ch = chain("fw", &["fw1", "fw2"], ChainFailure::Bypass, vec![tcp(22, 22)]);
    // Even networks that are not connected reach each other, each endpoint in its own
    // network's VNI.
    let s = state_of("node-1", &networks(), &interfaces, std::slice::from_ref(&ch));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let l = routes(table(&s, LEFT));
    assert!(l.contains(&r("10.20.0.2", local("b/eth0"))), "{l:?}");
    assert!(l.contains(&r("10.20.0.3", remote("node-2", R_VNI))), "{l:?}");
    let rt = routes(table(&s, RIGHT));
    assert!(rt.contains(&r("10.10.0.2", local("a/eth0"))), "{rt:?}");
    assert!(rt.contains(&r("10.10.0.3", remote("node-2", L_VNI))), "{rt:?}");
    assert!(rt.contains(&r("10.10.0.4", remote("node-3", L_VNI))), "{rt:?}");
    assert!(peer_names(&s).contains(&"node-3"), "{:?}", s.peers);
    // The guard still limits the ports.
    assert_eq!(table(&s, LEFT).chain_guards[0].ports, vec![tcp(22, 22)]);
    assert_eq!(s.networks.len(), 2);
}

#[test]
fn chains_with_one_name_in_two_namespaces_keep_separate_instances() {
    let mut interfaces = endpoints();
    interfaces.extend(hop_pod("fw1", "node-1", 10));
    interfaces.extend(hop_pod("fw2", "node-1", 11));
    let mut other_ns: Vec<InterfaceAttachment> = [("fw1", 20), ("fw2", 21)]
        .into_iter()
        .flat_map(|(p, n)| hop_pod(p, "node-1", n))
        .collect();
    for i in &mut other_ns {
        i.namespace = "dev".into();
    }
    interfaces.extend(other_ns);
    let a = chain("fw", &["fw1", "fw2"], ChainFailure::Drop, vec![]);
    let mut b = a.clone();
    b.namespace = "dev".into();
    b.hop_vnis = vec![Vni(GAP_VNI + 50)];
    assert_ne!(a.instance_name(0), b.instance_name(0));
    let s = state_of("node-1", &networks(), &interfaces, &[a.clone(), b.clone()]);
    let ga = table(&s, &a.instance_name(0));
    let gb = table(&s, &b.instance_name(0));
    assert_eq!(ga.vni, Vni(GAP_VNI));
    assert_eq!(gb.vni, Vni(GAP_VNI + 50));
    assert!(routes(ga).contains(&r("10.20.0.2", local("fw2/net1"))));
    assert!(routes(gb).contains(&(
        "10.20.0.2/32".to_string(),
        NextHop::Local {
            interface: "dev/fw2/net1".into()
        }
    )));
}

#[test]
fn chain_pass_is_deterministic_and_leaves_unchained_states_alone() {
    let mut interfaces = endpoints();
    interfaces.extend(hop_pod("fw1", "node-1", 10));
    interfaces.extend(hop_pod("fw2", "node-2", 11));
    let ch = chain("fw", &["fw1", "fw2"], ChainFailure::Drop, vec![]);
    let a = state_of("node-1", &networks(), &interfaces, std::slice::from_ref(&ch));
    let mut reversed = interfaces.clone();
    reversed.reverse();
    let b = state_of("node-1", &networks(), &reversed, &[ch]);
    assert_eq!(a, b);
    // No chain: the compiled state is untouched.
    let plain = compile_node_state("node-1", 1, &networks(), &interfaces, &nodes());
    assert_eq!(state_of("node-1", &networks(), &interfaces, &[]), plain);
    // A chain whose network is not stored: a warning, nothing programmed.
    let mut lost = chain("lost", &["fw1"], ChainFailure::Drop, vec![]);
    lost.right_network = "default-domain:k8s-default:gone".into();
    let s = state_of("node-1", &networks(), &interfaces, &[lost]);
    assert_eq!(s.networks, plain.networks);
    assert!(
        s.warnings.iter().any(|w| w.contains("default/lost")),
        "{:?}",
        s.warnings
    );
}

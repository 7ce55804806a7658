//! Pure tests of rendering and diffing: no kernel, no root.

use std::net::IpAddr;

use weft_model::ids::Vni;
use weft_model::node::{LocalInterface, NodeNetwork, NodeRoute, vn_table, vtep_mac};

use super::*;
use crate::attachment::Attachment;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn iface(pod: &str, vni: u32, addr: &str) -> LocalInterface {
    LocalInterface {
        namespace: "default".into(),
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

fn local(pod: &str, prefix: &str, vni: u32) -> NodeRoute {
    NodeRoute {
        prefix: net(prefix),
        next_hop: NextHop::Local {
            interface: format!("default/{pod}/eth0"),
        },
        network: format!("net{vni}"),
        reply_only: false,
        service_only: false,
    }
}

fn remote(node: &str, prefix: &str, vni: u32) -> NodeRoute {
    NodeRoute {
        prefix: net(prefix),
        next_hop: NextHop::Remote {
            node: node.into(),
            vni: Vni(vni),
        },
        network: format!("net{vni}"),
        reply_only: false,
        service_only: false,
    }
}

fn network(vni: u32, routes: Vec<NodeRoute>) -> NodeNetwork {
    NodeNetwork {
        fq_name: format!("net{vni}"),
        vni: Vni(vni),
        table: vn_table(Vni(vni)),
        gateway: Some(ip("10.47.255.254")),
        routes,
        outside: None,
        ip_fabric_forwarding: false,
        chain_guards: Vec::new(),
    }
}

/// Node 2 of the cross-node scenario: pod B (VNI 1) and pod C (VNI 4); pod A on n1.
fn node2() -> NodeState {
    NodeState {
        node: "n2".into(),
        revision: 3,
        underlay_ip: Some(ip("192.0.2.2")),
        vtep_mac: vtep_mac("n2"),
        peers: vec![VtepPeer {
            node: "n1".into(),
            underlay_ip: ip("192.0.2.1"),
            vtep_mac: vtep_mac("n1"),
        }],
        networks: vec![
            network(
                1,
                vec![
                    local("b", "10.47.255.251/32", 1),
                    remote("n1", "10.47.255.252/32", 1),
                ],
            ),
            network(4, vec![local("c", "10.47.255.249/32", 4)]),
        ],
        interfaces: vec![iface("b", 1, "10.47.255.251"), iface("c", 4, "10.47.255.249")],
        services: vec![],
        service_routes: vec![],
        warnings: vec![],
        policies: vec![],
    }
}

fn attached(pods: &[&str]) -> Attachments {
    pods.iter()
        .map(|p| {
            (
                format!("default/{p}/eth0"),
                Attachment {
                    container_id: format!("cid-{p}"),
                    if_name: "eth0".into(),
                    host_if_name: format!("weft{p}"),
                },
            )
        })
        .collect()
}

fn rule(table: u32, iif: &str, tun_id: Option<u64>, dst: Option<&str>) -> RuleSpec {
    RuleSpec {
        priority: RULE_PREF,
        table,
        iif: Some(iif.into()),
        tun_id,
        dst: dst.map(net),
        src: None,
        fwmark: None,
    }
}

#[test]
fn next_hops_come_from_the_underlay_and_never_collide() {
    let peer = |n: &str, u: &str| VtepPeer {
        node: n.into(),
        underlay_ip: ip(u),
        vtep_mac: vtep_mac(n),
    };
    let hops = peer_next_hops(&[
        peer("b", "192.0.2.2"),
        peer("a", "10.9.2.2"),      // same low 16 bits as b, sorts first
        peer("c", "192.0.0.0"),     // low bits 0.0: not usable
        peer("d", "10.0.255.255"),  // low bits 255.255: not usable
        peer("e", "2001:db8::1:7"), // IPv6 underlay: low 16 bits
    ]);
    assert_eq!(hops["a"], "169.254.2.2".parse::<Ipv4Addr>().unwrap());
    assert_eq!(hops["b"], "169.254.2.3".parse::<Ipv4Addr>().unwrap());
    // d (10.0.255.255) sorts first: 255.255 wraps to 0.0, taken as 0.1; c then gets 0.2.
    assert_eq!(hops["d"], "169.254.0.1".parse::<Ipv4Addr>().unwrap());
    assert_eq!(hops["c"], "169.254.0.2".parse::<Ipv4Addr>().unwrap());
    assert_eq!(hops["e"], "169.254.0.7".parse::<Ipv4Addr>().unwrap());
    // Order of the input does not matter.
    let again = peer_next_hops(&[
        peer("e", "2001:db8::1:7"),
        peer("d", "10.0.255.255"),
        peer("c", "192.0.0.0"),
        peer("b", "192.0.2.2"),
        peer("a", "10.9.2.2"),
    ]);
    assert_eq!(hops, again);
}

#[test]
fn desired_state_of_a_node_with_two_networks() {
    let (k, warnings) = render(&node2(), &attached(&["b", "c"]));
    assert!(warnings.is_empty(), "{warnings:?}");

    assert_eq!(k.sysctls["net/ipv4/ip_forward"], "1");
    assert_eq!(k.sysctls["net/ipv4/conf/all/rp_filter"], "0");
    assert_eq!(k.sysctls["net/ipv4/conf/default/rp_filter"], "0");
    assert_eq!(k.sysctls["net/ipv4/conf/weft-vxlan/rp_filter"], "0");

    let vx = &k.links[VXLAN_DEVICE];
    assert_eq!(
        vx.kind,
        LinkKind::Vxlan(VxlanSpec {
            local: Some(ip("192.0.2.2")),
            port: 4789,
            external: true,
            learning: false
        })
    );
    assert_eq!(vx.mac, Some(vtep_mac("n2")));
    assert_eq!(vx.mtu, Some(1450));
    assert!(vx.up);
    assert_eq!(k.links[GW_DEVICE].kind, LinkKind::Dummy);
    // Both networks use 10.47.255.254: one address.
    assert_eq!(
        k.addresses.iter().map(|a| a.addr.to_string()).collect::<Vec<_>>(),
        vec!["10.47.255.254/32"]
    );

    let expected_rules: BTreeSet<RuleSpec> = [
        rule(10_001, VXLAN_DEVICE, Some(1), None),
        rule(10_004, VXLAN_DEVICE, Some(4), None),
        rule(10_001, "weftb", None, None),
        rule(10_004, "weftc", None, None),
        rule(10_001, "lo", None, Some("10.47.255.251/32")),
        rule(10_004, "lo", None, Some("10.47.255.249/32")),
    ]
    .into_iter()
    .collect();
    assert_eq!(k.rules, expected_rules);

    let routes: Vec<String> = k.routes.values().map(|r| RouteDisplay(r).to_string()).collect();
    assert_eq!(
        routes,
        vec![
            "unreachable default table 10001",
            "10.47.255.251/32 dev weftb scope link table 10001",
            "10.47.255.252/32 via 169.254.2.1 dev weft-vxlan onlink encap ip id 1 dst 192.0.2.1 table 10001",
            "unreachable default table 10004",
            "10.47.255.249/32 dev weftc scope link table 10004",
        ]
    );
    assert_eq!(k.neighbours.len(), 1);
    let n = &k.neighbours[&(VXLAN_DEVICE.to_string(), ip("169.254.2.1"))];
    assert_eq!(n.mac, Some(vtep_mac("n1")));
    assert!(n.permanent);
}

#[test]
fn unattached_pods_and_unknown_peers_are_left_out_with_a_warning() {
    let mut state = node2();
    state.networks[0].routes.push(remote("n9", "10.47.255.1/32", 1));
    let (k, warnings) = render(&state, &attached(&["c"]));
    assert!(!k.rules.iter().any(|r| r.iif.as_deref() == Some("weftb")));
    assert!(!k.routes.values().any(|r| r.dev.as_deref() == Some("weftb")));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("default/b/eth0") && w.contains("not attached")),
        "{warnings:?}"
    );
    assert!(warnings.iter().any(|w| w.contains("n9")), "{warnings:?}");
    // Attachments of pods the state does not know are ignored.
    let k2 = desired(&state, &attached(&["c", "zz"]));
    assert_eq!(k, k2);
}

#[test]
fn no_peer_used_means_no_neighbour() {
    let mut state = node2();
    state.networks[0]
        .routes
        .retain(|r| matches!(r.next_hop, NextHop::Local { .. }));
    let k = desired(&state, &attached(&["b", "c"]));
    assert!(k.neighbours.is_empty());
}

#[test]
fn converged_kernel_needs_no_ops() {
    let k = desired(&node2(), &attached(&["b", "c"]));
    assert!(diff(&k, &k).is_empty());
}

#[test]
fn empty_kernel_is_built_in_dependency_order() {
    let k = desired(&node2(), &attached(&["b", "c"]));
    let fresh = KernelState {
        devices: ["lo", "weftb", "weftc"].iter().map(|d| d.to_string()).collect(),
        ..KernelState::default()
    };
    let ops = diff(&k, &fresh);
    let pos = |pred: &dyn Fn(&KernelOp) -> bool| ops.iter().position(pred).unwrap();
    let forward = pos(&|o| matches!(o, KernelOp::SetSysctl { key, .. } if key == "net/ipv4/ip_forward"));
    let vxlan = pos(&|o| matches!(o, KernelOp::AddLink(l) if l.name == VXLAN_DEVICE));
    let vx_sysctl = pos(&|o| matches!(o, KernelOp::SetSysctl { key, .. } if key.contains(VXLAN_DEVICE)));
    let neigh = pos(&|o| matches!(o, KernelOp::ReplaceNeighbour(_)));
    let route = pos(&|o| matches!(o, KernelOp::ReplaceRoute(r) if r.encap.is_some()));
    let rule = pos(&|o| matches!(o, KernelOp::AddRule(_)));
    assert!(forward < vxlan && vxlan < vx_sysctl && vx_sysctl < neigh && neigh < route && route < rule);
    assert!(!ops.iter().any(|o| matches!(
        o,
        KernelOp::DelRule(_) | KernelOp::DelRoute(_) | KernelOp::DelLink { .. }
    )));
    assert_eq!(
        ops.len(),
        4 + 2 + 1 + 1 + 5 + 6,
        "sysctls, links, address, neighbour, routes, rules: {ops:#?}"
    );
}

#[test]
fn removed_network_and_detached_pod_are_deleted_last() {
    let before = desired(&node2(), &attached(&["b", "c"]));
    let mut state = node2();
    state.networks.truncate(1);
    state.interfaces.truncate(1);
    let after = desired(&state, &attached(&["b"]));
    let ops = diff(&after, &before);
    let text: Vec<String> = ops.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        vec![
            "ip rule del pref 1000 to 10.47.255.249/32 iif lo lookup 10004",
            "ip rule del pref 1000 iif weft-vxlan tun_id 4 lookup 10004",
            "ip rule del pref 1000 iif weftc lookup 10004",
            "ip route del unreachable default table 10004",
            "ip route del 10.47.255.249/32 dev weftc scope link table 10004",
        ]
    );
}

#[test]
fn changed_fields_are_replaced_in_place() {
    let want = desired(&node2(), &attached(&["b", "c"]));
    let mut have = want.clone();
    // Someone changed the MTU, brought weft-gw down, reset a sysctl and pointed the
    // remote route elsewhere.
    if let Some(l) = have.links.get_mut(VXLAN_DEVICE) {
        l.mtu = Some(1500);
    }
    if let Some(l) = have.links.get_mut(GW_DEVICE) {
        l.up = false;
        l.mac = Some(MacAddr([2, 0, 0, 0, 0, 9]));
    }
    have.sysctls
        .insert("net/ipv4/conf/all/rp_filter".into(), "1".into());
    let remote_key = *want.routes.iter().find(|(_, r)| r.encap.is_some()).unwrap().0;
    if let Some(r) = have.routes.get_mut(&remote_key) {
        r.encap = Some(TunnelEncap {
            id: 1,
            dst: "192.0.2.77".parse().unwrap(),
        });
    }
    let text: Vec<String> = diff(&want, &have).iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        vec![
            "sysctl -w net.ipv4.conf.all.rp_filter=0",
            "ip link set weft-gw up",
            "ip link set weft-vxlan mtu 1450 up",
            "ip route replace 10.47.255.252/32 via 169.254.2.1 dev weft-vxlan onlink encap ip id 1 dst 192.0.2.1 table 10001",
        ]
    );
}

#[test]
fn a_wrongly_configured_vxlan_is_recreated_with_everything_through_it() {
    let want = desired(&node2(), &attached(&["b", "c"]));
    let mut have = want.clone();
    if let Some(l) = have.links.get_mut(VXLAN_DEVICE) {
        l.kind = LinkKind::Vxlan(VxlanSpec {
            local: None,
            port: 8472,
            external: true,
            learning: false,
        });
    }
    let ops = diff(&want, &have);
    let text: Vec<String> = ops.iter().map(ToString::to_string).collect();
    assert_eq!(text[0], "ip link del weft-vxlan");
    assert!(text[1].starts_with("ip link add weft-vxlan address"), "{text:?}");
    assert!(text.contains(&"sysctl -w net.ipv4.conf.weft-vxlan.rp_filter=0".to_string()));
    assert!(text.iter().any(|t| t.starts_with("ip neigh replace 169.254.2.1")));
    assert!(text.iter().any(|t| t.contains("encap ip id 1")));
    // Rules name the device and survive its re-creation: nothing to do for them.
    assert!(!text.iter().any(|t| t.starts_with("ip rule")), "{text:?}");
}

#[test]
fn foreign_kind_under_an_owned_name_is_replaced() {
    let want = desired(&node2(), &attached(&[]));
    let mut have = want.clone();
    if let Some(l) = have.links.get_mut(GW_DEVICE) {
        l.kind = LinkKind::Other("bridge".into());
    }
    let text: Vec<String> = diff(&want, &have).iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        vec![
            "ip link del weft-gw",
            "ip link add weft-gw type dummy && ip link set weft-gw up",
            "ip addr add 10.47.255.254/32 dev weft-gw",
        ]
    );
}

#[test]
fn routes_through_a_vanished_pod_veth_are_skipped() {
    let k = desired(&node2(), &attached(&["b", "c"]));
    let mut have = k.clone();
    have.devices = ["lo", "weftb"].iter().map(|d| d.to_string()).collect();
    // weftc is gone, and with it the kernel's route through it.
    have.routes.retain(|_, r| r.dev.as_deref() != Some("weftc"));
    assert!(diff(&k, &have).is_empty());
}

#[test]
fn sysctl_device_names_only_devices() {
    assert_eq!(
        sysctl_device("net/ipv4/conf/weft-vxlan/rp_filter"),
        Some("weft-vxlan")
    );
    assert_eq!(sysctl_device("net/ipv4/conf/all/rp_filter"), None);
    assert_eq!(sysctl_device("net/ipv4/ip_forward"), None);
}

#[test]
fn ipv6_and_foreign_tables_are_skipped() {
    let mut state = node2();
    state.interfaces[0].ip = ip("fd00::1");
    state.networks[1].table = 254;
    let (k, warnings) = render(&state, &attached(&["b", "c"]));
    assert!(k.rules.iter().all(|r| r.table >= VN_TABLE_BASE));
    assert!(
        k.routes
            .keys()
            .all(|r| r.table >= VN_TABLE_BASE && r.dst.addr().is_ipv4())
    );
    assert!(!k.rules.iter().any(|r| r.iif.as_deref() == Some("weftb")));
    assert!(warnings.iter().any(|w| w.contains("IPv6")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("254")), "{warnings:?}");
}

#[test]
fn outside_services_get_mark_rules_and_the_service_table() {
    use weft_model::node::{L4Protocol, NodeService, NodeServicePort, SERVICE_TABLE, SessionAffinity};
    let mut s = node2();
    // Without a NodePort / external IP: nothing of it.
    let plain = desired(&s, &attached(&["b", "c"]));
    assert!(plain.rules.iter().all(|r| r.priority == RULE_PREF));
    assert!(!plain.routes.keys().any(|k| k.table == SERVICE_TABLE));

    s.services = vec![NodeService {
        namespace: "dev".into(),
        name: "np".into(),
        service_type: "NodePort".into(),
        vip: None,
        network: "svc".into(),
        client_tables: vec![],
        affinity: SessionAffinity::None,
        external_ips: vec![],
        ports: vec![NodeServicePort {
            name: String::new(),
            protocol: L4Protocol::Tcp,
            port: 80,
            node_port: Some(30080),
            backends: vec![],
        }],
    }];
    s.service_routes = vec![
        local("b", "10.47.255.251/32", 1),
        remote("n1", "10.47.255.252/32", 1),
    ];
    let (k, warnings) = render(&s, &attached(&["b", "c"]));
    assert!(warnings.is_empty(), "{warnings:?}");
    let marks: Vec<(u32, Option<u32>)> = k
        .rules
        .iter()
        .filter(|r| r.priority == crate::nft::MARK_RULE_PREF)
        .map(|r| (r.table, r.fwmark))
        .collect();
    assert_eq!(
        marks,
        vec![
            (MAIN_TABLE, Some(crate::nft::MARK_REPLY)),
            (SERVICE_TABLE, Some(crate::nft::MARK_TO_BACKEND)),
        ]
    );
    assert!(k.rules.iter().all(RuleSpec::is_owned));
    let service: Vec<String> = k
        .routes
        .values()
        .filter(|r| r.key.table == SERVICE_TABLE)
        .map(|r| RouteDisplay(r).to_string())
        .collect();
    assert_eq!(
        service,
        vec![
            "unreachable default table 10000".to_string(),
            "10.47.255.251/32 dev weftb scope link table 10000".to_string(),
            "10.47.255.252/32 via 169.254.2.1 dev weft-vxlan onlink encap ip id 1 dst 192.0.2.1 table 10000"
                .to_string(),
        ]
    );
    // A foreign rule at the mark preference with another mark is not weft's.
    let foreign = RuleSpec {
        priority: crate::nft::MARK_RULE_PREF,
        table: MAIN_TABLE,
        iif: None,
        tun_id: None,
        dst: None,
        src: None,
        fwmark: Some(7),
    };
    assert!(!foreign.is_owned());
    assert_eq!(
        KernelOp::AddRule(k.rules.iter().find(|r| r.table == MAIN_TABLE).unwrap().clone()).to_string(),
        "ip rule add pref 999 fwmark 0x1000002 lookup 254"
    );
}

#[test]
fn imported_routes_tunnel_straight_to_the_external_vtep() {
    let mut state = node2();
    let external = |prefix: &str, address: &str, mac: &str| NodeRoute {
        prefix: net(prefix),
        next_hop: NextHop::External {
            address: ip(address),
            vni: Vni(7),
            vtep_mac: MacAddr::derived_from(mac),
        },
        network: "net1".into(),
        reply_only: false,
        service_only: false,
    };
    state.networks[0]
        .routes
        .push(external("10.63.255.252/32", "192.0.2.31", "vtep c2-n1"));
    state.networks[0]
        .routes
        .push(external("10.63.255.251/32", "192.0.2.31", "vtep c2-n1"));
    // Same VTEP announced with another MAC: the first one wins, with a warning.
    state.networks[0]
        .routes
        .push(external("10.63.255.250/32", "192.0.2.31", "vtep other"));
    let (kernel, warnings) = render(&state, &attached(&["b", "c"]));
    let hop = IpAddr::V4(Ipv4Addr::new(169, 254, 2, 31));
    let route = kernel
        .routes
        .get(&RouteKey {
            table: vn_table(Vni(1)),
            dst: net("10.63.255.252/32"),
            metric: 0,
        })
        .expect("imported route rendered");
    assert_eq!(route.via, Some(hop));
    assert!(route.onlink);
    assert_eq!(
        route.encap,
        Some(TunnelEncap {
            id: 7,
            dst: Ipv4Addr::new(192, 0, 2, 31)
        })
    );
    let neighbour = kernel
        .neighbours
        .get(&(VXLAN_DEVICE.to_string(), hop))
        .expect("one neighbour for the external VTEP");
    assert_eq!(neighbour.mac, Some(MacAddr::derived_from("vtep c2-n1")));
    // The cluster's own peer keeps its neighbour too.
    assert_eq!(kernel.neighbours.len(), 2);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("192.0.2.31"), "{warnings:?}");
}

/// `node2()` with network 1 in ip-fabric-forwarding mode (outside set as the controller
/// does), and network 4 connected to it (a leaked route to pod A on n1 through VNI 1).
fn fabric_node2() -> NodeState {
    let mut s = node2();
    s.networks[0].ip_fabric_forwarding = true;
    s.networks[0].outside = Some(weft_model::node::Outside {
        cluster_subnets: vec![net("10.32.0.0/12")],
        fabric_snat: false,
    });
    s.networks[1].routes.push(remote("n1", "10.47.255.252/32", 1));
    s
}

#[test]
fn ip_fabric_forwarding_routes_own_pods_natively_through_the_underlay() {
    let state = fabric_node2();
    let (d, warnings) = render(&state, &attached(&["b", "c"]));
    assert!(warnings.is_empty(), "{warnings:?}");
    let t1 = vn_table(Vni(1));
    let t4 = vn_table(Vni(4));
    let key = |table, dst| RouteKey {
        table,
        dst: net(dst),
        metric: 0,
    };
    // Own remote pod: natively via the peer's underlay address, no encapsulation.
    let native = &d.routes[&key(t1, "10.47.255.252/32")];
    assert_eq!(native.dev.as_deref(), Some(UNDERLAY_DEVICE));
    assert_eq!(native.via, Some(ip("192.0.2.1")));
    assert!(native.onlink);
    assert_eq!(native.encap, None);
    // The connected network still goes through the overlay.
    let leaked = &d.routes[&key(t4, "10.47.255.252/32")];
    assert_eq!(leaked.dev.as_deref(), Some(VXLAN_DEVICE));
    assert!(leaked.encap.is_some());
    // Only the cluster's ranges fail fast: everything else falls through to main.
    assert_eq!(d.routes[&key(t1, "10.32.0.0/12")].kind, RouteKind::Unreachable);
    assert!(!d.routes.contains_key(&key(t1, "0.0.0.0/0")));
    assert!(d.routes.contains_key(&key(t4, "0.0.0.0/0")));
    // From the underlay to the local fabric pod only; no unconditional `to <pod>` rule.
    assert!(
        d.rules
            .contains(&rule(t1, UNDERLAY_DEVICE, None, Some("10.47.255.251/32")))
    );
    assert!(
        !d.rules
            .iter()
            .any(|r| r.iif.is_none() && r.fwmark.is_none() && r.dst.is_some())
    );
    assert!(
        !d.rules
            .iter()
            .any(|r| r.iif.as_deref() == Some(UNDERLAY_DEVICE) && r.table == t4),
        "network 4 is not fabric-forwarded"
    );
    assert_eq!(d.underlay_ip, Some(ip("192.0.2.2")));
}

#[test]
fn the_underlay_device_is_bound_from_the_observed_addresses() {
    let (d, _) = render(&fabric_node2(), &attached(&["b", "c"]));
    let t1 = vn_table(Vni(1));
    let mut actual = KernelState::default();
    actual.local_addresses.insert(ip("192.0.2.2"), "ul0".into());
    actual.devices.insert("ul0".into());
    let (bound, warning) = bind_underlay(&d, &actual);
    assert_eq!(warning, None);
    assert!(
        bound
            .rules
            .contains(&rule(t1, "ul0", None, Some("10.47.255.251/32")))
    );
    assert!(
        !bound
            .rules
            .iter()
            .any(|r| r.iif.as_deref() == Some(UNDERLAY_DEVICE))
    );
    let native = &bound.routes[&RouteKey {
        table: t1,
        dst: net("10.47.255.252/32"),
        metric: 0,
    }];
    assert_eq!(native.dev.as_deref(), Some("ul0"));
    // Converged once applied: nothing to do.
    let mut applied = bound.clone();
    applied.underlay_ip = None;
    applied.local_addresses = actual.local_addresses.clone();
    applied.devices = ["ul0", "wefta", "weftb", "weftc"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (again, _) = bind_underlay(&d, &applied);
    assert!(diff(&again, &applied).is_empty(), "{:?}", diff(&again, &applied));

    // No device holds the underlay address: the underlay routes and rules are left out.
    let (unbound, warning) = bind_underlay(&d, &KernelState::default());
    assert!(warning.is_some());
    assert!(
        !unbound
            .routes
            .values()
            .any(|r| r.dev.as_deref() == Some(UNDERLAY_DEVICE))
    );
    assert!(
        !unbound
            .rules
            .iter()
            .any(|r| r.iif.as_deref() == Some(UNDERLAY_DEVICE))
    );
    // A state without fabric networks is returned as is.
    let plain = desired(&node2(), &attached(&["b", "c"]));
    assert_eq!(bind_underlay(&plain, &KernelState::default()), (plain, None));
}

#[test]
fn local_route_to_a_prefix_behind_a_pod_goes_via_its_address_onlink() {
    // A service chain hop fw (10.10.0.10, table 10010): the left table sends the right
    // network's endpoints to it.
    let mut state = node2();
    state.interfaces.push(iface("fw", 10, "10.10.0.10"));
    state.networks.push(network(
        10,
        vec![
            local("fw", "10.10.0.10/32", 10),
            local("fw", "10.20.0.2/32", 20),
            local("fw", "10.30.0.0/24", 20),
        ],
    ));
    let (k, warnings) = render(&state, &attached(&["b", "c", "fw"]));
    assert!(warnings.is_empty(), "{warnings:?}");
    let key = |dst: &str| RouteKey {
        table: 10_010,
        dst: net(dst),
        metric: 0,
    };
    // Its own /32: on the link, as before.
    let own = &k.routes[&key("10.10.0.10/32")];
    assert_eq!((own.scope, own.via, own.onlink), (Scope::Link, None, false));
    assert_eq!(own.dev.as_deref(), Some("weftfw"));
    // Behind it: via its address on its veth, onlink, scope universe.
    for dst in ["10.20.0.2/32", "10.30.0.0/24"] {
        let r = &k.routes[&key(dst)];
        assert_eq!(r.kind, RouteKind::Unicast);
        assert_eq!(r.scope, Scope::Universe, "{dst}");
        assert_eq!(r.via, Some(ip("10.10.0.10")), "{dst}");
        assert!(r.onlink, "{dst}");
        assert_eq!(r.dev.as_deref(), Some("weftfw"), "{dst}");
        assert_eq!(r.encap, None);
    }
    assert_eq!(
        RouteDisplay(&k.routes[&key("10.20.0.2/32")]).to_string(),
        "10.20.0.2/32 via 10.10.0.10 dev weftfw onlink table 10010"
    );
    // A route behind a pod that is not attached yet: a warning, no route.
    let (k, warnings) = render(&state, &attached(&["b", "c"]));
    assert!(!k.routes.contains_key(&key("10.20.0.2/32")));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("10.20.0.2/32") && w.contains("not attached")),
        "{warnings:?}"
    );
}

#[test]
fn a_routing_instance_gets_its_vni_rule_and_its_hop_interfaces() {
    // fw's interface faces a service chain's routing instance (VNI 100): it enters that
    // table, and traffic received with VNI 100 does too.
    let mut state = node2();
    state.interfaces.push(iface("fw", 100, "10.20.0.10"));
    state.networks.push(network(
        100,
        vec![
            local("fw", "10.10.0.2/32", 100),
            remote("n1", "10.20.0.3/32", 100),
        ],
    ));
    let (k, warnings) = render(&state, &attached(&["b", "c", "fw"]));
    assert!(warnings.is_empty(), "{warnings:?}");
    for r in [
        rule(10_100, VXLAN_DEVICE, Some(100), None),
        rule(10_100, "weftfw", None, None),
        rule(10_100, "lo", None, Some("10.20.0.10/32")),
    ] {
        assert!(k.rules.contains(&r), "{r:?} missing from {:?}", k.rules);
    }
    let routes: Vec<String> = k
        .routes
        .values()
        .filter(|r| r.key.table == 10_100)
        .map(|r| RouteDisplay(r).to_string())
        .collect();
    assert_eq!(
        routes,
        vec![
            "unreachable default table 10100",
            "10.10.0.2/32 via 10.20.0.10 dev weftfw onlink table 10100",
            "10.20.0.3/32 via 169.254.2.1 dev weft-vxlan onlink encap ip id 100 dst 192.0.2.1 table 10100",
            "10.20.0.10/32 dev weftfw scope link table 10100",
        ]
    );
}

#[test]
fn fabric_snat_reserves_its_port_pools_and_keeps_other_reservations() {
    let mut state = node2();
    let (k, _) = render(&state, &attached(&["b", "c"]));
    assert!(
        !k.sysctls.contains_key(RESERVED_PORTS_SYSCTL),
        "no SNAT, no reservation"
    );
    state.networks[0].outside = Some(weft_model::node::Outside {
        cluster_subnets: vec![net("10.32.0.0/12")],
        fabric_snat: true,
    });
    let (desired, _) = render(&state, &attached(&["b", "c"]));
    assert_eq!(desired.sysctls[RESERVED_PORTS_SYSCTL], "56000-58047");
    let with = |value: &str| {
        let mut actual = KernelState::default();
        actual
            .sysctls
            .insert(RESERVED_PORTS_SYSCTL.to_string(), value.to_string());
        let mut d = desired.clone();
        reserve_ports(&mut d, &actual);
        let writes = diff(&d, &actual)
            .iter()
            .filter(|op| matches!(op, KernelOp::SetSysctl { key, .. } if key == RESERVED_PORTS_SYSCTL))
            .count();
        (d.sysctls[RESERVED_PORTS_SYSCTL].clone(), writes)
    };
    // Nothing reserved yet: ours is written.
    assert_eq!(with(""), ("56000-58047".to_string(), 1));
    // Someone else's reservation is kept, ours added.
    assert_eq!(
        with("8080,9000-9010"),
        ("8080,9000-9010,56000-58047".to_string(), 1)
    );
    // Already covered (as the kernel prints it after our write, merged with a
    // neighbour): no write at all.
    assert_eq!(with("8080,55990-58100"), ("8080,55990-58100".to_string(), 0));
    // Partly covered: ours is added (the kernel merges the overlap).
    assert_eq!(with("56000-56999"), ("56000-56999,56000-58047".to_string(), 1));
}

//! Pure tests of the export and import mappings and the overlap refusal.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weft_bgp::Vpnv4Route;
use weft_model::derived::BackendRecord;
use weft_model::{BgpPeerSpec, NetworkKind};

use super::*;

const POD: &str = "default-domain:k8s-default:k8s-default-pod-network";
const SVC: &str = "default-domain:k8s-default:k8s-default-service-network";
const RID: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn network(fq: &str, vni: u32, import: &[&str], export: &[&str]) -> VirtualNetworkRecord {
    VirtualNetworkRecord {
        fq_name: fq.into(),
        name: fq.rsplit(':').next().unwrap().into(),
        project: "k8s-default".into(),
        namespace: "default".into(),
        kind: NetworkKind::Pod,
        ipam: "k8s-pod-ipam".into(),
        subnets: vec![],
        gateway: None,
        vni: Vni(vni),
        routing_instance: fq.into(),
        import_targets: import.iter().map(|s| s.to_string()).collect(),
        export_targets: export.iter().map(|s| s.to_string()).collect(),
        connected_networks: vec![],
        ip_fabric_forwarding: false,
        origin: "cluster".into(),
    }
}

fn node(name: &str, ip: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn iface(pod: &str, node: Option<&str>, ip: &str) -> InterfaceAttachment {
    InterfaceAttachment {
        namespace: "default".into(),
        pod: pod.into(),
        pod_uid: String::new(),
        node: node.map(str::to_string),
        interface: "eth0".into(),
        network: POD.into(),
        ip: ip.parse().unwrap(),
        prefix_len: 12,
        gateway: None,
        mac: MacAddr::derived_from(pod),
        primary: true,
    }
}

fn service(vip: &str, backends: &[(&str, &str, bool)]) -> ServiceRecord {
    ServiceRecord {
        namespace: "default".into(),
        name: "web".into(),
        service_type: "ClusterIP".into(),
        vip: Some(vip.parse().unwrap()),
        network: SVC.into(),
        ports: vec![],
        session_affinity: "None".into(),
        external_ips: vec![],
        backends: backends
            .iter()
            .map(|(ip, node, ready)| BackendRecord {
                pod: None,
                ip: ip.parse().unwrap(),
                node: Some(node.to_string()),
                ready: *ready,
                target_ports: Default::default(),
            })
            .collect(),
        backends_from: "selector".into(),
        note: None,
        floating_ips: vec![],
        fip_pool: None,
        fip_network: None,
    }
}

fn vpn_key(vni: u16, ip: &str) -> RouteKey {
    RouteKey::Vpnv4 {
        rd: RouteDistinguisher::Ipv4 { ip: RID, number: vni },
        prefix: ip.parse().unwrap(),
    }
}

#[test]
fn pods_and_vips_are_exported_as_vpnv4_and_ipv4() {
    let networks = vec![
        network(
            POD,
            5,
            &["target:64512:5"],
            &["target:64512:5", "target:64512:900"],
        ),
        VirtualNetworkRecord {
            connected_networks: vec![POD.into()],
            kind: NetworkKind::Service,
            ..network(SVC, 6, &["target:64512:6"], &["target:64512:6"])
        },
    ];
    let interfaces = vec![
        iface("a", Some("n1"), "10.47.255.252"),
        iface("b", Some("n2"), "10.47.255.251"),
        // Not scheduled yet: nothing to export.
        iface("c", None, "10.47.255.250"),
    ];
    let services = vec![service(
        "10.96.0.10",
        &[("10.47.255.252", "n1", false), ("10.47.255.251", "n2", true)],
    )];
    let nodes = vec![node("n1", "192.0.2.11"), node("n2", "192.0.2.12")];
    let (exports, notes) = export_routes(RID, &networks, &interfaces, &services, &[], &nodes);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(exports.len(), 7, "{exports:#?}");
    let a = &exports[&vpn_key(5, "10.47.255.252/32")];
    assert_eq!(a.label, Some(5));
    assert_eq!(a.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 11)));
    assert_eq!(
        a.attrs.route_targets(),
        vec![
            "target:64512:5".parse::<RouteTarget>().unwrap(),
            "target:64512:900".parse().unwrap()
        ]
    );
    assert_eq!(router_mac(&a.attrs), Some(vtep_mac("n1")));
    // The VIP goes to the node of its (only) ready backend, with the service network's VNI.
    let vip = &exports[&vpn_key(6, "10.96.0.10/32")];
    assert_eq!(vip.label, Some(6));
    assert_eq!(vip.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 12)));
    assert_eq!(router_mac(&vip.attrs), Some(vtep_mac("n2")));
    // Leaked into the connected pod network: that network's RD, VNI and targets, so a
    // cluster importing the pod network's targets reaches the VIP.
    let leaked = &exports[&vpn_key(5, "10.96.0.10/32")];
    assert_eq!(leaked.label, Some(5));
    assert_eq!(leaked.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 12)));
    assert_eq!(leaked.attrs.route_targets(), a.attrs.route_targets());
    // IPv4 unicast for routers: same next hops, no label, no communities.
    let plain = &exports[&RouteKey::Ipv4("10.96.0.10/32".parse().unwrap())];
    assert_eq!(plain.label, None);
    assert_eq!(plain.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 12)));
    assert!(plain.attrs.ext_communities.is_empty());
}

#[test]
fn floating_ips_are_exported_in_the_pool_network_and_withdrawn_without_backends() {
    const EXT: &str = "default-domain:k8s-public:ext";
    let networks = vec![
        network(POD, 5, &["target:64512:5"], &["target:64512:5"]),
        network(SVC, 6, &["target:64512:6"], &["target:64512:6"]),
        VirtualNetworkRecord {
            kind: NetworkKind::Custom,
            ..network(
                EXT,
                9,
                &["target:64512:9"],
                &["target:64512:9", "target:64512:777"],
            )
        },
    ];
    let nodes = vec![node("n1", "192.0.2.11"), node("n2", "192.0.2.12")];
    let mut lb = service(
        "10.96.0.20",
        &[("10.47.255.252", "n1", false), ("10.47.255.251", "n2", true)],
    );
    lb.service_type = "LoadBalancer".into();
    lb.floating_ips = vec!["203.0.113.252".parse().unwrap()];
    lb.fip_pool = Some("public/pool".into());
    lb.fip_network = Some(EXT.into());
    let (exports, notes) = export_routes(RID, &networks, &[], std::slice::from_ref(&lb), &[], &nodes);
    assert!(notes.is_empty(), "{notes:?}");
    let fip = &exports[&vpn_key(9, "203.0.113.252/32")];
    assert_eq!(fip.label, Some(9), "label = the pool network's VNI");
    assert_eq!(
        fip.attrs.next_hop,
        Some(Ipv4Addr::new(192, 0, 2, 12)),
        "the node of the ready backend"
    );
    assert_eq!(
        fip.attrs.route_targets(),
        vec![
            "target:64512:9".parse::<RouteTarget>().unwrap(),
            "target:64512:777".parse().unwrap()
        ]
    );
    assert_eq!(router_mac(&fip.attrs), Some(vtep_mac("n2")));
    // Only in the pool's network, not in the service or pod networks.
    assert!(!exports.contains_key(&vpn_key(6, "203.0.113.252/32")));
    assert!(!exports.contains_key(&vpn_key(5, "203.0.113.252/32")));
    let plain = &exports[&RouteKey::Ipv4("203.0.113.252/32".parse().unwrap())];
    assert_eq!(plain.label, None);
    assert_eq!(plain.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 12)));
    // No ready backend: VIP and floating IP withdrawn.
    for b in &mut lb.backends {
        b.ready = false;
    }
    let (exports, _) = export_routes(RID, &networks, &[], &[lb], &[], &nodes);
    assert!(
        !exports
            .keys()
            .any(|k| matches!(k, RouteKey::Ipv4(p) if p.to_string() == "203.0.113.252/32")),
        "{exports:#?}"
    );
    assert!(!exports.contains_key(&vpn_key(9, "203.0.113.252/32")));
}

/// Pod floating IP `ip` of pool network `network`, bound to pod `pod` at `fixed` on
/// `node` (unbound when `node` is `None`).
fn pod_fip(network: &str, ip: &str, pod: &str, bound: Option<(&str, &str)>) -> FloatingIpRecord {
    FloatingIpRecord {
        namespace: "default".into(),
        name: format!("{pod}-fip"),
        ip: Some(ip.parse().unwrap()),
        pool: "public/pool".into(),
        network: Some(network.into()),
        pod: pod.into(),
        interface: "eth0".into(),
        fixed_ip: bound.map(|(fixed, _)| fixed.parse().unwrap()),
        node: bound.map(|(_, node)| node.to_string()),
        note: None,
    }
}

#[test]
fn pod_floating_ips_are_exported_in_the_pool_network_with_the_pod_node_as_next_hop() {
    const EXT: &str = "default-domain:k8s-public:ext";
    let networks = vec![
        network(POD, 5, &["target:64512:5"], &["target:64512:5"]),
        VirtualNetworkRecord {
            kind: NetworkKind::Custom,
            ..network(
                EXT,
                9,
                &["target:64512:9"],
                &["target:64512:9", "target:64512:777"],
            )
        },
    ];
    let nodes = vec![node("n1", "192.0.2.11"), node("n2", "192.0.2.12")];
    let on_n1 = [iface("web", Some("n1"), "10.47.255.252")];
    let bound_n1 = pod_fip(EXT, "203.0.113.7", "web", Some(("10.47.255.252", "n1")));
    let (exports, notes) = export_routes(
        RID,
        &networks,
        &on_n1,
        &[],
        std::slice::from_ref(&bound_n1),
        &nodes,
    );
    assert!(notes.is_empty(), "{notes:?}");
    let vpn = &exports[&vpn_key(9, "203.0.113.7/32")];
    assert_eq!(vpn.label, Some(9), "label = the pool network's VNI");
    assert_eq!(vpn.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 11)));
    assert_eq!(
        vpn.attrs.route_targets(),
        vec![
            "target:64512:9".parse::<RouteTarget>().unwrap(),
            "target:64512:777".parse().unwrap()
        ]
    );
    assert_eq!(router_mac(&vpn.attrs), Some(vtep_mac("n1")));
    assert!(
        !exports.contains_key(&vpn_key(5, "203.0.113.7/32")),
        "not in the pod's own network"
    );
    let plain = &exports[&RouteKey::Ipv4("203.0.113.7/32".parse().unwrap())];
    assert_eq!(
        (plain.label, plain.attrs.next_hop),
        (None, Some(Ipv4Addr::new(192, 0, 2, 11)))
    );
    // The pod re-created on n2 (new address): the same floating IP, next hop n2.
    let on_n2 = [iface("web", Some("n2"), "10.47.255.249")];
    let bound_n2 = pod_fip(EXT, "203.0.113.7", "web", Some(("10.47.255.249", "n2")));
    let (exports, _) = export_routes(RID, &networks, &on_n2, &[], &[bound_n2], &nodes);
    let vpn = &exports[&vpn_key(9, "203.0.113.7/32")];
    assert_eq!(vpn.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 12)));
    assert_eq!(router_mac(&vpn.attrs), Some(vtep_mac("n2")));
    let plain = &exports[&RouteKey::Ipv4("203.0.113.7/32".parse().unwrap())];
    assert_eq!(plain.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 12)));
    // Unbound (the pod deleted): withdrawn, while the pod network's routes stay.
    let unbound = pod_fip(EXT, "203.0.113.7", "web", None);
    let (exports, notes) = export_routes(RID, &networks, &[], &[], &[unbound], &nodes);
    assert!(exports.is_empty() && notes.is_empty(), "{exports:#?} {notes:?}");
    // A pool network that is not stored: noted, not exported.
    let lost = pod_fip(
        "default-domain:k8s-public:gone",
        "203.0.113.8",
        "web",
        Some(("10.47.255.252", "n1")),
    );
    let (exports, notes) = export_routes(RID, &networks, &on_n1, &[], &[lost], &nodes);
    assert_eq!(exports.len(), 2, "only the pod's own /32: {exports:#?}");
    assert!(
        notes.iter().any(|n| n.contains("FloatingIp default/web-fip")),
        "{notes:?}"
    );
}

#[test]
fn endpoints_on_nodes_without_address_are_noted_not_exported() {
    let networks = vec![network(POD, 5, &[], &["target:64512:5"])];
    let (exports, notes) = export_routes(
        RID,
        &networks,
        &[iface("a", Some("ghost"), "10.47.255.252")],
        &[],
        &[],
        &[],
    );
    assert!(exports.is_empty());
    assert_eq!(notes.len(), 1);
    assert!(notes[0].contains("ghost"), "{notes:?}");
}

fn received(
    peer: u32,
    rd: &str,
    prefix: &str,
    vni: u32,
    rts: &[&str],
    next_hop: &str,
    mac: Option<MacAddr>,
) -> (Route, Path) {
    let route_targets: Vec<RouteTarget> = rts.iter().map(|t| t.parse().unwrap()).collect();
    let mut attrs = PathAttributes {
        next_hop: Some(next_hop.parse().unwrap()),
        ..PathAttributes::default()
    };
    attrs.ext_communities = route_targets
        .iter()
        .map(|t| ExtCommunity::RouteTarget(*t))
        .collect();
    attrs.ext_communities.extend(mac.map(router_mac_community));
    (
        Route::Vpnv4(Vpnv4Route {
            rd: rd.parse().unwrap(),
            prefix: prefix.parse().unwrap(),
            label: vni,
            route_targets,
        }),
        Path {
            source: PathSource::Peer(PeerId(peer)),
            attrs: Arc::new(attrs),
            label: Some(vni),
            stale: false,
        },
    )
}

#[test]
fn vpnv4_routes_land_in_networks_importing_their_targets() {
    let fed = "default-domain:k8s-default:fed";
    let networks = vec![
        network(POD, 5, &["target:64512:5"], &["target:64512:5"]),
        network(fed, 7, &["target:64512:7", "target:64513:7"], &["target:64512:7"]),
    ];
    let mac = MacAddr::derived_from("vtep c2-n1");
    let routes = vec![
        received(
            1,
            "192.0.2.200:7",
            "10.63.255.252/32",
            7,
            &["target:64513:7"],
            "192.0.2.21",
            Some(mac),
        ),
        // Targets nobody here imports.
        received(
            1,
            "192.0.2.200:8",
            "10.63.255.251/32",
            8,
            &["target:64513:8"],
            "192.0.2.21",
            Some(mac),
        ),
        // No router MAC: the VTEP cannot be programmed.
        received(
            1,
            "192.0.2.200:7",
            "10.63.255.250/32",
            7,
            &["target:64513:7"],
            "192.0.2.21",
            None,
        ),
        // Our own route, echoed back by the other side.
        received(
            1,
            "192.0.2.100:7",
            "10.47.255.252/32",
            7,
            &["target:64512:7"],
            "192.0.2.11",
            Some(mac),
        ),
        // From a peer that is not accepted (refused or unknown).
        received(
            9,
            "192.0.2.200:7",
            "10.63.255.249/32",
            7,
            &["target:64513:7"],
            "192.0.2.21",
            Some(mac),
        ),
    ];
    let peers = BTreeMap::from([(PeerId(1), "cluster-2".to_string())]);
    let own = BTreeSet::from([Ipv4Addr::new(192, 0, 2, 11)]);
    let (imported, accepted) = import_routes(&routes, &peers, &networks, &own);
    assert_eq!(
        imported,
        vec![ImportedRoute {
            network: fed.into(),
            prefix: "10.63.255.252/32".parse().unwrap(),
            address: "192.0.2.21".parse().unwrap(),
            vni: Vni(7),
            vtep_mac: mac,
            rd: "192.0.2.200:7".into(),
            route_targets: vec!["target:64513:7".into()],
            peer: "cluster-2".into(),
        }]
    );
    assert_eq!(accepted, BTreeMap::from([("cluster-2".to_string(), 1)]));
}

#[test]
fn overlapping_cluster_peer_is_refused_naming_both_ranges() {
    let cfg = EffectiveConfig::default();
    let peer = |subnets: &[&str], role: &str| {
        let spec: BgpPeerSpec = serde_json::from_value(serde_json::json!({
            "address": "192.0.2.200", "asn": 64513, "role": role, "remoteSubnets": subnets
        }))
        .unwrap();
        spec.validate("BgpPeer c2", "c2").unwrap()
    };
    let ok = peer(&["10.48.0.0/12", "10.112.0.0/12"], "cluster");
    assert_eq!(refusal(&cfg, &ok), None);
    let clash = peer(&["10.48.0.0/12", "10.96.0.0/16"], "cluster");
    let why = refusal(&cfg, &clash).expect("refused");
    assert!(
        why.contains("service subnet 10.96.0.0/12") && why.contains("10.96.0.0/16"),
        "{why}"
    );
    // Routers are not clusters: their subnets are not compared.
    assert_eq!(refusal(&cfg, &peer(&["10.96.0.0/16"], "router")), None);
}

#[test]
fn router_mac_round_trips() {
    let mac = MacAddr::derived_from("vtep n1");
    let attrs = PathAttributes {
        ext_communities: vec![router_mac_community(mac)],
        ..PathAttributes::default()
    };
    assert_eq!(router_mac(&attrs), Some(mac));
    assert_eq!(router_mac(&PathAttributes::default()), None);
}

#[test]
fn route_reflector_clients_come_from_the_bgp_peer() {
    let peer = |extra: serde_json::Value| {
        let mut spec = serde_json::json!({"address": "192.0.2.201", "asn": 64512, "role": "router"});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let spec: BgpPeerSpec = serde_json::from_value(spec).unwrap();
        peer_config(&spec.validate("BgpPeer gw2", "gw2").unwrap())
    };
    assert!(!peer(serde_json::json!({})).rr_client);
    assert!(peer(serde_json::json!({"routeReflectorClient": true})).rr_client);
}

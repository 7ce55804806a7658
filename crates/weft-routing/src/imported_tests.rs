//! Routes imported over BGP ([`add_imported_routes`]).

use weft_model::node::{NodeNetwork, NodeRoute};
use weft_model::{ImportedRoute, MacAddr, Vni};

use super::*;

const POD: &str = "default-domain:k8s-default:k8s-default-pod-network";
const OTHER: &str = "default-domain:k8s-dev:k8s-dev-pod-network";

fn state() -> NodeState {
    NodeState {
        node: "node-1".into(),
        revision: 3,
        underlay_ip: Some("192.0.2.11".parse().unwrap()),
        vtep_mac: vtep_mac("node-1"),
        peers: vec![],
        networks: vec![NodeNetwork {
            fq_name: POD.into(),
            vni: Vni(1),
            table: vn_table(Vni(1)),
            gateway: None,
            routes: vec![NodeRoute {
                prefix: "10.47.255.252/32".parse().unwrap(),
                next_hop: NextHop::Local {
                    interface: "default/a/eth0".into(),
                },
                network: POD.into(),
                reply_only: false,
                service_only: false,
            }],
            outside: None,
            ip_fabric_forwarding: false,
            chain_guards: Vec::new(),
        }],
        interfaces: vec![],
        services: vec![],
        service_routes: vec![],
        warnings: vec![],
        policies: vec![],
    }
}

fn imported(network: &str, prefix: &str) -> ImportedRoute {
    ImportedRoute {
        network: network.into(),
        prefix: prefix.parse().unwrap(),
        address: "192.0.2.21".parse().unwrap(),
        vni: Vni(5),
        vtep_mac: MacAddr::derived_from("vtep c2-node-1"),
        rd: "192.0.2.100:5".into(),
        route_targets: vec!["target:64513:5".into()],
        peer: "cluster-2".into(),
    }
}

#[test]
fn imported_routes_land_in_their_network_table_only() {
    let mut s = state();
    add_imported_routes(
        &mut s,
        &[
            imported(POD, "10.63.255.252/32"),
            imported(POD, "10.0.0.0/32"),
            // A network this node has no table of: nothing to do here.
            imported(OTHER, "10.63.255.250/32"),
        ],
    );
    let t = &s.networks[0];
    let prefixes: Vec<String> = t.routes.iter().map(|r| r.prefix.to_string()).collect();
    assert_eq!(prefixes, ["10.0.0.0/32", "10.47.255.252/32", "10.63.255.252/32"]);
    assert_eq!(
        t.routes[2].next_hop,
        NextHop::External {
            address: "192.0.2.21".parse().unwrap(),
            vni: Vni(5),
            vtep_mac: MacAddr::derived_from("vtep c2-node-1"),
        }
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let text = render_routes(&s);
    assert!(
        text.contains("10.63.255.252/32 encap vxlan id 5 dst 192.0.2.21 (external, BGP)"),
        "{text}"
    );
}

#[test]
fn own_endpoints_win_over_imported_ones() {
    let mut s = state();
    add_imported_routes(&mut s, &[imported(POD, "10.47.255.252/32")]);
    assert_eq!(s.networks[0].routes.len(), 1);
    assert!(matches!(s.networks[0].routes[0].next_hop, NextHop::Local { .. }));
    assert_eq!(s.warnings.len(), 1);
    assert!(
        s.warnings[0].contains("10.47.255.252/32") && s.warnings[0].contains("cluster-2"),
        "{:?}",
        s.warnings
    );
}

#[test]
fn input_order_does_not_matter() {
    let routes = [
        imported(POD, "10.63.255.252/32"),
        imported(POD, "10.63.255.251/32"),
        imported(POD, "10.47.255.252/32"),
    ];
    let mut a = state();
    add_imported_routes(&mut a, &routes);
    let mut reversed = routes.to_vec();
    reversed.reverse();
    let mut b = state();
    add_imported_routes(&mut b, &reversed);
    assert_eq!(a, b);
}

//! Pod floating IPs bound to local interfaces ([`add_floating_ips`]).

use weft_model::{FloatingIpRecord, MacAddr, NetworkKind, Vni};

use super::*;

const POD: &str = "default-domain:k8s-default:k8s-default-pod-network";
const EXT: &str = "default-domain:k8s-public:ext";

fn network() -> VirtualNetworkRecord {
    VirtualNetworkRecord {
        fq_name: POD.into(),
        name: "k8s-default-pod-network".into(),
        project: "k8s-default".into(),
        namespace: "default".into(),
        kind: NetworkKind::Pod,
        ipam: "k8s-pod-ipam".into(),
        subnets: vec!["10.32.0.0/12".parse().unwrap()],
        gateway: Some("10.47.255.254".parse().unwrap()),
        vni: Vni(1),
        routing_instance: POD.into(),
        import_targets: vec![],
        export_targets: vec![],
        connected_networks: vec![],
        ip_fabric_forwarding: false,
        origin: "cluster".into(),
    }
}

fn iface(pod: &str, node: &str, ip: &str) -> InterfaceAttachment {
    InterfaceAttachment {
        namespace: "default".into(),
        pod: pod.into(),
        pod_uid: String::new(),
        node: Some(node.into()),
        interface: "eth0".into(),
        network: POD.into(),
        ip: ip.parse().unwrap(),
        prefix_len: 12,
        gateway: None,
        mac: MacAddr::derived_from(pod),
        primary: true,
    }
}

fn node(name: &str, ip: &str) -> Node {
    crate::tests::k8s_node(name, &[("InternalIP", ip)])
}

/// FloatingIp `name` with address `ip`, bound to `pod`'s eth0 at `fixed` on `node`
/// (unbound when `node` is `None`).
fn fip(name: &str, ip: &str, pod: &str, bound: Option<(&str, &str)>) -> FloatingIpRecord {
    FloatingIpRecord {
        namespace: "default".into(),
        name: name.into(),
        ip: Some(ip.parse().unwrap()),
        pool: "public/pool".into(),
        network: Some(EXT.into()),
        pod: pod.into(),
        interface: "eth0".into(),
        fixed_ip: bound.map(|(fixed, _)| fixed.parse().unwrap()),
        node: bound.map(|(_, node)| node.to_string()),
        note: None,
    }
}

fn state(node_name: &str, interfaces: &[InterfaceAttachment], fips: &[FloatingIpRecord]) -> NodeState {
    let nodes = [node("node-1", "192.0.2.11"), node("node-2", "192.0.2.12")];
    let mut s = compile_node_state_with_services(node_name, 1, &[network()], interfaces, &[], &nodes);
    add_floating_ips(&mut s, fips);
    s
}

fn fips_of(s: &NodeState, pod: &str) -> Vec<String> {
    s.interfaces
        .iter()
        .find(|l| l.pod == pod)
        .unwrap_or_else(|| panic!("no local interface of {pod} in {s:#?}"))
        .floating_ips
        .iter()
        .map(IpAddr::to_string)
        .collect()
}

#[test]
fn bound_floating_ips_land_on_the_local_interface_sorted() {
    let interfaces = [
        iface("web", "node-1", "10.47.255.252"),
        iface("db", "node-2", "10.47.255.251"),
    ];
    let records = [
        // Two on web, whose name order is not their address order.
        fip("web-a", "203.0.113.9", "web", Some(("10.47.255.252", "node-1"))),
        fip("web-b", "203.0.113.5", "web", Some(("10.47.255.252", "node-1"))),
        fip("db", "203.0.113.7", "db", Some(("10.47.255.251", "node-2"))),
        // Its pod is gone: nothing to bind, no warning.
        fip("idle", "203.0.113.8", "gone", None),
    ];
    let one = state("node-1", &interfaces, &records);
    assert_eq!(fips_of(&one, "web"), ["203.0.113.5", "203.0.113.9"]);
    assert_eq!(one.interfaces.len(), 1, "db is on node-2");
    assert!(one.warnings.is_empty(), "{:?}", one.warnings);
    let two = state("node-2", &interfaces, &records);
    assert_eq!(fips_of(&two, "db"), ["203.0.113.7"]);
    // Same records in another order: the same state.
    let mut reversed = records.clone();
    reversed.reverse();
    assert_eq!(state("node-1", &interfaces, &reversed), one);
    // Without records nothing changes (the plain compiler output).
    let plain = state("node-1", &interfaces, &[]);
    assert!(plain.interfaces.iter().all(|l| l.floating_ips.is_empty()));
}

#[test]
fn the_floating_ip_follows_the_pod_to_its_new_node() {
    // db re-created on node-1 with a new address: the record now says node-1.
    let interfaces = [
        iface("web", "node-1", "10.47.255.252"),
        iface("db", "node-1", "10.47.255.249"),
    ];
    let records = [fip("db", "203.0.113.7", "db", Some(("10.47.255.249", "node-1")))];
    let one = state("node-1", &interfaces, &records);
    assert_eq!(fips_of(&one, "db"), ["203.0.113.7"]);
    assert!(fips_of(&one, "web").is_empty());
    let two = state("node-2", &interfaces, &records);
    assert!(
        two.interfaces.iter().all(|l| l.floating_ips.is_empty()),
        "{two:#?}"
    );
}

#[test]
fn a_binding_out_of_step_with_the_interfaces_is_warned_not_programmed() {
    let interfaces = [iface("web", "node-1", "10.47.255.252")];
    let records = [
        // The record still has the pod's old address.
        fip("stale", "203.0.113.5", "web", Some(("10.47.255.200", "node-1"))),
        // The record names an interface this node does not have.
        fip("ghost", "203.0.113.6", "ghost", Some(("10.47.255.201", "node-1"))),
    ];
    let s = state("node-1", &interfaces, &records);
    assert!(fips_of(&s, "web").is_empty());
    assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("FloatingIp default/stale") && w.contains("10.47.255.200"))
    );
    assert!(
        s.warnings
            .iter()
            .any(|w| w.contains("FloatingIp default/ghost") && w.contains("no such interface"))
    );
}

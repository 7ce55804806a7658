//! IP fabric forwarding in the lab (`weft lab up --gateway`): pods of an isolated
//! namespace (its own network) annotated `opencontrail.org/ip_fabric_forwarding: "true"`
//! get addresses from the
//! cluster's `ipFabricSubnets` and are routed natively in the underlay: pod to pod
//! across nodes without VXLAN, the external host straight to the pod's address (the
//! gateway learned the pod's /32 over BGP), and the pod to the external host with its
//! own address as source (no NAT). Cluster services still go through the overlay.
//!
//! Root and FRR needed (skipped otherwise); the `weft` and `weft-cni` binaries of this
//! workspace; lab `i<pid % 10000><letter>` taken down by a guard; every wait bounded;
//! traffic only between the lab's own namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, first_peer, holding_server, ip_in, pod_ip, require_root, wait_gateway_route};

/// Prefix of this file's lab names.
const LAB_PREFIX: char = 'i';

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use weft_lab::echo::{Proto, whoami_from_netns};

const SCENARIO: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: fab
  annotations: {opencontrail.org/isolation: "true", opencontrail.org/ip_fabric_forwarding: "true"}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: fab}
spec: {nodeName: node-1, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: fab}
spec: {nodeName: node-2, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {nodeName: node-2, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 8080, targetPort: 80}]
"#;

/// True when `ip` is in the cluster's default `ipFabricSubnets`.
fn in_fabric_subnet(ip: IpAddr) -> bool {
    let (net, len) = weft_model::config::DEFAULT_IP_FABRIC_SUBNET
        .split_once('/')
        .unwrap();
    let net: std::net::Ipv4Addr = net.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    matches!(ip, IpAddr::V4(v4) if u32::from(v4) & mask == u32::from(net) & mask)
}

/// Packets sent so far by `dev` in `netns`.
fn tx_packets(netns: &str, dev: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", netns, "cat"])
        .arg(format!("/sys/class/net/{dev}/statistics/tx_packets"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("tx_packets of {dev} in {netns}: {out:?}"))
}

#[test]
fn fabric_forwarded_pods_are_routed_natively_in_the_underlay() {
    require_root!();
    let Some(lab) = Lab::up_with_gateway('a', SCENARIO) else {
        return;
    };
    let a_ip = pod_ip(&lab, "fab/a");
    let b_ip = pod_ip(&lab, "fab/b");
    assert!(
        in_fabric_subnet(a_ip) && in_fabric_subnet(b_ip),
        "{a_ip} {b_ip} not in {}",
        weft_model::config::DEFAULT_IP_FABRIC_SUBNET
    );
    let (n1, _) = lab.node(1);
    let (n2, n2_ip) = lab.node(2);

    // Node 1 routes b natively: via node-2's underlay address on ul0, no encapsulation.
    let tables = ip_in(&n1, &["route", "show", "table", "all"]);
    let native = tables
        .lines()
        .find(|l| l.starts_with(&format!("{b_ip} ")))
        .unwrap_or_else(|| panic!("node-1 has no route to {b_ip}:\n{tables}"));
    assert!(
        native.contains(&format!("via {n2_ip} ")) && native.contains("dev ul0") && !native.contains("encap"),
        "{native}"
    );

    // Pod to pod across nodes, not through VXLAN on either node.
    let a_ns = lab.pod_netns("fab/a");
    let b_ns = lab.pod_netns("fab/b");
    let before = (tx_packets(&n1, "weft-vxlan"), tx_packets(&n2, "weft-vxlan"));
    let before_ul = tx_packets(&n1, "ul0");
    for _ in 0..5 {
        let who = whoami_from_netns(
            &a_ns,
            SocketAddr::new(b_ip, 80),
            Proto::Tcp,
            Duration::from_secs(2),
        )
        .unwrap_or_else(|o| panic!("fab/a -> {b_ip}:80: {o:?}"));
        assert_eq!(who, "fab/b");
        let who = whoami_from_netns(
            &b_ns,
            SocketAddr::new(a_ip, 80),
            Proto::Tcp,
            Duration::from_secs(2),
        )
        .unwrap_or_else(|o| panic!("fab/b -> {a_ip}:80: {o:?}"));
        assert_eq!(who, "fab/a");
    }
    let after = (tx_packets(&n1, "weft-vxlan"), tx_packets(&n2, "weft-vxlan"));
    assert_eq!(before, after, "pod-to-pod traffic went through weft-vxlan");
    assert!(
        tx_packets(&n1, "ul0") >= before_ul + 20,
        "pod-to-pod traffic did not leave node-1 on ul0"
    );

    // A cluster service (backend in the default pod network on node-2) still works,
    // through the overlay.
    let vip = lab.vip("default/web");
    let vxlan_before = tx_packets(&n1, "weft-vxlan");
    let who = whoami_from_netns(
        &a_ns,
        SocketAddr::new(vip, 8080),
        Proto::Tcp,
        Duration::from_secs(2),
    )
    .unwrap_or_else(|o| panic!("fab/a -> {vip}:8080: {o:?}"));
    assert_eq!(who, "default/web");
    assert!(
        tx_packets(&n1, "weft-vxlan") > vxlan_before,
        "service traffic did not use the overlay"
    );

    // The external host reaches b at its pod address (the gateway learned it over BGP).
    wait_gateway_route(&lab, &n2_ip.to_string(), |ip| ip == b_ip);
    let ext = format!("wl-{}-ext", lab.name);
    for _ in 0..3 {
        let who = whoami_from_netns(
            &ext,
            SocketAddr::new(b_ip, 80),
            Proto::Tcp,
            Duration::from_secs(2),
        )
        .unwrap_or_else(|o| panic!("external host -> {b_ip}:80: {o:?}"));
        assert_eq!(who, "fab/b");
    }

    // a reaches the external host with its own address as source (no NAT).
    let server: SocketAddr = "203.0.113.10:9100".parse().unwrap();
    let accepted = holding_server(&ext, server);
    let out = weft_cni::run_in_netns(format!("/run/netns/{a_ns}"), move || {
        std::net::TcpStream::connect_timeout(&server, Duration::from_secs(2))
    })
    .unwrap()
    .expect("fabric pod -> external host");
    let peer = first_peer(&accepted).expect("the external host accepted nothing");
    assert_eq!(peer.ip(), a_ip, "source seen outside");
    drop(out);
}

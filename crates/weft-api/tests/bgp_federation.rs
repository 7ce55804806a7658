//! Two controllers in one process, peered over BGP on 127.0.0.1: each exports its
//! networks' routes as VPNv4 and imports the other's into the network whose route
//! targets ask for them, so they land in its nodes' states with an external next hop
//! (the other cluster's node, the VNI from the label). A third, overlapping cluster is
//! refused with a status naming both ranges. Every wait is bounded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test: a failed unwrap is a failed test"
)]

mod ports;
use ports::free_port;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use weft_api::Controller;
use weft_api::bgp::BgpPeersReport;
use weft_api::types::ApplyRequest;
use weft_model::node::{NextHop, NodeState, vtep_mac};
use weft_model::{DerivedKind, DerivedObject};

const WAIT: Duration = Duration::from_secs(30);
const FED: &str = "default-domain:k8s-dev:fed";

async fn controller() -> Arc<Controller> {
    let store: Arc<dyn weft_store::ConfigStore> = Arc::new(weft_store::MemoryStore::new());
    Controller::open(store, "memory").await.expect("open")
}

async fn apply(c: &Controller, objects: Vec<Value>) {
    let report = c
        .apply(ApplyRequest::from_objects("test", objects), false)
        .await
        .expect("apply");
    assert_eq!(report.errors(), 0, "{report:#?}");
}

struct Cluster<'a> {
    asn: u32,
    router_id: &'a str,
    port: u16,
    pod: &'a str,
    service: &'a str,
    fabric: &'a str,
    node: &'a str,
    node_ip: &'a str,
    fed_subnet: &'a str,
}

/// One cluster's objects: config, a Node, namespace `dev` with VirtualNetwork `fed`
/// (importing both clusters' `fed` targets, exporting its own) and a pod on it.
fn cluster(c: &Cluster) -> Vec<Value> {
    vec![
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ClusterConfig", "metadata": {"name": "default"},
               "spec": {"asn": c.asn, "routerId": c.router_id, "bgpListenAddress": "127.0.0.1", "bgpPort": c.port,
                        "podSubnets": [c.pod], "serviceSubnets": [c.service], "ipFabricSubnets": [c.fabric]}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": c.node},
               "status": {"addresses": [{"type": "InternalIP", "address": c.node_ip}]}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}}),
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork", "metadata": {"name": "fed", "namespace": "dev"},
               "spec": {"subnets": [c.fed_subnet],
                        "routeTargets": {"import": ["target:64512:100", "target:64513:100"],
                                         "export": [format!("target:{}:100", c.asn)]}}}),
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "web", "namespace": "dev",
                            "annotations": {"opencontrail.org/network": "{\"domain\":\"default-domain\",\"project\":\"k8s-dev\",\"name\":\"fed\"}"}},
               "spec": {"nodeName": c.node, "containers": [{"name": "c", "image": "x"}]}}),
    ]
}

fn peer(name: &str, port: u16, asn: u32, passive: bool, remote: &[&str]) -> Value {
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "BgpPeer", "metadata": {"name": name},
           "spec": {"address": "127.0.0.1", "port": port, "asn": asn, "role": "cluster",
                    "passive": passive, "remoteSubnets": remote}})
}

/// The `fed` network's VNI and its pod's address in controller `c`.
async fn fed(c: &Controller) -> (u32, IpAddr) {
    let vni = c
        .derived(DerivedKind::Network, None)
        .await
        .into_iter()
        .find_map(|d| match d {
            DerivedObject::Network(n) if n.fq_name == FED => Some(n.vni.0),
            _ => None,
        })
        .expect("fed network");
    let ip = c
        .derived(DerivedKind::Interface, None)
        .await
        .into_iter()
        .find_map(|d| match d {
            DerivedObject::Interface(i) if i.network == FED => Some(i.ip),
            _ => None,
        })
        .expect("pod on fed");
    (vni, ip)
}

/// Waits until `node`'s state in `c` has an external route to `ip`; returns it.
async fn wait_imported(c: &Controller, node: &str, ip: IpAddr) -> (NodeState, NextHop) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = c.node_state(node).await;
        let hop = state
            .networks
            .iter()
            .filter(|n| n.fq_name == FED)
            .flat_map(|n| n.routes.iter())
            .find(|r| r.prefix.addr() == ip && matches!(r.next_hop, NextHop::External { .. }))
            .map(|r| r.next_hop.clone());
        if let Some(hop) = hop {
            return (state, hop);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no imported route to {ip} on {node}: {state:#?}\npeers: {:#?}",
            weft_api::bgp::peers_report(c).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_report(c: &Controller, mut ok: impl FnMut(&BgpPeersReport) -> bool) -> BgpPeersReport {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let report = weft_api::bgp::peers_report(c).await;
        if ok(&report) {
            return report;
        }
        assert!(tokio::time::Instant::now() < deadline, "{report:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_exchange_vpnv4_routes_and_overlap_is_refused() {
    let (port1, port2) = (free_port(), free_port());
    let c1 = controller().await;
    let c2 = controller().await;
    let mut objects1 = cluster(&Cluster {
        asn: 64512,
        router_id: "10.255.0.1",
        port: port1,
        pod: "10.32.0.0/12",
        service: "10.96.0.0/12",
        fabric: "10.64.0.0/12",
        node: "c1-node-1",
        node_ip: "192.0.2.11",
        fed_subnet: "172.16.1.0/24",
    });
    objects1.push(peer(
        "cluster-2",
        port2,
        64513,
        false,
        &["10.48.0.0/12", "10.112.0.0/12", "10.80.0.0/12"],
    ));
    // Overlaps our pod subnet: refused, never connected (port 1 is never listened on).
    objects1.push(peer("overlapping", 1, 64514, false, &["10.40.0.0/16"]));
    let mut objects2 = cluster(&Cluster {
        asn: 64513,
        router_id: "10.255.0.2",
        port: port2,
        pod: "10.48.0.0/12",
        service: "10.112.0.0/12",
        fabric: "10.80.0.0/12",
        node: "c2-node-1",
        node_ip: "192.0.2.21",
        fed_subnet: "172.16.2.0/24",
    });
    // Passive: both speakers are on 127.0.0.1 and collision detection is not implemented.
    objects2.push(peer(
        "cluster-1",
        port1,
        64512,
        true,
        &["10.32.0.0/12", "10.96.0.0/12", "10.64.0.0/12"],
    ));
    apply(&c1, objects1).await;
    apply(&c2, objects2).await;
    let t1 = tokio::spawn(weft_api::bgp::run(c1.clone()));
    let t2 = tokio::spawn(weft_api::bgp::run(c2.clone()));

    let (vni1, ip1) = fed(&c1).await;
    let (vni2, ip2) = fed(&c2).await;
    let (_, hop) = wait_imported(&c1, "c1-node-1", ip2).await;
    assert_eq!(
        hop,
        NextHop::External {
            address: "192.0.2.21".parse().unwrap(),
            vni: weft_model::Vni(vni2),
            vtep_mac: vtep_mac("c2-node-1"),
        }
    );
    let (_, hop) = wait_imported(&c2, "c2-node-1", ip1).await;
    assert_eq!(
        hop,
        NextHop::External {
            address: "192.0.2.11".parse().unwrap(),
            vni: weft_model::Vni(vni1),
            vtep_mac: vtep_mac("c1-node-1"),
        }
    );

    // `weft bgp peers`: the session is up with an accepted prefix; the overlapping
    // cluster is refused with both ranges named.
    let report = wait_report(&c1, |r| {
        r.peers
            .iter()
            .any(|p| p.name == "cluster-2" && p.state == "Established" && p.accepted >= 1)
    })
    .await;
    let refused = report.peers.iter().find(|p| p.name == "overlapping").unwrap();
    assert_eq!(refused.state, "Refused");
    let why = refused.last_error.as_deref().unwrap_or_default();
    assert!(
        why.contains("10.32.0.0/12") && why.contains("10.40.0.0/16"),
        "{why}"
    );
    let status = c1.status().await;
    let bgp = status
        .components
        .iter()
        .find(|s| s.component == "bgp")
        .expect("bgp component");
    assert!(bgp.reason.contains("10.40.0.0/16"), "{bgp:?}");

    // `weft routes fed`: the local pod and the imported one with RD, RTs and peer.
    let routes = weft_api::bgp::network_routes(&c1, "fed").await.unwrap();
    let imported = routes
        .routes
        .iter()
        .find(|r| r.origin == "imported")
        .expect("imported route");
    assert_eq!(imported.source, "cluster-2");
    assert_eq!(
        imported.rd.as_deref(),
        Some(format!("10.255.0.2:{vni2}").as_str())
    );
    assert_eq!(imported.route_targets, vec!["target:64513:100".to_string()]);
    assert!(
        routes
            .routes
            .iter()
            .any(|r| r.origin == "pod" && r.node.as_deref() == Some("c1-node-1"))
    );

    // Deleting the pod in cluster 2 withdraws its route from cluster 1's node state.
    c2.apply(
        ApplyRequest::from_objects(
            "delete",
            [json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "dev"}})],
        ),
        true,
    )
    .await
    .expect("delete");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let state = c1.node_state("c1-node-1").await;
        let still = state
            .networks
            .iter()
            .flat_map(|n| n.routes.iter())
            .any(|r| r.prefix.addr() == ip2);
        if !still {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "withdrawal never arrived: {state:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    c1.close_streams();
    c2.close_streams();
    tokio::time::timeout(WAIT, t1)
        .await
        .expect("bgp task 1 ends")
        .unwrap();
    tokio::time::timeout(WAIT, t2)
        .await
        .expect("bgp task 2 ends")
        .unwrap();
}

//! A controller with a `router` BgpPeer: FRR's `bgpd` (Debian `frr`, run alone: no
//! zebra `-Z`, no privilege changes `-S`, config and vty socket in a temp dir, passive
//! on a free port) learns the cluster's pod routes as IPv4 unicast with next hop = the
//! node hosting the pod, and as VPNv4 with RD `routerId:VNI`. Skipped with a message when
//! FRR is not installed. Every wait is bounded; bgpd is killed on drop.
//!
//! ```text
//!   weft controller speaker (AS 64512, from 127.0.0.2) ──► bgpd (AS 65003, 127.0.0.1:<port>)
//! ```
//!
//! The second test puts another cluster behind the first: the gateway learns the other
//! cluster's pods through the peered controller with the *other cluster's node* as next
//! hop (controllers are not on the forwarding path), and the session stays up.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test: a failed unwrap is a failed test"
)]

mod ports;
use ports::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use weft_api::Controller;
use weft_api::types::ApplyRequest;

const WAIT: Duration = Duration::from_secs(45);

fn find(name: &str) -> Option<PathBuf> {
    ["/usr/lib/frr", "/usr/sbin", "/usr/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

/// bgpd, killed and reaped on drop (its temp dir goes with it).
struct Bgpd {
    child: Child,
    dir: tempfile::TempDir,
    vtysh: PathBuf,
}

impl Drop for Bgpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bgpd {
    fn start(port: u16, remote_as: u32) -> Option<Bgpd> {
        let (Some(bgpd), Some(vtysh)) = (find("bgpd"), find("vtysh")) else {
            eprintln!(
                "SKIPPED: FRR's bgpd/vtysh not found; install the `frr` package (scripts/install-deps)"
            );
            return None;
        };
        let dir = tempfile::Builder::new().prefix("weft-gw-frr-").tempdir().unwrap();
        let conf = format!(
            r#"frr defaults traditional
hostname weft-gw
router bgp 65003
 bgp router-id 10.255.0.3
 no bgp ebgp-requires-policy
 neighbor 127.0.0.2 remote-as {remote_as}
 neighbor 127.0.0.2 passive
 neighbor 127.0.0.2 timers 3 9
 neighbor 127.0.0.2 disable-connected-check
 address-family ipv4 unicast
  neighbor 127.0.0.2 activate
 exit-address-family
 address-family ipv4 vpn
  neighbor 127.0.0.2 activate
 exit-address-family
"#
        );
        std::fs::write(dir.path().join("bgpd.conf"), conf).unwrap();
        let path = dir.path().display().to_string();
        let log = std::fs::File::create(dir.path().join("bgpd.log")).unwrap();
        let child = Command::new(bgpd)
            .args([
                "-f",
                &format!("{path}/bgpd.conf"),
                "-p",
                &port.to_string(),
                "-l",
                "127.0.0.1",
                "-Z",
                "-S",
                "-i",
                &format!("{path}/bgpd.pid"),
                "--vty_socket",
                &path,
                "-P",
                "0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Some(Bgpd { child, dir, vtysh })
    }

    async fn json(&self, command: &str) -> Option<Value> {
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(&self.vtysh)
                .args([
                    "--vty_socket",
                    &self.dir.path().display().to_string(),
                    "-d",
                    "bgpd",
                    "-c",
                    command,
                ])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .ok()?
        .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bgpd.log")).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_router_learns_pod_routes_with_the_hosting_node_as_next_hop() {
    let port = free_port();
    let Some(frr) = Bgpd::start(port, 64512) else {
        return;
    };
    let store: Arc<dyn weft_store::ConfigStore> = Arc::new(weft_store::MemoryStore::new());
    let c = Controller::open(store, "memory").await.unwrap();
    let objects: Vec<Value> = vec![
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ClusterConfig", "metadata": {"name": "default"},
               "spec": {"asn": 64512, "routerId": "10.255.0.1", "bgpListenAddress": "127.0.0.2",
                        "bgpPort": free_port()}}),
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "BgpPeer", "metadata": {"name": "gw"},
               "spec": {"address": "127.0.0.1", "port": port, "asn": 65003, "role": "router",
                        "localAddress": "127.0.0.2"}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
               "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}}),
    ];
    let report = c
        .apply(ApplyRequest::from_objects("test", objects), false)
        .await
        .unwrap();
    assert_eq!(report.errors(), 0, "{report:#?}");
    let ip = c
        .derived(weft_model::DerivedKind::Interface, None)
        .await
        .into_iter()
        .find_map(|d| match d {
            weft_model::DerivedObject::Interface(i) => Some(i.ip),
            _ => None,
        })
        .unwrap();
    let task = tokio::spawn(weft_api::bgp::run(c.clone()));
    let prefix = format!("{ip}/32");
    let deadline = tokio::time::Instant::now() + WAIT;
    let (unicast, vpn) = loop {
        let unicast = frr.json("show bgp ipv4 unicast json").await;
        let vpn = frr.json("show bgp ipv4 vpn json").await;
        let has_unicast = unicast.as_ref().is_some_and(|u| !u["routes"][&prefix].is_null());
        let has_vpn = vpn
            .as_ref()
            .is_some_and(|v| !v["routes"]["routeDistinguishers"]["10.255.0.1:1"][&prefix].is_null());
        if has_unicast && has_vpn {
            break (unicast.unwrap(), vpn.unwrap());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "FRR did not learn {prefix}: unicast {unicast:?} vpn {vpn:?}\npeers {:#?}\n--- bgpd log ---\n{}",
            weft_api::bgp::peers_report(&c).await,
            frr.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let hop = &unicast["routes"][&prefix][0]["nexthops"][0]["ip"];
    assert_eq!(hop, "192.0.2.11", "{unicast:#}");
    let vpn_path = &vpn["routes"]["routeDistinguishers"]["10.255.0.1:1"][&prefix][0];
    assert_eq!(vpn_path["nexthops"][0]["ip"], "192.0.2.11", "{vpn:#}");
    c.close_streams();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("bgp task ends")
        .unwrap();
}

fn pod(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}})
}

fn node(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}]}})
}

async fn controller_with(objects: Vec<Value>) -> Arc<Controller> {
    let store: Arc<dyn weft_store::ConfigStore> = Arc::new(weft_store::MemoryStore::new());
    let c = Controller::open(store, "memory").await.unwrap();
    let report = c
        .apply(ApplyRequest::from_objects("test", objects), false)
        .await
        .unwrap();
    assert_eq!(report.errors(), 0, "{report:#?}");
    c
}

/// Regression: re-advertising a route learned from the other cluster used to set the next
/// hop to the controller's own address, which FRR refused as a martian (the session was
/// reset with "Invalid Network Field" on 127.0.0.2) and which would have drawn traffic to
/// a controller that does not forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_learns_the_other_clusters_pods_with_that_clusters_node_as_next_hop() {
    let gw_port = free_port();
    let Some(frr) = Bgpd::start(gw_port, 64513) else {
        return;
    };
    let (port1, port2) = (free_port(), free_port());
    let config = |asn: u32, id: &str, port: u16, pods: &str, services: &str| {
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ClusterConfig", "metadata": {"name": "default"},
               "spec": {"asn": asn, "routerId": id, "bgpListenAddress": "127.0.0.1", "bgpPort": port,
                        "podSubnets": [pods], "serviceSubnets": [services]}})
    };
    let cluster_peer = |name: &str, port: u16, asn: u32, passive: bool| {
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "BgpPeer", "metadata": {"name": name},
               "spec": {"address": "127.0.0.1", "port": port, "asn": asn, "role": "cluster", "passive": passive}})
    };
    let c1 = controller_with(vec![
        config(64512, "10.255.0.1", port1, "10.32.0.0/16", "10.96.0.0/16"),
        node("c1-node", "192.0.2.11"),
        pod("client", "c1-node"),
        cluster_peer("cluster-2", port2, 64513, false),
    ])
    .await;
    let c2 = controller_with(vec![
        config(64513, "10.255.0.2", port2, "10.33.0.0/16", "10.97.0.0/16"),
        node("c2-node", "192.0.2.21"),
        pod("web", "c2-node"),
        cluster_peer("cluster-1", port1, 64512, true),
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "BgpPeer", "metadata": {"name": "gw"},
               "spec": {"address": "127.0.0.1", "port": gw_port, "asn": 65003, "role": "router",
                        "localAddress": "127.0.0.2"}}),
    ])
    .await;
    let client_ip = c1
        .derived(weft_model::DerivedKind::Interface, None)
        .await
        .into_iter()
        .find_map(|d| match d {
            weft_model::DerivedObject::Interface(i) => Some(i.ip),
            _ => None,
        })
        .unwrap();
    let t1 = tokio::spawn(weft_api::bgp::run(c1.clone()));
    let t2 = tokio::spawn(weft_api::bgp::run(c2.clone()));
    let prefix = format!("{client_ip}/32");
    let deadline = tokio::time::Instant::now() + WAIT;
    let hop = loop {
        let vpn = frr.json("show bgp ipv4 vpn json").await;
        let hop = vpn.as_ref().and_then(|v| {
            v["routes"]["routeDistinguishers"]
                .as_object()?
                .values()
                .find_map(|rd| rd.get(&prefix))
                .map(|paths| paths[0]["nexthops"][0]["ip"].clone())
        });
        if let Some(hop) = hop {
            break hop;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "FRR did not learn {prefix} through cluster 2: {vpn:?}\ncluster 2 peers {:#?}\n--- bgpd log ---\n{}",
            weft_api::bgp::peers_report(&c2).await,
            frr.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(hop, "192.0.2.11", "next hop = cluster 1's node, not a controller");
    let report = weft_api::bgp::peers_report(&c2).await;
    let gw = report.peers.iter().find(|p| p.name == "gw").unwrap();
    assert_eq!(gw.state, "Established", "{report:#?}\n{}", frr.log());
    for c in [&c1, &c2] {
        c.close_streams();
    }
    for t in [t1, t2] {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("bgp task ends")
            .unwrap();
    }
}

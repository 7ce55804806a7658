//! Two clusters in one lab (`weft lab up --clusters 2 --gateway`, issue 5): their
//! controllers peer over BGP, and a pod of cluster 1 reaches a pod and a ClusterIP
//! service of cluster 2 through the overlay (VXLAN straight to cluster 2's node, the VNI
//! from the VPNv4 label; the VIP DNATed there to the local backend), and back. The
//! gateway router (FRR's zebra and bgpd in a namespace of the lab) peers with both
//! controllers and installs every pod and VIP /32 with the hosting node as next hop.
//!
//! Root needed (skipped otherwise); the `weft` and `weft-cni` binaries of this workspace;
//! labs `f<pid % 1000>a` and its sibling `…a2`, taken down by a guard whatever happens;
//! every wait bounded; traffic only between the labs' own namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, pod_ip, require_root, wait_gateway_route};

/// Prefix of this file's lab names (the support module's default naming).
const LAB_PREFIX: char = 'f';

use std::net::SocketAddr;
use std::time::Duration;

use weft_lab::echo::{Proto, whoami_from_netns};

/// Probes until BGP has carried the routes across (each failed probe is quick: the
/// table answers `unreachable` until the route lands); bound ~30 s.
const ROUTE_RETRIES: usize = 100;

const CLUSTER_1: &str = "
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec:
  nodeName: node-1
  containers: [{name: c, image: x, ports: [{containerPort: 80}]}]
";

const CLUSTER_2: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  nodeName: node-2
  containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
";

#[test]
fn a_pod_reaches_a_pod_and_a_cluster_ip_service_of_the_other_cluster() {
    require_root!();
    // At most 5 characters: the second cluster is the lab `<name>2`.
    let name = format!("{LAB_PREFIX}{}a", std::process::id() % 1000);
    // Declared first, dropped last: the first lab's `down` also takes the second down.
    let second = Lab {
        name: format!("{name}2"),
        weft: support::weft(),
    };
    let first = Lab {
        name,
        weft: support::weft(),
    };
    first.lab(&["down"]);
    second.lab(&["down"]);
    let file = first.write("cluster-1.yaml", CLUSTER_1);
    let frr = std::path::Path::new("/usr/lib/frr/bgpd").is_file();
    let mut up = vec!["up", "--clusters", "2"];
    if frr {
        up.push("--gateway");
    } else {
        eprintln!("SKIPPED (gateway part): FRR is not installed (scripts/install-deps installs it)");
    }
    let file = file.display().to_string();
    up.extend(["-f", &file]);
    first.ok(&up);
    second.apply("cluster-2.yaml", CLUSTER_2);

    let status = second.status();
    assert_eq!(status["nodes"][0]["underlayIp"], "192.0.2.111", "{status:#}");
    let web = pod_ip(&second, "default/web");
    let client = pod_ip(&first, "default/client");
    let vip = second.vip("default/web");
    assert!(
        web.to_string().starts_with("10.1"),
        "cluster 2's own pod subnet: {web}"
    );

    // Pod to pod, both ways, once BGP has carried the routes.
    assert!(
        first.probe("default/client", &web.to_string(), "8080/tcp", ROUTE_RETRIES),
        "cluster 1's client never reached cluster 2's pod {web}"
    );
    assert!(
        second.probe("default/web", &client.to_string(), "80/tcp", ROUTE_RETRIES),
        "cluster 2's pod never reached cluster 1's client {client}"
    );
    // The ClusterIP: the answer comes from the backend, through the VIP.
    assert!(
        first.probe("default/client", &vip.to_string(), "80/tcp", ROUTE_RETRIES),
        "cluster 1's client never reached cluster 2's service {vip}"
    );
    let netns = first.pod_netns("default/client");
    for _ in 0..5 {
        let who = whoami_from_netns(
            &netns,
            SocketAddr::new(vip, 80),
            Proto::Tcp,
            Duration::from_secs(2),
        )
        .unwrap_or_else(|o| panic!("whoami through {vip}: {o:?}"));
        assert_eq!(who, "default/web");
    }
    // A closed port must not pass (the check can fail).
    assert!(!first.probe("default/client", &vip.to_string(), "81/tcp", 0));

    // The gateway router (FRR in its own namespace, peered with both controllers) has
    // installed every /32 in its kernel with the hosting node as next hop.
    if frr {
        for (ip, hop) in [(client, "192.0.2.11"), (web, "192.0.2.112"), (vip, "192.0.2.112")] {
            wait_gateway_route(&first, hop, |r| r == ip);
        }
    }

    // `down` of the first cluster removes both.
    drop(first);
    let left: Vec<String> = support::netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("wl-{}", second.name.trim_end_matches('2'))))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}

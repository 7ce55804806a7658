//! The lab's outside (`weft lab up --gateway`, issue 6): an external host behind the
//! gateway router reaches a LoadBalancer service on the floating IP the controller gave
//! it from the pool its namespace names (`opencontrail.org/fip-pool`). The controller advertises the FIP /32 over BGP with
//! the backend's node as next hop; FRR's zebra installs it in the gateway's kernel; the
//! node DNATs it to the backend; the reply returns through the node's default route
//! (the gateway).
//!
//! Root and FRR needed (skipped otherwise); the `weft` and `weft-cni` binaries of this
//! workspace; lab `o<pid % 10000><letter>` taken down by a guard; every wait bounded;
//! traffic only between the lab's own namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, require_root};

/// Prefix of this file's lab names.
const LAB_PREFIX: char = 'o';

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use weft_lab::echo::{Proto, whoami_from_netns};

const SCENARIO: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: default
  annotations:
    opencontrail.org/fip-pool: '{"domain":"default-domain","project":"k8s-default","network":"public","name":"pool"}'
---
apiVersion: weft.dev/v1alpha1
kind: VirtualNetwork
metadata: {name: public, namespace: default}
spec: {subnets: [198.51.100.0/24]}
---
apiVersion: weft.dev/v1alpha1
kind: FloatingIpPool
metadata: {name: pool, namespace: default}
spec: {network: public}
---
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
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// The service's floating IP, once the controller has given it one.
fn floating_ip(lab: &Lab) -> Option<IpAddr> {
    let svc = lab.service("default/web");
    svc["floating_ips"].as_array()?.first()?.as_str()?.parse().ok()
}

#[test]
fn an_external_host_reaches_a_load_balancer_service_on_its_floating_ip() {
    require_root!();
    if !std::path::Path::new("/usr/lib/frr/bgpd").is_file() {
        eprintln!("SKIPPED: FRR is not installed (scripts/install-deps installs it)");
        return;
    }
    let lab = Lab {
        name: Lab::name('a'),
        weft: support::weft(),
    };
    lab.lab(&["down"]);
    let file = lab.write("outside.yaml", SCENARIO);
    lab.ok(&["up", "--gateway", "-f", &file.display().to_string()]);
    lab.wait();
    let fip = floating_ip(&lab).unwrap_or_else(|| panic!("no floating IP: {:#}", lab.service("default/web")));
    assert!(fip.to_string().starts_with("198.51.100."), "{fip}");

    // The gateway learns the FIP with node-2 (the backend's node) as next hop.
    let gw = format!("wl-{}-gw", lab.name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("ip")
            .args(["-n", &gw, "route", "show"])
            .output()
            .unwrap();
        let routes = String::from_utf8_lossy(&out.stdout).to_string();
        if routes
            .lines()
            .any(|l| l.starts_with(&format!("{fip} ")) && l.contains("via 192.0.2.12 "))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway has no route to {fip} via node-2:\n{routes}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The external host reaches the service on the FIP; the backend answers.
    let ext = format!("wl-{}-ext", lab.name);
    let target = SocketAddr::new(fip, 80);
    for _ in 0..5 {
        let who = whoami_from_netns(&ext, target, Proto::Tcp, Duration::from_secs(2))
            .unwrap_or_else(|o| panic!("external host -> {target}: {o:?}"));
        assert_eq!(who, "default/web");
    }
    // A port the service does not have is not open on the FIP (the check can fail).
    assert!(whoami_from_netns(&ext, SocketAddr::new(fip, 81), Proto::Tcp, Duration::from_secs(1)).is_err());
}
